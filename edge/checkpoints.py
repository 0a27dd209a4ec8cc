"""Reading edge checkpoint files: the format, its validation, and the spec inside.

A checkpoint is a ``torch.save`` dict::

    format           "edge-checkpoint/1"
    arch             model zoo name (train.models)
    num_classes      size of the head
    model_config     kwargs that rebuild the exact module (drop_rate, ...)
    state_dict       the weights
    spec             PreprocessSpec.to_dict(), labels included
    config           the resolved training config (or how the weights were obtained)
    history          per-epoch metrics
    data_fingerprint hash of the training data (None for pretrained runs)
    training_state   optimizer / scheduler / scaler / epoch / RNG, for --resume (optional)

Reading belongs to the core (the torch runner and the spec lookup read checkpoints on a device);
writing one and rebuilding its model belong to :mod:`train.checkpoint`. torch is imported only
when a checkpoint is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.errors import UserError, require
from edge.spec import PreprocessSpec

CHECKPOINT_FORMAT = "edge-checkpoint/1"
REQUIRED_KEYS = ("format", "arch", "num_classes", "model_config", "state_dict", "spec", "config", "history")


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; a clear error for anything else."""
    torch = require("torch", "train", "Reading checkpoints")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: create it with `edge train` or `edge pretrained`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/corrupt pickles
        raise UserError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} is not an edge checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__}); "
            "to use a plain state dict pass it as --weights to `edge pretrained` or `edge train`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise UserError(f"checkpoint {path} is missing {missing}: it was not written by edge")
    return payload


def checkpoint_spec(path: str | os.PathLike[str]) -> PreprocessSpec:
    """The PreprocessSpec stored in a checkpoint."""
    return PreprocessSpec.from_dict(load_checkpoint(path)["spec"])
