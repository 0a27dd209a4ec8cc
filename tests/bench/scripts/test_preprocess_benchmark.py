"""bench/scripts/preprocess_benchmark.py: the crop's window against the whole resize, per frame size."""

from __future__ import annotations

import json

import pytest

from bench.scripts.preprocess_benchmark import main


def test_prints_each_size_with_its_window_and_equal_pixels(capsys):
    assert main(["--sizes", "640x480,480x640,1920x1080", "--rounds", "2", "--calls", "3"]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out.strip().splitlines()[-1])["preprocess"]
    assert [(r["size"], r["window"]) for r in rows] == [
        ("640x480", "rows 30-450"),
        ("480x640", "columns 30-450"),
        ("1920x1080", "whole"),
    ]
    for row in rows:
        assert row["largest_difference"] == 0 and row["frames"] == 6
        assert row["spec_ms"] > 0 and row["whole_ms"] > 0
        assert row["ratio_range"][0] <= row["ratio"] <= row["ratio_range"][1]
    assert "resize-and-crop per frame (center 224 of 256" in " ".join(out.split())


@pytest.mark.parametrize(
    ("argv", "message"), [(["--sizes", "640by480"], "WIDTHxHEIGHT"), (["--rounds", "0"], "must be positive")]
)
def test_bad_arguments_exit_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_run_without_a_model_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main([str(tmp_path / "run"), "--rounds", "1", "--calls", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "edge export" in err
