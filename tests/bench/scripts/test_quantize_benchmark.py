"""The INT8 figures script refuses bad input with one line and exit 2 (its figures are not tested here)."""

from __future__ import annotations

import pytest

from bench.scripts.quantize_benchmark import main


@pytest.mark.parametrize("flag", ["--rounds", "--window", "--batch"])
def test_non_positive_timing_options_are_refused(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([flag, "0", "--skip-rss", "--skip-accuracy"])
    assert exit_info.value.code == 2
    assert f"{flag} must be positive, got 0" in capsys.readouterr().err


def test_missing_run_is_one_line(tmp_path, capsys):
    assert main(["--run", str(tmp_path / "nope"), "--skip-rss"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("quantize_benchmark: error: run directory") and "does not exist" in err[0]


def test_negative_eval_limit_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--compare-rounding", "--eval-limit", "-1"])
    assert exit_info.value.code == 2
    assert "--eval-limit must be >= 0 (0 = the whole test split), got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_rounding_uses_one_calibration_set_and_the_same_test_images(fashion_onnx_run, tmp_path, capsys):
    """GPTQ against nearest rounding (the README figure): both rows from the same calibration set and
    test images, with flips that match the agreement; the run itself is left as it was."""
    import json
    import shutil

    run = tmp_path / "run"
    from calibration.sets import build_calibration_set

    shutil.copytree(fashion_onnx_run, run, ignore=shutil.ignore_patterns("calibration", "model.int8-*"))
    # the run's own calibration set is the one every row uses: 32 images keep GPTQ quick here
    calibration = build_calibration_set(run, "fashion-mnist", size=32, seed=0, progress=False).path
    before = sorted(p.name for p in run.iterdir())
    argv = ["--run", str(run), "--data", "fashion-mnist", "--compare-rounding", "--eval-limit", "60"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = json.loads(out.strip().splitlines()[-1])["compare_rounding"]
    assert [(r["rounding"], r["bias_correction"]) for r in rows] == [("gptq", True), ("gptq", False), ("nearest", False)]
    corrected, gptq, nearest = rows
    for row in (gptq, nearest):
        for key in ("calibration", "calibration_count", "eval_count", "eval_source", "parent_top1", "method"):
            assert corrected[key] == row[key], key
    assert corrected["calibration"] == str(calibration) and corrected["calibration_count"] == 32
    assert gptq["eval_count"] == 60 and gptq["eval_source"] == "fashion-mnist:test" and gptq["method"] == "minmax"
    for row in rows:
        assert row["agreement"] == pytest.approx(100 * (60 - row["flips"]) / 60)
        assert row["drop_points"] == pytest.approx(row["parent_top1"] - row["top1"], abs=1e-3)
        ov = row["openvino"]  # the openvino extra is in make install's defaults
        assert ov["agreement"] == pytest.approx(100 * (60 - ov["flips"]) / 60)
    assert corrected["bias_layers"] > 40 and gptq["bias_layers"] is None and nearest["bias_layers"] is None
    assert corrected["output_error_gain_db"] > 0 and gptq["output_error_gain_db"] > 0 and nearest["output_error_gain_db"] is None
    assert "Weight rounding and bias correction" in out and "60 test images" in " ".join(out.split())
    assert sorted(p.name for p in run.iterdir() if p.name != "splits.json") == [n for n in before if n != "splits.json"]
