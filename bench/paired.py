"""Paired accuracy statistics: top-1 flips of a model against a reference on the same images.

Two models scored on the same images disagree on few of them; only those discordant images carry
information about which is better (McNemar). ``b`` images the reference got right and the model
got wrong, ``c`` the reverse; the drop in top-1 is ``(b - c) / n``. Conditional on the ``m = b + c``
discordant images, ``b ~ Binomial(m, p)``, and the drop is ``m (2p - 1) / n``; an exact
(Clopper-Pearson) bound on ``p`` gives an exact one-sided bound on the drop. A gate that fails only
when the *lower* bound exceeds the budget fails for a real regression and not for noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95


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
        """True when the budget is within two standard errors: the set cannot resolve it."""
        return budget_points < 2.0 * self.stderr_points


def _log_binom_pmf(k: int, m: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == m else -math.inf
    return math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) + k * math.log(p) + (m - k) * math.log1p(-p)


def _tail_at_least(k: int, m: int, p: float) -> float:
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
    lower = 0.0 if k == 0 else _bisect(lambda p: _tail_at_least(k, m, p) - alpha)
    # upper: P(X <= k | p) = alpha, i.e. 1 - P(X >= k+1) = alpha; P(X >= k+1) rises with p
    upper = 1.0 if k == m else _bisect(lambda p: _tail_at_least(k + 1, m, p) - (1.0 - alpha))
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


def min_eval_size(budget_points: float, discordance: float = 0.02) -> int:
    """Images needed for two standard errors to fit in the budget at a given discordance rate."""
    budget = budget_points / 100.0
    if budget <= 0:
        return 0
    return int(math.ceil(4.0 * max(discordance, 1e-9) / (budget * budget)))
