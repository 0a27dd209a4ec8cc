"""The tries of `edge quantize`'s search, what auto accepts among them, and the verdict on the test split.

A :class:`Try` is one quantization configuration with its val figures; :class:`Budget` picks among
tries (fits, best, fastest); :func:`judge` is the acceptance rule on the test split, the gate's own
(:mod:`edge.measure.acceptance`), and :class:`Acceptance` its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.measure.acceptance import judge_agreement, judge_drop
from edge.measure.paired import CONFIDENCE, flips_from_counts

SPEED_TOLERANCE = 0.05  # tries within 5% of the fastest count as equally fast: accuracy decides


@dataclass
class Try:
    """One quantization configuration and its validation result (one row of the tries table)."""

    method: str
    excluded: list[str]
    path: Path
    val: dict[str, Any] = field(default_factory=dict)  # compare() on the val split: percent, drop in points
    speedup: float | None = None  # throughput against the float model (auto, target cpu)
    rounding: dict[str, Any] = field(default_factory=lambda: {"rounding": "nearest"})
    bias: dict[str, Any] | None = None  # correct_biases()'s summary; None: biases as quantized
    val_top1: Any = field(default=None, repr=False)  # its top-1 on the val split (numpy), kept for the sensitivity pass
    qat: bool = False  # quantized from the QAT fine-tuned float model (edge.quantize.qat)

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "excluded": list(self.excluded),
            "bias_corrected": self.bias is not None,
            **{k: self.val[k] for k in ("top1", "drop_points", "agreement", "eval_count") if k in self.val},
            **({"speedup": round(self.speedup, 3)} if self.speedup is not None else {}),
            **({"qat": True} if self.qat else {}),
        }


@dataclass(frozen=True)
class Budget:
    """What auto accepts: a top-1 drop of at most ``max_drop`` points and a top-1 agreement with the
    float parent of at least ``min_agreement`` percent."""

    max_drop: float
    min_agreement: float

    def fits(self, candidate: Try) -> bool:
        """Within both budgets on the val split (unlabelled photos: agreement alone)."""
        val = candidate.val
        return bool(val) and _drop(val) <= self.max_drop and val["agreement"] >= self.min_agreement

    def best(self, tries: list[Try]) -> Try:
        """Within the drop budget the highest agreement (flips are a steadier signal than a small
        drop, which noise can even make negative), then the lowest drop, then the fewest float nodes."""
        scored = [t for t in tries if t.val] or tries
        return min(
            scored,
            key=lambda t: (
                _drop(t.val) > self.max_drop,
                -t.val.get("agreement", 100.0),
                _drop(t.val),
                len(t.excluded),
            ),
        )

    def fastest(self, tries: list[Try]) -> Try:
        """The fastest try that fits (within SPEED_TOLERANCE, the most accurate of those); when
        none fits, the most accurate (:meth:`best`). Untimed tries count as equally fast."""
        fitting = [t for t in tries if self.fits(t)]
        if not fitting:
            return self.best(tries)
        timed = [t.speedup for t in fitting if t.speedup is not None]
        if timed:
            floor = max(timed) * (1 - SPEED_TOLERANCE)
            fitting = [t for t in fitting if t.speedup is None or t.speedup >= floor]
        return self.best(fitting)


def _drop(figures: dict[str, Any]) -> float:
    """The drop in points; 0 where it cannot be measured (unlabelled photos: agreement decides)."""
    drop = figures.get("drop_points")
    return 0.0 if drop is None else float(drop)


@dataclass(frozen=True)
class Acceptance:
    """The chosen model against its float parent on the test split, and the verdict (:func:`judge`)."""

    source: str  # the test set's name
    figures: dict[str, Any]  # compare(): top-1, top-5 and agreement in percent, the drop in points
    accepted: bool
    reason: str | None  # why not, one line (None when accepted)
    max_flips: int  # the most flips --min-agreement tolerates on these test images


def judge(figures: dict[str, Any], max_drop: float, min_agreement: float, what: str = "test images") -> tuple[str | None, int]:
    """The acceptance rule on the test split (:mod:`edge.measure.acceptance`, the gate's own): why
    the result is not accepted (None: it is), and the flips it may have. Rejected when the drop's
    exact one-sided lower bound exceeds ``max_drop`` points (labelled data only: the gate's test on
    the same counts), or when its flips against the float parent show an agreement below
    ``min_agreement`` percent, both at the gate's confidence."""
    count, flips = int(figures["eval_count"]), int(figures["flips"])
    reasons = []
    if figures.get("lost") is not None:
        paired = flips_from_counts(count, figures["lost"], figures["gained"], count - flips, CONFIDENCE)
        verdict = judge_drop(paired, max_drop)
        if verdict.significant:
            reasons.append(f"top-1 {verdict.detail} (--max-drop) on {count} {what}")
    disagreement, limit = judge_agreement(count, flips, min_agreement, CONFIDENCE, what)
    if disagreement:
        reasons.append(disagreement)
    return ("; ".join(reasons) or None), limit
