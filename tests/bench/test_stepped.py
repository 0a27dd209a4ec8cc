"""The stepped matrix: workers of one device kept alive and timed round by round in turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.matrix import BenchPlan, run_device_group
from edge.measure.timing import TimingWindow

ROUNDS = 3


@pytest.fixture(scope="module")
def rows(fashion_onnx_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    broken = tmp_path_factory.mktemp("broken") / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    artifacts = {"torch-fp32": fashion_onnx_run / "checkpoint.pt", "onnx-fp32": fashion_onnx_run / "model.onnx", "broken": broken}
    window = TimingWindow(warmup_s=0.0, min_iters=ROUNDS * 2, min_seconds=0.0, max_seconds=5.0, rounds=ROUNDS)
    plan = BenchPlan(fashion_onnx_run, artifacts, ["cpu"], [1, 2], window, threads=1, end_to_end=False, timeout_s=300)
    jobs = [(name, path, "cpu") for name, path in artifacts.items()]
    return {row["artifact"]: row for row in run_device_group(plan, jobs)}


def test_every_cell_has_its_rounds_each_with_the_machine_probe(rows):
    for name in ("torch-fp32", "onnx-fp32"):
        assert rows[name]["status"] == "ok", rows[name].get("error")
        for cell in rows[name]["cells"]:
            compute = cell["compute"]
            assert len(compute["rounds"]) == ROUNDS
            assert all(r["probe_ms"] > 0 and r["samples"] >= 2 for r in compute["rounds"])
            low, high = compute["p50_ci_ms"]
            assert low <= compute["p50_ms"] <= high  # the median of rounds lies in its interval
            assert compute["samples"] == sum(r["samples"] for r in compute["rounds"])


def test_the_rounds_of_two_artifacts_interleave(rows):
    """Round r of each artifact is timed before round r + 1 of the other: their windows alternate."""
    starts = {
        name: [r["started_at"] for r in next(c for c in rows[name]["cells"] if c["batch"] == 1)["compute"]["rounds"]]
        for name in ("torch-fp32", "onnx-fp32")
    }
    for r in range(ROUNDS - 1):
        assert starts["torch-fp32"][r] < starts["onnx-fp32"][r + 1]
        assert starts["onnx-fp32"][r] < starts["torch-fp32"][r + 1]


def test_a_broken_artifact_loses_its_row_only(rows):
    assert rows["broken"]["status"] == "error"
    assert "model.onnx" in rows["broken"]["error"]
    assert rows["onnx-fp32"]["status"] == "ok"
