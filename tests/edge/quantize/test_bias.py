"""edge/quantize/bias.py: each layer's mean output put back where the float model has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.quantize.bias import bias_images, correct_biases


def _float_model() -> onnx.ModelProto:
    """input (N, 3, 8, 8) -> Conv a (4, 3x3) -> Relu -> Conv b (6, 1x1) -> mean pool -> Gemm fc (5)."""
    rng = np.random.default_rng(0)
    inits = {
        "wa": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5,
        "ba": rng.standard_normal(4).astype(np.float32),
        "wb": rng.standard_normal((6, 4, 1, 1)).astype(np.float32) * 0.5,
        "bb": rng.standard_normal(6).astype(np.float32),
        "wfc": rng.standard_normal((5, 6)).astype(np.float32),
        "bfc": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a"], ["a_relu"], name="relu_a"),
        helper.make_node("Conv", ["a_relu", "wb", "bb"], ["b"], name="conv_b", kernel_shape=[1, 1]),
        helper.make_node("GlobalAveragePool", ["b"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "wfc", "bfc"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "two-convs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _batch(count: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 8, 8)).astype(np.float32)


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _outputs(model: onnx.ModelProto, names: list[str], batch: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    copy = onnx.ModelProto.FromString(model.SerializeToString())
    copy.graph.output.extend(
        helper.make_empty_tensor_value_info(n) for n in names if n not in {o.name for o in copy.graph.output}
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(names, {"input": batch})


def test_float_bias_offsets_are_taken_back_exactly(tmp_path: Path) -> None:
    """A copy whose only error is an offset on every bias gets the float biases back, layer by
    layer (conv_b's offset is measured after conv_a's is gone); nothing else changes."""
    float_model = _float_model()
    float_path = tmp_path / "float.onnx"
    onnx.save(float_model, str(float_path))
    shifted = onnx.ModelProto.FromString(float_model.SerializeToString())
    offsets = {"ba": np.array([0.3, -0.2, 0.1, 0.05]), "bb": np.linspace(-0.4, 0.4, 6), "bfc": np.full(5, 0.25)}
    for init in shifted.graph.initializer:
        if init.name in offsets:
            init.CopyFrom(
                numpy_helper.from_array((numpy_helper.to_array(init) + offsets[init.name]).astype(np.float32), init.name)
            )
    shifted_path, out = tmp_path / "shifted.onnx", tmp_path / "corrected.onnx"
    onnx.save(shifted, str(shifted_path))

    calls: list[tuple[int, int]] = []
    summary = correct_biases(
        float_path, shifted_path, _batch(), out=out, progress=lambda done, total: calls.append((done, total))
    )

    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert summary == {"bias_correction": True, "layers": 3, "images": 32, "largest_shift": pytest.approx(0.4, abs=1e-4)}
    corrected, original = _initializers(onnx.load(str(out))), _initializers(float_model)
    assert corrected.keys() == original.keys()
    for name, value in original.items():
        np.testing.assert_allclose(corrected[name], value, atol=1e-4, err_msg=name)
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == [n.op_type for n in float_model.graph.node]
    # the source is left as it was when the result goes elsewhere
    np.testing.assert_array_equal(_initializers(onnx.load(str(shifted_path)))["ba"], _initializers(shifted)["ba"])


def _qdq_model(float_path: Path, out: Path) -> Path:
    """ONNX Runtime's own QDQ quantization of the float model (per-channel int8 weights, int32 biases)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": _batch(8, seed)} for seed in range(10, 14)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(
        str(float_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def _mean_shifts(float_model: onnx.ModelProto, qdq: onnx.ModelProto, batch: np.ndarray) -> dict[str, float]:
    """Per layer, the largest per-channel gap between the quantized and the float mean output."""
    names = {n.name: n.output[0] for n in qdq.graph.node if n.op_type in ("Conv", "Gemm")}
    float_names = {n.name: n.output[0] for n in float_model.graph.node if n.op_type in ("Conv", "Gemm")}
    layers = sorted(names)
    q = _outputs(qdq, [names[n] for n in layers], batch)
    f = _outputs(float_model, [float_names[n] for n in layers], batch)
    gaps = {}
    for layer, qo, fo in zip(layers, q, f):
        axes = tuple(i for i in range(qo.ndim) if i != 1)
        gaps[layer] = float(np.abs(qo.mean(axis=axes) - fo.mean(axis=axes)).max())
    return gaps


def test_int32_biases_move_in_their_own_steps_and_the_mean_shift_shrinks(tmp_path: Path) -> None:
    float_model = _float_model()
    float_path = tmp_path / "float.onnx"
    onnx.save(float_model, str(float_path))
    qdq_path = _qdq_model(float_path, tmp_path / "qdq.onnx")
    before = onnx.load(str(qdq_path))
    batch = _batch(64, seed=3)

    summary = correct_biases(float_path, qdq_path, batch)  # in place

    after = onnx.load(str(qdq_path))
    assert summary["layers"] == 3 and summary["images"] == 64 and summary["largest_shift"] > 0
    old, new = _initializers(before), _initializers(after)
    changed = sorted(k for k in old if not np.array_equal(old[k], new[k]))
    assert changed and all(new[k].dtype == np.int32 for k in changed), changed  # only the int32 biases move
    assert [(n.op_type, list(n.input)) for n in after.graph.node] == [(n.op_type, list(n.input)) for n in before.graph.node]
    gaps_before, gaps_after = _mean_shifts(float_model, before, batch), _mean_shifts(float_model, after, batch)
    assert set(gaps_before) == {"conv_a", "conv_b", "fc"}
    for layer in gaps_before:
        assert gaps_after[layer] <= gaps_before[layer] + 1e-6, (layer, gaps_before, gaps_after)
    assert sum(gaps_after.values()) < 0.5 * sum(gaps_before.values()), (gaps_before, gaps_after)
    # the corrected model still runs fused, as deployed
    import onnxruntime as ort

    session = ort.InferenceSession(str(qdq_path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": batch[:2]})[0].shape == (2, 5)


def test_a_model_without_biased_layers_is_written_unchanged(tmp_path: Path) -> None:
    model = _float_model()
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            del node.input[2]
    path = tmp_path / "nobias.onnx"
    onnx.save(model, str(path))
    summary = correct_biases(path, path, _batch(4), out=tmp_path / "out.onnx")
    assert summary == {"bias_correction": True, "layers": 0, "images": 4, "largest_shift": None}
    assert onnx.load(str(tmp_path / "out.onnx")).graph == model.graph


@pytest.mark.parametrize(("size", "images"), [(64, 128), (224, 10), (16, 256), (1024, 8)])
def test_bias_images_bound_the_work_at_any_size(size: int, images: int) -> None:
    assert bias_images(size) == images


def test_unnamed_or_shared_layer_names_match_nothing(tmp_path: Path) -> None:
    """Layers are matched across the two models by node name: an empty name, or one two nodes share,
    is left alone rather than corrected against the wrong layer."""
    model = _float_model()
    names = {"conv_a": "", "conv_b": "fc"}  # conv_a unnamed; conv_b and the Gemm share "fc"
    for node in model.graph.node:
        node.name = names.get(node.name, node.name)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    summary = correct_biases(path, path, _batch(4), out=tmp_path / "out.onnx")
    assert summary["layers"] == 0
    assert _initializers(onnx.load(str(tmp_path / "out.onnx"))).keys() == _initializers(model).keys()


def _skip_model() -> onnx.ModelProto:
    """input -> Conv a -> Relu -> Conv b -> Add(Relu's output, b) -> pool -> Gemm: the Relu's output is
    read across a layer boundary, after conv_b."""
    model = _float_model()
    rng = np.random.default_rng(5)
    for init in model.graph.initializer:
        if init.name in ("wb", "bb", "wfc"):
            shape = {"wb": (4, 4, 1, 1), "bb": (4,), "wfc": (5, 4)}[init.name]
            init.CopyFrom(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, init.name))
    nodes = list(model.graph.node)
    nodes.insert(3, helper.make_node("Add", ["a_relu", "b"], ["skip"], name="skip"))
    nodes[4].input[0] = "skip"  # the pool reads the sum
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize("make", [_float_model, _skip_model], ids=["chain", "skip"])
def test_segments_give_the_same_biases_as_whole_model_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make) -> None:
    """The model is run one segment per layer over cached tensors; the corrected file is byte for
    byte what running the whole model for every layer gives (the fallback where a graph cannot be
    cut: here shape inference is made to fail)."""
    from edge.quantize import bias as module

    float_path = tmp_path / "float.onnx"
    onnx.save(make(), str(float_path))
    qdq_path = _qdq_model(float_path, tmp_path / "qdq.onnx")
    batch = _batch(48, seed=7)
    built: list[str] = []
    build = module._Segment.build
    monkeypatch.setattr(
        module._Segment, "build", lambda owner, nodes, out, end: built.append(out) or build(owner, nodes, out, end)
    )

    segmented = correct_biases(float_path, qdq_path, batch, out=tmp_path / "segmented.onnx")

    assert len(built) == 3  # one segment per layer: conv_a, conv_b, fc
    monkeypatch.setattr("onnx.shape_inference.infer_shapes", lambda model: (_ for _ in ()).throw(RuntimeError("unknown op")))
    whole = correct_biases(float_path, qdq_path, batch, out=tmp_path / "whole.onnx")

    assert len(built) == 3  # the fallback built no segment
    assert segmented == whole and segmented["layers"] == 3
    assert (tmp_path / "segmented.onnx").read_bytes() == (tmp_path / "whole.onnx").read_bytes()
    old, new = _initializers(onnx.load(str(qdq_path))), _initializers(onnx.load(str(tmp_path / "segmented.onnx")))
    assert any(not np.array_equal(old[k], new[k]) for k in old)  # something was corrected


def test_a_bias_two_layers_share_is_left_alone(tmp_path: Path) -> None:
    """conv_a and conv_b read the same bias tensor: a correction for one would shift the other, so
    neither is corrected; the Gemm still is, and the model stays valid."""
    model = _skip_model()
    for node in model.graph.node:
        if node.name == "conv_b":
            node.input[2] = "ba"
    path = tmp_path / "shared.onnx"
    onnx.save(model, str(path))
    shifted = onnx.ModelProto.FromString(model.SerializeToString())
    for init in shifted.graph.initializer:
        if init.name in ("ba", "bfc"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(0.2), init.name))
    shifted_path = tmp_path / "shifted.onnx"
    onnx.save(shifted, str(shifted_path))

    summary = correct_biases(path, shifted_path, _batch(16), out=tmp_path / "out.onnx")

    out = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(out)
    assert summary["layers"] == 1
    corrected, before = _initializers(out), _initializers(shifted)
    np.testing.assert_array_equal(corrected["ba"], before["ba"])
    assert not np.array_equal(corrected["bfc"], before["bfc"])
