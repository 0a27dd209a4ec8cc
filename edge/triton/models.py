"""The Triton models of a run's artifacts: what a model is (``ModelPlan``), and the ONNX models'.

    REPO/<prefix>-onnx-fp32/config.pbtxt          platform onnxruntime_onnx (CPU; --gpu: TensorRT accelerator)
    REPO/<prefix>-onnx-fp32/labels.txt            the spec's class names, wired as label_filename
    REPO/<prefix>-onnx-fp32/1/model.onnx          version directory 1/ (Triton's default file name)
    REPO/<prefix>-trt-fp16/1/model.<gpu>-sm<cc>-trt<v>.plan   one plan per GPU architecture, named
                                                  in cc_model_filenames (platform tensorrt_plan)
    REPO/README.md                                server command, client-side preprocessing, a client

What each config says comes from the artifacts themselves: input/output names, dtypes and dims from
the ONNX graph (an engine's from its manifest's optimization profile and its ONNX parent),
``max_batch_size`` from the dynamic batch axis or the engine profile's max, ``preferred_batch_size``
from the run's bench report (the batch sizes within 90% of the artifact's best images/s on the
device Triton will run it on), else ``DEFAULT_PREFERRED_BATCH_SIZES``. Every file copied is checked
against its manifest first; an artifact its maker did not accept is left out unless ``force``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from edge.artifact_spec import artifact_spec
from edge.errors import UserError
from edge.measure import rows
from edge.run import ONNX_FP32, ONNX_INT8_CPU, ONNX_INT8_TRT, RunDir
from edge.spec import PreprocessSpec
from edge.verify import is_rejected, unverified_reason, verify_artifact

log = logging.getLogger(__name__)

VERSION = "1"
CONFIG = "config.pbtxt"
LABELS = "labels.txt"
DEFAULT_MAX_BATCH = 32  # for an ONNX model with a dynamic batch axis (it has no maximum of its own)
DEFAULT_PREFERRED_BATCH_SIZES = (4, 8, 16)  # without a bench report: small batches that rarely wait long
DEFAULT_QUEUE_DELAY_US = 500  # how long the scheduler may hold a request to form a preferred batch
PREFERRED_SHARE = 0.9  # a batch size is preferred when it reaches 90% of the best measured images/s
ORT_TRT_WORKSPACE_BYTES = 1 << 30
# ONNX elem_type -> Triton data type (onnx.TensorProto numbering)
ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    10: "TYPE_FP16",
    16: "TYPE_BF16",
}
ONNX_MODELS = ((rows.ONNX_FP32, ONNX_FP32), (rows.INT8_CPU, ONNX_INT8_CPU), (rows.INT8_TRT, ONNX_INT8_TRT))


@dataclass(frozen=True)
class TensorIO:
    name: str
    data_type: str  # TYPE_FP32 ...
    dims: tuple[int, ...]  # without the batch axis where max_batch_size > 0


@dataclass(frozen=True)
class Options:
    """What ``edge triton`` was asked for."""

    gpu: bool = False  # ONNX models on KIND_GPU with ONNX Runtime's TensorRT accelerator
    trt_precision: str = "fp16"  # that accelerator's precision for model.onnx
    max_batch: int | None = None  # override for ONNX models with a dynamic batch axis
    instances: int = 1
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    prefix: str | None = None
    artifacts: tuple[str, ...] | None = None  # bench names to include (None: all)
    force: bool = False


@dataclass
class ModelPlan:
    """One Triton model: where its files come from and what its config says."""

    name: str
    artifact: str
    platform: str
    inputs: list[TensorIO]
    outputs: list[TensorIO]
    max_batch_size: int
    spec: PreprocessSpec
    files: dict[str, Path]  # name in the version directory -> source file
    device: str  # "cpu" or "cuda": the bench device whose figures tune it
    cc_model_filenames: dict[str, str] = field(default_factory=dict)
    accelerator_precision: str | None = None  # ONNX Runtime's TensorRT accelerator (--gpu)
    min_batch: int = 1
    preferred: list[int] = field(default_factory=list)
    preferred_source: str = "default"
    sha256: dict[str, str] = field(default_factory=dict)


# ---- reading the artifacts -------------------------------------------------------------------


def onnx_io(path: Path) -> tuple[list[TensorIO], list[TensorIO], bool]:
    """Inputs, outputs and whether every one of them has a dynamic first (batch) axis."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a corrupt file
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__}): export it again") from exc
    initializers = {init.name for init in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers], list(model.graph.output)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
        for vs in values
        for v in vs
    }
    dynamic = all(shape and shape[0] in (-1, 0) for shape in shapes.values())
    tensors: tuple[list[TensorIO], list[TensorIO]] = ([], [])
    for group, out in zip(values, tensors):
        for value in group:
            elem = value.type.tensor_type.elem_type
            if elem not in ONNX_TO_TRITON:
                raise UserError(f"{path}: tensor {value.name!r} has ONNX type {elem}, which this tool does not map to Triton")
            dims = shapes[value.name][1:] if dynamic else shapes[value.name]
            out.append(TensorIO(value.name, ONNX_TO_TRITON[elem], tuple(-1 if d <= 0 else d for d in dims)))
    return tensors[0], tensors[1], dynamic


def external_data_files(path: Path) -> list[str]:
    """The external-data files an ONNX model's initializers name (relative to the model)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations: set[str] = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return sorted(locations)


def _checked(path: Path, force: bool) -> tuple[str | None, str | None]:
    """(sha256 or None, why it is left out or None): the file matches its manifest and was accepted."""
    manifest = verify_artifact(path)
    if manifest is None:
        unverified = unverified_reason(path)
        return None, None if force else f"{path.name} left out: unverified: {unverified}; --force includes it"
    if is_rejected(manifest) and not force:
        reason = manifest.metrics.get("reason") or "manifest accepted: false"
        return manifest.sha256, f"{path.name} left out: its maker did not accept it ({reason}); --force includes it"
    return manifest.sha256, None


def plan_onnx(run: RunDir, artifact: str, path: Path, options: Options, prefix: str) -> ModelPlan:
    """The Triton model of one of the run's ONNX models."""
    inputs, outputs, dynamic = onnx_io(path)
    on_gpu = options.gpu and artifact != rows.INT8_CPU  # int8-cpu's uint8 QDQ is ONNX Runtime CPU's format
    precision = {rows.INT8_TRT: "int8"}.get(artifact, options.trt_precision) if on_gpu else None
    plan = ModelPlan(
        name=f"{prefix}-{artifact}",
        artifact=artifact,
        platform="onnxruntime_onnx",
        inputs=inputs,
        outputs=outputs,
        max_batch_size=(options.max_batch or DEFAULT_MAX_BATCH) if dynamic else 0,
        spec=artifact_spec(path),
        files={"model.onnx": path},
        device="cuda" if on_gpu else "cpu",
        accelerator_precision=precision,
    )
    for location in external_data_files(path):  # external weights live beside the model, by relative name
        plan.files[location] = path.parent / location
    return plan


def onnx_plans(run: RunDir, options: Options, prefix: str) -> tuple[list[ModelPlan], list[str]]:
    """The run's ONNX models as Triton models (int8-trt only with --gpu: its home is TensorRT)."""
    plans, notes = [], []
    for artifact, name in ONNX_MODELS:
        path = run.root / name
        if not path.exists() or (options.artifacts is not None and artifact not in options.artifacts):
            continue
        if artifact == rows.INT8_TRT and not options.gpu:
            notes.append(
                f"{name} left out: its symmetric INT8 is for TensorRT (add --gpu to serve it through ORT's TensorRT accelerator)"
            )
            continue
        sha, why = _checked(path, options.force)
        if why:
            notes.append(why)
            continue
        plan = plan_onnx(run, artifact, path, options, prefix)
        plan.sha256["model.onnx"] = sha or ""
        plans.append(plan)
    return plans, notes
