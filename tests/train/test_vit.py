"""A vision transformer trains at the input size asked for, exports and quantizes for both targets.

timm's ``test_vit`` (6 blocks of width 64, 16 px patches, built for 160 px) at 32 px: a 2 x 2 patch
grid, its position embeddings resampled from the 10 x 10 grid of the 160 px weights file.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from edge.errors import UserError
from tests.train.conftest import tiny_config

VIT = "test_vit"


def test_patch_size_that_does_not_divide_the_image_size_is_refused_before_training(tmp_path, capsys):
    from edge.cli import main

    out = tmp_path / "run"
    status = main(["train", "--out", str(out), "--model", VIT, "--image-size", "40", "--data", "fashion-mnist"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "--image-size 40 does not fit test_vit" in err[0] and "multiple of 16 (e.g. 32 or 48)" in err[0]
    assert not out.exists()  # nothing read, nothing written


def test_cnn_takes_any_size_and_vit_is_built_at_the_size_asked_for(tmp_path):
    import torch

    from train.models import build_model, check_image_size, patch_size

    assert patch_size(VIT) == 16 and patch_size("vit_b_16") == 16 and patch_size("resnet18") is None
    check_image_size("resnet18", 37)  # no error: a CNN takes any size
    with pytest.raises(UserError, match="multiple of 16"):
        build_model(VIT, num_classes=3, image_size=24)
    weights = tmp_path / "vit160.pt"
    torch.save(build_model(VIT).state_dict(), weights)  # a 10 x 10 patch grid (+ class token)
    model = build_model(VIT, num_classes=3, weights_path=weights, image_size=48).eval()
    assert tuple(model.pos_embed.shape) == (1, 1 + 3 * 3, 64)
    assert model(torch.zeros(2, 3, 48, 48)).shape == (2, 3)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few training steps of test_vit at 32 px from a 160 px weights file, exported."""
    import torch

    from edge.export import export_onnx
    from train.loop import train
    from train.models import build_model

    root = tmp_path_factory.mktemp("vit")
    weights = root / "vit160.pt"
    torch.manual_seed(0)
    torch.save(build_model(VIT).state_dict(), weights)
    out = root / "run"
    train(tiny_config(out, model=VIT, weights=str(weights), epochs=1, train_limit=64, val_limit=32, test_limit=0, augment="none"))
    export_onnx(out, verify_limit=4, exporter="torchscript")
    return out


def _quantized_inputs(path: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Per op type: nodes fed by a DequantizeLinear, and nodes whose output a QuantizeLinear takes."""
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    fed, quantized_out = collections.Counter[str](), collections.Counter[str]()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(name in producers and producers[name].op_type == "DequantizeLinear" for name in node.input):
            fed[node.op_type] += 1
        if any(c.op_type == "QuantizeLinear" for out in node.output for c in consumers[out]):
            quantized_out[node.op_type] += 1
    return fed, quantized_out


@pytest.mark.parametrize("target", ["cpu", "trt", "openvino"])
def test_vit_trains_exports_and_its_matmuls_quantize(vit_run, target):
    import onnx

    from edge.manifest import read_manifest
    from edge.quantize.cli import quantize_run
    from edge.quantize.targets import check_tensorrt_rules

    model = onnx.load(str(vit_run / "model.onnx"))
    assert {"MatMul", "LayerNormalization", "Softmax"} <= {node.op_type for node in model.graph.node}
    path = quantize_run(
        vit_run,
        target=target,
        method="minmax",
        data="fashion-mnist",
        calib_size=16,
        eval_limit=16,
        weight_rounding="nearest",
        bias_correction=False,
    )
    fed, quantized_out = _quantized_inputs(path)
    matmuls = sum(node.op_type == "MatMul" for node in model.graph.node)
    assert fed["MatMul"] == matmuls and fed["Gemm"] == 1  # every attention and MLP product, and the head
    # LayerNorm and GELU compute in float on float inputs (the residual stream is never quantized)
    assert fed["LayerNormalization"] == fed["Gelu"] == 0
    # the 12 in the blocks only as the next MatMul's quantized input; the last feeds the class token's
    # pick, float, except on target openvino, whose data movement (the Gather) is quantized too
    assert quantized_out["LayerNormalization"] == (13 if target == "openvino" else 12)
    manifest = read_manifest(path)
    assert manifest.metrics["eval_count"] == 16
    if target == "trt":
        assert check_tensorrt_rules(path) == []
    else:
        assert "LayerNormalization" not in manifest.provenance["op_types"]
    assert manifest.metrics["runtime"] == ("openvino" if target == "openvino" else "onnxruntime")
