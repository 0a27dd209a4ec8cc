"""Reading a calibration tensor: float32 batches refused when they hold NaN/Inf (``iter_batches``,
what edge.quantize.ranges collects ranges over), and the same batches as ONNX Runtime's tiny
``CalibrationDataReader`` protocol (``calibration_reader``: ``get_next()`` returns a feed or None)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edge.errors import UserError, require

DEFAULT_BATCH = 16


def check_finite(batch: np.ndarray, where: str) -> np.ndarray:
    """A calibration batch with NaN or Inf would poison every range it touches: refuse it."""
    if not np.isfinite(batch).all():
        bad = int(np.count_nonzero(~np.isfinite(batch)))
        raise UserError(f"{where} contains {bad} NaN/Inf value(s): rebuild the calibration set (`edge calibrate`)")
    return batch


def iter_batches(tensor: np.ndarray, batch_size: int = DEFAULT_BATCH) -> Iterator[np.ndarray]:
    """float32 NCHW batches of a (memory-mapped) calibration tensor, each checked for NaN/Inf."""
    if batch_size < 1:
        raise UserError(f"calibration batch size must be at least 1, got {batch_size}")
    for start in range(0, len(tensor), batch_size):
        batch = np.ascontiguousarray(tensor[start : start + batch_size], dtype=np.float32)
        yield check_finite(batch, f"calibration batch {start // batch_size} (items {start}..{start + len(batch) - 1})")


def calibration_reader(tensor: np.ndarray, input_name: str = "input", batch_size: int = DEFAULT_BATCH):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a calibration tensor, in batches."""
    quantization = require("onnxruntime.quantization", "cpu", "Calibrating")

    class TensorCalibrationReader(quantization.CalibrationDataReader):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._batches = iter_batches(tensor, batch_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self._batches = iter_batches(tensor, batch_size)

        def __len__(self) -> int:
            return (len(tensor) + batch_size - 1) // batch_size

    return TensorCalibrationReader()
