"""One Triton model's ``config.pbtxt``: dynamic batching tuned by the run's bench report, instance
groups, warm-up, the label file, and the preprocessing spec as a model parameter.

The bench report is read through :func:`edge.measure.report.read_report` (the schema's own reader and
version check): a report this code cannot use is a note and a reason to fall back to the defaults,
never an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.measure.report import MEASURED, read_report
from edge.triton.models import (
    DEFAULT_PREFERRED_BATCH_SIZES,
    LABELS,
    ORT_TRT_WORKSPACE_BYTES,
    PREFERRED_SHARE,
    ModelPlan,
    Options,
)
from edge.triton.pbtxt import Enum

Throughputs = dict[tuple[str, str], dict[int, float]]  # (artifact, device) -> batch -> images/s


def read_throughputs(report: Path) -> tuple[Throughputs, str | None]:
    """images/s per batch of every measured row of a bench report ({} where there is none), and a
    note when a report exists but cannot be read (unknown version, malformed)."""
    if not report.is_file():
        return {}, None
    try:
        data = read_report(report)
    except UserError as exc:
        return {}, f"{exc}: dynamic batching uses the default preferred sizes"
    found: Throughputs = {}
    for row in data["rows"]:
        if row["status"] not in MEASURED:
            continue
        per_batch = {c["batch"]: float(c["compute"]["items_per_s"]) for c in row.get("cells") or [] if c["status"] == "ok"}
        if per_batch:
            found[(row["artifact"], row["device"])] = per_batch
    return found, None


def choose_preferred(plan: ModelPlan, names: list[str], throughputs: Throughputs, source: str) -> None:
    """Set ``plan.preferred`` from measured throughput: the batch sizes (>1, within the model's
    range) that reach PREFERRED_SHARE of the best images/s measured for the artifact on its device.
    Measured best at batch 1: no preferred size (batching does not pay there). Nothing measured:
    the documented defaults."""
    top = plan.max_batch_size
    measured: dict[int, float] = {}
    for name in names:
        measured.update(throughputs.get((name, plan.device), {}))
    measured = {b: r for b, r in measured.items() if plan.min_batch <= b <= top}
    if measured:
        best = max(measured.values())
        plan.preferred = sorted(b for b, r in measured.items() if b > 1 and r >= PREFERRED_SHARE * best)
        plan.preferred_source = f"{source} ({plan.device}, batches {', '.join(map(str, sorted(measured)))})"
        return
    plan.preferred = [b for b in DEFAULT_PREFERRED_BATCH_SIZES if plan.min_batch <= b <= top]
    plan.preferred_source = "default (no bench figures for this artifact and device)"


def _tensor(io: Any, labels: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": io.name, "data_type": Enum(io.data_type), "dims": list(io.dims)}
    if labels:
        entry["label_filename"] = LABELS
    return entry


def _warmup(plan: ModelPlan) -> list[dict[str, Any]]:
    batch = max(1, plan.min_batch) if plan.max_batch_size else 1
    inputs = {
        io.name: {"data_type": Enum(io.data_type), "dims": [abs(d) for d in io.dims], "zero_data": True} for io in plan.inputs
    }
    return [{"name": f"zeros_batch{batch}", "batch_size": batch, "inputs": inputs}]


def _accelerator(plan: ModelPlan) -> dict[str, Any] | None:
    if plan.accelerator_precision is None:
        return None
    parameters = {
        "precision_mode": plan.accelerator_precision.upper(),
        "max_workspace_size_bytes": str(ORT_TRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": f"/tmp/triton-ort-trt-cache/{plan.name}",
    }
    return {"execution_accelerators": {"gpu_execution_accelerator": [{"name": "tensorrt", "parameters": parameters}]}}


def model_config(plan: ModelPlan, options: Options) -> dict[str, Any]:
    """The config.pbtxt of ``plan`` as plain data (``edge.triton.pbtxt.to_pbtxt`` writes it)."""
    labelled = bool(plan.spec.labels)
    config: dict[str, Any] = {
        "name": plan.name,
        "platform": plan.platform,
        "max_batch_size": plan.max_batch_size,
        "input": [_tensor(io) for io in plan.inputs],
        "output": [_tensor(io, labels=labelled and i == 0) for i, io in enumerate(plan.outputs)],
        "instance_group": [{"count": options.instances, "kind": Enum("KIND_GPU" if plan.device == "cuda" else "KIND_CPU")}],
        "cc_model_filenames": plan.cc_model_filenames or None,
        "optimization": _accelerator(plan),
        "model_warmup": _warmup(plan),
        "parameters": {
            "edge_artifact": {"string_value": plan.artifact},
            "edge_preprocess_spec": {"string_value": json.dumps(plan.spec.to_dict(), sort_keys=True)},
        },
    }
    if plan.max_batch_size > 0:
        batching: dict[str, Any] = {"max_queue_delay_microseconds": options.queue_delay_us}
        if plan.preferred:
            batching = {"preferred_batch_size": plan.preferred, **batching}
        config["dynamic_batching"] = batching
    return config
