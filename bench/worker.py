"""One bench row in its own process: ``python -m bench.worker JOB.json RESULT.json``.

The parent (``bench.matrix``) starts one worker per artifact x device, so a crash, a stuck CUDA
context or a missing backend loses one row, and the peak memory read here (RSS via getrusage,
``torch.cuda.max_memory_allocated`` on CUDA) is this row's own. The worker writes its result
atomically and prints ``progress DONE TOTAL WHAT`` lines for the parent's progress bar.

A job is ``{"kind": "artifact" | "zoo", ...}`` (see ``bench.matrix.artifact_job`` and
``bench.zoo.zoo_job``). A row whose device or backend is absent comes back ``skipped`` with the
reason; any other failure comes back ``error`` with its message. The parent stops a worker
(timeout, Ctrl-C) with SIGTERM to its process group: the worker unwinds (runners release their
device) and writes no result; SIGKILL follows after a grace period.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import Skip, peak_memory, unavailable_reason
from bench.power import PowerMeter
from bench.timing import TimingWindow, time_calls
from bench.zoo import run_zoo_job
from edge.artifacts import atomic_write_json
from edge.errors import MissingDependencyError, UserError
from edge.spec import PreprocessSpec


def _progress(done: int, total: int, what: str) -> None:
    print(f"progress {done} {total} {what}", flush=True)


# ---- evaluation data ---------------------------------------------------------------------------


def eval_split(run: str, data: str, count: int | None, seed: int, exclude_seen: bool = False) -> tuple[Any, Any]:
    """(RunData, ImageSplit): ``count`` test items of the run's pinned split (``seed`` subsamples
    inside it), or of external data evaluated whole; the same items in the CLI and in every worker."""
    from train.splits import run_data

    data_of_run = run_data(run, data, evaluate=True, exclude_seen=exclude_seen)
    return data_of_run, data_of_run.split("test", count, seed)


def load_eval_images(eval_plan: dict[str, Any]) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...], str]:
    """Decoded test images (uint8, as a camera delivers them), labels, class names, fingerprint."""
    _, split = eval_split(eval_plan["run"], eval_plan["data"], eval_plan["count"], eval_plan["seed"], eval_plan["exclude_seen"])
    images = [split.image(i) for i in range(len(split))]
    return images, np.asarray(split.labels, dtype=np.int64), tuple(split.classes), split.fingerprint()


def synthetic_frames(spec: PreprocessSpec, count: int, seed: int = 0) -> list[np.ndarray]:
    """Random decoded frames for end-to-end timing when no evaluation data is given."""
    rng = np.random.default_rng(seed)
    side = max(spec.resize_size, spec.input_size)
    shape = (side, side) if spec.color == "gray" else (side, side, 3)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(count)]


def evaluate(runner: Any, spec: PreprocessSpec, images: list[np.ndarray], labels: np.ndarray, batch: int) -> dict[str, Any]:
    """Top-1 / top-5 and the per-image top-1 predictions (kept for the gate's paired statistics)."""
    preds: list[np.ndarray] = []
    top5_hits = 0
    total = len(images)
    for start in range(0, total, batch):
        chunk = spec.apply_batch(images[start : start + batch])
        logits = runner.infer(chunk)
        k = min(5, logits.shape[1])
        top = np.argsort(-logits, axis=1)[:, :k]
        preds.append(top[:, 0])
        top5_hits += int(np.sum(top == labels[start : start + len(chunk), None]))
        _progress(min(start + batch, total), total, "accuracy")
    predictions = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    return {
        "count": total,
        "top1": float(np.mean(predictions == labels) * 100.0) if total else None,
        "top5": float(top5_hits / total * 100.0) if total else None,
        "predictions": predictions.astype(int).tolist(),
    }


# ---- timing ------------------------------------------------------------------------------------


def time_cell(
    runner: Any, spec: PreprocessSpec, frames: list[np.ndarray], batch: int, window: TimingWindow, end_to_end: bool
) -> dict[str, Any]:
    """Compute-only (infer on a preprocessed batch), device time where reported, and end-to-end."""
    picked = [frames[i % len(frames)] for i in range(batch)]
    inputs = spec.apply_batch(picked)

    def compute(_: int) -> float | None:
        runner.infer(inputs)
        return runner.last_device_ms

    with PowerMeter(runner.device) as meter:
        stats, device_ms = time_calls(compute, window, batch)
    cell: dict[str, Any] = {
        "batch": batch,
        "status": "ok",
        "compute": stats.to_dict(),
        "device_ms": None,
        "end_to_end": None,
        "power_source": meter.source,
        "energy_j_per_image": meter.joules_per_item(stats.wall_s, stats.samples * batch),
    }
    if device_ms:
        cell["device_ms"] = {
            "p50_ms": float(np.percentile(device_ms, 50)),
            "p90_ms": float(np.percentile(device_ms, 90)),
            "mean_ms": float(np.mean(device_ms)),
            "samples": len(device_ms),
        }
    if end_to_end:

        def from_decoded(_: int) -> None:
            runner.infer(spec.apply_batch(picked))

        e2e, _ = time_calls(from_decoded, window, batch)
        cell["end_to_end"] = e2e.to_dict()
    return cell


def single_stream(runner: Any, spec: PreprocessSpec, frames: list[np.ndarray], samples: int, warmup_s: float) -> dict[str, Any]:
    """MLPerf-style single stream: one decoded frame at a time, the next query after the answer."""
    window = TimingWindow(warmup_s=warmup_s, min_iters=samples, min_seconds=0.0, max_seconds=120.0)

    def one_query(i: int) -> None:
        runner.infer(spec.apply_batch([frames[i % len(frames)]]))

    stats, _ = time_calls(one_query, window, 1)
    return stats.to_dict()


# ---- jobs --------------------------------------------------------------------------------------


def run_artifact_job(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one artifact on one device: every batch size, single stream, accuracy."""
    from edge.runners import select_runner

    path, device = Path(job["path"]), job["device"]
    result: dict[str, Any] = {"artifact": job["name"], "device": device, "path": str(path), "cells": []}
    reason = unavailable_reason(path, device)
    if reason:
        raise Skip(reason)
    window = TimingWindow(**job["window"])
    runner = select_runner(path, device=device, threads=job.get("threads"))
    spec = runner.spec
    images, labels = None, None
    if job.get("eval"):
        images, labels, _, _ = load_eval_images(job["eval"])
    frames = images if images else synthetic_frames(spec, max(job["batch_sizes"]))
    with runner:
        result["runner"] = runner.describe()
        result["threads"] = runner.threads
        total = len(job["batch_sizes"])
        # outside an engine's optimisation profile: skipped with the reason (bench.matrix.cell_skips)
        skips = {skip["batch"]: skip["reason"] for skip in job.get("cell_skips") or []}
        for i, batch in enumerate(job["batch_sizes"]):
            _progress(i, total, f"batch {batch}")
            if batch in skips:
                result["cells"].append({"batch": batch, "status": "skipped", "reason": skips[batch]})
                continue
            try:
                result["cells"].append(time_cell(runner, spec, frames, batch, window, job.get("end_to_end", True)))
            except UserError as exc:  # a batch this backend refuses: this cell only
                result["cells"].append({"batch": batch, "status": "error", "error": str(exc)})
        _progress(total, total, "timing")
        if job.get("single_stream"):
            _progress(0, 1, "single stream")
            result["single_stream"] = single_stream(runner, spec, frames, job["single_stream"]["samples"], window.warmup_s)
        if images is not None and labels is not None:
            result["accuracy"] = evaluate(runner, spec, images, labels, job.get("eval_batch", 32))
    result.update(peak_memory(device))
    return result


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run a job, turning absence into ``skipped`` and failures into ``error`` (never raising)."""
    started = time.time()
    try:
        result = run_zoo_job(job) if job["kind"] == "zoo" else run_artifact_job(job)
        result["status"] = "ok"
    except (Skip, MissingDependencyError) as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except UserError as exc:
        result = {"status": "error", "error": str(exc)}
    except Exception as exc:  # a bug or a backend crash in this row: record it, the matrix goes on
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    result.setdefault("artifact", job.get("name"))
    result.setdefault("device", job.get("device"))
    result["seconds"] = time.time() - started
    return result


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """The parent stops a worker with SIGTERM (timeout, Ctrl-C): unwind, so the runner's context
    exit releases its device before the SIGKILL that follows the grace period."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    job = json.loads(Path(args[0]).read_text())
    atomic_write_json(args[1], run_job(job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
