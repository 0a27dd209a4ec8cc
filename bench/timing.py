"""Honest timing: warm up, then time at least N calls and at least T seconds; never clip outliers.

Every timed callable must return only after the device finished (the runner contract), so the
clock read after it is the real end of the work. Times are wall-clock ``perf_counter`` per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.errors import UserError


@dataclass(frozen=True)
class TimingWindow:
    """How long to warm up and to measure: at least ``min_iters`` calls and ``min_seconds``."""

    warmup_s: float = 1.0
    min_iters: int = 50
    min_seconds: float = 2.0
    max_seconds: float = 60.0  # a very slow cell stops after this (with at least 3 samples)

    def __post_init__(self) -> None:
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
    deadline = time.perf_counter() + window.warmup_s
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
    return summarize(samples, wall, items_per_call), extras


def percentile_samples_needed(percentile: float, tail_count: int = 10) -> int:
    """Samples for a percentile to rest on ``tail_count`` observations beyond it (p90: 100)."""
    return int(np.ceil(round(tail_count / (1.0 - percentile / 100.0), 6)))
