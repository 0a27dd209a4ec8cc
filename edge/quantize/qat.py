"""`edge quantize --qat`: the float model the search quantizes, fine-tuned with fake quantization.

Post-training quantization rounds a float model that never saw int8. When that costs too much
(``--qat``, or ``--method auto --qat-if-needed`` once the PTQ search misses the budget on val),
``train.qat`` fine-tunes the run's checkpoint with NVIDIA Model Optimizer's fake quantization,
starting from ranges calibrated on the run's calibration set, for a short schedule on the pinned
train split (the published recipe: about 10% of the original epochs, 1% of its learning rate,
cosine). Here the fine-tuned float weights are exported to ONNX (verified against PyTorch) and the
search goes on from that model exactly as for PTQ: the same range pass on the same calibration
images (the fake quantizers' amax are those images' mean-minmax ranges, frozen during QAT: the
method auto chose most often on the hard models), the same QDQ writer per target (``edge.quantize.targets``: Model Optimizer's own ONNX
export has no asymmetric uint8 activations for target cpu), the same choice on val and acceptance
on test against the run's original ``model.onnx``. Weights are rounded to nearest, as QAT trained
them (GPTQ would move them off the grid they learned).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import UserError
from edge.export import DEFAULT_OPSET, export_model
from edge.lineage import is_stale
from edge.manifest import read_manifest
from edge.run import RunDir

if TYPE_CHECKING:
    from calibration.sets import CalibrationSet

log = logging.getLogger(__name__)

VERIFY_IMAGES = 8  # calibration images the exported fine-tuned model is checked on against PyTorch


def qat_float_model(
    run: RunDir,
    calib: CalibrationSet,
    work: Path,
    weight_bits: int,
    steps: int | None,
    data: str | None,
    loss: str = "distill",
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune RUN/checkpoint.pt with fake quantization and export the float result into ``work``;
    returns the ONNX path and the recipe for the manifest."""
    from edge.console import make_progress
    from train.qat import fine_tune  # edge -> train lazily, as for the pinned split

    checkpoint = run.require(
        run.checkpoint, f"QAT fine-tunes the run's checkpoint: train one first (`edge train --out {run.root}`)"
    )
    if is_stale(run.onnx, checkpoint):
        raise UserError(
            f"{run.onnx} was not exported from the current {checkpoint.name}: re-export it first (`edge export {run.root}`)"
        )
    tensor = np.asarray(calib.tensor)
    with make_progress(transient=True, unit="steps") as progress:
        task = progress.add_task("QAT fine-tuning", total=None)
        result = fine_tune(
            run.root,
            tensor,
            weight_bits=weight_bits,
            steps=steps,
            data=data,
            loss=loss,
            start_ranges={"calibration": str(calib.path), "content_hash": calib.content_hash},
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    made = read_manifest(run.onnx).provenance
    path = work / "qat-float.onnx"
    batch = np.ascontiguousarray(tensor[:VERIFY_IMAGES], dtype=np.float32)
    used, _, _, check = export_model(
        result.model,
        result.spec,
        result.payload,
        path,
        batch,
        "calibration images",
        opset=int(made.get("opset", DEFAULT_OPSET)),
        exporter=str(made.get("exporter", "auto")),
    )
    export = {"exporter": used, "verified_images": check.count, "max_abs_diff": check.max_abs_diff}
    return path, {**result.recipe, "export": export, "weight_rounding": "nearest"}
