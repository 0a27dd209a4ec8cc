"""`edge bench --scenario` through the real MLPerf LoadGen on the tiny pipeline run: every scenario
in --quick form with its report fields read back (JSON, CSV, Markdown, LoadGen's own logs),
accuracy mode equal to bench's own top-1 on the same images, and `edge check --baseline` /
`edge compare` reading the scenario rows."""

from __future__ import annotations

import csv
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.loadgen import NOT_AUDITED
from edge.cli import main

pytest.importorskip("mlperf_loadgen", reason="MLPerf LoadGen (the loadgen extra, in dev) runs the scenarios")

EVAL_COUNT = "200"


@pytest.fixture(scope="module")
def scenario_report(pipeline_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenarios") / "bench"
    code = main([
        "bench", str(pipeline_run), "--artifacts", "onnx-fp32", "--devices", "cpu", "--batch-sizes", "1,8",
        "--eval", "fashion-mnist", "--eval-count", EVAL_COUNT, "--warmup-s", "0.05", "--min-iters", "3",
        "--min-seconds", "0", "--rounds", "3", "--single-stream", "0", "--threads", "1", "--out", str(out),
        "--scenario", "single-stream,multi-stream", "--scenario", "offline", "--scenario", "server",
        "--quick", "--loadgen-mode", "both", "--latency-bound", "50",
    ])  # fmt: skip
    assert code == 0
    return out / "report.json"


def entries(report: dict, mode: str) -> dict[str, dict]:
    return {e["scenario"]: e for e in report["loadgen"]["entries"] if e["mode"] == mode}


def test_each_scenario_runs_through_loadgen_and_the_report_keeps_what_it_said(scenario_report: Path) -> None:
    report = json.loads(scenario_report.read_text())
    assert report["schema_version"] == 5 and report["loadgen"]["note"] == NOT_AUDITED
    perf = entries(report, "performance")
    assert sorted(perf) == ["multi-stream", "offline", "server", "single-stream"]
    for name, entry in perf.items():
        assert entry["status"] == "ok" and entry["validity"] in ("VALID", "INVALID"), entry
        assert (entry["validity"] == "VALID") == (entry["invalid_reasons"] == []), entry
        assert entry["effective"]["min_duration_ms"] == 300, "--quick shortens LoadGen's minimum duration"
        assert entry["loadgen_version"] and entry["qsl"]["performance_count"] == int(EVAL_COUNT)
        assert len(entry["rounds_ms"]) == 10 and min(entry["rounds_ms"]) > 0
        assert (
            Path(entry["logs"]["summary"]) == scenario_report.parent / "loadgen" / "onnx-fp32" / name / "mlperf_log_summary.txt"
        )
        summary = Path(entry["logs"]["summary"]).read_text()
        assert f"Result is : {entry['validity']}" in summary  # the figures are LoadGen's own
        assert Path(entry["logs"]["detail"]).read_text().startswith(":::MLLOG")
    single = perf["single-stream"]
    assert single["estimate_percentile"] == 90 and single["query_count"] >= 32
    if single["early_stopping_met"]:
        assert single["estimate_ms"] >= single["latency_ms"]["p50"] > 0
        assert (
            f"Early stopping 90.0th percentile estimate: {round(single['estimate_ms'] * 1e6)}"
            in Path(single["logs"]["summary"]).read_text()
        )
    multi = perf["multi-stream"]
    assert multi["estimate_percentile"] == 99 and multi["effective"]["samples_per_query"] == 8
    # a --quick MultiStream run is too short for early stopping at p99: LoadGen's own INVALID, kept
    assert multi["validity"] == "INVALID" and "early stopping not satisfied" in multi["invalid_reasons"]
    assert multi["early_stopping_met"] is False and multi["estimate_ms"] is None
    assert perf["offline"]["qps"] > 0 and perf["offline"]["max_batch"] in (1, 8)
    server = perf["server"]
    assert server["qps"] > 0 and server["effective"]["target_latency_ns"] == 50_000_000
    best = max(c["compute"]["items_per_s"] for c in report["rows"][0]["cells"])
    assert server["effective"]["target_qps"] == pytest.approx(best / 2, rel=1e-3)


def test_accuracy_mode_scores_loadgens_log_as_bench_does(scenario_report: Path) -> None:
    report = json.loads(scenario_report.read_text())
    own = report["rows"][0]["accuracy"]
    for name, entry in entries(report, "accuracy").items():
        scored = entry["accuracy"]
        assert scored["count"] == int(EVAL_COUNT) == own["count"], name
        assert scored["top1"] == pytest.approx(own["top1"], abs=1e-9) and scored["bench_top1"] == own["top1"], name
        assert scored["agreement_with_bench"] == 100.0, name
        assert Path(entry["logs"]["accuracy"]).parent.name == "accuracy"


def test_csv_and_markdown_carry_the_scenarios_with_the_note(scenario_report: Path) -> None:
    lines = list(csv.DictReader((scenario_report.parent / "report.csv").open()))
    scenario_lines = [line for line in lines if line["scenario"]]
    assert len(scenario_lines) == 8 and all(NOT_AUDITED in line["note"] for line in scenario_lines)
    multi = next(line for line in scenario_lines if line["scenario"] == "multi-stream" and line["loadgen_mode"] == "performance")
    assert multi["loadgen_result"] == "INVALID" and multi["early_stopping_met"] == "False" and multi["estimate_ms"] == ""
    md = (scenario_report.parent / "report.md").read_text()
    assert "## MLPerf LoadGen scenarios" in md and NOT_AUDITED in md
    assert "| onnx-fp32 | cpu | multi-stream | performance | INVALID | " in md


def test_check_and_compare_read_the_scenarios(scenario_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    junit = tmp_path / "gate.xml"
    args = ["check", str(scenario_report), "--baseline", str(scenario_report), "--allow-small-eval", "--allow-unmeasured"]
    assert main([*args, "--junit", str(junit)]) == 0
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    for name in ("single-stream p90", "multi-stream p99", "offline ms/sample", "server p99"):
        case = cases[f"LoadGen {name} onnx-fp32@cpu"]  # judged by the interval rule of every latency
        text = " ".join(e.text or "" for e in case.iter() if e is not case)
        assert "new/old 1.000 [" in text and "over 10+10 rounds" in text, text
    assert main(["compare", str(scenario_report), "--out", str(tmp_path / "compare")]) == 0
    assert "MLPerf LoadGen scenarios" in capsys.readouterr().out
    md = (tmp_path / "compare" / "compare.md").read_text()
    assert NOT_AUDITED in md and "| multi-stream | performance | INVALID |" in md


def test_a_missing_or_failed_scenario_fails_the_gate(scenario_report: Path) -> None:
    from bench.gate import check_baseline_coverage, check_scenario_runs

    report = json.loads(scenario_report.read_text())
    baseline = json.loads(scenario_report.read_text())
    report["loadgen"]["entries"] = [e for e in report["loadgen"]["entries"] if e["scenario"] != "offline"]
    report["loadgen"]["entries"][0] = {**report["loadgen"]["entries"][0], "status": "error", "error": "worker crashed"}
    missing = [c for c in check_baseline_coverage(report, baseline) if c.status == "fail"]
    assert {c.name for c in missing} >= {
        "missing LoadGen offline (performance) onnx-fp32@cpu",
        "missing LoadGen offline (accuracy) onnx-fp32@cpu",
    }
    (failed,) = check_scenario_runs(report)
    assert failed.status == "fail" and failed.detail == "worker crashed"


def test_without_loadgen_one_line_names_the_install(
    pipeline_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # import fails as where it is not installed
    assert main(["bench", str(pipeline_run), "--scenario", "offline", "--eval", "fashion-mnist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mlcommons-loadgen" in err and ".[loadgen]" in err, err


def test_scenario_flags_are_checked_before_any_work(pipeline_run: Path, capsys: pytest.CaptureFixture) -> None:
    for args, message in (
        (["--scenario", "offline,bogus"], "--scenario 'bogus'"),
        (["--scenario", "offline"], "--scenario needs --eval DATA"),
        (["--quick"], "--quick belongs to a LoadGen run"),
        (
            ["--scenario", "offline", "--eval", "fashion-mnist", "--url", "http://127.0.0.1:9"],
            "--url measures a live endpoint in the Server scenario only",
        ),
    ):
        assert main(["bench", str(pipeline_run), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
