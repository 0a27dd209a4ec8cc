"""Bench reports: ``report.json`` (versioned schema), ``report.csv``, ``report.md``, ``report.png``,
and the rich tables printed in the terminal.

``report.json`` (schema ``edge-bench-report``, ``schema_version`` 1) holds::

    settings     what was asked: artifacts, devices, batch sizes, window, threads, profile
    environment  edge.artifacts.environment_fingerprint() (+ Jetson power mode, clocks, temperatures)
    eval         data, count, seed, split fingerprint, classes and the per-image labels
    rows[]       one per artifact x device: status (ok | error | skipped) with error / reason,
                 threads, peak_rss_mib, peak_gpu_mib, file_size_bytes, simulated, manifest_metrics,
                 cells[] per batch (compute / end_to_end timing stats, device_ms, energy_j_per_image),
                 single_stream (batch 1 stats with its sample count), and accuracy: top1, top5 and
                 the per-image top-1 ``predictions``, plus ``vs_parent`` (drop, agreement, flips)

The per-image predictions are stored (not just counts) so that ``edge check`` can recount the
paired flips against the float parent, and against a baseline report on the same evaluation set.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from edge.artifacts import atomic_path, atomic_write_json, atomic_write_text, environment_fingerprint, write_manifest
from edge.errors import UserError
from edge.run import REPORT, RunDir, report_paths

SCHEMA = "edge-bench-report"
SCHEMA_VERSION = 1
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


def read_report(path: str | Path) -> dict[str, Any]:
    """A report.json, checked against the schema; clear errors for anything else."""
    path = Path(path)
    if path.is_dir():
        candidates = (RunDir(path).bench / f"{REPORT}.json", path / f"{REPORT}.json")
        path = candidates[0] if candidates[0].exists() else candidates[1]
    if not path.is_file():
        raise UserError(f"bench report {path} does not exist: run `edge bench RUN` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a readable bench report: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{path} is not an edge bench report (no schema {SCHEMA!r})")
    if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
        raise UserError(f"{path} has schema version {data['schema_version']}, newer than this tool ({SCHEMA_VERSION})")
    missing = [k for k in ("settings", "environment", "eval", "rows") if k not in data]
    if missing or not isinstance(data["rows"], list):
        raise UserError(f"{path} is missing {missing or ['rows']}: rewrite it with `edge bench`")
    return data


# ---- flat views --------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _cell(row: dict[str, Any], batch: int) -> dict[str, Any] | None:
    return next((c for c in row.get("cells", []) if c.get("batch") == batch and c.get("status") == "ok"), None)


def row_note(row: dict[str, Any]) -> str:
    if row.get("status") == "skipped":
        return f"skipped: {row.get('reason', '')}"
    if row.get("status") == "error":
        return f"error: {row.get('error', '')}"
    notes = []
    if row.get("simulated"):
        notes.append("accuracy simulated (TensorRT INT8 on ORT CPU)")
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
                images_per_s=compute.get("items_per_s"),
                device_p50_ms=(cell.get("device_ms") or {}).get("p50_ms"),
                e2e_p50_ms=e2e.get("p50_ms"),
                e2e_images_per_s=e2e.get("items_per_s"),
                energy_j_per_image=cell.get("energy_j_per_image"),
            )
            if cell.get("status") == "error":
                line["note"] = f"error: {cell.get('error')}"
            out.append(line)
    return out


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
        "img/s best",
        f"e2e p50 b{small} ms",
        "1-stream p90 ms (n)",
        "J/img",
        "peak RSS MiB",
        "size MB",
        "note",
    ]
    lines = []
    for row in report["rows"]:
        acc = row.get("accuracy") or {}
        vs = acc.get("vs_parent") or {}
        ok_cells = [c for c in row.get("cells", []) if c.get("status") == "ok"]
        best = max((c["compute"]["items_per_s"] for c in ok_cells), default=None)
        c_small, c_large = _cell(row, small), _cell(row, large)
        stream = row.get("single_stream")
        energy = next((c.get("energy_j_per_image") for c in ok_cells if c.get("energy_j_per_image") is not None), None)
        lines.append(
            [
                str(row.get("artifact")),
                str(row.get("device")),
                _fmt(acc.get("top1")),
                _fmt(vs.get("drop_points")),
                _fmt(vs.get("agreement")),
                _fmt(c_small["compute"]["p50_ms"] if c_small else None),
                _fmt(c_large["compute"]["p50_ms"] if c_large else None),
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


def rich_headline(report: dict[str, Any], title: str = "bench") -> Any:
    """The headline as a rich table; notes (skips, errors, caveats) follow as numbered lines."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header, lines = headline(report)
    has_energy = any(line[10] != "n/a" for line in lines)
    keep = [i for i in range(len(header) - 1) if has_energy or i != 10]
    table = Table(title=title)
    for i in keep:
        table.add_column(header[i], justify="left" if i in (0, 1) else "right")
    table.add_column("note")
    notes = []
    for line in lines:
        mark = ""
        if line[-1]:
            notes.append(line[-1])
            mark = f"[{len(notes)}]"
        style = "dim" if line[-1].startswith("skipped") else ("red" if line[-1].startswith("error") else None)
        table.add_row(*[line[i] for i in keep], mark, style=style)
    footer = [Text(f"[{i}] {note}", style="dim") for i, note in enumerate(notes, 1)]
    if not has_energy:
        footer.append(Text("energy per image: n/a (no power source: NVML or tegrastats)", style="dim"))
    return Group(table, *footer)


# ---- files -------------------------------------------------------------------------------------


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
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(v.replace("|", "/") for v in line) + " |" for line in lines]
    out.append("")
    return "\n".join(out)


def render_csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for line in csv_rows(report):
        writer.writerow({k: ("" if v is None else v) for k, v in line.items()})
    return buffer.getvalue()


def render_png(report: dict[str, Any], path: Path) -> None:
    """Latency and throughput against batch size per artifact x device, and accuracy against latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_thr, ax_acc) = plt.subplots(1, 3, figsize=(16, 4.8))
    for row in report["rows"]:
        cells = [c for c in row.get("cells", []) if c.get("status") == "ok"]
        if not cells:
            continue
        label = f"{row['artifact']} ({row['device']})"
        batches = [c["batch"] for c in cells]
        ax_lat.plot(batches, [c["compute"]["p50_ms"] for c in cells], marker="o", label=label)
        ax_thr.plot(batches, [c["compute"]["items_per_s"] for c in cells], marker="o", label=label)
        top1 = (row.get("accuracy") or {}).get("top1")
        if top1 is not None:
            ax_acc.scatter([cells[0]["compute"]["p50_ms"]], [top1], label=label)
            ax_acc.annotate(row["artifact"], (cells[0]["compute"]["p50_ms"], top1), fontsize=8)
    for ax, title, ylabel in (
        (ax_lat, "p50 latency per batch", "ms"),
        (ax_thr, "throughput", "images/s"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")  # backends differ by orders of magnitude
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    ax_acc.set_xscale("log")
    ax_acc.set_xlabel(f"p50 latency at batch {min(report['settings']['batch_sizes'])} (ms)")
    ax_acc.set_ylabel("top-1 %")
    ax_acc.set_title("accuracy vs latency")
    ax_acc.grid(True, alpha=0.3)
    ax_thr.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path, spec: Any = None) -> dict[str, Path]:
    """Write report.{json,csv,md,png} atomically; report.json gets a ``bench-report`` manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = report_paths(out_dir)
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["csv"], render_csv(report))
    atomic_write_text(paths["md"], render_markdown(report))
    render_png(report, paths["png"])
    ok = [r for r in report["rows"] if r.get("status") == "ok"]
    write_manifest(
        paths["json"],
        "bench-report",
        spec,
        provenance={"run": report["settings"].get("run"), "profile": report["settings"].get("profile")},
        metrics={
            "rows": len(report["rows"]),
            "ok": len(ok),
            "top1": {f"{r['artifact']}@{r['device']}": (r.get("accuracy") or {}).get("top1") for r in ok},
        },
        extra_files=[paths["csv"], paths["md"], paths["png"]],
        environment=report["environment"],
    )
    return paths
