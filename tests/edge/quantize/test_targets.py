"""The float model's preparation and the per-architecture target settings (edge/quantize/targets.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.quantize.targets import is_transformer, prepare_float_model, restore_hard_swish, swish_nodes, target_config


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


@pytest.mark.parametrize("target", ["cpu", "trt"])
def test_transformers_keep_normalization_and_softmax_in_float(target):
    cnn = _hard_swish_graph()
    block = _hard_swish_graph()
    block.graph.node.append(helper.make_node("Softmax", ["out"], ["probs"]))
    assert not is_transformer(cnn) and is_transformer(block)
    assert target_config(target, cnn) == target_config(target)
    op_types = target_config(target, block).op_types
    assert op_types is not None and "MatMul" in op_types and "Gemm" in op_types
    assert not {"LayerNormalization", "Softmax", "Add", "Mul"} & set(op_types)
