"""Checkpoints: everything needed downstream to rebuild and feed the model.

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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.artifacts import atomic_path
from edge.errors import UserError, require
from edge.spec import PreprocessSpec

CHECKPOINT_FORMAT = "edge-checkpoint/1"
REQUIRED_KEYS = ("format", "arch", "num_classes", "model_config", "state_dict", "spec", "config", "history")


def save_checkpoint(
    path: str | os.PathLike[str],
    model: Any,
    arch: str,
    spec: PreprocessSpec,
    model_config: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    data_fingerprint: str | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename)."""
    torch = require("torch", "train", "Writing checkpoints")
    module = getattr(model, "module", model)  # unwrap DDP
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "num_classes": spec.num_classes,
        "model_config": dict(model_config or {}),
        "state_dict": state,
        "spec": spec.to_dict(),
        "config": dict(config or {}),
        "history": list(history or []),
        "data_fingerprint": data_fingerprint,
        "training_state": training_state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


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


def read_checkpoint_spec(path: str | os.PathLike[str]) -> PreprocessSpec:
    return PreprocessSpec.from_dict(load_checkpoint(path)["spec"])


def model_from_checkpoint(path_or_payload: Any, device: str = "cpu") -> tuple[Any, PreprocessSpec]:
    """Rebuild the model (eval mode) and its spec from a checkpoint path or loaded payload."""
    from train.models import build_model

    payload = path_or_payload if isinstance(path_or_payload, dict) else load_checkpoint(path_or_payload)
    model = build_model(payload["arch"], num_classes=payload["num_classes"], pretrained=False, **payload["model_config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise UserError(f"checkpoint weights do not fit {payload['arch']}: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), PreprocessSpec.from_dict(payload["spec"])
