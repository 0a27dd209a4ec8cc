"""Per-layer sensitivity of a QDQ model, measured as paired flips with the gate's exact bounds.

For every quantized layer (a Conv, Gemm or MatMul that reads a DequantizeLinear) two variants of
the one QDQ model the search already built (from its one calibration pass) are derived by graph
surgery, with no new calibration and no new quantization:

- **float only**: that layer reads float inputs and float weights, every other layer stays as
  quantized. What quantizing the layer costs *in the full INT8 model*: the full model's flips
  against the variant's;
- **quantized only**: that layer alone reads quantized inputs and weights (its output keeps its
  Q/DQ, as in the full model), every other layer reads float. What quantizing the layer costs
  *on its own*: the float model's flips against the variant's.

Each cost is a paired comparison on the same val images (:func:`edge.measure.paired.paired_flips`),
with the exact one-sided bounds the acceptance rule uses (:mod:`edge.measure.acceptance`), twice:
in points of top-1 *agreement with the float model* (the "label" is the float model's own top-1:
what ``--min-agreement`` reads, and all there is on unlabelled photos) and, on labelled data, in
points of top-1. A positive cost hurts. A layer whose agreement cost has a lower bound above zero
*hurts*; one whose upper bound is below zero *helps* (quantizing it fixes more than it breaks);
every other layer is *indistinguishable from zero* at that n and is listed as one group, in graph
order, not ranked as if its members differed.

:func:`measure_sensitivity` measures, :func:`fallback_order` turns the result into the order
``--method auto`` keeps layers in float (``edge.quantize.search``), :func:`write_sensitivity` writes
``model.int8-<target>.sensitivity.json`` and ``.png`` beside the model (atomically, together).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_paths
from edge.measure.paired import CONFIDENCE, min_detectable_drop, paired_flips
from edge.quantize.evaluate import EvalSet, predict
from edge.quantize.targets import WEIGHTED_OPS
from edge.spec import PreprocessSpec

log = logging.getLogger(__name__)

VARIANTS = ("float_only", "quantized_only")
HURTS, INDISTINGUISHABLE, HELPS = "hurts", "indistinguishable from zero", "helps"
FUSED_ACTIVATIONS = ("Relu", "Clip")  # folded into the weighted op before them by QDQ: kept in float with it
PLOTTED = 40  # layers in the PNG, in ranked order (the JSON has all)
_QDQ = ("QuantizeLinear", "DequantizeLinear")
FLOAT_SUFFIX = "_sensitivity_float"
OUTPUT_READER = "(graph output)"


@dataclass(frozen=True)
class Layer:
    """A quantized weighted node and the nodes ``nodes_to_exclude`` names to keep it in float."""

    node: str
    op: str
    exclude: tuple[str, ...]


def sensitivity_name(quantized: str | Path, suffix: str) -> str:
    """``model.int8-cpu.onnx`` -> ``model.int8-cpu.sensitivity.json`` (``suffix`` ``.json`` or ``.png``)."""
    return Path(quantized).name.removesuffix(".onnx") + ".sensitivity" + suffix


def sensitivity_paths(quantized: Path) -> tuple[Path, Path]:
    """The JSON and PNG beside a quantized model."""
    return quantized.with_name(sensitivity_name(quantized, ".json")), quantized.with_name(sensitivity_name(quantized, ".png"))


def quantized_layers(qdq: Any, float_model: Any) -> list[Layer]:
    """The weighted nodes of ``qdq`` that read a DequantizeLinear, in graph order, each with the
    fused activation after it in the float model (a Relu/Clip that is its output's only reader)."""
    producers = {out: node for node in qdq.graph.node for out in node.output}
    readers: dict[str, list[Any]] = {}
    for node in float_model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    float_nodes = {node.name: node for node in float_model.graph.node}
    layers = []
    for node in qdq.graph.node:
        if node.op_type not in WEIGHTED_OPS or node.name not in float_nodes:
            continue
        if not any(name in producers and producers[name].op_type == "DequantizeLinear" for name in node.input):
            continue
        exclude = [node.name]
        after = readers.get(float_nodes[node.name].output[0], [])
        if len(after) == 1 and after[0].op_type in FUSED_ACTIVATIONS:
            exclude.append(after[0].name)
        layers.append(Layer(node.name, node.op_type, tuple(exclude)))
    return layers


def variant(qdq: Any, float_model: Any, quantized: Callable[[str, str | None], bool]) -> Any:
    """A copy of ``qdq`` in which every input a DequantizeLinear feeds is read in float unless
    ``quantized(reader, source)`` says to keep it (``source``: the node whose output the Q/DQ
    pair carries, None for a weight, a bias or the graph input). A float weight or bias is the
    float model's own initializer; a float activation is the tensor the QuantizeLinear reads. Q/DQ
    nodes nobody reads any more are dropped."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    producers = {out: node for node in model.graph.node for out in node.output}
    float_nodes = {node.name: node for node in float_model.graph.node}
    float_inits = {init.name: init for init in float_model.graph.initializer}
    inits = {init.name for init in model.graph.initializer}
    folded = _FoldedActivations(model, float_model, inits)
    for node in list(model.graph.node):
        if node.op_type in _QDQ:
            continue
        for index, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                source_tensor = q.input[0]
                source = producers[source_tensor].name if source_tensor in producers else None
                if not quantized(node.name, source):
                    node.input[index] = folded.output(source_tensor)
            elif dq.input[0] in inits and node.name in float_nodes and index < len(float_nodes[node.name].input):
                if quantized(node.name, None):
                    continue
                float_name = float_nodes[node.name].input[index]
                if float_name not in float_inits:
                    continue  # not a constant in the float model: leave it quantized
                renamed = float_name + FLOAT_SUFFIX  # the QDQ model may use the float name for the DQ's output
                if renamed not in inits:
                    init = model.graph.initializer.add()
                    init.CopyFrom(float_inits[float_name])
                    init.name = renamed
                    inits.add(renamed)
                node.input[index] = renamed
    _float_outputs(model, quantized)
    _drop_unread(model)
    _sort_topologically(model)
    return model


def _sort_topologically(model: Any) -> None:
    """Put the nodes back in an order where each comes after what it reads (an activation put back
    was appended at the end), keeping the original order wherever it already holds."""
    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    placed: set[int] = set()
    order: list[int] = []

    def place(i: int) -> None:
        stack = [i]
        while stack:
            j = stack[-1]
            missing = [producer[n] for n in nodes[j].input if n in producer and producer[n] not in placed and producer[n] != j]
            if missing:
                stack.append(missing[0])
                continue
            stack.pop()
            if j not in placed:
                placed.add(j)
                order.append(j)

    for i in range(len(nodes)):
        place(i)
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


def _float_outputs(model: Any, quantized: Callable[[str, str | None], bool]) -> None:
    """A graph output a Q/DQ pair produces becomes its float source (renamed to the output's name)
    unless ``quantized(OUTPUT_READER, source)`` keeps the pair."""
    producers = {out: node for node in model.graph.node for out in node.output}
    for output in model.graph.output:
        dq = producers.get(output.name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in producers:
            continue
        source = producers[q.input[0]]
        if quantized(OUTPUT_READER, source.name):
            continue
        tensor = q.input[0]
        model.graph.node.remove(dq)
        model.graph.node.remove(q)
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = output.name
        source.output[list(source.output).index(tensor)] = output.name


class _FoldedActivations:
    """The float value a bypassed Q/DQ pair stood for. QDQ folds a Relu or Clip into the
    QuantizeLinear after the op before it (its range clips instead); reading that op's output in
    float needs the activation back, so a copy of the float model's node is added, once per tensor."""

    def __init__(self, model: Any, float_model: Any, inits: set[str]):
        present = {node.name for node in model.graph.node}
        self.model, self.inits = model, inits
        self.added: dict[str, str] = {}
        self.float_inits = {init.name: init for init in float_model.graph.initializer}
        self.folded: dict[str, Any] = {}
        for node in float_model.graph.node:
            if node.op_type in FUSED_ACTIVATIONS and node.name not in present and node.input:
                # ORT gives the op its activation's output name, or keeps its own: either reaches the Q
                self.folded[node.input[0]] = self.folded[node.output[0]] = node

    def output(self, tensor: str) -> str:
        """``tensor`` itself, or the output of its folded activation (added to the model)."""
        activation = self.folded.get(tensor)
        if activation is None:
            return tensor
        if tensor not in self.added:
            node = self.model.graph.node.add()
            node.CopyFrom(activation)
            node.name = activation.name + FLOAT_SUFFIX
            node.input[0] = tensor
            del node.output[:]
            node.output.append(tensor + FLOAT_SUFFIX)
            for name in activation.input[1:]:
                if name and name not in self.inits and name in self.float_inits:
                    self.model.graph.initializer.add().CopyFrom(self.float_inits[name])
                    self.inits.add(name)
            self.added[tensor] = node.output[0]
        return self.added[tensor]


def alone_in_float(node: str) -> Callable[[str, str | None], bool]:
    """:func:`variant`'s predicate for ``node`` alone in float: every other reader stays quantized."""
    return lambda reader, source: reader != node


def alone_quantized(node: str) -> Callable[[str, str | None], bool]:
    """:func:`variant`'s predicate for ``node`` alone quantized: its inputs, and the Q/DQ pairs on its output."""
    return lambda reader, source: node in (reader, source)


def _drop_unread(model: Any) -> None:
    """Remove Q/DQ nodes whose outputs nobody reads, then initializers nobody reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | outputs
        dead = [node for node in model.graph.node if node.op_type in _QDQ and not any(o in read for o in node.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    read = {name for node in model.graph.node for name in node.input} | outputs
    for init in [init for init in model.graph.initializer if init.name not in read]:
        model.graph.initializer.remove(init)


def cost(truth: np.ndarray, without: np.ndarray, with_: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """What going from ``without`` to ``with_`` (top-1 predictions) costs on ``truth``: the paired
    drop in points with its exact one-sided bounds (:func:`edge.measure.paired.paired_flips`),
    the images lost and gained; positive hurts."""
    flips = paired_flips(truth, without, with_, confidence)
    return {
        "points": round(flips.drop_points, 4) + 0.0,  # + 0.0: no "-0.00"
        "lower": round(flips.drop_lower_points, 4) + 0.0,
        "upper": round(flips.drop_upper_points, 4) + 0.0,
        "lost": flips.lost,
        "gained": flips.gained,
    }


def group(agreement_cost: dict[str, Any]) -> str:
    """``hurts`` when the lower bound is above zero, ``helps`` when the upper bound is below zero,
    else indistinguishable from zero at this n."""
    if agreement_cost["lower"] > 0:
        return HURTS
    if agreement_cost["upper"] < 0:
        return HELPS
    return INDISTINGUISHABLE


def measure_sensitivity(
    float_path: Path,
    qdq_path: Path,
    spec: PreprocessSpec,
    val: EvalSet,
    float_logits: np.ndarray,
    work: Path,
    variants: Sequence[str] = VARIANTS,
    base_top1: np.ndarray | None = None,
    backend: str = "onnxruntime",
) -> dict[str, Any]:
    """Every quantized layer of ``qdq_path`` (built from ``float_path``, the prepared float model)
    scored on ``val`` in ``variants`` (``float_only``, ``quantized_only``) against the float model's
    logits ``float_logits`` (``base_top1``: the QDQ model's top-1 there, when the search has it;
    ``backend``: the runtime the variants run on, the target's);
    returns the report (:func:`write_sensitivity` writes it), the layers
    ranked: those that hurt by their float-only cost, largest first, then those indistinguishable
    from zero and those that help, each in graph order."""
    import onnx

    from edge.console import track

    started = time.perf_counter()
    float_model, qdq = onnx.load(str(float_path)), onnx.load(str(qdq_path))
    layers = quantized_layers(qdq, float_model)
    reference = float_logits.argmax(1)
    full = base_top1 if base_top1 is not None else predict(qdq_path, spec, val.tensor, backend=backend).argmax(1)
    truths: dict[str, np.ndarray | None] = {"agreement": reference, "top1": val.labels}
    path = work / "sensitivity-variant.onnx"

    def top1(model: Any) -> np.ndarray:
        onnx.save(model, str(path))
        return predict(path, spec, val.tensor, backend=backend).argmax(1)

    rows: list[dict[str, Any]] = []
    steps = [(layer, kind) for layer in layers for kind in variants]
    what = " and ".join(v.replace("_", "-") for v in variants)
    for layer, kind in track(steps, description=f"sensitivity ({what}) on {len(val)} val images", unit="variants"):
        if kind == "float_only":
            without, with_ = top1(variant(qdq, float_model, alone_in_float(layer.node))), full
        else:
            without, with_ = reference, top1(variant(qdq, float_model, alone_quantized(layer.node)))
        if not rows or rows[-1]["layer"] != layer.node:
            rows.append({"layer": layer.node, "op": layer.op, "nodes": list(layer.exclude)})
        rows[-1][kind] = {name: cost(truth, without, with_) if truth is not None else None for name, truth in truths.items()}
    for row in rows:
        row["group"] = group(row[variants[0]]["agreement"])
    ranked = sorted((r for r in rows if r["group"] == HURTS), key=lambda r: -r[variants[0]]["agreement"]["points"])
    ranked += [r for r in rows if r["group"] == INDISTINGUISHABLE] + [r for r in rows if r["group"] == HELPS]
    count = len(val)
    base_flips = int(np.count_nonzero(full != reference))
    return {
        "model": qdq_path.name,
        "val_set": val.name,
        "n": count,
        "labelled": val.labels is not None,
        "confidence": CONFIDENCE,
        "ranked_by": variants[0],
        "variants": list(variants),
        "full_int8": {"flips": base_flips, "agreement": 100.0 * (count - base_flips) / count},
        "smallest_detectable_points": min_detectable_drop(count, 0.0, CONFIDENCE),
        "metric": "cost of quantizing the layer in points (positive hurts), paired flips with exact one-sided "
        f"{CONFIDENCE:.0%} bounds: agreement = top-1 agreement with the float model, top1 = top-1 on the labels; "
        "float_only: the full INT8 model against it with only this layer in float; quantized_only: only this "
        "layer quantized against the float model",
        "groups": {name: [r["layer"] for r in ranked if r["group"] == name] for name in (HURTS, INDISTINGUISHABLE, HELPS)},
        "layers": ranked,
        "wall_s": round(time.perf_counter() - started, 2),
    }


def fallback_order(report: dict[str, Any], prior: Sequence[str]) -> list[Layer]:
    """The order ``--method auto`` keeps layers in float: the layers that measurably hurt, largest
    float-only cost first; then, since the measurement cannot order the rest, those named by
    ``prior`` (node names, the per-layer error ranking) in its order; then the others in graph
    order; layers that measurably help come last."""
    rows = report["layers"]
    by_node = {node: row for row in rows for node in row["nodes"]}
    order = sorted((row for row in rows if row["group"] == HURTS), key=lambda row: -row["float_only"]["agreement"]["points"])
    for node in prior:
        row = by_node.get(node)
        if row is not None and row["group"] == INDISTINGUISHABLE and row not in order:
            order.append(row)
    order += [row for row in rows if row["group"] == INDISTINGUISHABLE and row not in order]
    order += [row for row in rows if row["group"] == HELPS]
    return [Layer(row["layer"], row["op"], tuple(row["nodes"])) for row in order]


def write_sensitivity(report: dict[str, Any], quantized: Path) -> list[Path]:
    """The report's JSON and (where matplotlib imports) its plot beside ``quantized``, staged and
    renamed together; returns the paths written. Without matplotlib a PNG left by an earlier run
    is removed, so the folder never shows a plot of other numbers."""
    import json

    json_path, png_path = sensitivity_paths(quantized)
    report = {**report, "model": quantized.name}
    paths = [json_path] if plot_unavailable() else [json_path, png_path]
    with atomic_paths(*paths) as staged:
        staged[0].write_text(json.dumps(report, indent=2) + "\n")
        if len(staged) > 1:
            plot_sensitivity(report, staged[1])
    if png_path not in paths:
        log.warning("%s not written: matplotlib is not installed (the `train` extra)", png_path.name)
        png_path.unlink(missing_ok=True)
    return paths


def plot_unavailable() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def plot_sensitivity(report: dict[str, Any], path: Path) -> None:
    """Each variant's agreement cost per layer (the first PLOTTED in ranked order) with its interval;
    layers indistinguishable from zero in gray."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["layers"][:PLOTTED]
    names = [r["layer"] for r in rows][::-1]
    fig, axes = plt.subplots(1, len(report["variants"]), figsize=(7 * len(report["variants"]), 1.5 + 0.28 * len(rows)))
    axes = np.atleast_1d(axes)
    colors = {HURTS: "tab:red", INDISTINGUISHABLE: "tab:gray", HELPS: "tab:green"}
    for ax, kind in zip(axes, report["variants"]):
        costs = [r[kind]["agreement"] for r in rows][::-1]
        ys = np.arange(len(rows))
        points = np.array([c["points"] for c in costs])
        low = points - np.array([c["lower"] for c in costs])
        high = np.array([c["upper"] for c in costs]) - points
        for y, c, lo, hi, r in zip(ys, points, low, high, rows[::-1]):
            color = colors[group(r[kind]["agreement"])]
            ax.errorbar(c, y, xerr=[[lo], [hi]], fmt="o", color=color, capsize=2)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(ys, names, fontsize=7)
        ax.set_xlabel("agreement points lost to quantizing the layer")
        title = "only this layer in float (vs full INT8)" if kind == "float_only" else "only this layer quantized (vs float)"
        ax.set_title(f"{title}\n{report['n']} val images, {report['confidence']:.0%} bounds; gray: indistinguishable from 0")
    try:
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
