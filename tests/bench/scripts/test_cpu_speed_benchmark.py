"""bench/scripts/cpu_speed_benchmark.py and the peers it shares with quantize_benchmark --peers:
bad options are one line and exit 2, the speed-up arithmetic is the median of per-round ratios,
the static-batch copy fixes the batch, a missing NNCF becomes a "not installed" row, and the peer
comparison runs end to end on a small model (its figures are printed by the scripts, not tested)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from bench.scripts import cpu_speed_benchmark, peers, quantize_benchmark
from edge.runners.openvino_runner import openvino_available


@pytest.mark.parametrize("flag", ["--rounds", "--window", "--batch", "--repeat", "--photos"])
def test_non_positive_options_are_refused(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cpu_speed_benchmark.main([flag, "0"])
    assert exit_info.value.code == 2
    assert f"{flag} must be positive, got 0" in capsys.readouterr().err


@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed: pip install -e '.[openvino]'")
def test_missing_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cpu_speed_benchmark.main(["--run", str(tmp_path / "nope"), "--skip-224"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cpu_speed_benchmark: error: run directory") and "does not exist" in err[0]


def test_without_openvino_the_script_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert cpu_speed_benchmark.main(["--skip-224", "--skip-demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the Python package 'openvino'" in err[0] and "[openvino]" in err[0]


def test_accuracy_row_against_the_float_model() -> None:
    float_logits = np.eye(4, dtype=np.float32)  # predicts 0, 1, 2, 3
    int8_logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]  # one flip
    row = peers.accuracy_row(int8_logits, float_logits, labels=np.array([0, 1, 2, 3]))
    assert row == {"top1": 75.0, "drop": 25.0, "agreement": 75.0, "flips": 1}
    assert peers.accuracy_row(int8_logits, float_logits, None)["top1"] is None  # unlabelled photos: agreement only


def test_missing_nncf_is_a_not_installed_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    monkeypatch.setattr(peers, "ort_default_quantize", lambda float_model, out, tensor: 1.5)
    models = peers.peer_models(tmp_path / "model.onnx", np.zeros((2, 3, 8, 8), np.float32), tmp_path)
    assert models["nncf-default"] == {"error": "not installed (pip install -e '.[nncf]')"}
    assert models["onnxruntime-default"]["seconds"] == 1.5


def test_static_batch_copy_fixes_the_batch_dimension(fashion_onnx_run: Path, tmp_path: Path) -> None:
    import onnx

    out = cpu_speed_benchmark.static_batch_copy(fashion_onnx_run / "model.onnx", 8, tmp_path / "static.onnx")
    graph = onnx.load(str(out)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [8, 3, 32, 32]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_value == 8


@pytest.mark.slow
@pytest.mark.skipif(not openvino_available(), reason="openvino is not installed: pip install -e '.[openvino]'")
def test_peers_table_has_every_quantizer_and_runtime(fashion_onnx_run: Path, tmp_path: Path, capsys) -> None:
    """--peers on a small run: ours, ONNX Runtime's default and NNCF's (or its "not installed" row),
    each on ONNX Runtime and OpenVINO, evaluated on the same test images; the run is left as it was."""
    import json
    import shutil

    from calibration.sets import build_calibration_set
    from edge.quantize.cli import quantize_run

    run = tmp_path / "run"
    shutil.copytree(fashion_onnx_run, run, ignore=shutil.ignore_patterns("calibration", "model.int8-*"))
    build_calibration_set(run, "fashion-mnist", size=16, seed=0)
    quantize_run(run, target="cpu", method="minmax", data="fashion-mnist", eval_limit=16)
    before = sorted(p.name for p in run.iterdir())
    argv = ["--run", str(run), "--data", "fashion-mnist", "--peers", "--eval-limit", "24", "--rounds", "1", "--window", "0.01"]
    assert quantize_benchmark.main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["peers"]
    assert [(r["quantizer"], r["runtime"]) for r in rows] == [
        (q, r) for q in ("fp32", "ours", "onnxruntime-default", "nncf-default") for r in ("onnxruntime", "openvino")
    ]
    by_key = {(r["quantizer"], r["runtime"]): r for r in rows}
    assert by_key["fp32", "onnxruntime"]["agreement"] == 100.0 and by_key["fp32", "openvino"]["agreement"] == 100.0
    for row in rows:
        assert row["eval_count"] == 24 and row["calibration_count"] == 16
        if "error" not in row:
            assert row["agreement"] == pytest.approx(100 * (24 - row["flips"]) / 24) and row["p50_ms"] > 0
    assert by_key["ours", "onnxruntime"]["quantize_s_from_manifest"] is True
    assert by_key["onnxruntime-default", "openvino"]["quantize_s"] > 0
    assert sorted(p.name for p in run.iterdir()) == before
