"""CI gate over a bench report: fail on accuracy drops and latency regressions, without flakiness.

    edge check runs/demo/bench/report.json                               # INT8 vs float parent
    edge check NEW/report.json --baseline OLD/report.json --junit gate.xml

Accuracy: each artifact's top-1 against its float parent on the same images, from the paired
flips (McNemar): the check fails only when the exact one-sided lower bound of the drop (95%)
exceeds --max-drop, so noise does not fail a build and a real regression does. When the
evaluation set cannot resolve the budget (budget < 2 standard errors) the check says so.
With --baseline: top-1 against the baseline's on the same evaluation set (same paired test);
p50 latency of every cell against the baseline only when both reports come from the same machine
fingerprint; INT8/FP32 latency ratios measured within each run are compared on any machine.
A row or cell that failed to run fails the gate; a skipped one (device absent) does not.

Exit codes: 0 passed, 1 a check failed, 2 a usage error (bad path, not a report).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from bench.matrix import is_int8, recompute_flips
from bench.paired import CONFIDENCE, min_eval_size, paired_flips
from bench.report import read_report
from edge.artifacts import atomic_write_text
from edge.errors import UserError


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn | skip
    detail: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", help="bench report.json (or a run directory)")
    parser.add_argument("--baseline", help="an earlier report.json to compare against")
    parser.add_argument("--max-drop", type=float, default=0.5, help="top-1 drop budget in points (default 0.5)")
    parser.add_argument(
        "--max-latency-regression", type=float, default=10.0, help="p50 latency tolerance in percent (default 10)"
    )
    parser.add_argument(
        "--confidence", type=float, default=CONFIDENCE, help="one-sided confidence of the accuracy bound (default 0.95)"
    )
    parser.add_argument("--junit", type=Path, help="write JUnit XML here (for CI test reports)")


# ---- accuracy ----------------------------------------------------------------------------------


def _row_key(row: dict[str, Any]) -> str:
    return f"{row['artifact']}@{row['device']}"


def check_runs(report: dict[str, Any]) -> list[Check]:
    """A row or cell that errored fails; a skipped one is listed."""
    checks = []
    for row in report["rows"]:
        key = _row_key(row)
        if row.get("status") == "error":
            checks.append(Check(f"run {key}", "fail", f"error: {row.get('error')}"))
        elif row.get("status") == "skipped":
            checks.append(Check(f"run {key}", "skip", str(row.get("reason"))))
        else:
            bad = [c for c in row.get("cells", []) if c.get("status") == "error"]
            if bad:
                checks.append(Check(f"run {key}", "fail", f"batch {bad[0]['batch']}: {bad[0].get('error')}"))
    return checks


def check_parent_drops(report: dict[str, Any], max_drop: float, confidence: float) -> list[Check]:
    """Each artifact against its float parent, from the stored predictions (recounted here)."""
    if not report.get("eval"):
        return [Check("top-1 drop vs float parent", "warn", "no accuracy in this report (bench ran without --eval): not gated")]
    checks = []
    labels = report["eval"].get("labels")
    rows = {_row_key(r): r for r in report["rows"]}
    for row in report["rows"]:
        vs = (row.get("accuracy") or {}).get("vs_parent")
        if not vs:
            continue
        key = _row_key(row)
        name = f"top-1 drop {key} vs {vs['parent']}"
        if "error" in vs:
            checks.append(Check(name, "fail" if is_int8(row["artifact"]) else "warn", vs["error"]))
            continue
        parent = rows.get(f"{vs['parent']}@{vs['parent_device']}")
        if labels and parent and (parent.get("accuracy") or {}).get("predictions") is not None:
            flips = paired_flips(labels, parent["accuracy"]["predictions"], row["accuracy"]["predictions"], confidence)
        else:
            flips = recompute_flips(vs)
        checks.append(_drop_check(name, flips, max_drop, simulated=bool(row.get("simulated"))))
    return checks


def _drop_check(name: str, flips: Any, max_drop: float, simulated: bool = False) -> Check:
    detail = (
        f"drop {flips.drop_points:+.2f} pts (lower bound {flips.drop_lower_points:+.2f}, upper {flips.drop_upper_points:+.2f} "
        f"at {flips.confidence:.0%}); lost {flips.lost}, gained {flips.gained} of {flips.n}"
    )
    if simulated:
        detail += "; simulated (TensorRT INT8 evaluated on ONNX Runtime CPU)"
    if flips.drop_lower_points > max_drop:
        return Check(name, "fail", f"{detail}: exceeds the {max_drop} pt budget")
    if flips.too_small_for(max_drop):
        needed = min_eval_size(max_drop, max((flips.lost + flips.gained) / flips.n, 0.01))
        return Check(
            name, "warn", f"{detail}; evaluation set too small for a {max_drop} pt budget (about {needed} images needed)"
        )
    return Check(name, "pass", detail)


def check_baseline_accuracy(report: dict[str, Any], baseline: dict[str, Any], max_drop: float, confidence: float) -> list[Check]:
    """Top-1 against the baseline's, paired, when both used the same evaluation images."""
    ev, base_ev = report.get("eval") or {}, baseline.get("eval") or {}
    if not ev or not base_ev:
        return [Check("top-1 vs baseline", "skip", "a report has no accuracy (bench without --eval)")]
    if ev.get("fingerprint") != base_ev.get("fingerprint"):
        return [Check("top-1 vs baseline", "skip", "different evaluation sets (fingerprints differ): not comparable")]
    base_rows = {_row_key(r): r for r in baseline["rows"] if (r.get("accuracy") or {}).get("predictions") is not None}
    checks = []
    for row in report["rows"]:
        key = _row_key(row)
        acc = row.get("accuracy") or {}
        if acc.get("predictions") is None or key not in base_rows:
            continue
        flips = paired_flips(ev["labels"], base_rows[key]["accuracy"]["predictions"], acc["predictions"], confidence)
        checks.append(_drop_check(f"top-1 {key} vs baseline", flips, max_drop))
    return checks


# ---- latency -----------------------------------------------------------------------------------


def _p50s(report: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    return {
        (r["artifact"], r["device"], c["batch"]): c["compute"]["p50_ms"]
        for r in report["rows"]
        if r.get("status") == "ok"
        for c in r.get("cells", [])
        if c.get("status") == "ok"
    }


def int8_ratios(report: dict[str, Any]) -> dict[tuple[str, str, int], float]:
    """p50(INT8) / p50(onnx-fp32) per INT8 artifact, device and batch, within one report."""
    p50 = _p50s(report)
    return {
        (a, d, b): value / p50[("onnx-fp32", d, b)]
        for (a, d, b), value in p50.items()
        if is_int8(a) and ("onnx-fp32", d, b) in p50
    }


def check_latency(report: dict[str, Any], baseline: dict[str, Any], tolerance: float) -> list[Check]:
    checks = []
    same_machine = report["environment"].get("machine_fingerprint") == baseline["environment"].get("machine_fingerprint")
    if same_machine:
        base = _p50s(baseline)
        for key, value in sorted(_p50s(report).items()):
            if key not in base:
                continue
            change = (value / base[key] - 1.0) * 100.0
            name = f"p50 {key[0]}@{key[1]} batch {key[2]}"
            detail = f"{base[key]:.3f} -> {value:.3f} ms ({change:+.1f}%, tolerance {tolerance}%)"
            checks.append(Check(name, "fail" if change > tolerance else "pass", detail))
    else:
        checks.append(
            Check(
                "absolute latency vs baseline", "skip", "different machine fingerprint: only ratios within each run are compared"
            )
        )
    base_ratios = int8_ratios(baseline)
    for key, ratio in sorted(int8_ratios(report).items()):
        if key not in base_ratios:
            continue
        change = (ratio / base_ratios[key] - 1.0) * 100.0
        name = f"INT8/FP32 ratio {key[0]}@{key[1]} batch {key[2]}"
        detail = f"{base_ratios[key]:.3f} -> {ratio:.3f} ({change:+.1f}%, tolerance {tolerance}%)"
        checks.append(Check(name, "fail" if change > tolerance else "pass", detail))
    return checks


# ---- output ------------------------------------------------------------------------------------


def write_junit(path: Path, checks: list[Check]) -> None:
    suite = ET.Element(
        "testsuite",
        name="edge-check",
        tests=str(len(checks)),
        failures=str(sum(c.status == "fail" for c in checks)),
        skipped=str(sum(c.status == "skip" for c in checks)),
    )
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="edge.check", name=check.name)
        if check.status == "fail":
            ET.SubElement(case, "failure", message=check.detail[:500]).text = check.detail
        elif check.status == "skip":
            ET.SubElement(case, "skipped", message=check.detail[:500])
        elif check.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {check.detail}"
    atomic_write_text(path, ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")


def evaluate_gate(
    report: dict[str, Any],
    baseline: dict[str, Any] | None,
    max_drop: float,
    max_latency_regression: float,
    confidence: float = CONFIDENCE,
) -> list[Check]:
    """Every check of the gate, in order: runs, drops vs parent, then baseline comparisons."""
    checks = check_runs(report) + check_parent_drops(report, max_drop, confidence)
    if baseline is not None:
        checks += check_baseline_accuracy(report, baseline, max_drop, confidence)
        checks += check_latency(report, baseline, max_latency_regression)
    return checks


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.max_drop < 0:
        raise UserError(f"--max-drop must be >= 0 points, got {args.max_drop}")
    if args.max_latency_regression < 0:
        raise UserError(f"--max-latency-regression must be >= 0 percent, got {args.max_latency_regression}")
    if not 0.5 <= args.confidence < 1.0:
        raise UserError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    report = read_report(args.report)
    baseline = read_report(args.baseline) if args.baseline else None
    checks = evaluate_gate(report, baseline, args.max_drop, args.max_latency_regression, args.confidence)

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    styles = {"fail": "bold red", "warn": "yellow", "skip": "dim", "pass": "green"}
    order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
    table = Table(title=f"edge check: {args.report}")
    for column in ("result", "check", "detail"):
        table.add_column(column)
    for check in sorted(checks, key=lambda c: order[c.status]):
        table.add_row(check.status.upper(), check.name, check.detail, style=styles[check.status])
    console.print(table)
    if args.junit:
        write_junit(args.junit, checks)
        console.print(f"JUnit XML: {args.junit}")
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        console.print(f"[bold red]gate FAILED: {len(failed)} of {len(checks)} checks[/]")
        return 1
    console.print(f"[green]gate passed[/] ({len(checks)} checks, {sum(c.status == 'warn' for c in checks)} warnings)")
    return 0
