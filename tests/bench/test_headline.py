"""The headline says how sure it is (issue 24): noisy cells marked in every table, an absent device
as one line, and a float parent left out of the bench as a skip in the gate, not a failure."""

from __future__ import annotations

import copy

from bench.gate import evaluate_gate
from bench.report import csv_rows, headline, render_markdown, row_note
from tests.bench.test_gate import _row, make_report

# torch-fp32's five batch-1 rounds in a `make demo` bench while another process held half the CPUs
DISAGREEING = [1516.0, 91.44, 21.0, 27.0, 1588.0]


def _noisy_report() -> dict:
    report = make_report()
    cell = _row(report, "torch-fp32@cpu")["cells"][0]
    for r, p50 in zip(cell["compute"]["rounds"], DISAGREEING):
        r["p50_ms"] = p50
    cell["compute"].update(p50_ms=91.44, p50_ci_ms=[21.0, 1588.0], ci_level=0.9375, spread_pct=1714.0)
    report["settings"]["window"] = {"rounds": 5, "warmup_s": 1.0, "min_iters": 50, "min_seconds": 2.0}
    return report


def _line(report: dict, artifact: str) -> list[str]:
    _, lines = headline(report)
    return next(line for line in lines if line[0] == artifact and line[1] == "cpu")


def test_a_cell_whose_rounds_disagree_is_marked_in_the_table_the_markdown_and_the_csv():
    report = _noisy_report()
    line = _line(report, "torch-fp32")
    assert line[5] == "~91.44"  # p50 at batch 1, marked
    assert not line[6].startswith("~")  # batch 8 rounds agree
    assert _line(report, "onnx-fp32")[5] == "10.00"  # a steady cell is a plain number
    note = row_note(_row(report, "torch-fp32@cpu"))
    assert note.startswith(
        "~ noisy p50 at batch 1: rounds disagree: p50 interval 21-1588 ms at 93.8% spans 1714% of the p50 (round p50s 1516, 91.44, 21, 27, 1588 ms)"
    )
    markdown = render_markdown(report)
    assert "| ~91.44 |" in markdown and "`~` before a p50: its rounds disagree" in markdown
    noisy = {(x["artifact"], x["batch"]): x["noisy"] for x in csv_rows(report) if x["device"] == "cpu"}
    assert noisy[("torch-fp32", 1)].startswith("rounds disagree") and noisy[("torch-fp32", 8)] is None
    assert noisy[("onnx-fp32", 1)] is None


def test_a_cell_timed_while_other_processes_held_the_cpus_is_marked():
    report = make_report()
    for r in _row(report, "int8-cpu@cpu")["cells"][0]["compute"]["rounds"]:
        r["others_cpu"] = 0.48
    assert _line(report, "int8-cpu")[5] == "~5.00"
    assert "other processes held 48% of the CPUs while it ran" in row_note(_row(report, "int8-cpu@cpu"))


def test_an_absent_device_is_one_line():
    report = make_report()
    for name in ("torch-fp32", "onnx-fp32"):
        report["rows"].append({"artifact": name, "device": "cuda", "status": "skipped", "reason": "no CUDA device", "cells": []})
    _, lines = headline(report)
    cuda = [line for line in lines if line[1] == "cuda"]
    assert cuda == [["all 3 artifacts", "cuda", *["n/a"] * (len(lines[0]) - 3), "skipped: no CUDA device"]]
    assert len(lines) == 4  # three cpu rows and the one cuda line
    assert len([x for x in csv_rows(report) if x["device"] == "cuda"]) == 3  # the data keeps every row
    report["rows"].append(
        {"artifact": "openvino-fp32", "device": "cuda", "status": "skipped", "reason": "OpenVINO runs on the CPU"}
    )
    _, lines = headline(report)
    (cuda,) = [line for line in lines if line[1] == "cuda"]  # different reasons: still one line, each reason once
    assert cuda[0] == "all 4 artifacts" and cuda[-1] == "skipped: no CUDA device; OpenVINO runs on the CPU"


def test_a_device_with_one_skipped_row_among_measured_ones_keeps_its_rows():
    report = make_report()  # int8-cpu@cuda is its only cuda row: nothing to fold
    report["rows"].append(copy.deepcopy(_row(report, "onnx-fp32@cpu")) | {"device": "cuda"})
    _, lines = headline(report)
    assert sorted(line[0] for line in lines if line[1] == "cuda") == ["int8-cpu", "onnx-fp32"]


def test_a_float_parent_left_out_of_the_bench_is_a_skip_not_a_failure():
    report = make_report()
    report["rows"] = [r for r in report["rows"] if r["artifact"] != "torch-fp32"]
    _row(report, "onnx-fp32@cpu")["accuracy"]["vs_parent"] = {
        "parent": "torch-fp32",
        "error": "no torch-fp32 row with accuracy in this report",
    }
    report["settings"]["artifacts"] = ["onnx-fp32", "int8-cpu"]
    checks = {c.name: c for c in evaluate_gate(report, None, 0.5, 10.0)}
    skipped = checks["accuracy onnx-fp32@cpu"]
    assert skipped.status == "skip"
    assert skipped.detail == (
        "its float parent torch-fp32 was not selected for this bench (--artifacts onnx-fp32,int8-cpu): "
        "add torch-fp32 to --artifacts to measure the drop"
    )
    assert checks["top-1 drop int8-cpu@cpu vs onnx-fp32"].status == "pass"  # its parent was selected
    report["settings"]["artifacts"] = ["torch-fp32", "onnx-fp32", "int8-cpu"]  # selected, yet unmeasured: a failure
    assert {c.name: c for c in evaluate_gate(report, None, 0.5, 10.0)}["accuracy onnx-fp32@cpu"].status == "fail"
