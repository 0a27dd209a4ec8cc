"""Quantization-aware fine-tuning (QAT) of a run's checkpoint, for `edge quantize --qat`.

The recipe is the published one (NVIDIA's pytorch-quantization / Model Optimizer QAT guides):
start from the trained checkpoint, calibrate fake quantizers on the run's calibration set
(mean-minmax, the range method auto chose most often on the hard models: the calibration ranges
are the start), then fine-tune on the pinned train split, with the run's
own augmentation, batch size and optimizer, for about 10% of the original epochs (at least one, or
``steps`` optimizer steps) at 1% of the original learning rate with a cosine decay to zero.

The fake quantization is NVIDIA Model Optimizer's (``modelopt.torch.quantization``, the
``nvidia-modelopt`` package): int8 per-channel symmetric weights (7-bit where the cpu target uses
reduced-range weights) and int8 per-tensor inputs of every Conv/Linear, with straight-through
gradients. Its amax are buffers fixed at calibration, not learned; BatchNorm statistics stay frozen
(eval mode), so the per-channel weight grid the fine-tune sees is the one the BatchNorm-folded ONNX
model gets. The result is a float model (the quantizers removed) whose weights have learned to sit
well on the int8 grid; ``edge.quantize`` exports it and writes the QDQ model for the target with its
own writer, which Model Optimizer's ONNX export cannot do for target cpu (asymmetric uint8
activations with zero points).

What the fine-tune fits (``loss``): by default (``distill``) the original float model's own outputs,
the KL divergence of the fake-quantized student's softmax from the frozen float teacher's (Model
Optimizer's ``LogitsDistillationLoss``, temperature 1). Acceptance measures agreement with that
float model, and the labels pull an under-fit model's near-ties both ways: on such a model QAT on
the labels raised top-1 but lowered agreement (docs/quantize.md#qat). ``labels`` is the
cross-entropy on the labels (with the run's label smoothing), the recipe's original form.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require
from edge.spec import PreprocessSpec
from train.augment import EpochBatches, TrainDataset
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.config import TrainConfig
from train.models import head_parameter_names, layer_groups
from train.schedule import build_optimizer, build_scheduler
from train.splits import run_data

log = logging.getLogger(__name__)

EPOCH_FRACTION = 0.1  # of the original training's epochs
LR_FRACTION = 0.01  # of the original training's learning rate
CALIBRATION_BATCH = 32
START_METHOD = "mean-minmax"  # the fake quantizers' starting activation ranges (start_from_mean_minmax)
LIBRARY = "nvidia-modelopt"
LOSSES = ("distill", "labels")
DISTILL_TEMPERATURE = 1.0


@dataclass
class QatResult:
    """The fine-tuned float model (quantizers removed, eval mode), its spec and checkpoint payload,
    and the recipe as the manifest records it."""

    model: Any
    spec: PreprocessSpec
    payload: dict[str, Any]
    recipe: dict[str, Any]


def qat_epochs(original_epochs: int) -> int:
    """About 10% of the original epochs, at least one."""
    return max(1, round(EPOCH_FRACTION * original_epochs))


def fine_tune(
    run: Path,
    calibration: np.ndarray,
    weight_bits: int = 8,
    steps: int | None = None,
    data: str | None = None,
    start_ranges: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    loss: str = "distill",
) -> QatResult:
    """Fine-tune RUN/checkpoint.pt with fake quantization (the module docstring's recipe).

    ``calibration``: the preprocessed calibration images (NCHW float32) that set the starting
    ranges; ``weight_bits``: 8, or 7 for reduced-range weights; ``steps``: optimizer steps instead
    of the recipe's epochs; ``data``: the run's data (None: as pinned); ``start_ranges``: what the
    manifest says about the calibration set; ``progress(done, total)`` after each step; ``loss``:
    what the fine-tune fits (``LOSSES``, the module docstring).
    """
    torch = require("torch", "train", "Quantization-aware training")
    mtq = _modelopt()
    if steps is not None and steps < 1:
        raise UserError(f"--qat-steps must be at least 1, got {steps}")
    if loss not in LOSSES:
        raise UserError(f"unknown QAT loss {loss!r}: use {' or '.join(LOSSES)}")
    started = time.perf_counter()
    payload = load_checkpoint(run / "checkpoint.pt")
    config = TrainConfig.from_dict(payload.get("config") or {})
    model, spec = model_from_checkpoint(payload)
    limit = config.train_limit
    if steps is not None:  # a stated number of steps sees no more images than it trains on
        limit = min(limit or steps * config.batch_size, steps * config.batch_size)
    split = run_data(run, data).split("train", limit, config.seed)
    sampler = EpochBatches(len(split), config.batch_size, config.seed)
    per_epoch = sampler.steps_per_epoch()
    if per_epoch == 0:
        raise UserError(f"the train split has {len(split)} images, fewer than one batch of {config.batch_size}")
    epochs = qat_epochs(config.epochs)
    total = steps if steps is not None else epochs * per_epoch
    torch.manual_seed(config.seed)

    head, groups = head_parameter_names(model), layer_groups(model)  # before the quantizers go in
    teacher = _frozen_teacher(torch, model) if loss == "distill" else None
    _insert_quantizers(mtq, model, _quant_config(mtq, weight_bits), calibration)
    started_from = start_from_mean_minmax(torch, model, calibration)
    # QAT trains every layer whatever the original mode: every layer's weights are quantized.
    qat_config = dataclasses.replace(config, lr=config.lr * LR_FRACTION, mode="finetune", epochs=1, warmup_epochs=0.0)
    optimizer = build_optimizer(model, head, groups, qat_config)
    scheduler = build_scheduler(optimizer, total, qat_config)  # cosine to zero over ``total`` steps
    criterion = _criterion(torch, teacher, config.label_smoothing)
    loader = torch.utils.data.DataLoader(
        TrainDataset(split, spec, config.augment, config.seed), batch_sampler=sampler, num_workers=config.workers
    )
    _train_mode_frozen_norms(torch, model)
    losses: list[float] = []
    done, epoch = 0, 0
    while done < total:
        sampler.set_epoch(epoch)
        for images, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            value = criterion(model(images), images, labels)
            value.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(value.detach()))
            done += 1
            if progress is not None:
                progress(done, total)
            if done == total:
                break
        epoch += 1
    seconds = time.perf_counter() - started
    window = max(1, min(len(losses) // 4, 50))
    recipe = {
        "library": LIBRARY,
        "version": _version(),
        "torch": torch.__version__,
        "fake_quant": {
            "weights": f"int{weight_bits} per-channel symmetric (max)"
            if weight_bits == 8
            else f"{weight_bits}-bit per-channel symmetric (max)",
            "activations": "int8 per-tensor symmetric on Conv/Linear inputs, amax from calibration (mean-minmax), frozen",
            "batchnorm": "statistics frozen (eval mode)",
        },
        "start_ranges": {
            "method": START_METHOD,
            **(start_ranges or {}),
            "images": int(len(calibration)),
            "quantizers": started_from,
        },
        "original_epochs": config.epochs,
        "epochs": round(total / per_epoch, 4),
        "recipe_epochs": epochs,
        "steps": total,
        "steps_given": steps is not None,
        "steps_per_epoch": per_epoch,
        "batch_size": config.batch_size,
        "images": total * config.batch_size,
        "train_images": len(split),
        "train_split": split.name,
        "original_lr": config.lr,
        "lr": qat_config.lr,
        "lr_fraction": LR_FRACTION,
        "backbone_lr_scale": config.backbone_lr_scale,
        "schedule": "cosine to 0, no warmup",
        "optimizer": config.optimizer,
        "augment": config.augment,
        "loss": _loss_text(loss, config.label_smoothing),
        "label_smoothing": config.label_smoothing if loss == "labels" else None,
        "loss_first": round(float(np.mean(losses[:window])), 4),
        "loss_last": round(float(np.mean(losses[-window:])), 4),
        "seconds": round(seconds, 1),
    }
    log.info(
        "QAT: %d steps (%.2f epochs of %d images) at lr %.3g, loss %.3f -> %.3f in %.0f s",
        total,
        recipe["epochs"],
        len(split),
        qat_config.lr,
        recipe["loss_first"],
        recipe["loss_last"],
        seconds,
    )
    return QatResult(_float_copy(payload, model), spec, payload, recipe)


def _frozen_teacher(torch: Any, model: Any) -> Any:
    """A copy of the float model as trained (eval mode, no gradients): what distillation fits."""
    teacher = copy.deepcopy(model).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def _criterion(torch: Any, teacher: Any | None, label_smoothing: float) -> Callable[[Any, Any, Any], Any]:
    """``criterion(student_logits, images, labels)``: the distillation loss against the teacher's
    logits on the same images (Model Optimizer's), or cross-entropy on the labels."""
    if teacher is None:
        cross_entropy = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        return lambda logits, images, labels: cross_entropy(logits, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from modelopt.torch.distill import LogitsDistillationLoss
    distill = LogitsDistillationLoss(temperature=DISTILL_TEMPERATURE, reduction="batchmean")

    def distillation(logits: Any, images: Any, labels: Any) -> Any:
        with torch.no_grad():
            target = teacher(images)
        return distill(logits, target)

    return distillation


def _loss_text(loss: str, label_smoothing: float) -> str:
    if loss == "distill":
        return f"distill: KL(float teacher || fake-quant student), temperature {DISTILL_TEMPERATURE:g} (modelopt LogitsDistillationLoss)"
    return f"labels: cross-entropy, label smoothing {label_smoothing:g}"


def _modelopt() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return require("modelopt.torch.quantization", "qat", "Quantization-aware training (--qat)")


def _version() -> str:
    import modelopt

    return str(modelopt.__version__)


def _quant_config(mtq: Any, weight_bits: int) -> dict[str, Any]:
    """Model Optimizer's INT8 recipe (per-channel weights, per-tensor inputs, max calibration) with
    ``weight_bits`` bits for the weights."""
    config = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    for entry in config["quant_cfg"]:
        if entry.get("quantizer_name") == "*weight_quantizer":
            entry["cfg"]["num_bits"] = weight_bits
    return config


def _insert_quantizers(mtq: Any, model: Any, config: dict[str, Any], calibration: np.ndarray) -> None:
    """Fake quantizers into ``model``, calibrated (max) on the calibration images (the input ranges
    then replaced by :func:`start_from_mean_minmax`)."""
    torch = require("torch", "train", "Quantization-aware training")

    def forward_loop(net: Any) -> None:
        with torch.no_grad():
            for start in range(0, len(calibration), CALIBRATION_BATCH):
                net(torch.from_numpy(np.ascontiguousarray(calibration[start : start + CALIBRATION_BATCH], dtype=np.float32)))

    model.eval()
    # Model Optimizer prints its quantizer count and warns about optional packages: keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mtq.quantize(model, config, forward_loop=forward_loop)


def start_from_mean_minmax(torch: Any, model: Any, calibration: np.ndarray) -> int:
    """Set every enabled input quantizer's amax to the mean-minmax range of what it reads on the
    calibration images (``edge.quantize.ranges``: each image's min and max averaged over the images,
    the larger magnitude of the two), measured with every quantizer off; returns how many were set.

    Model Optimizer calibrates max; the search that writes the QAT model's file chooses among
    auto's methods, and mean-minmax is the one it chose most often on the hard models (6 of 12
    files): QAT then trains with the ranges the file is most likely to get."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    quantizers = [
        (name, module) for name, module in model.named_modules() if isinstance(module, TensorQuantizer) and module.is_enabled
    ]
    inputs = {name: module for name, module in quantizers if name.endswith("input_quantizer")}
    sums: dict[str, list[float]] = {}

    def observe(name: str) -> Callable[[Any, Any], None]:
        def hook(_module: Any, args: Any) -> None:
            rows = args[0].detach().reshape(args[0].shape[0], -1)
            entry = sums.setdefault(name, [0.0, 0.0, 0])
            entry[0] += float(rows.amin(dim=1).double().sum())
            entry[1] += float(rows.amax(dim=1).double().sum())
            entry[2] += rows.shape[0]

        return hook

    hooks = [module.register_forward_pre_hook(observe(name)) for name, module in inputs.items()]
    for _, module in quantizers:
        module.disable()
    try:
        with torch.no_grad():
            model.eval()
            for start in range(0, len(calibration), CALIBRATION_BATCH):
                model(torch.from_numpy(np.ascontiguousarray(calibration[start : start + CALIBRATION_BATCH], dtype=np.float32)))
    finally:
        for handle in hooks:
            handle.remove()
        for _, module in quantizers:
            module.enable()
    started = 0
    for name, (low, high, count) in sums.items():
        bound = max(abs(low), abs(high)) / count
        if bound > 0:  # a quantizer that only ever read zeros keeps its calibrated amax
            inputs[name].amax = torch.tensor(bound, dtype=torch.float32)
            started += 1
    return started


def _train_mode_frozen_norms(torch: Any, model: Any) -> None:
    """Train mode (dropout on), BatchNorm in eval mode: its statistics stay the trained ones."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _float_copy(payload: dict[str, Any], model: Any) -> Any:
    """The checkpoint's own architecture with the fine-tuned weights, no quantizer left (eval mode)."""
    fresh, _ = model_from_checkpoint(payload)
    state = {k: v for k, v in model.state_dict().items() if "_quantizer" not in k}
    fresh.load_state_dict(state)
    return fresh.eval()
