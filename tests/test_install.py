"""Makefile `install`: a device's extras (cpu, opencv, ...) never install torch or torchvision; the extras
that train or test (train, dev) do. Read from `make -n install` (nothing runs), on both branches: the
plain venv and the Jetson's system-site-packages venv (where edge._deps lists what is missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge import _deps

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "torch-sentinel==0.0"  # TORCH_SPEC made recognisable: the only way torch gets into a plain venv

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def dry_install(tmp_path: Path, extras: str, system_stack: str = "") -> str:
    """The commands `make install EXTRAS=...` would run in a fresh venv (the make -n listing)."""
    proc = subprocess.run(
        [
            "make",
            "-n",
            "install",
            f"EXTRAS={extras}",
            f"VENV={tmp_path / 'venv'}",
            f"TORCH_SPEC={SENTINEL}",
            f"SYSTEM_STACK={system_stack}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return "\n".join(line for line in proc.stdout.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("extras", ["cpu,opencv", "gpu,opencv,tensorrt,openvino"])
def test_device_extras_install_no_torch(tmp_path: Path, extras: str) -> None:
    commands = dry_install(tmp_path, extras)
    assert f'-e ".[{extras}]"' in commands  # the install itself is there
    assert SENTINEL not in commands and "import torch" not in commands


@pytest.mark.parametrize("extras", ["train,cpu,opencv", "cpu,dev"])
def test_training_and_test_extras_install_pinned_torch(tmp_path: Path, extras: str) -> None:
    assert f"pip install -q {SENTINEL}" in dry_install(tmp_path, extras)


def test_jetson_branch_installs_only_what_the_device_extras_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = dry_install(tmp_path, "cpu,opencv", system_stack="1")
    assert "--system-site-packages" in commands and "-m edge._deps cpu opencv" in commands and SENTINEL not in commands
    monkeypatch.setattr(_deps.importlib.util, "find_spec", lambda name: None)  # nothing importable: all is listed
    listed = _deps.missing(["cpu", "opencv"], ROOT / "pyproject.toml")
    assert any(r.startswith("onnxruntime") for r in listed) and any(r.startswith("opencv") for r in listed)
    assert not [r for r in listed if r.startswith(("torch", "torchvision", "timm"))]
