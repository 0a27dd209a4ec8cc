"""What each stage's files say, as one MLflow run's params, metrics, tags and artifacts.

Read from the files the stage has just written (checkpoint and artifact manifests, training
metrics, the bench report), never from the stage's memory, so a record can be made again from a
run directory at any time. Metric names (docs/tracking.md lists them):

- train: per epoch (step = epoch) every number of ``metrics.json`` (``train_loss``, ``val_loss``,
  ``train_top1``, ``val_top1``, ``val_top5``, ``lr``, ``images_per_s``, ``epoch_s``, ...); once:
  ``best_epoch``, ``best_val_top1``, ``test_top1``, ``test_top5``, ``test_loss``, ``train_time_s``,
  ``train_images_per_s``;
- quantize: per try (step = its index) ``try.val_top1``, ``try.val_drop_points``,
  ``try.val_agreement``, ``try.speedup``; the verdict ``accepted`` (1/0) with ``top1``,
  ``parent_top1``, ``drop_points``, ``drop_lower_points``, ``drop_upper_points``, ``agreement``,
  ``flips``, ``max_flips`` and the budgets ``max_drop``, ``min_agreement``; ``nodes_in_float``;
- bench: per cell ``p50_ms.<artifact>.<device>.b<batch>`` with ``p50_low_ms`` / ``p50_high_ms`` (its
  interval), ``p90_ms``, ``p99_ms``, ``images_per_s``, ``e2e_p50_ms``; per row ``top1``, ``top5``,
  ``drop_points``, ``drop_lower_points``, ``drop_upper_points``, ``agreement``, ``peak_rss_mib``
  (``<name>.<artifact>.<device>``);
- check: ``passed`` (1/0), ``checks``, ``failed``, ``warnings``; each failed check as a tag.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.manifest import Manifest, read_manifest
from edge.measure.report import read_report
from edge.run import (
    TRAIN_CONFUSION,
    TRAIN_CURVES,
    TRAIN_METRICS_CSV,
    TRAIN_METRICS_JSON,
    TRAIN_SUMMARY,
    RunDir,
    report_paths,
)

MAX_PARAM = 6000  # MLflow's longest param value
MAX_TAG = 5000
STAGES = ("train", "quantize", "bench", "check")
TAG_STAGE = "edge.stage"
TAG_RUN_DIR = "edge.run_dir"
TAG_CHECKPOINT = "edge.checkpoint_sha256"
TAG_ROLE = "edge.role"  # "pipeline" on the parent run of a run directory
TAG_GATE = "edge.gate"  # passed | failed, on a check run
_KEY = re.compile(r"[^\w./ :-]")  # what MLflow allows in a key


@dataclass
class StageRecord:
    """One stage's MLflow run: what it logs, and the run-directory tags its parent carries too."""

    stage: str
    run_dir: Path
    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # (key, value, step)
    tags: dict[str, str] = field(default_factory=dict)
    pipeline_tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)  # artifact file name -> its text

    def metric(self, key: str, value: Any, step: int = 0) -> None:
        """Add a metric; a missing measurement (None, NaN, not a number) is left out, never 0."""
        number = _number(value)
        if number is not None:
            self.metrics.append((_KEY.sub("_", key), number, step))

    def add_params(self, values: dict[str, Any], prefix: str = "") -> None:
        for key, value in flatten(values, prefix).items():
            self.params[_KEY.sub("_", key)[:250]] = value[:MAX_PARAM]

    def add_artifacts(self, *paths: Path) -> None:
        self.artifacts += [p for p in paths if p.is_file()]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys; lists as JSON; None as ``None`` (params are strings)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value), default=str)
        else:
            out[name] = str(value)
    return out


def _short(text: Any, limit: int = MAX_TAG) -> str:
    return " ".join(str(text).split())[:limit]


def environment_tags(env: dict[str, Any] | None) -> dict[str, str]:
    """Where the figures were made: the machine fingerprint, host, CPU, GPU, package versions, harness."""
    env = env or {}
    tags = {
        f"edge.{key}": _short(env[key], 250)
        for key in ("machine_fingerprint", "hostname", "cpu_model", "gpu_name", "python", "l4t_release")
        if env.get(key)
    }
    for name, version in (env.get("packages") or {}).items():
        tags[f"edge.pkg.{name}"] = _short(version, 250)
    harness = env.get("harness") or {}
    if harness.get("source_sha256"):
        tags["edge.harness_sha256"] = str(harness["source_sha256"])
    return tags


def _manifest(path: Path) -> Manifest | None:
    try:
        return read_manifest(path)
    except UserError:
        return None


def pipeline_tags(run_dir: Path) -> dict[str, str]:
    """What identifies a run directory's pipeline, on its parent run and every stage run: the folder,
    its checkpoint's sha256 (a new training is a new pipeline), model, mode, input size, the data and
    its split fingerprints (runs on different data are never compared as equals)."""
    run = RunDir(run_dir)
    tags = {TAG_RUN_DIR: str(run_dir.resolve())}
    checkpoint, onnx = _manifest(run.checkpoint), _manifest(run.onnx)
    if checkpoint is not None:
        tags[TAG_CHECKPOINT] = checkpoint.sha256
    for manifest in (m for m in (onnx, checkpoint) if m is not None):  # the checkpoint's word wins
        prov, spec = manifest.provenance, manifest.spec or {}
        for key, tag in (("arch", "edge.model"), ("mode", "edge.mode"), ("data", "edge.data")):
            if prov.get(key) is not None:
                tags[tag] = _short(prov[key], 250)
        if spec.get("input_size") is not None:
            tags["edge.input_size"] = str(spec["input_size"])
        if prov.get("data_fingerprint"):
            tags["edge.data_fingerprint"] = str(prov["data_fingerprint"])
        for split, fingerprint in ((prov.get("splits") or {}).get("fingerprints") or {}).items():
            tags[f"edge.split.{split}"] = str(fingerprint)
    return tags


def _base(stage: str, run_dir: Path, name: str | None = None) -> StageRecord:
    record = StageRecord(stage=stage, run_dir=run_dir, name=name or stage)
    record.pipeline_tags = pipeline_tags(run_dir)
    record.tags = {TAG_STAGE: stage, **record.pipeline_tags}
    return record


# ---- train --------------------------------------------------------------------------------------


def _training_config(run: RunDir, manifest: Manifest | None) -> dict[str, Any]:
    """The resolved training config, as the checkpoint stores it (its manifest's provenance without torch)."""
    try:
        from edge.checkpoints import load_checkpoint

        payload = load_checkpoint(run.checkpoint)
        return {**dict(payload.get("config") or {}), "arch": payload.get("arch"), "num_classes": payload.get("num_classes")}
    except (ImportError, UserError, OSError):
        return dict(manifest.provenance) if manifest is not None else {}


def train_record(run_dir: Path, log_models: bool = False) -> StageRecord:
    """``edge train``: the resolved config, the per-epoch curves, the best epoch, time and images/s."""
    run = RunDir(run_dir)
    record = _base("train", run_dir)
    manifest = _manifest(run.checkpoint)
    if manifest is None:
        raise UserError(f"{run.checkpoint} has no manifest: nothing of this training to log")
    record.add_params(_training_config(run, manifest))
    record.add_params({"spec": manifest.spec or {}})
    record.tags.update(environment_tags(manifest.environment))
    epochs = _read_json(run_dir / TRAIN_METRICS_JSON).get("epochs") or []
    images = seconds = 0.0
    for entry in epochs:
        step = int(entry.get("epoch", 0))
        for key, value in entry.items():
            if key != "epoch":
                record.metric(key, value, step)
        if _number(entry.get("images_per_s")) is not None and _number(entry.get("epoch_s")) is not None:
            images += entry["images_per_s"] * entry["epoch_s"]
            seconds += entry["epoch_s"]
    summary = _read_json(run_dir / TRAIN_SUMMARY)
    for key in ("best_epoch", "test_top1", "test_top5", "test_loss", "test_images", "val_images"):
        record.metric(key, summary.get(key))
    record.metric("best_val_top1", summary.get("val_top1"))
    if seconds > 0:
        record.metric("train_time_s", seconds)
        record.metric("train_images_per_s", images / seconds)
    record.metric("stopped_early", summary.get("stopped_early"))
    for key in ("diagnosis", "small_sets"):
        if summary.get(key):
            record.tags[f"edge.{key}"] = _short("; ".join(map(str, summary[key])))
    record.add_artifacts(
        *(run_dir / name for name in (TRAIN_CURVES, TRAIN_CONFUSION, TRAIN_METRICS_JSON, TRAIN_METRICS_CSV, TRAIN_SUMMARY)),
        run.checkpoint.with_name(run.checkpoint.name + ".json"),
    )
    if log_models:
        record.add_artifacts(run.checkpoint)
    return record


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---- quantize -----------------------------------------------------------------------------------

QUANTIZE_METRICS = (
    "top1",
    "top5",
    "parent_top1",
    "parent_top5",
    "drop_points",
    "drop_lower_points",
    "drop_upper_points",
    "agreement",
    "flips",
    "lost",
    "gained",
    "max_flips",
    "eval_count",
    "val_count",
    "confidence",
    "size_ratio",
    "calibration_s",
    "quantization_s",
    "total_s",
)


def try_label(entry: dict[str, Any]) -> str:
    """``percentile, 2 in float, bias corrected`` (one try of auto's search)."""
    corrected = "bias corrected" if entry.get("bias_corrected") else "quantized"
    return f"{entry.get('method')}, {len(entry.get('excluded') or [])} in float, {corrected}"


def quantize_record(run_dir: Path, artifact: Path, log_models: bool = False) -> StageRecord:
    """``edge quantize``: the method, each try with its val figures, the verdict, drop and agreement
    with their bounds and budgets, the layers kept in float, the layer report."""
    manifest = read_manifest(artifact)
    prov, metrics = manifest.provenance, manifest.metrics
    record = _base("quantize", run_dir, f"quantize-{prov.get('target', 'int8')}")
    record.tags.update(environment_tags(manifest.environment))
    record.add_params({k: v for k, v in prov.items() if k not in ("tries", "nodes_excluded", "built_cpu_flags")})
    excluded = list(prov.get("nodes_excluded") or [])
    record.params["nodes_in_float"] = (", ".join(map(str, excluded)) or "none")[:MAX_PARAM]
    record.metric("nodes_in_float", len(excluded))
    for step, entry in enumerate(prov.get("tries") or []):
        record.params[f"try.{step}"] = try_label(entry)
        record.metric("try.val_top1", entry.get("top1"), step)
        record.metric("try.val_drop_points", entry.get("drop_points"), step)
        record.metric("try.val_agreement", entry.get("agreement"), step)
        record.metric("try.speedup", entry.get("speedup"), step)
    record.metric("accepted", bool(metrics.get("accepted")))
    for key in QUANTIZE_METRICS:
        record.metric(key, metrics.get(key))
    record.metric("max_drop", prov.get("max_drop"))
    record.metric("min_agreement", prov.get("min_agreement"))
    record.tags["edge.accepted"] = "true" if metrics.get("accepted") else "false"
    record.tags["edge.target"] = str(prov.get("target"))
    for key in ("reason", "eval_source", "simulated"):
        if metrics.get(key) is not None:
            record.tags[f"edge.{key}"] = _short(metrics[key])
    record.add_artifacts(artifact.with_name(artifact.name + ".json"))
    if prov.get("layer_report"):
        record.add_artifacts(artifact.with_name(prov["layer_report"]))
    if log_models:
        record.add_artifacts(artifact)
    return record


# ---- bench --------------------------------------------------------------------------------------


def cell_metrics(record: StageRecord, row: dict[str, Any]) -> None:
    """One metric per timed cell: ``p50_ms.int8-cpu.cpu.b8`` and its interval, p90, p99, images/s."""
    where = f"{row['artifact']}.{row['device']}"
    for cell in row.get("cells") or []:
        compute = cell.get("compute") if cell.get("status") == "ok" else None
        if not isinstance(compute, dict):
            continue
        suffix = f"{where}.b{cell['batch']}"
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "items_per_s"):
            record.metric(f"{'images_per_s' if key == 'items_per_s' else key}.{suffix}", compute.get(key))
        interval = compute.get("p50_ci_ms")
        if isinstance(interval, list) and len(interval) == 2:
            record.metric(f"p50_low_ms.{suffix}", interval[0])
            record.metric(f"p50_high_ms.{suffix}", interval[1])
        e2e = cell.get("end_to_end")
        if isinstance(e2e, dict):
            record.metric(f"e2e_p50_ms.{suffix}", e2e.get("p50_ms"))


def accuracy_metrics(record: StageRecord, row: dict[str, Any]) -> None:
    """top-1, top-5, and drop (with its bounds) and agreement against the float parent, per row."""
    where = f"{row['artifact']}.{row['device']}"
    accuracy = row.get("accuracy") or {}
    record.metric(f"top1.{where}", accuracy.get("top1"))
    record.metric(f"top5.{where}", accuracy.get("top5"))
    vs = accuracy.get("vs_parent") or {}
    flips = vs.get("flips") or {}
    record.metric(f"drop_points.{where}", vs.get("drop_points"))
    record.metric(f"drop_lower_points.{where}", flips.get("drop_lower_points"))
    record.metric(f"drop_upper_points.{where}", flips.get("drop_upper_points"))
    record.metric(f"agreement.{where}", vs.get("agreement"))
    record.metric(f"peak_rss_mib.{where}", row.get("peak_rss_mib"))


def bench_report_path(run_dir: Path, out: Path | str | None = None) -> Path:
    return report_paths(Path(out) if out else RunDir(run_dir).bench)["json"]


def bench_record(run_dir: Path, report_path: Path) -> StageRecord:
    """``edge bench``: every cell, accuracy and drop per artifact, the report files."""
    report = read_report(report_path)
    record = _base("bench", run_dir)
    record.tags.update(environment_tags(report.get("environment")))
    settings = {k: v for k, v in (report.get("settings") or {}).items() if k != "run"}
    record.add_params(settings)
    ev = report.get("eval") or {}
    record.add_params({k: ev.get(k) for k in ("data", "split", "count", "seed", "external") if k in ev}, "eval.")
    for key, tag in (("fingerprint", "edge.eval_fingerprint"), ("split_fingerprint", "edge.eval_split_fingerprint")):
        if ev.get(key):
            record.tags[tag] = str(ev[key])
    for row in report["rows"]:
        record.tags[f"edge.row.{row['artifact']}.{row['device']}"] = str(row.get("status"))
        cell_metrics(record, row)
        accuracy_metrics(record, row)
    for key, value in (report.get("noise") or {}).items():
        if not isinstance(value, list):
            record.metric(f"noise.{key}", value)
    record.add_artifacts(*report_paths(report_path.parent).values(), report_path.with_name(report_path.name + ".json"))
    return record


# ---- check --------------------------------------------------------------------------------------


def report_run_dir(report: str | Path) -> Path:
    """The run directory a bench report (or the folder given to ``edge check``) belongs to."""
    path = Path(report)
    if path.is_dir():
        return path.parent if (path / "report.json").is_file() and not (path / "bench").is_dir() else path
    try:
        run = Path(json.loads(path.read_text())["settings"]["run"])
        if run.is_dir():
            return run
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return path.resolve().parent.parent


def check_record(report: str | Path, checks: list[Any], settings: dict[str, Any], junit: Path | None = None) -> StageRecord:
    """``edge check``: pass or fail, each failed check (a tag each), and the checks as gate.json."""
    path = Path(report)
    run_dir = report_run_dir(path)
    loaded = read_report(path)
    record = _base("check", run_dir)
    record.tags.update(environment_tags(loaded.get("environment")))
    if (loaded.get("eval") or {}).get("fingerprint"):
        record.tags["edge.eval_fingerprint"] = str(loaded["eval"]["fingerprint"])
    record.add_params(settings)
    statuses = [str(c.status) for c in checks]
    failed = [c for c in checks if c.status == "fail"]
    record.metric("passed", not failed)
    record.metric("checks", len(checks))
    record.metric("failed", len(failed))
    record.metric("warnings", statuses.count("warn"))
    record.tags[TAG_GATE] = "failed" if failed else "passed"
    for i, check in enumerate(failed):
        record.tags[f"edge.fail.{i}"] = _short(f"{check.name}: {check.detail}")
    record.texts["gate.json"] = json.dumps(
        {"passed": not failed, "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks]}, indent=2
    )
    if junit is not None:
        record.add_artifacts(Path(junit))
    return record
