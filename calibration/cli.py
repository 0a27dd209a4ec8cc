"""Draw and cache a calibration set from the training split.

    edge calibrate RUN --data DATA [--size 512] [--seed 0]

A seeded, stratified draw from the training split (never the test split), preprocessed with the
run's spec, stored as RUN/calibration/calibration.npy with its manifest (items and a content hash).
`edge quantize` reads it; when it is missing, quantize draws one itself.
"""

from __future__ import annotations

import argparse

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
    from rich.console import Console
    from rich.table import Table

    calib = build_calibration_set(args.run, args.data, size=args.size, seed=args.seed, out=args.out)
    table = Table(title=f"calibration set {calib.path}")
    for column in ("images", "requested", "split", "seed", "classes", "content hash"):
        table.add_column(column)
    counts = calib.provenance["class_counts"]
    table.add_row(
        str(len(calib)),
        str(calib.provenance["requested"]),
        calib.provenance["split"],
        str(calib.provenance["seed"]),
        f"{len(counts)} ({min(counts.values())}-{max(counts.values())} each)" if counts else "-",
        calib.content_hash[:16],
    )
    Console().print(table)
    return 0
