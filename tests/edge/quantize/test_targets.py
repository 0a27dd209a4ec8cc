"""The float model's preparation and the per-architecture target settings (edge/quantize/targets.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.quantize.targets import (
    constant_operand_nodes,
    is_transformer,
    prepare_float_model,
    restore_hard_swish,
    squeeze_excite_nodes,
    swish_nodes,
    target_config,
)


def _conv_graph(name: str, *after_conv: onnx.NodeProto) -> onnx.ModelProto:
    """x (1x3x4x4) -> Conv (4 channels) -> y, then ``after_conv`` ending in ``out`` (1x4x4x4)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.random.default_rng(0).standard_normal(12).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), *after_conv],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 4, 4])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _hard_swish_graph(alpha: float = 1 / 6) -> onnx.ModelProto:
    """x -> Conv -> Mul(y, HardSigmoid(y)) -> out: a HardSwish as ORT's optimizer leaves it."""
    return _conv_graph(
        "hswish",
        helper.make_node("HardSigmoid", ["y"], ["gate"], alpha=alpha, beta=0.5),
        helper.make_node("Mul", ["y", "gate"], ["out"]),
    )


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_hard_swish_taken_apart_is_put_back_with_the_same_outputs():
    model = _hard_swish_graph()
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32) * 4
    before = _run(model, x)
    assert restore_hard_swish(model) == 1
    assert [node.op_type for node in model.graph.node] == ["Conv", "HardSwish"]
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-6)


def test_other_hard_sigmoid_gates_stay_as_they_are():
    model = _hard_swish_graph(alpha=0.2)  # ONNX's default HardSigmoid: not a HardSwish
    assert restore_hard_swish(model) == 0
    assert [node.op_type for node in model.graph.node] == ["Conv", "HardSigmoid", "Mul"]


def test_silu_multiplies_are_found_and_squeeze_excite_gates_are_not():
    """Conv -> SiLU (Mul(y, Sigmoid(y))) -> squeeze-excite gate (Mul(z, Sigmoid(pool(z)))): only the
    SiLU's two nodes are what target cpu keeps float."""
    model = _conv_graph(
        "silu-se",
        helper.make_node("Sigmoid", ["y"], ["s"], name="silu-gate"),
        helper.make_node("Mul", ["s", "y"], ["z"], name="silu"),  # either input order
        helper.make_node("GlobalAveragePool", ["z"], ["p"]),
        helper.make_node("Sigmoid", ["p"], ["g"]),
        helper.make_node("Mul", ["z", "g"], ["out"], name="gate"),
    )
    assert swish_nodes(model) == ["silu-gate", "silu"]


def test_prepared_model_keeps_hard_swish_whole(tmp_path):
    model = _hard_swish_graph()
    model.graph.node[1].CopyFrom(helper.make_node("HardSwish", ["y"], ["out"]))
    del model.graph.node[2]
    onnx.save(model, tmp_path / "float.onnx")
    prepared = onnx.load(prepare_float_model(tmp_path / "float.onnx", tmp_path / "prepared.onnx"))
    assert "HardSwish" in {node.op_type for node in prepared.graph.node}  # ORT's optimizer inlines it; it is put back


@pytest.mark.parametrize("target", ["cpu", "trt", "openvino"])
def test_transformers_keep_normalization_and_softmax_in_float(target):
    cnn = _hard_swish_graph()
    block = _hard_swish_graph()
    block.graph.node.append(helper.make_node("Softmax", ["out"], ["probs"]))
    assert not is_transformer(cnn) and is_transformer(block)
    assert target_config(target, cnn) == target_config(target)
    op_types = target_config(target, block).op_types
    assert op_types is not None and "MatMul" in op_types and "Gemm" in op_types
    assert not {"LayerNormalization", "Softmax", "Add", "Mul"} & set(op_types)
    if target != "cpu":  # target cpu quantizes every op type ONNX Runtime does, data movement included
        assert ("Transpose" in op_types) == (target == "openvino")


def _attention_graph() -> onnx.ModelProto:
    """x (B x 4 tokens x 8) -> MatMul (q/k/v in one, 16 wide) -> Reshape (B, 4, 2, 8) -> Transpose
    -> Split into q and k -> Squeeze -> scores = q @ k^T -> Softmax -> out: an attention head's
    data movement between its MatMuls."""
    rng = np.random.default_rng(5)
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [-1, 4, 2, 8])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 16], (rng.standard_normal(128) * 0.3).tolist())
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["qk"], name="qk-proj"),
        helper.make_node("Reshape", ["qk", "shape"], ["heads"], name="heads"),
        helper.make_node("Transpose", ["heads"], ["split_first"], perm=[2, 0, 1, 3], name="to-front"),
        helper.make_node("Split", ["split_first"], ["q1", "k1"], axis=0, num_outputs=2, name="split"),
        helper.make_node("Squeeze", ["q1", "zero"], ["q"], name="q"),
        helper.make_node("Squeeze", ["k1", "zero"], ["k"], name="k"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k-t"),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Softmax", ["scores"], ["out"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4, 4])],
        [weight, shape, helper.make_tensor("zero", TensorProto.INT64, [1], [0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _quantized_scales(model: onnx.ModelProto) -> dict[str, float]:
    from onnx import numpy_helper

    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {
        node.input[0]: float(inits[node.input[1]])
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits
    }


def _openvino_with_and_without_layout_ops(float_path, tmp_path, batches):
    """Scales by tensor of the target-openvino file, and of the same without LAYOUT_OPS quantized."""
    from dataclasses import replace

    from edge.quantize import targets
    from edge.quantize.ranges import collect_ranges

    config = target_config("openvino", onnx.load(float_path))
    plain = replace(config, op_types=tuple(sorted(set(config.op_types or ()) - set(targets.LAYOUT_OPS))))
    scales = {}
    for name, settings in (("layout", config), ("plain", plain)):
        ranges = collect_ranges(float_path, batches, ["minmax"], settings.op_types, True, unsigned_where_nonnegative=True)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(targets, "target_config", lambda target, model=None, settings=settings: settings)
            model = onnx.load(targets.quantize_onnx(float_path, tmp_path / f"{name}.onnx", "openvino", ranges["minmax"]))
        scales[name] = _quantized_scales(model)
        reference = _run_named(onnx.load(float_path), batches[0])
        np.testing.assert_allclose(_run_named(model, batches[0]), reference, atol=0.05 * float(np.abs(reference).max()))
    return scales["layout"], scales["plain"]


def test_openvino_quantizes_attention_before_its_data_movement(tmp_path):
    """Target openvino on a transformer: the projection's output is quantized before the Reshape
    (a MatMul's output is not, on this target, unless data movement follows), each layout op
    carries its input's scale (so the quantize step moves ahead of the data movement, as NNCF's
    files have it), and the model still computes what the float one does; without LAYOUT_OPS the
    first quantize step comes after the data movement."""
    float_path = tmp_path / "float.onnx"
    onnx.save(_attention_graph(), float_path)
    batches = [np.random.default_rng(i).standard_normal((4, 4, 8)).astype(np.float32) for i in range(3)]
    layout, before = _openvino_with_and_without_layout_ops(float_path, tmp_path, batches)
    assert "qk" in layout and "qk" not in before  # before the Reshape with the layout rule only
    assert layout["heads"] == layout["split_first"] == layout["qk"]  # the layout ops keep their input's scale
    assert {"q", "kt"} <= set(before)  # without it: each MatMul's own inputs, after the data movement


def test_openvino_quantizes_before_a_max_pool(tmp_path):
    """A ResNet's stem: Conv -> Relu -> MaxPool -> Conv -> Flatten -> Gemm. Target openvino quantizes
    the ReLU's output (MaxPool then runs in int8 with the same scale) and the pooled features before
    the Flatten; without LAYOUT_OPS the quantize steps come after the pool and after the Flatten."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pooled", "w1"], ["c1"]),
        helper.make_node("Flatten", ["c1"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w2"], ["out"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "stem",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 5])],
        [
            helper.make_tensor("w0", TensorProto.FLOAT, [4, 3, 3, 3], (rng.standard_normal(108) * 0.4).tolist()),
            helper.make_tensor("w1", TensorProto.FLOAT, [2, 4, 1, 1], (rng.standard_normal(8) * 0.5).tolist()),
            helper.make_tensor("w2", TensorProto.FLOAT, [5, 8], (rng.standard_normal(40) * 0.5).tolist()),
        ],
    )
    float_path = tmp_path / "stem.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), float_path)
    batches = [np.random.default_rng(i).standard_normal((8, 3, 4, 4)).astype(np.float32) for i in range(3)]
    layout, before = _openvino_with_and_without_layout_ops(float_path, tmp_path, batches)
    assert "r" in layout and layout["pooled"] == layout["r"] and "r" not in before and "pooled" in before
    assert "c1" in layout and layout["flat"] == layout["c1"] and "c1" not in before and "flat" in before


def test_many_hard_swishes_are_all_put_back_and_nothing_else_is_dropped():
    """A MobileNetV3-sized graph (a chain of Conv + taken-apart HardSwish): every HardSwish comes
    back, every Conv stays, the outputs do not change (a node dropped by mistake breaks all three)."""
    rng = np.random.default_rng(2)
    nodes, inits, x = [], [], "x"
    for i in range(24):
        inits.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, [3, 3, 1, 1], rng.standard_normal(9).tolist()))
        nodes += [
            helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}"),
            helper.make_node("HardSigmoid", [f"c{i}"], [f"g{i}"], alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", [f"c{i}", f"g{i}"], [f"h{i}"]),
        ]
        x = f"h{i}"
    nodes[-1].output[0] = "out"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32) * 4
    before = _run(model, x)
    assert restore_hard_swish(model) == 24
    assert [node.op_type for node in model.graph.node] == ["Conv", "HardSwish"] * 24
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-4, atol=1e-5)


def _squeeze_excite_graph() -> onnx.ModelProto:
    """x -> Conv -> Relu -> z; squeeze-excite: Mul(z, Sigmoid(Conv(SiLU(Conv(GlobalAveragePool(z)))))) -> Conv -> out;
    beside it a gate without a layer (Mul(z, Sigmoid(z)) is a SiLU, not a squeeze-excite branch)."""
    rng = np.random.default_rng(3)

    def weight(name: str, shape: list[int]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, (rng.standard_normal(int(np.prod(shape))) * 0.5).tolist())

    def bias(name: str, size: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, [size], (rng.standard_normal(size) * 0.1).tolist())

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["z"], name="relu"),
        helper.make_node("GlobalAveragePool", ["z"], ["p"], name="se-pool"),
        helper.make_node("Conv", ["p", "w1", "b1"], ["r"], name="se-reduce"),
        helper.make_node("Sigmoid", ["r"], ["rs"], name="se-silu-gate"),
        helper.make_node("Mul", ["r", "rs"], ["ra"], name="se-silu"),
        helper.make_node("Conv", ["ra", "w2", "b2"], ["e"], name="se-expand"),
        helper.make_node("Sigmoid", ["e"], ["g"], name="se-gate"),
        helper.make_node("Mul", ["z", "g"], ["s"], name="se-scale"),
        helper.make_node("Conv", ["s", "w3", "b3"], ["out"], name="project"),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4, 8, 8])],
        [
            weight("w0", [8, 3, 3, 3]),
            bias("b0", 8),
            weight("w1", [2, 8, 1, 1]),
            bias("b1", 2),
            weight("w2", [8, 2, 1, 1]),
            bias("b2", 8),
            weight("w3", [4, 8, 1, 1]),
            bias("b3", 4),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_squeeze_excite_branches_are_found_from_pool_to_gate():
    model = _squeeze_excite_graph()
    assert sorted(squeeze_excite_nodes(model)) == sorted(
        ["se-pool", "se-reduce", "se-silu-gate", "se-silu", "se-expand", "se-gate"]
    )
    # a SiLU and a gate on a pooling with no layer between are not squeeze-excite branches
    silu_se = _conv_graph(
        "silu-se",
        helper.make_node("Sigmoid", ["y"], ["s"]),
        helper.make_node("Mul", ["s", "y"], ["z"]),
        helper.make_node("GlobalAveragePool", ["z"], ["p"]),
        helper.make_node("Sigmoid", ["p"], ["g"]),
        helper.make_node("Mul", ["z", "g"], ["out"]),
    )
    assert squeeze_excite_nodes(silu_se) == []


def test_openvino_target_places_symmetric_qdq_on_inputs_only(tmp_path):
    """Target openvino: zero points all 0 (uint8 after the ReLU, int8 where values go negative),
    no Q/DQ on a convolution's output, float biases, the squeeze-excite layers float, and the
    model still computes what the float one does."""
    from onnx import numpy_helper

    from edge.quantize.ranges import collect_ranges
    from edge.quantize.targets import quantize_onnx

    float_path = tmp_path / "float.onnx"
    onnx.save(_squeeze_excite_graph(), float_path)
    config = target_config("openvino")
    batches = [np.random.default_rng(i).standard_normal((8, 3, 8, 8)).astype(np.float32) for i in range(4)]
    ranges = collect_ranges(float_path, batches, ["minmax"], config.op_types, True, unsigned_where_nonnegative=True)
    model = onnx.load(quantize_onnx(float_path, tmp_path / "int8.onnx", "openvino", ranges["minmax"]))

    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    activations = {
        node.input[0]: inits[node.input[2]]
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits
    }
    assert activations and all(zero_point.item() == 0 for zero_point in activations.values())
    assert activations["z"].dtype == np.uint8  # after the ReLU: never negative
    assert activations["x"].dtype == np.int8 and activations["g"].dtype == np.uint8
    assert not {name for name in activations if name in producers and producers[name].op_type == "Conv"}
    assert not any(init.dtype == np.int32 for init in inits.values())  # biases stay float

    def weight_quantized(conv: str) -> bool:
        node = next(n for n in model.graph.node if n.name == conv)
        return node.input[1] in producers and producers[node.input[1]].op_type == "DequantizeLinear"

    assert weight_quantized("stem") and weight_quantized("project")
    assert not weight_quantized("se-reduce") and not weight_quantized("se-expand")
    x = batches[0]
    reference = _run_named(onnx.load(float_path), x)
    np.testing.assert_allclose(_run_named(model, x), reference, atol=0.05 * float(np.abs(reference).max()))


def _run_named(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_elementwise_ops_with_a_constant_operand_are_named_for_openvino():
    """Add/Mul reading an initializer or a Constant node stay float on target openvino (their
    constant would be quantized as a weight); those between two activations do not."""
    model = _conv_graph(
        "constants",
        helper.make_node("Constant", [], ["half"], value=helper.make_tensor("h", TensorProto.FLOAT, [], [0.5])),
        helper.make_node("Mul", ["y", "half"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "w"], ["shifted"], name="shift-by-initializer"),
        helper.make_node("Add", ["shifted", "y"], ["out"], name="residual"),
    )
    assert constant_operand_nodes(model) == ["scale", "shift-by-initializer"]
