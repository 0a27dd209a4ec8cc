"""Compare bench reports from several machines: one table across every device a run was benched on.

    edge compare jetson/report.json gpu-server/report.json x86/report.json --out compare/

Each REPORT is an ``edge bench`` report.json (or its run or bench folder), typically one CI job's
artifact per device, or a run tracked in MLflow (docs/tracking.md): a bench run's or pipeline's run
id, or an experiment's name (the newest bench of each of its pipelines). The comparison has one line per report x device x artifact: p50 at batch 1,
the best images/s (and the batch that reached it), top-1, drop and agreement against the float
parent, J/image where power was measured; and one line per report on its machine: fingerprint,
CPU, GPU, driver, CUDA and package versions, and its evaluation set.

Accuracy is put side by side only for reports evaluated on the same set (the same evaluation
fingerprint as the first report that has one); the others read "different eval set". --out DIR
writes compare.csv, compare.md and compare.png (the PNG needs matplotlib; without it a note says
so); the files they replace are kept under DIR/history/<UTC time>/, and a line says so. A report that is not a readable bench report, or reports of different schema versions, stop
the command with one line (exit 2).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.plots import plot_unavailable
from edge.atomic import atomic_paths
from edge.errors import UserError
from edge.history import history_root, keeping_previous, replaces
from edge.measure.report import read_report
from edge.tracking.readback import looks_like_mlflow

DIFFERENT_EVAL = "different eval set"
NO_EVAL = "no eval"
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "tensorrt", "torch", "openvino", "numpy")
RESULT_COLUMNS = (
    "report",
    "machine",
    "device",
    "artifact",
    "status",
    "p50_b1_ms",
    "best_images_per_s",
    "best_batch",
    "top1",
    "drop_points",
    "agreement",
    "j_per_image",
    "eval",
)
MACHINE_COLUMNS = (
    "report",
    "path",
    "hostname",
    "machine_fingerprint",
    "cpu",
    "gpu",
    "driver",
    "cuda",
    "python",
    "packages",
    "eval_set",
    "settings",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "reports",
        nargs="+",
        metavar="REPORT",
        help="bench report.json files (or their run / bench folders), MLflow run ids or experiment names (edge runs)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for compare.csv, compare.md and compare.png (the previous ones are kept in its history/)",
    )


# ---- reading -------------------------------------------------------------------------------------


def load_reports(paths: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(path, report) for each path, every one a valid bench report of one schema version.
    A name that is no path is an MLflow run id or experiment (``runs:/<id>/report.json``)."""
    loaded = []
    for path in map(str, paths):
        if not looks_like_mlflow(path):
            loaded.append((path, read_report(path)))
            continue
        try:  # a folder of that name first (runs/ is also the default experiment's name)
            loaded.append((path, read_report(path)))
        except UserError as not_a_report:
            if Path(path).exists():
                loaded += tracked_reports(path, not_a_report)
            else:
                loaded += tracked_reports(path)
    # version 5 only adds the optional LoadGen section: a version-4 report sits beside it as it is
    versions = {4 if report["schema_version"] >= 4 else report["schema_version"] for _, report in loaded}
    if len(versions) > 1:
        listed = ", ".join(f"{path} is version {report['schema_version']}" for path, report in loaded)
        raise UserError(f"the reports have different schema versions ({listed}): rewrite the older ones with `edge bench`")
    return loaded


def tracked_reports(name: str, not_a_report: UserError | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The bench reports of an MLflow run id (a bench run or its pipeline) or experiment, read from its
    artifacts; ``not_a_report``: why a folder of that name was no report (raised when MLflow has none either)."""
    import tempfile

    from edge.tracking.options import tracking_uri
    from edge.tracking.readback import bench_runs, download_report
    from edge.tracking.store import reading_client

    try:
        client = reading_client(tracking_uri())
        with tempfile.TemporaryDirectory(prefix="edge-compare-") as tmp:
            reports = [download_report(client, run, Path(tmp)) for run in bench_runs(client, name)]
            return [(label, read_report(path)) for label, path in reports]
    except UserError:
        if not_a_report is not None:
            raise not_a_report from None
        raise


def eval_id(report: dict[str, Any]) -> str | None:
    """The evaluation set's fingerprint (None when the report has no evaluation)."""
    ev = report.get("eval")
    if not isinstance(ev, dict):
        return None
    fingerprint = ev.get("fingerprint")
    return str(fingerprint) if fingerprint else f"{ev.get('data')}:{ev.get('split')}:{ev.get('count')}:{ev.get('seed')}"


def reference_eval(reports: list[tuple[str, dict[str, Any]]]) -> str | None:
    return next((e for e in (eval_id(r) for _, r in reports) if e is not None), None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _ok_cells(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for c in row.get("cells") or []
        if isinstance(c, dict) and c.get("status") == "ok" and isinstance(c.get("compute"), dict)
    ]


def timing(row: dict[str, Any]) -> dict[str, Any]:
    """p50 at batch 1, the best images/s and its batch, J/image (batch 1 first) of a report row."""
    cells = _ok_cells(row)
    b1 = next((c for c in cells if c.get("batch") == 1), None)
    rates = [(r, c.get("batch")) for c in cells if (r := _number(c["compute"].get("items_per_s"))) is not None]
    best = max(rates, key=lambda pair: pair[0], default=(None, None))
    energies = [_number(c.get("energy_j_per_image")) for c in sorted(cells, key=lambda c: c.get("batch") != 1)]
    return {
        "p50_b1_ms": _number(b1["compute"].get("p50_ms")) if b1 else None,
        "best_images_per_s": best[0],
        "best_batch": best[1],
        "j_per_image": next((e for e in energies if e is not None), None),
    }


def accuracy(row: dict[str, Any], same_eval: bool | None) -> dict[str, Any]:
    """top-1, drop and agreement; a string instead where they cannot be put side by side."""
    if same_eval is None or not row.get("accuracy"):
        marker = NO_EVAL if same_eval is None else None
        return {"top1": marker, "drop_points": marker, "agreement": marker}
    if not same_eval:
        return {"top1": DIFFERENT_EVAL, "drop_points": DIFFERENT_EVAL, "agreement": DIFFERENT_EVAL}
    acc = row["accuracy"]
    vs = acc.get("vs_parent") or {}
    return {
        "top1": _number(acc.get("top1")),
        "drop_points": _number(vs.get("drop_points")),
        "agreement": _number(vs.get("agreement")),
    }


def eval_labels(reports: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """Evaluation fingerprint -> E1, E2, ... in order of first appearance (E1: the reference)."""
    labels: dict[str, str] = {}
    for _, report in reports:
        own = eval_id(report)
        if own is not None and own not in labels:
            labels[own] = f"E{len(labels) + 1}"
    return labels


def report_labels(reports: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [f"R{i}" for i in range(1, len(reports) + 1)]


def machine_label(report: dict[str, Any]) -> str:
    env = report.get("environment") or {}
    return f"{env.get('hostname') or '?'} ({str(env.get('machine_fingerprint') or 'no fingerprint')[:8]})"


def comparison_rows(reports: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One dict per report x device x artifact that was measured (or tried: errors keep their line)."""
    reference, evals = reference_eval(reports), eval_labels(reports)
    rows = []
    for label, (_, report) in zip(report_labels(reports), reports):
        own = eval_id(report)
        same_eval = None if own is None else own == reference
        for row in report["rows"]:
            if row.get("status") in ("skipped", "interrupted"):
                continue
            line = {
                "report": label,
                "machine": machine_label(report),
                "device": row.get("device"),
                "artifact": row.get("artifact"),
            }
            line["status"] = row.get("status")
            line.update(timing(row))
            line.update(accuracy(row, same_eval))
            line["eval"] = "n/a" if own is None else evals[own]
            rows.append(line)
    return rows


def _packages(env: dict[str, Any]) -> str:
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    return " ".join(f"{name}={packages[name]}" for name in PACKAGES if packages.get(name)) or "n/a"


def machine_rows(reports: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One dict per report: where it was measured and on what."""
    lines, evals = [], eval_labels(reports)
    for label, (path, report) in zip(report_labels(reports), reports):
        env, ev, settings = report.get("environment") or {}, report.get("eval") or {}, report.get("settings") or {}
        gpu = env.get("gpu_name") or env.get("jetson_model")
        cc = env.get("gpu_compute_capability")
        window = settings.get("window") if isinstance(settings.get("window"), dict) else {}
        lines.append(
            {
                "report": label,
                "path": path,
                "hostname": env.get("hostname") or "n/a",
                "machine_fingerprint": env.get("machine_fingerprint") or "n/a",
                "cpu": f"{env.get('cpu_model') or 'n/a'} x{env.get('cpu_count') or '?'} {env.get('machine') or ''}".strip(),
                "gpu": f"{gpu} (sm {cc})" if gpu and cc else (gpu or "none"),
                "driver": env.get("gpu_driver") or env.get("l4t_release") or "n/a",
                "cuda": env.get("cuda") or "n/a",
                "python": env.get("python") or "n/a",
                "packages": _packages(env),
                "eval_set": f"{evals[eval_id(report) or '']}: {ev.get('data')} {ev.get('split')} n={ev.get('count')} seed {ev.get('seed')} ({eval_id(report)})"
                if ev
                else NO_EVAL,
                "settings": f"batches {settings.get('batch_sizes')}, min {window.get('min_seconds', 'n/a')} s/cell, threads {settings.get('threads')}",
            }
        )
    return lines


# ---- rendering -------------------------------------------------------------------------------------

HEADERS = {
    "p50_b1_ms": "p50 b1 ms",
    "best_images_per_s": "best img/s",
    "best_batch": "at batch",
    "top1": "top-1 %",
    "drop_points": "drop pts",
    "agreement": "agree %",
    "j_per_image": "J/img",
}
DIGITS = {"best_images_per_s": 1, "j_per_image": 4}


def fmt(key: str, value: Any) -> str:
    """A value as the tables print it: n/a for a missing measurement, markers as they are."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{DIGITS.get(key, 2)}f}"
    return str(value)


def _table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Result columns, without J/img where no report measured energy."""
    return [c for c in RESULT_COLUMNS if c != "j_per_image" or any(r.get(c) is not None for r in rows)]


def _machine_cells(machine: dict[str, Any]) -> list[str]:
    """A machine's line folded into four cells of short lines (the table stays readable at 80 columns)."""
    hardware = [machine["hostname"], machine["machine_fingerprint"], machine["cpu"], f"GPU {machine['gpu']}"]
    if machine["driver"] != "n/a" or machine["cuda"] != "n/a":
        hardware.append(f"driver {machine['driver']} CUDA {machine['cuda']}")
    software = [f"python={machine['python']}", *machine["packages"].split(" ")]
    return [machine["report"], "\n".join(hardware), "\n".join(software), f"{machine['eval_set']}\n{machine['settings']}"]


def _result_cells(row: dict[str, Any], columns: list[str]) -> list[str]:
    cells = []
    for column in columns:
        if column == "best_images_per_s" and row.get("best_batch") is not None:
            cells.append(f"{fmt(column, row.get(column))} (b{row['best_batch']})")
        elif row.get(column) == DIFFERENT_EVAL:
            cells.append("diff. eval")  # the note under the table says it in full
        elif column == "report":
            cells.append(f"{row['report']}/{row.get('device')}")
        elif column == "artifact" and row.get("status") not in ("ok", None):
            cells.append(f"{row['artifact']} ({row['status']})")
        else:
            cells.append(fmt(column, row.get(column)))
    return cells


def rich_tables(machines: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[Any]:
    """The machines table and the results table; every column folds, so nothing is cut at 80 columns."""
    from edge.console import make_table

    table = make_table("report", "machine", "software", "eval, settings", title="machines")
    for machine in machines:
        table.add_row(*_machine_cells(machine))
    results = make_table(title="comparison")
    columns = [c for c in _table_columns(rows) if c not in ("machine", "status", "best_batch", "device")]
    for column in columns:
        results.add_column(HEADERS.get(column, column), justify="left" if column in ("report", "artifact", "eval") else "right")
    for row in rows:
        results.add_row(*_result_cells(row, columns))
    return [table, results]


def scenario_table(scenarios: list[list[str]]) -> list[Any]:
    """The LoadGen scenarios of every report as one rich table (none without scenarios)."""
    from bench.scenario_tables import HEADER
    from edge.console import make_table
    from edge.measure.report import SCENARIO_NOTE as NOT_AUDITED

    if not scenarios:
        return []
    table = make_table(title=f"MLPerf LoadGen scenarios ({NOT_AUDITED})")
    for name in ("report", *HEADER):
        table.add_column(name)
    for line in scenarios:
        table.add_row(*line)
    return [table]


def _markdown_table(columns: list[str], lines: list[dict[str, Any]]) -> list[str]:
    out = ["| " + " | ".join(HEADERS.get(c, c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(c, line.get(c)).replace("|", "\\|") for c in columns) + " |" for line in lines]
    return out


def scenario_rows(reports: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """One line per report x LoadGen scenario run: the report's label, then the bench's own columns."""
    from bench.scenario_tables import scenario_lines

    return [[label, *line] for label, (_, report) in zip(report_labels(reports), reports) for line in scenario_lines(report)]


def scenario_markdown(scenarios: list[list[str]]) -> list[str]:
    from bench.scenario_tables import HEADER
    from edge.measure.report import SCENARIO_NOTE as NOT_AUDITED

    if not scenarios:
        return []
    header = ["report", *HEADER]
    lines = ["", "## MLPerf LoadGen scenarios", "", f"**{NOT_AUDITED}.** Figures and verdicts are LoadGen's own.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in scenarios]


def render_markdown(machines: list[dict[str, Any]], rows: list[dict[str, Any]], scenarios: list[list[str]] | None = None) -> str:
    lines = ["# edge compare", "", "## Machines", ""]
    lines += _markdown_table(list(MACHINE_COLUMNS), machines)
    lines += ["", "## Results", ""]
    lines += _markdown_table(_table_columns(rows), rows)
    lines += [
        "",
        f'Accuracy is side by side only for reports on the same evaluation set; the others read "{DIFFERENT_EVAL}".',
    ]
    lines += scenario_markdown(scenarios or [])
    lines.append("")
    return "\n".join(lines)


def render_csv(machines: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    """One line per result, with its machine's columns joined on."""
    by_report = {m["report"]: m for m in machines}
    columns = list(RESULT_COLUMNS) + [c for c in MACHINE_COLUMNS if c != "report"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        merged = {**by_report[row["report"]], **row}
        writer.writerow({c: "" if merged.get(c) is None else merged.get(c) for c in columns})
    return buffer.getvalue()


def render_png(rows: list[dict[str, Any]], path: Path) -> None:
    """p50 at batch 1 and best images/s per report x device x artifact, as two bar charts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.plots import bar_panel

    timed = [r for r in rows if r.get("p50_b1_ms") is not None or r.get("best_images_per_s") is not None]
    labels = [f"{r['report']} {r['device']} {r['artifact']}" for r in timed]
    fig, axes = plt.subplots(1, 2, figsize=(14, 1.2 + 0.35 * max(1, len(timed))))
    for ax, key, title in (
        (axes[0], "p50_b1_ms", "p50 at batch 1 (ms, lower is better)"),
        (axes[1], "best_images_per_s", "best images/s (higher is better)"),
    ):
        bar_panel(ax, labels, [r.get(key) for r in timed], title)
    axes[1].set_yticklabels([])
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)


def write_outputs(
    out: Path,
    machines: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    say: Callable[[str], object] | None = None,
    scenarios: list[list[str]] | None = None,
) -> tuple[list[Path], str | None]:
    """compare.{csv,md,png} in ``out``, written together; the note on a PNG that could not be drawn.
    The previous files are kept under ``out/history/<UTC time>/``; ``say`` gets the line."""
    out.mkdir(parents=True, exist_ok=True)
    note = plot_unavailable()
    targets = [out / "compare.csv", out / "compare.md"] + ([] if note else [out / "compare.png"])
    reason = replaces("edge compare", targets)
    with keeping_previous(history_root(targets[0]), targets, reason, say=say), atomic_paths(*targets) as staged:
        staged[0].write_text(render_csv(machines, rows))
        staged[1].write_text(render_markdown(machines, rows, scenarios))
        if not note:
            render_png(rows, staged[2])
    return targets, note.replace("report.png", "compare.png") if note else None


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console

    reports = load_reports(args.reports)
    machines, rows = machine_rows(reports), comparison_rows(reports)
    console = make_console()
    scenarios = scenario_rows(reports)
    for table in rich_tables(machines, rows) + scenario_table(scenarios):
        console.print(table)
    if len({eval_id(r) for _, r in reports if eval_id(r) is not None}) > 1:
        console.print(
            f'note: not every report was evaluated on the same set: accuracy of the others reads "{DIFFERENT_EVAL}"',
            soft_wrap=True,
        )
    if args.out:
        kept: list[str] = []
        written, note = write_outputs(Path(args.out), machines, rows, say=kept.append, scenarios=scenarios)
        console.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True)
        for line in kept:
            console.print(line, soft_wrap=True, highlight=False, markup=False)
        if note:
            console.print(f"note: {note}", soft_wrap=True)
    return 0
