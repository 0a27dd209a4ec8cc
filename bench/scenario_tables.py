"""The MLPerf LoadGen scenario lines every page shows (the bench's Markdown, CSV and terminal table;
compare's), each under ``NOT_AUDITED``: "MLPerf LoadGen scenario, not an audited MLPerf result"."""

from __future__ import annotations

from typing import Any

from edge.measure.report import SCENARIO_NOTE as NOT_AUDITED

HEADER = [
    "artifact",
    "device",
    "scenario",
    "mode",
    "LoadGen",
    "why",
    "early stopping",
    "estimate ms",
    "p50 ms",
    "QPS",
    "queries",
    "settings",
]
_FIGURE = {"single-stream": "p90", "multi-stream": "p99 per query", "offline": "", "server": ""}


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def settings_text(entry: dict[str, Any]) -> str:
    """'quick: min 300 ms, 32 queries' / 'LoadGen defaults: min 10000 ms, 100 queries' (+ the bound)."""
    effective = entry.get("effective") or {}
    kind = "quick" if (entry.get("options") or {}).get("quick") else "LoadGen defaults"
    text = f"{kind}: min {effective.get('min_duration_ms', 'n/a')} ms, {effective.get('min_query_count', 'n/a')} queries"
    if entry.get("scenario") == "server":
        bound = effective.get("target_latency_ns")
        text += f", p99 bound {bound / 1e6:g} ms" if isinstance(bound, (int, float)) else ""
        if entry.get("mode") == "performance" and effective.get("target_qps"):
            text += f", {effective['target_qps']:g} queries/s offered"
    if entry.get("max_batch") and entry.get("scenario") in ("offline", "server"):
        text += f", batch <= {entry['max_batch']}"
    return text


def scenario_line(entry: dict[str, Any]) -> list[str]:
    """One entry as table cells (an accuracy run shows its top-1 where the figures go)."""
    where = [str(entry.get("artifact")), str(entry.get("device")), str(entry.get("scenario")), str(entry.get("mode"))]
    if entry.get("status") != "ok":
        why = entry.get("error") or entry.get("reason") or ""
        return [*where, str(entry.get("status")), str(why), "", "", "", "", "", ""]
    if entry.get("mode") == "accuracy":
        acc = entry.get("accuracy") or {}
        bench = acc.get("bench_top1")
        own = "" if bench is None else f" (bench's own: {bench:.2f}%)"
        why = f"top-1 {_num(acc.get('top1'), 2)}% of {acc.get('count')}{own}"
        return [*where, "accuracy", why, "", "", "", "", str(acc.get("count")), settings_text(entry)]
    early = entry.get("early_stopping_met")
    figure = _FIGURE.get(entry.get("scenario") or "", "")
    estimate = f"{_num(entry.get('estimate_ms'))} ({figure})" if figure else "n/a"
    qps = entry.get("peak_qps") if entry.get("mode") == "find-peak" else entry.get("qps")
    qps_text = f"{_num(qps, 1)}{' peak' if entry.get('mode') == 'find-peak' else ''}"
    return [
        *where,
        str(entry.get("validity")),
        "; ".join(entry.get("invalid_reasons") or []) or "-",
        "n/a" if early is None else ("yes" if early else "no"),
        estimate,
        _num((entry.get("latency_ms") or {}).get("p50")),
        qps_text,
        str(entry.get("query_count")),
        settings_text(entry),
    ]


def scenario_lines(report: dict[str, Any]) -> list[list[str]]:
    return [scenario_line(e) for e in (report.get("loadgen") or {}).get("entries", [])]


def _library_line(report: dict[str, Any]) -> list[str]:
    """How many preprocessed samples LoadGen could load, of how many, within which memory budget."""
    qsl = next((e["qsl"] for e in (report.get("loadgen") or {}).get("entries", []) if e.get("qsl")), None)
    if qsl is None:
        return []
    return [
        "",
        f"Sample library: {qsl['performance_count']} of {qsl['total_count']} test images preprocessed in memory for a "
        f"performance run ({qsl['sample_bytes']} bytes each, budget {qsl['budget_mib']:g} MiB: `--qsl-memory-mib`); "
        "an accuracy run walks all of them.",
    ]


def markdown_section(report: dict[str, Any]) -> list[str]:
    """The report.md section (empty when the report has no scenarios)."""
    lines = scenario_lines(report)
    if not lines:
        return []
    out = [
        "",
        "## MLPerf LoadGen scenarios",
        "",
        f"**{NOT_AUDITED}.** Figures, verdicts and settings are LoadGen's own (its logs: `loadgen/<artifact>/<scenario>/`); "
        "SingleStream's estimate is its early-stopping p90, MultiStream's the p99 per 8-sample query; QPS is samples/s.",
        *_library_line(report),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in lines]
    return out


def scenario_csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """report.csv's lines for the scenarios (beside the cells; the note says what they are)."""
    out = []
    for entry in (report.get("loadgen") or {}).get("entries", []):
        ok = entry.get("status") == "ok"
        acc = entry.get("accuracy") or {}
        qps = entry.get("peak_qps") if entry.get("mode") == "find-peak" else entry.get("qps")
        why = "; ".join(entry.get("invalid_reasons") or []) if ok else (entry.get("error") or entry.get("reason") or "")
        out.append(
            {
                "artifact": entry.get("artifact"),
                "device": entry.get("device"),
                "status": entry.get("status"),
                "scenario": entry.get("scenario"),
                "loadgen_mode": entry.get("mode"),
                "loadgen_result": entry.get("validity") if ok else None,
                "early_stopping_met": entry.get("early_stopping_met"),
                "estimate_ms": entry.get("estimate_ms"),
                "p50_ms": (entry.get("latency_ms") or {}).get("p50"),
                "p90_ms": (entry.get("latency_ms") or {}).get("p90"),
                "p99_ms": (entry.get("latency_ms") or {}).get("p99"),
                "samples": entry.get("query_count"),
                "loadgen_qps": qps,
                "top1": acc.get("top1"),
                "note": f"{NOT_AUDITED}; {settings_text(entry) if ok else ''}{'; ' + why if why else ''}",
            }
        )
    return out
