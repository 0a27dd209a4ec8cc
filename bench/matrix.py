"""The bench matrix: every artifact of a run x every device, one worker process per row.

``run_matrix(plan)`` measures one device at a time. For a device it starts a stepped worker
(``python -m bench.worker --stepped``) per artifact and keeps them all alive: in each of R rounds
every batch size is timed by every worker in turn (``bench.processes.LiveWorker.step``; the order
rotates each round and runs backwards every other round: ``edge.measure.timing.round_order``), so the
rounds of an INT8 model and of its float parent are back to back and a ratio of the two is not a
ratio of two moments. Then each worker measures single stream and accuracy alone. It shows a progress
bar and assembles the report dict (schema in ``edge.measure.report``): timing cells per
batch size with their rounds and intervals, the latency ratio to the float parent, single stream,
peak memory, file size, staleness, and accuracy with the paired comparison against the float
parent. A row that crashes, hangs or cannot run here is kept with its error or reason.
A timeout or a Ctrl-C stops the worker's whole process group (``bench.processes``), so no orphan
outlives the bench; a Ctrl-C also ends the matrix with the rows of the device being measured
``interrupted``.

Two decisions are made here from the artifact's manifest, before or after its worker runs:
an engine is timed only at the batch sizes its optimisation profile covers (``cell_skips``: the
others are *skipped* cells, "engine built for batch 1..32", not errors), and a measured row of an
artifact whose maker did not accept it (``accepted: false``) becomes *rejected* with the reason
(``rejection_reason``), its numbers kept so the report shows why; ``edge check`` fails it. A
measured row of a model file without its manifest becomes *unverified* the same way
(``edge.verify.unverified_reason``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.processes import INTERRUPTED_REASON, LiveWorker
from edge.errors import UserError
from edge.lineage import stale_reason
from edge.manifest import Manifest, manifest_path, read_manifest
from edge.measure.acceptance import DEFAULT_MAX_DROP
from edge.measure.intervals import paired_ratio
from edge.measure.paired import paired_flips
from edge.measure.report import MEASURED
from edge.measure.rows import OTHER_BACKEND, OWN_BACKEND, SIMULATED, float_parent, round_p50s, row_backend, run_artifacts
from edge.measure.timing import TimingWindow, round_order
from edge.run import RunDir
from edge.verify import is_rejected, unverified_reason


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
    max_drop: float = DEFAULT_MAX_DROP


EVAL_BATCH = 32  # images per inference call while measuring accuracy


def artifact_job(plan: BenchPlan, name: str, path: Path, device: str) -> dict[str, Any]:
    """The JSON job for one worker: what to measure, and which cells to skip (with the reason)."""
    limits = batch_limits(_manifest(path))
    skips = cell_skips(plan.batch_sizes, limits)
    single_stream = plan.single_stream_samples and 1 not in skips
    return {
        "kind": "artifact",
        "name": name,
        "backend": row_backend(name),
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


# ---- assembling the report ---------------------------------------------------------------------


def _manifest(path: Path) -> Manifest | None:
    return read_manifest(path) if manifest_path(path).exists() else None


def _manifest_info(path: Path) -> dict[str, Any]:
    manifest = _manifest(path)
    if manifest is None:
        return {"kind": None, "sha256": None, "manifest_metrics": {}}
    return {"kind": manifest.kind, "sha256": manifest.sha256, "manifest_metrics": manifest.metrics}


def mark_unverified(row: dict[str, Any], path: Path) -> None:
    """A measured row of a model file without its manifest becomes ``unverified`` (numbers kept)."""
    reason = unverified_reason(path)
    if reason and row.get("status") == "ok":
        row.update(status="unverified", reason=reason)


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
        attach_same_file_agreement(rows, row)


def attach_same_file_agreement(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """A row running another row's file on another backend (OpenVINO INT8 on ``model.int8-cpu.onnx``):
    top-1 agreement between the two backends' predictions, image by image (different kernels)."""
    if row["artifact"] not in OTHER_BACKEND:
        return
    own = OTHER_BACKEND[row["artifact"]][0]
    ref = _reference_row(rows, own, row["device"])
    if ref is None:
        return
    mine, theirs = row["accuracy"]["predictions"], ref["accuracy"]["predictions"]
    agree = sum(a == b for a, b in zip(mine, theirs))
    row["accuracy"]["vs_same_file"] = {"artifact": own, "agreement": agree / len(mine) * 100.0 if mine else None, "n": len(mine)}


def run_matrix(plan: BenchPlan, eval_labels: list[int] | None, console: Any = None) -> list[dict[str, Any]]:
    """Run every artifact x device; rows in artifact order, then device.

    The artifacts of one device are measured together (``run_device_group``): their workers stay
    alive and are stepped round by round in turn. Ctrl-C stops the matrix: the rows of the device
    being measured come back ``interrupted`` (their workers stopped), devices not yet measured are
    left out, and the rows of devices finished before are kept.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from edge.console import make_progress

    by_device: dict[str, list[dict[str, Any]]] = {}
    interrupted = False
    steps = len(plan.artifacts) * len(plan.devices) * (2 + plan.window.rounds * len(plan.batch_sizes))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with make_progress(*columns, console=console, unit="steps", transient=False) as progress:
        overall = progress.add_task("bench matrix", total=steps)

        def on_step(what: str) -> None:
            progress.update(overall, advance=1, description=f"bench matrix: {what}")

        for device in plan.devices:
            jobs = [(name, path, device) for name, path in plan.artifacts.items()]
            try:
                by_device[device] = run_device_group(plan, jobs, on_step)
            except GroupInterrupted as exc:
                by_device[device] = exc.rows
                interrupted = True
                progress.update(overall, description=f"bench matrix: interrupted on {device}")
                break
    rows = [r for name in plan.artifacts for d in plan.devices for r in by_device.get(d, []) if r["artifact"] == name]
    stale = {path: stale_reason(path) for path in set(plan.artifacts.values())}  # hashes the chain: once per file
    for row in rows:
        row["stale"] = stale[Path(row["path"])]
    attach_latency_ratios(rows)
    if eval_labels is not None and not interrupted:
        attach_parent_comparison(rows, eval_labels, plan.max_drop)
    elif eval_labels is not None:
        attach_parent_comparison([r for r in rows if r.get("status") != "interrupted"], eval_labels, plan.max_drop)
    return rows


class GroupInterrupted(KeyboardInterrupt):
    """Ctrl-C while a device's workers ran: they are stopped; ``rows`` are that device's rows."""

    def __init__(self, rows: list[dict[str, Any]]):
        super().__init__("interrupted")
        self.rows = rows


def run_device_group(plan: BenchPlan, jobs: list[tuple[str, Path, str]], on_step: Any = None) -> list[dict[str, Any]]:
    """Measure the artifacts of one device together: load every worker, then R rounds in which
    each batch size is timed by every worker in turn (the order rotates each round and runs backwards
    every other round), then finish.

    A worker that fails, hangs past ``plan.timeout_s`` of its own work, or cannot run here loses its
    row only. Ctrl-C stops them all and raises ``GroupInterrupted`` with the rows marked.
    """
    step = on_step or (lambda what: None)
    workers = [LiveWorker(artifact_job(plan, name, path, device), plan.timeout_s) for name, path, device in jobs]
    try:
        for worker in workers:
            step(f"loading {worker.label}")
            worker.start()
        for r in range(plan.window.rounds):
            order = round_order([w for w in workers if w.alive], r)
            for batch in plan.batch_sizes:
                for worker in order:
                    step(f"round {r + 1}/{plan.window.rounds} batch {batch} {worker.label}")
                    worker.step(batch)
        for worker in workers:
            step(f"accuracy and single stream {worker.label}")
            worker.finish()
    except KeyboardInterrupt:
        for worker in workers:
            worker.stop()
        raise GroupInterrupted(
            [_assembled(w.job, {"status": "interrupted", "reason": INTERRUPTED_REASON}) for w in workers]
        ) from None
    finally:
        for worker in workers:
            worker.stop()
    return [_assembled(w.job, w.result or {"status": "error", "error": "the worker gave no result"}) for w in workers]


def _assembled(job: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A worker's result with what the parent knows: file size, manifest, rejection."""
    path = Path(job["path"])
    result.update(artifact=job["name"], device=job["device"], path=str(path))
    result.setdefault("seconds", None)
    result["file_size_bytes"] = path.stat().st_size
    result["simulated"] = job["name"] in SIMULATED
    result["float_parent"] = float_parent(job["name"])
    result.update(_manifest_info(path))
    mark_rejected(result, _manifest(path))
    mark_unverified(result, path)
    return result


def attach_latency_ratios(rows: list[dict[str, Any]]) -> None:
    """Per cell, p50 over the float parent's p50 on the same device from the same rounds (stepped
    back to back): the median of per-round ratios with its interval (``edge.measure.intervals``)."""
    by_key = {(r["artifact"], r["device"]): r for r in rows if r.get("status") in MEASURED}
    for row in by_key.values():
        parent = by_key.get((float_parent(row["artifact"]) or "", row["device"]))
        if parent is None:
            continue
        parent_cells = {c["batch"]: c for c in parent.get("cells") or [] if c.get("status") == "ok"}
        for cell in row.get("cells") or []:
            ref = parent_cells.get(cell["batch"])
            if cell.get("status") != "ok" or ref is None:
                continue
            mine, theirs = round_p50s(cell), round_p50s(ref)
            if mine and len(mine) == len(theirs):
                ratio = paired_ratio(mine, theirs)
                cell["vs_parent_latency"] = {"parent": parent["artifact"], **ratio.to_dict()}


def select_artifacts(run: RunDir, wanted: str) -> dict[str, Path]:
    """``all`` or a comma list of bench names -> {name: path}; unknown names are a user error.

    ``openvino-fp32`` / ``openvino-int8`` run ``model.onnx`` / ``model.int8-cpu.onnx`` on OpenVINO,
    ``int8-openvino`` its own file there: part of ``all`` where OpenVINO is installed; named
    explicitly without it, they are skipped rows that say how to install it."""
    available = run_artifacts(run)
    if not available:
        raise UserError(f"{run.root} has no artifacts: run `edge train` / `edge pretrained`, then `edge export`")
    backend_rows = {name: available[own] for name, (own, _) in OTHER_BACKEND.items() if own in available}
    if wanted.strip() == "all":
        if importlib.util.find_spec("openvino") is None:
            return {name: path for name, path in available.items() if name not in OWN_BACKEND}
        return {**available, **backend_rows}
    available = {**available, **backend_rows}
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise UserError(f"unknown artifact(s) {unknown or wanted!r} in {run.root}: available are {', '.join(available)}")
    return {n: available[n] for n in names}
