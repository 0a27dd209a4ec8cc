"""The one acceptance rule: `edge quantize` and `edge check` judge the same counts alike (issue 24)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from bench.gate import _drop_check, resolution_check
from edge.measure.acceptance import acceptance_count, allowed_flips, judge_drop, resolution_line
from edge.measure.paired import flips_from_counts, min_detectable_drop, min_resolving_count
from edge.quantize.tries import judge


def _tail(k: int, n: int, p: Fraction) -> Fraction:
    """P(X >= k) for X ~ Binomial(n, p), in exact rational arithmetic."""
    return 1 - sum((math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k)), Fraction(0))


@pytest.mark.parametrize(("count", "flips"), [(1000, 15), (2000, 28), (200, 5), (24, 1), (16, 1)])
def test_allowed_flips_is_an_exact_one_sided_test_at_95(count: int, flips: int) -> None:
    assert allowed_flips(count, 99.0) == flips
    # the largest k whose tail under a 1% flip rate is above 5%: k + 1 flips would be evidence of a miss
    assert _tail(flips, count, Fraction(1, 100)) > Fraction(5, 100) >= _tail(flips + 1, count, Fraction(1, 100))


def test_allowed_flips_edges() -> None:
    assert allowed_flips(1000, 100.0) == 0  # a 100% target tolerates no flip
    assert allowed_flips(0, 99.0) == 0
    assert allowed_flips(1000, 99.9) < allowed_flips(1000, 99.0) < allowed_flips(1000, 98.0)


def _figures(n: int, lost: int, gained: int) -> dict:
    return {"eval_count": n, "flips": lost + gained, "lost": lost, "gained": gained, "agreement": 100 * (n - lost - gained) / n}


@pytest.mark.parametrize(
    ("n", "lost", "gained"),
    [
        (1000, 8, 2),  # the 0.6 points with 10 flips: quantize used to reject it, the gate passed it
        (1000, 12, 0),
        (1000, 13, 0),
        (1100, 13, 2),
        (200, 6, 0),
        (10000, 80, 20),
        (10000, 90, 20),
    ],
)
def test_quantize_and_the_gate_give_the_same_verdict_on_the_same_counts(n: int, lost: int, gained: int) -> None:
    flips = flips_from_counts(n, lost, gained, n - lost - gained)
    gate = _drop_check("drop", flips, 0.5)
    reason, _ = judge(_figures(n, lost, gained), max_drop=0.5, min_agreement=0.01)  # agreement out of the way
    assert (gate.status == "fail") is (reason is not None) is judge_drop(flips, 0.5).significant
    if reason is not None:
        assert gate.detail in reason  # the same sentence, figures and all


def test_the_threshold_falls_where_the_lower_bound_crosses_the_budget() -> None:
    k = round(min_detectable_drop(1000, 0.5) * 10)
    below, at = flips_from_counts(1000, k - 1, 0, 1000 - k + 1), flips_from_counts(1000, k, 0, 1000 - k)
    assert below.drop_lower_points <= 0.5 < at.drop_lower_points
    assert not judge_drop(below, 0.5).significant and judge_drop(at, 0.5).significant


def test_the_default_acceptance_set_resolves_the_default_budget() -> None:
    assert acceptance_count(0.5) == min_resolving_count(0.5) == 1100
    assert acceptance_count(0.0) is None  # no finite set resolves a zero budget: the whole split
    assert resolution_check("r", 1100, 0.5, 0.95).status == "pass"
    assert resolution_check("r", 1000, 0.5, 0.95).status == "fail"  # quantize's old default could not
    assert "cannot resolve the 0.5 pt budget" in resolution_line(1000, 0.5) and "at least 1100 images" in resolution_line(
        1000, 0.5
    )
    assert math.isinf(min_detectable_drop(2, 0.5)) and "none (not even losing every image fails)" in resolution_line(2, 0.5)
