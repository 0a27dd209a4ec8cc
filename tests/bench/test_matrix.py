"""What bench decides from an artifact's manifest, without running anything: the cells an engine's
optimisation profile excludes (skipped, not errors) and rows whose quantizer did not accept them
(rejected, numbers kept), and how reports show both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.matrix import (
    BenchPlan,
    EvalPlan,
    artifact_job,
    batch_limits,
    cell_skips,
    mark_rejected,
    rejection_reason,
)
from bench.report import csv_rows, headline, row_note
from edge.errors import UserError
from edge.manifest import Manifest, write_manifest
from edge.measure.timing import TimingWindow


def _manifest(kind: str = "engine", provenance: dict | None = None, metrics: dict | None = None) -> Manifest:
    return Manifest(
        kind=kind,
        file="fp16.engine" if kind == "engine" else "model.int8-cpu.onnx",
        sha256="0" * 64,
        size_bytes=1,
        parent_sha256=None,
        parent_file=None,
        spec=None,
        provenance=provenance or {},
        metrics=metrics or {},
        environment={},
        created_at="2025-01-01T00:00:00",
    )


ENGINE = _manifest(provenance={"profile": {"input": "input", "min": 1, "opt": 8, "max": 32}})


# ---- engines measure only what they were built for --------------------------------------------


def test_engine_cells_outside_the_profile_are_skipped_with_the_reason():
    limits = batch_limits(ENGINE)
    assert limits == (1, 32)
    assert cell_skips([1, 2, 4, 8, 16, 32, 64], limits) == {64: "engine built for batch 1..32"}
    assert cell_skips([1, 8, 32], limits) == {}
    narrow = batch_limits(_manifest(provenance={"profile": {"min": 4, "opt": 8, "max": 8}}))
    assert cell_skips([1, 2, 4, 8, 16], narrow) == {
        1: "engine built for batch 4..8",
        2: "engine built for batch 4..8",
        16: "engine built for batch 4..8",
    }


def test_other_artifacts_take_every_batch():
    assert batch_limits(None) is None  # no manifest
    assert batch_limits(_manifest(kind="onnx-int8-cpu")) is None
    assert batch_limits(_manifest(provenance={})) is None  # an engine from before profiles were recorded
    assert cell_skips([1, 64], None) == {}


@pytest.mark.parametrize("profile", [{"min": 1}, {"min": 0, "max": 8}, {"min": 16, "max": 8}, {"min": "1", "max": 8}, [1, 8, 32]])
def test_a_malformed_profile_is_a_user_error(profile):
    with pytest.raises(UserError, match="malformed optimisation profile.*rebuild it with `edge engine`"):
        batch_limits(_manifest(provenance={"profile": profile}))


def _plan(tmp_path: Path, batch_sizes: list[int], single_stream: int = 50) -> BenchPlan:
    return BenchPlan(
        run=tmp_path,
        artifacts={},
        devices=["cuda"],
        batch_sizes=batch_sizes,
        window=TimingWindow(0.0, 1, 0.0, 1.0),
        eval=EvalPlan("fashion-mnist", 100),
        single_stream_samples=single_stream,
    )


def _engine_file(tmp_path: Path, low: int, high: int) -> Path:
    engine = tmp_path / "fp16.engine"
    engine.write_bytes(b"plan")
    write_manifest(engine, "engine", None, provenance={"profile": {"input": "input", "min": low, "opt": high, "max": high}})
    return engine


def test_the_worker_job_carries_the_skips_and_an_eval_batch_inside_the_profile(tmp_path: Path):
    job = artifact_job(_plan(tmp_path, [1, 8, 32, 64]), "trt-fp16@x", _engine_file(tmp_path, 1, 16), "cuda")
    assert job["cell_skips"] == [
        {"batch": 32, "reason": "engine built for batch 1..16"},
        {"batch": 64, "reason": "engine built for batch 1..16"},
    ]
    assert job["batch_sizes"] == [1, 8, 32, 64]  # the worker records the skipped cells in order
    assert job["eval_batch"] == 16
    assert job["single_stream"] == {"samples": 50}


def test_single_stream_is_skipped_when_batch_1_is_outside_the_profile(tmp_path: Path):
    job = artifact_job(_plan(tmp_path, [1, 8]), "trt-int8@x", _engine_file(tmp_path, 4, 8), "cuda")
    assert job["single_stream"] is None
    assert [s["batch"] for s in job["cell_skips"]] == [1]


def test_onnx_jobs_skip_nothing(tmp_path: Path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    job = artifact_job(_plan(tmp_path, [1, 64]), "onnx-fp32", model, "cpu")
    assert job["cell_skips"] == [] and job["eval_batch"] == 32


# ---- rows the quantizer did not accept ----------------------------------------------------------

NOT_ACCEPTED = _manifest(
    kind="onnx-int8-cpu",
    provenance={"max_drop": 0.5, "min_agreement": 99.0},
    metrics={"accepted": False, "drop_points": 1.2, "agreement": 97.25, "eval_count": 2000, "top1": 88.0},
)


def test_rejection_reason_from_the_manifest():
    assert rejection_reason(NOT_ACCEPTED) == (
        "edge quantize did not accept it (manifest accepted: false): top-1 drop 1.20 pts, agreement 97.25% "
        "on 2000 test images (budget --max-drop 0.5, --min-agreement 99.0)"
    )
    assert rejection_reason(_manifest(kind="onnx-int8-cpu", metrics={"accepted": False})) == (
        "edge quantize did not accept it (manifest accepted: false)"
    )
    with_reason = _manifest(kind="onnx-int8-cpu", metrics={"accepted": False, "reason": "agreement 97% < 99%"})
    assert rejection_reason(with_reason) == "edge quantize did not accept it: agreement 97% < 99%"
    assert rejection_reason(dataclasses.replace(NOT_ACCEPTED, metrics={"accepted": True})) is None
    assert rejection_reason(_manifest(kind="onnx-fp32")) is None
    assert rejection_reason(None) is None
    with pytest.raises(UserError, match="accepted: 'no'"):
        rejection_reason(_manifest(metrics={"accepted": "no"}))


def test_a_measured_row_becomes_rejected_and_keeps_its_numbers():
    cells = [{"batch": 1, "status": "ok", "compute": {"p50_ms": 1.0, "items_per_s": 1000.0}}]
    row = {"artifact": "int8-cpu", "device": "cpu", "status": "ok", "cells": cells, "accuracy": {"top1": 88.0}}
    mark_rejected(row, NOT_ACCEPTED)
    assert row["status"] == "rejected"
    assert row["reason"].startswith("edge quantize did not accept it")
    assert row["cells"] == cells and row["accuracy"] == {"top1": 88.0}
    skipped = {"artifact": "int8-cpu", "device": "cuda", "status": "skipped", "reason": "no CUDA device"}
    mark_rejected(skipped, NOT_ACCEPTED)
    assert skipped["status"] == "skipped" and skipped["reason"] == "no CUDA device"


def test_reports_show_rejected_rows_and_skipped_cells():
    row = {
        "artifact": "int8-cpu",
        "device": "cpu",
        "status": "rejected",
        "reason": "edge quantize did not accept it (manifest accepted: false)",
        "cells": [
            {"batch": 1, "status": "ok", "compute": {"p50_ms": 2.0, "items_per_s": 500.0}},
            {"batch": 64, "status": "skipped", "reason": "engine built for batch 1..32"},
        ],
        "accuracy": {"top1": 88.0, "vs_parent": {"drop_points": 1.2, "agreement": 97.0}},
    }
    note = row_note(row)
    assert note.startswith("rejected: edge quantize did not accept it")
    assert "batch 64 skipped: engine built for batch 1..32" in note
    report = {"settings": {"batch_sizes": [1, 64]}, "rows": [row]}
    _, (line,) = headline(report)
    assert line[:5] == ["int8-cpu", "cpu", "88.00", "1.20", "97.00"]
    assert line[5] == "2.00" and line[6] == "n/a"  # p50 at batch 1, nothing at the skipped 64
    lines = csv_rows(report)
    assert [(x["status"], x["batch"]) for x in lines] == [("rejected", 1), ("rejected", 64)]
    assert lines[1]["note"] == "skipped: engine built for batch 1..32"
