"""The camera classifier's targets, measured: does the live pipeline keep up with the model?

    python -m bench.scripts.camera_benchmark runs/imagenet-lite0 [--backend auto] [--device cpu] [--threads 2]

1. Batch-1 throughput of the artifact with the same runner and thread setting (as ``edge bench``:
   a preprocessed frame in host memory, warm-up, then at least N calls and T seconds).
2. ``--realtime`` on a video at about twice that frame rate (faster than the model): the camera
   should reach >= 90% of the batch-1 throughput, with capture-to-result p50 <= inference p50 +
   one frame interval + 5 ms (a fresh frame waits at most one interval for the model).
3. ``--realtime`` at about half that frame rate (slower than the model): no frame may be dropped.

It prints the figures and whether each target holds (exit 1 when one misses, so a CI job can
gate on it). Absolute figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.timing import TimingWindow, time_calls
from edge.artifacts import atomic_write_json
from edge.camera.demo import write_demo_video
from edge.camera.session import CameraOptions, CameraResult, inference_threads, run_camera
from edge.errors import UserError
from edge.photos import photos
from edge.runners import BACKENDS, DEVICES, select_runner

FAST_FACTOR = 1.5  # source frame rate / model throughput in the "above the model's speed" case
SLOW_FACTOR = 0.5  # ... and in the "below the model's speed" case
THROUGHPUT_SHARE = 0.90
LATENCY_SLACK_MS = 5.0


def batch1_throughput(model: str, backend: str, device: str, threads: int | None, window: TimingWindow) -> dict[str, Any]:
    """Images/s and per-call latency of batch-1 inference on a preprocessed photo."""
    runner = select_runner(model, device=device, backend=backend, threads=threads)
    with runner:
        batch = runner.spec.apply(photos(["cat"])["cat"])[None]
        stats, _ = time_calls(lambda _i: runner.infer(batch), window, items_per_call=1)
        return {
            "images_per_s": stats.items_per_s,
            "p50_ms": stats.p50_ms,
            "samples": stats.samples,
            "threads": runner.threads,
            "runner": runner.describe(),
        }


def camera_run(
    model: str, backend: str, device: str, threads: int, fps: float, seconds: float, size: tuple[int, int], workdir: Path
) -> CameraResult:
    """``edge camera --realtime`` on a video of the demo photos at ``fps``."""
    video = write_demo_video(workdir / f"source-{fps:g}fps.mp4", size=size, fps=fps, seconds_per_photo=seconds / 3)
    options = CameraOptions(source=str(video.path), backend=backend, device=device, threads=threads, realtime=True, quiet=True)
    return run_camera(model, options)


def evaluate(
    base: dict[str, Any], fast: CameraResult, fast_fps: float, slow: CameraResult, slow_fps: float
) -> list[dict[str, Any]]:
    """The three targets with their measured values."""
    achieved = fast.figures["achieved_fps"] or 0.0
    share = achieved / base["images_per_s"]
    latency = fast.figures["latency_p50_ms"] or math.inf
    inference = fast.figures["inference_p50_ms"] or 0.0
    bound = inference + 1000.0 / fast_fps + LATENCY_SLACK_MS
    return [
        {
            "target": f"source {fast_fps:g} FPS: achieved FPS >= {THROUGHPUT_SHARE:.0%} of batch-1 throughput",
            "measured": f"{achieved:.1f} FPS = {share:.1%} of {base['images_per_s']:.1f} img/s",
            "ok": share >= THROUGHPUT_SHARE,
        },
        {
            "target": f"source {fast_fps:g} FPS: latency p50 <= inference p50 + frame interval + {LATENCY_SLACK_MS:g} ms",
            "measured": f"{latency:.1f} ms <= {inference:.1f} + {1000.0 / fast_fps:.1f} + {LATENCY_SLACK_MS:g} = {bound:.1f} ms",
            "ok": latency <= bound,
        },
        {
            "target": f"source {slow_fps:g} FPS (below the model's speed): no frame dropped",
            "measured": f"{slow.dropped} dropped of {slow.captured} ({slow.classified} classified)",
            "ok": slow.dropped == 0 and slow.classified == slow.captured,
        },
    ]


@dataclass
class Measured:
    """Batch-1 inference and the two camera runs, each at its source frame rate."""

    base: dict[str, Any]
    fast_fps: float
    fast: CameraResult
    slow_fps: float
    slow: CameraResult


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scripts.camera_benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", metavar="RUN|ARTIFACT")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="inference threads for both measurements (default: edge camera's, all physical cores but one on CPU)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each camera run (default 10)")
    parser.add_argument("--size", default="640x480", help="source frame size WxH (default 640x480)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def measure(args: argparse.Namespace, console: Any) -> Measured:
    """Batch-1 throughput, then the camera above and below it (ValueError: a bad --size)."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.seconds <= 0:
        raise UserError(f"--seconds must be positive, got {args.seconds}")
    with console.status("batch-1 throughput"):
        threads = inference_threads(CameraOptions(device=args.device, threads=args.threads))
        base = batch1_throughput(
            args.model, args.backend, args.device, threads, TimingWindow(warmup_s=1.0, min_iters=50, min_seconds=5.0)
        )
    fast_fps = float(max(1, math.ceil(base["images_per_s"] * FAST_FACTOR)))
    slow_fps = float(max(1, math.floor(base["images_per_s"] * SLOW_FACTOR)))
    with tempfile.TemporaryDirectory(prefix="camera-benchmark-") as tmp:
        with console.status(f"camera --realtime at {fast_fps:g} FPS"):
            fast = camera_run(
                args.model, args.backend, args.device, base["threads"], fast_fps, args.seconds, (width, height), Path(tmp)
            )
        with console.status(f"camera --realtime at {slow_fps:g} FPS"):
            slow = camera_run(
                args.model, args.backend, args.device, base["threads"], slow_fps, args.seconds, (width, height), Path(tmp)
            )
    return Measured(base, fast_fps, fast, slow_fps, slow)


def figures_table(model: str, device: str, measured: Measured) -> Any:
    """Batch-1 inference next to both camera runs."""
    from rich.table import Table

    base = measured.base
    figures = Table(
        title=f"camera pipeline vs batch-1 inference: {model} ({base['runner']['backend']}:{device}, {base['threads']} threads)"
    )
    for column in ("run", "FPS", "inference p50 ms", "latency p50 / p90 / p99 ms", "captured / classified / dropped"):
        figures.add_column(column, justify="left" if column == "run" else "right")
    figures.add_row("batch-1 inference (bench)", f"{base['images_per_s']:.1f}", f"{base['p50_ms']:.1f}", "-", "-")
    for name, result in (
        (f"camera --realtime {measured.fast_fps:g} FPS source", measured.fast),
        (f"camera --realtime {measured.slow_fps:g} FPS source", measured.slow),
    ):
        fig = result.figures
        figures.add_row(
            name,
            f"{fig['achieved_fps'] or 0:.1f}",
            f"{fig['inference_p50_ms'] or 0:.1f}",
            " / ".join(f"{fig[f'latency_p{q}_ms'] or 0:.1f}" for q in (50, 90, 99)),
            f"{result.captured} / {result.classified} / {result.dropped}",
        )
    return figures


def targets_table(targets: list[dict[str, Any]]) -> Any:
    """Each target, its measured value and whether it was met."""
    from rich.table import Table

    verdicts = Table(title="targets")
    verdicts.add_column("target")
    verdicts.add_column("measured")
    verdicts.add_column("")
    for row in targets:
        verdicts.add_row(row["target"], row["measured"], "[green]met[/green]" if row["ok"] else "[red]missed[/red]")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from rich.console import Console

    console = Console()
    try:
        measured = measure(args, console)
    except ValueError:
        print(f"camera_benchmark: error: --size must be WxH, e.g. 640x480, got {args.size!r}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"camera_benchmark: error: {exc}", file=sys.stderr)
        return 2

    targets = evaluate(measured.base, measured.fast, measured.fast_fps, measured.slow, measured.slow_fps)
    console.print(figures_table(args.model, args.device, measured))
    console.print(targets_table(targets))
    if args.json is not None:
        atomic_write_json(
            args.json,
            {
                "batch1": measured.base,
                "fast": {"fps": measured.fast_fps, **measured.fast.to_dict()},
                "slow": {"fps": measured.slow_fps, **measured.slow.to_dict()},
                "targets": targets,
            },
        )
    return 0 if all(row["ok"] for row in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
