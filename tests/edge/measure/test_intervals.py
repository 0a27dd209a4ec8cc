"""edge.measure.intervals: the order-statistic interval of a quantile."""

from __future__ import annotations

import pytest


def test_quantile_interval_is_the_median_interval_at_one_half_and_covers_the_p90() -> None:
    import numpy as np

    from edge.measure.intervals import median_interval, quantile_interval

    low, high, level = quantile_interval([5.0, 1.0, 4.0, 2.0, 3.0], 0.5)
    assert (low, high) == median_interval([5.0, 1.0, 4.0, 2.0, 3.0])[:2] and level == pytest.approx(0.9375)
    rng = np.random.default_rng(0)
    true_p90 = float(np.log(10.0))  # of the unit exponential
    hits = sum(
        lo <= true_p90 <= hi for lo, hi, _ in (quantile_interval(list(rng.exponential(1.0, 300)), 0.9) for _ in range(300))
    )
    assert 0.92 <= hits / 300 <= 0.99  # 95% nominal
    assert quantile_interval([7.0], 0.9) == (7.0, 7.0, None)
