"""Honest timing: warm up, then time at least N calls and at least T seconds; never clip outliers.

Every timed callable must return only after the device finished (the runner contract), so the
clock read after it is the real end of the work. Times are wall-clock ``perf_counter`` per call.

A bench cell is timed in ``rounds`` short windows (``RoundTimer``), stepped in turn with the other
artifacts on the same device, so that noise that moves over minutes lands on every artifact alike.
Each round also records ``MachineProbe`` (a fixed numpy workload) and the CPU share other processes
used (``OthersCpu``): noise figures. The statistics of rounds are in ``edge.measure.intervals``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from edge.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class TimingWindow:
    """How long to warm up and to measure: at least ``min_iters`` calls and ``min_seconds``."""

    warmup_s: float = 1.0
    min_iters: int = 50
    min_seconds: float = 2.0
    max_seconds: float = 60.0  # a very slow cell stops after this (with at least 3 samples)
    rounds: int = 5  # the window is split into this many rounds, interleaved with other artifacts

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise UserError(f"--rounds must be at least 1, got {self.rounds}")
        if self.warmup_s < 0 or self.min_seconds < 0:
            raise UserError(f"warm-up and window seconds must be >= 0 (got {self.warmup_s}, {self.min_seconds})")
        if self.min_iters < 1:
            raise UserError(f"--min-iters must be at least 1, got {self.min_iters}")
        if self.max_seconds < self.min_seconds:
            raise UserError(f"max seconds {self.max_seconds} is below min seconds {self.min_seconds}")


@dataclass(frozen=True)
class TimingStats:
    """Latency of one call in ms and throughput over the whole measured window."""

    samples: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    wall_s: float
    items_per_call: int
    items_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: list[float] | np.ndarray, wall_s: float, items_per_call: int) -> TimingStats:
    """Percentiles, mean and std of per-call times; throughput = items / wall time."""
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no timing samples")
    return TimingStats(
        samples=int(values.size),
        p50_ms=float(np.percentile(values, 50)),
        p90_ms=float(np.percentile(values, 90)),
        p99_ms=float(np.percentile(values, 99)),
        mean_ms=float(values.mean()),
        std_ms=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min_ms=float(values.min()),
        max_ms=float(values.max()),
        wall_s=float(wall_s),
        items_per_call=int(items_per_call),
        items_per_s=float(values.size * items_per_call / wall_s) if wall_s > 0 else float("nan"),
    )


def time_calls(
    call: Callable[[int], Any], window: TimingWindow, items_per_call: int, on_sample: Callable[[int], None] | None = None
) -> tuple[TimingStats, list[Any]]:
    """Warm up ``call`` for ``window.warmup_s`` (at least once), then time it.

    ``call(i)`` gets the call index (so callers can rotate inputs); its return values are kept
    only when it returns something other than None (e.g. device milliseconds).
    """
    samples, wall, extras = timed_loop(call, window, window.warmup_s, on_sample)
    return summarize(samples, wall, items_per_call), extras


def timed_loop(
    call: Callable[[int], Any], window: TimingWindow, warmup_s: float, on_sample: Callable[[int], None] | None = None
) -> tuple[list[float], float, list[Any]]:
    """Warm up for ``warmup_s`` (at least one call), then per-call ms, the window's wall seconds and extras."""
    deadline = time.perf_counter() + warmup_s
    call(0)
    while time.perf_counter() < deadline:
        call(0)
    samples: list[float] = []
    extras: list[Any] = []
    start = time.perf_counter()
    stop_at = start + window.max_seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        extra = call(i)
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1000.0)
        if extra is not None:
            extras.append(extra)
        i += 1
        if on_sample is not None:
            on_sample(i)
        elapsed = t1 - start
        if i >= window.min_iters and elapsed >= window.min_seconds:
            break
        if t1 >= stop_at and i >= 3:
            break
    wall = time.perf_counter() - start
    return samples, wall, extras


@dataclass
class Timing:
    """One runner's interleaved timing: images/s per round, and every call's latency in ms."""

    label: str
    per_round: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return float(np.median(self.latencies_ms))

    @property
    def images_per_s(self) -> float:
        return float(np.median(self.per_round))


def median_ratio(mine: Timing, reference: Timing) -> tuple[float, float, float]:
    """Speed-up of ``mine`` over ``reference``: (median, min, max) of the per-round throughput ratios."""
    ratios = [a / b for a, b in zip(mine.per_round, reference.per_round)]
    return float(np.median(ratios)), float(min(ratios)), float(max(ratios))


def interleaved_rounds(
    runners: Sequence[tuple[str, Any]], batch: np.ndarray, rounds: int, window_s: float, warmup: int = 10
) -> dict[str, Timing]:
    """Throughput of active runners (anything with ``infer(batch)``) on one batch, in interleaved rounds.

    Each round times every runner for at least ``window_s`` (and 3 calls) in turn, in
    :func:`round_order` (each round starts one runner later, every other round backwards), so the
    load of a shared machine hits all of them alike and no runner always follows the same one. Each
    runner's turn starts with one untimed call: its threads wake before its clock starts."""
    if rounds < 1 or window_s <= 0:
        raise UserError(f"timing needs at least one round and a positive window (got {rounds}, {window_s})")
    timings = {label: Timing(label) for label, _ in runners}
    for _, runner in runners:
        for _ in range(warmup):
            runner.infer(batch)
    for round_index in range(rounds):
        for label, runner in round_order(runners, round_index):
            runner.infer(batch)
            calls, start = 0, time.perf_counter()
            while True:
                t0 = time.perf_counter()
                runner.infer(batch)
                now = time.perf_counter()
                timings[label].latencies_ms.append((now - t0) * 1000)
                calls += 1
                if now - start >= window_s and calls >= 3:
                    break
            timings[label].per_round.append(calls * len(batch) / (now - start))
    return timings


CONTENDED = 0.25  # other processes held more than this share of the CPUs during a cell's rounds (median): noisy
REWARM_S = 0.05  # before a round other than a cell's first: the caches another process cooled


def round_order(items: Sequence[T], round_index: int) -> list[T]:
    """The order of interleaved round ``round_index``: it starts one item later each round and runs
    backwards every other round, so each item follows both of its neighbours in turn, not always the
    same one (an ONNX Runtime pool still spinning after its window, or a cache another item just
    filled, would burden or favour it)."""
    shift = round_index % len(items) if items else 0
    order = [*items[shift:], *items[:shift]]
    return order[::-1] if round_index % 2 else order


def round_window(window: TimingWindow) -> TimingWindow:
    """One round's share of a cell's window: 1/rounds of its calls and seconds."""
    rounds = window.rounds
    return TimingWindow(
        warmup_s=window.warmup_s,
        min_iters=max(1, -(-window.min_iters // rounds)),
        min_seconds=window.min_seconds / rounds,
        max_seconds=max(window.max_seconds / rounds, window.min_seconds / rounds),
        rounds=1,
    )


class RoundTimer:
    """One cell timed as rounds: ``time_round`` per round, then ``stats()`` over all of them.

    The first round warms up for the window's ``warmup_s``; later rounds re-warm briefly
    (``REWARM_S``), since another artifact ran in between.
    """

    def __init__(self, window: TimingWindow, items_per_call: int):
        self.window, self.items_per_call = window, items_per_call
        self.rounds: list[dict[str, Any]] = []
        self._samples: list[float] = []
        self._wall = 0.0
        self.extras: list[Any] = []

    def time_round(self, call: Callable[[int], Any], probe_ms: float | None = None) -> dict[str, Any]:
        warmup = self.window.warmup_s if not self.rounds else min(self.window.warmup_s, REWARM_S)
        started_at = time.time()
        with OthersCpu() as others:
            samples, wall, extras = timed_loop(call, round_window(self.window), warmup)
        self._samples += samples
        self._wall += wall
        self.extras += extras
        entry = {
            "p50_ms": float(np.percentile(samples, 50)),
            "samples": len(samples),
            "wall_s": wall,
            "probe_ms": probe_ms,
            "started_at": started_at,
            "others_cpu": others.fraction,
        }
        self.rounds.append(entry)
        return entry

    def stats(self) -> dict[str, Any]:
        """Pooled statistics; ``p50_ms`` is the median of round p50s, with its interval and spread."""
        from edge.measure.intervals import median_interval, quantile_interval, spread_pct

        out = summarize(self._samples, self._wall, self.items_per_call).to_dict()
        p50s = [r["p50_ms"] for r in self.rounds]
        low, high, level = median_interval(p50s)
        p90_low, p90_high, p90_level = quantile_interval(self._samples, 0.9)  # every call's time, pooled
        out.update(
            p90_ci_ms=[p90_low, p90_high],
            p90_ci_level=p90_level,
            p50_ms=float(np.median(p50s)),
            p50_ci_ms=[low, high],
            ci_level=level,
            spread_pct=spread_pct(p50s),
            rounds=self.rounds,
        )
        return out


NOISY_INTERVAL_PCT = 50.0  # a p50 whose interval spans more than this share of it is not a figure to quote


def others_cpu_share(rounds: Sequence[dict[str, Any]]) -> float | None:
    """The median share of the CPUs other processes held during a cell's rounds (None: not recorded)."""
    shares = sorted(r["others_cpu"] for r in rounds if r.get("others_cpu") is not None)
    return shares[len(shares) // 2] if shares else None


def cell_noise(compute: dict[str, Any]) -> str | None:
    """Why a timed cell's p50 should not be quoted as a plain number, or None: its rounds disagree
    beyond what its interval can carry (the interval spans more than NOISY_INTERVAL_PCT of the p50;
    with fewer than 3 rounds, the spread of the rounds), or other processes held more than CONTENDED
    of the CPUs while it ran. Every table that shows the p50 marks it with this reason."""
    reasons = []
    rounds = compute.get("rounds") or []
    p50 = compute.get("p50_ms")
    low, high = (compute.get("p50_ci_ms") or [None, None])[:2]
    if p50 and low is not None and high is not None and compute.get("ci_level") is not None:
        width = (high - low) / p50 * 100.0
        if width > NOISY_INTERVAL_PCT:
            level = compute["ci_level"] * 100.0
            shown = ", ".join(f"{r['p50_ms']:.4g}" for r in rounds)
            reasons.append(
                f"rounds disagree: p50 interval {low:.4g}-{high:.4g} ms at {level:.1f}% spans {width:.0f}% of the p50 "
                f"(round p50s {shown} ms)"
            )
    elif compute.get("spread_pct") is not None and compute["spread_pct"] > NOISY_INTERVAL_PCT:
        reasons.append(f"rounds disagree: round p50s spread {compute['spread_pct']:.0f}% (no interval with {len(rounds)} rounds)")
    share = others_cpu_share(rounds)
    if share is not None and share > CONTENDED:
        reasons.append(f"other processes held {share * 100:.0f}% of the CPUs while it ran")
    return "; ".join(reasons) or None


class OthersCpu:
    """The share of the machine's CPUs that *other* processes used during a block (0..1; None where
    /proc/stat is absent): busy time of the whole machine minus this process's own, over wall time
    x CPUs. A round timed while other work ran is not evidence of a slower model."""

    def __init__(self) -> None:
        self.fraction: float | None = None

    def __enter__(self) -> OthersCpu:
        self._start = (_busy_seconds(), _own_seconds(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = _busy_seconds(), _own_seconds(), time.perf_counter()
        if busy is None or self._start[0] is None or wall <= self._start[2]:
            return
        others = (busy - self._start[0]) - (own - self._start[1])
        self.fraction = min(1.0, max(0.0, others / ((wall - self._start[2]) * (os.cpu_count() or 1))))


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


_PROBE_VALUES = 1 << 17  # the numpy fallback: about 0.25 ms a call on a 2-core x86 server


class MachineProbe:
    """A fixed single-threaded numpy workload (elementwise passes over 512 KiB), timed beside each
    round and recorded as a noise figure of the machine (the report's probe spread).

    It is not used to correct latencies: on this project's shared 2-core VM, rounds of a 2-thread
    ONNX Runtime session ran 35-40% slower for whole benches while this probe did not move, and an
    ONNX Runtime probe (a small conv net) jumped between two speeds on its own. The gate instead
    compares each artifact with the other artifacts timed in the same rounds (``bench.latency_gate``).
    Never BLAS: its thread pool stalls behind a runtime's spinning threads (0.2 ms or 30 ms at random).
    """

    def __init__(self) -> None:
        self._run = _numpy_probe()

    def __call__(self, min_seconds: float = 0.02, min_iters: int = 10) -> float:
        samples, _, _ = timed_loop(self._run, TimingWindow(0.0, min_iters, min_seconds, max(1.0, min_seconds)), 0.0)
        return float(np.percentile(samples, 50))


def _numpy_probe() -> Callable[[int], None]:
    values = np.random.default_rng(0).random(_PROBE_VALUES, dtype=np.float32)
    out = np.empty_like(values)

    def work(_: int) -> None:
        for _ in range(4):
            np.multiply(values, values, out=out)
            np.sqrt(out, out=out)

    return work


def machine_probe(min_seconds: float = 0.02, min_iters: int = 10) -> float:
    """p50 ms of the machine probe with the default thread count (see :class:`MachineProbe`)."""
    return MachineProbe()(min_seconds, min_iters)


def percentile_samples_needed(percentile: float, tail_count: int = 10) -> int:
    """Samples for a percentile to rest on ``tail_count`` observations beyond it (p90: 100)."""
    return int(np.ceil(round(tail_count / (1.0 - percentile / 100.0), 6)))
