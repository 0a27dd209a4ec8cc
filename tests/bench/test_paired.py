"""Paired flip statistics: exact bounds, drop arithmetic, the too-small flag."""

from __future__ import annotations

import numpy as np
import pytest

from bench.paired import binomial_bounds, flips_from_counts, min_eval_size, paired_flips


def test_clopper_pearson_matches_beta_quantiles():
    # Reference values: scipy.stats.beta.ppf(0.05, 3, 8) and beta.ppf(0.95, 4, 7).
    lower, upper = binomial_bounds(3, 10, confidence=0.95)
    assert lower == pytest.approx(0.087264, abs=1e-5)
    assert upper == pytest.approx(0.606624, abs=1e-5)
    assert binomial_bounds(0, 10)[0] == 0.0
    assert binomial_bounds(10, 10)[1] == 1.0
    assert binomial_bounds(0, 0) == (0.0, 1.0)


def test_paired_flips_counts_and_drop():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    parent = labels.copy()
    model = labels.copy()
    model[:3] = (labels[:3] + 1) % 10  # three lost
    parent[9] = 0  # parent wrong on the last image; the model right there: one gained
    flips = paired_flips(labels, parent, model)
    assert (flips.n, flips.lost, flips.gained, flips.agree) == (10, 3, 1, 6)
    assert flips.drop_points == pytest.approx(20.0)
    assert flips.drop_lower_points < flips.drop_points < flips.drop_upper_points


def test_identical_predictions_have_zero_drop_and_tight_bounds():
    labels = np.arange(1000) % 10
    preds = labels.copy()
    preds[:100] = 0
    flips = paired_flips(labels, preds, preds)
    assert flips.drop_points == 0.0
    assert flips.drop_lower_points == pytest.approx(0.0, abs=1e-9)
    assert flips.drop_upper_points == pytest.approx(0.0, abs=1e-9)
    assert not flips.too_small_for(0.5)  # one flip in 1000 is 0.1 pt: two SE fit in 0.5


def test_small_set_is_flagged_too_small_for_budget():
    assert flips_from_counts(200, 2, 1, 190).too_small_for(0.5)
    assert not flips_from_counts(20000, 20, 10, 19900).too_small_for(0.5)
    assert min_eval_size(0.5, discordance=0.02) == 3200


def test_clear_regression_has_lower_bound_above_budget():
    flips = flips_from_counts(1000, 60, 5, 900)
    assert flips.drop_points == pytest.approx(5.5)
    assert flips.drop_lower_points > 3.0


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_flips([0, 1], [0, 1, 2], [0, 1])
