"""The CI gate on synthetic reports: accuracy from paired flips, resolution of the budget, coverage
against a baseline, latency by fingerprint, rejected rows, malformed reports, exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from bench.gate import evaluate_gate
from bench.matrix import attach_parent_comparison
from edge.cli import main
from edge.measure.report import SCHEMA, SCHEMA_VERSION

N = 2000
HARNESS = {"version": "0.1.0", "source_sha256": "a" * 64}  # the same harness code in every synthetic report


JITTER = (1.0, 1.02, 0.98, 1.01, 0.99)  # five timing rounds, within 2% of each other


def _cell(batch: int, p50: float) -> dict:
    rounds = [{"p50_ms": p50 * j, "samples": 10, "wall_s": 0.1, "probe_ms": 0.25} for j in JITTER]
    return {"batch": batch, "status": "ok", "compute": {"p50_ms": p50, "items_per_s": batch / p50 * 1000.0, "rounds": rounds}}


def make_report(
    lost: int = 0,
    gained: int = 0,
    n: int = N,
    machine: str | None = "m1",
    fp32_ms: float = 10.0,
    int8_ms: float = 5.0,
    eval_fp: str = "e1",
) -> dict:
    """torch-fp32 and onnx-fp32 (90% right, the same predictions) and int8-cpu, which loses ``lost``
    of the float model's hits and gains ``gained`` of its misses; int8-cpu@cuda is skipped."""
    labels = np.arange(n) % 10
    fp32 = labels.copy()
    fp32[: n // 10] = (labels[: n // 10] + 1) % 10
    int8 = fp32.copy()
    int8[n // 10 : n // 10 + lost] = (labels[n // 10 : n // 10 + lost] + 3) % 10
    int8[:gained] = labels[:gained]
    rows = []
    for name, preds, ms in (("torch-fp32", fp32, fp32_ms * 3), ("onnx-fp32", fp32, fp32_ms), ("int8-cpu", int8, int8_ms)):
        rows.append(
            {
                "artifact": name,
                "device": "cpu",
                "status": "ok",
                "simulated": False,
                "cells": [_cell(1, ms), _cell(8, ms * 6)],
                "accuracy": {"count": n, "top1": float(np.mean(preds == labels) * 100), "predictions": preds.tolist()},
            }
        )
    rows.append({"artifact": "int8-cpu", "device": "cuda", "status": "skipped", "reason": "no CUDA device", "cells": []})
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "settings": {"batch_sizes": [1, 8]},
        "environment": {"machine_fingerprint": machine, "harness": dict(HARNESS)},
        "eval": {"data": "synthetic", "count": n, "fingerprint": eval_fp, "labels": labels.tolist()},
        "rows": rows,
    }
    attach_parent_comparison(rows, labels.tolist(), 0.5)
    return report


def _row(report: dict, key: str) -> dict:
    return next(r for r in report["rows"] if f"{r['artifact']}@{r['device']}" == key)


def _write(tmp_path: Path, name: str, report: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return path


def _status(checks, prefix: str) -> list[str]:
    return [c.status for c in checks if c.name.startswith(prefix)]


def _failed(checks) -> list[str]:
    return [c.name for c in checks if c.status == "fail"]


def _one(checks, prefix: str):
    (check,) = [c for c in checks if c.name.startswith(prefix)]
    return check


# ---- accuracy against the float parent ---------------------------------------------------------


def test_identical_int8_passes_and_degraded_int8_fails():
    good = evaluate_gate(make_report(), None, 0.5, 10.0)
    assert _failed(good) == []
    assert _status(good, "top-1 drop int8-cpu@cpu") == ["pass"]
    bad = evaluate_gate(make_report(lost=100), None, 0.5, 10.0)  # 5 points lost
    check = _one(bad, "top-1 drop int8-cpu@cpu")
    assert check.status == "fail"
    assert "significantly above the 0.5 pt budget" in check.detail


def test_drop_on_both_sides_of_the_threshold():
    # 2000 images, 10 gained: lost 32 is a 1.10 pt drop with a 95% lower bound of 0.545 > 0.5: fails;
    # lost 31 is 1.05 pts with a lower bound of 0.498: not significantly above the budget, passes.
    above = _one(evaluate_gate(make_report(lost=32, gained=10), None, 0.5, 10.0), "top-1 drop int8-cpu@cpu")
    assert above.status == "fail"
    assert "drop +1.10 pts (lower bound +0.545," in above.detail
    below = _one(evaluate_gate(make_report(lost=31, gained=10), None, 0.5, 10.0), "top-1 drop int8-cpu@cpu")
    assert below.status == "pass"
    assert "drop +1.05 pts (lower bound +0.498," in below.detail


def test_a_drop_a_little_above_the_budget_fails_with_enough_images():
    # 20000 images: 120 lost is a 0.60 pt drop, lower bound 0.570 > 0.5: fails.
    # 90 lost is 0.45 pt, a little below the budget (lower bound 0.421): passes.
    checks = evaluate_gate(make_report(lost=120, n=20000), None, 0.5, 10.0)
    assert _one(checks, "top-1 drop int8-cpu@cpu").status == "fail"
    assert "drop +0.60 pts (lower bound +0.570," in _one(checks, "top-1 drop int8-cpu@cpu").detail
    checks = evaluate_gate(make_report(lost=90, n=20000), None, 0.5, 10.0)
    assert _failed(checks) == []
    assert "drop +0.45 pts (lower bound +0.421," in _one(checks, "top-1 drop int8-cpu@cpu").detail


def test_noise_sized_drop_does_not_fail_the_gate():
    # 12 lost of 2000 is a 0.6 pt point estimate, but not significantly above 0.5: no flaky failure.
    checks = evaluate_gate(make_report(lost=12), None, 0.5, 10.0)
    assert _failed(checks) == []


def test_confidence_is_the_gates_own_even_for_stored_counts():
    # Without the parent's predictions the flips come from the stored counts, at --confidence.
    report = make_report(lost=32, gained=10)
    _row(report, "onnx-fp32@cpu")["accuracy"]["predictions"] = None
    at_95 = _one(evaluate_gate(report, None, 0.5, 10.0), "top-1 drop int8-cpu@cpu")
    at_99 = _one(evaluate_gate(report, None, 0.5, 10.0, confidence=0.99), "top-1 drop int8-cpu@cpu")
    assert (at_95.status, at_99.status) == ("fail", "pass")
    assert "at 99%" in at_99.detail


# ---- resolution: can the evaluation set fail the budget at all ----------------------------------


def _truncated(n: int) -> dict:
    report = make_report()
    report["eval"]["labels"] = report["eval"]["labels"][:n]
    for row in report["rows"]:
        if row.get("accuracy"):
            row["accuracy"]["predictions"] = row["accuracy"]["predictions"][:n]
    attach_parent_comparison(report["rows"], report["eval"]["labels"], 0.5)
    return report


def test_every_artifact_reports_its_minimum_detectable_drop():
    checks = evaluate_gate(make_report(), None, 0.5, 10.0)
    # 2000 images: 16 lost of 16 flips is the smallest failing count, 0.80 pts
    for key in ("onnx-fp32@cpu", "int8-cpu@cpu"):
        check = _one(checks, f"resolution {key}")
        assert check.status == "pass"
        assert "minimum detectable drop 0.80 pts on 2000 images at 95%" in check.detail


def test_a_set_that_cannot_resolve_the_budget_fails_unless_allowed():
    # 200 images (the old CI instance): only a 3.00 pt drop can fail a 0.5 pt budget
    checks = evaluate_gate(_truncated(200), None, 0.5, 10.0)
    check = _one(checks, "resolution int8-cpu@cpu")
    assert check.status == "fail"
    assert "minimum detectable drop 3.00 pts on 200 images" in check.detail
    assert "needs <= 2x = 1.00 pts: at least 1100 images" in check.detail
    assert "--allow-small-eval" in check.detail
    allowed = evaluate_gate(_truncated(200), None, 0.5, 10.0, allow_small_eval=True)
    assert _failed(allowed) == []
    assert _one(allowed, "resolution int8-cpu@cpu").status == "warn"


def test_resolution_on_both_sides_of_the_margin():
    # 1100 images: minimum detectable drop 1.00 pt = 2 x 0.5: resolves; 1099 images: 1.0009: does not
    assert _one(evaluate_gate(_truncated(1100), None, 0.5, 10.0), "resolution int8-cpu@cpu").status == "pass"
    check = _one(evaluate_gate(_truncated(1099), None, 0.5, 10.0), "resolution int8-cpu@cpu")
    assert check.status == "fail" and "1.00 pts on 1099 images" in check.detail


def test_a_zero_budget_is_never_resolved():
    check = _one(evaluate_gate(make_report(), None, 0.0, 10.0), "resolution int8-cpu@cpu")
    assert check.status == "fail" and "a 0 pt budget is never resolved" in check.detail


# ---- what was measured -------------------------------------------------------------------------


def test_missing_accuracy_fails_unless_allowed():
    report = make_report()
    _row(report, "int8-cpu@cpu").pop("accuracy")
    check = _one(evaluate_gate(report, None, 0.5, 10.0), "accuracy int8-cpu@cpu")
    assert check.status == "fail"
    assert "no top-1 against its float parent onnx-fp32" in check.detail
    allowed = evaluate_gate(report, None, 0.5, 10.0, allow_unmeasured=True)
    assert _failed(allowed) == [] and _one(allowed, "accuracy int8-cpu@cpu").status == "warn"


def test_missing_comparison_fails():
    report = make_report()
    del _row(report, "int8-cpu@cpu")["accuracy"]["vs_parent"]
    assert _failed(evaluate_gate(report, None, 0.5, 10.0)) == ["accuracy int8-cpu@cpu"]


def test_report_without_eval_fails_every_artifact_with_a_float_parent():
    report = make_report()
    report["eval"] = None
    for row in report["rows"]:
        row.pop("accuracy", None)
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _failed(checks) == ["accuracy onnx-fp32@cpu", "accuracy int8-cpu@cpu"]  # torch-fp32 has no parent
    assert "bench ran without --eval" in _one(checks, "accuracy int8-cpu@cpu").detail
    assert _failed(evaluate_gate(report, None, 0.5, 10.0, allow_unmeasured=True)) == []


def test_parent_row_absent_fails_as_unmeasured():
    report = make_report()
    report["rows"] = [r for r in report["rows"] if r["artifact"] != "torch-fp32"]
    attach_parent_comparison(report["rows"], report["eval"]["labels"], 0.5)
    check = _one(evaluate_gate(report, None, 0.5, 10.0), "accuracy onnx-fp32@cpu")
    assert check.status == "fail" and "no torch-fp32 row with accuracy" in check.detail


def test_empty_and_all_skipped_reports_fail():
    report = make_report()
    report["rows"] = []
    check = _one(evaluate_gate(report, None, 0.5, 10.0), "anything measured")
    assert check.status == "fail" and "no rows" in check.detail
    report = make_report()
    report["rows"] = [
        {"artifact": r["artifact"], "device": "cuda", "status": "skipped", "reason": "no CUDA"} for r in report["rows"]
    ]
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _failed(checks) == ["anything measured"]
    assert "nothing was measured (4 rows: 4 skipped)" in _one(checks, "anything measured").detail


def test_error_row_and_cell_fail_and_skipped_ones_do_not():
    report = make_report()
    report["rows"].append({"artifact": "int8-trt", "device": "cpu", "status": "error", "error": "worker exited with code -11"})
    _row(report, "onnx-fp32@cpu")["cells"][1] = {"batch": 8, "status": "error", "error": "out of memory"}
    _row(report, "int8-cpu@cpu")["cells"].append({"batch": 64, "status": "skipped", "reason": "engine built for batch 1..32"})
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _failed(checks) == ["run onnx-fp32@cpu batch 8", "run int8-trt@cpu"]
    assert _status(checks, "run int8-cpu@cuda") == ["skip"]
    assert _one(checks, "run int8-cpu@cpu batch 64").detail == "engine built for batch 1..32"


def test_rejected_row_fails_with_its_reason():
    report = make_report()
    reason = "edge quantize did not accept it (manifest accepted: false): top-1 drop 1.20 pts on 2000 test images"
    _row(report, "int8-cpu@cpu").update(status="rejected", reason=reason)
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _failed(checks) == ["accepted int8-cpu@cpu"]
    assert _one(checks, "accepted int8-cpu@cpu").detail == f"rejected: {reason}"
    assert _one(checks, "top-1 drop int8-cpu@cpu").status == "pass"  # still measured and compared


# ---- against a baseline ------------------------------------------------------------------------


def test_vanished_row_fails():
    new = make_report()
    new["rows"] = [r for r in new["rows"] if f"{r['artifact']}@{r['device']}" != "int8-cpu@cpu"]
    checks = evaluate_gate(new, make_report(), 0.5, 10.0)
    assert _failed(checks) == ["missing int8-cpu@cpu"]
    assert _one(checks, "missing int8-cpu@cpu").detail == "measured in the baseline, absent from this report"


def test_vanished_cell_fails_but_a_skipped_one_is_not_missing():
    new = make_report()
    _row(new, "int8-cpu@cpu")["cells"].pop()  # batch 8 gone
    assert _failed(evaluate_gate(new, make_report(), 0.5, 10.0)) == ["missing int8-cpu@cpu batch 8"]
    new = make_report()
    _row(new, "int8-cpu@cpu")["cells"][1] = {"batch": 8, "status": "skipped", "reason": "engine built for batch 1..4"}
    checks = evaluate_gate(new, make_report(), 0.5, 10.0)
    assert _failed(checks) == []
    assert _one(checks, "run int8-cpu@cpu batch 8").status == "skip"
    assert _one(checks, "baseline coverage").status == "pass"


def test_row_skipped_now_fails_on_the_same_machine_only():
    new = make_report()
    _row(new, "onnx-fp32@cpu").update(status="skipped", reason="onnxruntime is not installed", cells=[])
    _row(new, "onnx-fp32@cpu").pop("accuracy")
    checks = evaluate_gate(new, make_report(), 0.5, 10.0, allow_unmeasured=True)
    assert "missing onnx-fp32@cpu" in _failed(checks)
    new["environment"]["machine_fingerprint"] = "m2"
    checks = evaluate_gate(new, make_report(), 0.5, 10.0, allow_unmeasured=True)
    assert _status(checks, "missing onnx-fp32@cpu") == ["skip"]


def test_rows_not_measured_in_the_baseline_are_not_required():
    base = make_report()
    _row(base, "int8-cpu@cpu").update(status="error", error="crashed", cells=[])
    new = make_report()
    new["rows"] = [r for r in new["rows"] if r["artifact"] != "int8-cpu"]
    checks = evaluate_gate(new, base, 0.5, 10.0)
    assert [c for c in _failed(checks) if c.startswith("missing")] == []


def test_latency_regression_on_same_machine_fails():
    checks = evaluate_gate(make_report(int8_ms=6.0), make_report(), 0.5, 10.0)  # int8 alone 20% slower
    assert _status(checks, "p50 int8-cpu@cpu batch 1") == ["fail"]
    assert _status(checks, "p50 onnx-fp32@cpu batch 1") == ["pass"]
    # every artifact 20% slower in the same rounds: the machine, not a model (a warning); the ratio is kept
    checks = evaluate_gate(make_report(fp32_ms=12.0, int8_ms=6.0), make_report(), 0.5, 10.0)
    assert _status(checks, "p50 onnx-fp32@cpu batch 1") == ["warn"]
    assert _status(checks, "latency ratio int8-cpu/onnx-fp32@cpu batch 1") == ["pass"]


def test_other_machine_compares_only_ratios():
    slower_machine = make_report(machine="m2", fp32_ms=30.0, int8_ms=15.0)
    checks = evaluate_gate(slower_machine, make_report(), 0.5, 10.0)
    assert _status(checks, "p50 ") == []
    assert _status(checks, "absolute latency vs baseline") == ["skip"]
    assert _status(checks, "latency ratio int8-cpu/onnx-fp32@cpu batch 1") == ["pass"]
    int8_lost_its_speedup = make_report(machine="m2", fp32_ms=30.0, int8_ms=30.0)
    checks = evaluate_gate(int8_lost_its_speedup, make_report(), 0.5, 10.0)
    assert _status(checks, "latency ratio int8-cpu/onnx-fp32@cpu batch 1") == ["fail"]


def test_reports_without_fingerprints_are_not_the_same_machine():
    # None == None used to pass as "the same machine": a 3x slower machine failed on absolute latency.
    checks = evaluate_gate(make_report(machine=None, fp32_ms=30.0, int8_ms=15.0), make_report(machine=None), 0.5, 10.0)
    assert _status(checks, "p50 ") == []
    assert "no machine fingerprint" in _one(checks, "absolute latency vs baseline").detail
    assert _failed(checks) == []


def test_baseline_accuracy_is_paired_on_the_same_eval_set_only():
    checks = evaluate_gate(make_report(lost=100), make_report(), 0.5, 10.0)
    assert _status(checks, "top-1 int8-cpu@cpu vs baseline") == ["fail"]
    checks = evaluate_gate(make_report(lost=100), make_report(eval_fp="other"), 0.5, 10.0)
    assert _status(checks, "top-1 vs baseline") == ["skip"]


# ---- the command -------------------------------------------------------------------------------


def test_cli_exit_codes_and_junit(tmp_path, capsys):
    good = _write(tmp_path, "good.json", make_report())
    bad = _write(tmp_path, "bad.json", make_report(lost=100))
    junit = tmp_path / "gate.xml"
    assert main(["check", str(good), "--junit", str(junit)]) == 0
    assert 'failures="0"' in junit.read_text()
    assert main(["check", str(bad), "--baseline", str(good), "--junit", str(junit)]) == 1
    xml = junit.read_text()
    assert "<failure" in xml and "int8-cpu@cpu" in xml
    out = capsys.readouterr().out
    assert "gate FAILED" in out
    assert "FAIL top-1 drop int8-cpu@cpu vs onnx-fp32: drop +5.00 pts" in out


def test_cli_one_failure_line_and_one_junit_failure_per_failed_check(tmp_path, capsys):
    base = make_report()
    new = make_report()
    new["rows"] = [r for r in new["rows"] if r["artifact"] != "int8-cpu"]  # vanished: int8-cpu@cpu
    _row(new, "onnx-fp32@cpu").pop("accuracy")  # unmeasured
    junit = tmp_path / "gate.xml"
    code = main(
        [
            "check",
            str(_write(tmp_path, "new.json", new)),
            "--baseline",
            str(_write(tmp_path, "b.json", base)),
            "--junit",
            str(junit),
        ]
    )
    assert code == 1
    fail_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL ")]
    assert fail_lines == [
        "FAIL accuracy onnx-fp32@cpu: no top-1 against its float parent torch-fp32: the row has no accuracy: "
        "give --eval DATA, or --allow-unmeasured",
        "FAIL missing int8-cpu@cpu: measured in the baseline, absent from this report",
    ]
    xml = junit.read_text()
    assert xml.count("<failure") == 2 and 'failures="2"' in xml
    code = main(["check", str(tmp_path / "new.json"), "--allow-unmeasured", "--allow-small-eval"])
    assert code == 0


def test_junit_keeps_the_file_it_replaces(tmp_path, capsys):
    good = _write(tmp_path, "good.json", make_report())
    junit = tmp_path / "gate.xml"
    junit.write_text("<testsuite name='the user's own results'/>\n")
    assert main(["check", str(good), "--junit", str(junit)]) == 0
    (kept,) = (tmp_path / "history").iterdir()
    assert (kept / "gate.xml").read_text() == "<testsuite name='the user's own results'/>\n"
    assert 'failures="0"' in junit.read_text()
    assert f"kept the previous gate.xml in {kept}/ (edge check replaces it)" in capsys.readouterr().out


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    good = _write(tmp_path, "good.json", make_report())
    assert main(["check", str(good), "--max-drop", "-1"]) == 2
    assert "--max-drop" in capsys.readouterr().err


def _drop_artifact(r: dict) -> None:
    del r["rows"][0]["artifact"]


def _set(path: str, value: object):
    def mutate(report: dict) -> None:
        target = report
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.clear(), "not an edge bench report"),
        (_set("schema_version", 99), "schema version 99, this tool reads versions 1, 2, 3, 4, 5: newer than this tool"),
        (_set("schema_version", "1"), "schema version '1'"),
        (lambda r: r.pop("rows"), "the report has no 'rows'"),
        (_set("rows", {"int8-cpu": {}}), "rows must be a list"),
        (_set("rows.0", "torch-fp32"), "rows[0] must be an object"),
        (_drop_artifact, "rows[0] has no 'artifact'"),
        (_set("rows.1.artifact", 7), "rows[1].artifact must be the artifact's bench name, got int"),
        (
            _set("rows.2.status", "fine"),
            "rows[2].status must be one of ok, rejected, unverified, error, skipped, interrupted, got 'fine'",
        ),
        (_set("rows.2.cells.0.batch", "1"), "rows[2].cells[0].batch must be the batch size"),
        (_set("rows.2.cells.0.compute", None), "rows[2].cells[0] has no 'compute'"),
        (_set("rows.2.cells.0.compute.p50_ms", True), "rows[2].cells[0].compute.p50_ms must be a number, got True"),
        (_set("rows.2.accuracy.predictions", [0, 1]), "rows[2].accuracy.predictions has 2 entries but eval has 2000 labels"),
        (_set("rows.2.accuracy.predictions.5", "cat"), "rows[2].accuracy.predictions[5] must be a whole number"),
        (_set("rows.2.accuracy.vs_parent.flips.n", 0), "rows[2].accuracy.vs_parent.flips has impossible counts"),
        (_set("rows.2.accuracy.vs_parent.flips", None), "rows[2].accuracy.vs_parent has no 'flips'"),
        (_set("eval.labels", "0,1,2"), "eval.labels must be the per-image labels, got str"),
        (_set("eval.labels.3", 2.5), "eval.labels[3] must be a whole number"),
        (_set("eval", [1, 2]), "eval must be an object or null"),
        (_set("environment", "x86"), "environment must be an object"),
        (_set("environment.machine_fingerprint", 12), "environment.machine_fingerprint must be a string"),
        (_set("settings", None), "settings must be an object"),
    ],
)
def test_malformed_reports_are_one_line_errors(tmp_path, capsys, mutate, message):
    report = make_report()
    mutate(report)
    path = _write(tmp_path, "report.json", report)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    # the same malformed file as the baseline of a good report
    good = _write(tmp_path, "good.json", make_report())
    assert main(["check", str(good), "--baseline", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not a readable bench report"),
        ("[1, 2]", "not an edge bench report"),
        ("null", "not an edge bench report"),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "report.json"
    path.write_text(content)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_version_1_report_is_still_read(tmp_path):
    old = copy.deepcopy(make_report())
    old["schema_version"] = 1
    assert main(["check", str(_write(tmp_path, "v1.json", old))]) == 0
