"""Shared fixtures: real photos, the offline-pretrained Lite0 run, hardware markers.

Fixtures are built in code or from the embedded defaults; nothing is fetched at test time.
Tests that need CUDA, TensorRT or a camera carry the markers gpu / tensorrt / camera and skip
with the reason here.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _tensorrt_available() -> bool:
    from edge.runners import tensorrt_available

    return tensorrt_available()


def _camera_available() -> bool:
    return any(Path(f"/dev/video{i}").exists() for i in range(4)) and not os.environ.get("CI")


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    """Name the running test in .pytest_cache/running-test: `make test` prints it when pytest dies by a signal."""
    path = Path(__file__).resolve().parent.parent / ".pytest_cache" / "running-test"
    try:
        path.parent.mkdir(exist_ok=True)
        path.write_text(nodeid + "\n")
    except OSError:
        pass  # a read-only checkout: the name is a convenience


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons = {
        "gpu": None if _cuda_available() else "needs a CUDA device: torch.cuda.is_available() is False here",
        "tensorrt": None
        if (_tensorrt_available() and _cuda_available())
        else "needs TensorRT and a CUDA device (not on this machine)",
        "camera": None if _camera_available() else "needs a real camera (/dev/video*), none here",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker) is not None:  # not keywords: folder names count there
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's real photos as BGR uint8 frames (what a camera delivers)."""
    from edge.photos import photos as bundled_photos

    return bundled_photos()


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with the ImageNet-pretrained Lite0 checkpoint (offline weights)."""
    from train.pretrained import write_pretrained_run

    root = tmp_path_factory.mktemp("runs") / "imagenet-lite0"
    write_pretrained_run(root)
    return root


@pytest.fixture(scope="session")
def pretrained_onnx_run(pretrained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``pretrained_run`` with model.onnx exported (and verified) beside the checkpoint."""
    import shutil

    from edge.export import export_onnx

    root = tmp_path_factory.mktemp("runs") / "imagenet-lite0-onnx"
    shutil.copytree(pretrained_run, root)
    export_onnx(root, verify_limit=4)
    return root


@pytest.fixture(scope="session")
def pretrained_int8_run(pretrained_onnx_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pretrained_onnx_run`` plus model.int8-cpu.onnx, calibrated on scikit-image photos and crops
    (the ImageNet model has no ImageNet data here); acceptance on other crops of the photos. Weights
    rounded to nearest without bias correction: GPTQ and bias correction at 224 px are the slow part,
    and tests/edge/quantize/test_cli.py covers both on the 32 px run."""
    import shutil

    from calibration.sets import photo_calibration_set
    from edge.quantize.cli import quantize_run

    root = tmp_path_factory.mktemp("runs") / "imagenet-lite0-int8"
    shutil.copytree(pretrained_onnx_run, root)
    photo_calibration_set(root, count=32, seed=0)
    quantize_run(root, target="cpu", method="percentile", eval_limit=16, weight_rounding="nearest", bias_correction=False)
    return root


@pytest.fixture(scope="session")
def fashion_onnx_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Fashion-MNIST run for the INT8 stages: Lite0 with its ImageNet backbone and a fresh
    10-class head (not trained: tests compare INT8 with its float parent, not with the labels),
    32 px gray, exported with the default (dynamo) exporter."""
    from edge.export import export_onnx
    from edge.manifest import write_manifest
    from train.checkpoint import save_checkpoint
    from train.data import FASHION_MNIST_LABELS
    from train.models import LITE0, build_model, pretrained_spec

    root = tmp_path_factory.mktemp("runs") / "fashion-32"
    root.mkdir()
    spec = pretrained_spec(LITE0).replace(
        labels=list(FASHION_MNIST_LABELS), color="gray", crop="resize", input_size=32, resize_size=32
    )
    model = build_model(LITE0, num_classes=10, pretrained=True)
    path = save_checkpoint(root / "checkpoint.pt", model, LITE0, spec, config={"data": "fashion-mnist", "seed": 0})
    write_manifest(path, "checkpoint", spec, provenance={"arch": LITE0, "trained": False})
    export_onnx(root, verify_limit=16)
    return root
