"""Interval arithmetic of timing rounds and the latency, stale and exact-conversion checks of the gate."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from bench.gate import evaluate_gate
from bench.matrix import attach_latency_ratios
from edge.measure.intervals import _u_counts, median_interval, paired_ratio, spread_pct, two_sample_ratio
from tests.bench.test_gate import _row, make_report


def _status(checks, prefix: str) -> list[str]:
    return [c.status for c in checks if c.name.startswith(prefix)]


def _detail(checks, prefix: str) -> str:
    (check,) = [c for c in checks if c.name.startswith(prefix)]
    return check.detail


# ---- intervals ---------------------------------------------------------------------------------


def test_median_interval_of_five_rounds_is_min_max_at_93_8_percent():
    assert median_interval([3.0, 1.0, 5.0, 2.0, 4.0]) == (1.0, 5.0, pytest.approx(1 - 2 / 32))


def test_median_interval_of_nine_rounds_drops_one_value_each_side():
    low, high, level = median_interval(list(range(9)))
    assert (low, high) == (1, 7)
    assert level == pytest.approx(1 - 2 * 10 / 512)  # P(Binomial(9, 1/2) <= 1) = 10/512 per side


def test_a_single_round_has_no_interval():
    assert median_interval([2.0]) == (2.0, 2.0, None)


def test_spread_is_range_over_median_in_percent():
    assert spread_pct([0.9, 1.0, 1.1]) == pytest.approx(20.0)
    assert spread_pct([1.0]) is None


def test_mann_whitney_null_distribution_is_exact():
    counts = _u_counts(5, 5)
    assert sum(counts) == math.comb(10, 5)
    assert counts[:4] == (1, 1, 2, 3)  # U = 0, 1, 2, 3
    assert counts == counts[::-1]  # symmetric


def test_two_sample_ratio_estimate_and_interval():
    old = [1.0, 1.01, 0.99, 1.02, 0.98]
    ratio = two_sample_ratio([1.3 * v for v in old], old)
    assert ratio.estimate == pytest.approx(1.3)
    assert ratio.level == pytest.approx(1 - 2 * 4 / 252)  # the 3rd smallest and largest of 25 log-ratios
    assert 1.25 < ratio.low < 1.3 < ratio.high < 1.35
    same = two_sample_ratio(old, old)
    assert same.low < 1.0 < same.high


def test_two_sample_interval_covers_at_its_level():
    """Lognormal rounds with a known true ratio: the interval holds it about as often as it says."""
    rng = np.random.default_rng(7)
    hits, trials = 0, 2000
    for _ in range(trials):
        new = np.exp(rng.normal(math.log(1.2), 0.05, 5))
        old = np.exp(rng.normal(0.0, 0.05, 5))
        ratio = two_sample_ratio(new.tolist(), old.tolist())
        hits += ratio.low <= 1.2 <= ratio.high
    assert hits / trials == pytest.approx(1 - 2 * 4 / 252, abs=0.015)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    ratio = paired_ratio([1.0, 2.2, 0.9, 1.1, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0])
    assert ratio.estimate == pytest.approx(0.5)
    assert (ratio.low, ratio.high) == (pytest.approx(0.45), pytest.approx(1.1))
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_int8_cells_carry_their_ratio_to_the_float_parent():
    report = make_report(fp32_ms=10.0, int8_ms=5.0)
    attach_latency_ratios(report["rows"])
    cell = _row(report, "int8-cpu@cpu")["cells"][0]
    assert cell["vs_parent_latency"]["parent"] == "onnx-fp32"
    assert cell["vs_parent_latency"]["estimate"] == pytest.approx(0.5)
    assert cell["vs_parent_latency"]["n"] == 5


# ---- the latency check -------------------------------------------------------------------------


def _scaled(report: dict, artifact: str, factors: list[float], probe: float = 1.0) -> dict:
    """A copy whose ``artifact`` rounds are multiplied round by round (and every probe by ``probe``)."""
    out = copy.deepcopy(report)
    for row in out["rows"]:
        for cell in row.get("cells") or []:
            for r, factor in zip(cell["compute"]["rounds"], factors):
                if row["artifact"] == artifact:
                    r["p50_ms"] *= factor
                r["probe_ms"] *= probe
            if row["artifact"] == artifact:
                cell["compute"]["p50_ms"] = float(np.median([r["p50_ms"] for r in cell["compute"]["rounds"]]))
    return out


def test_a_real_slowdown_fails_with_its_interval():
    base = make_report()
    slower = _scaled(base, "int8-cpu", [1.4] * 5)
    checks = evaluate_gate(slower, base, 0.5, 10.0)
    assert _status(checks, "p50 int8-cpu@cpu batch 1") == ["fail"]
    detail = _detail(checks, "p50 int8-cpu@cpu batch 1")
    assert "new/old 1.400 [" in detail and "slower beyond the 10% tolerance" in detail
    assert _status(checks, "latency ratio int8-cpu/onnx-fp32@cpu batch 1") == ["fail"]
    assert _status(checks, "p50 onnx-fp32@cpu batch 1") == ["pass"]


def test_noise_wider_than_the_tolerance_warns_and_fails_only_when_strict():
    base = make_report()
    noisy = _scaled(base, "onnx-fp32", [0.8, 1.25, 1.0, 1.3, 0.9])
    checks = evaluate_gate(noisy, base, 0.5, 10.0)
    assert _status(checks, "p50 onnx-fp32@cpu batch 1") == ["warn"]
    detail = _detail(checks, "p50 onnx-fp32@cpu batch 1")
    assert detail.startswith("too noisy to judge the p50: p50 10.000 -> 9.800 ms; new/old 0.980 [")
    assert "--rounds" in detail and "--threads" in detail and "new rounds spread" in detail
    strict = evaluate_gate(noisy, base, 0.5, 10.0, strict_latency=True)
    assert _status(strict, "p50 onnx-fp32@cpu batch 1") == ["fail"]


def test_a_slower_machine_is_told_from_a_slower_model_by_the_other_artifacts():
    base = make_report()
    busy = base
    for artifact in ("torch-fp32", "onnx-fp32", "int8-cpu"):  # a slower state of the VM: every artifact x1.35
        busy = _scaled(busy, artifact, [1.35] * 5)
    checks = evaluate_gate(busy, base, 0.5, 10.0)
    assert _status(checks, "p50 ") == ["warn"] * 6
    detail = _detail(checks, "p50 onnx-fp32@cpu batch 1")
    assert "torch-fp32, int8-cpu at the same batch, timed in the same rounds, slowed x1.35 too" in detail
    assert "the machine was slower, not the model" in detail and detail.startswith("too noisy to judge")
    assert _status(evaluate_gate(busy, base, 0.5, 10.0, strict_latency=True), "p50 onnx-fp32@cpu batch 1") == ["fail"]
    upgraded = copy.deepcopy(busy)  # another onnxruntime: a runtime-wide slowdown is a regression
    upgraded["environment"]["packages"] = {"onnxruntime": "9.9"}
    assert _status(evaluate_gate(upgraded, base, 0.5, 10.0), "p50 onnx-fp32@cpu batch 1") == ["fail"]


def test_a_baseline_without_rounds_is_not_judged():
    base = make_report()
    for row in base["rows"]:
        for cell in row["cells"]:
            del cell["compute"]["rounds"]
    checks = evaluate_gate(_scaled(make_report(), "int8-cpu", [2.0] * 5), base, 0.5, 10.0)
    assert _status(checks, "p50 int8-cpu@cpu batch 1") == ["warn"]
    assert "the baseline has no timing rounds" in _detail(checks, "p50 int8-cpu@cpu batch 1")


def test_the_gate_names_what_differs_between_the_reports():
    base = make_report()
    base["settings"].update(profile="demo", window={"rounds": 5}, threads=None)
    new = make_report(eval_fp="e2")
    new["settings"].update(profile="full", window={"rounds": 5}, threads=2)
    detail = _detail(evaluate_gate(new, base, 0.5, 10.0), "comparable reports")
    assert "profile 'demo' -> 'full'" in detail and "threads None -> 2" in detail and "evaluation set e1 -> e2" in detail
    same = evaluate_gate(make_report(), make_report(), 0.5, 10.0)
    assert _status(same, "comparable reports") == ["pass"]


# ---- stale rows and exact conversions ----------------------------------------------------------


def test_stale_rows_fail_unless_allowed():
    report = make_report()
    _row(report, "int8-cpu@cpu")["stale"] = "model.onnx was exported from a different checkpoint.pt"
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _status(checks, "current int8-cpu@cpu") == ["fail"]
    assert "stale: model.onnx was exported from a different checkpoint.pt" in _detail(checks, "current int8-cpu@cpu")
    allowed = evaluate_gate(report, None, 0.5, 10.0, allow_stale=True)
    assert _status(allowed, "current int8-cpu@cpu") == ["warn"]


def test_an_exact_conversion_that_disagrees_fails_even_when_it_gained():
    from bench.matrix import attach_parent_comparison

    report = make_report()
    row = _row(report, "onnx-fp32@cpu")
    labels = np.asarray(report["eval"]["labels"])
    preds = np.asarray(row["accuracy"]["predictions"])
    preds[:30] = labels[:30]  # 30 of the torch model's misses now right: +1.5 points, 98.5% agreement
    row["accuracy"]["predictions"] = preds.tolist()
    row["accuracy"]["top1"] = float(np.mean(preds == labels) * 100)
    attach_parent_comparison(report["rows"], labels.tolist(), 0.5)
    checks = evaluate_gate(report, None, 0.5, 10.0)
    assert _status(checks, "exact onnx-fp32@cpu") == ["fail"]
    assert "agreement with torch-fp32 98.50% on 2000 images (exact conversion: >= 99.5%)" in _detail(
        checks, "exact onnx-fp32@cpu"
    )
    assert _status(checks, "top-1 drop onnx-fp32@cpu") == ["pass"]  # the drop alone would not have caught it
    assert _status(evaluate_gate(report, None, 0.5, 10.0, min_exact_agreement=98.0), "exact onnx-fp32@cpu") == ["pass"]
    assert _status(evaluate_gate(make_report(), None, 0.5, 10.0), "exact onnx-fp32@cpu") == ["pass"]


def test_a_slowdown_measured_while_other_processes_held_the_cpus_is_too_noisy_to_judge():
    base = make_report()
    busy = _scaled(base, "int8-cpu", [1.4] * 5)
    for row in busy["rows"]:
        for cell in row.get("cells") or []:
            for r in cell["compute"]["rounds"]:
                r["others_cpu"] = 0.6
    checks = evaluate_gate(busy, base, 0.5, 10.0)
    assert _status(checks, "p50 int8-cpu@cpu batch 1") == ["warn"]
    detail = _detail(checks, "p50 int8-cpu@cpu batch 1")
    assert "other processes used 60% of the CPUs during the new rounds" in detail and "too noisy to judge" in detail
    assert _status(evaluate_gate(busy, base, 0.5, 10.0, strict_latency=True), "p50 int8-cpu@cpu batch 1") == ["fail"]


# ---- what excuses a slowdown, and how sure a verdict must be (issue 24) ---------------------------


def _every_artifact_scaled(report: dict, factor: float) -> dict:
    for artifact in ("torch-fp32", "onnx-fp32", "int8-cpu"):
        report = _scaled(report, artifact, [factor] * 5)
    return report


def test_a_uniform_slowdown_is_a_regression_when_the_harness_code_changed():
    base = make_report()
    slower = _every_artifact_scaled(base, 1.35)  # a slower preprocessing or runner slows every artifact alike
    slower["environment"]["harness"] = {"version": "0.1.0", "source_sha256": "b" * 64}
    checks = evaluate_gate(slower, base, 0.5, 10.0)
    assert _status(checks, "p50 ") == ["fail"] * 6
    detail = _detail(checks, "p50 onnx-fp32@cpu batch 1")
    assert "slower beyond the 10% tolerance" in detail
    assert detail.endswith("not excused as a slower machine, the code differs: harness source aaaaaaaaaaaa -> bbbbbbbbbbbb")
    assert "harness source aaaaaaaaaaaa -> bbbbbbbbbbbb" in _detail(checks, "comparable reports")
    unknown = copy.deepcopy(base)  # a baseline made before the harness was recorded is not the same code
    del unknown["environment"]["harness"]
    same_code_as_now = _every_artifact_scaled(base, 1.35)
    assert _status(evaluate_gate(same_code_as_now, unknown, 0.5, 10.0), "p50 onnx-fp32@cpu batch 1") == ["fail"]
    same_code = _every_artifact_scaled(base, 1.35)  # the same code, packages and machine: the machine was slower
    assert _status(evaluate_gate(same_code, base, 0.5, 10.0), "p50 ") == ["warn"] * 6


def _with_rounds(report: dict, count: int) -> dict:
    out = copy.deepcopy(report)
    for row in out["rows"]:
        for cell in row.get("cells") or []:
            cell["compute"]["rounds"] = cell["compute"]["rounds"][:count]
    return out


@pytest.mark.parametrize(("rounds", "level"), [(1, "0.0%"), (2, "66.7%")])
def test_an_interval_below_the_confidence_floor_gives_no_verdict(rounds: int, level: str):
    base = _with_rounds(make_report(), rounds)
    slower = _with_rounds(_scaled(make_report(), "int8-cpu", [2.0] * 5), rounds)  # twice as slow
    checks = evaluate_gate(slower, base, 0.5, 10.0)
    assert _status(checks, "p50 int8-cpu@cpu batch 1") == ["warn"]
    detail = _detail(checks, "p50 int8-cpu@cpu batch 1")
    assert detail.startswith("too noisy to judge the p50")
    assert f"the interval has {level} confidence, below the 90% floor a verdict needs" in detail and "--rounds" in detail
    assert "fail" not in _status(checks, "p50 ") + _status(checks, "latency ratio")
    three = evaluate_gate(
        _with_rounds(_scaled(make_report(), "int8-cpu", [2.0] * 5), 3), _with_rounds(make_report(), 3), 0.5, 10.0
    )
    assert _status(three, "p50 int8-cpu@cpu batch 1") == ["fail"]  # 3+3 rounds: 90%, a verdict
