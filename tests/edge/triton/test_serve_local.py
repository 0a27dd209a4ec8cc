"""edge serve stays on this machine and leaves nothing behind (issue 25), checked without the
bundled tritonserver: its command line, the sockets read back from the kernel, the work folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge.triton import serve


def _files(tmp_path: Path) -> serve.ServerFiles:
    return serve.ServerFiles(tmp_path / "tritonserver", tmp_path / "backends", tmp_path / "stub", tmp_path / "libs")


def test_every_endpoint_binds_loopback_unless_told(tmp_path: Path) -> None:
    command = serve.server_command(_files(tmp_path), tmp_path, tmp_path / "backends", serve.DEFAULT_HOST, 8850)
    assert serve.DEFAULT_HOST == "127.0.0.1"
    for flag in ("--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"):
        assert flag in command
    assert {"--http-port=8850", "--grpc-port=8851", "--metrics-port=8852"} <= set(command)
    everywhere = serve.server_command(_files(tmp_path), tmp_path, tmp_path / "backends", "0.0.0.0", 8850)
    assert "--grpc-address=0.0.0.0" in everywhere


def test_the_bound_addresses_are_read_back_from_the_kernel() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert serve.listening_sockets()[port] == [f"127.0.0.1:{port}"]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6) as six:
                six.bind(("::1", 0))
                six.listen()
                assert serve.listening_sockets()[six.getsockname()[1]] == [f"[::1]:{six.getsockname()[1]}"]
        except OSError:
            pass  # no IPv6 loopback on this machine


def test_a_failed_start_leaves_no_work_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(serve, "server_files", lambda: _files(tmp_path))
    monkeypatch.setattr(serve, "check_runnable", lambda files: None)
    monkeypatch.setattr(serve, "serve_plan", lambda run, artifact: (None, None))

    def broken(files, workdir):
        (workdir / "backends").mkdir()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(serve, "backend_folder", broken)
    with pytest.raises(OSError, match="No space left"):
        serve.start_server(tmp_path / "run")
    assert not list(tmp_path.glob("edge-serve-*"))


def test_stopping_removes_the_whole_work_folder(tmp_path: Path) -> None:
    workdir = tmp_path / "edge-serve-x"
    (workdir / "repository").mkdir(parents=True)
    log = workdir / "tritonserver.log"
    log.write_text("")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    server = serve.Server(process, "m", 1, 2, 3, log, workdir)
    assert server.stop() is not None and not workdir.exists()
    assert server.url == "127.0.0.1:1"


def test_a_host_that_is_not_an_address_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from edge.cli import main

    assert main(["serve", "runs/none", "--host", "every-interface"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "edge serve: error: --host 'every-interface': give an IP address (127.0.0.1, 0.0.0.0, ::1 or one of this machine's)"
    ]
