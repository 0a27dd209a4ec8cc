"""edge/quantize/cli.py and search.py: INT8 QDQ per target, auto, acceptance metrics (percent), bad input."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.errors import UserError
from edge.manifest import read_manifest
from edge.photos import PHOTO_CLASSES
from edge.quantize.cli import quantize_run
from edge.quantize.targets import check_tensorrt_rules, default_reduce_range
from edge.quantize.tries import Budget, Try

ACCEPTANCE_KEYS = {
    "top1",
    "top5",
    "parent_top1",
    "drop_points",
    "agreement",
    "flips",
    "eval_count",
    "labelled",
    "size_ratio",
    "simulated",
    "accepted",
    "reason",
    "max_flips",
}


@pytest.fixture(scope="module")
def fashion_quant_run(fashion_onnx_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fashion run with a 64-image calibration set, quantized for all three targets."""
    from calibration.sets import build_calibration_set

    root = tmp_path_factory.mktemp("quant") / "run"
    shutil.copytree(fashion_onnx_run, root)
    build_calibration_set(root, "fashion-mnist", size=64, seed=0, progress=False)
    quantize_run(
        root, target="cpu", method="auto", data="fashion-mnist", val_limit=100, min_val_images=100, eval_limit=200, max_excluded=2
    )
    quantize_run(root, target="trt", method="minmax", data="fashion-mnist", eval_limit=200)
    quantize_run(root, target="openvino", method="minmax", data="fashion-mnist", eval_limit=200)
    return root


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_int8_model_names_the_photos(pretrained_int8_run: Path, photos: dict) -> None:
    from edge.runners import select_runner

    path = pretrained_int8_run / "model.int8-cpu.onnx"
    assert read_manifest(path).kind == "onnx-int8-cpu"
    with select_runner(path) as runner:
        logits = runner.infer(runner.spec.apply_batch([photos[name] for name in PHOTO_CLASSES]))
    for name, row in zip(PHOTO_CLASSES, logits):
        assert int(row.argmax()) in PHOTO_CLASSES[name], name


def test_pretrained_int8_manifest(pretrained_int8_run: Path) -> None:
    manifest = read_manifest(pretrained_int8_run / "model.int8-cpu.onnx")
    assert manifest.parent_file == "model.onnx"
    assert manifest.parent_sha256 == read_manifest(pretrained_int8_run / "model.onnx").sha256
    assert set(manifest.metrics) >= ACCEPTANCE_KEYS
    assert manifest.metrics["labelled"] is False  # photos: agreement only, top-1 and the drop not measured
    assert manifest.metrics["parent_top1"] is None and manifest.metrics["drop_points"] is None
    assert manifest.provenance["calibration"]["data"] == "scikit-image photos"


@pytest.mark.slow
def test_cpu_target_layout_and_metrics(fashion_quant_run: Path) -> None:
    path = fashion_quant_run / "model.int8-cpu.onnx"
    manifest = read_manifest(path)
    metrics = manifest.metrics
    assert set(metrics) >= ACCEPTANCE_KEYS
    assert metrics["eval_count"] == 200 and metrics["simulated"] is False
    assert metrics["drop_points"] == pytest.approx(metrics["parent_top1"] - metrics["top1"], abs=1e-3)
    # top-1, top-5 and agreement are percentages (0-100), as in every file of the harness
    assert metrics["agreement"] == pytest.approx(100 * (200 - metrics["flips"]) / 200)
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100
    assert 0.15 < metrics["size_ratio"] < 0.5  # int8 weights: about a quarter of the float file
    assert metrics["eval_source"] == "fashion-mnist:test"
    assert manifest.provenance["reduce_range"] is default_reduce_range()
    rounding = manifest.provenance["weight_rounding"]
    assert rounding["rounding"] == "gptq" and rounding["layers"] > 40 and rounding["output_error_gain_db"] > 0
    model = onnx.load(str(path))
    inits = _initializers(model)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    activation_zp = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(zp.dtype == np.uint8 for zp in activation_zp)  # asymmetric uint8 activations
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights]
    assert weight_dq, "conv weights must be int8 initializers behind a DequantizeLinear"
    for node in weight_dq:
        weight, scale, zero = (inits[name] for name in node.input)
        assert weight.dtype == np.int8 and not zero.any()  # symmetric int8
        assert scale.shape == (weight.shape[0],)  # per channel
        assert np.abs(weight).max() <= 127


@pytest.mark.slow
def test_cpu_target_input_sits_on_the_pixel_grid(fashion_quant_run: Path, tmp_path: Path) -> None:
    """Inputs 2p/255 - 1 (mean = std = 0.5): minmax's scale 2/255 with zero point 128 rounds every
    pixel from a tie; the refined grid 2/254 with zero point 127 holds black and white exactly."""
    from calibration.sets import load_calibration_set

    values = np.unique(np.asarray(load_calibration_set(fashion_quant_run).tensor))
    assert values.min() == -1 and values.max() == 1
    path = fashion_quant_run / "model.int8-cpu.onnx"
    inits = _initializers(onnx.load(str(path)))
    if "input_scale" not in inits:
        # auto's fallback may cut the first layer back to float (its input Q/DQ with it) on this
        # untrained model, where every layer's effect is noise: then the grid is checked on a
        # fully quantized model of the same run and calibration set
        first = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
        assert first.name in read_manifest(path).provenance["nodes_excluded"]
        run = tmp_path / "run"
        shutil.copytree(fashion_quant_run, run)
        quantize_run(run, target="cpu", method="minmax", data="fashion-mnist", eval_limit=100)
        inits = _initializers(onnx.load(str(run / "model.int8-cpu.onnx")))
    assert inits["input_scale"] == pytest.approx(2 / 254) and int(inits["input_zero_point"]) == 127
    q = np.clip(np.round(values / inits["input_scale"]) + 127, 0, 255)
    on_grid = (q - 127) * inits["input_scale"]
    assert on_grid[0] == pytest.approx(-1, abs=1e-6) and on_grid[-1] == pytest.approx(1, abs=1e-6)
    assert np.abs(on_grid - values).max() < 0.5 * 2 / 254 + 1e-6


@pytest.mark.slow
def test_auto_records_its_tries_and_a_layer_report(fashion_quant_run: Path) -> None:
    manifest = read_manifest(fashion_quant_run / "model.int8-cpu.onnx")
    tries = manifest.provenance["tries"]
    assert [t["method"] for t in tries[:4]] == ["minmax", "mean-minmax", "entropy", "percentile"]
    assert all(t["eval_count"] == 100 for t in tries)
    # target cpu: every try timed against the float model; the same float nodes, the same speed
    assert all(t["speedup"] > 0 for t in tries)
    assert len({t["speedup"] for t in tries if not t["excluded"]}) == 1
    assert manifest.provenance["speed"]["batch"] == 8
    assert manifest.provenance["val_set"] == "fashion-mnist:val"
    assert manifest.provenance["val_count"] == manifest.metrics["val_count"] == 100  # the n behind the choice
    bias = manifest.provenance["bias_correction"]
    chosen = [
        t
        for t in tries
        if (t["method"], t["excluded"], t["bias_corrected"])
        == (manifest.provenance["chosen_method"], manifest.provenance["nodes_excluded"], bias is not None)
    ]
    assert len(chosen) == 1
    # the last try is the choice before it with its biases corrected, scored on the same val images
    *before, corrected = tries
    assert corrected["bias_corrected"] and not any(t["bias_corrected"] for t in before)
    assert any(
        (t["method"], t["excluded"], t["speedup"]) == (corrected["method"], corrected["excluded"], corrected["speedup"])
        for t in before
    )
    if bias is not None:  # kept only when val scores it at least as well
        assert (
            bias["layers"] > 40
            and bias["images"] == 64
            and corrected["agreement"]
            >= max(
                t["agreement"] for t in before if t["method"] == corrected["method"] and t["excluded"] == corrected["excluded"]
            )
        )
    fitting = [t for t in tries[:4] if t["drop_points"] <= 0.5 and t["agreement"] >= 99.0]
    assert fitting or len(tries) > 4, "auto must try keeping layers in float when no method fits the budget"
    report = json.loads((fashion_quant_run / "model.int8-cpu.layers.json").read_text())
    losses = [layer["loss_db"] for layer in report["layers"]]
    assert len(losses) > 10 and losses == sorted(losses, reverse=True)
    assert all(layer["keep_float"] for layer in report["layers"] if layer["producer_op"] != "input")
    assert "model.int8-cpu.layers.json" in manifest.extra_files


@pytest.mark.slow
def test_trt_target_follows_tensorrt_rules(fashion_quant_run: Path) -> None:
    path = fashion_quant_run / "model.int8-trt.onnx"
    manifest = read_manifest(path)
    assert manifest.kind == "onnx-int8-trt" and manifest.metrics["simulated"] is True
    assert manifest.provenance["extra_options"]["QuantizeBias"] is False
    assert manifest.provenance["weight_rounding"]["rounding"] == "gptq"
    # a named method has no val split to ask: its float biases are corrected
    assert manifest.provenance["bias_correction"]["layers"] > 40
    assert [t["bias_corrected"] for t in manifest.provenance["tries"]] == [False, True]
    assert manifest.provenance["speed"] is None  # ORT CPU speed says nothing about TensorRT
    model = onnx.load(str(path))
    assert check_tensorrt_rules(model) == []
    inits = _initializers(model)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)
    # Q/DQ only in front of weighted ops: every DequantizeLinear feeds a Conv or Gemm (a residual
    # branch may share it).
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    assert all(consumers[n.output[0]] & {"Conv", "Gemm", "MatMul"} for n in qdq if n.op_type == "DequantizeLinear")
    assert not any(i.data_type == onnx.TensorProto.INT32 for i in model.graph.initializer)


def test_openvino_target_layout_and_runtime(fashion_quant_run: Path) -> None:
    """Target openvino: NNCF's placement (symmetric, inputs of the INT8 ops only), judged on
    OpenVINO's own kernels, and run there by the auto backend."""
    from edge.runners import select_runner
    from edge.runners.openvino_runner import OpenVinoRunner

    path = fashion_quant_run / "model.int8-openvino.onnx"
    manifest = read_manifest(path)
    assert manifest.kind == "onnx-int8-openvino" and manifest.metrics["accepted"] in (True, False)
    assert manifest.metrics["eval_count"] == 200 and manifest.metrics["simulated"] is False
    assert manifest.metrics["runtime"] == "openvino"  # its tries and acceptance ran on OpenVINO
    assert 0 < manifest.metrics["agreement"] <= 100
    assert manifest.provenance["unsigned_where_nonnegative"] is True
    assert manifest.provenance["extra_options"]["QuantizeBias"] is False
    model = onnx.load(str(path))
    inits = _initializers(model)
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activations and not any(inits[n.input[2]].any() for n in activations)  # every zero point 0
    kinds = {inits[n.input[2]].dtype for n in activations}
    assert kinds == {np.dtype(np.int8), np.dtype(np.uint8)}  # the normalised input is signed, ReLU6 outputs are not
    # a convolution feeds its ReLU6 in float: no Q/DQ between them (Lite0 has 49 such pairs)
    activated = {n.input[0] for n in model.graph.node if n.op_type in ("Clip", "Relu")}
    assert len(activated & {o for n in model.graph.node if n.op_type == "Conv" for o in n.output}) > 30
    assert not [n.input[0] for n in activations if n.input[0] in activated]
    assert not any(i.data_type == onnx.TensorProto.INT32 for i in model.graph.initializer)
    with select_runner(path) as runner:
        assert isinstance(runner, OpenVinoRunner)


def test_tensorrt_rule_check_catches_violations(fashion_onnx_run: Path, tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["b", "s", "z"], ["bias"]), helper.make_node("Add", ["x", "bias"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [
            numpy_helper.from_array(np.arange(4, dtype=np.int32), "b"),
            numpy_helper.from_array(np.float32(0.1), "s"),
            numpy_helper.from_array(np.int32(3), "z"),
        ],
    )
    problems = check_tensorrt_rules(helper.make_model(graph))
    assert any("non-zero zero point" in p for p in problems)
    assert any("int32 tensor b feeds DequantizeLinear" in p for p in problems)


def test_reduce_range_default_follows_cpu_flags() -> None:
    assert default_reduce_range(["avx2", "avx512f"], "x86_64") is True
    assert default_reduce_range(["avx2", "avx512_vnni"], "x86_64") is False
    assert default_reduce_range(["avx2", "avx_vnni"], "x86_64") is False
    assert default_reduce_range([], "aarch64") is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "gpu"}, "unknown target 'gpu'"),
        ({"method": "distribution"}, "unknown method 'distribution'"),
        ({"max_drop": -1}, "max-drop"),
        ({"eval_limit": -5}, "eval-limit"),
        ({"min_agreement": 101}, r"--min-agreement is a percentage in \(0, 100\], got 101"),
        ({"min_agreement": 0}, r"--min-agreement is a percentage in \(0, 100\], got 0"),
        ({"min_agreement": 0.99}, r"--min-agreement is a percentage, e.g. 99, not a fraction: got 0.99 \(for 99% pass 99\)"),
        ({"weight_rounding": "stochastic"}, "unknown weight rounding 'stochastic'"),
    ],
)
def test_bad_arguments_fail_before_work(fashion_onnx_run: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        quantize_run(fashion_onnx_run, **kwargs)


def test_missing_model_or_calibration(fashion_onnx_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="export the model first"):
        quantize_run(tmp_path, target="cpu")
    run = tmp_path / "run"
    # no calibration set and no data known (no --data, no splits.json): nothing to calibrate on
    shutil.copytree(fashion_onnx_run, run, ignore=shutil.ignore_patterns("calibration", "splits.json"))
    with pytest.raises(UserError, match="has no calibration set: run `edge calibrate"):
        quantize_run(run, target="cpu")


def test_corrupt_or_fixed_batch_model_is_refused(fashion_onnx_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    (run / "model.onnx").write_bytes(b"not an onnx model at all")
    with pytest.raises(UserError, match="model.onnx does not match its manifest .* `edge export"):
        quantize_run(run, target="cpu", data="fashion-mnist")  # replaced after its manifest was written
    (run / "model.onnx.json").unlink()  # a model of the user's own, without a manifest: the load checks speak
    with pytest.raises(UserError, match="not a readable ONNX model"):
        quantize_run(run, target="cpu", data="fashion-mnist")
    model = onnx.load(str(fashion_onnx_run / "model.onnx"))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.dim_value = 1
    onnx.save(model, str(run / "model.onnx"))
    with pytest.raises(UserError, match="fixed batch dimension"):
        quantize_run(run, target="cpu", data="fashion-mnist")


def test_nan_in_calibration_batch_is_refused(fashion_onnx_run: Path, tmp_path: Path) -> None:
    from calibration.sets import load_calibration_set, store_calibration_set
    from edge.artifact_spec import artifact_spec
    from edge.run import RunDir

    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run)
    spec = artifact_spec(run / "model.onnx")
    images = [np.full((28, 28), 128, np.uint8) for _ in range(4)]
    calib = store_calibration_set(
        RunDir.open(run), spec, images, [f"x:{i}" for i in range(4)], np.zeros(4, int), data="synthetic", seed=0, requested=4
    )
    poisoned = np.array(load_calibration_set(calib.path).tensor)
    poisoned[2, 0, 0, 0] = np.nan
    np.save(tmp_path / "poisoned.npy", poisoned)
    shutil.copy(calib.path.with_name(calib.path.name + ".json"), tmp_path / "poisoned.npy.json")
    with pytest.raises(UserError, match=r"calibration batch 0 \(items 0..3\) contains 1 NaN/Inf"):
        quantize_run(run, target="cpu", method="minmax", calibration=tmp_path / "poisoned.npy")


def test_cli_quantize_prints_and_writes(
    fashion_quant_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    out = tmp_path / "cli.int8-cpu.onnx"
    with caplog.at_level(logging.INFO):
        code = main(
            [
                "quantize",
                str(fashion_quant_run),
                "--target",
                "cpu",
                "--method",
                "minmax",
                "--data",
                "fashion-mnist",
                "--eval-limit",
                "50",
                "--weight-rounding",
                "nearest",
                "--no-bias-correction",
                "--out",
                str(out),
            ]
        )
    manifest = read_manifest(out)
    assert code == (0 if manifest.metrics["accepted"] else 1)  # 1: written, not accepted (test_acceptance.py)
    assert manifest.metrics["eval_count"] == 50
    assert manifest.provenance["weight_rounding"] == {"rounding": "nearest"}
    assert manifest.provenance["bias_correction"] is None
    assert [t["bias_corrected"] for t in manifest.provenance["tries"]] == [False]  # no corrected try at all
    printed = capsys.readouterr().out
    assert f"{manifest.metrics['top1']:.2f}%" in printed and f"{manifest.metrics['agreement']:.2f}%" in printed
    assert main(["quantize", str(fashion_quant_run), "--target", "cpu", "--max-drop", "-1"]) == 2
    assert main(["quantize", str(fashion_quant_run), "--target", "cpu", "--min-agreement", "0.99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "edge quantize: error: --min-agreement is a percentage, e.g. 99, not a fraction: got 0.99 (for 99% pass 99)"
    )


def _try(excluded: int, drop: float, agreement: float, speedup: float | None) -> Try:
    return Try(
        "minmax",
        [f"n{i}" for i in range(excluded)],
        Path(f"try-{excluded}.onnx"),
        {"drop_points": drop, "agreement": agreement},
        speedup,
    )


def test_auto_takes_the_fastest_try_that_fits() -> None:
    budget = Budget(max_drop=0.5, min_agreement=99.0)  # points, percent
    full = _try(0, 0.2, 98.5, 2.2)  # fast, agreement short of 99%
    two = _try(2, 0.1, 99.5, 1.6)
    four = _try(4, 0.0, 99.9, 1.4)
    assert budget.fastest([full, two, four]) is two
    # within SPEED_TOLERANCE of the fastest, accuracy decides
    close = _try(1, 0.0, 99.8, 1.58)
    assert budget.fastest([full, two, close, four]) is close
    # nothing fits: the most accurate within the drop budget, speed aside
    assert budget.fastest([full, _try(1, 0.3, 98.6, 2.0)]).excluded == ["n0"]
    # untimed tries (target trt): accuracy alone
    assert budget.fastest([_try(0, 0.1, 99.2, None), _try(1, 0.0, 99.5, None)]).excluded == ["n0"]
    assert budget.fits(two) and not budget.fits(full) and not budget.fits(_try(0, 0.6, 100.0, None))


def test_interleaved_throughput_reports_ratios_to_the_first_model(fashion_onnx_run: Path) -> None:
    from edge.artifact_spec import artifact_spec
    from edge.quantize.evaluate import interleaved_throughput

    spec = artifact_spec(fashion_onnx_run / "model.onnx")
    batch = np.zeros((2, *spec.input_shape), dtype=np.float32)
    model = fashion_onnx_run / "model.onnx"
    first, second = interleaved_throughput([model, model], spec, batch, threads=1, rounds=3, window_s=0.01, warmup=1)
    assert first["ratio"] == first["ratio_min"] == first["ratio_max"] == 1.0
    assert second["ratio_min"] <= second["ratio"] <= second["ratio_max"]
    assert first["threads"] == second["threads"] == 1
    assert first["rounds"] == 3 and first["calls"] >= 9 and first["images_per_s"] > 0
    with pytest.raises(UserError, match="at least one round"):
        interleaved_throughput([model], spec, batch, rounds=0)
