"""Evaluation during training: loss, top-1, top-5 and the confusion matrix on a split.

Images go through ``spec.apply`` (:class:`train.augment.EvalDataset`), the same preprocessing as every
deployed artifact, so the validation top-1 that chooses the best epoch is what export and bench see.
Under DDP each rank evaluates every ``world``-th image and the sums are all-reduced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import require
from edge.spec import PreprocessSpec
from train.augment import EvalDataset
from train.config import TrainConfig
from train.data import ImageSplit
from train.distributed import Distributed


def evaluate_split(
    model: Any, split: ImageSplit, spec: PreprocessSpec, config: TrainConfig, dist: Distributed, autocast_dtype: Any
) -> dict[str, Any]:
    """Loss, top-1, top-5 (percent) and confusion matrix on ``split`` through ``spec.apply``."""
    torch = require("torch", "train", "Training")
    indices = list(range(dist.rank, len(split), dist.world))
    dataset = torch.utils.data.Subset(EvalDataset(split, spec), indices)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size * 2,
        num_workers=config.workers,
        pin_memory=dist.device.startswith("cuda"),
        generator=torch.Generator().manual_seed(config.seed),
    )
    classes = spec.num_classes
    confusion = torch.zeros(classes * classes, dtype=torch.float64)
    loss_sum = top5 = 0.0
    model.eval()
    with torch.inference_mode():
        for images, labels in loader:
            images, labels = images.to(dist.device), labels.to(dist.device)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dist.device.split(":")[0], dtype=autocast_dtype, enabled=config.amp):
                logits = model(images)
            logits = logits.float()
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            k = min(5, classes)
            top5 += float((logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum())
            pairs = labels.cpu() * classes + logits.argmax(1).cpu()
            confusion += torch.bincount(pairs, minlength=classes * classes).double()
    totals = torch.tensor([loss_sum, top5], dtype=torch.float64)
    if dist.world > 1:
        torch.distributed.all_reduce(totals)
        torch.distributed.all_reduce(confusion)
    matrix = confusion.view(classes, classes).numpy()
    count = max(1.0, matrix.sum())
    return {
        "loss": float(totals[0]) / count,
        "top1": 100.0 * float(np.trace(matrix)) / count,
        "top5": 100.0 * float(totals[1]) / count,
        "images": int(matrix.sum()),
        "confusion": matrix.astype(np.int64),
    }
