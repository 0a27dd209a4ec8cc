"""LoadGen's own logs read back: ``mlperf_log_detail.txt`` (one ``:::MLLOG {json}`` event a line)
and ``mlperf_log_accuracy.json``. Nothing here recomputes a statistic LoadGen reports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
ACCURACY = "mlperf_log_accuracy.json"
_PEAK = re.compile(r"Found peak performance field: ([0-9.]+)")


def read_detail(path: Path) -> dict[str, Any]:
    """The detail log's events as {key: value} (the last value of a key; every ``generic_message``
    kept in order under ``messages``; errors and warnings under ``errors`` / ``warnings``)."""
    events: dict[str, Any] = {"messages": [], "errors": [], "warnings": []}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise UserError(f"LoadGen wrote no readable detail log at {path}: {exc}") from exc
    for line in lines:
        if not line.startswith(":::MLLOG "):
            continue
        try:
            event = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        key, value = event.get("key"), event.get("value")
        meta = event.get("metadata") or {}
        if meta.get("is_error"):
            events["errors"].append(f"{key}: {value}")
        elif meta.get("is_warning"):
            events["warnings"].append(f"{key}: {value}")
        if key == "generic_message":
            events["messages"].append(value)
        else:
            events[key] = value
    return events


def _ms(ns: Any) -> float | None:
    return float(ns) / 1e6 if isinstance(ns, (int, float)) and not isinstance(ns, bool) and ns > 0 else None


def invalid_reasons(events: dict[str, Any]) -> list[str]:
    """Why LoadGen called the run INVALID, in its own terms (empty when VALID)."""
    if events.get("result_validity") == "VALID":
        return []
    checks = (
        ("result_min_duration_met", "minimum duration not met"),
        ("result_min_queries_met", "minimum query count not met"),
        ("early_stopping_met", "early stopping not satisfied"),
        ("result_perf_constraints_met", "latency bound not met (performance constraints)"),
    )
    reasons = [text for key, text in checks if events.get(key) is False]
    if events.get("result_invalid_reason"):
        reasons.append(str(events["result_invalid_reason"]))
    return reasons + events["errors"]


def percentiles_ms(events: dict[str, Any], per_query: bool) -> dict[str, float | None]:
    """LoadGen's latency percentiles (ms): per sample, or per query (MultiStream)."""
    kind = "per_query_latency_ns" if per_query else "latency_ns"
    return {
        f"p{p.rstrip('0').rstrip('.')}": _ms(events.get(f"result_{p}_percentile_{kind}")) for p in ("50.00", "90.00", "99.00")
    }


def summarize(events: dict[str, Any], scenario: str) -> dict[str, Any]:
    """The report fields of one LoadGen run: validity and why, early stopping, the scenario's
    figure (SingleStream: the early-stopping p90 estimate; MultiStream: the p99 estimate; Offline:
    samples/s; Server: completed samples/s, and the peak rate in find-peak mode), LoadGen's
    percentiles and the settings it used (the ``effective_*`` events)."""
    early = events.get("early_stopping_met")
    result: dict[str, Any] = {
        "validity": events.get("result_validity"),
        "invalid_reasons": invalid_reasons(events),
        "early_stopping_met": early if isinstance(early, bool) else None,
        "early_stopping": " ".join(str(events.get("early_stopping_result") or "").split()) or None,
        "query_count": events.get("result_query_count"),
        "latency_ms": percentiles_ms(events, per_query=scenario == "multi-stream"),
        "estimate_ms": None,
        "estimate_percentile": None,
        "qps": None,
        "peak_qps": None,
        "loadgen_version": events.get("loadgen_version"),
        "effective": {k[len("effective_") :]: v for k, v in events.items() if k.startswith("effective_")},
        "warnings": events["warnings"],
    }
    if scenario == "single-stream":
        result.update(estimate_ms=_ms(events.get("early_stopping_latency_ss")), estimate_percentile=90)
        result["qps"] = events.get("result_qps_with_loadgen_overhead")
    elif scenario == "multi-stream":
        result.update(estimate_ms=_ms(events.get("early_stopping_latency_ms")), estimate_percentile=99)
    elif scenario == "offline":
        result["qps"] = events.get("result_samples_per_second")
    else:
        result["qps"] = events.get("result_completed_samples_per_sec")
        result["scheduled_qps"] = events.get("result_scheduled_samples_per_sec")
        result["overlatency_queries"] = events.get("result_overlatency_query_count")
        peaks = [float(m.group(1)) for m in map(_PEAK.search, events["messages"]) if m]
        result["peak_qps"] = peaks[-1] if peaks else None
    return result


def read_accuracy(path: Path) -> dict[int, int]:
    """{sample index: predicted class} from LoadGen's accuracy log (our SUT answers each sample with
    its top-1 class as one little-endian int64)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"LoadGen's accuracy log {path} is not readable: {exc}") from exc
    return {int(e["qsl_idx"]): int(np.frombuffer(bytes.fromhex(e["data"]), dtype="<i8")[0]) for e in entries}
