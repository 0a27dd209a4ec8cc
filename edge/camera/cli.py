"""Classify a camera or video stream live with any artifact (checkpoint, ONNX, INT8, TensorRT engine).

    edge camera runs/imagenet-lite0 --source 0 --show
    edge camera runs/demo/model.int8-cpu.onnx --source clip.mp4 --every-frame --jsonl out.jsonl --record out.mp4
    edge camera runs/demo --source csi://0 --backend tensorrt --device cuda --serve 0.0.0.0:8080

A capture thread reads and preprocesses the source (the artifact's own PreprocessSpec), overlapping
the model's work on the previous frame. Live sources and --realtime files hand the model only the
newest frame, dropping and counting older ones, so latency stays near one frame instead of growing;
--every-frame classifies every frame in order (deterministic replay; what a file gets without
--realtime). At the end it prints achieved FPS, inference-only FPS, grab-to-result latency
percentiles (from the moment a frame is grabbed, before decode), dropped frames and the thread
setting with how it was chosen (--threads/--streams, else measured on the first frames or cached
for this machine and model: edge.camera.threads). With the newest frame only, two streams can
classify two frames side by side, each on its own runner (--streams 2, or the measured choice); a
result that finishes after a newer frame's is logged to the JSONL but not drawn. --serve shows the same live in a browser and keeps
serving the last frame after the source ends, until Ctrl-C. Without a display, --show falls back to headless. Ctrl-C ends the run
after the current frame: the recording is playable and the JSONL complete (a second Ctrl-C stops at
once). The exit status follows the first reason to stop: 130 for Ctrl-C, 1 for a source that
failed (stalled, capture error, nothing decodable), else 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge.camera.metrics import CameraResult, format_figure
from edge.camera.options import CameraOptions
from edge.camera.session import run_camera
from edge.camera.sources import RetryPolicy

UNPACED_NOTE = (
    "this file was read as fast as the model takes frames, not in real time: its latency is mostly frames "
    "waiting in the queue (--realtime plays it as a camera would deliver it)"
)


def summary_table(result: CameraResult) -> Any:
    """The end-of-run figures as a two-column table: cells wrap, and a word longer than its column (a
    path) folds onto the next line, so nothing is cut at 80 columns or in a pipe."""
    from rich.table import Table

    fig = result.figures
    runner = f"{result.runner.get('backend')}:{result.runner.get('device')}"
    caption = "latency runs from when each frame was grabbed, before decode (JSONL grabbed_at), to its result"
    if not result.paced:
        caption += f"; {UNPACED_NOTE}"
    table = Table(title=f"edge camera: {result.source} -> {Path(result.model).name} ({runner})", caption=caption)
    table.add_column("metric", overflow="fold")
    table.add_column("value", overflow="fold")
    latency_name = "grab-to-result latency p50 / p90 / p99 (ms)" + ("" if result.paced else " (queueing: see below)")
    rows = [
        ("achieved FPS", format_figure(fig["achieved_fps"])),
        ("inference-only FPS", format_figure(fig["inference_fps"])),
        (latency_name, " / ".join(format_figure(fig[f"latency_p{q}_ms"]) for q in (50, 90, 99))),
        ("inference p50 / p90 / p99 (ms)", " / ".join(format_figure(fig[f"inference_p{q}_ms"]) for q in (50, 90, 99))),
        ("preprocess p50 (ms)", format_figure(fig["preprocess_p50_ms"], 2)),
        ("frames captured / classified / dropped", f"{result.captured} / {result.classified} / {result.dropped}"),
        (
            "frames preprocessed by the capture thread / left raw but classified",
            f"{result.preprocessed} / {result.preprocessed_on_take}",
        ),
        ("source retries / reconnects", f"{result.retries} / {result.reconnects}"),
        *(
            [("results after a newer frame's (two streams; logged, not drawn)", str(result.out_of_order))]
            if result.out_of_order
            else []
        ),
        ("threads", thread_summary(result)),
        ("ended because", result.end_reason),
    ]
    rows += [(name, path) for name, path in result.outputs.items()]
    for name, value in rows:
        table.add_row(name, value)
    return table


def thread_summary(result: CameraResult) -> str:
    """The thread row: the setting and how it was chosen (with the measured FPS per setting)."""
    if not result.threads:
        return str(result.runner.get("threads"))
    from edge.camera.threads import ThreadChoice

    return ThreadChoice.from_dict(result.threads).describe()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edge.runners import BACKENDS, DEVICES, OPENVINO_ONLY_DEVICES

    parser.add_argument(
        "model", metavar="RUN|ARTIFACT", help="a run directory (model.onnx, else checkpoint.pt) or an artifact file"
    )
    parser.add_argument(
        "--source", default="0", help="0 | /dev/videoN | file.mp4 | rtsp://... | csi://N | gst:PIPELINE | demo (default 0)"
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=DEVICES + OPENVINO_ONLY_DEVICES,
        help="cpu | cuda (gpu, npu: Intel's, with --backend openvino)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="inference threads per stream (default on CPU: all physical cores, all but one, or two streams of half "
        "the cores each, whichever gives more FPS, measured on the first frames and cached in ~/.cache/edge-harness "
        "for this machine and model)",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=None,
        help="classify this many frames side by side, each on its own runner (CPU; a live source or --realtime; "
        "default: measured with the threads, see --threads)",
    )
    parser.add_argument("--topk", type=int, default=3, help="classes shown per frame (default 3)")
    mode = parser.add_argument_group("frame handling")
    mode.add_argument(
        "--every-frame", action="store_true", help="classify every frame in order, dropping none (files: deterministic replay)"
    )
    mode.add_argument(
        "--realtime",
        action="store_true",
        help="play a file at its own frame rate, like a camera (frames are dropped when the model is slower)",
    )
    mode.add_argument("--loop", action="store_true", help="start a file again at its end")
    mode.add_argument("--max-frames", type=int, default=None, help="stop after this many classified frames")
    mode.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    out = parser.add_argument_group("outputs")
    out.add_argument("--show", action="store_true", help="show an OpenCV window (q or Esc quits); headless without a display")
    out.add_argument(
        "--record",
        metavar="OUT.mp4",
        default=None,
        help="write the annotated video (.mp4 or .avi; a file it replaces is kept in history/)",
    )
    out.add_argument(
        "--jsonl",
        metavar="PATH|-",
        default=None,
        help="one JSON line per classified frame (- for stdout; a file it replaces is kept in history/)",
    )
    out.add_argument(
        "--serve",
        metavar="HOST:PORT",
        default=None,
        help="serve the annotated MJPEG stream and live statistics (binds 127.0.0.1 unless a host is given)",
    )
    out.add_argument(
        "--public",
        action="store_true",
        help="with --serve on a loopback address: answer any Host header (behind a reverse proxy; by default only the "
        "address itself and localhost, against DNS rebinding)",
    )
    out.add_argument("--quiet", action="store_true", help="no progress line and no summary table")
    faults = parser.add_argument_group("stalled sources")
    faults.add_argument("--retries", type=int, default=3, help="reopen attempts when a live source stops delivering (default 3)")
    faults.add_argument(
        "--retry-delay", type=float, default=0.5, help="first wait between attempts in seconds, doubling each time (default 0.5)"
    )
    faults.add_argument(
        "--stall-timeout", type=float, default=10.0, help="a read blocked this many seconds ends the run (default 10)"
    )


def options_from_args(args: argparse.Namespace) -> CameraOptions:
    return CameraOptions(
        source=args.source,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        streams=args.streams,
        topk=args.topk,
        every_frame=args.every_frame,
        realtime=args.realtime,
        loop=args.loop,
        show=args.show,
        record=args.record,
        jsonl=args.jsonl,
        serve=args.serve,
        public=args.public,
        max_frames=args.max_frames,
        duration=args.duration,
        retry=RetryPolicy(retries=args.retries, delay_s=args.retry_delay, stall_timeout_s=args.stall_timeout),
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console

    options = options_from_args(args)
    console = make_console(stderr=options.jsonl == "-")
    shown: list[CameraResult] = []

    def show_summary(result: CameraResult) -> None:
        # --serve keeps the page up after the source ends: the figures are printed before that wait
        if not options.quiet:
            console.print(summary_table(result))
        shown.append(result)

    result = run_camera(args.model, options, console=console, on_hold=show_summary)
    if not shown:
        show_summary(result)
    if result.interrupted:  # the first reason to stop; nothing recorded after it overwrites it
        return 130
    failed = ("source stalled", "capture error", "no frame could be decoded")
    return 1 if result.end_reason.startswith(failed) else 0
