"""When tracking is on (edge/tracking/options.py), and what a missing mlflow says before a stage's work.
The end-to-end runs with the real mlflow are in tests/bench/test_tracking.py and tests/train/test_tracking.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from edge.cli import main
from edge.errors import UserError
from edge.tracking.options import add_tracking_arguments, default_experiment, local_uri, tracking_options


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_tracking_arguments(parser, models=True)
    return parser.parse_args(list(argv))


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("EDGE_TRACKING", "MLFLOW_TRACKING_URI", "EDGE_TRACKING_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_tracking_is_on_by_flag_by_edge_tracking_or_by_a_tracking_uri(clean_env, tmp_path):
    assert tracking_options(_args()) is None
    assert tracking_options(argparse.Namespace()) is None  # a command without the flags
    on = tracking_options(_args("--track", "--log-models"))
    assert on is not None and not on.strict and on.log_models and on.timeout_s == 30.0
    assert on.uri == local_uri() == f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    assert tracking_options(_args("--track-strict")).strict
    clean_env.setenv("EDGE_TRACKING", "mlflow")
    assert tracking_options(_args()).reason == "EDGE_TRACKING=mlflow"
    clean_env.setenv("EDGE_TRACKING", "off")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_options(_args()) is None  # off beats the URI, not an explicit --track
    assert tracking_options(_args("--track")).uri == "http://127.0.0.1:5000"
    clean_env.delenv("EDGE_TRACKING")
    assert tracking_options(_args()).reason == "MLFLOW_TRACKING_URI is set"
    clean_env.setenv("EDGE_TRACKING", "wandb")
    with pytest.raises(UserError, match="EDGE_TRACKING='wandb' is not a tracker: use EDGE_TRACKING=mlflow"):
        tracking_options(_args())
    clean_env.setenv("EDGE_TRACKING", "mlflow")
    clean_env.setenv("EDGE_TRACKING_TIMEOUT", "0")
    with pytest.raises(UserError, match="EDGE_TRACKING_TIMEOUT='0' must be a positive number of seconds"):
        tracking_options(_args())
    assert default_experiment(tmp_path / "runs" / "demo") == "runs"


@pytest.mark.parametrize(
    ("argv", "env", "tail"),
    [
        (["--track"], {}, "(or `make install EXTRAS=...,tracking`)"),
        (
            [],
            {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"},
            "(tracking is on: MLFLOW_TRACKING_URI is set; EDGE_TRACKING=off turns it off)",
        ),
    ],
)
def test_without_mlflow_a_tracked_stage_stops_before_its_work_in_one_line(clean_env, capsys, tmp_path, argv, env, tail):
    for name, value in env.items():
        clean_env.setenv(name, value)
    clean_env.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    assert main(["check", str(tmp_path / "no-report.json"), *argv]) == 2  # before the report is read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge check: error: experiment tracking")
    assert "needs the Python package 'mlflow', which is not installed: pip install -e '.[tracking]'" in err[0]
    assert err[0].endswith(tail)
