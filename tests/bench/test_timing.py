"""Timing statistics and the warm-up / window rules (no timed assertions)."""

from __future__ import annotations

import pytest

from bench.timing import TimingWindow, percentile_samples_needed, summarize, time_calls
from edge.errors import UserError


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
