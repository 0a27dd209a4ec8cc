"""`edge bench` argument validation, per-row isolation of the workers, and the zoo's counting."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench import processes
from bench.matrix import select_artifacts
from bench.processes import run_worker
from bench.zoo import count_macs, parse_zoo, run_zoo_job, zoo_table
from edge.cli import main
from edge.errors import UserError
from edge.run import RunDir


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--artifacts", "onnx-fp16"], "unknown artifact"),
        (["--batch-sizes", "1,0"], "--batch-sizes must be positive"),
        (["--batch-sizes", "1,x"], "whole numbers"),
        (["--devices", "tpu"], "unknown device"),
        (["--threads", "0"], "--threads must be positive"),
    ],
)
def test_bad_arguments_are_one_line_errors(pretrained_run: Path, capsys, args, message):
    assert main(["bench", str(pretrained_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_run_directory(tmp_path: Path, capsys):
    assert main(["bench", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_classes_must_match_the_model_labels(pretrained_run: Path, tmp_path: Path, capsys):
    # An ImageFolder of two classes against the 1000 ImageNet labels of the pretrained run. On a copy:
    # a run without splits.json may be pinned to the --eval data, which must not leak into the
    # session's shared pretrained run (later quantize tests would find a 2-class split there).
    run = tmp_path / "run"
    shutil.copytree(pretrained_run, run)
    for offset, cls in enumerate(("cat", "dog")):  # every image distinct: no content in two splits
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(tmp_path / "data" / cls / f"{i}.png"), np.full((16, 16, 3), i * 20 + offset * 7, np.uint8))
    assert main(["bench", str(run), "--eval", str(tmp_path / "data"), "--devices", "cpu"]) == 2
    assert "does not match torch-fp32's labels" in capsys.readouterr().err


def test_select_artifacts_all_and_list(pretrained_run: Path):
    run = RunDir.open(pretrained_run)
    assert list(select_artifacts(run, "all")) == ["torch-fp32"]
    with pytest.raises(UserError, match="available are torch-fp32"):
        select_artifacts(run, "int8-cpu")


def test_a_crashing_worker_costs_one_error_row(monkeypatch):
    monkeypatch.setattr(processes.sys, "executable", "/bin/false")
    result = run_worker({"kind": "artifact", "name": "x"}, timeout_s=30)
    assert result["status"] == "error"
    assert "worker exited with code 1" in result["error"]


def test_a_hanging_worker_is_stopped_at_the_timeout(tmp_path: Path):
    job = {"kind": "artifact", "name": "onnx-fp32", "path": str(tmp_path / "m.onnx"), "device": "cpu"}
    result = run_worker(job, timeout_s=0.01)
    assert result == {"status": "error", "error": "timed out after 0 s (raise --timeout)"}


def test_a_broken_artifact_is_an_error_row_not_a_crash(tmp_path: Path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx file")
    job = {
        "kind": "artifact",
        "name": "onnx-fp32",
        "path": str(broken),
        "device": "cpu",
        "threads": 1,
        "batch_sizes": [1],
        "window": {"warmup_s": 0, "min_iters": 1, "min_seconds": 0, "max_seconds": 1},
    }
    result = run_worker(job, timeout_s=120)
    assert result["status"] == "error"
    assert "corrupt" in result["error"] or "model.onnx" in result["error"]


def test_count_macs_counts_multiply_accumulates():
    import torch

    conv = torch.nn.Conv2d(3, 8, kernel_size=3, bias=False)
    assert count_macs(conv, (3, 8, 8)) == 8 * 3 * 3 * 3 * 6 * 6


def test_zoo_names_are_checked_before_work():
    with pytest.raises(UserError, match="unknown model 'resnet17'"):
        parse_zoo("resnet18,resnet17")


@pytest.mark.slow
def test_zoo_job_measures_a_model_without_weights():
    window = {"warmup_s": 0.0, "min_iters": 2, "min_seconds": 0.0, "max_seconds": 5.0}
    row = run_zoo_job({"arch": "mobilenet_v3_small", "device": "cpu", "threads": 1, "batch_sizes": [1, 2], "window": window})
    assert row["params"] == pytest.approx(2.54e6, rel=0.01)
    assert row["macs"] / 1e9 == pytest.approx(0.06, abs=0.01)  # torchvision's docs: 0.06 GFLOPS (MACs)
    assert row["imagenet_top1"] == pytest.approx(67.668)
    assert [c["batch"] for c in row["cells"]] == [1, 2]
    row.update(status="ok", device="cpu")
    header, (line,) = zoo_table([row])
    assert line[header.index("params M")] == "2.5" and line[header.index("p50 b32 ms")] == "n/a"
    header, (line,) = zoo_table([row], [1, 2])  # --batch-sizes 1,2: those columns and no others
    assert [h for h in header if h.startswith(("p50", "img/s"))] == ["p50 b1 ms", "p50 b2 ms", "img/s b2"]
    assert line[header.index("p50 b2 ms")] == f"{row['cells'][1]['compute']['p50_ms']:.2f}"


def _stub_zoo_worker(monkeypatch) -> dict:
    """Every zoo row comes back measured at once: resnet18 on cpu, 2 ms at batch 1 (the row, to change)."""
    row = {
        "arch": "resnet18",
        "device": "cpu",
        "status": "ok",
        "params": 1e6,
        "cells": [{"batch": 1, "compute": {"p50_ms": 2.0, "items_per_s": 500.0}}],
    }
    monkeypatch.setattr("bench.processes.run_worker", lambda job, timeout_s: dict(row))
    return row


def test_the_zoo_writes_its_report_set_where_it_says(tmp_path, monkeypatch):
    from bench import zoo

    _stub_zoo_worker(monkeypatch)
    monkeypatch.chdir(tmp_path)
    from rich.console import Console

    console = Console(record=True, width=200)
    assert zoo.run_zoo("resnet18", ["cpu"], 1, None, 60.0, console, [1]) == 0
    out = tmp_path / "runs" / "zoo"
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".json.json")) == [
        "zoo.csv",
        "zoo.json",
        "zoo.md",
        "zoo.png",
    ]
    assert "p50 b1 ms" in (out / "zoo.csv").read_text().splitlines()[0]
    assert f"zoo report: {Path('runs/zoo/zoo.json')}" in console.export_text()


def test_the_zoo_keeps_the_report_set_it_replaces(tmp_path, monkeypatch):
    from rich.console import Console

    from bench import zoo

    row = _stub_zoo_worker(monkeypatch)
    out = tmp_path / "zoo"
    assert zoo.run_zoo("resnet18", ["cpu"], 1, out, 60.0, Console(width=200), [1]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    row["cells"][0]["compute"]["p50_ms"] = 3.0
    console = Console(record=True, width=400)
    assert zoo.run_zoo("resnet18", ["cpu"], 1, out, 60.0, console, [1]) == 0

    (kept,) = (out / "history").iterdir()
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
    assert (out / "zoo.csv").read_bytes() != before["zoo.csv"]
    assert f"kept the previous {', '.join(sorted(before))} in {kept}/ (edge bench --zoo replaces them)" in console.export_text()
