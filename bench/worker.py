"""One bench row in its own process: ``python -m bench.worker JOB.json RESULT.json``.

The parent (``bench.matrix``) starts one worker per artifact x device, so a crash, a stuck CUDA
context or a missing backend loses one row, and the peak memory read here (RSS via getrusage,
``torch.cuda.max_memory_allocated`` on CUDA) is this row's own. The worker writes its result
atomically and prints ``progress DONE TOTAL WHAT`` lines for the parent's progress bar.

With ``--stepped`` an artifact worker loads its model, prints ``ready`` and then times one round
per ``time BATCH`` line on stdin (answering ``done``) until ``finish``: the parent keeps every
worker of a device alive and steps them in turn, so their rounds interleave (``bench.matrix``).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import Skip, peak_memory, unavailable_reason
from bench.power import PowerMeter
from bench.zoo import run_zoo_job
from edge.atomic import atomic_write_json
from edge.errors import MissingDependencyError, UserError
from edge.measure.timing import MachineProbe, RoundTimer, TimingWindow, time_calls
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


class ArtifactSession:
    """One artifact on one device, loaded once and timed round by round.

    ``step(batch)`` times one round of one batch size (the machine probe, then compute-only, then
    end-to-end); the parent steps every artifact on a device in turn, so their rounds interleave.
    ``finish()`` adds single stream and accuracy and returns the row.
    """

    def __init__(self, job: dict[str, Any]):
        from edge.runners import select_runner

        self.job, self.path, self.device = job, Path(job["path"]), job["device"]
        reason = unavailable_reason(self.path, self.device, job.get("backend") or "auto")
        if reason:
            raise Skip(reason)
        self.window = TimingWindow(**job["window"])
        self.runner = select_runner(
            self.path, device=self.device, threads=job.get("threads"), backend=job.get("backend") or "auto"
        )
        self.spec = self.runner.spec
        self.images: list[np.ndarray] | None = None
        self.labels: np.ndarray | None = None
        if job.get("eval"):
            self.images, self.labels, _, _ = load_eval_images(job["eval"])
        self.frames = self.images if self.images else synthetic_frames(self.spec, max(job["batch_sizes"]))
        self.skips = {skip["batch"]: skip["reason"] for skip in job.get("cell_skips") or []}
        self.errors: dict[int, str] = {}
        self.cells: dict[int, _CellTiming] = {}
        self.probe = MachineProbe()

    def __enter__(self) -> ArtifactSession:
        self.runner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.__exit__(*exc)

    def step(self, batch: int) -> None:
        """One round of ``batch``; a batch this backend refuses becomes an error cell, once."""
        if batch in self.skips or batch in self.errors:
            return
        cell = self.cells.get(batch)
        if cell is None:
            cell = self.cells[batch] = _CellTiming(
                self.runner, self.spec, self.frames, batch, self.window, self.job.get("end_to_end", True), self.probe
            )
        try:
            cell.time_round()
        except UserError as exc:
            self.errors[batch] = str(exc)

    def run_all(self) -> None:
        """Every round of every batch size, in order (a worker on its own, not stepped by a parent)."""
        sizes = self.job["batch_sizes"]
        for r in range(self.window.rounds):
            for i, batch in enumerate(sizes):
                _progress(r * len(sizes) + i, self.window.rounds * len(sizes), f"round {r + 1} batch {batch}")
                self.step(batch)

    def finish(self) -> dict[str, Any]:
        job, runner = self.job, self.runner
        result: dict[str, Any] = {"artifact": job["name"], "device": self.device, "path": str(self.path), "cells": []}
        result["runner"] = runner.describe()
        result["threads"] = runner.threads
        for batch in job["batch_sizes"]:
            if batch in self.skips:
                result["cells"].append({"batch": batch, "status": "skipped", "reason": self.skips[batch]})
            elif batch in self.errors:
                result["cells"].append({"batch": batch, "status": "error", "error": self.errors[batch]})
            elif batch in self.cells:
                result["cells"].append(self.cells[batch].to_dict())
        if job.get("single_stream"):
            _progress(0, 1, "single stream")
            result["single_stream"] = single_stream(
                runner, self.spec, self.frames, job["single_stream"]["samples"], self.window.warmup_s
            )
        if self.images is not None and self.labels is not None:
            result["accuracy"] = evaluate(runner, self.spec, self.images, self.labels, job.get("eval_batch", 32))
        result.update(peak_memory(self.device))
        return result


class _CellTiming:
    """The rounds of one batch size: compute-only (with device time where reported) and end-to-end."""

    def __init__(
        self,
        runner: Any,
        spec: PreprocessSpec,
        frames: list[np.ndarray],
        batch: int,
        window: TimingWindow,
        end_to_end: bool,
        probe: MachineProbe,
    ):
        self.runner, self.spec, self.batch, self.probe = runner, spec, batch, probe
        self.picked = [frames[i % len(frames)] for i in range(batch)]
        self.inputs = spec.apply_batch(self.picked)
        self.compute = RoundTimer(window, batch)
        self.e2e = RoundTimer(window, batch) if end_to_end else None
        self.watts: list[float] = []
        self.power_source: str | None = None

    def time_round(self) -> None:
        runner, inputs, picked = self.runner, self.inputs, self.picked

        def compute(_: int) -> float | None:
            runner.infer(inputs)
            return runner.last_device_ms

        probe = self.probe()
        with PowerMeter(runner.device) as meter:
            self.compute.time_round(compute, probe_ms=probe)
        self.watts += meter.readings_w
        self.power_source = meter.source
        if self.e2e is not None:
            self.e2e.time_round(lambda _: runner.infer(self.spec.apply_batch(picked)), probe_ms=probe)

    def to_dict(self) -> dict[str, Any]:
        stats = self.compute.stats()
        device_ms = self.compute.extras
        joules = None
        if self.watts and stats["samples"]:
            joules = sum(self.watts) / len(self.watts) * stats["wall_s"] / (stats["samples"] * self.batch)
        cell: dict[str, Any] = {
            "batch": self.batch,
            "status": "ok",
            "compute": stats,
            "device_ms": None,
            "end_to_end": self.e2e.stats() if self.e2e is not None else None,
            "power_source": self.power_source,
            "energy_j_per_image": joules,
        }
        if device_ms:
            cell["device_ms"] = {
                "p50_ms": float(np.percentile(device_ms, 50)),
                "p90_ms": float(np.percentile(device_ms, 90)),
                "mean_ms": float(np.mean(device_ms)),
                "samples": len(device_ms),
            }
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
    """Measure one artifact on one device on its own: every round of every batch size, then the rest."""
    with ArtifactSession(job) as session:
        session.run_all()
        _progress(1, 1, "timing")
        return session.finish()


def serve_steps(job: dict[str, Any], commands: Any) -> dict[str, Any] | None:
    """The stepped worker: load, say ``ready``, then obey the parent line by line.

    ``time BATCH`` times one round of that batch and answers ``done``; ``finish`` ends the rounds
    and returns the row. End of input (the parent is gone) returns None: no result is written.
    """
    with ArtifactSession(job) as session:
        print("ready", flush=True)
        for line in commands:
            words = line.split()
            if words[:1] == ["time"] and len(words) == 2:
                session.step(int(words[1]))
                print("done", flush=True)
            elif words[:1] == ["finish"]:
                return session.finish()
            else:
                raise UserError(f"the bench worker got an unknown command {line.strip()!r}")
    return None


def run_job(job: dict[str, Any], stepped: bool = False) -> dict[str, Any] | None:
    """Run a job as one row (``guarded_row``).

    ``stepped``: an artifact job driven by the parent through stdin (``serve_steps``); None when
    the parent went away before ``finish``."""
    if job["kind"] == "zoo":
        return guarded_row(job, lambda: run_zoo_job(job))
    if stepped:
        return guarded_row(job, lambda: serve_steps(job, sys.stdin))
    return guarded_row(job, lambda: run_artifact_job(job))


def guarded_row(job: dict[str, Any], measure: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
    """``measure()`` as one row, never raising: absence (a device, a backend, an optional package)
    becomes ``skipped`` with the reason, a user error or a crash ``error`` with its message (and the
    traceback's tail); the row names its artifact and device and the seconds it took. None when
    ``measure`` returned None (no row to write)."""
    started = time.time()
    try:
        measured = measure()
        if measured is None:
            return None
        result = measured
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


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """The parent stops a worker with SIGTERM (timeout, Ctrl-C): unwind, so the runner's context
    exit releases its device before the SIGKILL that follows the grace period."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stepped = args[:1] == ["--stepped"]
    args = args[1:] if stepped else args
    if len(args) != 2:
        print("usage: python -m bench.worker [--stepped] JOB.json RESULT.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    job = json.loads(Path(args[0]).read_text())
    result = run_job(job, stepped=stepped)
    if result is not None:
        atomic_write_json(args[1], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
