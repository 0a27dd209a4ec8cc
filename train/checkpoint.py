"""Checkpoints: writing them, and rebuilding their model (the zoo lives here, in ``train``).

The format and reading are :mod:`edge.checkpoints` (the core reads checkpoints on a device too).
A checkpoint holds tensors and plain data only (numbers, strings, bools, None, lists, tuples,
dicts), so ``torch.load(weights_only=True)`` reads it back whole: :func:`plain_data` turns NumPy
numbers into Python ones and refuses anything else before a byte is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_path
from edge.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from edge.errors import UserError, require
from edge.spec import PreprocessSpec

__all__ = ["load_checkpoint", "model_from_checkpoint", "plain_data", "save_checkpoint"]


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
    payload = plain_data(
        {
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
    )
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


PLAIN_TYPES = (type(None), bool, int, float, str)


def plain_data(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as tensors and plain data: NumPy numbers become Python numbers, dict subclasses
    plain dicts; any other object is a bug (a TypeError naming where it sits), never pickled."""
    tensor = require("torch", "train", "Writing checkpoints").Tensor

    def plain(item: Any, at: str) -> Any:
        if type(item) in PLAIN_TYPES or isinstance(item, tensor):
            return item
        if isinstance(item, np.generic) and type(item.item()) in PLAIN_TYPES:
            return item.item()  # np.float64 is a float to Python, but pickles as a NumPy object
        if isinstance(item, dict):
            return {plain(key, f"{at} key {key!r}"): plain(v, f"{at}[{key!r}]") for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            items = [plain(v, f"{at}[{index}]") for index, v in enumerate(item)]
            return items if isinstance(item, list) else tuple(items)
        kind = f"{type(item).__module__}.{type(item).__qualname__}"
        raise TypeError(f"{at} holds a {kind}: a checkpoint holds only tensors and plain data")

    return plain(value, where)


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
