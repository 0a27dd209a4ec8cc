"""Activation ranges for every calibration method from one bounded-memory pass.

ONNX Runtime's histogram calibrators (entropy, percentile) keep every intermediate tensor of
the whole reader in memory before building histograms. Here the model runs one batch at a time,
each batch's tensors go straight into ONNX Runtime's own ``HistogramCollector`` (which merges
histograms across calls) and into running min/max, and are dropped. Peak memory is one batch's
activations plus the histograms, whatever the size of the calibration set. One pass serves all
methods, so ``quantize --method auto`` runs the model over the calibration set once.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require

METHODS = ("minmax", "entropy", "percentile")
# ORT's entropy search is pure Python and quadratic in bins: 256 keeps it to seconds.
ENTROPY_BINS = 256
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048
PERCENTILE = 99.999


class RangeCollector:
    """Feed batches with :meth:`add`, then :meth:`ranges` gives ORT ``TensorsData`` per method."""

    def __init__(
        self, model_path: str | os.PathLike[str], methods: Sequence[str], op_types: Sequence[str] | None, symmetric: bool
    ):
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise UserError(f"unknown calibration method(s) {unknown}: use {', '.join(METHODS)}")
        self.methods = tuple(methods)
        self.symmetric = symmetric
        calibrate = require("onnxruntime.quantization.calibrate", "cpu", "Calibrating")
        self._calibrate = calibrate
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-calib-")
        # ORT's histogram calibrator builds the model with every tensor to calibrate as an output.
        helper = calibrate.create_calibrator(
            Path(model_path),
            list(op_types) if op_types else None,
            augmented_model_path=str(Path(self._tmp.name) / "augmented.onnx"),
            calibrate_method=calibrate.CalibrationMethod.Percentile,
            extra_options={"symmetric": symmetric},
        )
        self._session = helper.infer_session
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.tensors = sorted(helper.tensors_to_calibrate)
        del helper
        self._min: dict[str, np.float32] = {}
        self._max: dict[str, np.float32] = {}
        self._histograms: dict[str, Any] = {}
        if "entropy" in self.methods:
            self._histograms["entropy"] = calibrate.HistogramCollector(
                method="entropy",
                symmetric=symmetric,
                num_bins=ENTROPY_BINS,
                num_quantized_bins=ENTROPY_QUANTIZED_BINS,
                percentile=PERCENTILE,
                scenario="same",
            )
        if "percentile" in self.methods:
            self._histograms["percentile"] = calibrate.HistogramCollector(
                method="percentile",
                symmetric=symmetric,
                num_bins=PERCENTILE_BINS,
                num_quantized_bins=ENTROPY_QUANTIZED_BINS,
                percentile=PERCENTILE,
                scenario="same",
            )
        self.count = 0

    def add(self, batch: np.ndarray) -> None:
        """Run one batch and fold its activations into every method's statistics."""
        outputs = self._session.run(None, {self._input: batch})
        wanted = {name: value for name, value in zip(self._outputs, outputs) if name in self.tensors}
        for name, value in wanted.items():
            low, high = np.float32(value.min()), np.float32(value.max())
            self._min[name] = min(self._min.get(name, low), low)
            self._max[name] = max(self._max.get(name, high), high)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's collectors print on every call
            for collector in self._histograms.values():
                collector.collect({name: [value] for name, value in wanted.items()})
        self.count += len(batch)

    def ranges(self, method: str) -> Any:
        """ORT ``TensorsData`` for ``method``; asymmetric ranges are clipped to what was observed
        (a histogram method's symmetric threshold on a ReLU6 output would waste half of uint8)."""
        if self.count == 0:
            raise UserError("no calibration data was collected: the calibration set is empty")
        calibrate = self._calibrate
        if method == "minmax":
            pairs = {name: (self._min[name], self._max[name]) for name in self.tensors if name in self._min}
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                result = self._histograms[method].compute_collection_result()
            pairs = {name: (np.float32(v[0]), np.float32(v[1])) for name, v in result.items()}
        data = {}
        for name, (low, high) in pairs.items():
            if not self.symmetric:
                low, high = max(low, self._min[name]), min(high, self._max[name])
            if self.symmetric:
                bound = np.float32(max(abs(low), abs(high)))
                low, high = -bound, bound
            data[name] = calibrate.TensorData(lowest=np.float32(low), highest=np.float32(high))
        enum = {
            "minmax": calibrate.CalibrationMethod.MinMax,
            "entropy": calibrate.CalibrationMethod.Entropy,
            "percentile": calibrate.CalibrationMethod.Percentile,
        }[method]
        return calibrate.TensorsData(enum, data)

    def close(self) -> None:
        self._session = None
        self._tmp.cleanup()

    def __enter__(self) -> "RangeCollector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect_ranges(
    model_path: str | os.PathLike[str],
    batches: Iterable[np.ndarray],
    methods: Sequence[str] = METHODS,
    op_types: Sequence[str] | None = None,
    symmetric: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Ranges per method from one pass over ``batches``: ``{method: TensorsData}``."""
    with RangeCollector(model_path, methods, op_types, symmetric) as collector:
        for batch in batches:
            collector.add(batch)
            if progress is not None:
                progress(len(batch))
        return {method: collector.ranges(method) for method in methods}
