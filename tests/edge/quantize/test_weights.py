"""edge/quantize/weights.py: layer inputs as GPTQ sees them, GPTQ rounding, rewriting a QDQ model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.quantize.weights import GPTQRounding, InputStatistics, gptq_round, output_error, weighted_layers


def _conv_model(group: int = 2, stride: int = 2, dilation: int = 1, pads: tuple[int, ...] = (0, 1, 1, 2)) -> onnx.ModelProto:
    """input (N, 4, 9, 9) -> Conv(8 out, 3x3, group) -> Relu -> Gemm(transB=0) over the pooled features."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 4 // group, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    fc = rng.standard_normal((8, 5)).astype(np.float32)  # (in, out): transB=0
    nodes = [
        helper.make_node(
            "Conv", ["input", "w", "b"], ["conv"], name="conv", group=group, strides=[stride, stride],
            dilations=[dilation, dilation], pads=list(pads), kernel_shape=[3, 3],
        ),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], name="fc"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4, 9, 9])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"), numpy_helper.from_array(fc, "fc")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for name in outputs:
        if name not in {o.name for o in model.graph.output}:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"input": x})


@pytest.mark.parametrize(("group", "stride", "dilation"), [(1, 1, 1), (2, 2, 1), (4, 1, 2)])
def test_layer_columns_reproduce_the_convolution(group: int, stride: int, dilation: int) -> None:
    """W (as a matrix) times the sampled input columns is the conv output at those positions."""
    model = _conv_model(group, stride, dilation)
    conv, fc = weighted_layers(model)
    assert (conv.op_type, conv.group, conv.strides, conv.dilations, conv.pads) == (
        "Conv",
        group,
        (stride, stride),
        (dilation, dilation),
        (0, 1, 1, 2),
    )
    assert (fc.op_type, fc.out_axis) == ("Gemm", 1)
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 9)).astype(np.float32)
    (y,) = _run(model, x, ["conv"])
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    cols = conv.columns(x, 10_000, np.random.default_rng(0))  # every position, in (image, row, column) order
    matrix = conv.matrix(weights["w"])
    assert cols.shape == (group, 4 // group * 9, y.size // 8)
    product = np.matmul(matrix, cols).reshape(8, -1) + weights["b"][:, None]
    expected = y.transpose(1, 0, 2, 3).reshape(8, -1)
    np.testing.assert_allclose(product, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(conv.unmatrix(matrix, weights["w"].shape), weights["w"])
    np.testing.assert_array_equal(fc.unmatrix(fc.matrix(weights["fc"]), weights["fc"].shape), weights["fc"])


def test_gptq_equals_nearest_for_uncorrelated_inputs_and_beats_it_otherwise() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1, 8, 16))
    scale = np.abs(weight).max(2) / 127
    zero = np.zeros((1, 8), dtype=np.int64)
    nearest = np.clip(np.round(weight / scale[..., None]), -127, 127)
    identity = np.eye(16)[None] * 100.0
    np.testing.assert_array_equal(gptq_round(weight, identity, scale, zero, -127, 127, damp=0.0), nearest)
    mixing = rng.standard_normal((16, 16))
    inputs = mixing @ rng.standard_normal((16, 4000)) + 0.5  # correlated, not centred
    hessian = (inputs @ inputs.T)[None]
    q = gptq_round(weight, hessian, scale, zero, -127, 127)
    assert np.abs(q).max() <= 127 and q.dtype == np.int64
    gptq_error = output_error(weight, q * scale[..., None], hessian)
    nearest_error = output_error(weight, nearest * scale[..., None], hessian)
    assert gptq_error < 0.8 * nearest_error


def test_dead_inputs_keep_h_invertible() -> None:
    weight = np.random.default_rng(0).standard_normal((3, 2, 4))
    hessian = np.zeros((3, 4, 4))
    hessian[1] = np.eye(4)
    scale = np.abs(weight).max(2) / 127
    q = gptq_round(weight, hessian, scale, np.zeros((3, 2), dtype=np.int64), -127, 127)
    assert np.isfinite(q).all() and np.abs(q).max() <= 127


def test_rounding_rewrites_only_int8_values(tmp_path: Path) -> None:
    """GPTQ changes int8 weights of quantized layers, never their scales, zero points, types or
    an excluded (float) layer, and lowers the layers' output error."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from calibration.reader import calibration_reader

    model = _conv_model()
    float_path = tmp_path / "float.onnx"
    onnx.save(model, float_path)
    x = np.random.default_rng(2).standard_normal((64, 4, 9, 9)).astype(np.float32)
    x[:, 1] = 0.7 * x[:, 0] + 0.3 * x[:, 1]  # correlated channels: where GPTQ helps
    qdq = tmp_path / "qdq.onnx"
    quantize_static(
        str(float_path), str(qdq), calibration_reader(x, "input", 16), quant_format=QuantFormat.QDQ,
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=["fc"],
        extra_options={"WeightSymmetric": True},
    )  # fmt: skip
    stats = InputStatistics(model)
    assert stats.tensors == {"input", "flat"}
    for start in range(0, 64, 16):
        batch = x[start : start + 16]
        (flat,) = _run(model, batch, ["flat"])
        stats.add({"input": batch, "flat": flat})
    assert set(stats.hessians) == {"conv", "fc"} and stats.hessians["conv"].shape == (2, 18, 18)
    before = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(qdq)).graph.initializer}
    summary = GPTQRounding(stats).apply(qdq, tmp_path / "gptq.onnx")
    after = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "gptq.onnx")).graph.initializer}
    assert summary["rounding"] == "gptq" and summary["layers"] == 1  # fc stayed float
    assert summary["output_error_gain_db"] > 0
    assert before.keys() == after.keys() and "fc" in after
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    assert changed == ["w_quantized"]
    assert after["w_quantized"].dtype == np.int8 and np.abs(after["w_quantized"]).max() <= 127
