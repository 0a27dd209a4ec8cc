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

PHOTO_CLASSES = {
    "cat": {281, 282, 283, 284, 285},  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968},  # espresso, cup
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
}


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
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """scikit-image's real photos as BGR uint8 frames (what a camera delivers)."""
    import cv2
    import skimage.data

    return {
        "cat": cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR),
        "coffee": cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR),
        "rocket": cv2.cvtColor(skimage.data.rocket(), cv2.COLOR_RGB2BGR),
    }


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with the ImageNet-pretrained Lite0 checkpoint (offline weights)."""
    from train.models import write_pretrained_run

    root = tmp_path_factory.mktemp("runs") / "imagenet-lite0"
    write_pretrained_run(root)
    return root
