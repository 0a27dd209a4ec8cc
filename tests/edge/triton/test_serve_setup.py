"""edge serve's set-up checks: what is missing is one line that says what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import UserError
from edge.triton import serve


def test_missing_pytriton_names_the_no_deps_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps nvidia-pytriton==0\.7\.0"):
        serve.server_files()


def test_a_stub_without_the_system_libpython_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = serve.ServerFiles(tmp_path / "tritonserver", tmp_path, tmp_path / "triton_python_backend_stub", tmp_path)
    missing = {files.binary: [], files.stub: ["libpython3.11.so.1.0"]}
    monkeypatch.setattr(serve, "missing_libraries", lambda binary: missing[binary])
    with pytest.raises(
        UserError, match=r"triton_python_backend_stub cannot start: libpython3.11.so.1.0 not found .*apt-get install libpython"
    ):
        serve.check_runnable(files)


def test_serve_refuses_an_artifact_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="onnx-fp32 or int8-cpu"):
        serve.serve_plan(tmp_path, "trt-fp16")
