"""The tracking flags every tracked stage shares, and when tracking is on.

Tracking is on with ``--track`` or ``--track-strict``, with ``EDGE_TRACKING=mlflow``, and whenever
``MLFLOW_TRACKING_URI`` is set (``EDGE_TRACKING=off`` turns that last one off). The store is
``MLFLOW_TRACKING_URI``, else MLflow 3's own default: SQLite in ``mlflow.db`` with the artifacts in
``mlruns/``, both in the current directory (the project), which ``mlflow ui`` started there shows
with no server.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError

ENV_TRACKING = "EDGE_TRACKING"  # mlflow | off
ENV_TIMEOUT = "EDGE_TRACKING_TIMEOUT"  # seconds the whole logging of one stage may take
ENV_URI = "MLFLOW_TRACKING_URI"
DEFAULT_TIMEOUT_S = 30.0
LOCAL_DB = "mlflow.db"  # MLflow 3's default store (sqlite:///mlflow.db), artifacts in ./mlruns
LOCAL_ARTIFACTS = "mlruns"
_OFF = ("off", "0", "false", "no", "none")

# MLflow's HTTP client retries 7 times with backoff and waits 120 s per request by default: minutes
# for a server that is down. Where the user has not set them, a tracked stage bounds them (and the
# whole logging runs under EDGE_TRACKING_TIMEOUT anyway); reading artifacts back shows no progress bar.
MLFLOW_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no tqdm bar in `edge compare RUN_ID`
}


@dataclass(frozen=True)
class TrackingOptions:
    """What one tracked command asks for."""

    strict: bool
    experiment: str | None  # None: the run directory's parent name
    log_models: bool
    uri: str
    timeout_s: float
    reason: str  # why tracking is on, for the one line a missing mlflow prints


def add_tracking_arguments(parser: argparse.ArgumentParser, models: bool = False) -> None:
    """``--track``, ``--track-strict``, ``--experiment`` (and ``--log-models`` where the stage makes a model)."""
    group = parser.add_argument_group("experiment tracking (MLflow; docs/tracking.md)")
    group.add_argument(
        "--track",
        action="store_true",
        help="log this stage to MLflow (also on with EDGE_TRACKING=mlflow or MLFLOW_TRACKING_URI set); "
        "a tracking failure is a warning",
    )
    group.add_argument("--track-strict", action="store_true", help="--track, and a tracking failure is an error (exit 2)")
    group.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: the run directory's parent's name)")
    if models:
        group.add_argument("--log-models", action="store_true", help="also log the model file as an MLflow artifact")


def local_uri(cwd: Path | None = None) -> str:
    """The default store: ``sqlite:///<cwd>/mlflow.db`` (absolute, so later stages find it from anywhere)."""
    return f"sqlite:///{(cwd or Path.cwd()).resolve() / LOCAL_DB}"


def tracking_uri() -> str:
    return os.environ.get(ENV_URI) or local_uri()


def _timeout() -> float:
    text = os.environ.get(ENV_TIMEOUT)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"{ENV_TIMEOUT}={text!r} must be a positive number of seconds")
    return value


def _reason(args: argparse.Namespace) -> str | None:
    """Why tracking is on (None: it is off)."""
    if getattr(args, "track_strict", False):
        return "--track-strict"
    if getattr(args, "track", False):
        return "--track"
    setting = os.environ.get(ENV_TRACKING, "").strip().lower()
    if setting == "mlflow":
        return f"{ENV_TRACKING}=mlflow"
    if setting in _OFF:
        return None
    if setting:
        raise UserError(f"{ENV_TRACKING}={setting!r} is not a tracker: use {ENV_TRACKING}=mlflow (or off)")
    return f"{ENV_URI} is set" if os.environ.get(ENV_URI) else None


def tracking_options(args: argparse.Namespace) -> TrackingOptions | None:
    """The tracking this command asks for; None when tracking is off (or the command has no tracking flags)."""
    if not hasattr(args, "track"):
        return None
    reason = _reason(args)
    if reason is None:
        return None
    experiment = getattr(args, "experiment", None)
    if experiment is not None and not experiment.strip():
        raise UserError("--experiment needs a name")
    return TrackingOptions(
        strict=bool(getattr(args, "track_strict", False)),
        experiment=experiment,
        log_models=bool(getattr(args, "log_models", False)),
        uri=tracking_uri(),
        timeout_s=_timeout(),
        reason=reason,
    )


def apply_mlflow_defaults() -> None:
    """Bound MLflow's HTTP timeout and retries (and hide its download bar) where the user has not set them."""
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


def default_experiment(run: Path) -> str:
    """``runs/demo`` -> ``runs``: the run directory's parent's name."""
    return run.resolve().parent.name or "Default"
