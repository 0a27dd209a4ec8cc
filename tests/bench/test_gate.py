"""The CI gate on synthetic reports: accuracy from paired flips, latency by fingerprint, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.gate import evaluate_gate
from bench.matrix import attach_parent_comparison
from bench.report import SCHEMA, SCHEMA_VERSION
from edge.cli import main

N = 2000


def _cell(batch: int, p50: float) -> dict:
    return {"batch": batch, "status": "ok", "compute": {"p50_ms": p50, "items_per_s": batch / p50 * 1000.0}}


def make_report(
    int8_wrong: int = 0, machine: str = "m1", fp32_ms: float = 10.0, int8_ms: float = 5.0, eval_fp: str = "e1"
) -> dict:
    """A report with onnx-fp32 (90% right) and int8-cpu, which loses ``int8_wrong`` of the fp32 hits."""
    labels = np.arange(N) % 10
    fp32 = labels.copy()
    fp32[: N // 10] = (labels[: N // 10] + 1) % 10
    int8 = fp32.copy()
    int8[N // 10 : N // 10 + int8_wrong] = (labels[N // 10 : N // 10 + int8_wrong] + 3) % 10
    rows = []
    for name, preds, ms in (("onnx-fp32", fp32, fp32_ms), ("int8-cpu", int8, int8_ms)):
        rows.append(
            {
                "artifact": name,
                "device": "cpu",
                "status": "ok",
                "simulated": False,
                "cells": [_cell(1, ms), _cell(8, ms * 6)],
                "accuracy": {"count": N, "top1": float(np.mean(preds == labels) * 100), "predictions": preds.tolist()},
            }
        )
    rows.append({"artifact": "int8-cpu", "device": "cuda", "status": "skipped", "reason": "no CUDA device", "cells": []})
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "settings": {"batch_sizes": [1, 8]},
        "environment": {"machine_fingerprint": machine},
        "eval": {"data": "synthetic", "count": N, "fingerprint": eval_fp, "labels": labels.tolist()},
        "rows": rows,
    }
    attach_parent_comparison(rows, labels.tolist(), 0.5)
    return report


def _write(tmp_path: Path, name: str, report: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


def _status(checks, prefix: str) -> list[str]:
    return [c.status for c in checks if c.name.startswith(prefix)]


def test_identical_int8_passes_and_degraded_int8_fails():
    good = evaluate_gate(make_report(int8_wrong=0), None, 0.5, 10.0)
    assert _status(good, "top-1 drop int8-cpu@cpu") == ["pass"]
    bad = evaluate_gate(make_report(int8_wrong=100), None, 0.5, 10.0)  # 5 points lost
    (check,) = [c for c in bad if c.name.startswith("top-1 drop int8-cpu@cpu")]
    assert check.status == "fail"
    assert "exceeds the 0.5 pt budget" in check.detail


def test_noise_sized_drop_does_not_fail_the_gate():
    # 12 lost of 2000 is a 0.6 pt point estimate, but not significantly above 0.5: no flaky failure.
    checks = evaluate_gate(make_report(int8_wrong=12), None, 0.5, 10.0)
    assert _status(checks, "top-1 drop int8-cpu@cpu") == ["pass"]


def test_small_eval_set_is_reported_too_small():
    report = make_report(int8_wrong=0)
    keep = 100
    report["eval"]["labels"] = report["eval"]["labels"][:keep]
    for row in report["rows"]:
        if row.get("accuracy"):
            row["accuracy"]["predictions"] = row["accuracy"]["predictions"][:keep]
    (check,) = [c for c in evaluate_gate(report, None, 0.5, 10.0) if c.name.startswith("top-1 drop int8-cpu@cpu")]
    assert check.status == "warn"
    assert "too small" in check.detail


def test_error_row_fails_and_skipped_row_does_not():
    report = make_report()
    report["rows"].append({"artifact": "int8-trt", "device": "cpu", "status": "error", "error": "worker exited with code -11"})
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _status(checks, "run int8-trt@cpu") == ["fail"]
    assert _status(checks, "run int8-cpu@cuda") == ["skip"]


def test_latency_regression_on_same_machine_fails():
    checks = evaluate_gate(make_report(fp32_ms=12.0, int8_ms=6.0), make_report(), 0.5, 10.0)
    assert _status(checks, "p50 onnx-fp32@cpu batch 1") == ["fail"]
    assert _status(checks, "INT8/FP32 ratio int8-cpu@cpu batch 1") == ["pass"]  # both 20% slower: ratio kept


def test_other_machine_compares_only_ratios():
    slower_machine = make_report(machine="m2", fp32_ms=30.0, int8_ms=15.0)
    checks = evaluate_gate(slower_machine, make_report(), 0.5, 10.0)
    assert _status(checks, "p50 ") == []
    assert _status(checks, "absolute latency vs baseline") == ["skip"]
    assert _status(checks, "INT8/FP32 ratio int8-cpu@cpu batch 1") == ["pass"]
    int8_lost_its_speedup = make_report(machine="m2", fp32_ms=30.0, int8_ms=30.0)
    checks = evaluate_gate(int8_lost_its_speedup, make_report(), 0.5, 10.0)
    assert _status(checks, "INT8/FP32 ratio int8-cpu@cpu batch 1") == ["fail"]


def test_baseline_accuracy_is_paired_on_the_same_eval_set_only():
    checks = evaluate_gate(make_report(int8_wrong=100), make_report(), 0.5, 10.0)
    assert _status(checks, "top-1 int8-cpu@cpu vs baseline") == ["fail"]
    checks = evaluate_gate(make_report(int8_wrong=100), make_report(eval_fp="other"), 0.5, 10.0)
    assert _status(checks, "top-1 vs baseline") == ["skip"]


def test_cli_exit_codes_and_junit(tmp_path, capsys):
    good = _write(tmp_path, "good.json", make_report())
    bad = _write(tmp_path, "bad.json", make_report(int8_wrong=100))
    junit = tmp_path / "gate.xml"
    assert main(["check", str(good), "--junit", str(junit)]) == 0
    assert 'failures="0"' in junit.read_text()
    assert main(["check", str(bad), "--baseline", str(good), "--junit", str(junit)]) == 1
    xml = junit.read_text()
    assert "<failure" in xml and "int8-cpu@cpu" in xml
    assert "gate FAILED" in capsys.readouterr().out


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    not_report = _write(tmp_path, "x.json", {"hello": 1})
    assert main(["check", str(not_report)]) == 2
    assert "not an edge bench report" in capsys.readouterr().err
    good = _write(tmp_path, "good.json", make_report())
    assert main(["check", str(good), "--max-drop", "-1"]) == 2
    assert "--max-drop" in capsys.readouterr().err


def test_report_without_accuracy_warns_instead_of_passing_silently():
    report = make_report()
    report["eval"] = None
    for row in report["rows"]:
        row.pop("accuracy", None)
    (check,) = [c for c in evaluate_gate(report, None, 0.5, 10.0) if c.name.startswith("top-1")]
    assert check.status == "warn" and "without --eval" in check.detail
