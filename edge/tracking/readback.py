"""Reading tracked runs back: an experiment's pipelines as table rows, and bench reports by run id.

A *pipeline* is a parent run (one run directory and checkpoint) with its stage runs; its row takes
each figure from the newest stage run that has it: FP32 top-1 from bench (the float artifact, else
training's test top-1), the INT8 drop from bench (the largest over the INT8 rows, else
quantize's), p50 at batch 1 and 8 per device from bench (the fastest artifact measured ``ok`` there),
the gate's verdict from check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.tracking.records import TAG_GATE, TAG_ROLE, TAG_STAGE
from edge.tracking.store import PARENT_RUN_ID, PIPELINE

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
FLOAT_ARTIFACTS = ("torch-fp32", "onnx-fp32")
LATENCY_BATCHES = (1, 8)
PAGE = 1000


@dataclass
class Pipeline:
    """A parent run and its stage runs, newest first."""

    run: Any
    stages: list[Any] = field(default_factory=list)

    def newest(self, stage: str) -> Any | None:
        return next((r for r in self.stages if r.data.tags.get(TAG_STAGE) == stage), None)

    def all(self, stage: str) -> list[Any]:
        return [r for r in self.stages if r.data.tags.get(TAG_STAGE) == stage]


def experiment(client: Any, name: str) -> Any:
    found = client.get_experiment_by_name(name)
    if found is None:
        names = [e.name for e in client.search_experiments(max_results=20)]
        listed = ", ".join(repr(n) for n in names) or "none"
        raise UserError(f"no MLflow experiment {name!r} at {client.tracking_uri} (experiments: {listed})")
    return found


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=PAGE, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def pipelines(client: Any, experiment_id: str) -> list[Pipeline]:
    """Every pipeline of the experiment, newest first, each with its stage runs."""
    runs = _all_runs(client, experiment_id)
    parents = {r.info.run_id: Pipeline(r) for r in runs if r.data.tags.get(TAG_ROLE) == PIPELINE}
    for run in runs:
        parent = parents.get(run.data.tags.get(PARENT_RUN_ID, ""))
        if parent is not None:
            parent.stages.append(run)
    return list(parents.values())


def _metric_groups(run: Any, name: str) -> dict[tuple[str, ...], float]:
    """``name.<artifact>.<device>[.b<batch>]`` metrics of a run, keyed by their parts."""
    out = {}
    for key, value in (run.data.metrics if run is not None else {}).items():
        parts = key.split(".")
        if parts[0] == name and len(parts) >= 3:
            out[tuple(parts[1:])] = float(value)
    return out


def latency_columns(bench: Any) -> dict[str, float]:
    """``{"cpu b1": 0.62, "cpu b8": 3.8}``: per device and batch, the fastest p50 among rows measured ok."""
    if bench is None:
        return {}
    tags = bench.data.tags
    best: dict[str, float] = {}
    for parts, value in _metric_groups(bench, "p50_ms").items():
        if len(parts) != 3 or tags.get(f"edge.row.{parts[0]}.{parts[1]}") != "ok":
            continue
        batch = parts[2].removeprefix("b")
        if batch.isdigit() and int(batch) in LATENCY_BATCHES:
            column = f"{parts[1]} b{batch}"
            best[column] = min(value, best.get(column, value))
    return best


def pipeline_row(pipeline: Pipeline) -> dict[str, Any]:
    """One table row: the run, what was trained, its accuracy, latency and gate (None: not measured)."""
    tags = pipeline.run.data.tags
    bench, train, check = pipeline.newest("bench"), pipeline.newest("train"), pipeline.newest("check")
    top1s = _metric_groups(bench, "top1")
    fp32 = next((v for (artifact, *_), v in top1s.items() if artifact in FLOAT_ARTIFACTS), None)
    if fp32 is None and train is not None:
        fp32 = train.data.metrics.get("test_top1")
    drops = [v for (artifact, *_), v in _metric_groups(bench, "drop_points").items() if "int8" in artifact]
    if not drops:
        drops = [q.data.metrics["drop_points"] for q in pipeline.all("quantize") if "drop_points" in q.data.metrics]
    size = tags.get("edge.input_size")
    return {
        "run": pipeline.run.info.run_name or Path(tags.get("edge.run_dir", "?")).name,
        "id": pipeline.run.info.run_id,
        "started": pipeline.run.info.start_time,
        "model": tags.get("edge.model"),
        "mode": tags.get("edge.mode"),
        "size": int(size) if size and size.isdigit() else None,
        "fp32_top1": fp32,
        "int8_drop": max(drops) if drops else None,
        "latency": latency_columns(bench),
        "gate": check.data.tags.get(TAG_GATE) if check is not None else None,
    }


# ---- bench reports for `edge compare` -----------------------------------------------------------------


def looks_like_mlflow(text: str) -> bool:
    """Could be a run id or an experiment name: no path separator, no .json (a folder of that name is tried first)."""
    return "/" not in text and not text.endswith(".json")


def _bench_run_of(client: Any, run: Any) -> Any | None:
    if run.data.tags.get(TAG_STAGE) == "bench":
        return run
    if run.data.tags.get(TAG_ROLE) != PIPELINE:
        return None
    query = f"tags.`{PARENT_RUN_ID}` = '{run.info.run_id}' and tags.`{TAG_STAGE}` = 'bench'"
    found = client.search_runs(
        [run.info.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return found[0] if found else None


def bench_runs(client: Any, text: str) -> list[Any]:
    """The bench runs ``text`` names: a bench run's id, a pipeline's id (its newest bench), or an
    experiment's name (the newest bench of each of its pipelines, newest pipeline first)."""
    if RUN_ID.match(text):
        try:
            run = client.get_run(text)
        except Exception:  # not a run of this store: maybe an experiment named so
            run = None
        if run is not None:
            bench = _bench_run_of(client, run)
            if bench is None:
                raise UserError(f"MLflow run {text} has no bench report: give a bench run, its pipeline, or an experiment")
            return [bench]
    found = client.get_experiment_by_name(text)
    if found is None:
        raise UserError(
            f"{text!r} is not a bench report file, nor an MLflow run id or experiment at {client.tracking_uri}: "
            "give report.json paths, run ids (edge runs --ids) or an experiment name"
        )
    benches = [b for b in (p.newest("bench") for p in pipelines(client, found.experiment_id)) if b is not None]
    if not benches:
        raise UserError(f"MLflow experiment {text!r} has no tracked bench run: run `edge bench RUN --track` first")
    return benches


def download_report(client: Any, run: Any, dest: Path) -> tuple[str, Path]:
    """(``runs:/<id>/report.json``, the downloaded file) of a bench run."""
    folder = dest / run.info.run_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run.info.run_id, "report.json", str(folder))
    except Exception as exc:
        raise UserError(f"cannot read report.json of MLflow run {run.info.run_id}: {' '.join(str(exc).split())[:200]}") from exc
    return f"runs:/{run.info.run_id}/report.json", Path(local)
