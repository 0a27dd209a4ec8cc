"""The latency half of ``edge check --baseline``: judged by intervals, so noise cannot fail it.

Every cell of a report carries R timing rounds (``edge.measure.timing.RoundTimer``). A cell of the new
report is compared with the same cell of the baseline through ``edge.measure.intervals.two_sample_ratio``
on their round p50s:

- the whole interval of new/old above ``1 + tolerance``: a real slowdown, **fail**;
- the whole interval at or below it: **pass**;
- otherwise the rounds are too noisy to judge: a **warning** that gives the figures and what to
  change (longer windows, more rounds, pinned threads), a failure with ``--strict-latency``.

A shared VM has slower *states* that last a whole bench and hit every artifact alike (measured
here: every cell of one bench 35-40% slower, no other process running). So a failing cell is set
against the other artifacts of the same report timed in the same rounds (same device and batch):
when they slowed by as much (its new/old over theirs within the tolerance) the machine was slower,
not the model, and the check is "too noisy to judge" (a failure with ``--strict-latency``). That
excuse is taken only when the harness (its version and the hash of its source), the packages and the
machine are the same in both reports: a slower preprocessing or runner slows every artifact too, and
is a regression; the check then names what differs.

An interval whose exact coverage is below ``CONFIDENCE_FLOOR`` (fewer than 3 rounds on a side: 1+1
rounds cover 0%, 2+2 66.7%) gives no verdict: the check is "too noisy to judge" and says how many
rounds to time, never a FAIL from it. The INT8/float ratios, measured
within each report's own interleaved rounds, are compared on any machine.

Each round also records the share of the CPUs other processes used while it ran
(``edge.measure.timing.OthersCpu``). A slowdown measured while, for either report, other processes held
more than ``CONTENDED`` of the CPUs (median over the cell's rounds) is not evidence against the
model: it is "too noisy to judge" and names the share (a failure with ``--strict-latency``).

Absolute p50s are compared only on the same machine fingerprint; the INT8/FP32 ratio of each
report is measured within its own rounds (stepped back to back) and compared on any machine.
Differences between the two reports that change latency (profile, window, rounds, threads,
batch sizes, evaluation set, package versions) are named in one line first.
"""

from __future__ import annotations

from typing import Any

from bench.checks import Check, same_machine
from edge.measure.intervals import CONFIDENCE_FLOOR, spread_pct, two_sample_ratio
from edge.measure.report import MEASURED
from edge.measure.rows import float_parent, round_p50s
from edge.measure.timing import CONTENDED, others_cpu_share

PACKAGES = ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "openvino", "numpy", "opencv-python")


def check_latency(report: dict[str, Any], baseline: dict[str, Any], tolerance: float, strict: bool = False) -> list[Check]:
    """Comparability, then per-cell p50 (same machine only), then INT8/FP32 ratios."""
    checks = [comparability(report, baseline)]
    if same_machine(report, baseline):
        old, new = _cells(baseline), _cells(report)
        differs = code_differences(report, baseline)
        for key, cell in sorted(new.items()):
            if key in old:
                peers = machine_factor(key, new, old) if not differs else None
                checks.append(_p50_check(key, cell, old[key], tolerance, strict, peers, differs))
    else:
        known = report["environment"].get("machine_fingerprint") and baseline["environment"].get("machine_fingerprint")
        why = "different machine fingerprints" if known else "a report has no machine fingerprint"
        checks.append(Check("absolute latency vs baseline", "skip", f"{why}: only ratios within each run are compared"))
    checks += check_scenarios(report, baseline, tolerance, strict)
    old_ratios, new_cells, old_cells = parent_round_ratios(baseline), _cells(report), _cells(baseline)
    for key, ratios in sorted(parent_round_ratios(report).items()):
        if key in old_ratios and key[0] != "onnx-fp32":
            name = f"latency ratio {key[0]}/{key[3]}@{key[1]} batch {key[2]}"
            pair = [key[:3], (key[3], key[1], key[2])]
            busy = contention({"new": [new_cells[k] for k in pair], "old": [old_cells[k] for k in pair]})
            checks.append(_judge(name, ratios, old_ratios[key], tolerance, strict, "ratio", busy=busy))
    return checks


# ---- MLPerf LoadGen scenarios ---------------------------------------------------------------------

_SCENARIO_FIGURE = {"single-stream": "p90", "multi-stream": "p99", "server": "p99", "offline": "ms/sample"}


def scenario_entries(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(artifact, device, scenario) -> its performance entry (LoadGen scenarios that ran), if any."""
    entries = (report.get("loadgen") or {}).get("entries") or []
    return {
        (e["artifact"], e["device"], e["scenario"]): e
        for e in entries
        if e.get("status") == "ok" and e.get("mode") in ("performance", "find-peak")
    }


def check_scenarios(report: dict[str, Any], baseline: dict[str, Any], tolerance: float, strict: bool = False) -> list[Check]:
    """A scenario's figure against the baseline's, on the same machine, by the same interval rule as a
    cell's p50: the run is split into rounds (consecutive parts of its queries; each part's p90 for
    SingleStream, p99 for MultiStream and Server, ms per sample for Offline) and new/old is judged
    by ``_judge``. LoadGen's own estimate is quoted beside it."""
    new, old = scenario_entries(report), scenario_entries(baseline)
    shared = sorted(key for key in new if key in old)
    if not shared:
        return []
    if not same_machine(report, baseline):
        return [
            Check(
                "LoadGen scenarios vs baseline",
                "skip",
                "different machines: scenario latency is compared on the same machine only",
            )
        ]
    checks = []
    for key in shared:
        mine, theirs = new[key], old[key]
        figure = _SCENARIO_FIGURE[key[2]]
        name = f"LoadGen {key[2]} {figure} {key[0]}@{key[1]}"
        if not mine.get("rounds_ms") or not theirs.get("rounds_ms"):
            checks.append(Check(name, "warn", "not judged: a run too short to split into rounds (fewer queries than rounds)"))
            continue
        quoted = [e.get("estimate_ms") or (e.get("latency_ms") or {}).get("p99") for e in (theirs, mine)]
        raw = (
            f"LoadGen's estimate {_ms(quoted[0])} -> {_ms(quoted[1])} ms"
            if key[2] != "offline"
            else f"{_qps(theirs)} -> {_qps(mine)} samples/s"
        )
        checks.append(_judge(name, mine["rounds_ms"], theirs["rounds_ms"], tolerance, strict, figure, raw))
    return checks


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _qps(entry: dict[str, Any]) -> str:
    return "n/a" if entry.get("qps") is None else f"{entry['qps']:.1f}"


# ---- what is compared --------------------------------------------------------------------------


def _cells(report: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {
        (r["artifact"], r["device"], c["batch"]): c
        for r in report["rows"]
        if r.get("status") in MEASURED
        for c in r.get("cells") or []
        if c.get("status") == "ok"
    }


def parent_round_ratios(report: dict[str, Any]) -> dict[tuple[str, str, int, str], list[float]]:
    """Per cell with a float parent on the same device: p50 / parent p50 round by round."""
    cells = _cells(report)
    out = {}
    for (artifact, device, batch), cell in cells.items():
        parent = float_parent(artifact)
        ref = cells.get((parent or "", device, batch))
        if ref is None or parent is None:
            continue
        mine, theirs = round_p50s(cell), round_p50s(ref)
        if mine and len(mine) == len(theirs):
            out[(artifact, device, batch, parent)] = [a / b for a, b in zip(mine, theirs)]
    return out


def comparability(report: dict[str, Any], baseline: dict[str, Any]) -> Check:
    """One check naming what differs between the two reports that moves latency (a warning), or a pass."""
    new, old = report.get("settings") or {}, baseline.get("settings") or {}
    diffs = [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in ("profile", "window", "threads", "batch_sizes", "end_to_end")
        if old.get(key) != new.get(key)
    ]
    new_eval, old_eval = (report.get("eval") or {}).get("fingerprint"), (baseline.get("eval") or {}).get("fingerprint")
    if new_eval != old_eval:
        diffs.append(f"evaluation set {old_eval or 'none'} -> {new_eval or 'none'}")
    threads_new, threads_old = _row_threads(report), _row_threads(baseline)
    diffs += [
        f"threads of {k} {threads_old[k]} -> {v}" for k, v in threads_new.items() if k in threads_old and threads_old[k] != v
    ]
    diffs += code_differences(report, baseline)
    if not diffs:
        return Check(
            "comparable reports",
            "pass",
            "same profile, window, rounds, threads, batch sizes, evaluation set, harness source and packages",
        )
    return Check("comparable reports", "warn", "the reports differ in: " + "; ".join(diffs))


def _row_threads(report: dict[str, Any]) -> dict[str, Any]:
    return {f"{r['artifact']}@{r['device']}": r.get("threads") for r in report["rows"] if r.get("status") in MEASURED}


# ---- judging -----------------------------------------------------------------------------------


def _packages(report: dict[str, Any]) -> dict[str, Any]:
    packages = report["environment"].get("packages") or {}
    return {p: packages.get(p) for p in PACKAGES}


def _harness(report: dict[str, Any]) -> dict[str, Any]:
    return report["environment"].get("harness") or {}


def code_differences(report: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """What differs between the two reports' code: the harness's version and source hash (unknown
    in a report made before they were recorded: not the same), and the packages that run models."""
    new, old = _harness(report), _harness(baseline)
    found = []
    if new.get("version") != old.get("version"):
        found.append(f"harness version {old.get('version') or 'unknown'} -> {new.get('version') or 'unknown'}")
    if not new.get("source_sha256") or new.get("source_sha256") != old.get("source_sha256"):
        short = [(h.get("source_sha256") or "unknown")[:12] for h in (old, new)]
        found.append(f"harness source {short[0]} -> {short[1]}")
    packages_new, packages_old = _packages(report), _packages(baseline)
    found += [f"{p} {packages_old[p]} -> {packages_new[p]}" for p in PACKAGES if packages_old[p] != packages_new[p]]
    return found


def machine_factor(
    key: tuple[str, str, int], new: dict[Any, dict[str, Any]], old: dict[Any, dict[str, Any]]
) -> tuple[float, str] | None:
    """How much slower *every* other artifact of the report got at the same device and batch (the
    smallest of their new/old estimates: one that did not slow means the machine did not), with
    their names; None without such peers."""
    artifact, device, batch = key
    ratios, names = [], []
    for (a, d, b), cell in new.items():
        if a != artifact and d == device and b == batch and (a, d, b) in old:
            mine, theirs = round_p50s(cell), round_p50s(old[(a, d, b)])
            if mine and theirs:
                ratios.append(two_sample_ratio(mine, theirs).estimate)
                names.append(a)
    if not ratios:
        return None
    return min(ratios), ", ".join(names)


def _p50_check(
    key: tuple[str, str, int],
    cell: dict[str, Any],
    old: dict[str, Any],
    tolerance: float,
    strict: bool,
    peers: tuple[float, str] | None = None,
    differs: list[str] | None = None,
) -> Check:
    name = f"p50 {key[0]}@{key[1]} batch {key[2]}"
    raw = f"p50 {old['compute']['p50_ms']:.3f} -> {cell['compute']['p50_ms']:.3f} ms"
    new_rounds, old_rounds = round_p50s(cell), round_p50s(old)
    if not new_rounds or not old_rounds:
        which = "the baseline has" if not old_rounds else "this report has"
        detail = f"{raw}: not judged, {which} no timing rounds (made before rounds existed): bench it again"
        return Check(name, "warn", detail)
    busy = contention({"new": [cell], "old": [old]})
    check = _judge(name, new_rounds, old_rounds, tolerance, strict, "p50", raw, busy=busy)
    if check.status == "fail" and not strict and peers is not None:
        factor, names = peers
        own = two_sample_ratio(new_rounds, old_rounds).estimate
        if own / factor <= 1.0 + tolerance / 100.0:
            detail = f"{check.detail.split(': slower beyond')[0]}; {names} at the same batch, timed in the same rounds, "
            detail += f"slowed x{factor:.2f} too (this one x{own / factor:.2f} of that): the machine was slower, not the model"
            return Check(name, "warn", too_noisy(detail, new_rounds, old_rounds, "p50", strict))
    if check.status == "fail" and differs:
        detail = f"{check.detail}; not excused as a slower machine, the code differs: {'; '.join(differs)}"
        return Check(name, "fail", detail)
    return check


def _judge(
    name: str,
    new: list[float],
    old: list[float],
    tolerance: float,
    strict: bool,
    what: str,
    raw: str = "",
    busy: str | None = None,
) -> Check:
    """Pass, fail or "too noisy to judge" from the interval of new/old against 1 + tolerance; a
    failure measured while other processes held the CPUs (``busy``) is too noisy to judge."""
    ratio = two_sample_ratio(new, old)
    limit = 1.0 + tolerance / 100.0
    figures = f"{raw + '; ' if raw else ''}new/old {ratio.text()} over {len(new)}+{len(old)} rounds, limit {limit:.2f}"
    if ratio.level is None or ratio.level < CONFIDENCE_FLOOR:
        level = "no" if ratio.level is None else f"{ratio.level * 100:.1f}%"
        floor = (
            f"{figures}; the interval has {level} confidence, below the {CONFIDENCE_FLOOR:.0%} floor a verdict needs: "
            "time at least 3 rounds on each side (--rounds)"
        )
        return Check(name, "fail" if strict else "warn", too_noisy(floor, new, old, what, strict))
    if ratio.low > limit and busy is None:
        return Check(name, "fail", f"{figures}: slower beyond the {tolerance:g}% tolerance (the whole interval is above it)")
    if ratio.low > limit:
        figures += f"; {busy}"
    if ratio.high <= limit:
        return Check(name, "pass", f"{figures}: within the {tolerance:g}% tolerance")
    return Check(name, "fail" if strict else "warn", too_noisy(figures, new, old, what, strict))


def contention(sides: dict[str, list[dict[str, Any]]]) -> str | None:
    """'other processes used 63% of the CPUs during the new rounds' when, for a side, the median
    share other processes took during its cells' rounds exceeds CONTENDED; None otherwise."""
    said = []
    for side, cells in sides.items():
        share = others_cpu_share([r for c in cells for r in (c.get("compute") or {}).get("rounds") or []])
        if share is not None and share > CONTENDED:
            said.append(f"other processes used {share * 100:.0f}% of the CPUs during the {side} rounds")
    return "; ".join(said) or None


def too_noisy(figures: str, new: list[float], old: list[float], what: str, strict: bool) -> str:
    spreads = ", ".join(f"{side} rounds spread {_pct(spread_pct(v))}" for side, v in (("new", new), ("old", old)))
    fix = "to judge it, time longer (--min-seconds), more rounds (--rounds), pin --threads, or bench on a quieter machine"
    tail = " (--strict-latency)" if strict else ""
    return f"too noisy to judge the {what}{tail}: {figures}; {spreads}; {fix}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
