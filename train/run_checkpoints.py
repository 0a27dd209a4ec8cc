"""A training run's two checkpoints, and ``--resume`` reading the second one back.

- ``checkpoint.pt`` — the best epoch by validation top-1 (what export, quantize and bench read)
- ``last.pt``       — the latest state, resumable: besides the weights it holds the optimizer,
  scheduler and scaler, where the run was (epoch and step), its best epoch so far, the random
  generators and the interrupted epoch's running sums, so a resumed run continues exactly.

Each is written with its manifest, which says what the weights were trained on and how.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.manifest import write_manifest
from edge.run import CHECKPOINT, LAST_CHECKPOINT, SPLITS_FILE
from edge.spec import PreprocessSpec
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig

log = logging.getLogger(__name__)

BEST = CHECKPOINT
LAST = LAST_CHECKPOINT
# per-epoch running sums; plain_loss is cross-entropy without label smoothing (NaN: not recorded this epoch)
SUM_KEYS = ("loss", "plain_loss", "correct", "seen")


def save_run_checkpoint(
    path: Path,
    model: Any,
    spec: PreprocessSpec,
    config: TrainConfig,
    *,
    model_config: dict[str, Any],
    history: list[dict[str, Any]],
    data_fingerprint: str,
    splits: dict[str, str],
    best_epoch: int,
    val_top1: float | None,
    val_images: int,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """The checkpoint and its manifest: the data, its pinned splits, the mode and epochs behind the
    weights, and the validation top-1 they reached. With ``training_state`` it is resumable."""
    save_checkpoint(
        path,
        model,
        config.model,
        spec,
        model_config=model_config,
        config=config.to_dict(),
        history=history,
        data_fingerprint=data_fingerprint,
        training_state=training_state,
    )
    write_manifest(
        path,
        "checkpoint",
        spec,
        provenance={
            "arch": config.model,
            "trained": True,
            "mode": config.mode,
            "data": config.data,
            "data_fingerprint": data_fingerprint,
            "splits": {"file": SPLITS_FILE, "fingerprints": splits},
            "epochs": len(history),
            "best_epoch": best_epoch,
            "resumable": training_state is not None,
            "weights": config.weights or "pretrained",
        },
        metrics={"val_top1": val_top1, "val_images": val_images} if history else {},
    )
    return path


def fresh_sums() -> dict[str, float]:
    """An epoch's running sums before its first step."""
    return {**dict.fromkeys(SUM_KEYS, 0.0), "seconds": 0.0}


def restored_sums(saved: dict[str, float]) -> dict[str, float]:
    """A last.pt's running sums; one written before plain_loss was recorded, mid-epoch, leaves it NaN
    (that epoch's ``train_loss_plain`` is None: a part of the epoch would not compare)."""
    return {**fresh_sums(), "plain_loss": math.nan if saved.get("seen") else 0.0, **saved}


def rng_state(torch: Any) -> dict[str, Any]:
    """Every random generator the run draws from (torch, NumPy, Python, CUDA), as tensors and plain
    data: NumPy's MT19937 state and Python's are written as lists and numbers (a checkpoint is read
    with ``weights_only=True``, which rebuilds no NumPy array and no other object)."""
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "key": [int(k) for k in key],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": [int(version), [int(i) for i in internal], gauss_next],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(torch: Any, rng: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` recorded (or an earlier version's tuples, NumPy array and all)."""
    torch.set_rng_state(rng["torch"])
    saved = rng["numpy"]
    if isinstance(saved, dict):
        saved = (
            saved["bit_generator"],
            np.asarray(saved["key"], dtype=np.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        )
    np.random.set_state(saved)
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def read_resume(out: Path) -> dict[str, Any]:
    """``out/last.pt``, loaded; a user error when it is missing or holds no training state."""
    path = out / LAST
    if not path.exists():
        raise UserError(f"--resume: {path} does not exist; start the run without --resume")
    payload = load_checkpoint(path)
    if not payload.get("training_state"):
        raise UserError(f"--resume: {path} holds no training state; start the run without --resume")
    return payload


def check_resume_data(payload: dict[str, Any], classes: tuple[str, ...], data_fingerprint: str) -> None:
    """Refuse data with other classes than the checkpoint's; warn when the data changed otherwise."""
    saved = tuple(payload["spec"]["labels"])
    if saved != tuple(classes):
        raise UserError(
            f"--resume: the data's classes {list(classes)} differ from the checkpoint's {list(saved)}; "
            "resume with the same data, or train a new run into another --out"
        )
    if payload.get("data_fingerprint") != data_fingerprint:
        log.warning("--resume: the training data changed since the checkpoint (fingerprint differs)")
