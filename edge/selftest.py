"""Prove the TensorRT path on this device: `edge selftest --tensorrt`.

Builds FP32, FP16 and INT8 engines from the ImageNet-pretrained run (INT8 where the run has its
TensorRT-targeted QDQ model), runs them on scikit-image's real photos, compares their logits and
top-1 with ONNX Runtime, times them, and writes RUN/selftest/report.{json,md}.

TensorRT path: not yet verified on hardware; a passing report from a device is what verifies it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.photos import PHOTO_CLASSES, photos
from edge.run import REPORT, engine_precision, report_paths

DEFAULT_RUN = "runs/imagenet-lite0"
MAX_ABS_DIFF = {"fp32": 1e-2, "fp16": 0.25, "int8": None}  # INT8 is judged by top-1 only


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tensorrt", action="store_true", help="build, run and compare TensorRT engines (the only suite)")
    parser.add_argument("--run", default=DEFAULT_RUN, help=f"pretrained run directory (default {DEFAULT_RUN}; made when missing)")
    parser.add_argument("--out", default=None, help="report folder (default RUN/selftest)")
    parser.add_argument("--iters", type=int, default=50, help="timed iterations per engine (default 50)")


def run(args: argparse.Namespace) -> int:
    if not args.tensorrt:
        raise UserError("selftest has one suite: run `edge selftest --tensorrt`")
    if args.iters < 1:
        raise UserError(f"--iters must be at least 1, got {args.iters}")
    from edge.runners import require_tensorrt
    from edge.runners.tensorrt_engines import runtime_environment

    require_tensorrt("edge selftest --tensorrt")
    env = runtime_environment()
    report = selftest(Path(args.run), Path(args.out) if args.out else None, args.iters, env)
    _print(report)
    return 0 if report["passed"] else 1


def selftest(run_path: Path, out: Path | None, iters: int, env: dict[str, str]) -> dict[str, Any]:
    """Build, run, compare and time; returns the report (also written to ``out``)."""
    from edge.artifacts import atomic_write_json, atomic_write_text
    from edge.run import RunDir
    from edge.runners import select_runner
    from edge.runners.tensorrt_engines import UNVERIFIED
    from edge.tensorrt.build import build_engines, validate_request

    if not run_path.exists():
        from train.pretrained import write_pretrained_run  # edge -> train only here, lazily

        write_pretrained_run(run_path)
    run = RunDir.open(run_path)
    if not run.onnx.exists():
        from edge.export import export_onnx

        export_onnx(run.root)
    frames = photos()
    rows: list[dict[str, Any]] = []
    with select_runner(run.onnx, device="cpu", backend="onnxruntime") as reference:
        batch = reference.spec.apply_batch(list(frames.values()))
        expected = reference.infer(batch)
    for precision in ("fp32", "fp16", "int8"):
        if precision == "int8" and not run.int8_trt.exists():
            rows.append(
                {
                    "precision": precision,
                    "status": f"skipped: no {run.int8_trt.name}; run `edge quantize {run.root} --target trt` first",
                }
            )
            continue
        try:
            (built,) = build_engines(validate_request(run.root, precision))
            rows.append(_check_engine(Path(built["engine"]), batch, expected, list(frames), iters))
        except UserError as exc:
            rows.append({"precision": precision, "status": f"failed: {exc}"})
    passed = all(r["status"] in ("pass",) or r["status"].startswith("skipped") for r in rows) and any(
        r["status"] == "pass" for r in rows
    )
    report = {
        "passed": passed,
        "environment": env,
        "run": str(run.root),
        "rows": rows,
        "note": UNVERIFIED,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = out or run.selftest
    paths = report_paths(out, formats=("json", "md"))
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], _markdown(report))
    report["written_to"] = str(out)
    return report


def _check_engine(engine: Path, batch: np.ndarray, expected: np.ndarray, names: list[str], iters: int) -> dict[str, Any]:
    from edge.runners import select_runner

    precision = engine_precision(engine)
    with select_runner(engine, device="cuda", backend="tensorrt") as runner:
        logits = runner.infer(batch)
        host_ms, device_ms = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            runner.infer(batch)
            host_ms.append((time.perf_counter() - t0) * 1e3)
            device_ms.append(runner.last_device_ms or 0.0)
    top1 = logits.argmax(1)
    agreement = 100.0 * float(np.mean(top1 == expected.argmax(1)))  # percent, like every accuracy figure
    named = all(int(t) in PHOTO_CLASSES[n] for n, t in zip(names, top1))
    diff = float(np.abs(logits - expected).max())
    limit = MAX_ABS_DIFF[precision]
    ok = named and agreement == 100.0 and (limit is None or diff <= limit)
    return {
        "precision": precision,
        "engine": str(engine),
        "status": "pass" if ok else "fail",
        "max_abs_diff_vs_ort": diff,
        "top1_agreement_vs_ort": agreement,
        "photos_named": named,
        "top1": {n: int(t) for n, t in zip(names, top1)},
        "host_p50_ms": statistics.median(host_ms),
        "device_p50_ms": statistics.median(device_ms),
        "batch": int(batch.shape[0]),
    }


def _markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# TensorRT self-test: {'PASS' if report['passed'] else 'FAIL'}",
        "",
        f"{env['gpu_name']} (sm{env['compute_capability'].replace('.', '')}), TensorRT {env['tensorrt_version']}, run {report['run']}",
        "",
        "| precision | status | max abs diff vs ORT | top-1 agreement | photos named | host p50 ms | device p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        if "engine" not in r:
            lines.append(f"| {r['precision']} | {r['status']} | | | | | |")
            continue
        lines.append(
            f"| {r['precision']} | {r['status']} | {r['max_abs_diff_vs_ort']:.3g} | {r['top1_agreement_vs_ort']:.0f}% | "
            f"{r['photos_named']} | {r['host_p50_ms']:.2f} | {r['device_p50_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"TensorRT self-test: {'PASS' if report['passed'] else 'FAIL'} ({report['note']})")
    for column in ("precision", "status", "max |diff|", "top-1 agree", "host p50 ms", "device p50 ms"):
        table.add_column(column)
    for r in report["rows"]:
        if "engine" not in r:
            table.add_row(r["precision"], r["status"], "", "", "", "")
            continue
        table.add_row(
            r["precision"],
            r["status"],
            f"{r['max_abs_diff_vs_ort']:.3g}",
            f"{r['top1_agreement_vs_ort']:.0f}%",
            f"{r['host_p50_ms']:.2f}",
            f"{r['device_p50_ms']:.2f}",
        )
    Console().print(table)
    Console().print(f"report: {report['written_to']}/{REPORT}.md")
