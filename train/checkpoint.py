"""Checkpoints: writing them, and rebuilding their model (the zoo lives here, in ``train``).

The format and reading are :mod:`edge.checkpoints` (the core reads checkpoints on a device too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.atomic import atomic_path
from edge.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from edge.errors import UserError, require
from edge.spec import PreprocessSpec

__all__ = ["load_checkpoint", "model_from_checkpoint", "save_checkpoint"]


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
