"""Sustained runs: the verdict on a synthetic slowing runner and on a steady one (a fake clock:
nothing sleeps), the duration parser, and `edge bench --sustain` writing its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.sustain import parse_duration, sustained_windows, throttle_verdict
from edge.cli import main
from edge.errors import UserError


class FakeRunner:
    """A runner whose call advances a fake clock by ``latency(t)`` ms: t is the fake time."""

    def __init__(self, latency_ms):
        self.now, self.latency_ms = 0.0, latency_ms

    def clock(self) -> float:
        return self.now

    def __call__(self) -> None:
        self.now += self.latency_ms(self.now) / 1000.0


def windows_of(latency_ms, seconds: float = 60.0, windows: int = 12) -> list[dict]:
    runner = FakeRunner(latency_ms)
    return sustained_windows(
        runner, 1, seconds, windows, clock=runner.clock, read_sensors=lambda: {"temperatures_c": {"cpu:0": 50.0}}
    )


def test_a_runner_that_slows_down_is_throttled() -> None:
    # 10 ms at the start, 15 ms after a minute, with a +-3% wobble: the last windows are slower
    # than the first by more than their intervals allow
    windows = windows_of(lambda t: (10.0 + 5.0 * t / 60.0) * (1 + 0.03 * math.sin(7 * t)))
    verdict = throttle_verdict(windows)
    assert verdict["verdict"] == "throttled", verdict
    ratio = verdict["last_over_first"]
    assert ratio["low"] > 1.0 and 1.3 < ratio["estimate"] < 1.6 and verdict["windows_per_side"] == 3
    assert windows[0]["p50_ms"] == pytest.approx(10.0, rel=0.1) and windows[-1]["p50_ms"] == pytest.approx(14.6, rel=0.1)
    assert windows[0]["images_per_s"] == pytest.approx(1000.0 / windows[0]["p50_ms"], rel=0.1)
    assert windows[0]["sensors"] == {"temperatures_c": {"cpu:0": 50.0}}


def test_a_steady_runner_is_not_throttled() -> None:
    windows = windows_of(lambda t: 10.0 * (1 + 0.05 * math.sin(3 * t)))
    verdict = throttle_verdict(windows)
    assert verdict["verdict"] == "not throttled", verdict
    assert verdict["last_over_first"]["low"] <= 1.0 <= verdict["last_over_first"]["high"]


def test_too_few_windows_give_no_verdict() -> None:
    assert throttle_verdict(windows_of(lambda t: 10.0 + t, windows=5))["verdict"] == "too short to judge"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("10m", 600.0), ("1h", 3600.0), ("2.5", 2.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10 minutes", "0m", "-1s"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(UserError, match="--sustain .*90s, 10m or 1h"):
        parse_duration(text)


def test_edge_bench_sustain_writes_windows_verdict_and_plot(
    pipeline_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bench"
    code = main(
        ["bench", str(pipeline_run), "--artifacts", "onnx-fp32", "--devices", "cpu", "--sustain", "0.6s",
         "--sustain-windows", "6", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "sustain" / "onnx-fp32" / "sustain.json").read_text())
    assert result["artifact"] == "onnx-fp32" and result["device"] == "cpu" and len(result["windows"]) == 6
    assert result["verdict"] in ("throttled", "not throttled") and result["duration_s"] == 0.6
    for window in result["windows"]:
        assert window["calls"] >= 1 and 0 < window["p50_ms"] <= window["p99_ms"] and window["images_per_s"] > 0
        assert set(window["sensors"]) >= {"temperatures_c", "cpu_mhz"}
    md = (out / "sustain" / "onnx-fp32" / "sustain.md").read_text()
    assert f"verdict: **{result['verdict']}**" in md and md.count("\n| ") == 7
    assert (out / "sustain" / "onnx-fp32" / "sustain.png").stat().st_size > 1000
    assert f"verdict: {result['verdict']}" in " ".join(capsys.readouterr().out.split())
