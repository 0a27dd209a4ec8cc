"""edge serve: a real tritonserver (nvidia-pytriton's) serves the run's ONNX model; real images
through tritonclient give the local ONNX Runtime runner's logits; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UserError
from edge.triton.serve import STOP_TIMEOUT_S


def _skip_reason() -> str | None:
    from edge.triton.serve import check_runnable, server_files

    try:
        check_runnable(server_files())
    except UserError as exc:
        return str(exc)
    return None


pytestmark = [
    pytest.mark.skipif(_skip_reason() is not None, reason=f"the bundled tritonserver cannot run here: {_skip_reason()}"),
]
triton_http = pytest.importorskip("tritonclient.http", reason="tritonclient (the dev extra) talks to the server")


def free_port_block() -> int:
    """A port P with P, P+1 and P+2 free (HTTP, gRPC, metrics)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65000 and all(_free(port + i) for i in range(3)):
            return port
    raise RuntimeError("no three consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def wait_for(url: str, model: str, process: subprocess.Popen, timeout: float = 120) -> None:
    client = triton_http.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if client.is_model_ready(model):
                return
        except Exception:  # connection refused while the server starts
            pass
        time.sleep(0.5)
    raise AssertionError(f"{model} not ready after {timeout} s")


def test_serve_returns_the_local_runners_logits_and_stops_cleanly(triton_run: Path, photos: dict, tmp_path: Path) -> None:
    from edge.artifact_spec import artifact_spec
    from edge.runners import select_runner
    from edge.triton.serve import listening_sockets

    port = free_port_block()
    command = [sys.executable, "-m", "edge", "serve", str(triton_run), "--artifact", "onnx-fp32", "--port", str(port)]
    work = tmp_path / "tmp"  # the server's work folder goes here: it must be gone afterwards
    work.mkdir()
    env = dict(os.environ, TMPDIR=str(work), PYTHONUNBUFFERED="1", COLUMNS="200")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(f"localhost:{port}", "fashion-onnx-fp32", process)
        said = ""
        while "Ctrl-C stops it" not in said:  # edge serve says what it bound once the server is ready
            line = process.stdout.readline()  # type: ignore[union-attr]
            assert line, f"edge serve ended before it said what it serves: {said}"
            said += line
        listening = listening_sockets()  # HTTP, gRPC and metrics on loopback only (no --host given)
        assert [listening.get(p) for p in (port, port + 1, port + 2)] == [[f"127.0.0.1:{p}"] for p in (port, port + 1, port + 2)]
        # edge serve's work folder is there (tritonserver adds a .ses file of its own beside it)
        assert len(list(work.glob("edge-serve-*"))) == 1
        spec = artifact_spec(triton_run / "model.onnx")
        batch = np.stack([spec.apply(frame) for frame in photos.values()]).astype(np.float32)
        client = triton_http.InferenceServerClient(f"localhost:{port}")
        request = triton_http.InferInput("input", list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        served = client.infer("fashion-onnx-fp32", [request]).as_numpy("logits")
        with select_runner(triton_run / "model.onnx", "cpu") as runner:
            local = runner.infer(batch)
        np.testing.assert_allclose(served, local, rtol=1e-5, atol=1e-5)
        top1 = client.infer("fashion-onnx-fp32", [request], outputs=[triton_http.InferRequestedOutput("logits", class_count=1)])
        names = [entry[0].decode().split(":")[2] for entry in top1.as_numpy("logits")]
        assert names == [spec.labels[i] for i in local.argmax(axis=1)]
        import urllib.request

        metrics = urllib.request.urlopen(f"http://localhost:{port + 2}/metrics", timeout=5).read().decode()
        assert 'nv_inference_request_success{model="fashion-onnx-fp32",version="1"} 2' in metrics
    finally:
        process.send_signal(signal.SIGINT)
        try:  # edge serve waits STOP_TIMEOUT_S for tritonserver, then kills it: this leaves room for a loaded machine
            out, err = process.communicate(timeout=STOP_TIMEOUT_S + 90)
        except subprocess.TimeoutExpired:
            process.terminate()  # SIGTERM: edge serve still stops tritonserver (a kill would orphan it)
            try:
                out, err = process.communicate(timeout=STOP_TIMEOUT_S + 15)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            raise AssertionError(
                f"edge serve did not stop within {STOP_TIMEOUT_S + 90:.0f} s of Ctrl-C:\n{out[-2000:]}\n{err[-2000:]}"
            ) from None
    assert process.returncode == 0, err
    assert "stopped fashion-onnx-fp32" in out
    said = " ".join(said.split())
    assert f"HTTP 127.0.0.1:{port}, gRPC 127.0.0.1:{port + 1}, metrics 127.0.0.1:{port + 2}" in said
    assert not list(work.glob("edge-serve-*"))  # the work folder (repository, backend links, log) is removed
    for listening in (port, port + 1, port + 2):  # nothing answers any more: the server is gone
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", listening), timeout=2).close()


def test_serve_refuses_what_it_cannot_serve(triton_run: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "serve", str(triton_run), "--artifact", "int8-cpu", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--port 70000" in proc.stderr
