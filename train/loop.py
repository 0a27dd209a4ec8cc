"""The training loop: transfer learning that ends in a deployable checkpoint.

``train(config)`` reads the data (``train.data``), builds the pretrained model with a new head
(``train.models``), trains it in one of three modes and writes, into the run directory:

- ``checkpoint.pt`` — the best epoch by validation top-1 (what export, quantize and bench read)
- ``last.pt``       — the latest state with optimizer, scheduler, scaler and RNG, for ``--resume``
- ``metrics.csv`` / ``metrics.json``, ``curves.png``, ``confusion.png``, ``summary.json``

Training a run that already holds these (without ``--resume``) first moves them, and every artifact
made from the previous checkpoint (ONNX and INT8 models, the calibration set, engines, bench
reports), to ``RUN/history/<UTC time>/`` and says so in one line (``edge.history``).

Each epoch trains on the global batches in micro-batches (halved on CUDA out-of-memory), evaluates
on the validation split, keeps the best epoch and stops early after ``patience`` epochs without a
gain. The parts it uses: what trains and how fast (``train.schedule``), evaluation
(``train.evaluate``), the two checkpoints and ``--resume`` (``train.run_checkpoints``), the files and
the terminal (``train.report``), and the torchrun job (``train.distributed``).

Under ``torchrun`` the same loop runs with DistributedDataParallel; every rank sees its share of
the same global batches as a single process would, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_write_json
from edge.errors import UserError, require
from edge.history import retire_previous_training
from edge.manifest import update_metrics
from edge.run import TRAIN_CONFUSION, TRAIN_CURVES, TRAIN_SUMMARY, RunDir
from edge.spec import PreprocessSpec
from train.augment import EpochBatches, TrainDataset
from train.checkpoint import load_checkpoint
from train.config import TrainConfig, validate_config
from train.data import ImageSplit, open_data
from train.distributed import Distributed, setup_distributed
from train.evaluate import evaluate_split
from train.models import build_model, head_parameter_names, layer_groups, patch_size, pretrained_spec
from train.report import (
    diagnose,
    epoch_line,
    history_table,
    plot_confusion,
    plot_curves,
    run_table,
    training_progress,
    write_metrics,
)
from train.run_checkpoints import (
    BEST,
    LAST,
    SUM_KEYS,
    check_resume_data,
    fresh_sums,
    read_resume,
    restore_rng,
    restored_sums,
    rng_state,
    save_run_checkpoint,
)
from train.schedule import (
    build_optimizer,
    build_scheduler,
    set_trainable,
    train_mode_keeping_frozen_norms,
    trainable_group_count,
)
from train.splits import pin_splits, small_split_warning

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run: Path
    checkpoint: Path
    last: Path
    best_epoch: int
    best_val_top1: float
    history: list[dict[str, Any]]
    test: dict[str, Any] | None
    stopped_early: bool
    diagnosis: list[str] = field(default_factory=list)


def train(config: TrainConfig, on_step: Callable[[Any, int, int], None] | None = None) -> TrainResult:
    """Run a whole training job as ``config`` says (``on_step(trainer, epoch, step)`` after each step)."""
    torch = require("torch", "train", "Training")
    validate_config(config)
    dist = setup_distributed(torch)
    try:
        trainer = Trainer(config, dist, on_step)
        return trainer.run()
    finally:
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def training_spec(arch: str, classes: tuple[str, ...], image_size: int | None, gray: bool) -> PreprocessSpec:
    """The backbone's own preprocessing with the data's labels at ``image_size``.

    Gray data (Fashion-MNIST) is replicated to three channels and resized whole: small images are
    not center-cropped.
    """
    spec = pretrained_spec(arch).replace(labels=list(classes))
    if gray:
        size = image_size or spec.input_size
        return spec.replace(color="gray", crop="resize", input_size=size, resize_size=size)
    return spec.with_input_size(image_size) if image_size else spec


def _is_gray(split: ImageSplit) -> bool:
    if split.source == "fashion-mnist":
        return True
    probe = [split.image(i) for i in range(min(8, len(split)))]
    return all(img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1) for img in probe)


class Trainer:
    """One training job; ``run()`` does the work. Attributes are public so tests can look inside.

    A measurement that drives the loop itself (``train.throughput_benchmark``) calls ``prepare()``,
    ``begin_epoch()`` and then ``train_step()`` per global batch.
    """

    def __init__(self, config: TrainConfig, dist: Distributed, on_step: Callable[[Any, int, int], None] | None) -> None:
        self.torch = require("torch", "train", "Training")
        self.config = config
        self.dist = dist
        self.on_step = on_step
        self.out = Path(config.out)
        self.stop_requested = False
        self.history: list[dict[str, Any]] = []
        self.best_top1 = -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.best_confusion: np.ndarray | None = None
        self.bad_epochs = 0
        self.epoch = 0
        self.start_step = 0
        self.epoch_sums = fresh_sums()

    # ---- set-up -------------------------------------------------------------------------
    def prepare(self) -> None:
        torch, config = self.torch, self.config
        _seed_everything(torch, config.seed)
        resume = read_resume(self.out) if config.resume else None

        data = open_data(config.data, seed=config.seed)
        self.data = data
        self.train_split = data.split("train", config.train_limit, config.seed)
        self.val_split = data.split("val", config.val_limit, config.seed)
        self.small_sets = [line for line in (self._small_val_warning(data),) if line is not None]
        if len(self.train_split) < self.dist.world:
            raise UserError(f"the training split has {len(self.train_split)} images, fewer than {self.dist.world} processes")
        self.data_fingerprint = hashlib.sha256(
            f"{self.train_split.fingerprint()}|{self.val_split.fingerprint()}".encode()
        ).hexdigest()[:16]
        self.spec = training_spec(config.model, data.classes, config.image_size, _is_gray(self.train_split))
        if resume is not None:
            check_resume_data(resume, data.classes, self.data_fingerprint)

        self.model_config: dict[str, Any] = {"drop_rate": config.drop_rate}
        if patch_size(config.model) is not None:  # a ViT is built at its input size (and rebuilt so from the checkpoint)
            self.model_config["image_size"] = self.spec.input_size
        model = build_model(
            config.model,
            num_classes=len(data.classes),
            pretrained=resume is None and config.weights is None,
            weights_path=config.weights if resume is None else None,
            **self.model_config,
        )
        if config.grad_checkpointing:
            if not hasattr(model, "set_grad_checkpointing"):
                raise UserError(f"--grad-checkpointing needs a timm model; {config.model} is a torchvision model")
            model.set_grad_checkpointing(True)
        self.model = model.to(self.dist.device)
        self.splits = self._pin_splits(data)  # after the weights loaded: a bad --weights leaves no run folder behind
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.groups = layer_groups(self.model)
        self.head = head_parameter_names(self.model)

        self.sampler = EpochBatches(len(self.train_split), config.batch_size, config.seed, self.dist.rank, self.dist.world)
        if self.sampler.steps_per_epoch() == 0:
            raise UserError(f"the training split has {len(self.train_split)} images: fewer than one batch per process")
        self.micro_batch = math.ceil(config.batch_size / self.dist.world)
        self.optimizer = build_optimizer(self.model, self.head, self.groups, config)
        self.scheduler = build_scheduler(self.optimizer, self.sampler.steps_per_epoch(), config)
        cuda = self.dist.device.startswith("cuda")
        self.autocast_dtype = torch.float16 if cuda else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp and cuda)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing, reduction="sum")
        self.train_dataset = TrainDataset(self.train_split, self.spec, config.augment, config.seed)
        self.trainable_groups = -1
        self.net: Any = self.model
        if resume is not None:
            self._restore(resume)

    def _small_val_warning(self, data: Any) -> str | None:
        """The warning for a validation split too small to choose on, with the fix that applies."""
        available = len(data.splits["val"])
        if len(self.val_split) < available:
            fix = f"raise --val-limit (the split holds {available} images)"
        else:
            fix = "add images to the training data (val is drawn from it)"
        return small_split_warning(self.val_split, fix)

    def set_trainable_for_epoch(self, epoch: int) -> None:
        """Freeze or unfreeze layer groups for ``epoch``; rewrap DDP when the set changes."""
        total = len(self.groups)
        count = trainable_group_count(self.config, total, epoch)
        if count == self.trainable_groups:
            return
        if self.trainable_groups >= 0:
            log.info("epoch %d: %d of %d layer groups trainable", epoch + 1, count, total)
        self.trainable_groups = count
        set_trainable(self.model, self.head, self.groups, count)
        if self.dist.world > 1:
            ddp = self.torch.nn.parallel.DistributedDataParallel
            self.net = ddp(self.model, device_ids=[self.dist.local_rank] if self.dist.device.startswith("cuda") else None)
        else:
            self.net = self.model

    def enter_train_mode(self) -> None:
        """Train mode, except normalization layers whose parameters are all frozen."""
        train_mode_keeping_frozen_norms(self.model)

    def _pin_splits(self, data: Any) -> dict[str, str]:
        """RUN/splits.json: which items are train, val and test, for every later stage. Only the main
        process writes it (and the manifests that name its fingerprints). A new training (not
        --resume) first moves the run's previous training and everything made from it to
        RUN/history/<time>/."""
        if not self.dist.is_main:
            return {}
        self.out.mkdir(parents=True, exist_ok=True)
        run = RunDir(self.out)
        if not self.config.resume:  # the first write of a new training: the previous one moves to history
            retire_previous_training(run)
        pinned = pin_splits(run, self.config.data, data, seed=self.config.seed)
        return {name: pinned.fingerprint(name) for name in ("train", "val", "test")}

    # ---- resume ---------------------------------------------------------------------------
    def _restore(self, payload: dict[str, Any]) -> None:
        torch = self.torch
        state = payload["training_state"]
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(payload["history"])
        self.epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.best_top1, self.best_epoch, self.bad_epochs = (
            float(state["best_top1"]),
            int(state["best_epoch"]),
            int(state["bad_epochs"]),
        )
        self.micro_batch = int(state["micro_batch"])
        self.epoch_sums = restored_sums(state["epoch_sums"])
        best_path = self.out / BEST
        if best_path.exists() and self.best_epoch > 0:
            self.best_state = load_checkpoint(best_path)["state_dict"]
        restore_rng(torch, state["rng"])
        log.info("resumed %s at epoch %d, step %d", self.out / LAST, self.epoch + 1, self.start_step)

    def training_state(self) -> dict[str, Any]:
        """Everything ``--resume`` needs to continue exactly where this process is now."""
        torch = self.torch
        return {
            "epoch": self.epoch,
            "step": self.start_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "micro_batch": self.micro_batch,
            "epoch_sums": dict(self.epoch_sums),
            "rng": rng_state(torch),
        }

    # ---- writing ------------------------------------------------------------------------
    def _save(self, name: str, resumable: bool = False) -> Path | None:
        if not self.dist.is_main:
            return None
        last = self.history[-1] if self.history else {}
        return save_run_checkpoint(
            self.out / name,
            self.model,
            self.spec,
            self.config,
            model_config=self.model_config,
            history=self.history,
            data_fingerprint=self.data_fingerprint,
            splits=self.splits,
            best_epoch=self.best_epoch,
            val_top1=self.best_top1 if name == BEST else last.get("val_top1"),
            val_images=len(self.val_split),
            training_state=self.training_state() if resumable else None,
        )

    def _write_reports(self) -> None:
        if not self.dist.is_main or not self.history:
            return
        write_metrics(self.out, self.history)
        plot_curves(self.out / TRAIN_CURVES, self.history, self.best_epoch or None, label_smoothing=self.config.label_smoothing)

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.prepare()
        config = self.config
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            log.info(
                "training %s (%s) on %s: %d train / %d val images, %d classes, %d px, %d layer groups, device %s x%d",
                config.model,
                config.mode,
                self.data.name,
                len(self.train_split),
                len(self.val_split),
                len(self.data.classes),
                self.spec.input_size,
                len(self.groups),
                self.dist.device,
                self.dist.world,
            )
            for line in self.small_sets:
                log.warning(line)
        stopped_early = False
        progress = training_progress(disable=not self.dist.is_main)
        with self._interrupt_handler(), progress:
            epochs_task = progress.add_task("epochs", total=config.epochs, completed=self.epoch, status="")
            while self.epoch < config.epochs:
                self._train_epoch(progress)
                self._end_epoch()
                progress.update(epochs_task, completed=self.epoch, status=f"best val top-1 {self.best_top1:.2f}%")
                if self.bad_epochs >= config.patience:
                    stopped_early = self.epoch < config.epochs
                    if stopped_early and self.dist.is_main:
                        log.info(
                            "early stop: no validation top-1 gain over %.3g points for %d epochs",
                            config.min_delta,
                            config.patience,
                        )
                    break
            self._check_stop()
        return self._finish(stopped_early)

    def begin_epoch(self) -> None:
        """Trainable layer groups, train mode and batch order for ``self.epoch`` from ``self.start_step``."""
        self.set_trainable_for_epoch(self.epoch)
        self.enter_train_mode()
        self.sampler.set_epoch(self.epoch, self.start_step)

    def _train_epoch(self, progress: Any) -> None:
        torch, config = self.torch, self.config
        self.begin_epoch()
        steps = self.sampler.steps_per_epoch()
        batches = self.sampler.global_batches(self.epoch)
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.sampler,
            num_workers=config.workers,
            pin_memory=self.dist.device.startswith("cuda"),
            generator=torch.Generator().manual_seed(config.seed),
            persistent_workers=False,
        )
        task = progress.add_task(f"epoch {self.epoch + 1}/{config.epochs}", total=steps, completed=self.start_step, status="")
        started = time.perf_counter() - self.epoch_sums["seconds"]
        batch_iter = iter(loader)
        for step in range(self.start_step, steps):
            try:
                images, labels = next(batch_iter)
            except RuntimeError:
                if self.stop_requested:  # a DataLoader worker took the Ctrl-C
                    break
                raise
            loss_sum, correct, plain_sum = self.train_step(images, labels, len(batches[step]))
            sums = self.epoch_sums
            sums["loss"] += loss_sum
            sums["plain_loss"] += plain_sum
            sums["correct"] += correct
            sums["seen"] += len(labels)
            sums["seconds"] = time.perf_counter() - started
            self.start_step = step + 1
            seen_all = sums["seen"] * self.dist.world
            progress.update(
                task,
                completed=step + 1,
                status=f"loss {sums['loss'] / max(1, sums['seen']):.4f}  {seen_all / max(sums['seconds'], 1e-9):.0f} img/s",
            )
            if self.on_step is not None:
                self.on_step(self, self.epoch, step)
            self._check_stop()
        progress.remove_task(task)

    def train_step(self, images: Any, labels: Any, global_size: int) -> tuple[float, int, float]:
        """One optimizer step on a global batch, in micro-batches (halved on CUDA out-of-memory), then
        one step of the learning-rate schedule. Returns this rank's loss sum (the criterion's, label
        smoothing included), correct count and plain cross-entropy sum (comparable with the val loss)."""
        cross_entropy = self.torch.nn.functional.cross_entropy
        torch, config = self.torch, self.config
        images = images.to(self.dist.device, non_blocking=True)
        labels = labels.to(self.dist.device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        weight = self.dist.world / global_size  # DDP averages over ranks: this makes it the global-batch mean
        while True:
            self.optimizer.zero_grad(set_to_none=True)
            try:
                loss_sum, correct, plain_sum = 0.0, 0, 0.0
                chunks = list(zip(images.split(self.micro_batch), labels.split(self.micro_batch)))
                for index, (x, y) in enumerate(chunks):
                    last = index == len(chunks) - 1
                    sync = contextlib.nullcontext() if last or self.net is self.model else self.net.no_sync()
                    with sync:
                        with torch.autocast(self.dist.device.split(":")[0], dtype=self.autocast_dtype, enabled=config.amp):
                            logits = self.net(x)
                        loss = self.criterion(logits.float(), y)
                        self.scaler.scale(loss * weight).backward()
                    loss_sum += float(loss.detach())
                    plain_sum += float(cross_entropy(logits.detach().float(), y, reduction="sum"))
                    correct += int((logits.detach().argmax(1) == y).sum())
                break
            except torch.cuda.OutOfMemoryError:
                self.shrink_micro_batch()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss_sum, correct, plain_sum

    def shrink_micro_batch(self) -> None:
        """Halve the micro-batch after a CUDA out-of-memory error, or say what to change when it cannot."""
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.dist.world > 1:
            raise UserError(
                f"CUDA out of memory at {self.micro_batch} images per process: rerun with "
                f"--batch-size {max(self.dist.world, self.config.batch_size // 2)} (or --amp, --grad-checkpointing, a smaller --image-size)"
            )
        if self.micro_batch == 1:
            raise UserError(
                "CUDA out of memory with a single image per micro-batch: use a smaller --image-size or --grad-checkpointing"
            )
        self.micro_batch = max(1, self.micro_batch // 2)
        log.warning(
            "CUDA out of memory: micro-batch halved to %d, accumulating %d per step (effective batch %d unchanged)",
            self.micro_batch,
            math.ceil(self.config.batch_size / self.micro_batch),
            self.config.batch_size,
        )

    def _end_epoch(self) -> None:
        sums = self._reduce(self.epoch_sums)
        val = self.evaluate(self.val_split)
        row = {
            "epoch": self.epoch + 1,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "train_loss": sums["loss"] / max(1, sums["seen"]),
            "train_loss_plain": None if math.isnan(sums["plain_loss"]) else sums["plain_loss"] / max(1, sums["seen"]),
            "train_top1": 100.0 * sums["correct"] / max(1, sums["seen"]),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": sums["seen"] / max(self.epoch_sums["seconds"], 1e-9),
            "epoch_s": self.epoch_sums["seconds"],
            "trainable_groups": self.trainable_groups,
            "micro_batch": self.micro_batch,
        }
        self.history.append(row)
        if self.dist.is_main:
            log.info("%s", epoch_line(row))
        self.epoch += 1
        self.start_step = 0
        self.epoch_sums = fresh_sums()
        if val["top1"] > self.best_top1 + self.config.min_delta:
            self.best_top1, self.best_epoch, self.bad_epochs = val["top1"], row["epoch"], 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best_confusion = val["confusion"]
            self._save(BEST)
        else:
            self.bad_epochs += 1
        self._save(LAST, resumable=True)
        self._write_reports()

    def _reduce(self, sums: dict[str, float]) -> dict[str, float]:
        if self.dist.world == 1:
            return dict(sums)
        torch = self.torch
        keys = SUM_KEYS
        tensor = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return dict(zip(keys, tensor.tolist()))

    def evaluate(self, split: ImageSplit) -> dict[str, Any]:
        """Loss, top-1, top-5 (percent) and confusion matrix on ``split`` through ``spec.apply``."""
        return evaluate_split(self.model, split, self.spec, self.config, self.dist, self.autocast_dtype)

    def _finish(self, stopped_early: bool) -> TrainResult:
        from edge.console import make_console

        config = self.config
        test = None
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if config.test_limit != 0:
            test_split = self.data.split("test", config.test_limit, config.seed)  # None: the whole split
            test = self.evaluate(test_split)
            confusion, title = test["confusion"], f"test split ({test['images']} images), best epoch {self.best_epoch}"
        else:
            confusion, title = self.best_confusion, f"validation split, best epoch {self.best_epoch}"
        skipped = sum(len(s.skipped) for s in self.data.splits.values())
        diagnosis = diagnose(self.history, config.mode)
        if self.dist.is_main:
            if confusion is not None:
                plot_confusion(self.out / TRAIN_CONFUSION, confusion, self.data.classes, title)
            metrics: dict[str, Any] = {
                "val_top1": self.best_top1,
                "val_images": len(self.val_split),
                "best_epoch": self.best_epoch,
            }
            if test is not None:
                metrics.update(test_top1=test["top1"], test_top5=test["top5"], test_loss=test["loss"], test_images=test["images"])
            write_metrics(self.out, self.history)
            summary = {
                **metrics,
                "stopped_early": stopped_early,
                "skipped_images": skipped,
                "small_sets": self.small_sets,
                "diagnosis": diagnosis,
            }
            atomic_write_json(self.out / TRAIN_SUMMARY, summary)
            if (self.out / BEST).exists():
                update_metrics(self.out / BEST, metrics)
            console = make_console()
            console.print(history_table(self.history, self.best_epoch))
            console.print(run_table(self.out, self.best_epoch, self.best_top1, len(self.val_split), test, skipped))
            for line in diagnosis:
                log.warning(line)
        return TrainResult(
            self.out,
            self.out / BEST,
            self.out / LAST,
            self.best_epoch,
            self.best_top1,
            self.history,
            {k: v for k, v in test.items() if k != "confusion"} if test else None,
            stopped_early,
            diagnosis,
        )

    # ---- Ctrl-C ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _interrupt_handler(self) -> Any:
        """First Ctrl-C: finish the step, write a resumable last.pt, raise KeyboardInterrupt.
        A second Ctrl-C aborts at once."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            if self.dist.is_main:
                log.warning("Ctrl-C: writing a resumable checkpoint after this step (Ctrl-C again to abort)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _check_stop(self) -> None:
        stop = self.stop_requested
        if self.dist.world > 1:
            flag = self.torch.tensor([1.0 if stop else 0.0])
            self.torch.distributed.all_reduce(flag)
            stop = bool(flag.item() > 0)
        if stop:
            self._save(LAST, resumable=True)
            self._write_reports()
            if self.dist.is_main:
                log.warning("interrupted: resume with `edge train --out %s --resume`", self.out)
            raise KeyboardInterrupt


def _seed_everything(torch: Any, seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
