"""Bench test fixtures: a small REAL pipeline through the CLI (train, export, calibrate, quantize),
benched once per session, so an INT8 accuracy regression anywhere upstream fails `make test`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# ---- the real pipeline, through the CLI ------------------------------------------------------

# 1500 test images resolve `edge check --max-drop 0.5`: the gate's minimum detectable drop there is
# 0.87 points, within its 2x margin (at least 1100 images; the 200 used before could only fail a
# 3.0 point drop). Measured on 2 cores: the bench fixture takes 15 s instead of 12 s.
EVAL_COUNT = 1500
# INT8 of this 2-epoch 32 px model agrees with its float parent on about 93% of the test images
# (small logit margins; measured: drop 0.13 points, 82 of 1500 images discordant), so the
# quantizer's own acceptance, a point estimate, gets budgets such a model meets on any CPU's
# kernels; `edge check --max-drop 0.5` (a confidence bound) is what these tests hold it to.
QUANTIZE_BUDGET = ("--max-drop", "1.0", "--min-agreement", "90")
# One thread per process: on a shared 2-core CI machine torch's and ONNX Runtime's spinning
# thread pools slow each other down several-fold; the figures here are not what is tested.
PIPELINE_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def edge_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed ``edge`` command as a user would; fail with its output when it fails."""
    env = dict(os.environ, **PIPELINE_ENV)
    proc = subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"edge {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train (Fashion-MNIST subset, 32 px, 2 epochs) -> export -> calibrate -> quantize --target cpu."""
    run = tmp_path_factory.mktemp("runs") / "fashion-tiny"
    edge_cli(
        "train",
        "--out",
        str(run),
        "--data",
        "fashion-mnist",
        "--train-limit",
        "2000",
        "--val-limit",
        "200",
        "--test-limit",
        str(EVAL_COUNT),
        "--image-size",
        "32",
        "--epochs",
        "2",
        "--augment",
        "none",
        "--lr",
        "3e-3",
        "--label-smoothing",
        "0.1",
    )
    edge_cli("export", str(run), "--verify-limit", "16")
    edge_cli("calibrate", str(run), "--data", "fashion-mnist", "--size", "64")
    edge_cli(
        "quantize",
        str(run),
        "--target",
        "cpu",
        "--data",
        "fashion-mnist",
        "--method",
        "minmax",
        "--val-limit",
        "200",
        "--eval-limit",
        str(EVAL_COUNT),
        *QUANTIZE_BUDGET,
    )
    return run


@pytest.fixture(scope="session")
def pipeline_report(pipeline_run: Path) -> Path:
    """A short `edge bench` of every artifact of the pipeline run on cpu and cuda (absent here: skipped)."""
    edge_cli(
        "bench",
        str(pipeline_run),
        "--eval",
        "fashion-mnist",
        "--eval-count",
        str(EVAL_COUNT),
        "--devices",
        "cpu,cuda",
        "--batch-sizes",
        "1,8",
        "--warmup-s",
        "0.05",
        "--min-iters",
        "3",
        "--min-seconds",
        "0",
        "--single-stream",
        "20",
        "--threads",
        "1",
        "--timeout",
        "180",
    )
    return pipeline_run / "bench" / "report.json"
