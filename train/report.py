"""Training feedback: per-epoch metrics (CSV, JSON), curves and confusion-matrix PNGs, and a
closing diagnosis that names over- or underfitting and the usual remedies.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifacts import atomic_path, atomic_write_json, atomic_write_text
from edge.run import TRAIN_METRICS_CSV, TRAIN_METRICS_JSON

METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "images_per_s",
    "epoch_s",
    "trainable_groups",
    "micro_batch",
)
# A train/val top-1 gap wider than this (points) is called overfitting.
OVERFIT_GAP_POINTS = 5.0
# Training top-1 below this (percent) at the end is called underfitting.
UNDERFIT_TRAIN_TOP1 = 80.0


def write_metrics(out: Path, history: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """``metrics.csv`` and ``metrics.json`` (one row per epoch), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _round(row.get(k)) for k in METRIC_COLUMNS})
    csv_path = atomic_write_text(out / TRAIN_METRICS_CSV, buffer.getvalue())
    json_path = atomic_write_json(out / TRAIN_METRICS_JSON, {"epochs": list(history)})
    return csv_path, json_path


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(path: Path, history: Sequence[dict[str, Any]], best_epoch: int | None = None) -> Path:
    """Loss and top-1 per epoch, training and validation, as one PNG."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc_ax.plot(epochs, [row["train_top1"] for row in history], "o-", label="train")
    acc_ax.plot(epochs, [row["val_top1"] for row in history], "o-", label="validation")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", linestyle=":", label="best")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_confusion(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str) -> Path:
    """Row-normalised confusion matrix (true class per row) with counts, as a PNG."""
    plt = _pyplot()
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1, keepdims=True).clip(min=1)
    rates = confusion / rows
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1.5)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(confusion[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


def diagnose(history: Sequence[dict[str, Any]], mode: str) -> list[str]:
    """Over- or underfitting in plain words, with the usual remedies (empty when neither shows)."""
    if not history:
        return []
    last = history[-1]
    findings = []
    val_losses = [row["val_loss"] for row in history]
    train_losses = [row["train_loss"] for row in history]
    rising = len(history) >= 3 and val_losses[-1] > min(val_losses) * 1.02 and train_losses[-1] < train_losses[-3]
    gap = last["train_top1"] - last["val_top1"]
    if rising or gap > OVERFIT_GAP_POINTS:
        why = "validation loss rising while training loss falls" if rising else f"train/val top-1 gap of {gap:.1f} points"
        findings.append(
            f"overfitting ({why}): use more augmentation (--augment standard), more dropout (--drop-rate), "
            "early stopping (--patience), or more training data"
        )
    if last["train_top1"] < UNDERFIT_TRAIN_TOP1 and gap <= OVERFIT_GAP_POINTS:
        more = "unfreeze more layers (--mode finetune or gradual), " if mode != "finetune" else ""
        findings.append(
            f"underfitting (training top-1 {last['train_top1']:.1f}%): {more}train longer (--epochs), "
            "lower the learning rate if the loss is noisy, use less augmentation or dropout, a larger --image-size"
        )
    return findings


def history_table(history: Sequence[dict[str, Any]], best_epoch: int | None) -> Any:
    """The per-epoch metrics as a rich table."""
    from rich.table import Table

    table = Table(title="Training")
    for name in ("epoch", "lr", "train loss", "train top-1", "val loss", "val top-1", "val top-5", "img/s", "time"):
        table.add_column(name, justify="right")
    for row in history:
        mark = " *" if row["epoch"] == best_epoch else ""
        table.add_row(
            f"{row['epoch']}{mark}",
            f"{row['lr']:.2e}",
            f"{row['train_loss']:.4f}",
            f"{row['train_top1']:.2f}",
            f"{row['val_loss']:.4f}",
            f"{row['val_top1']:.2f}",
            f"{row['val_top5']:.2f}",
            f"{row['images_per_s']:.0f}",
            f"{row['epoch_s']:.0f}s",
        )
    return table
