"""The bench report schema (``edge-bench-report``), its reader and validator, and row and cell statuses.

``report.json`` holds::

    settings     what was asked: artifacts, devices, batch sizes, window, threads, profile
    environment  the environment fingerprint (+ Jetson power mode, clocks, temperatures) and the
                 harness's version and source hash
    eval         data, count, seed, split fingerprint, classes and the per-image labels
    rows[]       one per artifact x device: status (ok | rejected | unverified | error | skipped |
                 interrupted) with error / reason (rejected: measured, but the quantizer did not
                 accept the artifact; unverified: measured, but the file has no manifest;
                 interrupted: Ctrl-C stopped its worker, not a measurement, and the rows after
                 it were not run),
                 threads, peak_rss_mib, peak_gpu_mib, file_size_bytes, simulated, manifest_metrics,
                 cells[] per batch: status (ok | error | skipped, e.g. outside an engine's profile),
                 compute / end_to_end timing stats with their rounds, device_ms, energy_j_per_image,
                 single_stream (batch 1 stats with its sample count), and accuracy: top1, top5 and
                 the per-image top-1 ``predictions``, plus ``vs_parent`` (drop, agreement, flips)
    loadgen      (version 5, optional) MLPerf LoadGen scenarios: ``note``, ``scenarios``, ``mode`` and
                 ``entries[]``, one per artifact x device x scenario x mode: status, LoadGen's
                 validity with ``invalid_reasons``, ``early_stopping_met``, ``estimate_ms`` (SingleStream
                 p90, MultiStream p99 early-stopping estimate), ``qps`` / ``peak_qps``, LoadGen's
                 ``latency_ms`` percentiles, the ``effective`` settings, the sample library, the
                 ``rounds_ms`` the gate compares, ``accuracy`` (accuracy mode) and the paths of its logs

The per-image predictions are stored (not just counts) so that ``edge check`` can recount the
paired flips against the float parent, and against a baseline report on the same evaluation set.
Every reader (the gate, compare, ``edge triton``, the benchmark scripts) goes through
:func:`read_report`, so a report of an unknown version or shape is one clear line, never a KeyError.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.run import REPORT, RunDir

SCHEMA = "edge-bench-report"
# 2: rows may be ``rejected`` and cells ``skipped`` (a version-1 gate would pass them unseen).
# Rows may also be ``interrupted``: a reader of version 2 that does not know it refuses the report
# as malformed (it never passes one unseen), so it needs no new version.
# 3: rows may be ``stale`` (an ancestor changed): a version-2 gate would pass them unseen. Cells
# carry timing ``rounds`` with p50 intervals; ratios to the float parent (``vs_parent_latency``).
# 4: rows may be ``unverified`` (a model file without its manifest, measured): a version-3 gate would
# pass them unseen.
# 5: an optional ``loadgen`` section (MLPerf LoadGen scenarios); a version-4 reader would drop it unseen.
SCHEMA_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
SCENARIO_NOTE = "MLPerf LoadGen scenario, not an audited MLPerf result"  # on every page that shows one
SCENARIO_NAMES = ("single-stream", "multi-stream", "offline", "server")
SCENARIO_MODES = ("performance", "accuracy", "find-peak", "both")
ENTRY_STATUSES = ("ok", "error", "skipped", "interrupted")
MEASURED = ("ok", "rejected", "unverified")  # row statuses with numbers in them
HARNESS_PACKAGES = ("edge", "train", "bench", "calibration")  # the harness's own code: its source is hashed


@cache
def harness_fingerprint() -> dict[str, str | None]:
    """The harness's version (the installed distribution's) and the sha256 of its source (every
    ``.py`` file of its packages, by relative path): two reports whose latency differs with this
    differing may differ because the harness's own code (preprocessing, runners, timing) changed."""
    from importlib import metadata

    try:
        version: str | None = metadata.version("edge-harness")
    except metadata.PackageNotFoundError:
        version = None
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for package in HARNESS_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"version": version, "source_sha256": digest.hexdigest()}


def read_report(path: str | Path) -> dict[str, Any]:
    """A report.json, checked against the schema (``validate_report``); clear errors for anything else."""
    path = Path(path)
    if path.is_dir():
        candidates = (RunDir(path).bench / f"{REPORT}.json", path / f"{REPORT}.json")
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise UserError(
                f"{path} has no bench report (looked for {candidates[0]} and {candidates[1]}): run `edge bench {path}` first"
            )
        path = found[0]
    if not path.is_file():
        raise UserError(f"bench report {path} does not exist: run `edge bench RUN` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a readable bench report: {exc}") from exc
    return validate_report(data, str(path))


# ---- validation --------------------------------------------------------------------------------

ROW_STATUSES = ("ok", "rejected", "unverified", "error", "skipped", "interrupted")
CELL_STATUSES = ("ok", "error", "skipped")
_NUMBER = (int, float)


class _Invalid(Exception):
    """One problem in a report, with where it is (``rows[2].cells[0].batch``)."""


def _need(value: Any, kinds: Any, where: str, what: str) -> Any:
    # bool is an int in Python: a count or a latency given as true/false is malformed too
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise _Invalid(f"{where} must be {what}, got {value!r}")
    if not isinstance(value, kinds):
        raise _Invalid(f"{where} must be {what}, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _field(obj: dict[str, Any], key: str, kinds: Any, where: str, what: str, required: bool = True) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise _Invalid(f"{where} has no {key!r} ({what})")
        return None
    return _need(obj[key], kinds, f"{where}.{key}", what)


def _int_list(values: Any, where: str) -> list[int]:
    _need(values, list, where, "a list of whole numbers")
    for i, v in enumerate(values):
        _need(v, int, f"{where}[{i}]", "a whole number")
    return values


def _validate_cell(cell: Any, where: str) -> None:
    _need(cell, dict, where, "an object")
    batch = _field(cell, "batch", int, where, "the batch size, a whole number")
    if batch <= 0:
        raise _Invalid(f"{where}.batch must be positive, got {batch}")
    status = _field(cell, "status", str, where, f"one of {', '.join(CELL_STATUSES)}")
    if status not in CELL_STATUSES:
        raise _Invalid(f"{where}.status must be one of {', '.join(CELL_STATUSES)}, got {status!r}")
    if status == "ok":
        compute = _field(cell, "compute", dict, where, "the timing statistics")
        for key in ("p50_ms", "items_per_s"):
            _field(compute, key, _NUMBER, f"{where}.compute", "a number")


def _validate_vs_parent(vs: Any, where: str, n_labels: int | None) -> None:
    _need(vs, dict, where, "an object")
    _field(vs, "parent", str, where, "the float parent's name")
    if "error" in vs:
        _field(vs, "error", str, where, "a message")
        return
    _field(vs, "parent_device", str, where, "a device name")
    for key in ("drop_points", "agreement"):
        _field(vs, key, _NUMBER, where, "a number", required=False)
    flips = _field(vs, "flips", dict, where, "the paired flip counts")
    counts = {k: _field(flips, k, int, f"{where}.flips", "a whole number") for k in ("n", "lost", "gained", "agree")}
    confidence = _field(flips, "confidence", _NUMBER, f"{where}.flips", "a number in (0, 1)")
    n = counts["n"]
    if n <= 0 or min(counts.values()) < 0 or counts["lost"] + counts["gained"] > n or counts["agree"] > n:
        raise _Invalid(f"{where}.flips has impossible counts {counts}")
    if not 0.0 < confidence < 1.0:
        raise _Invalid(f"{where}.flips.confidence must be in (0, 1), got {confidence}")
    if n_labels is not None and n != n_labels:
        raise _Invalid(f"{where}.flips.n is {n} but eval has {n_labels} labels")


def _validate_row(row: Any, where: str, n_labels: int | None) -> None:
    _need(row, dict, where, "an object")
    _field(row, "artifact", str, where, "the artifact's bench name")
    _field(row, "device", str, where, "a device name")
    status = _field(row, "status", str, where, f"one of {', '.join(ROW_STATUSES)}")
    if status not in ROW_STATUSES:
        raise _Invalid(f"{where}.status must be one of {', '.join(ROW_STATUSES)}, got {status!r}")
    for i, cell in enumerate(_field(row, "cells", list, where, "a list of timing cells", required=False) or []):
        _validate_cell(cell, f"{where}.cells[{i}]")
    accuracy = _field(row, "accuracy", dict, where, "an object", required=False)
    if accuracy is None:
        return
    predictions = accuracy.get("predictions")
    if predictions is not None:
        _int_list(predictions, f"{where}.accuracy.predictions")
        if n_labels is not None and len(predictions) != n_labels:
            raise _Invalid(f"{where}.accuracy.predictions has {len(predictions)} entries but eval has {n_labels} labels")
    _field(accuracy, "top1", _NUMBER, f"{where}.accuracy", "a percentage", required=False)
    if accuracy.get("vs_parent") is not None:
        _validate_vs_parent(accuracy["vs_parent"], f"{where}.accuracy.vs_parent", n_labels)


def _validate_loadgen(section: Any, where: str) -> None:
    _need(section, dict, where, "an object")
    _field(section, "note", str, where, "the 'not an audited MLPerf result' note")
    for i, entry in enumerate(_field(section, "entries", list, where, "a list of scenario runs")):
        at = f"{where}.entries[{i}]"
        _need(entry, dict, at, "an object")
        _field(entry, "artifact", str, at, "the artifact's bench name")
        _field(entry, "device", str, at, "a device name")
        for key, allowed in (("scenario", SCENARIO_NAMES), ("mode", SCENARIO_MODES), ("status", ENTRY_STATUSES)):
            value = _field(entry, key, str, at, f"one of {', '.join(allowed)}")
            if value not in allowed:
                raise _Invalid(f"{at}.{key} must be one of {', '.join(allowed)}, got {value!r}")
        if entry["status"] != "ok":
            continue
        _field(entry, "validity", str, at, "LoadGen's VALID or INVALID", required=entry["mode"] != "accuracy")
        for key in ("estimate_ms", "qps", "peak_qps"):
            _field(entry, key, _NUMBER, at, "a number", required=False)
        for j, value in enumerate(_field(entry, "rounds_ms", list, at, "a list of round figures", required=False) or []):
            _need(value, _NUMBER, f"{at}.rounds_ms[{j}]", "a number")


def validate_report(data: Any, source: str = "report") -> dict[str, Any]:
    """``data`` if it is a bench report the tools can read; else one UserError naming the problem.

    Checks what ``edge check`` and the renderers read (types, required keys, the schema version,
    per-image predictions as long as the labels), so a malformed or hand-edited report is a user
    error with one line, never a KeyError deep inside the gate.
    """
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{source} is not an edge bench report (no schema {SCHEMA!r})")
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION
        hint = "newer than this tool: upgrade edge" if newer else "rewrite it with `edge bench`"
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise UserError(f"{source} has schema version {version!r}, this tool reads versions {readable}: {hint}")
    try:
        missing = [k for k in ("settings", "environment", "eval", "rows") if k not in data]
        if missing:
            raise _Invalid(f"the report has no {', '.join(map(repr, missing))}")
        settings = _need(data["settings"], dict, "settings", "an object")
        if "batch_sizes" in settings:
            _int_list(settings["batch_sizes"], "settings.batch_sizes")
        environment = _need(data["environment"], dict, "environment", "an object")
        _field(environment, "machine_fingerprint", str, "environment", "a string", required=False)
        n_labels = None
        if data["eval"] is not None:
            ev = _need(data["eval"], dict, "eval", "an object or null")
            labels = _field(ev, "labels", list, "eval", "the per-image labels", required=False)
            if labels is not None:
                n_labels = len(_int_list(labels, "eval.labels"))
        for i, row in enumerate(_need(data["rows"], list, "rows", "a list")):
            _validate_row(row, f"rows[{i}]", n_labels)
        if data.get("loadgen") is not None:
            _validate_loadgen(data["loadgen"], "loadgen")
    except _Invalid as exc:
        raise UserError(f"{source} is a malformed bench report: {exc}; rewrite it with `edge bench`") from exc
    return data
