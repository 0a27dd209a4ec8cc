"""Draw and cache a calibration set from the training split.

    edge calibrate RUN --data DATA [--size 512] [--seed 0]

A seeded, stratified draw from the training split (never the test split), preprocessed with the
run's spec, stored as RUN/calibration/calibration.npy with its manifest (items, their content hashes,
the train split's fingerprint and a content hash); a set already there is kept under
RUN/history/<UTC time>/calibration/ first. `edge quantize` reads it, and refuses it once the run's
train split no longer holds every item (run this again); when it is missing, quantize draws one.
"""

from __future__ import annotations

import argparse
from typing import Any

from calibration.sets import DEFAULT_SIZE, build_calibration_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument(
        "--data",
        default=None,
        help="the training data ('fashion-mnist' or an ImageFolder tree; default: the run's, from splits.json)",
    )
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"images to draw (default {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified draw (default 0)")
    parser.add_argument("--out", help="output .npy (default RUN/calibration/calibration.npy)")


def run(args: argparse.Namespace) -> int:
    from edge.console import make_console

    calib = build_calibration_set(args.run, args.data, size=args.size, seed=args.seed, out=args.out)
    make_console().print(calibration_table(calib))
    return 0


def calibration_table(calib: Any) -> Any:
    """What the calibration set holds: images, split, seed, classes and its content hash."""
    from edge.console import make_table

    table = make_table("images", "requested", "split", "seed", "classes", "content hash", title=f"calibration set {calib.path}")
    counts = calib.provenance["class_counts"]
    table.add_row(
        str(len(calib)),
        str(calib.provenance["requested"]),
        calib.provenance["split"],
        str(calib.provenance["seed"]),
        f"{len(counts)} ({min(counts.values())}-{max(counts.values())} each)" if counts else "-",
        calib.content_hash[:16],
    )
    return table
