"""What one `edge quantize` asks for (:class:`QuantizeOptions`), its defaults and their checks.

Every bad option is refused with a UserError that names the flag, before any work starts
(:meth:`QuantizeOptions.validate`), and auto refuses to choose on too few labelled val images
(:func:`check_val_size`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.errors import UserError, require
from edge.measure.acceptance import DEFAULT_MAX_DROP, DEFAULT_MIN_AGREEMENT
from edge.quantize.evaluate import EvalSet
from edge.quantize.ranges import METHODS
from edge.quantize.targets import TARGET_HELP, TARGETS, default_reduce_range
from edge.quantize.tries import Budget
from edge.quantize.weights import ROUNDINGS

log = logging.getLogger(__name__)

# What QAT fits (train.qat.LOSSES; named here so that edge does not import train to check a flag).
QAT_LOSSES = ("distill", "labels")
CHOICES = (*METHODS, "auto")
# Agreement is what auto reads closest: on 500 images one flip is 0.2% and the noise about 0.5%,
# on 2000 about 0.2%. Full INT8 on 2 cores evaluates 2000 images of 64 px in about a second.
DEFAULT_VAL_LIMIT = 2000
# auto refuses to choose on fewer labelled val images (one of 200 is half a point of top-1); the
# same floor as training's small-set warning (train.splits.MIN_VAL_IMAGES).
DEFAULT_MIN_VAL_IMAGES = 200
DEFAULT_EVAL_LIMIT = None  # acceptance images: as many as resolve --max-drop (edge.measure.acceptance.acceptance_count)
DEFAULT_MAX_EXCLUDED = 8  # layers (a weighted op with its fused activation) auto may keep in float
DEFAULT_CALIB_SIZE = 512
PHOTO_EVAL_COUNT = 24  # unlabelled photo sets: a few dozen images at most


@dataclass(frozen=True)
class QuantizeOptions:
    """What one quantization asks for: ``quantize_run``'s arguments but the paths."""

    target: str = "cpu"
    method: str = "auto"
    data: str | None = None
    max_drop: float = DEFAULT_MAX_DROP
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    reduce_range: bool | None = None
    val_limit: int = DEFAULT_VAL_LIMIT
    eval_limit: int | None = DEFAULT_EVAL_LIMIT  # None: the count that resolves max_drop
    calib_size: int = DEFAULT_CALIB_SIZE
    seed: int = 0
    max_excluded: int = DEFAULT_MAX_EXCLUDED
    weight_rounding: str = "gptq"
    min_val_images: int = DEFAULT_MIN_VAL_IMAGES
    bias_correction: bool = True
    # per-layer sensitivity (edge.quantize.sensitivity): measured and written beside the model
    sensitivity: bool = False
    # QAT (edge.quantize.qat): fine-tune with fake quantization first (qat), or as auto's last
    # resort when PTQ misses the budget on val (qat_if_needed); qat_steps replaces the recipe's epochs.
    qat: bool = False
    qat_if_needed: bool = False
    qat_steps: int | None = None
    # what QAT fits: the float model's outputs (distill, the default) or the labels
    qat_loss: str = "distill"

    @property
    def auto(self) -> bool:
        return self.method == "auto"

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS if self.auto else (self.method,)

    @property
    def budget(self) -> Budget:
        return Budget(self.max_drop, self.min_agreement)

    def weights_reduce_range(self) -> bool:
        """--reduce-range, else the default: 7-bit weights on x86 CPUs without VNNI (target cpu only)."""
        if self.reduce_range is not None:
            return self.reduce_range
        return default_reduce_range() if self.target == "cpu" else False

    def validate(self) -> None:
        """Refuse bad options with a UserError that names the flag, before any work."""
        if self.target not in TARGETS:
            raise UserError(f"unknown target {self.target!r}: use {TARGET_HELP}")
        if self.target == "openvino":
            require("openvino", "openvino", "Quantizing for target openvino (its tries and acceptance run on OpenVINO)")
        if self.method not in CHOICES:
            raise UserError(
                f"unknown method {self.method!r}: use {', '.join(CHOICES)} (ORT's Distribution calibrator is for float8)"
            )
        if self.max_drop < 0:
            raise UserError(f"--max-drop must be >= 0 points, got {self.max_drop}")
        check_agreement_percent(self.min_agreement)
        for name, value in (
            ("--val-limit", self.val_limit),
            ("--eval-limit", self.eval_limit or 0),
            ("--max-excluded", self.max_excluded),
            ("--min-val-images", self.min_val_images),
        ):
            if value < 0:
                raise UserError(f"{name} must be >= 0 (0 = all / none), got {value}")
        if self.calib_size < 1:
            raise UserError(f"--calib-size must be at least 1, got {self.calib_size}")
        if self.weight_rounding not in ROUNDINGS:
            raise UserError(f"unknown weight rounding {self.weight_rounding!r}: use {' or '.join(ROUNDINGS)}")
        self._validate_qat()

    def _validate_qat(self) -> None:
        if self.qat and self.qat_if_needed:
            raise UserError("--qat always fine-tunes and --qat-if-needed only when PTQ misses the budget: pass one of them")
        if self.qat_if_needed and not self.auto:
            raise UserError("--qat-if-needed is auto's last resort: use it with --method auto (or pass --qat)")
        if self.qat_steps is not None:
            if not (self.qat or self.qat_if_needed):
                raise UserError("--qat-steps sets the QAT schedule: pass --qat or --qat-if-needed with it")
            if self.qat_steps < 1:
                raise UserError(f"--qat-steps must be at least 1, got {self.qat_steps}")
        if self.qat_loss not in QAT_LOSSES:
            raise UserError(f"unknown QAT loss {self.qat_loss!r}: use {' or '.join(QAT_LOSSES)}")


def check_agreement_percent(value: float) -> None:
    """--min-agreement is a percentage in (0, 100]; a value up to 1 is a fraction by mistake."""
    if not 0 < value <= 100:
        raise UserError(f"--min-agreement is a percentage in (0, 100], got {value:g}")
    if value <= 1:
        raise UserError(
            f"--min-agreement is a percentage, e.g. 99, not a fraction: got {value:g} (for {100 * value:g}% pass {100 * value:g})"
        )


def check_val_size(val: EvalSet, options: QuantizeOptions) -> None:
    """Refuse (UserError) to let auto choose on fewer labelled val images than --min-val-images,
    saying why and what to change. The unlabelled photo set (no data: at most PHOTO_EVAL_COUNT
    photos, agreement only) is what exists for a pretrained model, and is only named in the log."""
    count, floor = len(val), options.min_val_images
    if val.labels is None:
        log.info(
            "auto chooses on %d unlabelled photos (%s): agreement only; --data gives it a labelled val split", count, val.name
        )
        return
    if count >= floor:
        return
    if options.val_limit and count >= options.val_limit:
        fix = f"raise --val-limit to {floor} or more (0 = the whole split)"
    else:
        fix = "add images to the training data (val is drawn from it)"
    raise UserError(
        f"--method auto would choose on {count} validation image{'' if count == 1 else 's'} ({val.name}), fewer than "
        f"--min-val-images {floor}: one image moves top-1 by {100 / max(count, 1):.2f} points, so the choice would rest "
        f"on noise; {fix}, or pass --min-val-images {count} to choose on these anyway, or name a --method yourself"
    )
