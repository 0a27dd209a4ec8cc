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


def test_accuracy_over_grpc_through_the_cli_matches_the_local_runner(served, pipeline_run: Path, tmp_path: Path) -> None:
    from bench.worker import load_eval_images
    from edge.runners import select_runner

    url = f"grpc://127.0.0.1:{served.grpc_port}"
    out = tmp_path / "bench"
    code = main(
        ["bench", str(pipeline_run), "--eval", "fashion-mnist", "--eval-count", "40", "--scenario", "server", "--url", url,
         "--quick", "--latency-bound", "100", "--loadgen-mode", "accuracy", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == []  # the endpoint alone: no bench cells
    (scored,) = report["loadgen"]["entries"]
    assert scored["mode"] == "accuracy" and scored["accuracy"]["count"] == 40 and scored["artifact"] == f"served:{served.model}"
    assert scored["endpoint"]["url"] == url and scored["endpoint"]["input"]["name"] == "input"
    assert scored["effective"]["target_qps"] > 0  # half the rate of one request at a time, probed first
    images, labels, _, _ = load_eval_images(
        {"run": str(pipeline_run), "data": "fashion-mnist", "count": 40, "seed": 0, "exclude_seen": False}
    )
    with select_runner(pipeline_run / "model.onnx", "cpu") as runner:
        local = runner.infer(runner.spec.apply_batch(images)).argmax(axis=1)
    assert scored["accuracy"]["top1"] == pytest.approx(float((local == labels).mean() * 100.0))
    assert (out / "loadgen" / f"served-{served.model}" / "server" / "accuracy" / "mlperf_log_accuracy.json").is_file()


def test_find_peak_over_http_holds_the_bound(served, pipeline_run: Path, tmp_path: Path) -> None:
    """LoadGen's find-peak mode over HTTP (a thread per request in flight), the model's input spec
    read back from its config; shortened well below --quick so the search stays bounded in time."""
    from bench.loadgen.library import SampleLibrary
    from bench.loadgen.remote import RemoteSUT
    from bench.loadgen.runner import run_scenario
    from bench.loadgen.scenarios import ScenarioOptions, loadgen
    from bench.worker import synthetic_frames

    endpoint = read_endpoint(f"http://127.0.0.1:{served.http_port}", None)  # the only model
    assert endpoint.model == served.model and endpoint.input_name == "input" and endpoint.datatype == "TYPE_FP32"
    assert endpoint.max_batch_size > 0 and len(endpoint.dims) == 3 and endpoint.spec is not None
    library = SampleLibrary(endpoint.spec, synthetic_frames(endpoint.spec, 24, seed=3), None, budget_mib=1)
    options = ScenarioOptions(
        quick=True, find_peak=True, latency_bound_ms=100.0, server_qps=50.0, min_duration_ms=100, min_query_count=16
    )
    peak = run_scenario(RemoteSUT(loadgen(), library, endpoint), library, "server", False, options, tmp_path / "logs")
    assert peak["mode"] == "find-peak" and peak["peak_qps"] >= 50.0  # at least the rate it started from
    assert peak["effective"]["target_latency_ns"] == 100_000_000 and peak["rounds_ms"]
    assert "Found peak performance field" in (tmp_path / "logs" / "mlperf_log_detail.txt").read_text()
    assert library.performance_count == min(24, 2**20 // library.sample_bytes)


def test_urls_are_checked() -> None:
    assert parse_url("127.0.0.1:8000") == ("http", "127.0.0.1:8000")
    assert parse_url("grpc://127.0.0.1:8001") == ("grpc", "127.0.0.1:8001")
    with pytest.raises(UserError, match="http://HOST:PORT or grpc://HOST:PORT"):
        parse_url("ftp://127.0.0.1:1")
