"""The Server scenario against a live endpoint: `edge serve`'s tritonserver on 127.0.0.1, LoadGen's
find-peak mode through tritonclient (HTTP and gRPC), a bounded --quick run; the input spec is
read back from the model's config. Skipped with the reason where the bundled tritonserver cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.loadgen.remote import parse_url, read_endpoint
from edge.cli import main
from edge.errors import UserError

pytest.importorskip("mlperf_loadgen", reason="MLPerf LoadGen (the loadgen extra, in dev) runs the scenarios")
pytest.importorskip("tritonclient.grpc", reason="tritonclient (the dev extra) talks to the server")


def _skip_reason() -> str | None:
    from edge.triton.serve import check_runnable, server_files

    try:
        check_runnable(server_files())
    except UserError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def served(pipeline_run: Path):
    reason = _skip_reason()
    if reason:
        pytest.skip(f"the bundled tritonserver cannot run here: {reason}")
    from edge.triton.serve import start_server
    from tests.edge.triton.test_serve import free_port_block

    server = start_server(pipeline_run, "onnx-fp32", free_port_block(), "127.0.0.1")
    with server:
        server.wait_ready()
        yield server


def bench_endpoint(pipeline_run: Path, out: Path, url: str, mode: str) -> list[dict]:
    code = main(
        ["bench", str(pipeline_run), "--eval", "fashion-mnist", "--eval-count", "40", "--scenario", "server", "--url", url,
         "--quick", "--latency-bound", "100", "--loadgen-mode", mode, "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == []  # the endpoint alone: no bench cells
    return report["loadgen"]["entries"]


def test_find_peak_and_accuracy_over_grpc_against_edge_serve(served, pipeline_run: Path, tmp_path: Path) -> None:
    from bench.worker import load_eval_images
    from edge.runners import select_runner

    url = f"grpc://127.0.0.1:{served.grpc_port}"
    peak, scored = bench_endpoint(pipeline_run, tmp_path / "bench", url, "both")
    assert peak["mode"] == "find-peak" and peak["status"] == "ok" and peak["peak_qps"] > 0
    assert peak["endpoint"]["url"] == url and peak["effective"]["target_latency_ns"] == 100_000_000
    assert peak["validity"] in ("VALID", "INVALID") and peak["rounds_ms"]
    assert "Found peak performance field" in Path(peak["logs"]["detail"]).read_text()
    assert scored["mode"] == "accuracy" and scored["accuracy"]["count"] == 40
    images, labels, _, _ = load_eval_images(
        {"run": str(pipeline_run), "data": "fashion-mnist", "count": 40, "seed": 0, "exclude_seen": False}
    )
    with select_runner(pipeline_run / "model.onnx", "cpu") as runner:
        local = runner.infer(runner.spec.apply_batch(images)).argmax(axis=1)
    assert scored["accuracy"]["top1"] == pytest.approx(float((local == labels).mean() * 100.0))


def test_http_answers_are_the_local_runners(served, pipeline_run: Path, tmp_path: Path) -> None:
    """The HTTP client path (a thread per request in flight), with the model's input spec read back
    from its config: LoadGen's accuracy log holds the local runner's top-1 for every sample."""
    from bench.loadgen.library import SampleLibrary
    from bench.loadgen.remote import RemoteSUT
    from bench.loadgen.runner import run_scenario
    from bench.loadgen.scenarios import ScenarioOptions, loadgen
    from bench.worker import synthetic_frames
    from edge.runners import select_runner

    endpoint = read_endpoint(f"http://127.0.0.1:{served.http_port}", None)  # the only model
    assert endpoint.model == served.model and endpoint.input_name == "input" and endpoint.datatype == "TYPE_FP32"
    assert endpoint.max_batch_size > 0 and len(endpoint.dims) == 3 and endpoint.spec is not None
    frames = synthetic_frames(endpoint.spec, 24, seed=3)
    with select_runner(pipeline_run / "model.onnx", "cpu") as runner:
        local = runner.infer(endpoint.spec.apply_batch(frames)).argmax(axis=1)
    library = SampleLibrary(endpoint.spec, frames, local, budget_mib=1)
    options = ScenarioOptions(quick=True, server_qps=100.0)
    entry = run_scenario(RemoteSUT(loadgen(), library, endpoint), library, "server", True, options, tmp_path / "logs")
    assert entry["accuracy"]["count"] == 24 and entry["accuracy"]["top1"] == 100.0
    assert library.performance_count == min(24, 2**20 // library.sample_bytes)


def test_urls_are_checked() -> None:
    assert parse_url("127.0.0.1:8000") == ("http", "127.0.0.1:8000")
    assert parse_url("grpc://127.0.0.1:8001") == ("grpc", "127.0.0.1:8001")
    with pytest.raises(UserError, match="http://HOST:PORT or grpc://HOST:PORT"):
        parse_url("ftp://127.0.0.1:1")
