"""The project's own CI instance: train -> export -> calibrate -> quantize -> bench -> check on a
Fashion-MNIST subset at 32 px. The gate must pass on the real artifacts and fail on a degraded INT8.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edge.artifacts import read_manifest

from .conftest import EVAL_COUNT, edge_cli

pytestmark = pytest.mark.slow


def _rows(report: dict) -> dict[str, dict]:
    return {f"{r['artifact']}@{r['device']}": r for r in report["rows"]}


def test_gate_passes_on_the_real_pipeline(pipeline_report: Path, tmp_path: Path):
    junit = tmp_path / "gate.xml"
    proc = edge_cli("check", str(pipeline_report), "--max-drop", "0.5", "--max-latency-regression", "10", "--junit", str(junit))
    assert "gate passed" in proc.stdout
    assert 'failures="0"' in junit.read_text()
    assert "int8-cpu@cpu vs onnx-fp32" in junit.read_text()


def test_gate_fails_when_int8_is_degraded(pipeline_report: Path, tmp_path: Path):
    report = json.loads(pipeline_report.read_text())
    labels = np.asarray(report["eval"]["labels"])
    parent = np.asarray(_rows(report)["onnx-fp32@cpu"]["accuracy"]["predictions"])
    assert np.mean(parent == labels) > 0.15, "the float model must be above chance for this test to mean anything"
    # The INT8 model now misses every image the float model got right.
    int8 = _rows(report)["int8-cpu@cpu"]["accuracy"]
    int8["predictions"] = np.where(parent == labels, (labels + 1) % 10, parent).tolist()
    doctored = tmp_path / "degraded.json"
    doctored.write_text(json.dumps(report))
    proc = edge_cli("check", str(doctored), "--junit", str(tmp_path / "gate.xml"), check=False)
    assert proc.returncode == 1, proc.stdout
    assert "gate FAILED" in proc.stdout
    assert "<failure" in (tmp_path / "gate.xml").read_text()


def test_report_rows_cells_and_accuracy(pipeline_report: Path):
    report = json.loads(pipeline_report.read_text())
    rows = _rows(report)
    assert set(rows) == {f"{a}@{d}" for a in ("torch-fp32", "onnx-fp32", "int8-cpu") for d in ("cpu", "cuda")}
    for device_row in ("torch-fp32@cuda", "onnx-fp32@cuda", "int8-cpu@cuda"):
        assert rows[device_row]["status"] == "skipped" and rows[device_row]["reason"]
    for name in ("torch-fp32@cpu", "onnx-fp32@cpu", "int8-cpu@cpu"):
        row = rows[name]
        assert row["status"] == "ok", row.get("error")
        assert row["threads"] == 1
        assert row["peak_rss_mib"] > 50
        assert [c["batch"] for c in row["cells"]] == [1, 8]
        for cell in row["cells"]:
            assert cell["compute"]["samples"] >= 3
            assert cell["compute"]["p50_ms"] <= cell["compute"]["p99_ms"]
            assert cell["end_to_end"]["samples"] >= 3
            assert cell["energy_j_per_image"] is None  # no power source on this machine
        assert row["single_stream"]["samples"] == 20
        assert row["accuracy"]["count"] == EVAL_COUNT and len(row["accuracy"]["predictions"]) == EVAL_COUNT
    vs = rows["int8-cpu@cpu"]["accuracy"]["vs_parent"]
    assert vs["parent"] == "onnx-fp32"
    flips = vs["flips"]
    assert vs["drop_points"] == pytest.approx((flips["lost"] - flips["gained"]) / EVAL_COUNT * 100)
    assert rows["int8-cpu@cpu"]["manifest_metrics"]["top1"] is not None  # the quantizer's own figures, shown too
    # ONNX Runtime reproduces torch on the same images: the export's agreement is near-total
    assert rows["onnx-fp32@cpu"]["accuracy"]["vs_parent"]["agreement"] >= 98.0


def test_report_files_and_manifest(pipeline_report: Path):
    bench_dir = pipeline_report.parent
    for ext in ("json", "md", "csv", "png"):
        assert (bench_dir / f"report.{ext}").stat().st_size > 0
    manifest = read_manifest(pipeline_report)
    assert manifest.kind == "bench-report"
    assert set(manifest.extra_files) == {"report.md", "report.csv", "report.png"}
    report = json.loads(pipeline_report.read_text())
    assert report["schema_version"] == 1 and report["environment"]["machine_fingerprint"]
    with open(bench_dir / "report.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert {(line["artifact"], line["batch"]) for line in lines if line["status"] == "ok"} >= {
        ("int8-cpu", "1"),
        ("int8-cpu", "8"),
    }
    assert (bench_dir / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (bench_dir / "report.md").read_text()
    assert "| artifact | device | top-1 % |" in markdown and "skipped: " in markdown


def test_bench_against_a_baseline_from_the_same_machine(pipeline_report: Path, tmp_path: Path):
    proc = edge_cli("check", str(pipeline_report), "--baseline", str(pipeline_report), "--max-latency-regression", "10")
    assert "p50 int8-cpu@cpu batch 1" in proc.stdout and "INT8/FP32 ratio" in proc.stdout
