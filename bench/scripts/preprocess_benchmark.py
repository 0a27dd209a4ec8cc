"""What preprocessing a camera frame costs: the crop's window alone against the whole resize.

    python -m bench.scripts.preprocess_benchmark [RUN] [--sizes 640x480,1280x720,1920x1080] [--rounds 5] [--calls 40]

``spec.apply`` on a centre-crop spec downscales with ``INTER_AREA`` and crops; where the crop's rows
(or columns) start and end on whole source pixels it computes the crop's window alone (edge/spec.py,
``_area_crop``), else the whole resize. For each frame size this prints, on one thread as the camera
runs it, the median ms per frame of that resize-and-crop and of the whole ``cv2.resize`` then the
crop, timed in interleaved rounds of ``--calls`` frames each (the ratio is the median of the
rounds' ratios), the window used, and whether the two give the same pixels (the largest difference
over every frame timed). Frames are a bundled photo with seeded noise. RUN's spec (RUN/model.onnx)
is used when given, else Lite0's ImageNet spec (224 crop of a 256 resize).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

import numpy as np

from edge.measure.timing import TimingWindow, round_order, timed_loop

DEFAULT_SIZES = "640x480,480x640,1280x720,1920x1080"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"sizes are WIDTHxHEIGHT separated by commas, got {item!r}") from None
        if width < 1 or height < 1:
            raise argparse.ArgumentTypeError(f"a frame size must be positive, got {item!r}")
        sizes.append((width, height))
    return sizes


def whole_resize_then_crop(cv2: Any, spec: Any, image: np.ndarray) -> np.ndarray:
    """The definition: the whole frame resized (``spec.resize``), then the centred crop."""
    (new_w, new_h), (top, left) = spec.center_crop_geometry(*image.shape[:2])
    return spec.resize(cv2, image, new_w, new_h)[top : top + spec.input_size, left : left + spec.input_size]


def window_of(spec: Any, width: int, height: int) -> str:
    """Which window the crop is computed from at this frame size: source rows, columns, or the whole frame."""
    import cv2

    from edge.spec import _area_crop, _source_window

    (new_w, new_h), corner = spec.center_crop_geometry(height, width)
    if spec.crop != "center" or not (new_w < width and new_h < height):
        return "whole (no centre-crop downscale)"
    probe = np.zeros((height, width) if spec.color == "gray" else (height, width, 3), np.uint8)
    if _area_crop(cv2, probe, (new_w, new_h), corner, spec.input_size) is None:
        return "whole"
    rows = _source_window(corner[0], spec.input_size, height, new_h)
    cols = _source_window(corner[1], spec.input_size, width, new_w)
    return "; ".join(f"{name} {w[0]}-{w[1]}" for name, w in (("rows", rows), ("columns", cols)) if w is not None)


def measure(spec: Any, width: int, height: int, rounds: int, calls: int, seed: int = 0) -> dict[str, Any]:
    import cv2

    from edge.photos import photos

    cv2.setNumThreads(1)  # as the camera runs it
    photo = cv2.resize(next(iter(photos().values())), (width, height), interpolation=cv2.INTER_LINEAR)
    rng = np.random.default_rng(seed)
    frames = [np.clip(photo.astype(np.int16) + rng.integers(-20, 21, photo.shape), 0, 255).astype(np.uint8) for _ in range(4)]
    frames = [spec.working_image(f) for f in frames]
    largest = max(
        int(np.abs(spec._resize_and_crop(cv2, f).astype(int) - whole_resize_then_crop(cv2, spec, f).astype(int)).max())
        for f in frames
    )
    ways = {
        "windowed": lambda i: spec._resize_and_crop(cv2, frames[i % len(frames)]),
        "whole": lambda i: whole_resize_then_crop(cv2, spec, frames[i % len(frames)]),
    }
    window = TimingWindow(warmup_s=0.0, min_iters=calls, min_seconds=0.0, max_seconds=600.0)
    p50s: dict[str, list[float]] = {name: [] for name in ways}
    for round_index in range(rounds):  # the two ways stepped in turn, the order alternating
        for name in round_order(list(ways), round_index):
            samples, _, _ = timed_loop(ways[name], window, 0.0)
            p50s[name].append(statistics.median(samples))
    windowed_ms, whole_ms = p50s["windowed"], p50s["whole"]
    ratios = [a / b for a, b in zip(windowed_ms, whole_ms)]
    return {
        "size": f"{width}x{height}",
        "window": window_of(spec, width, height),
        "spec_ms": statistics.median(windowed_ms),
        "whole_ms": statistics.median(whole_ms),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "largest_difference": largest,
        "frames": calls * rounds,
    }


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(
        prog="python -m bench.scripts.preprocess_benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", nargs="?", help="a run whose model.onnx carries the spec (default: Lite0's ImageNet spec)")
    parser.add_argument(
        "--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES), help=f"frame sizes (default {DEFAULT_SIZES})"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--calls", type=int, default=40, help="frames per path and round (default 40)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error(f"--rounds and --calls must be positive, got {args.rounds} and {args.calls}")
    from edge.errors import UserError

    try:
        spec = _spec(args.run)
    except UserError as exc:
        print(f"preprocess_benchmark: error: {exc}", file=sys.stderr)
        return 2
    rows = [measure(spec, width, height, args.rounds, args.calls) for width, height in args.sizes]
    table = Table(
        title=f"resize-and-crop per frame ({spec.crop} {spec.input_size} of {spec.resize_size}, {spec.color}), "
        f"1 OpenCV thread, {args.rounds} interleaved rounds x {args.calls} frames"
    )
    for column in ("frame", "window", "spec.apply's ms", "whole resize ms", "ratio (range)", "largest pixel difference"):
        table.add_column(column)
    for row in rows:
        low, high = row["ratio_range"]
        table.add_row(
            row["size"],
            row["window"],
            f"{row['spec_ms']:.2f}",
            f"{row['whole_ms']:.2f}",
            f"{row['ratio']:.2f}x ({low:.2f}-{high:.2f})",
            str(row["largest_difference"]),
        )
    Console().print(table)
    print(json.dumps({"preprocess": rows}))
    return 0


def _spec(run: str | None) -> Any:
    if run is None:
        from train.models import LITE0, pretrained_spec

        return pretrained_spec(LITE0)
    from edge.artifact_spec import artifact_spec
    from edge.run import RunDir

    rundir = RunDir.open(run)
    return artifact_spec(rundir.require(rundir.onnx, f"run `edge export {rundir.root}` first"))


if __name__ == "__main__":
    raise SystemExit(main())
