"""Triton repository fixtures: a run copied from the exported Fashion-MNIST run, with an INT8-cpu
stand-in, a bench report and (for the engine tests) placeholder plans beside recorded manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.artifact_spec import artifact_spec
from edge.manifest import write_manifest


def bench_row(artifact: str, device: str, rates: dict[int, float]) -> dict:
    cells = [{"batch": b, "status": "ok", "compute": {"p50_ms": 1000.0 * b / r, "items_per_s": r}} for b, r in rates.items()]
    return {"artifact": artifact, "device": device, "status": "ok", "cells": cells}


@pytest.fixture()
def triton_run(fashion_onnx_run: Path, tmp_path: Path) -> Path:
    """model.onnx, a model.int8-cpu.onnx (the same graph, recorded as the INT8 kind: the repository
    reads only its graph), and a bench report whose onnx-fp32 CPU throughput peaks at batch 32."""
    run = tmp_path / "fashion"
    shutil.copytree(fashion_onnx_run, run)
    shutil.copyfile(run / "model.onnx", run / "model.int8-cpu.onnx")
    write_manifest(run / "model.int8-cpu.onnx", "onnx-int8-cpu", artifact_spec(run / "model.onnx"), parent=run / "model.onnx")
    report = {
        "schema": "edge-bench-report",
        "schema_version": 2,
        "settings": {},
        "environment": {},
        "eval": None,
        "rows": [bench_row("onnx-fp32", "cpu", {1: 100.0, 8: 600.0, 32: 640.0, 64: 700.0})],
    }
    (run / "bench").mkdir()
    (run / "bench" / "report.json").write_text(json.dumps(report))
    return run


def add_engine(run: Path, folder: str, precision: str, cc: str, trt: str, batch: tuple[int, int, int] = (1, 8, 32)) -> Path:
    """A placeholder plan file with the manifest `edge engine` records (no engine can be built here)."""
    engine = run / "engines" / folder / f"model.{precision}.engine"
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.write_bytes(f"placeholder plan {folder} {precision}".encode())
    provenance = {
        "precision": precision,
        "tensorrt_version": trt,
        "gpu_name": folder.split("-sm")[0],
        "compute_capability": cc,
        "onnx": "model.onnx",
        "profile": {"input": "input", "min": batch[0], "opt": batch[1], "max": batch[2]},
        "verified_on_hardware": False,
    }
    write_manifest(engine, "engine", artifact_spec(run / "model.onnx"), parent=run / "model.onnx", provenance=provenance)
    return engine
