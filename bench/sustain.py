"""Sustained runs: ``edge bench RUN --sustain 10m`` keeps one artifact under a fixed load and shows
whether it slows down (thermal or power throttling) as the minutes pass.

The load is back-to-back calls of one preprocessed batch (``--sustain-batch``, default 1). The
run is cut into ``--sustain-windows`` windows; each records its p50, p99 and images/s, and the
machine's temperatures and clocks at its end where the platform exposes them (``sensors``: Linux
thermal zones, Jetson's included, and cpufreq; NVML's GPU temperature and SM clock on CUDA).
The verdict compares the p50s of the last quarter of the windows (at least 3) with the first
quarter's through ``edge.measure.intervals.two_sample_ratio``: "throttled" only when the whole
interval of last/first lies above 1 (at the gate's confidence floor), else "not throttled";
fewer than 6 windows are "too short to judge". Files: ``OUT/sustain/<artifact>/sustain.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.measure.intervals import CONFIDENCE_FLOOR, two_sample_ratio

SIDE_MIN = 3  # windows on each side of the verdict, at least
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
THERMAL = Path("/sys/class/thermal")
CPUFREQ = Path("/sys/devices/system/cpu")


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h', '1.5m' or plain seconds -> seconds (positive)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text or "")
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--sustain {text!r}: give a duration such as 90s, 10m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


# ---- the machine's sensors -----------------------------------------------------------------------


def sensors(device: str = "cpu") -> dict[str, Any]:
    """Temperatures (deg C) and clocks (MHz) where this platform exposes them; {} parts elsewhere."""
    temps: dict[str, float] = {}
    for zone in sorted(THERMAL.glob("thermal_zone*")):
        try:
            temps[f"{(zone / 'type').read_text().strip()}:{zone.name[len('thermal_zone') :]}"] = (
                int((zone / "temp").read_text()) / 1000.0
            )
        except (OSError, ValueError):
            continue
    clocks: dict[str, float] = {}
    for cpu in sorted(CPUFREQ.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        try:
            clocks[cpu.parent.parent.name] = int(cpu.read_text()) / 1000.0
        except (OSError, ValueError):
            continue
    found: dict[str, Any] = {"temperatures_c": temps, "cpu_mhz": clocks}
    if device == "cuda":
        found.update(_nvml())
    return found


def _nvml() -> dict[str, Any]:
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]

        pynvml.nvmlInit()
    except Exception:  # no NVML here (no driver, no package): nothing to record
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {
            "gpu_temperature_c": float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            "gpu_sm_mhz": float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        }
    except Exception:
        return {}
    finally:
        pynvml.nvmlShutdown()


# ---- windows and the verdict ---------------------------------------------------------------------


def sustained_windows(
    call: Callable[[], Any],
    items_per_call: int,
    duration_s: float,
    windows: int,
    clock: Callable[[], float] = time.perf_counter,
    read_sensors: Callable[[], dict[str, Any]] = sensors,
    on_window: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Call ``call`` back to back for ``duration_s``; per window its p50/p99 (ms), images/s, sensors."""
    if windows < 1:
        raise UserError(f"--sustain-windows must be positive, got {windows}")
    span = duration_s / windows
    start = clock()
    out = []
    for w in range(windows):
        times: list[float] = []
        opened = clock()
        end = start + span * (w + 1)
        now = opened
        while now < end or not times:
            before = clock()
            call()
            now = clock()
            times.append((now - before) * 1000.0)
        window = {
            "index": w,
            "start_s": opened - start,
            "seconds": now - opened,
            "calls": len(times),
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
            "images_per_s": len(times) * items_per_call / (now - opened) if now > opened else None,
            "sensors": read_sensors(),
        }
        out.append(window)
        if on_window is not None:
            on_window(w, window)
    return out


def throttle_verdict(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Last quarter of the windows against the first (p50s, at least ``SIDE_MIN`` each)."""
    side = max(SIDE_MIN, len(windows) // 4)
    if len(windows) < 2 * side:
        return {"verdict": "too short to judge", "reason": f"{len(windows)} windows: at least {2 * SIDE_MIN} are needed"}
    first = [w["p50_ms"] for w in windows[:side]]
    last = [w["p50_ms"] for w in windows[-side:]]
    ratio = two_sample_ratio(last, first)
    throttled = ratio.level is not None and ratio.level >= CONFIDENCE_FLOOR and ratio.low > 1.0
    return {
        "verdict": "throttled" if throttled else "not throttled",
        "last_over_first": ratio.to_dict(),
        "windows_per_side": side,
        "reason": f"p50 of the last {side} windows / the first {side}: {ratio.text()}",
    }


# ---- the command ----------------------------------------------------------------------------------


def pick_artifact(run_dir: Any, wanted: str) -> tuple[str, Path]:
    """The one artifact of a sustained run: the one named, or onnx-fp32 (else the first) for 'all'."""
    from bench.matrix import select_artifacts

    artifacts = select_artifacts(run_dir, wanted)
    if len(artifacts) == 1:
        return next(iter(artifacts.items()))
    if wanted != "all":
        raise UserError(f"--sustain runs one artifact at a fixed load: give --artifacts one of {', '.join(artifacts)}")
    name = "onnx-fp32" if "onnx-fp32" in artifacts else next(iter(artifacts))
    return name, artifacts[name]


def run_sustain(args: argparse.Namespace, devices: list[str], console: Any) -> int:
    from bench.host import unavailable_reason
    from bench.worker import synthetic_frames
    from edge.history import history_root, keep_previous
    from edge.run import RunDir
    from edge.runners import select_runner
    from edge.verify import verify_artifact

    duration = parse_duration(args.sustain)
    if args.sustain_batch <= 0:
        raise UserError(f"--sustain-batch must be positive, got {args.sustain_batch}")
    run_dir = RunDir.open(args.run)
    name, path = pick_artifact(run_dir, args.artifacts)
    verify_artifact(path)
    reasons = {d: unavailable_reason(path, d) for d in devices}
    device = next((d for d in devices if not reasons[d]), None)
    if device is None:
        raise UserError(f"{name} cannot run on {', '.join(devices)} here: {'; '.join(str(r) for r in reasons.values())}")
    out = (args.out or run_dir.bench) / "sustain" / (name if device == "cpu" else f"{name}@{device}")
    console.print(
        f"sustained run: {name} on {device}, batch {args.sustain_batch}, {duration:.0f} s in {args.sustain_windows} windows",
        highlight=False,
    )
    with select_runner(path, device=device, threads=args.threads) as runner:
        batch = runner.spec.apply_batch(synthetic_frames(runner.spec, args.sustain_batch))
        runner.infer(batch)  # warm-up
        windows = sustained_windows(
            lambda: runner.infer(batch),
            args.sustain_batch,
            duration,
            args.sustain_windows,
            read_sensors=lambda: sensors(device),
            on_window=lambda i, w: console.print(
                f"window {i + 1}/{args.sustain_windows}: p50 {w['p50_ms']:.3f} ms, p99 {w['p99_ms']:.3f} ms, {w['images_per_s']:.1f} images/s",
                highlight=False,
            ),
        )
    result = {
        "artifact": name,
        "device": device,
        "path": str(path),
        "batch": args.sustain_batch,
        "duration_s": duration,
        "threads": args.threads,
        "windows": windows,
        **throttle_verdict(windows),
    }
    paths = {fmt: out / f"sustain.{fmt}" for fmt in ("json", "md", "png")}
    previous = [p for p in paths.values() if p.exists()]
    if previous:
        keep_previous(history_root(paths["json"], run_dir.root), previous, "edge bench --sustain replaces them")
    write_sustain(result, paths)
    console.print(f"verdict: {result['verdict']} ({result['reason']})", highlight=False)
    console.print(
        f"sustained run: {paths['json']} (also sustain.md{', sustain.png' if paths['png'].exists() else ''})",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def write_sustain(result: dict[str, Any], paths: dict[str, Path]) -> None:
    """sustain.json, .md and (with matplotlib) .png, renamed into place together."""
    from bench.plots import plot_unavailable
    from edge.atomic import atomic_paths

    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    formats = ["json", "md"] if plot_unavailable() else ["json", "md", "png"]
    with atomic_paths(*(paths[f] for f in formats)) as staged:
        for fmt, tmp in zip(formats, staged):
            if fmt == "png":
                render_png(result, tmp)
            else:
                tmp.write_text(json.dumps(result, indent=2) + "\n" if fmt == "json" else render_markdown(result))


def _median_temp(window: dict[str, Any]) -> float | None:
    temps = list((window["sensors"].get("temperatures_c") or {}).values())
    gpu = window["sensors"].get("gpu_temperature_c")
    return gpu if gpu is not None else (float(max(temps)) if temps else None)


def _median_clock(window: dict[str, Any]) -> float | None:
    clocks = list((window["sensors"].get("cpu_mhz") or {}).values())
    gpu = window["sensors"].get("gpu_sm_mhz")
    return gpu if gpu is not None else (float(np.median(clocks)) if clocks else None)


def render_markdown(result: dict[str, Any]) -> str:
    def fmt(value: float | None, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"# Sustained run: {result['artifact']} on {result['device']}",
        "",
        f"- batch {result['batch']}, back to back for {result['duration_s']:.0f} s in {len(result['windows'])} windows",
        f"- verdict: **{result['verdict']}** ({result['reason']})",
        "- temperature: the hottest thermal zone (GPU temperature on CUDA); clock: the median CPU clock (GPU SM clock on CUDA); n/a where not exposed",
        "",
        "| window | start s | calls | p50 ms | p99 ms | images/s | temperature C | clock MHz |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in result["windows"]:
        lines.append(
            f"| {w['index'] + 1} | {w['start_s']:.1f} | {w['calls']} | {fmt(w['p50_ms'], 3)} | {fmt(w['p99_ms'], 3)} | "
            f"{fmt(w['images_per_s'], 1)} | {fmt(_median_temp(w), 1)} | {fmt(_median_clock(w), 0)} |"
        )
    return "\n".join(lines) + "\n"


def render_png(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    t = [w["start_s"] + w["seconds"] / 2 for w in windows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    axes[0].plot(t, [w["p50_ms"] for w in windows], "o-", label="p50")
    axes[0].plot(t, [w["p99_ms"] for w in windows], "s--", label="p99")
    axes[0].set_ylabel("ms per call")
    axes[0].legend()
    axes[0].set_title(f"{result['artifact']} on {result['device']}, batch {result['batch']}: {result['verdict']}")
    axes[1].plot(t, [w["images_per_s"] or float("nan") for w in windows], "o-")
    axes[1].set_ylabel("images/s")
    temps = [_median_temp(w) for w in windows]
    clocks = [_median_clock(w) for w in windows]
    axes[2].plot(t, [v if v is not None else float("nan") for v in temps], "o-", color="tab:red")
    axes[2].set_ylabel("temperature C (n/a: gaps)")
    twin = axes[2].twinx()
    twin.plot(t, [v if v is not None else float("nan") for v in clocks], "x:", color="tab:blue")
    twin.set_ylabel("clock MHz")
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
