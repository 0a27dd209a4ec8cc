"""INT8 QDQ quantization of an ONNX model for one target runtime, from precomputed ranges.

Three targets, because one INT8 file cannot serve every runtime well:

- ``cpu`` (ONNX Runtime on x86/ARM): asymmetric uint8 activations, symmetric int8 per-channel
  weights, every op type ORT quantizes. ORT fuses these QDQ pairs into QLinear kernels that run
  about 2x faster than FP32 on VNNI CPUs. ``reduce_range`` (7-bit weights) avoids VPMADDUBSW
  saturation on x86 CPUs without VNNI.
- ``trt`` (TensorRT's explicit quantization): symmetric int8 activations and per-channel weights
  with every zero point 0, ``QuantizeBias`` off (TensorRT rejects an int32 bias feeding a
  DequantizeLinear), Q/DQ only on the inputs of weighted ops (Conv/Gemm/MatMul), as TensorRT's
  placement guidance says.
- ``openvino`` (OpenVINO on Intel CPUs; NNCF's placement): symmetric activations (int8 with zero
  point 0; uint8 with zero point 0 where calibration saw no negative value: after a ReLU, a
  sigmoid) and per-channel int8 weights, float biases, Q/DQ only on the *inputs* of the ops
  OpenVINO runs in INT8 (OPENVINO_OPS), so every activation between two of them (ReLU, SiLU,
  HardSwish) fuses into the layer before in float, and squeeze-excite branches stay float
  (:func:`squeeze_excite_nodes`), as do elementwise ops with a constant operand
  (:func:`constant_operand_nodes`); data movement and max-pooling (LAYOUT_OPS) carry their input's
  scale, so the quantize step comes before them. OpenVINO's low-precision transformations take zero points as an
  extra subtraction, and a Q/DQ pair on a convolution's output as a quantize-dequantize step
  before its activation: on EfficientNet-B0 (batch 8, 1 thread) the target-cpu file ran 0.84x
  OpenVINO's FP32 and this placement 1.31x (NNCF's own file 1.28x). ONNX Runtime, the other way
  round, fuses Q/DQ pairs around a convolution into one QLinearConv and runs a convolution with no
  Q on its output as dequantized float: this file runs there at about 0.2x FP32, and is for
  OpenVINO only (``edge bench``'s ``int8-openvino`` row runs it there).

A transformer (a graph with LayerNormalization, Softmax or attention ops) on targets ``cpu`` and ``openvino`` keeps
LayerNormalization, Softmax, GELU and the elementwise ops of its residual stream in float: both of
the first two are in ONNX Runtime's QDQ op lists, but the residual stream carries outlier channels
a per-tensor uint8 scale cannot hold and softmax's small probabilities need more than 8 bits; the
time is in the MatMul/Gemm layers, which stay INT8 (ONNX Runtime's and NNCF's transformer recipes
do the same). Target ``trt`` quantizes only the weighted ops anyway.

Also here: the float model's preparation before quantization (shape inference, BatchNorm folded)
and the check of a target-trt model against TensorRT's Q/DQ rules.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge.errors import UserError, require

log = logging.getLogger(__name__)

TARGETS = ("cpu", "trt", "openvino")
TARGET_HELP = "cpu (ONNX Runtime), trt (TensorRT) or openvino (OpenVINO)"
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
# The ops whose inputs target openvino quantizes: those OpenVINO runs in INT8 (NNCF's CPU set).
OPENVINO_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "ReduceMean", "GlobalAveragePool", "AveragePool", "Concat")
# Data movement (and max-pooling, which commutes with quantization): on target openvino quantized
# with the scale of their input (ONNX Runtime's ``ForceQuantizeNoInputCheck``), as NNCF's files have
# them, so the quantize step comes before them and OpenVINO moves int8 through them, not bf16/f32: a
# ResNet's stem max-pool and the reshape before its classifier, a transformer's q/k/v split, head
# reshapes and transposes and its class token's pick.
LAYOUT_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Split", "Gather")


@dataclass(frozen=True)
class TargetConfig:
    """The quantize_static settings of one target."""

    name: str
    activation_type: str
    weight_type: str
    activation_symmetric: bool
    op_types: tuple[str, ...] | None
    extra_options: dict[str, Any] = field(default_factory=dict)
    # uint8 with zero point 0 (not int8) for a tensor calibration saw no negative value in
    unsigned_where_nonnegative: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.name,
            "format": "QDQ",
            "activation_type": self.activation_type,
            "weight_type": self.weight_type,
            "activation_symmetric": self.activation_symmetric,
            "weight_symmetric": True,
            "per_channel": True,
            "op_types": list(self.op_types) if self.op_types else "all",
            "extra_options": dict(self.extra_options),
            "unsigned_where_nonnegative": self.unsigned_where_nonnegative,
        }


TARGET_CONFIGS = {
    "cpu": TargetConfig("cpu", "QUInt8", "QInt8", False, None, {"WeightSymmetric": True, "ActivationSymmetric": False}),
    "trt": TargetConfig(
        "trt",
        "QInt8",
        "QInt8",
        True,
        WEIGHTED_OPS,
        {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            # TensorRT wants Q/DQ on the inputs of weighted ops; their outputs stay float.
            "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
        },
    ),
    "openvino": TargetConfig(
        "openvino",
        "QInt8",
        "QInt8",
        True,
        OPENVINO_OPS + LAYOUT_OPS,
        {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            # Q/DQ on the inputs of the INT8 ops only: the activation after each fuses in float.
            "OpTypesToExcludeOutputQuantization": list(OPENVINO_OPS),
            # data movement quantized even where its input is not yet: the step moves before it
            "ForceQuantizeNoInputCheck": True,
        },
        unsigned_where_nonnegative=True,
    ),
}


# A graph holding one of these is a transformer (see the module docstring).
TRANSFORMER_OPS = ("LayerNormalization", "Softmax", "Attention", "MultiHeadAttention")
# What a transformer keeps in float on target cpu: normalization, softmax, GELU (fused or as Erf),
# and the elementwise ops of the residual stream and of LayerNorm's decomposed form.
TRANSFORMER_FLOAT_OPS = (
    "LayerNormalization",
    "Softmax",
    "Gelu",
    "Erf",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "ReduceMean",
    "Where",
)


def target_config(target: str, model: Any = None) -> TargetConfig:
    """The settings of ``target``; with the float ``model`` (path or ModelProto) those of its
    architecture: a transformer on targets cpu and openvino leaves TRANSFORMER_FLOAT_OPS out of the
    op types."""
    if target not in TARGET_CONFIGS:
        raise UserError(f"unknown target {target!r}: use {TARGET_HELP}")
    config = TARGET_CONFIGS[target]
    if model is not None and target != "trt" and is_transformer(model):
        kept = set(config.op_types) if config.op_types else quantizable_op_types()
        config = replace(config, op_types=tuple(sorted(kept - set(TRANSFORMER_FLOAT_OPS))))
    return config


RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def target_backend(target: str) -> str:
    """The CPU runtime a target's INT8 model is scored and timed on: OpenVINO for target openvino,
    ONNX Runtime otherwise (target trt simulated: TensorRT needs a GPU)."""
    return "openvino" if target == "openvino" else "onnxruntime"


def quantizable_op_types() -> set[str]:
    """Every op type ONNX Runtime's QDQ quantizer handles (what quantize_static takes by default)."""
    registry = require("onnxruntime.quantization.registry", "cpu", "Quantizing")
    return set(registry.QDQRegistry) | set(registry.QLinearOpsRegistry)


def is_transformer(model: Any) -> bool:
    """Whether the ONNX model (path or ModelProto) holds LayerNormalization, Softmax or attention ops."""
    import onnx

    graph = (model if hasattr(model, "graph") else onnx.load(str(model), load_external_data=False)).graph
    return any(node.op_type in TRANSFORMER_OPS for node in graph.node)


def default_reduce_range(cpu_flags: Sequence[str] | None = None, machine: str | None = None) -> bool:
    """7-bit weights on x86 CPUs without VNNI (U8S8 VPMADDUBSW saturates there); never on ARM."""
    import platform

    from edge.environment import environment_fingerprint

    if machine is None:
        machine = platform.machine()
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    flags = set(cpu_flags if cpu_flags is not None else environment_fingerprint()["cpu_flags"])
    return not ({"avx512_vnni", "avx_vnni"} & flags)


def prepare_float_model(float_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Shape inference and ORT's basic graph optimizations (folds BatchNorm into Conv), as ORT
    recommends before quantization; then every HardSwish those optimizations took apart put back
    (:func:`restore_hard_swish`)."""
    import onnx

    shape_inference = require("onnxruntime.quantization.shape_inference", "cpu", "Quantizing")
    try:
        shape_inference.quant_pre_process(str(float_path), str(out), skip_symbolic_shape=False)
    except Exception as exc:  # symbolic shape inference fails on unusual graphs; ONNX's own inference is the fallback
        log.debug("symbolic shape inference failed (%s); using ONNX shape inference only", exc)
        shape_inference.quant_pre_process(str(float_path), str(out), skip_symbolic_shape=True)
    model = onnx.load(str(out))
    if restore_hard_swish(model):
        onnx.save(model, str(out))
    return Path(out)


def restore_hard_swish(model: Any) -> int:
    """Put ``Mul(x, HardSigmoid(x; alpha=1/6, beta=1/2))`` back into ``HardSwish(x)`` in place;
    returns how many.

    ORT's graph optimizations inline HardSwish (its CPU kernels have none) into those two ops. The
    quantizer then puts Q/DQ on both inputs and the output of the Mul (in its op lists), and
    OpenVINO, which fuses a HardSwish into the convolution before it, instead runs each one as a
    float HardSigmoid with two layout reorders and two (de)quantize steps around it: MobileNetV3's
    INT8 file ran 1.08x FP32 on OpenVINO against NNCF's 1.54x. As one op the HardSwish stays float
    in ORT's QDQ graph (not in its op lists) and fuses again in OpenVINO."""
    graph = model.graph
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for output in graph.output:
        uses[output.name] = uses.get(output.name, 0) + 1
    restored, dropped = 0, set()
    for node, sigmoid, x in list(_self_gated_multiplies(model, "HardSigmoid")):
        attrs = {a.name: a.f for a in sigmoid.attribute}
        if uses.get(sigmoid.output[0]) != 1:
            continue
        if abs(attrs.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(attrs.get("beta", 0.5) - 0.5) > 1e-6:
            continue
        node.op_type, node.domain = "HardSwish", ""
        del node.input[:]
        node.input.append(x)
        dropped.add(sigmoid.output[0])  # by output name: a proto's Python wrapper (and its id) does not outlive its use
        restored += 1
    if dropped:
        kept = [node for node in graph.node if node.output[0] not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
    return restored


def swish_nodes(model: Any) -> list[str]:
    """Names of the Sigmoid and Mul of every ``Mul(x, Sigmoid(x))`` (SiLU/Swish as exported:
    EfficientNet's activation).

    Target cpu keeps them float (``quantize_onnx``): ORT's quantizer puts Q/DQ on the inputs and
    outputs of both, which cuts each SiLU in two with a quantize step on the Sigmoid's output;
    OpenVINO then runs each as dequantize, reorder, float Sigmoid, reorder,
    quantize-multiply-quantize instead of one fused eltwise step after the convolution (the
    HardSwish case of :func:`restore_hard_swish`, for an activation ONNX has no single op for at the
    opsets used here). Kept float, the SiLU reads the convolution's dequantized output and the next
    layer quantizes what it writes. Both nodes are named: excluding the Mul alone still leaves the
    Sigmoid's own output quantized."""
    return [name for mul, sigmoid, _ in _self_gated_multiplies(model, "Sigmoid") for name in (sigmoid.name, mul.name)]


def constant_operand_nodes(model: Any) -> list[str]:
    """Names of the Add and Mul nodes with a constant operand (an initializer or a Constant node's
    output: a bias, a position embedding, a scale).

    Target openvino leaves them float: ORT's quantizer would quantize the constant as a weight,
    which NNCF never does, and OpenVINO 2026.4's CPU plugin died compiling such a graph (a
    floating-point exception, the process gone, on ViT-Tiny with its 73 bias and embedding Adds
    quantized)."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in graph.node if node.op_type in ("Add", "Mul") and any(i in constants for i in node.input)]


SE_GATES = ("Sigmoid", "HardSigmoid")
SE_POOLS = ("GlobalAveragePool", "ReduceMean")
SE_MAX_NODES = 8  # pool, two convolutions, their activation (a SiLU is two nodes), a reshape or two, the gate


def squeeze_excite_nodes(model: Any) -> list[str]:
    """Names of the nodes of every squeeze-excite branch, from its pooling to its gate:
    ``Mul(x, gate(... Conv(... pool(x)))``, a Sigmoid or HardSigmoid gate reached from a
    GlobalAveragePool/ReduceMean of the same ``x`` through at most SE_MAX_NODES nodes, a
    convolution or Gemm among them. The Mul itself is not named.

    Target openvino keeps them float, as NNCF does (its SE_BLOCK ignored pattern): the two 1x1
    layers run on one pooled vector per image, so INT8 saves nothing there while each Q/DQ pair
    costs a reorder; on EfficientNet-B0 they are 32 of its 82 layers."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name for init in graph.initializer}
    found: list[str] = []
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for x, gate in (node.input, reversed(node.input)):
            branch = _branch_to_pool(producers.get(gate), x, producers, constants)
            if branch:
                found.extend(n.name for n in branch)
                break
    return found


def _branch_to_pool(gate: Any, x: str, producers: dict[str, Any], constants: set[str]) -> list[Any]:
    """The nodes from ``gate`` back to a pooling of ``x`` (empty when it is not a squeeze-excite branch)."""
    if gate is None or gate.op_type not in SE_GATES:
        return []
    branch, frontier, seen = [], [gate], set()
    while frontier:
        node = frontier.pop()
        if node.output[0] in seen:
            continue
        seen.add(node.output[0])
        branch.append(node)
        if len(branch) > SE_MAX_NODES:
            return []
        if node.op_type in SE_POOLS:
            if node.input[0] != x:
                return []
            continue
        for name in node.input:
            if not name or name in constants:
                continue
            if name == x:  # x reaches the gate other than through the pooling: not a squeeze-excite branch
                return []
            producer = producers.get(name)
            if producer is None:  # a graph input
                return []
            frontier.append(producer)
    pooled = any(n.op_type in SE_POOLS for n in branch)
    weighted = any(n.op_type in ("Conv", "Gemm") for n in branch)
    return branch if pooled and weighted else []


def _self_gated_multiplies(model: Any, gate_op: str) -> Iterator[tuple[Any, Any, str]]:
    """(mul, gate, x) for every ``Mul(x, gate_op(x))`` in the graph, either input order: the
    gated activations (x·sigmoid(x), x·hardsigmoid(x)) as exporters and ORT's optimizer write them."""
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for x, gate in (node.input, reversed(node.input)):
            producer = producers.get(gate)
            if producer is not None and producer.op_type == gate_op and list(producer.input) == [x]:
                yield node, producer, x
                break


def quantize_onnx(
    float_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    target: str,
    ranges: Any,
    reduce_range: bool = False,
    nodes_to_exclude: Sequence[str] = (),
) -> Path:
    """Write a QDQ model for ``target`` from ORT ``TensorsData`` ranges (see edge.quantize.ranges)."""
    quantization = require("onnxruntime.quantization", "cpu", "Quantizing")
    calibrate = require("onnxruntime.quantization.calibrate", "cpu", "Quantizing")
    import onnx

    model = onnx.load(str(float_path), load_external_data=False)  # read once: the config and the exclusions
    config = target_config(target, model)
    if target in ("cpu", "openvino"):
        nodes_to_exclude = [*nodes_to_exclude, *swish_nodes(model)]
        if target == "openvino":
            nodes_to_exclude += squeeze_excite_nodes(model) + constant_operand_nodes(model)
    extra_options = dict(config.extra_options)
    if config.unsigned_where_nonnegative:
        # ORT's asymmetric uint8 of a range starting at 0 has zero point 0: symmetric in effect.
        extra_options["TensorQuantOverrides"] = {
            name: [{"quant_type": quantization.QuantType.QUInt8, "symmetric": False}]
            for name, data in ranges.items()
            if float(data.range_value[0]) >= 0
        }
    with tempfile.TemporaryDirectory(prefix="edge-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        calibrate.save_tensors_data(ranges, cache)
        # ORT logs every rescaled bias at INFO on the root logger and prints progress: keep it quiet.
        with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
            quantization.quantize_static(
                str(float_path),
                str(out),
                calibration_data_reader=None,
                quant_format=quantization.QuantFormat.QDQ,
                op_types_to_quantize=list(config.op_types) if config.op_types else None,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=getattr(quantization.QuantType, config.activation_type),
                weight_type=getattr(quantization.QuantType, config.weight_type),
                nodes_to_exclude=list(nodes_to_exclude),
                calibrate_method=ranges.calibration_method,
                extra_options=extra_options,
                calibration_cache_path=str(cache),
            )
    return Path(out)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def check_tensorrt_rules(model_or_path: Any) -> list[str]:
    """Violations of TensorRT's Q/DQ parser rules: non-zero zero points, non-int8 Q/DQ types, and an
    int32 (bias) tensor feeding a DequantizeLinear. Empty when the model is fine."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_or_path)) if not hasattr(model_or_path, "graph") else model_or_path
    inits = {i.name: i for i in model.graph.initializer}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f"{node.name}: no constant zero point")
            continue
        zero_point = inits[node.input[2]]
        if zero_point.data_type != onnx.TensorProto.INT8:
            problems.append(
                f"{node.name}: zero point type {onnx.TensorProto.DataType.Name(zero_point.data_type)}, TensorRT needs INT8"
            )
        if numpy_helper.to_array(zero_point).any():
            problems.append(f"{node.name}: non-zero zero point")
        bias = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if bias is not None and bias.data_type == onnx.TensorProto.INT32:
            problems.append(f"{node.name}: int32 tensor {node.input[0]} feeds DequantizeLinear (quantized bias)")
    return problems
