"""The two calls a tracked stage makes: ``check_tracking`` before its work, ``track_stage`` after its files.

``check_tracking(args)`` (run by ``edge.cli.main`` for every command with the tracking flags) fails
in a second, before hours of training, when tracking is on and mlflow is not installed; with
``--track-strict`` it also reaches the store. ``track_stage(args, stage, run, ...)`` reads what the
stage wrote and logs it (:mod:`edge.tracking.records`, :mod:`edge.tracking.store`) within
``EDGE_TRACKING_TIMEOUT`` seconds. A failure there is one warning (the stage's files are written
already and its exit status stands); with ``--track-strict`` it is one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.tracking.options import TrackingOptions, default_experiment, tracking_options
from edge.tracking.records import (
    StageRecord,
    bench_record,
    bench_report_path,
    check_record,
    quantize_record,
    train_record,
)
from edge.tracking.store import TrackedRun, failure_line, log_record, mlflow_client, project_tags, within_deadline

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def check_tracking(args: argparse.Namespace) -> None:
    """Before the stage's work: mlflow importable where tracking is on; the store reachable with --track-strict."""
    options = tracking_options(args)
    if options is None:
        return
    client = mlflow_client(options.uri, options.reason)
    if options.strict:
        try:
            within_deadline(lambda: client.search_experiments(max_results=1), options.timeout_s)
        except Exception as exc:
            raise UserError(_line(options, exc)) from exc


def _line(options: TrackingOptions, exc: BaseException) -> str:
    return f"tracking: MLflow at {options.uri} failed: {failure_line(exc)}"


def make_record(stage: str, run: Path, options: TrackingOptions, context: dict[str, Any]) -> StageRecord:
    """The stage's record, read from the files it wrote."""
    if stage == "train":
        return train_record(run, log_models=options.log_models)
    if stage == "quantize":
        return quantize_record(run, Path(context["artifact"]), log_models=options.log_models)
    if stage == "bench":
        return bench_record(run, bench_report_path(run, context.get("report")))
    if stage == "check":
        return check_record(context["report"], context["checks"], context.get("settings") or {}, context.get("junit"))
    raise ValueError(f"unknown stage {stage!r}")


def track_stage(args: argparse.Namespace, stage: str, run: str | os.PathLike[str] | None, **context: Any) -> TrackedRun | None:
    """Log ``stage`` of the run directory ``run`` to MLflow when tracking is on (after its files are written).

    ``context``: quantize ``artifact`` (the written model); bench ``report`` (the folder given with
    --out, if any); check ``report`` (the report path given), ``checks`` (the gate's checks),
    ``settings`` (its thresholds), ``junit`` (the XML written, if any). Returns the run logged, or
    None (tracking off, another DDP rank, or a failure that only warns)."""
    options = tracking_options(args)
    if options is None or run is None or int(os.environ.get("RANK", "0") or 0) != 0:
        return None
    client = mlflow_client(options.uri, options.reason)  # not installed: one line, exit 2 (as check_tracking)
    try:
        record = make_record(stage, Path(run), options, context)
        experiment = options.experiment or default_experiment(record.run_dir)
        extra = project_tags(PROJECT_ROOT)
        tracked = within_deadline(lambda: log_record(client, options, experiment, record, extra), options.timeout_s)
    except Exception as exc:  # a store down or slow, a file it cannot read: the stage's own result stands
        if options.strict:
            raise UserError(
                f"{_line(options, exc)}; the stage's files are written (without --track-strict this only warns)"
            ) from exc
        log.warning("%s; nothing is lost: the stage's files are written as always", _line(options, exc))
        return None
    log.info("tracked: MLflow run %s (%s) in experiment %r at %s", tracked.run_id, tracked.name, tracked.experiment, options.uri)
    return tracked
