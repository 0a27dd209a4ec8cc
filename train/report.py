"""Training feedback: per-epoch metrics (CSV, JSON), curves and confusion-matrix PNGs, a closing
diagnosis that names over- or underfitting and the usual remedies, and what the terminal shows (the
progress bar, each epoch's log line, the closing tables).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_path, atomic_write_json, atomic_write_text
from edge.run import CHECKPOINT, LAST_CHECKPOINT, TRAIN_METRICS_CSV, TRAIN_METRICS_JSON

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
    """``metrics.csv`` and ``metrics.json`` (one row per epoch), written atomically. ``train_loss`` is the
    training criterion's (label smoothing included); ``train_loss_plain``, where the loop records it, is
    plain cross-entropy on the same batches, comparable with ``val_loss``."""
    buffer = io.StringIO()
    columns = list(METRIC_COLUMNS)
    if any(row.get("train_loss_plain") is not None for row in history):
        columns.insert(columns.index("train_loss") + 1, "train_loss_plain")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _round(row.get(k)) for k in columns})
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


def plot_curves(
    path: Path, history: Sequence[dict[str, Any]], best_epoch: int | None = None, label_smoothing: float | None = None
) -> Path:
    """Loss and top-1 per epoch, training and validation, as one PNG (see :func:`curves_figure`)."""
    plt = _pyplot()
    return _save(curves_figure(history, best_epoch, label_smoothing), plt, path)


def curves_figure(history: Sequence[dict[str, Any]], best_epoch: int | None = None, label_smoothing: float | None = None) -> Any:
    """The curves as a matplotlib Figure: losses that compare like with like, integer epochs, and
    accuracy axes at least ``MIN_TOP1_SPAN`` points tall, so a tenth of a point never looks like a cliff.

    Validation loss is plain cross-entropy. A row's ``train_loss_plain`` (the same, on the training
    batches) is plotted when the loop recorded it; otherwise the training criterion's loss is, and the
    legend says it includes label smoothing (``label_smoothing`` or the rows' own value)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    train_key, train_label = _train_loss_series(history, label_smoothing)
    loss_ax.plot(epochs, [row[train_key] for row in history], "o-", label=train_label)
    loss_ax.plot(epochs, [row["val_loss"] for row in history], "o-", label="val loss (no smoothing)")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    loss_ax.set_ylim(bottom=0)
    acc_ax.plot(epochs, [row["train_top1"] for row in history], "o-", label="train top-1 (during the epoch)")
    acc_ax.plot(epochs, [row["val_top1"] for row in history], "o-", label="val top-1")
    acc_ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Accuracy")
    acc_ax.set_ylim(*top1_limits([row[k] for row in history for k in ("train_top1", "val_top1")]))
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


# An accuracy axis never spans fewer points than this: 91.20% vs 91.25% stays a flat line.
MIN_TOP1_SPAN = 5.0


def top1_limits(values: Sequence[float], min_span: float = MIN_TOP1_SPAN) -> tuple[float, float]:
    """y limits for percentages: the data with a margin, at least ``min_span`` points, within [0, 100]."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return 0.0, 100.0
    low, high = min(finite), max(finite)
    margin = max((high - low) * 0.1, (min_span - (high - low)) / 2, 0.0)
    low, high = low - margin, high + margin
    if low < 0:
        low, high = 0.0, min(100.0, high - low)
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return low, high


def _train_loss_series(history: Sequence[dict[str, Any]], label_smoothing: float | None) -> tuple[str, str]:
    """Which training loss to plot and its legend: plain cross-entropy where recorded, else the criterion's."""
    if history and all(row.get("train_loss_plain") is not None for row in history):
        return "train_loss_plain", "train loss (no smoothing)"
    if label_smoothing is None and history:
        label_smoothing = history[-1].get("label_smoothing")
    if label_smoothing is None:
        return "train_loss", "train loss (training criterion, with its label smoothing)"
    if label_smoothing == 0:
        return "train_loss", "train loss (no smoothing)"
    return "train_loss", f"train loss (label smoothing {label_smoothing:g})"


def plot_confusion(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str) -> Path:
    """Row-normalised confusion matrix (true class per row; colour: share of the row) with counts, as a PNG."""
    plt = _pyplot()
    confusion = np.asarray(confusion)
    rows = confusion.sum(axis=1, keepdims=True).clip(min=1)
    rates = confusion / rows
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 2), max(4, 0.6 * n + 1.5)))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (numbers: images)")
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
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight", pad_inches=0.1)
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


def training_progress(disable: bool = False) -> Any:
    """The progress bar of a run: one line for the epochs and one for the epoch in progress."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from edge.console import make_progress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    # no unit: one progress counts epochs and each epoch's batches ("epoch 2/5: 120/469, 31 s, loss ...")
    return make_progress(*columns, disable=disable)


def epoch_line(row: dict[str, Any]) -> str:
    """The log line of an epoch; its two losses compare like with like (both without label smoothing where recorded)."""
    plain = row.get("train_loss_plain")
    train_loss = f"{row['train_loss']:.4f}" if plain is None else f"{plain:.4f} (no smoothing)"
    return (
        f"epoch {row['epoch']}: train loss {train_loss} top-1 {row['train_top1']:.2f}% | "
        f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2f}% | {row['images_per_s']:.0f} img/s"
    )


def history_table(history: Sequence[dict[str, Any]], best_epoch: int | None) -> Any:
    """The per-epoch metrics as a rich table; its caption says which loss carries label smoothing."""
    from edge.console import make_table

    train_key, train_label = _train_loss_series(history, None)
    caption = None
    if "no smoothing" not in train_label:
        caption = f"{train_label.replace('train loss (', 'train loss: ').rstrip(')')}; val loss: no smoothing"
    table = make_table(
        "epoch",
        "lr",
        "train loss",
        "train top-1",
        "val loss",
        "val top-1",
        "val top-5",
        "img/s",
        "time",
        title="Training",
        caption=caption,
        justify="right",
    )
    for row in history:
        mark = " *" if row["epoch"] == best_epoch else ""
        table.add_row(
            f"{row['epoch']}{mark}",
            f"{row['lr']:.2e}",
            f"{row[train_key]:.4f}",
            f"{row['train_top1']:.2f}",
            f"{row['val_loss']:.4f}",
            f"{row['val_top1']:.2f}",
            f"{row['val_top5']:.2f}",
            f"{row['images_per_s']:.0f}",
            f"{row['epoch_s']:.0f}s",
        )
    return table


def run_table(out: Path, best_epoch: int, best_top1: float, val_images: int, test: dict[str, Any] | None, skipped: int) -> Any:
    """The closing summary: best epoch, test accuracy, where the checkpoints are."""
    from edge.console import make_table

    table = make_table("field", "value", title=f"Run {out}", show_header=False)
    table.add_row("best epoch", f"{best_epoch} (val top-1 {best_top1:.2f}% on {val_images} images)")
    if test is not None:
        table.add_row("test top-1 / top-5", f"{test['top1']:.2f}% / {test['top5']:.2f}% on {test['images']} images")
    if skipped:
        table.add_row("unreadable images skipped", str(skipped))
    table.add_row("checkpoint", str(out / CHECKPOINT))
    table.add_row("resumable", str(out / LAST_CHECKPOINT))
    return table
