"""Fine-tune a pretrained model on your images (transfer learning) into a deployable checkpoint.

Writes RUN/checkpoint.pt (best validation top-1; what export, quantize and bench read), RUN/last.pt
(resumable: --resume), metrics.csv/json, curves.png and confusion.png. Explicit flags beat the
--preset, which beats the defaults. Ctrl-C writes a resumable checkpoint and exits. A validation
split under 200 images (or 20 of some class) is named in a warning and in summary.json
(``small_sets``): the best checkpoint and later choices made on it rest on noise. Training into a
run that already holds a training (without --resume) first moves it, and every artifact made from
it, to RUN/history/<UTC time>/ and says so in one line.

Examples:
  edge train --out runs/demo --preset demo
  edge train --out runs/mine --data photos/ --model resnet18 --mode gradual --epochs 12
  edge train --out runs/tiny --data fashion-mnist --train-limit 1000 --val-limit 200 --image-size 32 --epochs 1
  torchrun --nproc_per_node=2 -m edge.cli train --out runs/ddp --data fashion-mnist ...
"""

from __future__ import annotations

import argparse

from edge.tracking import add_tracking_arguments, track_stage
from train.config import AUGMENTS, MODES, OPTIMIZERS, PRESETS, TrainConfig

_DEFAULTS = TrainConfig()


def _default(name: str) -> str:
    return f"(default: {getattr(_DEFAULTS, name)})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Every default is None here: a value the user did not give can come from the preset.
    add = parser.add_argument
    add("--out", metavar="RUN", help="run directory to write (required unless the preset names one)")
    add("--data", help=f"'fashion-mnist' or an ImageFolder directory {_default('data')}")
    add("--model", help=f"zoo model name {_default('model')}")
    add("--weights", metavar="PATH", help="local state dict to start from instead of the pretrained weights")
    add(
        "--preset",
        choices=sorted(PRESETS),
        help="embedded recipe (demo: Lite0 on Fashion-MNIST in about 4 minutes on 2 CPU cores)",
    )
    _add_transfer_learning(parser.add_argument_group("transfer learning"))
    _add_optimization(parser.add_argument_group("optimization"))
    _add_data(parser.add_argument_group("data"))
    _add_speed_and_memory(parser.add_argument_group("speed and memory"))
    _add_runs(parser.add_argument_group("runs"))
    add_tracking_arguments(parser, models=True)


def _add_transfer_learning(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--mode", choices=MODES, help=f"what trains {_default('mode')}")
    group.add_argument(
        "--unfreeze-every",
        type=int,
        metavar="N",
        help=f"gradual: unfreeze one more layer group every N epochs {_default('unfreeze_every')}",
    )
    group.add_argument(
        "--backbone-lr-scale", type=float, metavar="S", help=f"backbone learning rate = lr * S {_default('backbone_lr_scale')}"
    )
    group.add_argument("--drop-rate", type=float, help=f"dropout before the new head {_default('drop_rate')}")


def _add_optimization(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--epochs", type=int, help=f"{_default('epochs')}")
    group.add_argument("--batch-size", type=int, help=f"global batch size, split over processes {_default('batch_size')}")
    group.add_argument("--lr", type=float, help=f"head learning rate {_default('lr')}")
    group.add_argument("--optimizer", choices=OPTIMIZERS, help=f"{_default('optimizer')}")
    group.add_argument("--weight-decay", type=float, help=f"{_default('weight_decay')}")
    group.add_argument("--warmup-epochs", type=float, help=f"linear warmup before the cosine decay {_default('warmup_epochs')}")
    group.add_argument("--label-smoothing", type=float, help=f"{_default('label_smoothing')}")
    group.add_argument("--patience", type=int, help=f"early stopping: epochs without validation gain {_default('patience')}")
    group.add_argument(
        "--min-delta", type=float, help=f"early stopping: smallest gain that counts, in top-1 points {_default('min_delta')}"
    )


def _add_data(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--augment", choices=AUGMENTS, help=f"augmentation preset {_default('augment')}")
    group.add_argument("--image-size", type=int, metavar="PX", help="network input size (default: the model's own)")
    group.add_argument("--train-limit", type=int, metavar="N", help="seeded stratified subset of N training images")
    group.add_argument("--val-limit", type=int, metavar="N", help="seeded stratified subset of N validation images")
    group.add_argument(
        "--test-limit",
        type=int,
        metavar="N",
        help=f"stratified test subset evaluated with the best checkpoint at the end; 0 skips {_default('test_limit')}",
    )
    group.add_argument("--workers", type=int, help=f"DataLoader worker processes {_default('workers')}")


def _add_speed_and_memory(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--amp", action="store_true", default=None, help="mixed precision (fp16 + GradScaler on CUDA, bf16 on CPU)"
    )
    group.add_argument("--grad-checkpointing", action="store_true", default=None, help="trade compute for memory (timm models)")
    group.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory format")


def _add_runs(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--seed", type=int, help=f"makes a run repeatable {_default('seed')}")
    group.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue RUN/last.pt exactly (optimizer, schedule, RNG); without it, a run's previous training and "
        "everything made from it move to RUN/history/<time>/ first",
    )


def explicit_options(args: argparse.Namespace) -> dict[str, object]:
    """The training options the user gave (None for the rest)."""
    names = [f for f in TrainConfig.__dataclass_fields__]
    return {name: getattr(args, name, None) for name in names}


def run(args: argparse.Namespace) -> int:
    from train.config import resolve_config, resume_config
    from train.loop import train

    explicit = explicit_options(args)
    if explicit.get("out") is None and explicit.get("preset") is not None:
        explicit["out"] = PRESETS[explicit["preset"]].get("out")
    config = resume_config(explicit) if explicit.get("resume") else resolve_config(explicit)
    train(config)
    track_stage(args, "train", config.out)
    return 0
