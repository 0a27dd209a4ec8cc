"""The rows of a bench: an artifact's name in a run, its float parent, and what kind of conversion it is.

A run's artifacts are named once, here, and every reader (bench, the gate, compare, ``edge inspect``,
``edge pack``, ``edge triton``) uses these names::

    torch-fp32                 checkpoint.pt (the trained model)
    onnx-fp32                  model.onnx (exported from the checkpoint)
    int8-cpu / int8-trt        model.int8-{cpu,trt}.onnx (quantized from model.onnx)
    int8-openvino              model.int8-openvino.onnx (quantized for OpenVINO, run there)
    openvino-fp32 / -int8      model.onnx / model.int8-cpu.onnx run on OpenVINO
    trt-<precision>@<machine>  engines/<machine>/model.<precision>.engine (built from model.onnx)

Each artifact's accuracy is compared with its *float parent*: INT8 files and engines with the ONNX
float model they were made from, the ONNX float model with the checkpoint it was exported from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.run import RunDir, engine_precision

TORCH_FP32 = "torch-fp32"
ONNX_FP32 = "onnx-fp32"
INT8_CPU = "int8-cpu"
INT8_TRT = "int8-trt"
INT8_OPENVINO = "int8-openvino"
OPENVINO_FP32 = "openvino-fp32"
OPENVINO_INT8 = "openvino-int8"
ENGINE_PREFIX = "trt-"

FLOAT_PARENT = {
    ONNX_FP32: TORCH_FP32,
    INT8_CPU: ONNX_FP32,
    INT8_TRT: ONNX_FP32,
    INT8_OPENVINO: ONNX_FP32,
    OPENVINO_FP32: ONNX_FP32,
    OPENVINO_INT8: ONNX_FP32,
}
# Rows that run another row's file on another backend: name -> (the file's own row, backend).
OTHER_BACKEND = {OPENVINO_FP32: (ONNX_FP32, "openvino"), OPENVINO_INT8: (INT8_CPU, "openvino")}
# Rows whose own file is for one backend only: run there, and part of ``all`` only where it is installed.
OWN_BACKEND = {INT8_OPENVINO: "openvino"}
SIMULATED = frozenset({INT8_TRT})  # TensorRT's INT8 arithmetic, evaluated with ONNX Runtime's CPU kernels


def row_backend(name: str) -> str:
    """The backend a row runs on: another row's file on another backend, a file made for one, or ``auto``."""
    if name in OTHER_BACKEND:
        return OTHER_BACKEND[name][1]
    return OWN_BACKEND.get(name, "auto")


def float_parent(name: str) -> str | None:
    """The float reference of an artifact (engines ``trt-*`` compare against ``onnx-fp32``)."""
    if name.startswith(ENGINE_PREFIX):
        return ONNX_FP32
    return FLOAT_PARENT.get(name)


def is_exact_conversion(name: str) -> bool:
    """Conversions that should not change a prediction: torch -> ONNX FP32, ONNX -> TensorRT FP32/FP16
    or OpenVINO FP32."""
    return name in (ONNX_FP32, OPENVINO_FP32) or name.startswith((f"{ENGINE_PREFIX}fp32", f"{ENGINE_PREFIX}fp16"))


def engine_row(engine: Path) -> str:
    """``engines/<machine>/model.fp16.engine`` -> ``trt-fp16@<machine>``."""
    return f"{ENGINE_PREFIX}{engine_precision(engine)}@{engine.parent.name}"


def run_artifacts(run: RunDir) -> dict[str, Path]:
    """The deployable artifacts present in a run, by row name (OpenVINO rows are added by bench)."""
    found: dict[str, Path] = {}
    for name, path in (
        (TORCH_FP32, run.checkpoint),
        (ONNX_FP32, run.onnx),
        (INT8_CPU, run.int8_cpu),
        (INT8_TRT, run.int8_trt),
        (INT8_OPENVINO, run.int8_openvino),
    ):
        if path.exists():
            found[name] = path
    for engine in run.engine_files():
        found[engine_row(engine)] = engine
    return found


def ok_cell(row: dict[str, Any], batch: int) -> dict[str, Any] | None:
    """A row's timed cell at ``batch`` (None when it was not timed, skipped or errored there)."""
    return next((c for c in row.get("cells") or [] if c.get("batch") == batch and c.get("status") == "ok"), None)


def round_p50s(cell: dict[str, Any]) -> list[float]:
    """The p50 of each timing round of a cell (empty for a cell timed before rounds existed)."""
    return [r["p50_ms"] for r in (cell.get("compute") or {}).get("rounds") or []]
