"""Bench reports rendered and written: ``report.json``, ``report.csv``, ``report.md``, ``report.png``,
and the rich tables printed in the terminal. The schema, its reader and the row statuses are
:mod:`edge.measure.report`'s.

``report.png`` needs matplotlib (the ``train`` extra). A device installed without it (``.[cpu,opencv]``)
gets the other three files and the manifest, and ``bench.plots.plot_unavailable()`` says why there is no PNG.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.plots import plot_unavailable, render_png
from bench.scenario_tables import markdown_section, scenario_csv_rows
from edge import history
from edge.atomic import atomic_paths
from edge.environment import environment_fingerprint
from edge.manifest import write_manifest
from edge.measure.report import SCHEMA, SCHEMA_VERSION, harness_fingerprint
from edge.measure.rows import ok_cell
from edge.measure.timing import CONTENDED, NOISY_INTERVAL_PCT, cell_noise
from edge.run import report_paths

KEPT_REASON = "edge bench replaces them"

CSV_COLUMNS = (
    "artifact",
    "device",
    "status",
    "batch",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "samples",
    "rounds",
    "p50_ci_low_ms",
    "p50_ci_high_ms",
    "ci_level",
    "round_spread_pct",
    "vs_parent_latency",
    "vs_parent_latency_low",
    "vs_parent_latency_high",
    "images_per_s",
    "device_p50_ms",
    "e2e_p50_ms",
    "e2e_images_per_s",
    "energy_j_per_image",
    "peak_rss_mib",
    "peak_gpu_mib",
    "file_size_bytes",
    "threads",
    "top1",
    "top5",
    "drop_points",
    "agreement",
    "simulated",
    "noisy",
    "scenario",
    "loadgen_mode",
    "loadgen_result",
    "early_stopping_met",
    "estimate_ms",
    "loadgen_qps",
    "note",
)


# ---- environment -------------------------------------------------------------------------------


def jetson_state() -> dict[str, Any]:
    """Power mode, clock state and temperatures on a Jetson ({} elsewhere)."""
    if not Path("/etc/nv_tegra_release").exists():
        return {}
    state: dict[str, Any] = {}
    for key, command in (("power_mode", ["nvpmodel", "-q"]), ("clocks", ["jetson_clocks", "--show"])):
        if shutil.which(command[0]):
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
                state[key] = out.splitlines()[:12]
            except (OSError, subprocess.SubprocessError) as exc:
                state[key] = f"unavailable: {exc}"
    temps = {}
    for zone in sorted(Path("/sys/devices/virtual/thermal").glob("thermal_zone*")):
        try:
            temps[(zone / "type").read_text().strip()] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    state["temperatures_c"] = temps
    return state


def bench_environment() -> dict[str, Any]:
    env = environment_fingerprint()
    env["harness"] = harness_fingerprint()
    env.update({f"jetson_{k}": v for k, v in jetson_state().items()})
    return env


# ---- building and reading ----------------------------------------------------------------------


def build_report(settings: dict[str, Any], eval_info: dict[str, Any] | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "environment": bench_environment(),
        "eval": eval_info,
        "rows": rows,
    }


# ---- flat views --------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def row_note(row: dict[str, Any]) -> str:
    if row.get("status") == "skipped":
        return f"skipped: {row.get('reason', '')}"
    if row.get("status") == "error":
        return f"error: {row.get('error', '')}"
    if row.get("status") == "interrupted":
        return f"interrupted: {row.get('reason', '')}"
    notes = []
    if row.get("status") in ("rejected", "unverified"):
        notes.append(f"{row['status']}: {row.get('reason', '')}")
    if row.get("stale"):
        notes.append(f"stale: {row['stale']}")
    for status in ("error", "skipped"):
        cells = [c for c in row.get("cells") or [] if c.get("status") == status]
        if cells:
            why = cells[0].get("error") if status == "error" else cells[0].get("reason")
            notes.append(f"batch {', '.join(str(c['batch']) for c in cells)} {status}: {why}")
    noisy = [(c["batch"], cell_noise(c["compute"])) for c in row.get("cells") or [] if c.get("status") == "ok"]
    noisy = [(b, why) for b, why in noisy if why]
    if noisy:
        notes.append(f"~ noisy p50 at batch {', '.join(str(b) for b, _ in noisy)}: {noisy[0][1]}")
    if row.get("simulated"):
        notes.append("accuracy simulated (TensorRT INT8 on ORT CPU)")
    same_file = (row.get("accuracy") or {}).get("vs_same_file") or {}
    if same_file.get("agreement") is not None:
        notes.append(f"agrees with {same_file['artifact']} (same file) on {same_file['agreement']:.2f}% of {same_file['n']}")
    vs = (row.get("accuracy") or {}).get("vs_parent") or {}
    if vs.get("too_small_for_budget"):
        notes.append("eval set too small for the drop budget")
    return "; ".join(notes)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per artifact x device x batch (one line for a skipped or failed row)."""
    out = []
    for row in report["rows"]:
        acc = row.get("accuracy") or {}
        vs = acc.get("vs_parent") or {}
        base = {
            "artifact": row.get("artifact"),
            "device": row.get("device"),
            "status": row.get("status"),
            "peak_rss_mib": row.get("peak_rss_mib"),
            "peak_gpu_mib": row.get("peak_gpu_mib"),
            "file_size_bytes": row.get("file_size_bytes"),
            "threads": row.get("threads"),
            "top1": acc.get("top1"),
            "top5": acc.get("top5"),
            "drop_points": vs.get("drop_points"),
            "agreement": vs.get("agreement"),
            "simulated": row.get("simulated"),
            "note": row_note(row),
        }
        cells = row.get("cells") or [{}]
        for cell in cells:
            compute, e2e = cell.get("compute") or {}, cell.get("end_to_end") or {}
            line = dict(base)
            line.update(
                batch=cell.get("batch"),
                p50_ms=compute.get("p50_ms"),
                p90_ms=compute.get("p90_ms"),
                p99_ms=compute.get("p99_ms"),
                mean_ms=compute.get("mean_ms"),
                std_ms=compute.get("std_ms"),
                samples=compute.get("samples"),
                rounds=len(compute.get("rounds") or []) or None,
                p50_ci_low_ms=(compute.get("p50_ci_ms") or [None, None])[0],
                p50_ci_high_ms=(compute.get("p50_ci_ms") or [None, None])[1],
                ci_level=compute.get("ci_level"),
                round_spread_pct=compute.get("spread_pct"),
                noisy=cell_noise(compute) if cell.get("status") == "ok" else None,
                vs_parent_latency=(cell.get("vs_parent_latency") or {}).get("estimate"),
                vs_parent_latency_low=(cell.get("vs_parent_latency") or {}).get("low"),
                vs_parent_latency_high=(cell.get("vs_parent_latency") or {}).get("high"),
                images_per_s=compute.get("items_per_s"),
                device_p50_ms=(cell.get("device_ms") or {}).get("p50_ms"),
                e2e_p50_ms=e2e.get("p50_ms"),
                e2e_images_per_s=e2e.get("items_per_s"),
                energy_j_per_image=cell.get("energy_j_per_image"),
            )
            if cell.get("status") == "error":
                line["note"] = f"error: {cell.get('error')}"
            elif cell.get("status") == "skipped":
                line["note"] = f"skipped: {cell.get('reason')}"
            out.append(line)
    return out + scenario_csv_rows(report)


def headline(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The headline table: one line per artifact x device."""
    batches = report["settings"]["batch_sizes"]
    small, large = min(batches), max(batches)
    header = [
        "artifact",
        "device",
        "top-1 %",
        "drop pts",
        "agree %",
        f"p50 b{small} ms",
        f"p50 b{large} ms",
        f"x parent b{small}",
        "img/s best",
        f"e2e p50 b{small} ms",
        "1-stream p90 ms (n)",
        "J/img",
        "peak RSS MiB",
        "size MB",
        "note",
    ]
    lines = []
    absent = absent_devices(report["rows"])
    for device, (count, reason) in absent.items():
        lines.append([f"all {count} artifacts", device, *["n/a"] * (len(header) - 3), f"skipped: {reason}"])
    for row in (r for r in report["rows"] if r.get("device") not in absent):
        acc = row.get("accuracy") or {}
        vs = acc.get("vs_parent") or {}
        ok_cells = [c for c in row.get("cells", []) if c.get("status") == "ok"]
        best = max((c["compute"]["items_per_s"] for c in ok_cells), default=None)
        c_small, c_large = ok_cell(row, small), ok_cell(row, large)
        stream = row.get("single_stream")
        energy = next((c.get("energy_j_per_image") for c in ok_cells if c.get("energy_j_per_image") is not None), None)
        lines.append(
            [
                str(row.get("artifact")),
                str(row.get("device")),
                _fmt(acc.get("top1")),
                _fmt(vs.get("drop_points")),
                _fmt(vs.get("agreement")),
                _p50(c_small),
                _p50(c_large),
                _ratio(c_small),
                _fmt(best, 1),
                _fmt((c_small.get("end_to_end") or {}).get("p50_ms") if c_small else None),
                f"{_fmt(stream['p90_ms'])} ({stream['samples']})" if stream else "n/a",
                _fmt(energy, 4),
                _fmt(row.get("peak_rss_mib"), 0),
                _fmt(row["file_size_bytes"] / 1e6 if row.get("file_size_bytes") else None),
                row_note(row),
            ]
        )
    return header, lines


def _p50(cell: dict[str, Any] | None) -> str:
    """A cell's p50, marked ``~`` when its rounds disagree or other processes held the CPUs
    (``edge.measure.timing.cell_noise``; the row's note says why)."""
    if cell is None:
        return "n/a"
    return ("~" if cell_noise(cell["compute"]) else "") + _fmt(cell["compute"]["p50_ms"])


def absent_devices(rows: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    """Devices on which every row was skipped (no CUDA here): device -> (rows, their reasons, each
    once). Tables show such a device as one line, not a row of n/a per artifact."""
    out = {}
    for device in dict.fromkeys(r.get("device") for r in rows):
        mine = [r for r in rows if r.get("device") == device]
        if len(mine) > 1 and all(r.get("status") == "skipped" for r in mine):
            out[str(device)] = (len(mine), "; ".join(dict.fromkeys(str(r.get("reason")) for r in mine)))
    return out


def _ratio(cell: dict[str, Any] | None) -> str:
    """p50 over the float parent's from the same rounds, with its interval: '0.48 (0.45-0.52)'."""
    ratio = (cell or {}).get("vs_parent_latency")
    if not ratio:
        return "n/a"
    return f"{ratio['estimate']:.2f} ({ratio['low']:.2f}-{ratio['high']:.2f})"


def rich_headline(report: dict[str, Any], title: str = "bench") -> Any:
    """The headline as a rich table; notes (skips, errors, caveats) follow as numbered lines."""
    from rich.console import Group
    from rich.text import Text

    from edge.console import make_table

    header, lines = headline(report)
    energy = header.index("J/img")
    has_energy = any(line[energy] != "n/a" for line in lines)
    same_batch = header[5] == header[6]  # one batch size: one p50 column
    has_ratio = any(line[7] != "n/a" for line in lines)
    drop = {energy} if not has_energy else set()
    drop |= ({6} if same_batch else set()) | ({7} if not has_ratio else set())
    keep = [i for i in range(len(header) - 1) if i not in drop]
    table = make_table(title=title)
    for i in keep:
        table.add_column(header[i], justify="left" if i in (0, 1) else "right")
    table.add_column("note")
    notes = []
    for line in lines:
        mark = ""
        if line[-1]:
            notes.append(line[-1])
            mark = f"[{len(notes)}]"
        style = (
            "dim"
            if line[-1].startswith("skipped")
            else ("red" if line[-1].startswith(("error", "rejected", "unverified", "interrupted")) else None)
        )
        table.add_row(*[line[i] for i in keep], mark, style=style)
    footer = [Text(f"[{i}] {note}", style="dim") for i, note in enumerate(notes, 1)]
    if not has_energy and report["rows"]:
        footer.append(Text("energy per image: n/a (no power source: NVML or tegrastats)", style="dim"))
    if not report["rows"]:
        table = Text("no bench cells (the scenarios measured an endpoint)", style="dim")
    return Group(table, *footer, *scenario_tables(report))


def scenario_tables(report: dict[str, Any]) -> list[Any]:
    """The LoadGen scenarios as a rich table under its note (none without scenarios)."""
    from rich.text import Text

    from bench.scenario_tables import HEADER, scenario_lines
    from edge.console import make_table
    from edge.measure.report import SCENARIO_NOTE as NOT_AUDITED

    lines = scenario_lines(report)
    if not lines:
        return []
    table = make_table(title=f"MLPerf LoadGen scenarios ({NOT_AUDITED})")
    for name in HEADER:
        table.add_column(name, justify="right" if name in ("estimate ms", "p50 ms", "QPS", "queries") else "left")
    for line in lines:
        table.add_row(*line, style=None if line[4] in ("VALID", "accuracy") else "yellow")
    return [Text(""), table]


# ---- files -------------------------------------------------------------------------------------


def interrupted_lines(report: dict[str, Any]) -> list[str]:
    """A partial report (Ctrl-C) says so above its table: where it stopped and what was run."""
    stopped = [r for r in report["rows"] if r.get("status") == "interrupted"]
    if not stopped:
        return []
    settings = report["settings"]
    planned = len(settings.get("artifacts") or []) * len(settings.get("devices") or [])
    of = f" of {planned}" if planned else ""
    where = ", ".join(f"{r.get('artifact')} on {r.get('device')}" for r in stopped)
    done = len(report["rows"]) - len(stopped)
    return [
        f"- **interrupted** (Ctrl-C) while measuring {where}: a partial report; {done}{of} rows finished before it, the rest were not run"
    ]


def noise_lines(report: dict[str, Any]) -> list[str]:
    """How each p50 was measured and how noisy the machine was while it was."""
    window = report["settings"].get("window") or {}
    noise = report.get("noise") or {}
    if not window.get("rounds"):
        return []
    load = noise.get("load_average_1m") or [None, None]
    return [
        f"- each cell timed in {window['rounds']} rounds stepped in turn across the artifacts of a device; p50 = median of "
        "round p50s with an order-statistic interval (csv: p50_ci_*); 'x parent' = p50 over the float parent's from the same rounds",
        f"- `~` before a p50: its rounds disagree beyond what its interval can carry (the interval spans over "
        f"{NOISY_INTERVAL_PCT:.0f}% of the p50) or other processes held over {CONTENDED * 100:.0f}% of the CPUs while it ran; "
        "its note says which (csv: noisy)",
        f"- noise: 1-min load average {_fmt(load[0])} -> {_fmt(load[1])} on {noise.get('cpu_count')} CPUs; machine probe "
        f"{_fmt(noise.get('probe_p50_ms'), 3)} ms, spread {_fmt(noise.get('probe_spread_pct'), 1)}% over all rounds; median round "
        f"spread of a cell {_fmt(noise.get('median_round_spread_pct'), 1)}%; other processes used "
        f"{_fmt(noise.get('others_cpu_pct'), 0)}% of the CPUs during the rounds (median)",
    ]


def render_markdown(report: dict[str, Any]) -> str:
    env, settings, ev = report["environment"], report["settings"], report.get("eval") or {}
    header, lines = headline(report)
    out = [
        f"# Bench report: {settings.get('run')}",
        "",
        f"- machine: {env.get('cpu_model')} ({env.get('cpu_count')} CPUs){', GPU ' + env['gpu_name'] if env.get('gpu_name') else ''}"
        f", fingerprint `{env.get('machine_fingerprint')}`",
        f"- profile `{settings.get('profile')}`, batch sizes {settings.get('batch_sizes')}, threads {settings.get('threads') or 'default'}, "
        f"window: warm-up {settings['window']['warmup_s']} s, at least {settings['window']['min_iters']} iterations and {settings['window']['min_seconds']} s",
        f"- evaluation: {ev.get('data')} test split, {ev.get('count')} images (fingerprint `{ev.get('fingerprint')}`)"
        if ev
        else "- evaluation: none (timing only)",
        "- latency in ms per batch (compute-only: preprocessed batch in host memory); e2e includes preprocessing from decoded images",
        *noise_lines(report),
        *interrupted_lines(report),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(v.replace("|", "/") for v in line) + " |" for line in lines]
    out += markdown_section(report)
    out.append("")
    return "\n".join(out)


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for line in csv_rows(report):
        writer.writerow({k: ("" if v is None else v) for k, v in line.items()})
    return buffer.getvalue()


def keep_previous(out_dir: Path, run_root: Path | None = None) -> Path | None:
    """Keep the report set already in ``out_dir`` (if any) under ``RUN/history/<UTC time>/`` (the
    run's history when ``out_dir`` lies in ``run_root``, else ``out_dir/history/``) at the same
    relative paths, so a new bench never silently replaces an earlier one; returns that folder, or
    None. Hard links, or copies where the file system has none (vfat, exFAT): the files in place
    stay until the new set replaces them (a failed write leaves them, and ``forget`` drops the kept
    copy). When the keeping fails, nothing is replaced: the OSError names the report."""
    report = report_paths(out_dir)
    root = history.history_root(report["json"], run_root)
    return history.keep_previous(root, report.values(), KEPT_REASON, announce=False)


def forget(kept: Path | None) -> None:
    """Undo ``keep_previous`` (the write that followed it failed): its folder, and history/ if empty,
    unless some file in it was already replaced (then it is the only copy, and stays)."""
    history.forget(kept)


def write_report(report: dict[str, Any], out_dir: Path, spec: Any = None) -> dict[str, Path]:
    """Write report.{json,csv,md,png} together, then report.json's ``bench-report`` manifest (which
    hashes the others); returns the paths written.

    The files are staged and renamed into place only when all were written (a full disk or Ctrl-C
    leaves the previous report set whole). Without matplotlib there is no report.png (its absence
    from the result and ``plot_unavailable()`` say why), and one left by an earlier bench is
    removed, so the folder never shows a plot of other numbers.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    every = report_paths(out_dir)
    # no rows (a served endpoint's scenarios alone): nothing to plot
    formats = ["json", "csv", "md"] if plot_unavailable() or not report["rows"] else ["json", "csv", "md", "png"]
    paths = {fmt: every[fmt] for fmt in formats}
    texts = {
        "json": json.dumps(report, indent=2, sort_keys=True, default=_jsonable) + "\n",
        "csv": render_csv(report),
        "md": render_markdown(report),
    }
    with atomic_paths(*paths.values()) as staged:
        for fmt, tmp in zip(paths, staged):
            if fmt == "png":
                render_png(report, tmp)
            else:
                tmp.write_bytes(texts[fmt].encode("utf-8"))
    if "png" not in paths:
        every["png"].unlink(missing_ok=True)
    measured = [r for r in report["rows"] if r.get("status") == "ok"]
    write_manifest(
        paths["json"],
        "bench-report",
        spec,
        provenance={"run": report["settings"].get("run"), "profile": report["settings"].get("profile")},
        metrics={
            "rows": len(report["rows"]),
            "ok": len(measured),
            "rejected": sum(r.get("status") == "rejected" for r in report["rows"]),
            "unverified": sum(r.get("status") == "unverified" for r in report["rows"]),
            "interrupted": sum(r.get("status") == "interrupted" for r in report["rows"]),
            "top1": {f"{r['artifact']}@{r['device']}": (r.get("accuracy") or {}).get("top1") for r in measured},
        },
        extra_files=[path for fmt, path in paths.items() if fmt != "json"],
        environment=report["environment"],
    )
    return paths


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: numpy values and arrays, paths, sets and tuples."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
