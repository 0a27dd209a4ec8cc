"""PyTorch backend: a training checkpoint on CPU or CUDA."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edge.errors import UserError, require
from edge.runners.base import Runner
from edge.spec import PreprocessSpec


class TorchRunner(Runner):
    """Runs a checkpoint written by ``edge train`` / ``edge pretrained`` in eval mode, FP32."""

    backend = "torch"

    def __init__(
        self,
        path: str | os.PathLike[str],
        spec: PreprocessSpec,
        device: str = "cpu",
        threads: int | None = None,
        max_batch: int | None = None,
        model: Any = None,
    ):
        super().__init__(path, spec, device=device, threads=threads, max_batch=max_batch)
        self.model = model
        self._torch: Any = None
        self._events: Any = None

    def _activate(self) -> None:
        torch = require("torch", "train", "The torch backend")
        self._torch = torch
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("torch cannot see a CUDA device here: use --device cpu, or install a CUDA build of torch")
        if self.threads:
            torch.set_num_threads(self.threads)
        else:
            self.threads = torch.get_num_threads()
        if self.model is None:
            from train.checkpoint import model_from_checkpoint  # edge -> train only lazily

            self.model, _ = model_from_checkpoint(self.path)
        self.model = self.model.to(self.device).eval()
        if self.device == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).to(self.device, non_blocking=False)
            if self._events is not None:
                start, end = self._events
                start.record()
                logits = self.model(tensor)
                end.record()
                out = logits.float().cpu().numpy()  # .cpu() waits for the device
                end.synchronize()
                self.last_device_ms = float(start.elapsed_time(end))
                return out
            return self.model(tensor).float().numpy()

    def _deactivate(self) -> None:
        if self.device == "cuda" and self._torch is not None:
            self._torch.cuda.empty_cache()
