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

Every value is a tensor or plain data (numbers, strings, bools, None, lists, tuples, dicts): the
file is read with ``torch.load(weights_only=True)``, whose unpickler rebuilds nothing else, so no
code in a checkpoint (or a ``--weights`` file) ever runs. A file that would need any other object
(pickle) is refused with one line. Checkpoints of earlier versions held NumPy numbers and the
NumPy random state; those NumPy types are allowed on reading (:data:`LEGACY_NUMPY_DATA`).

Reading belongs to the core (the torch runner and the spec lookup read checkpoints on a device);
writing one and rebuilding its model belong to :mod:`train.checkpoint`. torch is imported only
when a checkpoint is read.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import warnings
from pathlib import Path
from typing import Any

from edge.errors import UserError, require
from edge.spec import PreprocessSpec

CHECKPOINT_FORMAT = "edge-checkpoint/1"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
REQUIRED_KEYS = ("format", "arch", "num_classes", "model_config", "state_dict", "spec", "config", "history")


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint (tensors and plain data only); a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: create it with `edge train` or `edge pretrained`")
    payload = load_plain_file(path, "checkpoint", map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(
            f"{path} is not an edge checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__}); "
            "to use a plain state dict pass it as --weights to `edge pretrained` or `edge train`"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise UserError(f"checkpoint {path} is missing {missing}: it was not written by edge")
    return payload


def load_plain_file(path: str | os.PathLike[str], what: str, map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data, nothing in the file runs.

    ``what`` names the file in the errors ("checkpoint", "weights file"). A file whose pickle names
    any other object is refused with one line (a UserError) before that object is built.
    """
    torch = require("torch", "train", f"Reading a {what}")
    path = Path(path)
    try:
        with _LOADING, _legacy_numpy_allowed(torch), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a raw pickle: refused below
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if reason.startswith("Unsupported operand"):  # no pickle that torch.save writes: garbage, a raw pickle
            raise UserError(f"{path} is not a readable {what} (UnpicklingError: {reason})") from exc
        # the restricted unpickler met an object it does not build (and built none of it)
        raise UserError(unsafe_pickle_line(path, what, _unsafe_globals(torch, path))) from exc
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise UserError(f"{path} is not a readable {what} ({type(exc).__name__}: {str(exc)[:200]})") from exc


def unsafe_pickle_line(path: Path, what: str, names: list[str]) -> str:
    """The one line that refuses a file which only an unsafe (pickle) load could read."""
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        found = f"{path} holds Python objects ({shown}) that only an unsafe load (pickle) could rebuild"
    else:
        found = f"{path} is not a plain-tensor {what}: only an unsafe load (pickle) could read it"
    return (
        f"{found}: refused, nothing in it was run; a {what} holds only tensors and plain data: write it again with "
        "this version (`edge train`, `edge pretrained`), or if you made the file yourself and trust it, re-save its "
        "tensors with torch.save(model.state_dict(), PATH)"
    )


def _unpickler_reason(exc: BaseException) -> str:
    """The restricted unpickler's own words ("Unsupported global: GLOBAL ...", "Unsupported operand
    0"), without torch's advice around them (which suggests the unsafe load)."""
    text = str(exc)
    _, found, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason if found else text).strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _unsafe_globals(torch: Any, path: Path) -> list[str]:
    """The objects a file's pickle names beyond the allowed ones, read without running anything
    (empty where this torch cannot list them or the file is no torch zip)."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is None:
        return []
    try:
        names = lister(path)
    except Exception:  # a legacy (non-zip) or foreign file: the refusal stands without the names
        return []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in LEGACY_NUMPY_DATA}
    return [str(name) for name in names if name not in allowed]


def _numpy_data_globals() -> tuple[Any, ...]:
    """NumPy's builders of numbers and numeric arrays, as an earlier version's checkpoints name them
    (float64 metrics, the MT19937 key): they build data, never call anything else. Object arrays
    stay refused (their dtype class is not in the list, and their items are unpickled under the same
    rules)."""
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy < 1.26
        from numpy.core import multiarray  # type: ignore[no-redef]
    numeric = "?bhilqBHILQefd"  # bool, the signed and unsigned integers, float16/32/64
    dtypes = sorted({type(np.dtype(code)) for code in numeric}, key=lambda cls: cls.__name__)
    return (multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtypes)


LEGACY_NUMPY_DATA = _numpy_data_globals()
# torch's scoped allowlist edits one process-wide set: loads that overlap (camera streams) take turns
_LOADING = threading.Lock()


def _legacy_numpy_allowed(torch: Any) -> contextlib.AbstractContextManager[Any]:
    scoped = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    return scoped(list(LEGACY_NUMPY_DATA)) if scoped is not None else contextlib.nullcontext()


def checkpoint_spec(path: str | os.PathLike[str]) -> PreprocessSpec:
    """The PreprocessSpec stored in a checkpoint."""
    return PreprocessSpec.from_dict(load_checkpoint(path)["spec"])
