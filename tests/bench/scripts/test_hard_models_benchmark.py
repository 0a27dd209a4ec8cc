"""The hard-model benchmark's own arithmetic: figures with intervals, the targets' verdicts, its flags."""

from __future__ import annotations

import numpy as np
import pytest

from bench.scripts import hard_models_benchmark as hard


def test_accuracy_figures_carry_their_intervals():
    labels = np.arange(1000) % 10
    reference = np.eye(10)[labels]  # the float model right on every image
    model = reference.copy()
    model[:30] = np.eye(10)[(labels[:30] + 1) % 10]  # 30 images lost, none gained
    figures = hard.accuracy(model, reference, labels)
    assert figures["n"] == 1000 and figures["flips"] == 30 and figures["lost"] == 30 and figures["gained"] == 0
    assert figures["top1"] == pytest.approx(97.0) and figures["drop"] == pytest.approx(3.0)
    assert figures["agreement"] == pytest.approx(97.0)
    for name in ("top1", "drop", "agreement"):
        low, high = figures[f"{name}_interval"]
        assert low <= figures[name] <= high and high - low > 0.5
    assert figures["drop_interval"][0] > 1.5  # 30 losses and no gain: a real drop at 95%


def _figures(model: str, drop_cpu: float, agreement_cpu: float, peer_drop: float, ours_ov_vs_nncf: float) -> dict:
    row = {"n": 10000, "top1": 90.0, "accepted": True}
    ratio = {"estimate": ours_ov_vs_nncf, "low": ours_ov_vs_nncf - 0.05, "high": ours_ov_vs_nncf + 0.05}
    return {
        "model": model,
        "transformer": model.startswith("vit"),
        "rows": [
            {**row, "quantizer": "ours", "target": "cpu", "drop": drop_cpu, "agreement": agreement_cpu},
            {**row, "quantizer": "ours", "target": "trt", "drop": 0.1, "agreement": 99.5, "accepted": False},
            {**row, "quantizer": "ours", "target": "openvino", "drop": 0.0, "agreement": 99.2},
            {**row, "quantizer": "nncf-default", "target": "cpu", "drop": peer_drop, "agreement": 99.0},
            {"quantizer": "modelopt", "target": "trt", "error": "skipped by flag"},
        ],
        "speed": [
            {
                "quantizer": "fp32",
                "target": None,
                "runtime": "onnxruntime",
                "p50_ms": 10.0,
                "batch": 8,
                "vs_ort_fp32": dict(ratio, estimate=1.0),
            },
            {
                "quantizer": "ours",
                "target": "cpu",
                "runtime": "openvino",
                "p50_ms": 6.0,
                "batch": 8,
                "vs_ort_fp32": dict(ratio, estimate=1.6),
                "vs_nncf_openvino": dict(ratio, estimate=0.8, high=0.85),
            },
            {
                "quantizer": "ours",
                "target": "openvino",
                "runtime": "openvino",
                "p50_ms": 5.0,
                "batch": 8,
                "vs_ort_fp32": dict(ratio, estimate=1.8),
                "vs_nncf_openvino": ratio,
            },
            {
                "quantizer": "nncf-default",
                "target": "cpu",
                "runtime": "openvino",
                "p50_ms": 5.0,
                "batch": 8,
                "vs_ort_fp32": ratio,
            },
        ],
    }


def test_targets_say_met_missed_or_not_measured():
    verdicts = {t["target"]: t["met"] for t in hard.judge_targets(_figures("resnet50", 0.2, 99.4, 0.4, 1.02))}
    assert verdicts["cpu: accepted by edge quantize at defaults"] is True
    assert verdicts["trt: accepted by edge quantize at defaults"] is False
    assert verdicts["openvino: accepted by edge quantize at defaults"] is True
    assert verdicts["cpu: drop <= 0.3 pts"] is True
    assert verdicts["cpu: >= best peer (drop, agreement)"] is True
    assert verdicts["openvino: >= best peer (drop, agreement)"] is True  # compared with NNCF's rows
    assert verdicts["trt: >= best peer (drop, agreement)"] is None  # the only trt peer was not measured
    # judged on the target-openvino file, not the target-cpu file run on OpenVINO (0.8x there)
    assert verdicts["openvino: >= NNCF default on OpenVINO"] is True
    assert verdicts["cpu/openvino: >= 2x ONNX Runtime FP32 (fastest path)"] is False  # 1.8x; ResNet-50 needs 2x
    vit = {t["target"]: t["met"] for t in hard.judge_targets(_figures("vit_tiny_patch16_224", 0.45, 98.0, 0.4, 0.9))}
    assert vit["cpu: drop <= 0.5 pts"] is True and vit["cpu: >= best peer (drop, agreement)"] is False
    assert vit["openvino: >= NNCF default on OpenVINO"] is False  # 0.9x [0.85, 0.95]: NNCF's significantly faster
    assert vit["cpu/openvino: >= 1.5x ONNX Runtime FP32 (fastest path)"] is True
    tie = {t["target"]: t for t in hard.judge_targets(_figures("resnet50", 0.2, 99.4, 0.4, 0.98))}
    assert tie["openvino: >= NNCF default on OpenVINO"]["met"] is True  # 0.98x [0.93, 1.03]: not significantly slower
    assert "not significantly slower" in tie["openvino: >= NNCF default on OpenVINO"]["measured"]
    qat = {t["target"]: t["measured"] for t in hard.judge_targets(_figures("resnet50", 0.9, 98.0, 0.4, 1.0))}
    assert "QAT not measured" in qat["cpu: QAT recovers >= 70% of the PTQ drop"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be positive"),
        (["--test-limit", "-1"], "--test-limit"),
    ],
)
def test_bad_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        hard.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_model_or_size_is_refused_before_any_work(tmp_path, capsys):
    assert hard.main(["--models", "no_such_model", "--work", str(tmp_path / "w")]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    assert hard.main(["--models", "vit_tiny_patch16_224", "--image-size", "40", "--work", str(tmp_path / "w")]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_reuse_takes_only_a_file_quantized_from_the_current_float_model(tmp_path):
    """--reuse-ours: our earlier file is taken when its manifest names the current model.onnx as its
    parent and this benchmark timed it; after a re-export (another model.onnx) it is quantized again."""
    from edge.manifest import write_manifest

    root = tmp_path / "run"
    root.mkdir()
    (root / "model.onnx").write_bytes(b"float model, first export")
    write_manifest(root / "model.onnx", "onnx", None)
    (root / "model.int8-cpu.rejected.onnx").write_bytes(b"int8")
    write_manifest(
        root / "model.int8-cpu.rejected.onnx", "onnx-int8-cpu", None, parent=root / "model.onnx", metrics={"accepted": False}
    )
    candidates = [root / "model.int8-cpu.onnx", root / "model.int8-cpu.rejected.onnx"]
    assert hard._earlier_result(root, "cpu", candidates) is None  # not timed by the benchmark: not its file
    (root / "hard-models-quantize-cpu.seconds").write_text("41.5\n")
    earlier = hard._earlier_result(root, "cpu", candidates)
    assert earlier is not None and earlier["path"] == candidates[1] and earlier["reused"] is True
    assert earlier["seconds"] == 41.5 and earlier["accepted"] is False
    (root / "model.onnx").write_bytes(b"float model, exported again")
    write_manifest(root / "model.onnx", "onnx", None)
    assert hard._earlier_result(root, "cpu", candidates) is None


def test_model_optimizer_venv_counts_only_once_its_install_finished(tmp_path):
    """A venv whose pip install was cut short (or is still running elsewhere) is not taken as ready."""
    from bench.scripts import peers
    from edge.errors import UserError

    venv = tmp_path / ".venv-modelopt"
    with pytest.raises(UserError, match="does not exist: the Model Optimizer row needs its own venv"):
        peers.modelopt_python(venv, create=False)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")  # made by `python -m venv`, the install not finished
    with pytest.raises(UserError, match="is not finished"):
        peers.modelopt_python(venv, create=False)
    (venv / peers.MODELOPT_READY).write_text("nvidia-modelopt[onnx]\n")
    assert peers.modelopt_python(venv, create=False) == venv / "bin" / "python"


def test_model_optimizer_never_writes_the_runs_float_model(tmp_path):
    """Model Optimizer rewrites the model it is given in place: it gets a copy, the run's file stays as
    it was (a stand-in Python that does what it did: rewrite its input, write the output)."""
    import hashlib
    import sys

    from bench.scripts import peers

    fake = tmp_path / "python"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "source, calibration, out = sys.argv[3:6]\n"
        "open(source, 'ab').write(b'rewritten')\n"
        "open(out, 'wb').write(open(source, 'rb').read())\n"
        "print('seconds 1.5')\n"
    )
    fake.chmod(0o755)
    model = tmp_path / "run" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"float model")
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    out = tmp_path / "run" / "peers" / "modelopt.onnx"
    out.parent.mkdir()
    assert peers.modelopt_quantize(model, out, np.zeros((2, 1, 4, 4), np.float32), fake) == 1.5
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before
    assert out.read_bytes() == b"float modelrewritten"  # it did run, on the copy


def test_a_peer_counts_as_better_only_when_the_paired_difference_says_so():
    """Two files a couple of images apart are not ranked; one that flips 40 more images is."""
    labels = np.arange(2000) % 10
    float_pred = labels.copy()
    float_pred[:100] = (labels[:100] + 1) % 10  # the float model is wrong on 100 images

    def row(quantizer: str, pred: np.ndarray) -> dict:
        figures = hard.accuracy(np.eye(10)[pred], np.eye(10)[float_pred], labels)
        return {"quantizer": quantizer, "target": "trt", "accepted": True, **figures, "_pred": pred}

    peer_pred = float_pred.copy()
    peer_pred[100:110] = (labels[100:110] + 3) % 10  # the peer flips 10 images
    close = float_pred.copy()
    close[100:112] = (labels[100:112] + 3) % 10  # ours flips 12: 2 more, by point estimate worse
    rows = [row("ours", close), row("modelopt", peer_pred)]
    hard.compare_with_peers(rows, float_pred, labels)
    compared = rows[0]["vs_peers"]["modelopt"]
    assert compared["agreement"]["diff"] == pytest.approx(-0.1) and compared["agreement"]["only_peer"] == 2
    low, high = compared["agreement"]["interval"]
    assert low < 0 < high  # indistinguishable
    met, measured = hard._peer_verdict(rows[0], rows[1:])
    assert met is True and "no peer significantly better" in measured
    far = float_pred.copy()
    far[100:150] = (labels[100:150] + 3) % 10  # ours flips 50: 40 more than the peer
    rows = [row("ours", far), row("modelopt", peer_pred)]
    hard.compare_with_peers(rows, float_pred, labels)
    met, measured = hard._peer_verdict(rows[0], rows[1:])
    assert met is False and "modelopt better on agreement by 2.00 pts" in measured and "modelopt better on top1" in measured
    assert not hard._peer_verdict({**rows[0], "vs_peers": None}, rows[1:])[0]  # no paired figures: point estimates
