"""The MLflow glue: the experiment, the parent run of a run directory, one run per stage, a deadline.

A run directory's *pipeline* is a parent run named after the folder, tagged ``edge.role=pipeline``,
``edge.run_dir`` (its absolute path) and ``edge.checkpoint_sha256``; a later stage finds it again by
those tags, so training the folder again (a new checkpoint) starts a new parent. Each stage is a
child run (MLflow's ``mlflow.parentRunId`` tag) holding the stage's record. The client API is used
throughout (no global active run, nothing left for an exit handler), and :func:`within_deadline`
bounds the whole logging, so a tracking server that is down or slow never stalls a stage.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge.errors import MissingDependencyError, UserError, require
from edge.tracking.options import LOCAL_ARTIFACTS, LOCAL_DB, TrackingOptions, apply_mlflow_defaults, local_uri
from edge.tracking.records import TAG_CHECKPOINT, TAG_ROLE, TAG_RUN_DIR, TAG_STAGE, StageRecord

T = TypeVar("T")
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's nesting tag
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag for the source's commit
PIPELINE = "pipeline"
BATCH = 100  # MLflow's most params (and tags) in one log_batch call
PURPOSE = "experiment tracking (edge --track, edge runs, edge compare RUN_ID)"


class TrackingTimeout(Exception):
    """The logging did not finish within the deadline (it goes on in the background until exit)."""


@dataclass(frozen=True)
class TrackedRun:
    experiment: str
    experiment_id: str
    parent_id: str
    run_id: str
    name: str


def mlflow_client(uri: str, reason: str = "") -> Any:
    """An ``MlflowClient`` on ``uri``; one line naming the install when mlflow is missing."""
    try:
        require("mlflow", "tracking", PURPOSE)
    except MissingDependencyError as exc:
        why = f" (tracking is on: {reason}; EDGE_TRACKING=off turns it off)" if reason.endswith("is set") else ""
        raise UserError(f"{exc}{why}") from exc
    import logging

    for noisy in ("mlflow", "alembic", "urllib3.connectionpool"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    apply_mlflow_defaults()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def reading_client(uri: str) -> Any:
    """A client for reading runs back; the default local store must exist (reading never creates one)."""
    if uri == local_uri() and not Path(LOCAL_DB).is_file():
        raise UserError(
            f"no MLflow store here ({Path(LOCAL_DB).resolve()} does not exist): track a stage with --track first, "
            "or set MLFLOW_TRACKING_URI to your tracking server"
        )
    return mlflow_client(uri)


def within_deadline(work: Callable[[], T], seconds: float) -> T:
    """``work()`` in a daemon thread; TrackingTimeout when it takes longer than ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="edge-tracking", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TrackingTimeout(f"no answer within {seconds:g} s (EDGE_TRACKING_TIMEOUT)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def failure_line(exc: BaseException) -> str:
    """A tracking failure in a few words: ``connection refused``, ``no answer within 30 s``, ..."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    for marker in ("Read timed out", "timed out"):
        if marker in text:
            return "the server did not answer in time (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    return text[:200]


def artifact_location(uri: str, experiment: str) -> str | None:
    """A local SQLite store keeps its artifacts beside it (``mlflow.db`` -> ``mlruns/<experiment>/``);
    MLflow's own choice would be ``./mlruns`` in whatever folder the command runs in. None: the store decides."""
    if not uri.startswith("sqlite:///"):
        return None
    folder = re.sub(r"[^\w.-]+", "-", experiment).strip(".-") or "experiment"
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / LOCAL_ARTIFACTS / folder).as_uri()


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, made when it is new (a concurrent maker is fine)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UserError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) or use --experiment")
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri, name)))
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _quoted(value: str) -> str | None:
    """``value`` as a filter-string literal (None when it holds both kinds of quote)."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    return None


def find_pipeline(client: Any, experiment: str, tags: dict[str, str]) -> str | None:
    """The newest parent run of this run directory and checkpoint, if any."""
    literal = _quoted(tags[TAG_RUN_DIR])
    query = f"tags.`{TAG_ROLE}` = '{PIPELINE}'" + (f" and tags.`{TAG_RUN_DIR}` = {literal}" if literal else "")
    for run in client.search_runs([experiment], filter_string=query, order_by=["attributes.start_time DESC"], max_results=200):
        mine = run.data.tags
        if mine.get(TAG_RUN_DIR) == tags[TAG_RUN_DIR] and mine.get(TAG_CHECKPOINT, "") == tags.get(TAG_CHECKPOINT, ""):
            return str(run.info.run_id)
    return None


def project_tags(root: Path) -> dict[str, str]:
    """The project's git commit (and whether the tree had changes), where the project is a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    tags = {GIT_COMMIT: commit.stdout.strip()}
    if dirty.returncode == 0:
        tags["edge.git_dirty"] = "true" if dirty.stdout.strip() else "false"
    return tags


def log_record(
    client: Any, options: TrackingOptions, experiment: str, record: StageRecord, extra_tags: dict[str, str]
) -> TrackedRun:
    """The stage's run under its pipeline's parent run (made when it is new), with everything in ``record``."""
    from mlflow.entities import Metric, Param, RunTag

    exp_id = experiment_id(client, experiment)
    parent = find_pipeline(client, exp_id, record.pipeline_tags)
    if parent is None:
        identity = {TAG_ROLE: PIPELINE, TAG_RUN_DIR: record.pipeline_tags[TAG_RUN_DIR]}
        parent = str(client.create_run(exp_id, run_name=record.run_dir.name, tags=identity).info.run_id)
    _batches(client, parent, tags=[RunTag(k, v) for k, v in {**record.pipeline_tags, **extra_tags}.items()])
    nesting = {PARENT_RUN_ID: parent, TAG_STAGE: record.stage}
    run_id = str(client.create_run(exp_id, run_name=record.name, tags=nesting).info.run_id)
    now = int(time.time() * 1000)
    _batches(
        client,
        run_id,
        params=[Param(k, v) for k, v in record.params.items()],
        metrics=[Metric(k, v, now, step) for k, v, step in record.metrics],
        tags=[RunTag(k, v) for k, v in {**record.tags, **extra_tags}.items()],
    )
    for path in record.artifacts:
        client.log_artifact(run_id, str(path))
    for name, text in record.texts.items():
        client.log_text(run_id, text, name)
    client.set_terminated(run_id)
    client.set_terminated(parent)  # the pipeline's end time: its latest stage
    return TrackedRun(experiment, exp_id, parent, run_id, record.name)


def _batches(client: Any, run_id: str, params: Sequence[Any] = (), metrics: Sequence[Any] = (), tags: Sequence[Any] = ()) -> None:
    """log_batch within MLflow's limits: 100 params or tags and 1000 entries a call."""
    params, metrics, tags = list(params), list(metrics), list(tags)
    while params or metrics or tags:
        p, t = params[:BATCH], tags[:BATCH]
        m = metrics[: 1000 - len(p) - len(t)]
        client.log_batch(run_id, metrics=m, params=p, tags=t)
        params, metrics, tags = params[len(p) :], metrics[len(m) :], tags[len(t) :]
