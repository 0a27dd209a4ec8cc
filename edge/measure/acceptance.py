"""The one acceptance rule for a model against its float parent: `edge quantize` accepts and `edge check`
passes by the same functions, at the same confidence, on the same counts.

- **Drop** (labelled data): paired top-1 flips (:mod:`edge.measure.paired`). A model fails only when
  the exact one-sided lower bound of its drop exceeds the budget: a real regression fails, noise
  does not. 0.6 points with 10 flips on 1000 images (8 lost, 2 gained) has a lower bound of
  -0.01 points: it passes both, where quantize used to reject it on the measured 0.6.
- **Agreement** (quantize's ``--min-agreement``; also the only figure on unlabelled photos): the
  model is refused when its disagreements show, at the same confidence, an agreement below the
  floor (an exact binomial test, :func:`allowed_flips`).
- **Resolution**: an evaluation set *resolves* a budget when it can fail a drop of twice the budget
  (:func:`edge.measure.paired.resolves`); :func:`acceptance_count` is the number of test images
  quantize evaluates by default, the same number the gate asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.measure.paired import (
    CONFIDENCE,
    RESOLUTION,
    PairedFlips,
    binomial_tail_at_least,
    min_detectable_drop,
    min_resolving_count,
    resolves,
)

DEFAULT_MAX_DROP = 0.5  # points of top-1: quantize's --max-drop and the gate's --max-drop
DEFAULT_MIN_AGREEMENT = 99.0  # percent of top-1 agreement with the float parent (quantize)


@dataclass(frozen=True)
class DropVerdict:
    """``significant``: the drop's lower bound exceeds the budget (fail); ``detail``: the figures, one line."""

    significant: bool
    detail: str


def judge_drop(flips: PairedFlips, max_drop: float, simulated: bool = False) -> DropVerdict:
    """The drop rule: significantly above ``max_drop`` points when its exact one-sided lower bound
    (at ``flips.confidence``) is above it."""
    # bounds to 3 decimals, so a bound just under the budget does not print as the budget; no "-0.000"
    drop, lower, upper = (round(v, 3) + 0.0 for v in (flips.drop_points, flips.drop_lower_points, flips.drop_upper_points))
    detail = (
        f"drop {drop:+.2f} pts (lower bound {lower:+.3f}, upper {upper:+.3f} at {flips.confidence:.0%}); "
        f"lost {flips.lost}, gained {flips.gained} of {flips.n}"
    )
    if simulated:
        detail += "; simulated (TensorRT INT8 evaluated on ONNX Runtime CPU)"
    significant = flips.drop_lower_points > max_drop
    if significant:
        detail += f": significantly above the {max_drop:g} pt budget"
    return DropVerdict(significant, detail)


def allowed_flips(count: int, min_agreement: float, confidence: float = CONFIDENCE) -> int:
    """The most top-1 disagreements among ``count`` images that do not show, at ``confidence``, an
    agreement below ``min_agreement`` percent: the largest k with P(X >= k) > 1 - confidence for
    X ~ Binomial(count, 1 - min_agreement / 100) (an exact one-sided test). 99% on 1000 images
    allows 15 (98.5%); on 24 photos, 1; at 100%, none."""
    rate = 1.0 - min_agreement / 100.0
    if count <= 0 or rate <= 0.0:
        return 0
    alpha = 1.0 - confidence
    # P(X >= k) falls with k: bisect for the first k where it is at most alpha
    lo, hi = 0, count + 1  # P(X >= lo) > alpha (P(X >= 0) = 1); hi: P(X >= count + 1) = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if binomial_tail_at_least(mid, count, rate) > alpha * (1 + 1e-9):  # a tail equal to alpha is evidence
            lo = mid
        else:
            hi = mid
    return lo


def judge_agreement(
    count: int, disagreements: int, min_agreement: float, confidence: float = CONFIDENCE, what: str = "images"
) -> tuple[str | None, int]:
    """Why ``disagreements`` of ``count`` miss the agreement floor beyond sampling noise (None: they
    do not), and the most disagreements allowed."""
    limit = allowed_flips(count, min_agreement, confidence)
    if disagreements <= limit:
        return None, limit
    agreement = 100.0 * (count - disagreements) / count
    most = f"at most {limit} flip{'' if limit == 1 else 's'} at {confidence:.0%}"
    reason = (
        f"top-1 agreement {agreement:.2f}% on {count} {what} ({disagreements} flips) is below "
        f"--min-agreement {min_agreement:g} beyond sampling noise ({most})"
    )
    return reason, limit


def acceptance_count(max_drop: float, confidence: float = CONFIDENCE) -> int | None:
    """The evaluation images that resolve ``max_drop`` (1100 for 0.5 points at 95%); None: no finite
    set does (a budget of 0), so the whole split is used."""
    return min_resolving_count(max_drop, confidence)


def resolution_line(n: int, max_drop: float, confidence: float = CONFIDENCE) -> str:
    """One line: can ``n`` images fail a drop of RESOLUTION x the budget, every flip a loss?"""
    mdd = min_detectable_drop(n, max_drop, confidence)
    shown = "none (not even losing every image fails)" if math.isinf(mdd) else f"{mdd:.2f} pts"
    detail = f"minimum detectable drop {shown} on {n} images at {confidence:.0%}"
    if resolves(n, max_drop, confidence):
        return f"{detail}: resolves the {max_drop:g} pt budget (<= {RESOLUTION:g}x)"
    needed = acceptance_count(max_drop, confidence)
    need = f"at least {needed} images" if needed else "a budget above 0 (a 0 pt budget is never resolved)"
    return f"{detail}: cannot resolve the {max_drop:g} pt budget (needs <= {RESOLUTION:g}x = {RESOLUTION * max_drop:.2f} pts: {need})"
