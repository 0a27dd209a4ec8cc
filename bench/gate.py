"""CI gate over a bench report: fail on accuracy drops, latency regressions and missing numbers.

    edge check runs/demo/bench/report.json                               # INT8 vs float parent
    edge check NEW/report.json --baseline OLD/report.json --junit gate.xml

Every check is one line in the table, one testcase in the --junit XML, and a failed one is also
printed as one ``FAIL name: detail`` line. The gate fails (exit 1) when:

- nothing was measured (no rows, or every row skipped or errored);
- a row or a timing cell errored, a row was *interrupted* (Ctrl-C stopped its worker: not a
  measurement), or a row is *rejected* (its quantizer did not accept it: manifest
  ``accepted: false``; bench still measures it so the report shows why), or *unverified* (its
  model file has no manifest: nothing vouches for it), unless --allow-unverified (then a warning);
- an artifact with a float parent (INT8, engines, the ONNX export) has no accuracy against it,
  unless --allow-unmeasured (then a warning); a parent that was not selected for the bench
  (``--artifacts onnx-fp32,int8-cpu`` leaves torch-fp32 out) makes that check a skip, with the reason;
- its top-1 drop against the float parent is significantly above --max-drop: paired flips
  (McNemar), failing only when the exact one-sided lower bound (--confidence, 95%) of the drop
  exceeds the budget, so noise does not fail a build and a real regression does;
- its evaluation set cannot resolve the budget, unless --allow-small-eval (then a warning). The
  *minimum detectable drop* of n images is the smallest drop that would fail the gate if every
  flip were a loss; the set resolves the budget when that is at most 2 x --max-drop, i.e. it can
  fail a regression of twice the budget (0.5 points at 95% needs 1100 images; 200 images can
  only fail a 3.0 point drop). The gate prints it for every artifact;
- with --baseline: a row (artifact@device) or a timing cell (artifact@device, batch) measured in
  the baseline is absent now. A cell skipped now (outside an engine's optimisation profile) is
  listed, not missing; a row skipped now fails on the same machine and is listed on another;
- with --baseline: top-1 fell against the baseline's on the same evaluation set (same paired
  test); p50 latency of a cell regressed beyond --max-latency-regression, compared only when both
  reports carry a machine fingerprint and they are equal; INT8/FP32 latency ratios measured within
  each run are compared on any machine.

A skipped row or cell (device absent, batch outside an engine's profile) does not fail.
Exit codes: 0 passed, 1 a check failed, 2 a usage error (bad path, malformed report: one line).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from bench.checks import Check, same_machine
from bench.latency_gate import check_latency
from edge.atomic import atomic_write_text
from edge.errors import UserError
from edge.history import history_root, keeping_previous, replaces
from edge.measure.acceptance import DEFAULT_MAX_DROP, judge_drop, resolution_line
from edge.measure.paired import CONFIDENCE, RESOLUTION, PairedFlips, flips_from_counts, paired_flips, resolves
from edge.measure.report import MEASURED, ROW_STATUSES, read_report
from edge.measure.rows import float_parent, is_exact_conversion
from edge.tracking import add_tracking_arguments, track_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("report", help="bench report.json (or a run directory)")
    parser.add_argument("--baseline", help="an earlier report.json to compare against")
    parser.add_argument(
        "--max-drop", type=float, default=DEFAULT_MAX_DROP, help=f"top-1 drop budget in points (default {DEFAULT_MAX_DROP:g})"
    )
    parser.add_argument(
        "--max-latency-regression", type=float, default=10.0, help="p50 latency tolerance in percent (default 10)"
    )
    parser.add_argument(
        "--confidence", type=float, default=CONFIDENCE, help="one-sided confidence of the accuracy bound (default 0.95)"
    )
    parser.add_argument(
        "--allow-unmeasured",
        action="store_true",
        help="warn instead of failing when an artifact with a float parent has no accuracy (bench without --eval)",
    )
    parser.add_argument(
        "--allow-small-eval",
        action="store_true",
        help=f"warn instead of failing when the evaluation set cannot resolve --max-drop (its minimum detectable drop, "
        f"every flip a loss, is above {RESOLUTION:g} x the budget)",
    )
    parser.add_argument(
        "--strict-latency",
        action="store_true",
        help="fail, instead of warning, when a latency comparison is too noisy to judge",
    )
    parser.add_argument(
        "--allow-stale", action="store_true", help="warn instead of failing on rows whose artifact is stale (see edge inspect)"
    )
    parser.add_argument(
        "--min-exact-agreement",
        type=float,
        default=99.5,
        help="top-1 agreement in percent an exact conversion (ONNX FP32, TensorRT FP32/FP16, OpenVINO FP32) must keep with its parent (default 99.5)",
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="warn instead of failing on rows whose model file has no manifest (made outside edge, or its manifest deleted)",
    )
    parser.add_argument(
        "--junit", type=Path, help="write JUnit XML here (for CI test reports; a previous file is kept under history/ beside it)"
    )
    add_tracking_arguments(parser)


def _row_key(row: dict[str, Any]) -> str:
    return f"{row['artifact']}@{row['device']}"


def _measured(row: dict[str, Any]) -> bool:
    ok_cell = any(c.get("status") == "ok" for c in row.get("cells") or [])
    return row.get("status") in MEASURED and (ok_cell or bool(row.get("accuracy")))


# ---- what was run ------------------------------------------------------------------------------


def _scenario_entries(report: dict[str, Any]) -> list[dict[str, Any]]:
    return (report.get("loadgen") or {}).get("entries") or []


def check_measured(report: dict[str, Any]) -> list[Check]:
    """An empty or all-skipped report proves nothing: it fails."""
    rows = report["rows"]
    measured = [r for r in rows if _measured(r)]
    scenarios = [e for e in _scenario_entries(report) if e.get("status") == "ok"]
    if measured or scenarios:
        also = f", {len(scenarios)} LoadGen scenario runs" if scenarios else ""
        return [Check("anything measured", "pass", f"{len(measured)} of {len(rows)} rows measured{also}")]
    if not rows:
        return [Check("anything measured", "fail", "the report has no rows: nothing was measured")]
    counts = {s: sum(r.get("status") == s for r in rows) for s in ROW_STATUSES}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return [Check("anything measured", "fail", f"nothing was measured ({len(rows)} rows: {summary})")]


def check_scenario_runs(report: dict[str, Any]) -> list[Check]:
    """A LoadGen scenario that errored fails; a skipped one is listed. LoadGen's INVALID verdict is
    shown, not failed: ``--quick`` runs are short on purpose, and a regression is the baseline's job."""
    checks = []
    for e in _scenario_entries(report):
        name = f"LoadGen {e['scenario']} ({e['mode']}) {e['artifact']}@{e['device']}"
        if e.get("status") == "ok":
            continue
        status = "skip" if e.get("status") == "skipped" else "fail"
        checks.append(Check(name, status, str(e.get("error") or e.get("reason") or e.get("status"))))
    return checks


def check_runs(report: dict[str, Any], allow_unverified: bool = False) -> list[Check]:
    """A row or cell that errored fails, an interrupted or rejected row fails; skipped rows and cells are listed."""
    checks = []
    for row in report["rows"]:
        key, status = _row_key(row), row.get("status")
        if status == "error":
            checks.append(Check(f"run {key}", "fail", f"error: {row.get('error')}"))
            continue
        if status == "skipped":
            checks.append(Check(f"run {key}", "skip", str(row.get("reason"))))
            continue
        if status == "interrupted":
            checks.append(
                Check(f"run {key}", "fail", f"interrupted: {row.get('reason') or 'Ctrl-C'}: not a measurement, bench it again")
            )
            continue
        if status == "rejected":
            checks.append(Check(f"accepted {key}", "fail", f"rejected: {row.get('reason') or 'no reason recorded'}"))
        if status == "unverified":
            detail = f"unverified: {row.get('reason') or 'no manifest'}"
            if allow_unverified:
                checks.append(Check(f"verified {key}", "warn", f"{detail} (--allow-unverified)"))
            else:
                checks.append(Check(f"verified {key}", "fail", f"{detail}: make it with edge, or give --allow-unverified"))
        cells = row.get("cells") or []
        for cell in (c for c in cells if c.get("status") == "error"):
            checks.append(Check(f"run {key} batch {cell['batch']}", "fail", f"error: {cell.get('error')}"))
        skipped = [c for c in cells if c.get("status") == "skipped"]
        if skipped:
            batches = ", ".join(str(c["batch"]) for c in skipped)
            checks.append(Check(f"run {key} batch {batches}", "skip", str(skipped[0].get("reason"))))
    return checks


# ---- accuracy ----------------------------------------------------------------------------------


def check_parent_drops(
    report: dict[str, Any],
    max_drop: float,
    confidence: float = CONFIDENCE,
    allow_unmeasured: bool = False,
    allow_small_eval: bool = False,
) -> list[Check]:
    """Each measured artifact with a float parent: is it measured, does its set resolve the budget,
    is its drop significantly above it. Flips are recounted from the stored predictions."""
    ev = report.get("eval") or {}
    labels = ev.get("labels")
    rows = {_row_key(r): r for r in report["rows"]}
    checks = []
    for row in report["rows"]:
        parent_name = float_parent(row["artifact"])
        vs = (row.get("accuracy") or {}).get("vs_parent")
        if row.get("status") not in MEASURED or (parent_name is None and not vs):
            continue
        key = _row_key(row)
        selected = report["settings"].get("artifacts")
        parent_named = parent_name or (vs or {}).get("parent")
        if (not vs or "error" in vs) and selected and parent_named not in selected:
            detail = (
                f"its float parent {parent_named} was not selected for this bench (--artifacts {','.join(selected)}): "
                f"add {parent_named} to --artifacts to measure the drop"
            )
            checks.append(Check(f"accuracy {key}", "skip", detail))
            continue
        if not vs or "error" in vs:
            if not ev:
                why = "bench ran without --eval"
            elif not row.get("accuracy"):
                why = "the row has no accuracy"
            else:
                why = vs["error"] if vs else "the row has no comparison with it"
            detail = f"no top-1 against its float parent {parent_name or vs['parent']}: {why}"
            if allow_unmeasured:
                checks.append(Check(f"accuracy {key}", "warn", f"{detail} (--allow-unmeasured)"))
            else:
                checks.append(Check(f"accuracy {key}", "fail", f"{detail}: give --eval DATA, or --allow-unmeasured"))
            continue
        parent = rows.get(f"{vs['parent']}@{vs['parent_device']}")
        parent_preds = ((parent or {}).get("accuracy") or {}).get("predictions")
        if labels and parent_preds is not None and row["accuracy"].get("predictions") is not None:
            flips = paired_flips(labels, parent_preds, row["accuracy"]["predictions"], confidence)
        else:
            f = vs["flips"]
            flips = flips_from_counts(f["n"], f["lost"], f["gained"], f["agree"], confidence)
        name = f"top-1 drop {key} vs {vs['parent']}"
        checks.append(_drop_check(name, flips, max_drop, simulated=bool(row.get("simulated"))))
        checks.append(resolution_check(f"resolution {key}", flips.n, max_drop, confidence, allow_small_eval))
    return checks


def resolution_check(name: str, n: int, max_drop: float, confidence: float, allow_small_eval: bool = False) -> Check:
    """Can ``n`` images fail a drop of RESOLUTION x the budget, every flip a loss?"""
    detail = resolution_line(n, max_drop, confidence)
    if resolves(n, max_drop, confidence):
        return Check(name, "pass", detail)
    if allow_small_eval:
        return Check(name, "warn", f"{detail} (--allow-small-eval)")
    return Check(name, "fail", f"{detail}; evaluate more images (--eval-count) or give --allow-small-eval")


def _drop_check(name: str, flips: PairedFlips, max_drop: float, simulated: bool = False) -> Check:
    verdict = judge_drop(flips, max_drop, simulated)
    return Check(name, "fail" if verdict.significant else "pass", verdict.detail)


def check_baseline_accuracy(
    report: dict[str, Any], baseline: dict[str, Any], max_drop: float, confidence: float = CONFIDENCE
) -> list[Check]:
    """Top-1 against the baseline's, paired, when both used the same evaluation images."""
    ev, base_ev = report.get("eval") or {}, baseline.get("eval") or {}
    if not ev.get("labels") or not base_ev.get("labels"):
        return [Check("top-1 vs baseline", "skip", "a report has no per-image labels (bench without --eval)")]
    if ev.get("fingerprint") != base_ev.get("fingerprint") or len(ev["labels"]) != len(base_ev["labels"]):
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


# ---- coverage against the baseline -------------------------------------------------------------


def check_baseline_coverage(report: dict[str, Any], baseline: dict[str, Any]) -> list[Check]:
    """Every row and timing cell measured in the baseline must be here (a vanished row fails).

    A cell skipped now is not missing (an engine's profile excludes it: listed by check_runs); a
    row skipped now (device absent) fails on the same machine and is listed on another; a row or
    cell that errored now already fails in check_runs.
    """
    rows = {_row_key(r): r for r in report["rows"]}
    here = same_machine(report, baseline)
    checks: list[Check] = []
    counted = 0
    for base in (r for r in baseline["rows"] if _measured(r)):
        key = _row_key(base)
        row = rows.get(key)
        counted += 1
        if row is None:
            checks.append(Check(f"missing {key}", "fail", "measured in the baseline, absent from this report"))
            continue
        if row.get("status") == "skipped":
            detail = f"measured in the baseline, skipped now: {row.get('reason')}"
            if here:
                checks.append(Check(f"missing {key}", "fail", f"{detail} (same machine)"))
            else:
                checks.append(Check(f"missing {key}", "skip", f"{detail} (another machine)"))
            continue
        if row.get("status") not in MEASURED:
            continue
        batches = {c["batch"] for c in row.get("cells") or []}
        for cell in base.get("cells") or []:
            counted += cell.get("status") == "ok"
            if cell.get("status") == "ok" and cell["batch"] not in batches:
                checks.append(
                    Check(f"missing {key} batch {cell['batch']}", "fail", "timed in the baseline, absent from this report")
                )
    now = {(e["artifact"], e["device"], e["scenario"], e["mode"]) for e in _scenario_entries(report) if e.get("status") == "ok"}
    for e in _scenario_entries(baseline):
        if e.get("status") == "ok":
            counted += 1
            if (e["artifact"], e["device"], e["scenario"], e["mode"]) not in now:
                name = f"missing LoadGen {e['scenario']} ({e['mode']}) {e['artifact']}@{e['device']}"
                checks.append(Check(name, "fail", "run in the baseline, absent from this report"))
    if not checks:
        checks.append(Check("baseline coverage", "pass", f"all {counted} rows and cells measured in the baseline are here"))
    return checks


# ---- stale and exact ----------------------------------------------------------------------------


def check_stale(report: dict[str, Any], allow_stale: bool = False) -> list[Check]:
    """A row whose artifact (or an ancestor up its manifest chain) no longer matches its parent."""
    checks = []
    for row in report["rows"]:
        if row.get("stale") and row.get("status") in MEASURED:
            status = "warn" if allow_stale else "fail"
            tail = " (--allow-stale)" if allow_stale else "; or --allow-stale"
            checks.append(Check(f"current {_row_key(row)}", status, f"stale: {row['stale']}{tail}"))
    return checks


def check_exact_agreement(report: dict[str, Any], min_agreement: float) -> list[Check]:
    """An exact conversion must agree with its parent on >= ``min_agreement`` % of images, whatever
    the drop's sign (a model that gained 5 points by disagreeing on 30% is a different model)."""
    checks = []
    for row in report["rows"]:
        vs = (row.get("accuracy") or {}).get("vs_parent") or {}
        if row.get("status") not in MEASURED or not is_exact_conversion(row["artifact"]) or "agreement" not in vs:
            continue
        n = (vs.get("flips") or {}).get("n")
        detail = f"agreement with {vs['parent']} {vs['agreement']:.2f}% on {n} images (exact conversion: >= {min_agreement:g}%)"
        if vs["agreement"] < min_agreement:
            detail += f", top-1 {vs['parent_top1']:.2f}% -> {row['accuracy']['top1']:.2f}%: the conversion changed the model"
        checks.append(Check(f"exact {_row_key(row)}", "pass" if vs["agreement"] >= min_agreement else "fail", detail))
    return checks


# ---- output ------------------------------------------------------------------------------------


def write_junit(path: Path, checks: list[Check], suite_name: str = "edge-check") -> None:
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(checks)),
        failures=str(sum(c.status == "fail" for c in checks)),
        skipped=str(sum(c.status == "skip" for c in checks)),
    )
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=suite_name.replace("-", "."), name=check.name)
        if check.status == "fail":
            ET.SubElement(case, "failure", message=check.detail[:500]).text = check.detail
        elif check.status == "skip":
            ET.SubElement(case, "skipped", message=check.detail[:500])
        elif check.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {check.detail}"
        else:  # a pass carries its figures too: what was compared, and by how much it passed
            ET.SubElement(case, "system-out").text = check.detail
    atomic_write_text(path, ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")


def evaluate_gate(
    report: dict[str, Any],
    baseline: dict[str, Any] | None,
    max_drop: float,
    max_latency_regression: float,
    confidence: float = CONFIDENCE,
    allow_unmeasured: bool = False,
    allow_small_eval: bool = False,
    strict_latency: bool = False,
    allow_stale: bool = False,
    min_exact_agreement: float = 99.5,
    allow_unverified: bool = False,
) -> list[Check]:
    """Every check of the gate, in order: what ran, drops vs parent, then baseline comparisons."""
    checks = check_measured(report) + check_runs(report, allow_unverified) + check_scenario_runs(report)
    checks += check_stale(report, allow_stale)
    checks += check_parent_drops(report, max_drop, confidence, allow_unmeasured, allow_small_eval)
    checks += check_exact_agreement(report, min_exact_agreement)
    if baseline is not None:
        checks += check_baseline_coverage(report, baseline)
        checks += check_baseline_accuracy(report, baseline, max_drop, confidence)
        checks += check_latency(report, baseline, max_latency_regression, strict_latency)
    return checks


def gate_table(checks: list[Check], title: str) -> Any:
    """Every check, failures first: result, name, detail (cells fold, never cut)."""
    from edge.console import make_table

    styles = {"fail": "bold red", "warn": "yellow", "skip": "dim", "pass": "green"}
    order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
    table = make_table("result", "check", "detail", title=title)
    for check in sorted(checks, key=lambda c: order[c.status]):
        table.add_row(check.status.upper(), check.name, check.detail, style=styles[check.status])
    return table


def _gate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The gate's thresholds and allowances, as tracking logs them."""
    names = ("baseline", "max_drop", "max_latency_regression", "confidence", "min_exact_agreement", "strict_latency")
    return {name: getattr(args, name) for name in names} | {k: v for k, v in vars(args).items() if k.startswith("allow_")}


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console

    if args.max_drop < 0:
        raise UserError(f"--max-drop must be >= 0 points, got {args.max_drop}")
    if args.max_latency_regression < 0:
        raise UserError(f"--max-latency-regression must be >= 0 percent, got {args.max_latency_regression}")
    if not 0.0 <= args.min_exact_agreement <= 100.0:
        raise UserError(f"--min-exact-agreement must be a percentage in [0, 100], got {args.min_exact_agreement}")
    if not 0.5 <= args.confidence < 1.0:
        raise UserError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    report = read_report(args.report)
    baseline = read_report(args.baseline) if args.baseline else None
    checks = evaluate_gate(
        report,
        baseline,
        args.max_drop,
        args.max_latency_regression,
        args.confidence,
        allow_unmeasured=args.allow_unmeasured,
        allow_small_eval=args.allow_small_eval,
        strict_latency=args.strict_latency,
        allow_stale=args.allow_stale,
        min_exact_agreement=args.min_exact_agreement,
        allow_unverified=args.allow_unverified,
    )

    console = make_console()
    console.print(gate_table(checks, f"edge check: {args.report}"))
    if args.junit:
        kept: list[str] = []
        with keeping_previous(history_root(args.junit), [args.junit], replaces("edge check", [args.junit]), say=kept.append):
            write_junit(args.junit, checks)
        console.print(f"JUnit XML: {args.junit}")
        for line in kept:  # the previous XML, under history/ beside it
            console.print(line, soft_wrap=True, markup=False, highlight=False)
    track_stage(args, "check", args.report, report=args.report, checks=checks, settings=_gate_settings(args), junit=args.junit)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        for check in failed:  # one greppable line each, unwrapped, for CI logs
            console.print(f"FAIL {check.name}: {check.detail}", soft_wrap=True, markup=False, highlight=False)
        console.print(f"[bold red]gate FAILED: {len(failed)} of {len(checks)} checks[/]")
        return 1
    warnings = sum(c.status == "warn" for c in checks)
    console.print(f"[green]gate passed[/] ({len(checks)} checks, {warnings} warning{'' if warnings == 1 else 's'})")
    return 0
