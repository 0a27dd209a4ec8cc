"""Model comparison: the measured version of the usual "fast / medium / slow" table.

    edge bench --zoo resnet18,resnet50,efficientnet_b0,efficientnet_b4,vit_b_16,tf_efficientnet_lite0,mobilenet_v3_large

For each architecture: parameters, GMACs at its own input size (counted with
``torch.utils.flop_counter``, which counts 2 FLOPs per multiply-accumulate), the published
ImageNet top-1 of its pretrained weights where the metadata has it, and the measured latency at
batch 1 and 32 on each device. Timing needs no weights (``pretrained=False``): the arithmetic is
the same. Each model x device runs in its own worker process (``bench.worker``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import Skip, peak_memory, unavailable_reason
from edge.errors import UserError
from edge.measure.timing import TimingWindow, time_calls
from edge.run import ZOO_REPORT

ZOO_BATCHES = (1, 32)
ZOO_WINDOW = TimingWindow(warmup_s=0.5, min_iters=10, min_seconds=1.0, max_seconds=15.0)


def count_macs(model: Any, input_shape: tuple[int, ...]) -> float:
    """Multiply-accumulates of one forward pass at batch 1 (FlopCounterMode counts 2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() / 2.0


def zoo_job(
    arch: str, device: str, threads: int | None, window: TimingWindow, batch_sizes: list[int] | None = None
) -> dict[str, Any]:
    return {
        "kind": "zoo",
        "name": arch,
        "arch": arch,
        "device": device,
        "threads": threads,
        "batch_sizes": list(batch_sizes or ZOO_BATCHES),
        "window": asdict(window),
    }


def run_zoo_job(job: dict[str, Any]) -> dict[str, Any]:
    """In the worker: build ``arch`` without weights, count it, time it on the job's device."""
    from edge.runners.torch_runner import TorchRunner
    from train.models import build_model, pretrained_spec, zoo_entry

    arch, device = job["arch"], job["device"]
    reason = unavailable_reason(Path("zoo.pt"), device)
    if reason:
        raise Skip(reason)
    entry = zoo_entry(arch)
    spec = pretrained_spec(arch)
    model = build_model(arch, num_classes=None, pretrained=False).eval()
    result: dict[str, Any] = {
        "arch": arch,
        "library": entry.library,
        "imagenet_top1": entry.imagenet_top1,
        "input_size": spec.input_size,
        "params": int(sum(p.numel() for p in model.parameters())),
        "macs": count_macs(model, spec.input_shape),
        "cells": [],
    }
    window = TimingWindow(**job["window"])
    rng = np.random.default_rng(0)
    with TorchRunner(Path(f"{arch}.pt"), spec, device=device, threads=job.get("threads"), model=model) as runner:
        result["threads"] = runner.threads
        for batch in job["batch_sizes"]:
            print(f"progress 0 1 batch {batch}", flush=True)
            inputs = rng.standard_normal((batch, *spec.input_shape)).astype(np.float32)

            def call(_: int, inputs: np.ndarray = inputs) -> float | None:
                runner.infer(inputs)
                return runner.last_device_ms

            stats, device_ms = time_calls(call, window, batch)
            result["cells"].append(
                {
                    "batch": batch,
                    "status": "ok",
                    "compute": stats.to_dict(),
                    "device_p50_ms": float(np.median(device_ms)) if device_ms else None,
                }
            )
    result.update(peak_memory(device))
    return result


def parse_zoo(text: str) -> list[str]:
    """Comma list of architectures, each checked against the zoo before any work starts."""
    from train.models import zoo_entry

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError("--zoo needs a comma list of architectures, e.g. resnet18,tf_efficientnet_lite0")
    for name in names:
        zoo_entry(name)
    return names


def zoo_table(rows: list[dict[str, Any]], batch_sizes: list[int] | None = None) -> tuple[list[str], list[list[str]]]:
    """One line per model x device: size, cost, published top-1 and p50 at each measured batch size."""
    batches = list(batch_sizes or ZOO_BATCHES)
    header = ["model", "params M", "GMACs", "ImageNet top-1", "input", "device"]
    header += [f"p50 b{b} ms" for b in batches] + [f"img/s b{max(batches)}", "peak RSS MiB", "note"]
    lines = []
    for row in rows:
        cells = {c["batch"]: c for c in row.get("cells", [])}
        note = row.get("reason") or row.get("error") or ""
        lines.append(
            [
                row["arch"],
                f"{row['params'] / 1e6:.1f}" if "params" in row else "n/a",
                f"{row['macs'] / 1e9:.2f}" if "macs" in row else "n/a",
                f"{row['imagenet_top1']:.1f}" if row.get("imagenet_top1") is not None else "n/a",
                str(row.get("input_size", "n/a")),
                row["device"],
                *[f"{cells[b]['compute']['p50_ms']:.2f}" if b in cells else "n/a" for b in batches],
                f"{cells[max(batches)]['compute']['items_per_s']:.1f}" if max(batches) in cells else "n/a",
                f"{row['peak_rss_mib']:.0f}" if row.get("peak_rss_mib") else "n/a",
                f"{row['status']}: {note}" if note else "",
            ]
        )
    return header, lines


DEFAULT_ZOO_OUT = Path("runs") / "zoo"


def zoo_rich_table(header: list[str], lines: list[list[str]]) -> Any:
    from edge.console import make_table

    table = make_table(*header, title="model comparison (latency: torch eager, random weights, ms per batch)")
    for line in lines:
        table.add_row(*line, style="dim" if line[-1].startswith("skipped") else None)
    return table


def run_zoo(
    text: str,
    devices: list[str],
    threads: int | None,
    out: Path | None,
    timeout_s: float,
    console: Any,
    batch_sizes: list[int] | None = None,
) -> int:
    """Measure every architecture on every device; print the table; write zoo.{json,md,csv,png} to
    ``out`` (default ``runs/zoo``) and say where."""
    from bench.processes import run_worker
    from edge.console import make_progress

    archs = parse_zoo(text)
    batches = list(batch_sizes or ZOO_BATCHES)
    rows = []
    with make_progress(console=console, unit="models") as progress:
        task = progress.add_task("zoo", total=len(archs) * len(devices))
        for arch in archs:
            for device in devices:
                progress.update(task, description=f"zoo: {arch} on {device}")
                result = run_worker(zoo_job(arch, device, threads, ZOO_WINDOW, batches), timeout_s)
                result.update(arch=arch, device=device)
                rows.append(result)
                progress.advance(task)
    header, lines = zoo_table(rows, batches)
    console.print(zoo_rich_table(header, lines))
    kept: list[str] = []
    written = write_zoo(out or DEFAULT_ZOO_OUT, rows, header, lines, batches, say=kept.append)
    console.print(f"zoo report: {', '.join(str(p) for p in written)}", highlight=False)
    for line in kept:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    return 0 if any(r.get("status") == "ok" for r in rows) else 1


def write_zoo(
    out: Path,
    rows: list[dict[str, Any]],
    header: list[str],
    lines: list[list[str]],
    batches: list[int],
    say: Callable[[str], object] | None = None,
) -> list[Path]:
    """zoo.json (every figure), zoo.md and zoo.csv (the table), zoo.png (p50 per model, where matplotlib
    is). The previous files of that set are kept under ``out/history/<UTC time>/``; ``say`` gets the line."""
    import csv
    import io

    from bench.plots import plot_unavailable
    from bench.report import bench_environment
    from edge.atomic import atomic_write_json, atomic_write_text
    from edge.history import history_root, keeping_previous, replaces

    out.mkdir(parents=True, exist_ok=True)
    data = {
        "schema": "edge-zoo-report",
        "schema_version": 1,
        "environment": bench_environment(),
        "batch_sizes": batches,
        "rows": rows,
    }
    plot = plot_unavailable() is None
    targets = [out / f"{ZOO_REPORT}.{fmt}" for fmt in ("json", "md", "csv", *(("png",) if plot else ()))]
    with keeping_previous(history_root(targets[0]), targets, replaces("edge bench --zoo", targets), say=say):
        written = [atomic_write_json(targets[0], data)]
        md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        md += ["| " + " | ".join(line) + " |" for line in lines]
        written.append(atomic_write_text(targets[1], "\n".join(md) + "\n"))
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *lines])
        written.append(atomic_write_text(targets[2], buffer.getvalue()))
        if plot:
            written.append(plot_zoo(targets[3], rows, batches))
    return written


def plot_zoo(path: Path, rows: list[dict[str, Any]], batches: list[int]) -> Path:
    """Horizontal bars: p50 at each measured batch size per model x device (log scale, values written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.plots import bar_panel
    from edge.atomic import atomic_path

    measured = [r for r in rows if r.get("status") == "ok"]
    labels = [f"{r['arch']} ({r['device']})" for r in measured]
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 1.0 + 0.45 * max(len(labels), 1)), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        values = [next((c["compute"]["p50_ms"] for c in r["cells"] if c["batch"] == batch), None) for r in measured]
        bar_panel(ax, labels, values, f"p50 at batch {batch} (ms)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
