"""Experiment tracking on the real pipeline (edge/tracking/, with the real mlflow on a temporary store):
quantize -> bench -> check log their runs under one parent, `edge runs` and `edge compare` read them
back, and a tracking server that refuses connections or never answers does not fail or stall a stage.

The pipeline's quantization and bench are the session's (tests/bench/conftest.py): here `edge quantize`
and `edge bench` run through the CLI with their measuring step replaced by the files already
written, so what is tested is the tracking hook reading those files; `edge check` runs for real.
Training's run is tested in tests/train/test_tracking.py.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.manifest import read_manifest

EXPERIMENT = "pipeline-e2e"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A temporary local MLflow store (SQLite), named by MLFLOW_TRACKING_URI for this module's commands."""
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.delenv("EDGE_TRACKING", raising=False)
        patch.delenv("EDGE_TRACKING_TIMEOUT", raising=False)
        yield root


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _stage_runs(experiment: str) -> dict[str, object]:
    client = _client()
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    return {run.info.run_name: run for run in reversed(runs)}  # the newest of each name


@pytest.fixture(scope="module")
def auto_int8(pipeline_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the pipeline's INT8 manifest and layer report (the model file is not read) as
    ``--method auto`` writes them: its tries scored on a val split (the session quantized with minmax)."""
    int8, folder = pipeline_run / "model.int8-cpu.onnx", tmp_path_factory.mktemp("quantized")
    manifest = json.loads((int8.parent / f"{int8.name}.json").read_text())
    prov = manifest["provenance"]
    prov.update(val_set="fashion-mnist:val", val_count=200, method="auto")
    for i, entry in enumerate(prov["tries"]):
        entry.update(top1=70.0 + i, drop_points=0.5 - i, agreement=95.0 + i, speedup=1.5, eval_count=200)
    (folder / f"{int8.name}.json").write_text(json.dumps(manifest))
    (folder / prov["layer_report"]).write_bytes((int8.parent / prov["layer_report"]).read_bytes())
    return folder / int8.name


@pytest.fixture(scope="module")
def tracked(store: Path, pipeline_run: Path, pipeline_report: Path, auto_int8: Path, tmp_path_factory: pytest.TempPathFactory):
    """quantize, bench and check of the pipeline run, each with --track (the junit XML of check too)."""
    junit = tmp_path_factory.mktemp("gate") / "gate.xml"
    int8 = auto_int8
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edge.quantize.cli.quantize_run", lambda *a, **k: int8)
        patch.setattr("bench.cli.run_bench", lambda *a, **k: 0)
        track = ("--track", "--experiment", EXPERIMENT)
        assert main(["quantize", str(pipeline_run), "--target", "cpu", *track]) == 0
        assert main(["bench", str(pipeline_run), *track]) == 0
    assert main(["check", str(pipeline_report), "--max-drop", "0.5", "--junit", str(junit), *track]) == 0
    return _stage_runs(EXPERIMENT)


def test_each_stage_is_a_run_under_the_run_directorys_parent(tracked, store: Path, pipeline_run: Path):
    parent = tracked[pipeline_run.name]
    assert parent.data.tags["edge.role"] == "pipeline"
    assert parent.data.tags["edge.run_dir"] == str(pipeline_run.resolve())
    checkpoint = read_manifest(pipeline_run / "checkpoint.pt")
    splits = checkpoint.provenance["splits"]["fingerprints"]
    for name in ("quantize-cpu", "bench", "check"):
        run = tracked[name]
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["edge.stage"] == name.split("-")[0]
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith((store / "mlruns" / EXPERIMENT).as_uri())  # beside the store, not in the cwd
        # runs on different data are never compared as equals: the split fingerprints ride along
        assert {tags[f"edge.split.{s}"] for s in splits} == set(splits.values())
        assert tags["edge.model"] == checkpoint.provenance["arch"]
        assert tags["edge.checkpoint_sha256"] == checkpoint.sha256
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["edge.machine_fingerprint"] and tags["edge.pkg.numpy"] == np.__version__


def test_quantize_logs_the_tries_the_verdict_and_its_bounds(tracked, auto_int8: Path):
    manifest = read_manifest(auto_int8)
    run = tracked["quantize-cpu"]
    metrics, params = run.data.metrics, run.data.params
    assert metrics["accepted"] == float(manifest.metrics["accepted"])
    for key in ("drop_points", "drop_lower_points", "drop_upper_points", "agreement", "max_flips", "top1", "parent_top1"):
        assert metrics[key] == pytest.approx(manifest.metrics[key]), key
    assert metrics["max_drop"] == 1.0 and metrics["min_agreement"] == 90.0  # the budgets the pipeline asked for
    assert params["method"] == "auto" and params["chosen_method"] == manifest.provenance["chosen_method"] == "minmax"
    assert params["nodes_in_float"] == (", ".join(manifest.provenance["nodes_excluded"]) or "none")
    assert run.data.tags["edge.accepted"] == ("true" if manifest.metrics["accepted"] else "false")
    tries = manifest.provenance["tries"]
    history = _client().get_metric_history(run.info.run_id, "try.val_agreement")
    assert len(tries) >= 2 and sorted((m.step, m.value) for m in history) == [(i, 95.0 + i) for i in range(len(tries))]
    assert params["try.1"] == "minmax, 0 in float, bias corrected"
    files = {a.path for a in _client().list_artifacts(run.info.run_id)}
    assert {"model.int8-cpu.onnx.json", "model.int8-cpu.layers.json"} <= files
    assert "model.int8-cpu.onnx" not in files  # models only with --log-models


def test_bench_logs_one_metric_per_cell_with_its_interval(tracked, pipeline_report: Path):
    report = json.loads(pipeline_report.read_text())
    run = tracked["bench"]
    metrics = run.data.metrics
    row = next(r for r in report["rows"] if r["artifact"] == "int8-cpu" and r["device"] == "cpu")
    cell = next(c for c in row["cells"] if c["batch"] == 8)
    assert metrics["p50_ms.int8-cpu.cpu.b8"] == pytest.approx(cell["compute"]["p50_ms"])
    low, high = cell["compute"]["p50_ci_ms"]
    assert metrics["p50_low_ms.int8-cpu.cpu.b8"] == pytest.approx(low)
    assert metrics["p50_high_ms.int8-cpu.cpu.b8"] == pytest.approx(high)
    assert metrics["images_per_s.int8-cpu.cpu.b8"] == pytest.approx(cell["compute"]["items_per_s"])
    assert metrics["drop_points.int8-cpu.cpu"] == pytest.approx(row["accuracy"]["vs_parent"]["drop_points"])
    assert metrics["top1.int8-cpu.cpu"] == pytest.approx(row["accuracy"]["top1"])
    assert not any(".cuda." in key for key in metrics)  # a skipped row has no figure, never a 0
    assert run.data.tags["edge.row.int8-cpu.cuda"] == "skipped"
    assert run.data.tags["edge.eval_fingerprint"] == report["eval"]["fingerprint"]
    assert {"report.json", "report.md", "report.csv"} <= {a.path for a in _client().list_artifacts(run.info.run_id)}


def test_check_logs_its_verdict_and_each_failed_check(tracked, store: Path, pipeline_report: Path, tmp_path: Path, capsys):
    passed = tracked["check"]
    assert passed.data.metrics["passed"] == 1.0 and passed.data.metrics["failed"] == 0.0
    assert passed.data.tags["edge.gate"] == "passed"
    assert {"gate.json", "gate.xml"} <= {a.path for a in _client().list_artifacts(passed.info.run_id)}
    # a degraded INT8 fails the gate: the verdict and every failed check are on the run
    report = json.loads(pipeline_report.read_text())
    labels = np.asarray(report["eval"]["labels"])
    rows = {f"{r['artifact']}@{r['device']}": r for r in report["rows"]}
    parent = np.asarray(rows["onnx-fp32@cpu"]["accuracy"]["predictions"])
    rows["int8-cpu@cpu"]["accuracy"]["predictions"] = np.where(parent == labels, (labels + 1) % 10, parent).tolist()
    degraded = tmp_path / "degraded.json"
    degraded.write_text(json.dumps(report))
    capsys.readouterr()
    assert main(["check", str(degraded), "--track", "--experiment", "degraded"]) == 1
    printed = [line.removeprefix("FAIL ") for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL ")]
    failed = _stage_runs("degraded")["check"]
    assert failed.data.tags["edge.gate"] == "failed" and failed.data.metrics["passed"] == 0.0
    logged = [v for k, v in sorted(failed.data.tags.items()) if k.startswith("edge.fail.")]
    assert printed and sorted(logged) == sorted(" ".join(line.split()) for line in printed)
    assert failed.data.metrics["failed"] == len(printed)


def test_edge_runs_lists_the_pipeline_at_80_columns(tracked, pipeline_run: Path, pipeline_report: Path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    report = json.loads(pipeline_report.read_text())
    rows = {f"{r['artifact']}@{r['device']}": r for r in report["rows"] if r["status"] == "ok"}
    fastest_b1 = min(c["compute"]["p50_ms"] for r in rows.values() for c in r["cells"] if c["batch"] == 1 and c["status"] == "ok")
    capsys.readouterr()
    assert main(["runs", EXPERIMENT, "--sort", "cpu_b1"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    line = next(line for line in out.splitlines() if line.lstrip().startswith(pipeline_run.name))
    assert "tf_efficientnet_lite0" in line and f"{rows['onnx-fp32@cpu']['accuracy']['top1']:.2f}" in line
    assert f"{fastest_b1:.2f}" in line and line.rstrip().endswith("pass")
    assert main(["runs", EXPERIMENT, "--sort", "speed"]) == 2
    assert "--sort speed: no such column; use one of run, started" in capsys.readouterr().err


def test_edge_compare_reads_runs_back_by_id_and_experiment(tracked, pipeline_report: Path, tmp_path: Path, capsys, monkeypatch):
    bench = tracked["bench"]
    monkeypatch.setattr("bench.compare.plot_unavailable", lambda: "no PNG in this test")  # the CSV is what is read here
    capsys.readouterr()
    assert main(["compare", bench.info.run_id, EXPERIMENT, "--out", str(tmp_path)]) == 0
    csv_text = (tmp_path / "compare.csv").read_text()
    assert csv_text.count(f"runs:/{bench.info.run_id}/report.json") >= 2  # R1 (the id) and R2 (the experiment's)
    row = next(r for r in json.loads(pipeline_report.read_text())["rows"] if r["artifact"] == "int8-cpu" and r["device"] == "cpu")
    p50_b1 = next(c["compute"]["p50_ms"] for c in row["cells"] if c["batch"] == 1)
    assert re.search(rf"^R1,[^\n]*,cpu,int8-cpu,ok,{p50_b1}", csv_text, flags=re.M)
    assert main(["compare", "no-such-experiment"]) == 2
    assert "nor an MLflow run id or experiment" in capsys.readouterr().err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _printed(capsys) -> str:
    """stdout and stderr as one line of words (the log handler wraps its lines at 80 columns)."""
    out, err = capsys.readouterr()
    return " ".join((out + err).split())


def test_a_refused_connection_neither_fails_nor_stalls_the_stage(pipeline_report: Path, monkeypatch, capsys):
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # tracking on, to a server that is not there
    monkeypatch.delenv("EDGE_TRACKING", raising=False)
    monkeypatch.delenv("EDGE_TRACKING_TIMEOUT", raising=False)
    start = time.perf_counter()
    assert main(["check", str(pipeline_report), "--max-drop", "0.5"]) == 0  # the gate's own verdict stands
    seconds = time.perf_counter() - start
    warning = _printed(capsys)
    assert f"tracking: MLflow at {uri} failed: connection refused; nothing is lost" in warning
    with capsys.disabled():
        print(f"refused connection: edge check with tracking took {seconds:.2f} s (deadline 30 s)")
    assert seconds < 30
    # --track-strict: an error before the gate's work, one line, exit 2
    capsys.readouterr()
    assert main(["check", str(pipeline_report), "--track-strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge check: error: tracking: MLflow at {uri} failed: connection refused"]


def test_a_server_that_never_answers_is_bounded_by_the_deadline(pipeline_report: Path, monkeypatch, capsys):
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow) is not installed")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("EDGE_TRACKING_TIMEOUT", "1")
        start = time.perf_counter()
        assert main(["check", str(pipeline_report), "--track"]) == 0
        seconds = time.perf_counter() - start
    assert "failed: no answer within 1 s (EDGE_TRACKING_TIMEOUT)" in _printed(capsys)
    with capsys.disabled():
        print(f"silent server: edge check with tracking took {seconds:.2f} s (EDGE_TRACKING_TIMEOUT=1)")
    assert seconds < 10
