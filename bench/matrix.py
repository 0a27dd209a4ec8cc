"""The bench matrix: every artifact of a run x every device, one worker process per row.

``run_matrix(plan)`` starts ``python -m bench.worker`` for each artifact x device with a timeout,
shows a progress bar, and assembles the report dict (schema in ``bench.report``): timing cells per
batch size, single stream, peak memory, file size, and accuracy with the paired comparison against
the float parent. A row that crashes, hangs or cannot run here is kept with its error or reason.
A timeout or a Ctrl-C stops the worker's whole process group (SIGTERM, then SIGKILL after a grace
period), so no orphan outlives the bench; a Ctrl-C also ends the matrix with the row ``interrupted``.

Two decisions are made here from the artifact's manifest, before or after its worker runs:
an engine is timed only at the batch sizes its optimisation profile covers (``cell_skips``: the
others are *skipped* cells, "engine built for batch 1..32", not errors), and a measured row of an
artifact whose maker did not accept it (``accepted: false``) becomes *rejected* with the reason
(``rejection_reason``), its numbers kept so the report shows why; ``edge check`` fails it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.paired import paired_flips
from bench.timing import TimingWindow
from edge.artifacts import Manifest, is_rejected, manifest_path, read_manifest
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
    run: str = ""  # whose pinned test split (RUN/splits.json) the images come from
    exclude_seen: bool = False  # external data: drop the run's train/val images instead of refusing


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


EVAL_BATCH = 32  # images per inference call while measuring accuracy


def artifact_job(plan: BenchPlan, name: str, path: Path, device: str) -> dict[str, Any]:
    """The JSON job for one worker: what to measure, and which cells to skip (with the reason)."""
    limits = batch_limits(_manifest(path))
    skips = cell_skips(plan.batch_sizes, limits)
    single_stream = plan.single_stream_samples and 1 not in skips
    return {
        "kind": "artifact",
        "name": name,
        "path": str(path),
        "device": device,
        "threads": plan.threads,
        "batch_sizes": plan.batch_sizes,
        "cell_skips": [{"batch": b, "reason": reason} for b, reason in sorted(skips.items())],
        "window": asdict(plan.window),
        "end_to_end": plan.end_to_end,
        "single_stream": {"samples": plan.single_stream_samples} if single_stream else None,
        "eval": asdict(plan.eval) if plan.eval else None,
        "eval_batch": min(EVAL_BATCH, limits[1]) if limits else EVAL_BATCH,
    }


# ---- what an artifact was built for --------------------------------------------------------------


def batch_limits(manifest: Manifest | None) -> tuple[int, int] | None:
    """(min, max) batch of an engine's optimisation profile (manifest provenance ``profile``);
    None for artifacts that take any batch (ONNX, checkpoints) or have no manifest."""
    if manifest is None or manifest.kind != "engine" or "profile" not in manifest.provenance:
        return None
    profile = manifest.provenance["profile"]
    low, high = (_whole(profile.get("min")), _whole(profile.get("max"))) if isinstance(profile, dict) else (None, None)
    if low is None or high is None or not 1 <= low <= high:
        raise UserError(
            f"{manifest.file}'s manifest has a malformed optimisation profile {profile!r}: rebuild it with `edge engine`"
        )
    return low, high


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def cell_skips(batch_sizes: list[int], limits: tuple[int, int] | None) -> dict[int, str]:
    """Batch sizes outside an engine's profile, each with the reason: skipped cells, not errors."""
    if limits is None:
        return {}
    low, high = limits
    return {b: f"engine built for batch {low}..{high}" for b in batch_sizes if not low <= b <= high}


def rejection_reason(manifest: Manifest | None) -> str | None:
    """Why the artifact's maker did not accept it (manifest metrics ``accepted: false``), else None."""
    if manifest is None or not is_rejected(manifest):
        return None
    metrics = manifest.metrics
    if isinstance(metrics.get("reason"), str) and metrics["reason"]:
        return f"edge quantize did not accept it: {metrics['reason']}"
    reason = "edge quantize did not accept it (manifest accepted: false)"
    figures = [
        f"{label} {metrics[key]:.2f}{unit}"
        for key, label, unit in (("drop_points", "top-1 drop", " pts"), ("agreement", "agreement", "%"))
        if isinstance(metrics.get(key), (int, float))
    ]
    if figures:
        where = f" on {metrics['eval_count']} test images" if isinstance(metrics.get("eval_count"), int) else ""
        reason += f": {', '.join(figures)}{where}"
    budget = [
        f"--{k.replace('_', '-')} {manifest.provenance[k]}" for k in ("max_drop", "min_agreement") if k in manifest.provenance
    ]
    if budget:
        reason += f" (budget {', '.join(budget)})"
    return reason


# ---- running workers ---------------------------------------------------------------------------


GRACE_S = 3.0  # after SIGTERM, before SIGKILL: time for a backend to release its device
INTERRUPTED_REASON = "Ctrl-C stopped its worker mid-measurement (no numbers kept)"


class WorkerInterrupted(KeyboardInterrupt):
    """Ctrl-C while a worker ran: its process group is gone; ``row`` is the row to report."""

    def __init__(self, row: dict[str, Any]):
        super().__init__(row.get("reason", "interrupted"))
        self.row = row


def run_worker(job: dict[str, Any], timeout_s: float, on_progress: Any = None) -> dict[str, Any]:
    """Run one job in a child process; a crash or a timeout becomes an error row.

    The worker runs in its own session (so a terminal's Ctrl-C reaches only this process, and its
    process group holds everything the worker started). On a timeout or a Ctrl-C the whole group is
    stopped (``stop_process_group``: SIGTERM, SIGKILL after ``GRACE_S``), so no orphan keeps
    running and skews the next measurement; a Ctrl-C then raises ``WorkerInterrupted``.
    """
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
        with _sigint_held() as pressed:  # a Ctrl-C while it starts must not lose the child's pid
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker", str(job_path), str(out_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole, never orphaned
            )
        stderr_tail: list[str] = []
        readers = [
            threading.Thread(target=_read_progress, args=(proc.stdout, on_progress), daemon=True),
            threading.Thread(target=_keep_tail, args=(proc.stderr, stderr_tail), daemon=True),
        ]
        interrupted, timed_out = pressed[0], False
        try:
            if not interrupted:
                try:
                    for reader in readers:
                        reader.start()
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                except KeyboardInterrupt:
                    interrupted = True
        finally:  # on every way out (a bug in this process too), the worker's group is gone
            with _sigint_held() as again:
                # a worker that exited may have left a child in its group: that one goes too
                if interrupted or timed_out or proc.poll() is None or _group_alive(proc.pid):
                    interrupted = stop_process_group(proc) or interrupted
                for reader in readers:
                    if reader.ident is not None:
                        reader.join(timeout=5)
            interrupted = interrupted or again[0]
        if interrupted:
            raise WorkerInterrupted({"status": "interrupted", "reason": INTERRUPTED_REASON})
        if timed_out:
            return {"status": "error", "error": f"timed out after {timeout_s:.0f} s (raise --timeout)"}
        if out_path.exists():
            return json.loads(out_path.read_text())
        tail = "".join(stderr_tail)[-600:].strip().splitlines()
        return {"status": "error", "error": f"worker exited with code {proc.returncode}: {tail[-1] if tail else 'no output'}"}


def stop_process_group(proc: subprocess.Popen, grace_s: float | None = None) -> bool:
    """Stop a worker started with ``start_new_session`` and everything in its process group:
    SIGTERM, then SIGKILL for whatever is left after ``grace_s`` (``GRACE_S``; at once on another
    Ctrl-C); the worker is reaped. Returns whether Ctrl-C was pressed meanwhile (the caller stops too)."""
    with _sigint_held() as pressed:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + (GRACE_S if grace_s is None else grace_s)
        while time.monotonic() < deadline and not pressed[0]:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return pressed[0]
            time.sleep(0.02)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    return pressed[0]


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigint_held() -> Iterator[list[bool]]:
    """Within the block, Ctrl-C only sets ``pressed[0]`` (main thread only: elsewhere Python
    delivers no signal anyway); the caller decides what it means."""
    pressed = [False]
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum: int, frame: Any) -> None:
        pressed[0] = True

    signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed[0] and previous is signal.SIG_DFL:  # a process that chose to die on SIGINT
            os.kill(os.getpid(), signal.SIGINT)
        if previous is signal.SIG_IGN:
            pressed[0] = False


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


def _manifest(path: Path) -> Manifest | None:
    return read_manifest(path) if manifest_path(path).exists() else None


def _manifest_info(path: Path) -> dict[str, Any]:
    manifest = _manifest(path)
    if manifest is None:
        return {"kind": None, "sha256": None, "manifest_metrics": {}}
    return {"kind": manifest.kind, "sha256": manifest.sha256, "manifest_metrics": manifest.metrics}


def mark_rejected(row: dict[str, Any], manifest: Manifest | None) -> None:
    """A measured row of an artifact its maker did not accept becomes ``rejected`` (numbers kept)."""
    reason = rejection_reason(manifest)
    if reason and row.get("status") == "ok":
        row.update(status="rejected", reason=reason)


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


def run_matrix(plan: BenchPlan, eval_labels: list[int] | None, console: Any = None) -> list[dict[str, Any]]:
    """Run every artifact x device; rows in artifact order, then device.

    Ctrl-C stops the matrix: the row being measured comes back ``interrupted`` (its worker
    stopped), the rows not yet run are left out, and the rows measured so far are kept.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = [(name, path, device) for name, path in plan.artifacts.items() for device in plan.devices]
    rows: list[dict[str, Any]] = []
    interrupted = False
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False
    ) as progress:
        overall = progress.add_task("bench matrix", total=len(jobs))
        for name, path, device in jobs:
            row_task = progress.add_task(f"  {name} on {device}", total=None)

            def on_progress(done: int, total: int, what: str, task: Any = row_task, label: str = f"  {name} on {device}") -> None:
                progress.update(task, completed=done, total=max(total, 1), description=f"{label}: {what}")

            started = time.time()
            try:
                result = run_worker(artifact_job(plan, name, path, device), plan.timeout_s, on_progress)
            except KeyboardInterrupt as exc:  # the worker is stopped: report this row, run no other
                result = getattr(exc, "row", None) or {"status": "interrupted", "reason": INTERRUPTED_REASON}
                interrupted = True
            result.update(artifact=name, device=device, path=str(path))
            result.setdefault("seconds", time.time() - started)
            result["file_size_bytes"] = path.stat().st_size
            result["simulated"] = name in SIMULATED
            result["float_parent"] = float_parent(name)
            result.update(_manifest_info(path))
            mark_rejected(result, _manifest(path))
            rows.append(result)
            progress.remove_task(row_task)
            if interrupted:
                progress.update(overall, description=f"bench matrix: interrupted at {name} on {device}")
                break
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
