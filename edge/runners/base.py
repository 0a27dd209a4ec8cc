"""The runner contract shared by every backend (modelled on Polygraphy's runners).

    with runner:
        logits = runner.infer(batch)   # float32 NCHW in host memory -> float32 (N, classes) on host

``infer`` validates its input and says how to fix it; a backend implements only
``_activate``, ``_infer`` and ``_deactivate``. ``_infer`` returns only after the device has
finished. A runner may report the device time of its last call (CUDA events) in
``last_device_ms`` so bench can separate compute from host-to-host time.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.spec import PreprocessSpec

DEVICES = ("cpu", "cuda")


class RunnerInputError(UserError):
    """The batch handed to ``infer`` does not fit the model; the message names the fix."""


class Runner(abc.ABC):
    """Base class: validation in the public methods, the work in the ``_`` hooks."""

    backend = "base"

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: PreprocessSpec,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
    ):
        if device not in DEVICES:
            raise UserError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
        if threads is not None and threads <= 0:
            raise UserError(f"threads must be a positive number, got {threads}")
        self.path = Path(path)
        self.spec = spec
        self.device = device
        self.threads = threads
        self.max_batch = max_batch
        self.is_active = False
        self.last_device_ms: float | None = None
        # Busy-wait for work between calls where the backend supports it (ONNX Runtime's thread
        # pool): lowest latency for back-to-back calls, but it starves other CPU work in the same
        # process, so a pipeline that decodes and preprocesses between calls turns it off.
        self.spin_wait = True

    # ---- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self._deactivate()
            finally:
                self.is_active = False

    # ---- inference -----------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.device}"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns float32 logits (N, num_classes) in host memory."""
        if not self.is_active:
            raise RuntimeError(f"{type(self).__name__}.infer called outside `with runner:` (activate it first)")
        batch = self.check_batch(batch)
        logits = self._infer(batch)
        if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
            raise RuntimeError(f"{type(self).__name__} returned {getattr(logits, 'shape', type(logits))}, expected (N, classes)")
        return logits.astype(np.float32, copy=False)

    def check_batch(self, batch: Any) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise RunnerInputError(
                f"infer expects a numpy float32 NCHW array, got {type(batch).__name__}; build it with spec.apply_batch(frames)"
            )
        if batch.dtype != np.float32:
            raise RunnerInputError(f"infer expects float32 input, got {batch.dtype}; use batch.astype(np.float32)")
        if batch.ndim == 3 and batch.shape == self.input_shape:
            raise RunnerInputError(
                f"infer expects a batch (N, {', '.join(map(str, self.input_shape))}); add a batch axis with batch[None]"
            )
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise RunnerInputError(
                f"incompatible input shape {tuple(batch.shape)}: this model takes (N, "
                f"{', '.join(map(str, self.input_shape))}); preprocess frames with the artifact's "
                "PreprocessSpec (spec.apply_batch)"
            )
        if batch.shape[0] < 1:
            raise RunnerInputError("infer got an empty batch (N = 0)")
        if self.max_batch is not None and batch.shape[0] > self.max_batch:
            raise RunnerInputError(
                f"batch of {batch.shape[0]} exceeds this artifact's maximum batch {self.max_batch}; "
                "split the batch or rebuild the artifact with a larger batch range"
            )
        return np.ascontiguousarray(batch)

    def describe(self) -> dict[str, Any]:
        """What this runner is, for reports."""
        return {"backend": self.backend, "device": self.device, "threads": self.threads, "path": str(self.path)}

    # ---- backend hooks -------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...

    def _deactivate(self) -> None:
        return None
