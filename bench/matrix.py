"""The bench matrix: every artifact of a run x every device, one worker process per row.

``run_matrix(plan)`` starts ``python -m bench.worker`` for each artifact x device with a timeout,
shows a progress bar, and assembles the report dict (schema in ``bench.report``): timing cells per
batch size, single stream, peak memory, file size, and accuracy with the paired comparison against
the float parent. A row that crashes, hangs or cannot run here is kept with its error or reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.paired import flips_from_counts, paired_flips
from bench.timing import TimingWindow
from edge.artifacts import manifest_path, read_manifest
from edge.errors import UserError
from edge.run import RunDir

# Which artifact an artifact's accuracy is compared against: INT8 and engines against the ONNX
# float model they were made from, the ONNX float model against the checkpoint it was exported from.
FLOAT_PARENT = {"onnx-fp32": "torch-fp32", "int8-cpu": "onnx-fp32", "int8-trt": "onnx-fp32"}
SIMULATED = {"int8-trt"}  # TensorRT's INT8 arithmetic, evaluated with ONNX Runtime's CPU kernels


def float_parent(name: str) -> str | None:
    """The float reference of an artifact (engines ``trt-*`` compare against ``onnx-fp32``)."""
    if name.startswith("trt-"):
        return "onnx-fp32"
    return FLOAT_PARENT.get(name)


def is_int8(name: str) -> bool:
    return name.startswith("int8-") or (name.startswith("trt-int8"))


@dataclass
class EvalPlan:
    data: str
    count: int | None
    seed: int = 0


@dataclass
class BenchPlan:
    """Everything one bench run measures; validated by ``bench.cli`` before any work starts."""

    run: Path
    artifacts: dict[str, Path]
    devices: list[str]
    batch_sizes: list[int]
    window: TimingWindow
    threads: int | None = None
    eval: EvalPlan | None = None
    single_stream_samples: int = 0
    end_to_end: bool = True
    timeout_s: float = 900.0
    profile: str = "custom"
    max_drop: float = 0.5


def artifact_job(plan: BenchPlan, name: str, path: Path, device: str) -> dict[str, Any]:
    """The JSON job for one worker."""
    return {
        "kind": "artifact",
        "name": name,
        "path": str(path),
        "device": device,
        "threads": plan.threads,
        "batch_sizes": plan.batch_sizes,
        "window": asdict(plan.window),
        "end_to_end": plan.end_to_end,
        "single_stream": {"samples": plan.single_stream_samples} if plan.single_stream_samples else None,
        "eval": asdict(plan.eval) if plan.eval else None,
        "eval_batch": 32,
    }


# ---- running workers ---------------------------------------------------------------------------


def run_worker(job: dict[str, Any], timeout_s: float, on_progress: Any = None) -> dict[str, Any]:
    """Run one job in a child process; a crash or a timeout becomes an error row."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", str(job_path), str(out_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # so a timeout kills the worker's children too
        )
        stderr_tail: list[str] = []
        readers = [
            threading.Thread(target=_read_progress, args=(proc.stdout, on_progress), daemon=True),
            threading.Thread(target=_keep_tail, args=(proc.stderr, stderr_tail), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return {"status": "error", "error": f"timed out after {timeout_s:.0f} s (raise --timeout)"}
        finally:
            for reader in readers:
                reader.join(timeout=5)
        if out_path.exists():
            return json.loads(out_path.read_text())
        tail = "".join(stderr_tail)[-600:].strip().splitlines()
        return {"status": "error", "error": f"worker exited with code {proc.returncode}: {tail[-1] if tail else 'no output'}"}


def _read_progress(stream: Any, on_progress: Any) -> None:
    for line in stream:
        parts = line.split(maxsplit=3)
        if on_progress is not None and len(parts) >= 3 and parts[0] == "progress":
            on_progress(int(parts[1]), int(parts[2]), parts[3].strip() if len(parts) > 3 else "")


def _keep_tail(stream: Any, tail: list[str]) -> None:
    for line in stream:
        tail.append(line)
        del tail[:-50]


# ---- assembling the report ---------------------------------------------------------------------


def _manifest_info(path: Path) -> dict[str, Any]:
    if not manifest_path(path).exists():
        return {"kind": None, "sha256": None, "manifest_metrics": {}}
    manifest = read_manifest(path)
    return {"kind": manifest.kind, "sha256": manifest.sha256, "manifest_metrics": manifest.metrics}


def _reference_row(rows: list[dict[str, Any]], name: str, device: str) -> dict[str, Any] | None:
    """The parent's row with accuracy, preferring the same device."""
    candidates = [r for r in rows if r["artifact"] == name and r.get("accuracy")]
    same = [r for r in candidates if r["device"] == device]
    return (same or candidates or [None])[0]


def attach_parent_comparison(rows: list[dict[str, Any]], labels: list[int], max_drop: float) -> None:
    """Drop in points, agreement and paired flips of each row against its float parent."""
    for row in rows:
        accuracy = row.get("accuracy")
        parent = float_parent(row["artifact"])
        if not accuracy or parent is None:
            continue
        ref = _reference_row(rows, parent, row["device"])
        if ref is None:
            accuracy["vs_parent"] = {"parent": parent, "error": f"no {parent} row with accuracy in this report"}
            continue
        flips = paired_flips(labels, ref["accuracy"]["predictions"], accuracy["predictions"])
        accuracy["vs_parent"] = {
            "parent": parent,
            "parent_device": ref["device"],
            "parent_top1": ref["accuracy"]["top1"],
            "drop_points": flips.drop_points,
            "agreement": flips.agree / flips.n * 100.0,
            "flips": flips.to_dict(),
            "too_small_for_budget": flips.too_small_for(max_drop),
        }


def recompute_flips(vs_parent: dict[str, Any]) -> Any:
    """The PairedFlips of a stored comparison (the gate reads reports through this)."""
    f = vs_parent["flips"]
    return flips_from_counts(f["n"], f["lost"], f["gained"], f["agree"], f["confidence"])


def run_matrix(plan: BenchPlan, eval_labels: list[int] | None, console: Any = None) -> list[dict[str, Any]]:
    """Run every artifact x device; rows in artifact order, then device."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = [(name, path, device) for name, path in plan.artifacts.items() for device in plan.devices]
    rows: list[dict[str, Any]] = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False
    ) as progress:
        overall = progress.add_task("bench matrix", total=len(jobs))
        for name, path, device in jobs:
            row_task = progress.add_task(f"  {name} on {device}", total=None)

            def on_progress(done: int, total: int, what: str, task: Any = row_task, label: str = f"  {name} on {device}") -> None:
                progress.update(task, completed=done, total=max(total, 1), description=f"{label}: {what}")

            started = time.time()
            result = run_worker(artifact_job(plan, name, path, device), plan.timeout_s, on_progress)
            result.update(artifact=name, device=device, path=str(path))
            result.setdefault("seconds", time.time() - started)
            result["file_size_bytes"] = path.stat().st_size
            result["simulated"] = name in SIMULATED
            result["float_parent"] = float_parent(name)
            result.update(_manifest_info(path))
            rows.append(result)
            progress.remove_task(row_task)
            progress.advance(overall)
    if eval_labels is not None:
        attach_parent_comparison(rows, eval_labels, plan.max_drop)
    return rows


def select_artifacts(run: RunDir, wanted: str) -> dict[str, Path]:
    """``all`` or a comma list of bench names -> {name: path}; unknown names are a user error."""
    available = run.artifacts()
    if not available:
        raise UserError(f"{run.root} has no artifacts: run `edge train` / `edge pretrained`, then `edge export`")
    if wanted.strip() == "all":
        return available
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise UserError(f"unknown artifact(s) {unknown or wanted!r} in {run.root}: available are {', '.join(available)}")
    return {n: available[n] for n in names}
