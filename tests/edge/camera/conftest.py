"""Camera test fixtures: a short video of the bundled photos, and a private ``XDG_CACHE_HOME`` for
every test (the demo video and the measured thread choices go there, and subprocesses inherit it),
so no test reads or writes the user's own cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.camera.demo import DemoVideo, write_demo_video


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "edge-harness"


@pytest.fixture(scope="session")
def video(photos: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> DemoVideo:
    """Cat, coffee, rocket: 3 frames each at 320x240 (small, so every backend's pass takes seconds)."""
    return write_demo_video(
        tmp_path_factory.mktemp("camera") / "photos.mp4", size=(320, 240), fps=6, seconds_per_photo=0.5, photos=photos
    )
