"""Optional dependencies stay optional: on a device installed without the `train` extra (no
matplotlib), `edge bench` writes report.json/.md/.csv and the manifest, says once why there is no
report.png, and exits 0."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

from bench.plots import plot_unavailable
from bench.report import build_report, write_report
from edge.manifest import read_manifest
from edge.measure.report import read_report
from edge.verify import verify_file

from .conftest import PIPELINE_ENV

REPO = Path(__file__).resolve().parents[2]
NOTE = "report.png not written: it needs matplotlib, which is not installed (pip install matplotlib, or the `train` extra)"


def _report(rows: list[dict]) -> dict:
    settings = {
        "run": "runs/x",
        "profile": "custom",
        "artifacts": ["onnx-fp32"],
        "devices": ["cpu"],
        "batch_sizes": [1, 8],
        "window": {"warmup_s": 0.0, "min_iters": 1, "min_seconds": 0.0},
    }
    return build_report(settings, None, rows)


def _timed_row() -> dict:
    def cell(batch: int) -> dict:
        return {"batch": batch, "status": "ok", "compute": {"p50_ms": 1.0 * batch, "items_per_s": 900.0}}

    return {"artifact": "onnx-fp32", "device": "cpu", "status": "ok", "cells": [cell(1), cell(8)]}


def _hide_matplotlib(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ModuleNotFoundError


def test_without_matplotlib_the_report_has_no_png_and_says_why(tmp_path: Path, monkeypatch):
    stale = tmp_path / "report.png"
    stale.write_bytes(b"\x89PNG an earlier bench's plot")
    _hide_matplotlib(monkeypatch)
    assert plot_unavailable() == NOTE
    paths = write_report(_report([_timed_row()]), tmp_path)
    assert sorted(paths) == ["csv", "json", "md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv", "report.json", "report.json.json", "report.md"]
    manifest = verify_file(tmp_path / "report.json")
    assert manifest.kind == "bench-report" and set(manifest.extra_files) == {"report.csv", "report.md"}
    assert read_report(tmp_path / "report.json")["rows"][0]["status"] == "ok"


def test_a_broken_matplotlib_is_named_too(monkeypatch):
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "matplotlib":
            raise ImportError("libfreetype.so.6: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    assert plot_unavailable() == (
        "report.png not written: matplotlib cannot be imported (libfreetype.so.6: cannot open shared object file): "
        "pip install --force-reinstall matplotlib"
    )


def test_with_matplotlib_the_png_is_written_even_when_nothing_was_timed(tmp_path: Path):
    assert plot_unavailable() is None
    rows = [{"artifact": "onnx-fp32", "device": "cpu", "status": "interrupted", "reason": "Ctrl-C"}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "No artists with labels" warning on stderr
        paths = write_report(_report(rows), tmp_path)
    assert sorted(paths) == ["csv", "json", "md", "png"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(read_manifest(paths["json"]).extra_files) == {"report.csv", "report.md", "report.png"}


def test_a_real_bench_without_matplotlib(pretrained_run: Path, tmp_path: Path):
    """`edge bench` as on a `.[cpu,opencv]` install: matplotlib hidden from the CLI and its workers by
    a sitecustomize on PYTHONPATH; everything is measured and written but the PNG."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None  # as if not installed\n")
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.png").write_bytes(b"\x89PNG an earlier bench's plot")
    env = dict(os.environ, **PIPELINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    argv = ["bench", str(pretrained_run), "--devices", "cpu", "--batch-sizes", "1", "--warmup-s", "0", "--min-iters", "2"]
    argv += ["--min-seconds", "0", "--single-stream", "0", "--no-end-to-end", "--threads", "1", "--timeout", "300"]
    proc = subprocess.run(
        [sys.executable, "-m", "edge", *argv, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    stdout = " ".join(proc.stdout.split())  # rich wraps long lines
    assert f"note: {NOTE}" in stdout and stdout.count("report.png not written") == 1
    assert f"report: {out / 'report.json'} (also report.csv, report.md)" in stdout
    assert "Traceback" not in proc.stderr and "matplotlib" not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["history", "report.csv", "report.json", "report.json.json", "report.md"]
    (kept,) = (out / "history").glob("*/report.png")  # the earlier bench's plot is kept, not deleted
    assert kept.read_bytes() == b"\x89PNG an earlier bench's plot"
    report = json.loads((out / "report.json").read_text())
    (row,) = report["rows"]
    assert row["status"] == "ok" and row["cells"][0]["compute"]["samples"] >= 2
    manifest = verify_file(out / "report.json")
    assert set(manifest.extra_files) == {"report.csv", "report.md"} and manifest.metrics["ok"] == 1
