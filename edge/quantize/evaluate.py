"""How a quantized model compares with its float parent, every model run through the Runner contract.

Owns the evaluation sets (a split of the run's data, or scikit-image photos where no labelled data
exists: then only the agreement with the float parent is measured, and top-1 and the drop are
null), the logits of a model over
a set (:func:`predict`, ONNX Runtime's runner in batches), the comparison (top-1 and top-5 against
the labels, the drop in points and the top-1 agreement, all in percent), interleaved throughput of
several models, and the per-layer diagnostics auto ranks layers by: activation SQNR per tensor
(:func:`layer_errors`) and the logits' sensitivity to each layer's int8 weights
(:func:`weight_sensitivity`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require
from edge.measure.timing import interleaved_rounds, median_ratio
from edge.spec import PreprocessSpec

log = logging.getLogger(__name__)

EVAL_BATCH = 64


@dataclass
class EvalSet:
    """Preprocessed images with labels (None: the float parent's top-1 serves as the label)."""

    name: str
    tensor: np.ndarray
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.tensor)


def eval_set_from_data(
    run: str | os.PathLike[str],
    data: str | None,
    split: str,
    limit: int | None,
    spec: PreprocessSpec,
    seed: int = 0,
    progress: bool = True,
) -> EvalSet:
    """A stratified, seeded subset (``limit`` images; None = all) of one split the run pinned
    (``RUN/splits.json``: ``seed`` subsamples inside it, never re-draws it), preprocessed."""
    from train.splits import run_data

    images = run_data(run, data).split(split, limit=limit, seed=seed)
    if spec.num_classes and len(images.classes) != spec.num_classes:
        raise UserError(
            f"{data} has {len(images.classes)} classes but the model has {spec.num_classes}: use the data it was trained on"
        )
    tensor = np.empty((len(images), *spec.input_shape), dtype=np.float32)
    indices: Any = range(len(images))
    if progress:
        from edge.console import track

        indices = track(indices, description=f"preprocessing {data}:{split}", transient=True, unit="images")
    for i in indices:
        tensor[i] = spec.apply(images.image(i))
    return EvalSet(f"{data or images.source}:{split}", tensor, np.asarray(images.labels))


def eval_set_from_photos(count: int, spec: PreprocessSpec, role: str, seed: int = 0) -> EvalSet:
    """``count`` scikit-image photos and crops of one role (``val`` or ``test``: other photos than
    each other's and the calibration role's), unlabelled (for a model without its data here). The
    name (a manifest's ``eval_source``) says which photos."""
    from edge.photos import ROLE_PHOTOS, photo_set

    return EvalSet(
        f"scikit-image photos:{role} ({', '.join(ROLE_PHOTOS[role])}; seed {seed}, unlabelled)",
        spec.apply_batch(photo_set(count, seed, role=role)),
        None,
    )


def predict(
    model_path: str | os.PathLike[str],
    spec: PreprocessSpec,
    tensor: np.ndarray,
    batch: int = EVAL_BATCH,
    backend: str = "onnxruntime",
) -> np.ndarray:
    """Logits of an ONNX model over a preprocessed tensor, in batches, on ONNX Runtime's CPU runner
    (full graph optimization: the QDQ pairs fused, as deployed) or, ``backend="openvino"``, on
    OpenVINO's (a target-openvino model, as deployed)."""
    with cpu_runner(model_path, spec, backend) as runner:
        return np.concatenate([runner.infer(tensor[i : i + batch]) for i in range(0, len(tensor), batch)])


def cpu_runner(model_path: str | os.PathLike[str], spec: PreprocessSpec, backend: str, threads: int | None = None) -> Any:
    """An ONNX Runtime or OpenVINO CPU runner of an ONNX model (not yet active)."""
    if backend == "openvino":
        from edge.runners.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(model_path, spec, threads=threads)
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(model_path, spec, threads=threads)


def interleaved_throughput(
    paths: Sequence[str | os.PathLike[str]],
    spec: PreprocessSpec,
    batch: np.ndarray,
    threads: int | None = None,
    rounds: int = 5,
    window_s: float = 0.2,
    warmup: int = 5,
    backend: str = "onnxruntime",
) -> list[dict[str, Any]]:
    """Throughput of ONNX models at one batch, in the interleaved rounds of
    :func:`edge.measure.timing.interleaved_rounds` (each round times every model for ``window_s``,
    the order rotating and reversing from round to round). The result per model is the median over
    rounds of its images/s relative to the first model (``ratio``), with the rounds' range. Every
    model runs in the same kind of runner (``backend``: onnxruntime or openvino) with the same options."""
    runners = [(str(i), cpu_runner(path, spec, backend, threads)) for i, path in enumerate(paths)]
    with contextlib.ExitStack() as active:
        for _, runner in runners:
            active.enter_context(runner)
        timings = interleaved_rounds(runners, batch, rounds, window_s, warmup)
    reference = timings["0"]
    results = []
    for label, runner in runners:
        timing = timings[label]
        ratio, low, high = median_ratio(timing, reference)
        results.append(
            {
                "path": str(runner.path),
                "threads": runner.threads,
                "images_per_s": timing.images_per_s,
                "p50_ms": timing.p50_ms,
                "ratio": ratio,
                "ratio_min": low,
                "ratio_max": high,
                "rounds": rounds,
                "calls": len(timing.latencies_ms),
            }
        )
    return results


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def percent(count: int, total: int) -> float:
    """``count`` of ``total`` in percent, from the exact integers (NaN for an empty set)."""
    return 100.0 * count / total if total else float("nan")


def compare(parent_logits: np.ndarray, child_logits: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Top-1/top-5 of child and parent and the top-1 agreement in percent, the drop in points.

    Without labels only the agreement (and its flips) is measured: top-1, top-5 and the drop are
    None (``labelled: false``), never the parent's own predictions scored as if they were truth."""
    parent_top1 = parent_logits.argmax(1)
    total = int(len(parent_top1))
    flips = int(np.count_nonzero(child_logits.argmax(1) != parent_top1))
    figures: dict[str, Any] = {
        "top1": None,
        "top5": None,
        "parent_top1": None,
        "parent_top5": None,
        "drop_points": None,
        "agreement": percent(total - flips, total),
        "flips": flips,
        "lost": None,
        "gained": None,
        "eval_count": total,
        "labelled": labels is not None,
    }
    if labels is not None:
        child_ok, parent_ok = topk_correct(child_logits, labels, 1), topk_correct(parent_logits, labels, 1)
        correct, parent_correct = int(np.count_nonzero(child_ok)), int(np.count_nonzero(parent_ok))
        figures.update(
            lost=int(np.count_nonzero(parent_ok & ~child_ok)),  # the paired counts acceptance judges
            gained=int(np.count_nonzero(~parent_ok & child_ok)),
            top1=percent(correct, total),
            top5=percent(int(np.count_nonzero(topk_correct(child_logits, labels, 5))), total),
            parent_top1=percent(parent_correct, total),
            parent_top5=percent(int(np.count_nonzero(topk_correct(parent_logits, labels, 5))), total),
            drop_points=round(percent(parent_correct - correct, total), 4),
        )
    return figures


def layer_errors(
    float_path: str | os.PathLike[str], qdq_path: str | os.PathLike[str], spec: PreprocessSpec, batches: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """Per-tensor quantization error (SQNR in dB), the nodes that lose the most first.

    ``qdq_err_db``: the error of quantizing that tensor alone (meaningless for an activation that
    QDQ folded away); ``xmodel_err_db``: the accumulated error against the float model there;
    ``loss_db``: how much SQNR the producing node loses; ``keep_float``: the nodes ``auto``
    keeps in float to undo it."""
    import onnx

    debug = require("onnxruntime.quantization.qdq_loss_debug", "cpu", "Per-layer quantization error")
    with tempfile.TemporaryDirectory(prefix="edge-qdq-debug-") as tmp:
        activations = []
        for name, path in (("float", float_path), ("qdq", qdq_path)):
            augmented = Path(tmp) / f"{name}.onnx"
            debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations.append(_activations(augmented, spec, batches))
    float_acts, qdq_acts = activations
    errors = debug.compute_activation_error(debug.create_activation_matching(qdq_acts, float_acts))
    rows = _error_rows(errors, onnx.load(str(float_path)))
    rows.sort(key=lambda r: -r["loss_db"])
    return rows


# The suffix onnxruntime.quantization.qdq_loss_debug gives the outputs it adds for each saved tensor.
SAVED_TENSOR_SUFFIX = "_ReshapedSavedOutput"


def _activations(augmented: Path, spec: PreprocessSpec, batches: Sequence[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Every saved tensor of a model augmented by qdq_loss_debug, per batch, by tensor name (what
    its ``collect_activations`` returns), run through the runner with all outputs."""
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    activations: dict[str, list[np.ndarray]] = {}
    runner = OnnxRuntimeRunner(augmented, spec, all_outputs=True)
    with runner:
        for batch in batches:
            for name, value in runner.infer_outputs(batch).items():
                if name.endswith(SAVED_TENSOR_SUFFIX):
                    activations.setdefault(name[: -len(SAVED_TENSOR_SUFFIX)], []).append(value)
    if not activations:
        raise RuntimeError(f"{augmented.name}: no intermediate tensors were collected (no batches, or no saved outputs)")
    return activations


def _error_rows(errors: dict[str, Any], float_model: Any) -> list[dict[str, Any]]:
    """One report row per tensor: its errors in dB, what its producer loses, the nodes to keep in float."""
    producers: dict[str, Any] = {}
    for node in float_model.graph.node:
        for tensor in node.output:
            producers[tensor] = node
    rows = []
    for tensor, err in errors.items():
        node = producers.get(tensor)
        accumulated = float(err.get("xmodel_err", float("nan")))
        # SQNR this node loses: its best input's accumulated SQNR minus its output's. A large loss
        # marks the node that quantization hurts most, whatever the damage done before it.
        inputs = [errors[i].get("xmodel_err") for i in (node.input if node is not None else []) if i in errors]
        rows.append(
            {
                "tensor": tensor,
                "producer": node.name if node is not None else "(graph input)",
                "producer_op": node.op_type if node is not None else "input",
                "qdq_err_db": float(err["qdq_err"]),
                "xmodel_err_db": accumulated,
                "loss_db": float(max(inputs) - accumulated) if inputs else 0.0,
                "keep_float": _float_candidates(node, producers),
            }
        )
    return rows


def _float_candidates(node: Any, producers: dict[str, Any]) -> list[str]:
    """The nodes to keep in float for a tensor: its producer, and for a fused activation
    (Clip/Relu, which QDQ folds into the op before it) that op as well."""
    if node is None:
        return []
    names = [node.name]
    if node.op_type in ("Clip", "Relu") and node.input and node.input[0] in producers:
        names.insert(0, producers[node.input[0]].name)
    return names


def weight_sensitivity(float_path: str | os.PathLike[str], spec: PreprocessSpec, batch: np.ndarray) -> list[dict[str, Any]]:
    """Per weighted node: the logits' SQNR (dB) when only that node's weights are fake-quantized
    to per-channel symmetric int8, most sensitive first. Each variant is a temporary file that
    ONNX Runtime's runner runs like any model.

    Layers right after the input can be very sensitive (a folded BatchNorm with a tiny variance
    makes a weighted sum cancel a large bias), which activation SQNR alone does not reveal."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(float_path))
    reference = predict(float_path, spec, batch, batch=len(batch))
    inits = {init.name: index for index, init in enumerate(model.graph.initializer)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-sensitivity-") as tmp:
        noisy_path = Path(tmp) / "noisy.onnx"
        for node in model.graph.node:
            if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
                continue
            index = inits[node.input[1]]
            original = model.graph.initializer[index]
            weight = numpy_helper.to_array(original)
            if weight.ndim < 2:
                continue
            saved = onnx.TensorProto()
            saved.CopyFrom(original)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(fake_quantized(weight), original.name))
            onnx.save(model, str(noisy_path))
            model.graph.initializer[index].CopyFrom(saved)
            noise = max(float(np.linalg.norm(reference - predict(noisy_path, spec, batch, batch=len(batch)))), 1e-12)
            rows.append(
                {
                    "node": node.name,
                    "op": node.op_type,
                    "weight": original.name,
                    "logits_sqnr_db": 20 * float(np.log10(max(float(np.linalg.norm(reference)), 1e-12) / noise)),
                }
            )
    rows.sort(key=lambda r: r["logits_sqnr_db"])
    return rows


def fake_quantized(weight: np.ndarray) -> np.ndarray:
    """``weight`` rounded to per-output-channel symmetric int8 and back to its float type."""
    scale = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).reshape(-1, *([1] * (weight.ndim - 1)))
    return (np.clip(np.round(weight / scale), -127, 127) * scale).astype(weight.dtype)
