import os
import subprocess
import sys

import pytest
import torch

from tests.train.conftest import tiny_config
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.loop import train

# Frozen backbone (BatchNorm statistics fixed), no dropout, no augmentation: two processes on
# halves of each global batch must then compute the same update as one process on the whole batch.
DDP_OPTIONS = dict(
    mode="feature-extract",
    drop_rate=0.0,
    augment="none",
    epochs=1,
    train_limit=64,
    val_limit=32,
    test_limit=0,
    batch_size=16,
    image_size=32,
)


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_model_as_one(tmp_path):
    single = train(tiny_config(tmp_path / "single", **DDP_OPTIONS))

    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "edge.cli",
        "train",
        "--out",
        str(out),
        "--data",
        "fashion-mnist",
        "--mode",
        "feature-extract",
        "--drop-rate",
        "0",
        "--augment",
        "none",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--val-limit",
        "32",
        "--test-limit",
        "0",
        "--batch-size",
        "16",
        "--image-size",
        "32",
        "--lr",
        "2e-3",
        "--warmup-epochs",
        "0.25",
        "--seed",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["checkpoint.pt", "last.pt"]
    ddp, reference = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(single.checkpoint)
    assert ddp["spec"] == reference["spec"] and ddp["data_fingerprint"] == reference["data_fingerprint"]
    for name, tensor in reference["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    assert ddp["history"][0]["val_top1"] == pytest.approx(single.history[0]["val_top1"])
    model, spec = model_from_checkpoint(out / "checkpoint.pt")
    assert spec.num_classes == 10 and model(torch.zeros(1, *spec.input_shape)).shape == (1, 10)
