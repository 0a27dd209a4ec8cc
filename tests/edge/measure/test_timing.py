"""Timing statistics and the warm-up / window rules (no timed assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import UserError
from edge.measure.timing import (
    Timing,
    TimingWindow,
    interleaved_rounds,
    median_ratio,
    percentile_samples_needed,
    summarize,
    time_calls,
)


def test_summarize_percentiles_and_throughput():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0], wall_s=0.5, items_per_call=8)
    assert stats.samples == 5
    assert stats.p50_ms == 3.0
    assert stats.max_ms == 100.0  # outliers are kept, never clipped
    assert stats.mean_ms == pytest.approx(22.0)
    assert stats.items_per_s == pytest.approx(5 * 8 / 0.5)


def test_time_calls_runs_warmup_then_at_least_min_iters():
    calls = []
    stats, extras = time_calls(lambda i: calls.append(i) or 0.5, TimingWindow(0.0, 7, 0.0, 10.0), items_per_call=2)
    assert stats.samples == 7
    assert len(calls) == 8  # one warm-up call, then seven timed
    assert calls[1:] == list(range(7))
    assert extras == [0.5] * 7  # device times reported by the callable are kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_iters": 0}, "min-iters"), ({"warmup_s": -1.0}, "warm-up"), ({"min_seconds": 5.0, "max_seconds": 1.0}, "max seconds")],
)
def test_bad_windows_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        TimingWindow(**kwargs)


def test_p90_needs_a_hundred_samples_for_ten_in_the_tail():
    assert percentile_samples_needed(90) == 100
    assert percentile_samples_needed(99) == 1000


def test_a_window_is_split_into_rounds():
    from edge.measure.timing import round_window

    part = round_window(TimingWindow(warmup_s=1.0, min_iters=50, min_seconds=2.0, max_seconds=60.0, rounds=5))
    assert (part.min_iters, part.min_seconds, part.max_seconds, part.rounds) == (10, 0.4, 12.0, 1)


def test_round_timer_gives_the_median_of_round_p50s_with_its_interval():
    from edge.measure.timing import RoundTimer

    timer = RoundTimer(TimingWindow(warmup_s=0.0, min_iters=15, min_seconds=0.0, max_seconds=10.0, rounds=5), items_per_call=4)
    calls = []
    for _r in range(5):
        timer.time_round(lambda i: calls.append(i), probe_ms=0.25)
    stats = timer.stats()
    assert len(stats["rounds"]) == 5 and stats["samples"] == 15
    assert all(r["samples"] == 3 and r["probe_ms"] == 0.25 for r in stats["rounds"])
    p50s = sorted(r["p50_ms"] for r in stats["rounds"])
    assert stats["p50_ms"] == pytest.approx(p50s[2])
    assert stats["p50_ci_ms"] == [p50s[0], p50s[-1]] and stats["ci_level"] == pytest.approx(1 - 2 / 32)


def test_the_machine_probe_reports_milliseconds():
    from edge.measure.timing import machine_probe

    assert 0.0 < machine_probe(min_seconds=0.0, min_iters=3) < 1000.0


def test_round_order_rotates_and_reverses_so_each_item_follows_both_neighbours():
    from edge.measure.timing import round_order

    orders = [round_order("abcd", r) for r in range(4)]
    assert orders == [list("abcd"), list("adcb"), list("cdab"), list("cbad")]
    predecessors_of_b = {order[order.index("b") - 1] for order in orders if order.index("b") > 0}
    assert predecessors_of_b == {"a", "c"}
    assert round_order([], 3) == []


def test_speedup_is_the_median_of_per_round_ratios() -> None:
    fast = Timing("int8", per_round=[300.0, 200.0, 500.0], latencies_ms=[1.0, 2.0, 3.0])
    slow = Timing("fp32", per_round=[100.0, 100.0, 100.0], latencies_ms=[4.0, 5.0, 6.0])
    assert median_ratio(fast, slow) == (3.0, 2.0, 5.0)
    assert fast.p50_ms == 2.0 and fast.images_per_s == 300.0


def test_interleaved_rounds_rotate_the_order_and_settle_each_path_untimed() -> None:
    calls: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name

        def infer(self, batch: np.ndarray) -> np.ndarray:
            calls.append(self.name)
            return batch

    runners = [(name, Recorder(name)) for name in "abc"]
    timings = interleaved_rounds(runners, np.zeros((2, 1)), rounds=3, window_s=1e-9, warmup=0)  # type: ignore[arg-type]
    # each window: one untimed call, then the 3 timed calls the minimum asks for; round r starts at
    # path r, odd rounds backwards: b follows a, then c, then a
    windows = [calls[i] for i in range(0, len(calls), 4)]
    assert windows == ["a", "b", "c", "a", "c", "b", "c", "a", "b"]
    assert all(len(timings[name].per_round) == 3 and len(timings[name].latencies_ms) == 9 for name in "abc")
