"""Re-training keeps the previous run (issue 25, items 2 and 3): `edge train` and `edge pretrained` over a
run that holds a checkpoint move its training outputs and every artifact made from them to
RUN/history/<UTC time>/ before writing, and say so in one line; `--resume` moves nothing."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path

import pytest

from tests.train.conftest import tiny_config

pytestmark = pytest.mark.slow

STAMP = re.compile(r"\d{8}T\d{6}Z")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _a_run_with_artifacts(tiny_run, tmp_path: Path) -> Path:
    """A copy of the trained tiny run plus what later stages would have made from its checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run, run)
    (run / "model.onnx").write_bytes(b"the old model.onnx")
    (run / "model.int8-cpu.onnx").write_bytes(b"the old int8 model")
    (run / "calibration").mkdir()
    (run / "calibration" / "calibration.npy").write_bytes(b"the old calibration set")
    (run / "bench").mkdir()
    (run / "bench" / "report.json").write_text("{}\n")
    return run


def _kept_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("kept the previous")]


def test_training_over_a_trained_run_keeps_everything_it_replaces_in_history(tiny_run, tmp_path, caplog):
    from train.loop import train

    run = _a_run_with_artifacts(tiny_run, tmp_path)
    before = {name: _digest(run / name) for name in ("checkpoint.pt", "checkpoint.pt.json", "last.pt", "splits.json")}
    with caplog.at_level(logging.INFO):
        train(tiny_config(run, epochs=1, train_limit=64, val_limit=32, test_limit=0))
    folders = list((run / "history").iterdir())
    assert len(folders) == 1 and STAMP.fullmatch(folders[0].name), folders
    kept = folders[0]
    for name, digest in before.items():  # the trained weights are not gone: the bytes are in history
        assert _digest(kept / name) == digest, name
    assert (kept / "metrics.json").is_file() and (kept / "summary.json").is_file()
    # everything made from the old checkpoint is retired with it (stale), the calibration set included
    assert (kept / "model.onnx").read_bytes() == b"the old model.onnx" and not (run / "model.onnx").exists()
    assert (kept / "model.int8-cpu.onnx").is_file() and not (run / "model.int8-cpu.onnx").exists()
    assert (kept / "calibration" / "calibration.npy").read_bytes() == b"the old calibration set"
    assert not (run / "calibration").exists() and not (run / "bench").exists()
    assert (kept / "bench" / "report.json").is_file()
    # the new training wrote its own run
    assert (run / "checkpoint.pt").is_file() and _digest(run / "checkpoint.pt") != before["checkpoint.pt"]
    lines = _kept_lines(caplog)
    assert len(lines) == 1, lines
    assert "checkpoint.pt" in lines[0] and "last.pt" in lines[0] and "splits.json" in lines[0]
    assert "calibration/" in lines[0] and f"{kept}/" in lines[0]


def test_resume_continues_the_run_and_moves_nothing(tiny_run, tmp_path):
    from edge.cli import main

    run = _a_run_with_artifacts(tiny_run, tmp_path)
    assert main(["train", "--out", str(run), "--resume"]) == 0  # two of two epochs done: it only finishes
    assert not (run / "history").exists()
    assert (run / "model.onnx").read_bytes() == b"the old model.onnx"
    assert (run / "calibration" / "calibration.npy").is_file()


def test_pretrained_over_a_trained_run_keeps_the_trained_checkpoint(tiny_run, tmp_path, caplog):
    from edge.manifest import read_manifest
    from train.pretrained import write_pretrained_run

    run = _a_run_with_artifacts(tiny_run, tmp_path)
    trained = _digest(run / "checkpoint.pt")
    with caplog.at_level(logging.INFO):
        write_pretrained_run(run)
    (kept,) = list((run / "history").iterdir())
    assert _digest(kept / "checkpoint.pt") == trained and read_manifest(kept / "checkpoint.pt").provenance["trained"] is True
    assert read_manifest(run / "checkpoint.pt").provenance["trained"] is False
    for name in ("last.pt", "splits.json", "model.onnx", "calibration/calibration.npy"):
        assert (kept / name).is_file() and not (run / name).exists(), name
    lines = _kept_lines(caplog)
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and f"{kept}/" in lines[0], lines
