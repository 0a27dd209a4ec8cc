"""List an MLflow experiment's tracked runs as one table: one line per run directory's pipeline.

    edge runs                         # experiment "runs" (the default of runs/NAME directories)
    edge runs demos --sort cpu_b1     # fastest CPU latency at batch 1 first
    edge runs --sort fp32_top1 --ids  # best float top-1 first, with the run ids edge compare takes

Columns: the run (its directory's name), model, mode, input size, FP32 top-1 (%, bench's float
artifact, else training's test top-1), INT8 drop (points, the largest of the INT8 rows, else
quantize's), p50 in ms at batch 1 and 8 per device (the fastest artifact measured there), and the
gate's verdict. A figure not measured reads n/a. --sort puts the best first (highest top-1, lowest
drop and latency, newest start; names A to Z); --reverse turns it round. The store is
MLFLOW_TRACKING_URI, else ./mlflow.db (docs/tracking.md).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from edge.errors import UserError

FIXED = ("run", "started", "model", "mode", "size", "fp32_top1", "int8_drop", "gate")
HIGHER_IS_BETTER = ("fp32_top1", "started")
DEVICE_ORDER = ("cpu", "cuda")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", default="runs", help="MLflow experiment name (default: runs)")
    parser.add_argument(
        "--sort",
        metavar="COLUMN",
        default="started",
        help=f"{', '.join(FIXED)} or a latency column such as cpu_b1, cuda_b8 (default: started, newest first)",
    )
    parser.add_argument("--reverse", action="store_true", help="worst first (or oldest first)")
    parser.add_argument("--ids", action="store_true", help="show each pipeline's MLflow run id (edge compare takes it)")


def latency_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The latency columns present (``cpu b1``, ``cpu b8``, ``cuda b1`` ...), cpu first."""
    keys = {key for row in rows for key in row["latency"]}

    def order(key: str) -> tuple[int, str, int]:
        device, batch = key.split(" b")
        rank = DEVICE_ORDER.index(device) if device in DEVICE_ORDER else len(DEVICE_ORDER)
        return rank, device, int(batch)

    return sorted(keys, key=order)


def sort_rows(rows: list[dict[str, Any]], column: str, reverse: bool = False) -> list[dict[str, Any]]:
    """Best first by ``column`` (a FIXED name or ``cpu_b1``); rows without the figure last, either way."""
    latency = {key.replace(" ", "_"): key for key in latency_keys(rows)}
    if column not in FIXED and column not in latency:
        known = ", ".join([*FIXED, *latency])
        raise UserError(f"--sort {column}: no such column; use one of {known}")

    def value(row: dict[str, Any]) -> Any:
        return row["latency"].get(latency[column]) if column in latency else row[column]

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    descending = (column in HIGHER_IS_BETTER) != reverse
    return sorted(present, key=value, reverse=descending) + missing


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def runs_table(rows: list[dict[str, Any]], title: str, ids: bool = False) -> Any:
    """The table: short headers, every cell whole (edge.console folds or re-flows, never cuts)."""
    from edge.console import make_table

    latency = latency_keys(rows)
    headers = ["run", *(["id"] if ids else []), "model", "mode", "px", "fp32 %", "int8 Δpt", *latency, "gate"]
    table = make_table(*headers, title=title)
    for column in table.columns[headers.index("px") :]:
        column.justify = "right"
    table.columns[-1].justify = "left"
    for row in rows:
        started = datetime.fromtimestamp(row["started"] / 1000, tz=timezone.utc).strftime("%m-%d %H:%M") if row["started"] else ""
        table.add_row(
            f"{row['run']}\n{started}",
            *([row["id"]] if ids else []),
            _fmt(row["model"]),
            _fmt(row["mode"]),
            _fmt(row["size"]),
            _fmt(row["fp32_top1"]),
            _fmt(row["int8_drop"]),
            *(_fmt(row["latency"].get(key)) for key in latency),
            {"passed": "pass", "failed": "FAIL"}.get(row["gate"] or "", "n/a"),
        )
    return table


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console
    from edge.tracking.options import tracking_uri
    from edge.tracking.readback import experiment, pipeline_row, pipelines
    from edge.tracking.store import reading_client

    uri = tracking_uri()
    client = reading_client(uri)
    found = experiment(client, args.experiment)
    rows = sort_rows([pipeline_row(p) for p in pipelines(client, found.experiment_id)], args.sort, args.reverse)
    console = make_console()
    if not rows:
        console.print(f"experiment {args.experiment!r} at {uri} has no tracked run yet (edge train|quantize|bench|check --track)")
        return 0
    title = f"{args.experiment}: {len(rows)} run{'s' if len(rows) != 1 else ''} (p50 ms: the fastest artifact per device)"
    console.print(runs_table(rows, title, ids=args.ids))
    return 0
