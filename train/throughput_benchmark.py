"""Training throughput: the real loop against a bare timm forward/backward loop on the same tensors.

The loop's figure includes the whole data path (uint8 images -> augmentation -> batches), the
micro-batching and the schedule; the bare loop runs the same model and optimizer on batches that
are already tensors. Their ratio shows whether the data pipeline is the bottleneck. Rounds
alternate between the two, the order reversing every other round (``edge.measure.timing``), so that
a noisy, shared CPU hits both alike; medians are printed.

    python -m train.throughput_benchmark --image-size 64 --modes feature-extract finetune
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
from typing import Any

from edge.measure.timing import TimingWindow, round_order, timed_loop


def _loop_step(trainer: Any, batches: Any) -> None:
    images, labels = next(batches)
    trainer.train_step(images, labels, len(labels))


def _bare_step(torch: Any, model: Any, optimizer: Any, batch: tuple[Any, Any], channels_last: bool) -> None:
    images, labels = batch
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()


def measure(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median images/s of the training loop and of the bare loop for one mode."""
    import copy

    import torch

    from train.config import TrainConfig
    from train.distributed import Distributed
    from train.loop import Trainer

    total_steps = (args.warmup + args.steps + 1) * args.rounds  # timed_loop's warm-up call included
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

    steps = {
        "loop": lambda i: _loop_step(trainer, batches),
        "bare": lambda i: _bare_step(torch, bare_model, bare_optimizer, tensors[i % len(tensors)], args.channels_last),
    }
    window = TimingWindow(warmup_s=0.0, min_iters=args.steps, min_seconds=0.0, max_seconds=3600.0)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(args.rounds):  # the two loops stepped in turn, the order alternating
        for name in round_order(list(steps), round_index):
            for _ in range(args.warmup):
                steps[name](0)
            samples, wall, _ = timed_loop(steps[name], window, 0.0)
            rates[name].append(len(samples) * config.batch_size / wall)
    loop, bare = rates["loop"], rates["bare"]
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
