"""What trains, and how fast: the optimizer's parameter groups, the learning-rate schedule, and which
layer groups are unfrozen in each epoch.

``feature-extract`` trains the head only; ``finetune`` trains everything, the backbone at
``lr * backbone_lr_scale``; ``gradual`` unfreezes one layer group from the top every
``unfreeze_every`` epochs, each deeper group at half the learning rate of the one above it. The
schedule is a linear warmup over ``warmup_epochs``, then a cosine decay to zero at the last step.
Frozen layers keep their BatchNorm statistics (eval mode).
"""

from __future__ import annotations

import math
from typing import Any

from edge.errors import require
from train.config import TrainConfig

# Each layer group below the top one trains at this fraction of the learning rate of the group above.
GRADUAL_LR_DECAY = 0.5


def build_optimizer(model: Any, head: list[str], groups: list[list[str]], config: TrainConfig) -> Any:
    """AdamW (or SGD with Nesterov momentum) with one learning rate per layer group, as ``config.mode`` says."""
    torch = require("torch", "train", "Training")
    named = dict(model.named_parameters())
    scaled: list[tuple[list[str], float]] = [(head, 1.0)]
    if config.mode != "feature-extract":
        depth = len(groups)
        for index, names in enumerate(groups):
            from_top = depth - index  # 1 = the group just below the head
            decay = GRADUAL_LR_DECAY ** (from_top - 1) if config.mode == "gradual" else 1.0
            scaled.append((names, config.backbone_lr_scale * decay))
    param_groups = []
    for names, scale in scaled:
        # Biases and normalization weights take no weight decay (the usual AdamW recipe).
        plain = [named[n] for n in names if named[n].ndim > 1]
        flat = [named[n] for n in names if named[n].ndim <= 1]
        for params, decay_value in ((plain, config.weight_decay), (flat, 0.0)):
            if params:
                param_groups.append({"params": params, "lr": config.lr * scale, "weight_decay": decay_value})
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(param_groups, lr=config.lr)


def build_scheduler(optimizer: Any, steps_per_epoch: int, config: TrainConfig) -> Any:
    """Linear warmup, then cosine decay, stepped once per optimizer step."""
    torch = require("torch", "train", "Training")
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(config.warmup_epochs * steps_per_epoch)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def trainable_group_count(config: TrainConfig, total: int, epoch: int) -> int:
    """How many layer groups (from the top) train in ``epoch`` (0-based); the head always does."""
    return {"feature-extract": 0, "finetune": total}.get(config.mode, min(total, epoch // config.unfreeze_every))


def set_trainable(model: Any, head: list[str], groups: list[list[str]], count: int) -> None:
    """Let the head and the top ``count`` layer groups train; freeze the rest."""
    trainable = set(head)
    for names in groups[len(groups) - count :]:
        trainable.update(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)


def train_mode_keeping_frozen_norms(model: Any) -> None:
    """Train mode, except normalization layers whose parameters are all frozen."""
    torch = require("torch", "train", "Training")
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and params and not any(p.requires_grad for p in params):
            module.eval()
