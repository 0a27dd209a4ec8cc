"""The scenarios of a bench: one worker per measured row (artifact x device), after bench's own cells.

Each row's job carries what bench just measured for it: the batch size with the best images/s
(the Server batcher's and Offline's batch), the batch-1 p50 and best images/s (LoadGen's expected
latency and QPS), and half the best images/s as the Server's arrival rate unless
``--server-qps`` is given. The entries come back flat, one per row x scenario x mode, with the row's
own top-1 beside an accuracy run's.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import NOT_AUDITED
from bench.loadgen.scenarios import ScenarioOptions
from bench.processes import WorkerInterrupted, run_worker
from edge.measure.report import MEASURED
from edge.measure.rows import row_backend

EXPECTED_SHARE = 0.25  # of bench's batch-1 p50: LoadGen's expected latency (SingleStream, MultiStream x 8)
OFFLINE_MARGIN = 2.0  # LoadGen's Offline expected QPS, over bench's best images/s
SERVER_LOAD = 0.5  # the Server's default arrival rate, as a share of the row's best images/s


def best_cell(row: dict[str, Any]) -> dict[str, Any] | None:
    cells = [c for c in row.get("cells") or [] if c.get("status") == "ok"]
    return max(cells, key=lambda c: c["compute"]["items_per_s"]) if cells else None


def row_options(row: dict[str, Any], options: ScenarioOptions) -> tuple[ScenarioOptions, int]:
    """The options for ``row`` (expected latency and QPS, the Server rate) and its best batch."""
    best = best_cell(row)
    one = next((c for c in row.get("cells") or [] if c.get("status") == "ok" and c["batch"] == 1), None)
    rate = best["compute"]["items_per_s"] if best else None
    filled = replace(
        options,
        # LoadGen generates its queries from the expected latency before it starts: a quarter of
        # bench's p50 so that a faster stretch never runs out of them ("ran out of generated queries")
        expected_ms=options.expected_ms or (one["compute"]["p50_ms"] * EXPECTED_SHARE if one else None),
        # Offline's one query holds expected QPS x the minimum duration samples: twice bench's best, so
        # a faster run still lasts the minimum duration (measured: 1x ran 1.6x faster and was INVALID)
        expected_qps=options.expected_qps or (rate * OFFLINE_MARGIN if rate else None),
        server_qps=options.server_qps or (rate * SERVER_LOAD if rate else None),
    )
    return filled, int(best["batch"]) if best else 1


def scenario_job(
    row: dict[str, Any], plan: Any, scenarios: list[str], mode: str, options: ScenarioOptions, budget_mib: float, out: Path
) -> dict[str, Any]:
    filled, batch = row_options(row, options)
    name = row["artifact"]
    return {
        "kind": "loadgen",
        "name": name,
        "backend": row_backend(name),
        "path": row["path"],
        "device": row["device"],
        "threads": plan.threads,
        "eval": asdict(plan.eval),
        "scenarios": scenarios,
        "mode": mode,
        "options": filled.to_dict(),
        "budget_mib": budget_mib,
        "max_batch": batch,
        "out": str(out),
    }


def run_scenarios(
    rows: list[dict[str, Any]],
    plan: Any,
    scenarios: list[str],
    mode: str,
    options: ScenarioOptions,
    budget_mib: float,
    out: Path,
    on_row: Any = None,
) -> dict[str, Any]:
    """Every measured row's scenarios, each row in its own worker; the report's ``loadgen`` section."""
    entries: list[dict[str, Any]] = []
    for row in rows:
        if row.get("status") not in MEASURED:
            continue
        if on_row is not None:
            on_row(row)
        job = scenario_job(row, plan, scenarios, mode, options, budget_mib, out)
        where = {"artifact": row["artifact"], "device": row["device"]}
        try:
            result = run_worker(job, plan.timeout_s * max(1, len(scenarios)), module="bench.loadgen.job")
        except WorkerInterrupted as exc:  # Ctrl-C: its worker is stopped; the rest is not run, the report is written
            entries += [{**where, "scenario": s, "mode": mode, **exc.row} for s in scenarios]
            break
        if result.get("status") != "ok":
            detail = {k: result[k] for k in ("error", "reason") if k in result}
            entries += [
                {**where, "scenario": s, "mode": mode, "status": result.get("status", "error"), **detail} for s in scenarios
            ]
            continue
        for entry in result["scenarios"]:
            attach_bench_accuracy(entry, row)
            entries.append({**where, **entry})
    return {"note": NOT_AUDITED, "scenarios": scenarios, "mode": mode, "budget_mib": budget_mib, "entries": entries}


def attach_bench_accuracy(entry: dict[str, Any], row: dict[str, Any]) -> None:
    """Beside an accuracy run's top-1: bench's own on the same images, and how many answers agree."""
    scored, own = entry.get("accuracy"), row.get("accuracy") or {}
    if not scored or scored.get("predictions") is None:
        return
    scored["bench_top1"] = own.get("top1")
    if own.get("predictions") is not None and len(own["predictions"]) == len(scored["predictions"]):
        same = np.asarray(own["predictions"]) == np.asarray(scored["predictions"])
        scored["agreement_with_bench"] = float(np.mean(same) * 100.0)
    scored.pop("predictions")  # the row keeps bench's; the agreement says how LoadGen's answers compare
