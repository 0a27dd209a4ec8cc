"""`edge train --track` logs the training run to MLflow (edge/tracking/, real mlflow, a temporary store):
the resolved config as params, the per-epoch curves (step = epoch), the best epoch, time and images/s,
the plots and manifest (the checkpoint with --log-models), under the run directory's parent run.

The training itself is the session's tiny run (tests/train/conftest.py): `edge train` runs through
the CLI with its loop replaced by that finished run, so what is tested is the hook reading its files.
"""

from __future__ import annotations

import json

import pytest

from edge.cli import main
from edge.manifest import read_manifest


def test_train_logs_its_config_curves_and_files(tiny_run, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr("train.loop.train", lambda config: tiny_run)
    run_dir = tiny_run.run
    assert main(["train", "--out", str(run_dir), "--track", "--log-models", "--experiment", "training"]) == 0

    client = MlflowClient()
    experiment = client.get_experiment_by_name("training")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {run_dir.name, "train"}
    train, parent = runs["train"], runs[run_dir.name]
    assert train.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["edge.run_dir"] == str(run_dir.resolve())

    # every setting of the resolved config, as the checkpoint stores it
    config = dict(read_manifest(run_dir / "checkpoint.pt").provenance)
    params = train.data.params
    assert params["lr"] == "0.002" and params["epochs"] == "2" and params["image_size"] == "32" and params["seed"] == "3"
    assert params["model"] == config["arch"] and params["spec.input_size"] == "32"

    epochs = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    for key in ("train_loss", "val_loss", "val_top1", "train_top1", "images_per_s"):
        history = client.get_metric_history(train.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == [(e["epoch"], pytest.approx(e[key])) for e in epochs], key
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = train.data.metrics
    assert metrics["best_epoch"] == summary["best_epoch"] and metrics["best_val_top1"] == pytest.approx(summary["val_top1"])
    assert metrics["test_top1"] == pytest.approx(summary["test_top1"])
    assert metrics["train_time_s"] == pytest.approx(sum(e["epoch_s"] for e in epochs))
    images = sum(e["images_per_s"] * e["epoch_s"] for e in epochs)
    assert metrics["train_images_per_s"] == pytest.approx(images / metrics["train_time_s"])

    splits = config["splits"]["fingerprints"]
    assert {train.data.tags[f"edge.split.{name}"] for name in splits} == set(splits.values())
    files = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"curves.png", "confusion.png", "metrics.json", "summary.json", "checkpoint.pt.json", "checkpoint.pt"} <= files
    assert "last.pt" not in files
