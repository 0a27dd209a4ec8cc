"""Accuracy of a quantized model against its float parent, and per-layer quantization error.

Every quantized artifact is compared with its float parent on the same preprocessed images:
top-1 and top-5 against the labels, the drop in points, and top-1 agreement (the share of
images whose predicted class did not change). Where no labelled data exists (the ImageNet
model has no ImageNet images here) the parent's own top-1 is the label, which the metrics say.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require
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
    data: str, split: str, limit: int | None, spec: PreprocessSpec, seed: int = 0, progress: bool = True
) -> EvalSet:
    """A stratified, seeded subset (``limit`` images; None = all) of one split, preprocessed."""
    from train.data import open_data

    images = open_data(data, seed=seed).split(split, limit=limit, seed=seed)
    if spec.num_classes and len(images.classes) != spec.num_classes:
        raise UserError(
            f"{data} has {len(images.classes)} classes but the model has {spec.num_classes}: use the data it was trained on"
        )
    tensor = np.empty((len(images), *spec.input_shape), dtype=np.float32)
    indices: Any = range(len(images))
    if progress:
        from rich.progress import track

        indices = track(indices, description=f"preprocessing {data}:{split}", transient=True)
    for i in indices:
        tensor[i] = spec.apply(images.image(i))
    return EvalSet(f"{data}:{split}", tensor, np.asarray(images.labels))


def eval_set_from_photos(count: int, spec: PreprocessSpec, seed: int) -> EvalSet:
    """scikit-image photos and crops, unlabelled (for a model without its data here)."""
    from edge.photos import photo_set

    return EvalSet(
        f"scikit-image photos (seed {seed}, labels = float parent's top-1)", spec.apply_batch(photo_set(count, seed)), None
    )


def session(model_path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An ORT CPU session with full graph optimization (the QDQ pairs fused, as deployed)."""
    ort = require("onnxruntime", "cpu", "Evaluating ONNX models")
    from edge.runners.onnxruntime_runner import physical_cores

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types for invalid models
        raise UserError(f"ONNX Runtime cannot load {model_path}: {str(exc).splitlines()[0][:300]}") from exc


def predict(model_path: str | os.PathLike[str], tensor: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """Logits of a model over a preprocessed tensor, in batches."""
    sess = session(model_path)
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: np.ascontiguousarray(tensor[i : i + batch])})[0] for i in range(0, len(tensor), batch)]
    )


def interleaved_throughput(
    paths: Sequence[str | os.PathLike[str]],
    spec: PreprocessSpec,
    batch: np.ndarray,
    threads: int | None = None,
    rounds: int = 5,
    window_s: float = 0.2,
    warmup: int = 5,
) -> list[dict[str, Any]]:
    """Throughput of ONNX models at one batch, measured in interleaved rounds: each round times
    every model for ``window_s`` in turn. Load from other processes drifts over seconds, so the
    ratio of two models within a round is steadier than the ratio of two separate windows; the
    result per model is the median over rounds of its images/s relative to the first model
    (``ratio``), with the rounds' spread. Every model runs in the same ONNX Runtime runner with the
    same session options."""
    from edge.runners.onnxruntime_runner import OnnxRuntimeRunner

    if rounds < 1 or window_s <= 0:
        raise UserError(f"throughput needs at least one round and a positive window (got {rounds}, {window_s})")
    runners = [OnnxRuntimeRunner(path, spec, threads=threads) for path in paths]
    per_round: list[list[float]] = [[] for _ in runners]
    latencies: list[list[float]] = [[] for _ in runners]
    try:
        for runner in runners:
            runner.activate()
            for _ in range(warmup):
                runner.infer(batch)
        for _ in range(rounds):
            for i, runner in enumerate(runners):
                calls = 0
                start = time.perf_counter()
                while True:
                    t0 = time.perf_counter()
                    runner.infer(batch)
                    now = time.perf_counter()
                    latencies[i].append(now - t0)
                    calls += 1
                    if now - start >= window_s and calls >= 3:
                        break
                per_round[i].append(calls * len(batch) / (now - start))
    finally:
        for runner in runners:
            runner.deactivate()
    results = []
    for i, runner in enumerate(runners):
        ratios = [mine / ref for mine, ref in zip(per_round[i], per_round[0])]
        results.append(
            {
                "path": str(runner.path),
                "threads": runner.threads,
                "images_per_s": float(np.median(per_round[i])),
                "p50_ms": 1000 * float(np.median(latencies[i])),
                "ratio": float(np.median(ratios)),
                "ratio_min": float(min(ratios)),
                "ratio_max": float(max(ratios)),
                "rounds": rounds,
                "calls": len(latencies[i]),
            }
        )
    return results


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def compare(parent_logits: np.ndarray, child_logits: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Top-1/top-5 of child and parent, the drop in points and the top-1 agreement."""
    parent_top1 = parent_logits.argmax(1)
    truth = parent_top1 if labels is None else labels
    top1 = float(topk_correct(child_logits, truth, 1).mean())
    parent = float(topk_correct(parent_logits, truth, 1).mean())
    return {
        "top1": top1,
        "top5": float(topk_correct(child_logits, truth, 5).mean()),
        "parent_top1": parent,
        "parent_top5": float(topk_correct(parent_logits, truth, 5).mean()),
        "drop_points": round(100.0 * (parent - top1), 4),
        "agreement": float(np.mean(child_logits.argmax(1) == parent_top1)),
        "flips": int(np.count_nonzero(child_logits.argmax(1) != parent_top1)),
        "eval_count": int(len(truth)),
        "labelled": labels is not None,
    }


def layer_errors(
    float_path: str | os.PathLike[str], qdq_path: str | os.PathLike[str], batches: Sequence[np.ndarray]
) -> list[dict[str, Any]]:
    """Per-tensor quantization error (SQNR in dB), the nodes that lose the most first.

    ``qdq_err_db``: the error of quantizing that tensor alone (meaningless for an activation that
    QDQ folded away); ``xmodel_err_db``: the accumulated error against the float model there;
    ``loss_db``: how much SQNR the producing node loses; ``keep_float``: the nodes ``auto``
    keeps in float to undo it."""
    import onnx

    debug = require("onnxruntime.quantization.qdq_loss_debug", "cpu", "Per-layer quantization error")
    reader_module = require("onnxruntime.quantization", "cpu", "Per-layer quantization error")

    class Reader(reader_module.CalibrationDataReader):  # type: ignore[name-defined]
        def __init__(self, name: str) -> None:
            self._it = iter([{name: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    float_model = onnx.load(str(float_path))
    input_name = float_model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edge-qdq-debug-") as tmp:
        aug_float = str(Path(tmp) / "float.onnx")
        aug_qdq = str(Path(tmp) / "qdq.onnx")
        debug.modify_model_output_intermediate_tensors(str(float_path), aug_float)
        debug.modify_model_output_intermediate_tensors(str(qdq_path), aug_qdq)
        float_acts = debug.collect_activations(aug_float, Reader(input_name))
        qdq_acts = debug.collect_activations(aug_qdq, Reader(input_name))
    matching = debug.create_activation_matching(qdq_acts, float_acts)
    errors = debug.compute_activation_error(matching)
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
    rows.sort(key=lambda r: -r["loss_db"])
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


def weight_sensitivity(float_path: str | os.PathLike[str], batch: np.ndarray) -> list[dict[str, Any]]:
    """Per weighted node: the logits' SQNR (dB) when only that node's weights are fake-quantized
    to per-channel symmetric int8, most sensitive first.

    Layers right after the input can be very sensitive (a folded BatchNorm with a tiny variance
    makes a weighted sum cancel a large bias), which activation SQNR alone does not reveal."""
    import onnx
    from onnx import numpy_helper

    ort = require("onnxruntime", "cpu", "Per-layer sensitivity")
    model = onnx.load(str(float_path))
    name = model.graph.input[0].name
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def logits(proto: Any) -> np.ndarray:
        sess = ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        return np.asarray(sess.run(None, {name: batch})[0])

    reference = logits(model)
    inits = {init.name: index for index, init in enumerate(model.graph.initializer)}
    rows = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        index = inits[node.input[1]]
        original = model.graph.initializer[index]
        weight = numpy_helper.to_array(original)
        if weight.ndim < 2:
            continue
        scale = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1) / 127.0
        scale = np.where(scale > 0, scale, 1.0).reshape(-1, *([1] * (weight.ndim - 1)))
        fake = (np.clip(np.round(weight / scale), -127, 127) * scale).astype(weight.dtype)
        saved = onnx.TensorProto()
        saved.CopyFrom(original)
        model.graph.initializer[index].CopyFrom(numpy_helper.from_array(fake, original.name))
        noisy = logits(model)
        model.graph.initializer[index].CopyFrom(saved)
        noise = max(float(np.linalg.norm(reference - noisy)), 1e-12)
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
