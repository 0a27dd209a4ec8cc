"""Training throughput: the real loop against a bare timm forward/backward loop on the same tensors.

The loop's figure includes the whole data path (uint8 images -> augmentation -> batches), the
micro-batching and the schedule; the bare loop runs the same model and optimizer on batches that
are already tensors. Their ratio shows whether the data pipeline is the bottleneck. Rounds
alternate between the two so that a noisy, shared CPU hits both alike; medians are printed.

    python -m train.throughput_benchmark --image-size 64 --modes feature-extract finetune
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from typing import Any


def _loop_round(trainer: Any, batches: Any, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        trainer.train_step(images, labels, len(labels))
    return steps * trainer.config.batch_size / (time.perf_counter() - started)


def _bare_round(torch: Any, model: Any, optimizer: Any, tensors: list[tuple[Any, Any]], channels_last: bool) -> float:
    started = time.perf_counter()
    for images, labels in tensors:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
    return sum(len(labels) for _, labels in tensors) / (time.perf_counter() - started)


def measure(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median images/s of the training loop and of the bare loop for one mode."""
    import copy

    import torch

    from train.config import TrainConfig
    from train.distributed import Distributed
    from train.loop import Trainer

    total_steps = (args.warmup + args.steps) * args.rounds
    config = TrainConfig(
        out=tempfile.mkdtemp(prefix="edge-throughput-"),
        data="fashion-mnist",
        model=args.model,
        mode=mode,
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=1,
        train_limit=total_steps * args.batch_size,
        val_limit=10,
        test_limit=0,
        augment=args.augment,
        workers=args.workers,
        channels_last=args.channels_last,
    )
    trainer = Trainer(config, Distributed(), None)
    trainer.prepare()
    trainer.begin_epoch()  # epoch 0, step 0
    loader = torch.utils.data.DataLoader(trainer.train_dataset, batch_sampler=trainer.sampler, num_workers=args.workers)
    batches = iter(loader)

    bare_model = copy.deepcopy(trainer.model)
    bare_model.train()
    for module, original in zip(bare_model.modules(), trainer.model.modules()):
        module.training = original.training  # the same frozen BatchNorm layers
    bare_optimizer = torch.optim.AdamW([p for p in bare_model.parameters() if p.requires_grad], lr=config.lr)
    tensors = [next(iter(torch.utils.data.DataLoader(trainer.train_dataset, batch_sampler=trainer.sampler)))]
    tensors = tensors * args.steps

    loop, bare = [], []
    for _ in range(args.rounds):
        _loop_round(trainer, batches, args.warmup)
        loop.append(_loop_round(trainer, batches, args.steps))
        _bare_round(torch, bare_model, bare_optimizer, tensors[: args.warmup], args.channels_last)
        bare.append(_bare_round(torch, bare_model, bare_optimizer, tensors, args.channels_last))
    return {"mode": mode, "loop": statistics.median(loop), "bare": statistics.median(bare), "rounds": (loop, bare)}


def main(argv: list[str] | None = None) -> int:
    from edge.console import make_console, make_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--modes", nargs="+", default=["feature-extract", "finetune"])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augment", default="standard", choices=("standard", "light", "none"))
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    rows = [measure(mode, args) for mode in args.modes]
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = make_table(
        "mode",
        "training loop img/s",
        "bare timm loop img/s",
        "loop / bare",
        "rounds (loop | bare)",
        title=f"Training throughput: {args.model}, {args.image_size} px, batch {args.batch_size}, "
        f"augment {args.augment}, {torch.get_num_threads()} threads (median of {args.rounds} rounds)",
        justify="right",
    )
    for row in rows:
        rounds = " ".join(f"{v:.0f}" for v in row["rounds"][0]) + " | " + " ".join(f"{v:.0f}" for v in row["rounds"][1])
        table.add_row(row["mode"], f"{row['loop']:.1f}", f"{row['bare']:.1f}", f"{row['loop'] / row['bare']:.2f}", rounds)
    console = make_console()
    console.print(table)
    console.print(f"peak RSS of this process: {peak_rss_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
