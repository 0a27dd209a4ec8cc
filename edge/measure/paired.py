"""Paired accuracy statistics: top-1 flips of a model against a reference on the same images.

Two models scored on the same images disagree on few of them; only those discordant images carry
information about which is better (McNemar). ``b`` images the reference got right and the model
got wrong, ``c`` the reverse; the drop in top-1 is ``(b - c) / n``. Conditional on the ``m = b + c``
discordant images, ``b ~ Binomial(m, p)``, and the drop is ``m (2p - 1) / n``; an exact
(Clopper-Pearson) bound on ``p`` gives an exact one-sided bound on the drop. A gate that fails only
when the *lower* bound exceeds the budget fails for a real regression and not for noise.

That protection has a price: on a small set only a large drop can fail. The **minimum detectable
drop** of ``n`` images is the smallest drop that fails the gate in the most favourable case, every
discordant image a loss (``b`` lost, none gained, the drop ``100 b / n`` points): at 95% and a
0.5 point budget it is 3.0 points at n = 200 and 0.8 at n = 2000. An evaluation set *resolves* a
budget when its minimum detectable drop is at most ``RESOLUTION`` (2) times the budget, that is when
it can fail a regression of twice the budget; ``min_resolving_count`` is the smallest such ``n``
(1100 images for 0.5 points at 95%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
# An evaluation set resolves a drop budget when it can fail a drop of RESOLUTION x the budget.
RESOLUTION = 2.0


@dataclass(frozen=True)
class PairedFlips:
    """Top-1 comparison of a model against its reference on ``n`` shared images."""

    n: int
    lost: int  # reference right, model wrong (b)
    gained: int  # reference wrong, model right (c)
    agree: int  # same top-1 class (right or wrong)
    confidence: float
    drop_points: float
    drop_lower_points: float
    drop_upper_points: float
    stderr_points: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def too_small_for(self, budget_points: float) -> bool:
        """True when these ``n`` images cannot resolve the budget (see ``resolves``)."""
        return not resolves(self.n, budget_points, self.confidence)


def _log_binom_pmf(k: int, m: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == m else -math.inf
    return math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) + k * math.log(p) + (m - k) * math.log1p(-p)


def binomial_tail_at_least(k: int, m: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(m, p)."""
    return float(sum(math.exp(_log_binom_pmf(i, m, p)) for i in range(k, m + 1)))


def _bisect(f: Any, lo: float = 0.0, hi: float = 1.0, iters: int = 60) -> float:
    """Root of an increasing ``f`` on [lo, hi]."""
    for _ in range(iters):
        mid = (lo + hi) / 2.0
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def binomial_bounds(k: int, m: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """One-sided exact (Clopper-Pearson) lower and upper bounds on p, each at ``confidence``."""
    alpha = 1.0 - confidence
    if m == 0:
        return 0.0, 1.0
    lower = 0.0 if k == 0 else _bisect(lambda p: binomial_tail_at_least(k, m, p) - alpha)
    # upper: P(X <= k | p) = alpha, i.e. 1 - P(X >= k+1) = alpha; P(X >= k+1) rises with p
    upper = 1.0 if k == m else _bisect(lambda p: binomial_tail_at_least(k + 1, m, p) - (1.0 - alpha))
    return lower, upper


def paired_flips(
    labels: Sequence[int] | np.ndarray,
    reference_pred: Sequence[int] | np.ndarray,
    model_pred: Sequence[int] | np.ndarray,
    confidence: float = CONFIDENCE,
) -> PairedFlips:
    """Flip counts and the drop's exact one-sided bounds (points) of ``model_pred`` vs ``reference_pred``."""
    y, ref, mod = (np.asarray(a, dtype=np.int64) for a in (labels, reference_pred, model_pred))
    if not (y.shape == ref.shape == mod.shape) or y.ndim != 1:
        raise ValueError(f"paired predictions need equal 1-D shapes, got {y.shape}, {ref.shape}, {mod.shape}")
    ref_ok, mod_ok = ref == y, mod == y
    lost = int(np.sum(ref_ok & ~mod_ok))
    gained = int(np.sum(~ref_ok & mod_ok))
    return flips_from_counts(len(y), lost, gained, int(np.sum(ref == mod)), confidence)


def flips_from_counts(n: int, lost: int, gained: int, agree: int, confidence: float = CONFIDENCE) -> PairedFlips:
    """The bounds from stored counts (what a report keeps)."""
    if n <= 0:
        raise ValueError("paired statistics need at least one image")
    m = lost + gained
    p_lo, p_hi = binomial_bounds(lost, m, confidence)
    scale = 100.0 / n
    # Standard error of the paired difference of proportions (the usual McNemar variance).
    diff = (lost - gained) / n
    var = max(m / n - diff * diff, 0.0) / n
    # With no discordant pair the plug-in variance is 0; one flip is the smallest resolvable step.
    stderr = max(math.sqrt(var), 1.0 / n) * 100.0
    return PairedFlips(
        n=n,
        lost=lost,
        gained=gained,
        agree=agree,
        confidence=confidence,
        drop_points=(lost - gained) * scale,
        drop_lower_points=m * (2.0 * p_lo - 1.0) * scale,
        drop_upper_points=m * (2.0 * p_hi - 1.0) * scale,
        stderr_points=stderr,
    )


def _fails_when_all_lost(lost: int, n: int, budget_points: float, confidence: float) -> bool:
    """Would ``lost`` losses and no gain among ``n`` images fail a gate with this budget?"""
    return flips_from_counts(n, lost, 0, n - lost, confidence).drop_lower_points > budget_points


def min_detectable_drop(n: int, budget_points: float, confidence: float = CONFIDENCE) -> float:
    """The smallest drop (points) that fails the gate on ``n`` images, every flip a loss.

    ``inf`` when not even losing every image would fail (a tiny set or a budget near 100 points).
    Once the lower bound of the drop is positive it grows with the number lost, so the smallest
    failing count is found by bisection over ``1..n``, with the gate's own bound.
    """
    if n <= 0:
        raise ValueError("the minimum detectable drop needs at least one image")
    if not _fails_when_all_lost(n, n, budget_points, confidence):
        return math.inf
    lo, hi = 0, n  # lo does not fail, hi does
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fails_when_all_lost(mid, n, budget_points, confidence):
            hi = mid
        else:
            lo = mid
    return hi * 100.0 / n


def resolves(n: int, budget_points: float, confidence: float = CONFIDENCE, factor: float = RESOLUTION) -> bool:
    """True when ``n`` images can fail a drop of ``factor`` x the budget (a zero budget: never)."""
    return n > 0 and min_detectable_drop(n, budget_points, confidence) <= factor * budget_points + 1e-9


def min_resolving_count(budget_points: float, confidence: float = CONFIDENCE, factor: float = RESOLUTION) -> int | None:
    """The fewest images that resolve the budget (``resolves``); None for a budget of 0 or >= 100/factor.

    With ``B`` = the most losses a set of ``n`` may need (``factor x budget x n / 100``), ``n``
    resolves when ``B`` losses fail; for each ``B`` the smallest such ``n`` is the best, and ``n``
    grows with ``B``, so the first ``B`` that works gives the answer.
    """
    if budget_points <= 0 or factor * budget_points >= 100.0:
        return None
    for most_lost in range(1, 1_000_000):
        n = math.ceil(most_lost * 100.0 / (factor * budget_points) - 1e-9)
        if most_lost <= n and _fails_when_all_lost(most_lost, n, budget_points, confidence):
            return n
    return None
