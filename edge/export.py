"""Export a run's checkpoint to ONNX, verified against PyTorch before it is accepted.

    edge export RUN [--checkpoint PATH] [--opset N] [--verify-limit N] [--data DATA]

Writes RUN/model.onnx (dynamic batch axis "batch", input "input", output "logits", opset <= 20
so TensorRT 10.3 parses it) with the PreprocessSpec and labels in ``metadata_props``, checks it
with ``onnx.checker``, then runs ONNX Runtime against PyTorch on real images (the run's own test
images when its checkpoint names its data, else scikit-image's photos): the logits must agree
within an absolute plus relative tolerance and the top-1 classes must agree on every image.
The torch.onnx dynamo exporter is tried first; the TorchScript exporter is the fallback, and the
manifest records which one produced the file. A model.onnx already there (with its manifest) is
kept under RUN/history/<UTC time>/ before the new one replaces it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_path
from edge.errors import UserError, require
from edge.history import history_root, keeping_previous
from edge.manifest import manifest_path, write_manifest
from edge.run import ONNX_FP32, RunDir
from edge.spec import PreprocessSpec
from edge.verify import verify_file

log = logging.getLogger(__name__)

MAX_OPSET = 20  # TensorRT 10.0-10.x parses opset 9-20
MIN_OPSET = 13  # per-axis Q/DQ (the INT8 stages) needs 13
DEFAULT_OPSET = 20
DEFAULT_VERIFY_LIMIT = 64
ATOL = 1e-3
RTOL = 1e-3
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
EXTERNAL_DATA_LIMIT = 2**31 - 2**24  # protobuf's 2 GB cap, with room for the graph itself


@dataclass(frozen=True)
class Verification:
    """ORT-vs-torch agreement on real images (``top1_agreement`` in percent)."""

    count: int
    source: str
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    within_tolerance: bool

    def require_match(self) -> None:
        """Refuse an export whose logits leave the tolerance or whose top-1 changes on any image."""
        if not self.within_tolerance or self.top1_agreement < 100.0:
            raise UserError(
                f"export verification failed on {self.count} {self.source} images: max |ORT - torch| = "
                f"{self.max_abs_diff:.3g} (tolerance {ATOL} + {RTOL}*|torch|), top-1 agreement "
                f"{self.top1_agreement:.2f}% (need 100%); try --exporter torchscript or another --opset"
            )

    def to_metrics(self) -> dict[str, Any]:
        return {
            "verify_count": self.count,
            "verify_source": self.source,
            "verify_max_abs_diff": self.max_abs_diff,
            "verify_max_rel_diff": self.max_rel_diff,
            "verify_top1_agreement": self.top1_agreement,
            "verify_atol": ATOL,
            "verify_rtol": RTOL,
        }


def _resolve(
    run_or_checkpoint: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None, out: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    source = Path(run_or_checkpoint)
    if source.is_dir():
        run = RunDir.open(source)
        ckpt = (
            Path(checkpoint)
            if checkpoint
            else run.require(run.checkpoint, "train a model first (`edge train` or `edge pretrained`)")
        )
        target = Path(out) if out else run.onnx
    elif source.is_file():
        ckpt = Path(checkpoint) if checkpoint else source
        target = Path(out) if out else source.with_name(ONNX_FP32)
    else:
        raise UserError(f"{source} does not exist: give a run directory or a checkpoint file")
    if not ckpt.is_file():
        raise UserError(f"checkpoint {ckpt} does not exist: train a model first (`edge train` or `edge pretrained`)")
    if target.suffix != ".onnx":
        raise UserError(f"output {target} must end in .onnx")
    return ckpt, target


def export_onnx(
    run_or_checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    verify_limit: int = DEFAULT_VERIFY_LIMIT,
    data: str | None = None,
    exporter: str = "auto",
) -> Path:
    """Export a checkpoint (or a run's checkpoint) to verified ONNX with a manifest; returns the path.

    ``exporter``: "auto" (dynamo, falling back to TorchScript), "dynamo" or "torchscript".
    ``data``: where the verification images come from (default: the data named in the checkpoint).
    """
    _check_arguments(opset, verify_limit, exporter)
    ckpt, target = _resolve(run_or_checkpoint, checkpoint, out)
    if manifest_path(ckpt).exists():
        verify_file(ckpt)  # a malformed or mismatched checkpoint manifest stops us before model.onnx is written
    require("torch", "train", "Exporting to ONNX")  # before the work: one line when missing
    if exporter != "torchscript":
        require("onnxscript", "train", "Exporting to ONNX with the dynamo exporter")
    from train.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(ckpt)
    model, spec = model_from_checkpoint(payload)
    images, source = verification_images(spec, ckpt.parent, payload.get("config", {}), data, verify_limit)
    batch = spec.apply_batch(images)

    with tempfile.TemporaryDirectory(prefix="edge-export-") as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        used, fallback_reason, model_proto, check = export_model(model, spec, payload, tmp_path, batch, source, opset, exporter)
        with keeping_previous(history_root(target, ckpt.parent), [target], "edge export replaces it"):
            extra = _move_into_place(tmp_path, target, model_proto)
            provenance = _provenance(ckpt, payload, used, fallback_reason, opset, external_data=bool(extra))
            write_manifest(
                target, "onnx", spec, parent=ckpt, provenance=provenance, metrics=check.to_metrics(), extra_files=extra
            )
    log.info(
        "wrote %s (%s exporter, opset %d); verified on %d images (%s): max abs diff %.2g, top-1 agreement %.1f%%",
        target,
        used,
        opset,
        check.count,
        source,
        check.max_abs_diff,
        check.top1_agreement,
    )
    return target


def export_model(
    model: Any,
    spec: PreprocessSpec,
    payload: dict[str, Any],
    path: Path,
    batch: np.ndarray,
    source: str,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> tuple[str, str | None, Any, Verification]:
    """Export an in-memory ``model`` (of checkpoint ``payload``) to ``path`` with its metadata and
    verify it on ``batch`` against PyTorch (UserError when it does not match): the exporter used, the
    reason of a fallback, the ONNX model and the verification. No manifest: :func:`export_onnx`
    writes it, and `edge quantize --qat` exports its fine-tuned model into its work folder."""
    torch = require("torch", "train", "Exporting to ONNX")
    used, fallback_reason = _export(torch, model, spec, path, opset, exporter)
    model_proto = _finish(path, spec, payload, used)
    check = verify_onnx(path, model, spec, batch, source)
    check.require_match()
    return used, fallback_reason, model_proto, check


def _provenance(
    ckpt: Path, payload: dict[str, Any], exporter: str, fallback_reason: str | None, opset: int, external_data: bool
) -> dict[str, Any]:
    """How model.onnx was made, for its manifest."""
    return {
        "exporter": exporter,
        "opset": opset,
        "fallback_reason": fallback_reason,
        "checkpoint": str(ckpt),
        "arch": payload["arch"],
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "dynamic_batch": BATCH_DIM,
        "external_data": external_data,
    }


def _check_arguments(opset: int, verify_limit: int, exporter: str) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"opset {opset} is out of range: use {MIN_OPSET}..{MAX_OPSET} (TensorRT 10 parses at most {MAX_OPSET})")
    if verify_limit < 1:
        raise UserError(f"--verify-limit must be at least 1, got {verify_limit}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UserError(f"unknown exporter {exporter!r}: use auto, dynamo or torchscript")


def _export(torch: Any, model: Any, spec: PreprocessSpec, path: Path, opset: int, exporter: str) -> tuple[str, str | None]:
    # A batch of 2: torch.export specialises dimensions of size 0 and 1.
    dummy = torch.randn(2, *spec.input_shape)
    reason = None
    if exporter in ("auto", "dynamo"):
        try:
            batch = torch.export.Dim(BATCH_DIM, min=1, max=4096)
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (dummy,),
                    str(path),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: batch},),
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                    report=False,
                )
            _rename_batch_dim(path)
            return "dynamo", None
        except Exception as exc:  # the dynamo exporter fails in many ways; the fallback is the fix
            if exporter == "dynamo":
                raise UserError(f"the dynamo exporter failed: {str(exc).splitlines()[0][:300]}") from exc
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            log.warning("dynamo export failed (%s); falling back to the TorchScript exporter", reason)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            opset_version=opset,
            dynamo=False,
        )
    return "torchscript", reason


def _rename_batch_dim(path: Path) -> None:
    """The dynamo exporter names the dynamic axis after the Dim ('batch') or 's0'; make it 'batch'."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_param and dim.dim_param != BATCH_DIM:
            dim.dim_param = BATCH_DIM
    onnx.save(model, str(path))


def _finish(path: Path, spec: PreprocessSpec, payload: dict[str, Any], exporter: str) -> Any:
    """Metadata (spec, labels), structural checks and onnx.checker on the exported file."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in (
        ("preprocess_spec", spec.to_json()),
        ("labels", json.dumps(list(spec.labels))),
        ("arch", str(payload["arch"])),
        ("exporter", exporter),
    ):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "edge-harness"
    check_onnx_io(model, str(path))
    onnx.save(model, str(path), save_as_external_data=model.ByteSize() > EXTERNAL_DATA_LIMIT)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise UserError(f"exported model fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
    return model


def check_onnx_io(model: Any, name: str) -> None:
    """An edge model has one 4-D image input with a dynamic batch axis; raise UserError otherwise."""
    inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(inputs) != 1:
        raise UserError(
            f"{name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edge models take exactly one image input"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise UserError(f"{name}: input {inputs[0].name!r} has rank {len(dims)}; expected NCHW (rank 4)")
    if not dims[0].dim_param or dims[0].dim_value:
        raise UserError(
            f"{name}: input {inputs[0].name!r} has a fixed batch dimension ({dims[0].dim_value}); "
            "re-export it with a dynamic batch axis (`edge export`)"
        )


def load_onnx_checked(path: str | os.PathLike[str]) -> Any:
    """Load an ONNX model for the INT8 stages: a corrupt file or a wrong interface is a UserError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model {path} does not exist: run `edge export` first")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__}); re-export it with `edge export`") from exc
    if not model.graph.node:
        raise UserError(f"{path} is not a readable ONNX model (empty graph); re-export it with `edge export`")
    check_onnx_io(model, str(path))
    return model


def _move_into_place(tmp_path: Path, target: Path, model: Any) -> list[str | os.PathLike[str]]:
    """Move the verified file (and its external data file, if any) onto the target atomically."""
    data_files = [tmp_path.parent / f for f in os.listdir(tmp_path.parent) if f != tmp_path.name]
    moved: list[str | os.PathLike[str]] = []
    for data_file in data_files:  # external data first, so model.onnx never points at nothing
        dest = target.with_name(data_file.name)
        with atomic_path(dest) as tmp:
            shutil.copyfile(data_file, tmp)
        moved.append(dest)
    with atomic_path(target) as tmp:
        shutil.copyfile(tmp_path, tmp)
    return moved


def verification_images(
    spec: PreprocessSpec, run: Path, config: dict[str, Any], data: str | None, limit: int
) -> tuple[list[np.ndarray], str]:
    """Real images to verify on: test items of the split the run pinned (RUN/splits.json) when its
    data is known (other --data is used whole, as an external set), else scikit-image photos."""
    source = data or config.get("data")
    if source:
        from train.splits import run_data

        pinned = run_data(run, data or source, evaluate=True, exclude_seen=True)
        split = pinned.split("test", limit, seed=0)
        return [split.image(i) for i in range(len(split))], f"{pinned.data}:{'external' if pinned.external else 'test'}"
    from edge.photos import photo_set

    photos = photo_set(limit, seed=0, role="test")  # the test role: no calibration photo among them
    return photos, "scikit-image photos"


def verify_onnx(path: Path, model: Any, spec: PreprocessSpec, batch: np.ndarray, source: str) -> Verification:
    """Logits of ONNX Runtime's CPU runner vs PyTorch on the same preprocessed batch, 16 images at a time."""
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    torch = require("torch", "train", "Verifying an export")
    with torch.no_grad():
        expected = np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in _chunks(batch, 16)])
    with OnnxRuntimeRunner(path, spec) as runner:
        actual = np.concatenate([runner.infer(chunk) for chunk in _chunks(batch, 16)])
    diff = np.abs(actual - expected)
    return Verification(
        count=len(batch),
        source=source,
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff / np.maximum(np.abs(expected), 1e-6)).max()),
        top1_agreement=100.0 * int(np.count_nonzero(actual.argmax(1) == expected.argmax(1))) / len(batch),
        within_tolerance=bool(np.all(diff <= ATOL + RTOL * np.abs(expected))),
    )


def _chunks(batch: np.ndarray, size: int) -> list[np.ndarray]:
    return [batch[i : i + size] for i in range(0, len(batch), size)]


# ---- CLI ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or a checkpoint file)")
    parser.add_argument("--checkpoint", help="checkpoint to export (default: RUN/checkpoint.pt)")
    parser.add_argument("--out", help="output .onnx (default: RUN/model.onnx)")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--verify-limit",
        type=int,
        default=DEFAULT_VERIFY_LIMIT,
        help=f"images to verify ORT against torch on (default {DEFAULT_VERIFY_LIMIT})",
    )
    parser.add_argument("--data", help="verification images: 'fashion-mnist' or an ImageFolder (default: the run's data)")
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="torch.onnx exporter (default: dynamo, falling back to TorchScript)",
    )


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console
    from edge.manifest import read_manifest

    path = export_onnx(
        args.run,
        out=args.out,
        checkpoint=args.checkpoint,
        opset=args.opset,
        verify_limit=args.verify_limit,
        data=args.data,
        exporter=args.exporter,
    )
    make_console().print(export_table(path, read_manifest(path)))
    return 0


def export_table(path: Path, manifest: Any) -> Any:
    """The exported model's figures (size, verification against torch) as one table row."""
    from edge.console import make_table

    table = make_table(
        "exporter", "opset", "size MB", "verified on", "max |ORT-torch|", "top-1 agreement", title=f"exported {path}"
    )
    metrics = manifest.metrics
    table.add_row(
        manifest.provenance["exporter"],
        str(manifest.provenance["opset"]),
        f"{manifest.size_bytes / 1e6:.1f}",
        f"{metrics['verify_count']} {metrics['verify_source']}",
        f"{metrics['verify_max_abs_diff']:.2g}",
        f"{metrics['verify_top1_agreement']:.1f}%",
    )
    return table
