"""Activation ranges for every calibration method from one bounded-memory pass (`edge quantize`).

Owns the collection of activation ranges (minmax, mean-minmax, entropy, percentile) over a calibration set and
the size of its batches; the calibration sets themselves come from the ``calibration`` package.
ONNX Runtime's histogram calibrators (entropy, percentile) keep every intermediate tensor of
the whole reader in memory before building histograms. Here the model runs one batch at a time,
each batch's tensors go straight into ONNX Runtime's own ``HistogramCollector`` (which merges
histograms across calls) and into running min/max, and are dropped. Peak memory is one batch's
activations plus the histograms, whatever the size of the calibration set. One pass serves all
methods, so ``quantize --method auto`` runs the model over the calibration set once. Observers
(``edge.quantize.weights.InputStatistics``) see every tensor of each batch in the same pass.

``mean-minmax`` is NNCF's default activation estimator: the mean over the calibration images of
each image's own minimum and maximum; a symmetric range takes the larger magnitude of the two
means. On tensors one sign dominates in every image (after a ReLU) that is exactly the scale of
NNCF's default files (checked on the four hard-model runs); on signed tensors NNCF averages each
image's largest |x| instead, up to 7% wider on those runs' residual branches. It clips the rare
extremes that set minmax's range without a histogram's search: on the 2-epoch ResNet-50 of the hard-model
benchmark, target trt, full INT8 with plain rounding agreed with the float model on 98.51% of the
10,000 test images, against 98.03% with entropy and 98.43% for NVIDIA Model Optimizer's own file
(docs/figures.md#resnet-50-trained-2-epochs).

The graph input gets one refinement on the asymmetric (uint8) target: an 8-bit image normalised
with mean 0.5 and std 0.5 takes the values 2p/255 - 1, and minmax's [-1, 1] gives the scale 2/255
with the zero point 128, which puts *every* pixel on a rounding tie, half a step off (and the black
background of Fashion-MNIST a constant half step low). ``refine_input_range`` picks the uint8 grid
that represents the observed values best (2/254 with zero point 127 there: black and white exact).
On the demo model this took the drop of full INT8 with plain rounding from 0.37 to 0.17 points on the
10k test set; agreement stayed within noise (the weights' rounding dominates it, see
edge.quantize.weights).
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

METHODS = ("minmax", "mean-minmax", "entropy", "percentile")
# ORT's entropy search is pure Python and quadratic in bins: 256 keeps it to seconds.
ENTROPY_BINS = 256
ENTROPY_QUANTIZED_BINS = 128
PERCENTILE_BINS = 2048
PERCENTILE = 99.999
# A graph input with more distinct values than this is not an 8-bit grid: its range stays as calibrated.
MAX_INPUT_VALUES = 4096
REFINE_STEPS = 16  # refine_input_range tries grids of 255 down to 240 steps over the observed range
# Calibration batches hold every activation of the model at once: 16 images at 224 px, more at smaller sizes.
CALIBRATION_PIXELS = 16 * 224 * 224


def calibration_batch(input_size: int) -> int:
    """Images per calibration batch: bounded activation memory whatever the input size."""
    return int(np.clip(CALIBRATION_PIXELS // (input_size * input_size), 1, 256))


class RangeCollector:
    """Feed batches with :meth:`add`, then :meth:`ranges` gives ORT ``TensorsData`` per method."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        methods: Sequence[str],
        op_types: Sequence[str] | None,
        symmetric: bool,
        observers: Sequence[Any] = (),
        unsigned_where_nonnegative: bool = False,
    ):
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            raise UserError(f"unknown calibration method(s) {unknown}: use {', '.join(METHODS)}")
        self.methods = tuple(methods)
        self.symmetric = symmetric
        self.unsigned = unsigned_where_nonnegative
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
        self.observers = list(observers)
        # The graph input's distinct values and counts (None once it has too many to be an 8-bit grid).
        self._input_values: tuple[np.ndarray, np.ndarray] | None = (np.empty(0, np.float32), np.empty(0, np.int64))
        self._min: dict[str, np.float32] = {}
        self._max: dict[str, np.float32] = {}
        # mean-minmax: per tensor, the sums of each image's min and max and the images counted
        self._sums: dict[str, list[float]] = {}
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
        named = dict(zip(self._outputs, outputs))
        named[self._input] = batch
        wanted = {name: value for name, value in named.items() if name in self.tensors}
        if not self.symmetric and self._input in wanted:
            self._count_input_values(batch)
        for name, value in wanted.items():
            if "mean-minmax" in self.methods:  # one scan gives each image's extremes and the batch's
                lows, highs = self._add_per_image(name, value, len(batch))
                low, high = np.float32(lows.min()), np.float32(highs.max())
            else:
                low, high = np.float32(value.min()), np.float32(value.max())
            self._min[name] = min(self._min.get(name, low), low)
            self._max[name] = max(self._max.get(name, high), high)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's collectors print on every call
            for collector in self._histograms.values():
                collector.collect({name: [value] for name, value in wanted.items()})
        for observer in self.observers:
            observer.add(named)
        self.count += len(batch)

    def _add_per_image(self, name: str, value: np.ndarray, images: int) -> tuple[np.ndarray, np.ndarray]:
        """Fold each image's min and max of ``value`` into the sums (a tensor whose first axis is not
        the batch counts as one sample); returns those mins and maxes."""
        rows = value.reshape(images, -1) if value.ndim and value.shape[0] == images and images > 0 else value.reshape(1, -1)
        lows, highs = rows.min(axis=1), rows.max(axis=1)
        sums = self._sums.setdefault(name, [0.0, 0.0, 0])
        sums[0] += float(lows.astype(np.float64).sum())
        sums[1] += float(highs.astype(np.float64).sum())
        sums[2] += len(rows)
        return lows, highs

    def _count_input_values(self, batch: np.ndarray) -> None:
        if self._input_values is None:
            return
        values, counts = np.unique(batch, return_counts=True)
        merged, inverse = np.unique(np.concatenate([self._input_values[0], values]), return_inverse=True)
        totals = np.bincount(inverse, weights=np.concatenate([self._input_values[1], counts])).astype(np.int64)
        self._input_values = (merged, totals) if len(merged) <= MAX_INPUT_VALUES else None

    def ranges(self, method: str) -> Any:
        """ORT ``TensorsData`` for ``method``; asymmetric ranges are clipped to what was observed
        (a histogram method's symmetric threshold on a ReLU6 output would waste half of uint8)."""
        if self.count == 0:
            raise UserError("no calibration data was collected: the calibration set is empty")
        calibrate = self._calibrate
        if method == "minmax":
            pairs = {name: (self._min[name], self._max[name]) for name in self.tensors if name in self._min}
        elif method == "mean-minmax":
            pairs = {name: (np.float32(lo / n), np.float32(hi / n)) for name, (lo, hi, n) in self._sums.items()}
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
                # a tensor never seen negative keeps [0, bound]: uint8 with zero point 0 (target openvino)
                low, high = (np.float32(0), bound) if self.unsigned and self._min[name] >= 0 else (-bound, bound)
            if name == self._input and not self.symmetric and self._input_values is not None:
                # An 8-bit grid is better represented whole than clipped: the observed range is the base.
                observed = float(self._min[name]), float(self._max[name])
                low, high = (np.float32(v) for v in refine_input_range(*self._input_values, *observed))
            data[name] = calibrate.TensorData(lowest=np.float32(low), highest=np.float32(high))
        enum = {
            "minmax": calibrate.CalibrationMethod.MinMax,
            "mean-minmax": calibrate.CalibrationMethod.MinMax,
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


def refine_input_range(values: np.ndarray, counts: np.ndarray, low: float, high: float, qmax: int = 255) -> tuple[float, float]:
    """The uint8 range ``(lowest, highest)`` for a tensor of few distinct ``values`` (seen ``counts``
    times) that gives the least squared rounding error: grids of ``qmax`` down to ``qmax - 15``
    steps over [low, high], each with the zero points either side. The range returned is exactly
    the grid's, ``(-zp * s, (qmax - zp) * s)``, so ONNX Runtime derives that very scale and zero point."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high <= low:
        return low, high
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(counts, dtype=np.float64)

    def error(scale: float, zero_point: int) -> float:
        q = np.clip(np.round(values / scale) + zero_point, 0, qmax)
        return float(np.sum(weights * (values - (q - zero_point) * scale) ** 2))

    best = (error((high - low) / qmax, int(np.round(-low * qmax / (high - low)))), low, high)  # minmax's own grid
    for steps in range(qmax, qmax - REFINE_STEPS, -1):
        scale = (high - low) / steps
        for zero_point in {int(np.floor(-low / scale)), int(np.ceil(-low / scale))}:
            if 0 <= zero_point <= qmax:
                err = error(scale, zero_point)
                if err < best[0] * (1 - 1e-9):
                    best = (err, -zero_point * scale, (qmax - zero_point) * scale)
    return best[1], best[2]


def collect_ranges(
    model_path: str | os.PathLike[str],
    batches: Iterable[np.ndarray],
    methods: Sequence[str] = METHODS,
    op_types: Sequence[str] | None = None,
    symmetric: bool = False,
    progress: Any = None,
    observers: Sequence[Any] = (),
    unsigned_where_nonnegative: bool = False,
) -> dict[str, Any]:
    """Ranges per method from one pass over ``batches``: ``{method: TensorsData}``. Each observer's
    ``add(tensors)`` gets every tensor of each batch by name (the graph input included). Symmetric
    ranges of tensors never seen negative start at 0 with ``unsigned_where_nonnegative``."""
    with RangeCollector(model_path, methods, op_types, symmetric, observers, unsigned_where_nonnegative) as collector:
        for batch in batches:
            collector.add(batch)
            if progress is not None:
                progress(len(batch))
        return {method: collector.ranges(method) for method in methods}
