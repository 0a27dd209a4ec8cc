"""edge._deps, the Makefile's installer where the venv sees the system packages: it lists the project's own
dependencies as well as the extras', names each requirement's module right, and reads pyproject.toml
the same way without tomllib (Python 3.10)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from edge import _deps

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_project_dependencies_are_listed_with_the_extras(monkeypatch):
    monkeypatch.setattr(_deps.importlib.util, "find_spec", lambda name: None)  # nothing importable
    listed = _deps.missing(["train", "dev"], PYPROJECT)
    assert listed[:3] == _deps.dependencies(PYPROJECT) and any(r.startswith("onnx>") for r in listed[:3])
    assert any(r.startswith("timm") for r in listed) and any(r.startswith("import-linter") for r in listed)
    assert listed.count("scikit-image>=0.22") == 1  # in train and in dev, installed once


def test_only_what_cannot_be_imported_is_listed(monkeypatch):
    absent = {"pynvml", "tensorrt"}
    monkeypatch.setattr(_deps.importlib.util, "find_spec", lambda name: None if name in absent else object())
    assert [r.split(">")[0] for r in _deps.missing(["gpu", "tensorrt"], PYPROJECT)] == ["nvidia-ml-py", "tensorrt"]


@pytest.mark.parametrize(
    "requirement, module",
    [
        ("import-linter>=2.1", "importlinter"),
        ("nvidia-ml-py>=12", "pynvml"),
        ("nvidia-modelopt[onnx]", "modelopt"),
        ("tritonclient[grpc,http]>=2.40", "tritonclient"),
        ("opencv-python>=4.8", "cv2"),
        ("onnx>=1.16", "onnx"),
    ],
)
def test_module_of_a_requirement(requirement, module):
    assert _deps.module_of(requirement) == module


def test_every_installed_requirement_is_found_by_its_module():
    """A distribution installed here whose module _deps looks for under the wrong name would be reinstalled."""
    requirements = _deps.dependencies(PYPROJECT) + [r for extra in _deps.extras(PYPROJECT).values() for r in extra]
    checked = 0
    for requirement in requirements:
        dist = requirement.split("[")[0].split(">")[0].split("=")[0]
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        checked += 1
        assert _deps.importlib.util.find_spec(_deps.module_of(requirement)) is not None, requirement
    assert checked >= 10  # the dev venv holds train, cpu, opencv and dev


def test_python_3_10_reads_pyproject_as_tomllib_does(monkeypatch):
    expected = (_deps.dependencies(PYPROJECT), _deps.extras(PYPROJECT))
    assert "trt11-fp16" in expected[1] and expected[1]["trt11-fp16"] == ["nvidia-modelopt[onnx]"]
    monkeypatch.setattr(_deps, "tomllib", None)
    assert (_deps.dependencies(PYPROJECT), _deps.extras(PYPROJECT)) == expected


def test_an_unknown_extra_is_one_line_and_a_failure():
    done = subprocess.run([sys.executable, "-m", "edge._deps", "train", "tensorrtt"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().startswith("unknown extra(s) tensorrtt: pyproject.toml defines train, cpu,")
