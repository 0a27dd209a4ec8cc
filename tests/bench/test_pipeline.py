"""The project's own CI instance: train -> export -> calibrate -> quantize -> bench -> check on a
Fashion-MNIST subset at 32 px. The gate must pass on the real artifacts, resolve a 0.5 point budget,
and fail on a degraded INT8 (near the threshold too), a vanished row, a missing accuracy and an
artifact its quantizer did not accept.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.matrix import BenchPlan, artifact_job
from bench.worker import run_job
from edge.manifest import read_manifest, update_metrics
from edge.measure.paired import flips_from_counts, min_detectable_drop
from edge.measure.report import SCHEMA_VERSION, harness_fingerprint
from edge.measure.timing import TimingWindow

from .conftest import EVAL_COUNT, edge_cli

pytestmark = pytest.mark.slow


def _rows(report: dict) -> dict[str, dict]:
    return {f"{r['artifact']}@{r['device']}": r for r in report["rows"]}


def _check(report: dict, tmp_path: Path, *args: str) -> str:
    """`edge check` on a doctored copy of the real report: its output, after asserting exit 1."""
    doctored = tmp_path / "doctored.json"
    doctored.write_text(json.dumps(report))
    proc = edge_cli("check", str(doctored), *args, check=False)
    assert proc.returncode == 1, proc.stdout
    return proc.stdout


def test_gate_passes_on_the_real_pipeline(pipeline_report: Path, tmp_path: Path):
    junit = tmp_path / "gate.xml"
    proc = edge_cli("check", str(pipeline_report), "--max-drop", "0.5", "--max-latency-regression", "10", "--junit", str(junit))
    assert "gate passed" in proc.stdout
    assert 'failures="0"' in junit.read_text()
    assert "int8-cpu@cpu vs onnx-fp32" in junit.read_text()
    # the evaluation set resolves the budget, and the gate says with what margin
    mdd = min_detectable_drop(EVAL_COUNT, 0.5)
    assert mdd <= 1.0
    figure = f"minimum detectable drop {mdd:.2f} pts on {EVAL_COUNT} images at 95%: resolves the 0.5 pt budget"
    assert figure in junit.read_text()  # a passing testcase carries its figures
    assert "resolution int8-cpu@cpu" in proc.stdout  # and the table shows the check (its detail folded at 80 columns)


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


def test_gate_on_both_sides_of_the_threshold_on_the_real_report(pipeline_report: Path, tmp_path: Path):
    """INT8 = its float parent except on ``lost`` images the parent got right: at 1500 images, 13 lost
    (0.87 pt, lower bound 0.510 > 0.5) fails; 12 lost (0.80 pt, lower bound 0.447) passes."""
    report = json.loads(pipeline_report.read_text())
    labels = np.asarray(report["eval"]["labels"])
    parent = np.asarray(_rows(report)["onnx-fp32@cpu"]["accuracy"]["predictions"])
    right = np.flatnonzero(parent == labels)
    assert flips_from_counts(EVAL_COUNT, 13, 0, EVAL_COUNT - 13).drop_lower_points > 0.5
    assert flips_from_counts(EVAL_COUNT, 12, 0, EVAL_COUNT - 12).drop_lower_points < 0.5
    for lost, passes in ((12, True), (13, False)):
        int8 = parent.copy()
        int8[right[:lost]] = (labels[right[:lost]] + 1) % 10
        _rows(report)["int8-cpu@cpu"]["accuracy"]["predictions"] = int8.tolist()
        doctored = tmp_path / f"lost{lost}.json"
        doctored.write_text(json.dumps(report))
        proc = edge_cli("check", str(doctored), "--max-drop", "0.5", check=False)
        assert proc.returncode == (0 if passes else 1), proc.stdout
    assert "FAIL top-1 drop int8-cpu@cpu vs onnx-fp32: drop +0.87 pts (lower bound +0.510" in proc.stdout


def test_gate_fails_on_a_vanished_row_and_a_missing_accuracy(pipeline_report: Path, tmp_path: Path):
    report = json.loads(pipeline_report.read_text())
    report["rows"] = [r for r in report["rows"] if f"{r['artifact']}@{r['device']}" != "int8-cpu@cpu"]
    out = _check(report, tmp_path, "--baseline", str(pipeline_report))
    assert "FAIL missing int8-cpu@cpu: measured in the baseline, absent from this report" in out
    report = json.loads(pipeline_report.read_text())
    del _rows(report)["int8-cpu@cpu"]["accuracy"]
    out = _check(report, tmp_path)
    assert "FAIL accuracy int8-cpu@cpu: no top-1 against its float parent onnx-fp32" in out


def test_an_artifact_the_quantizer_did_not_accept_is_benched_as_rejected(pipeline_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(pipeline_run, run, ignore=shutil.ignore_patterns("bench"))
    update_metrics(run / "model.int8-cpu.onnx", {"accepted": False, "reason": "top-1 drop 1.20 points exceeds --max-drop 0.5"})
    edge_cli(
        "bench", str(run), "--artifacts", "onnx-fp32,int8-cpu", "--devices", "cpu", "--batch-sizes", "1",
        "--eval", "fashion-mnist", "--eval-count", "100", "--warmup-s", "0", "--min-iters", "2", "--min-seconds", "0",
        "--single-stream", "0", "--no-end-to-end", "--threads", "1",
    )  # fmt: skip
    report_path = run / "bench" / "report.json"
    row = _rows(json.loads(report_path.read_text()))["int8-cpu@cpu"]
    assert row["status"] == "rejected"
    assert row["reason"] == "edge quantize did not accept it: top-1 drop 1.20 points exceeds --max-drop 0.5"
    assert row["cells"][0]["status"] == "ok" and row["accuracy"]["count"] == 100  # measured all the same
    assert "rejected: edge quantize did not accept it" in (run / "bench" / "report.md").read_text()
    proc = edge_cli("check", str(report_path), "--allow-unmeasured", "--allow-small-eval", check=False)
    assert proc.returncode == 1
    assert [line for line in proc.stdout.splitlines() if line.startswith("FAIL")] == [
        f"FAIL accepted int8-cpu@cpu: rejected: {row['reason']}"
    ]


def test_the_worker_records_cells_outside_the_profile_as_skipped(pipeline_run: Path):
    plan = BenchPlan(pipeline_run, {}, ["cpu"], [1, 2, 4], TimingWindow(0.0, 2, 0.0, 1.0), threads=1, end_to_end=False)
    job = artifact_job(plan, "onnx-fp32", pipeline_run / "model.onnx", "cpu")
    job["cell_skips"] = [{"batch": 4, "reason": "engine built for batch 1..2"}]  # what an engine's manifest gives
    result = run_job(job)
    assert result["status"] == "ok", result.get("error")
    assert [(c["batch"], c["status"]) for c in result["cells"]] == [(1, "ok"), (2, "ok"), (4, "skipped")]
    assert result["cells"][2]["reason"] == "engine built for batch 1..2"


def test_report_rows_cells_and_accuracy(pipeline_report: Path):
    report = json.loads(pipeline_report.read_text())
    rows = _rows(report)
    names = ("torch-fp32", "onnx-fp32", "int8-cpu", "openvino-fp32", "openvino-int8")  # OpenVINO: in the default extras
    assert set(rows) == {f"{a}@{d}" for a in names for d in ("cpu", "cuda")}
    for name in names:
        assert rows[f"{name}@cuda"]["status"] == "skipped" and rows[f"{name}@cuda"]["reason"]
    assert rows["openvino-int8@cuda"]["reason"] == "OpenVINO runs on the CPU (and Intel GPU/NPU plugins), not on CUDA"
    for name in (f"{a}@cpu" for a in names):
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
    # OpenVINO runs the same files: FP32 is an exact conversion of model.onnx; the INT8 row says how
    # often OpenVINO's kernels agree with ONNX Runtime's on the same QDQ file
    assert rows["openvino-fp32@cpu"]["accuracy"]["vs_parent"]["agreement"] >= 99.5
    assert rows["openvino-fp32@cpu"]["runner"]["backend"] == "openvino"
    same_file = rows["openvino-int8@cpu"]["accuracy"]["vs_same_file"]
    assert same_file["artifact"] == "int8-cpu" and same_file["n"] == EVAL_COUNT and same_file["agreement"] >= 95.0
    # rounds: each cell's p50 has its interval, and INT8 its ratio to the float parent from the same rounds
    cell = rows["int8-cpu@cpu"]["cells"][0]
    rounds = report["settings"]["window"]["rounds"]
    assert rounds == 10  # the full profile's default
    assert len(cell["compute"]["rounds"]) == rounds
    assert cell["vs_parent_latency"]["parent"] == "onnx-fp32" and cell["vs_parent_latency"]["n"] == rounds


def test_report_files_and_manifest(pipeline_report: Path):
    bench_dir = pipeline_report.parent
    for ext in ("json", "md", "csv", "png"):
        assert (bench_dir / f"report.{ext}").stat().st_size > 0
    manifest = read_manifest(pipeline_report)
    assert manifest.kind == "bench-report"
    assert set(manifest.extra_files) == {"report.md", "report.csv", "report.png"}
    report = json.loads(pipeline_report.read_text())
    assert report["schema_version"] == SCHEMA_VERSION == 5 and report["environment"]["machine_fingerprint"]
    assert report["environment"]["harness"]["source_sha256"] == harness_fingerprint()["source_sha256"]
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
    junit = tmp_path / "gate.xml"
    proc = edge_cli(
        "check", str(pipeline_report), "--baseline", str(pipeline_report), "--max-latency-regression", "10", "--junit", str(junit)
    )
    cases = junit.read_text()
    assert 'name="p50 int8-cpu@cpu batch 1"' in cases and 'name="latency ratio int8-cpu/onnx-fp32@cpu batch 1"' in cases
    # the same rounds on both sides can never fail; one call per round is too few to judge (warnings)
    assert "gate passed" in proc.stdout and 'failures="0"' in cases
