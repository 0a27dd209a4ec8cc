"""The run directory: one pipeline's artifacts under ``runs/<name>/``, and every file name in it.

Every stage takes a run directory and finds its inputs here; explicit paths override. This module
is the only place that spells a run's file names::

    checkpoint.pt  last.pt                       best and last training checkpoints
    splits.json                                  the data split training pinned: train/val/test items and hashes
    metrics.{json,csv} summary.json curves.png confusion.png   training reports
    model.onnx  model.int8-{cpu,trt,openvino}.onnx            ONNX FP32 and the INT8 targets
    model.int8-*.layers.json                     the quantizer's per-layer report
    calibration/calibration.npy                  the cached calibration set
    engines/<gpu>-sm<cc>-trt<version>/model.<precision>.engine (+ timing.cache)
    bench/report.{json,md,csv,png}  bench/zoo.{json,md}        bench reports
    selftest/report.{json,md}                    `edge selftest --tensorrt`
    <run>-deploy.tar.gz                          `edge pack`'s bundle
    bundle.json  verification.npz                inside a bundle: its index, and the verification set `edge verify` runs
    model.int8-*.rejected.onnx                   a quantization not accepted, beside the accepted model it did not replace
    history/<UTC time>/...                       the previous files a stage replaced, at the same relative paths
    demo.mp4                                     the camera demo video (in the folder it is asked for)

Every artifact file has its manifest beside it (``<file>.json``, :mod:`edge.manifest`). Nothing is
replaced without a copy: a stage first keeps the files it would replace under ``history/<UTC time>/``
(:mod:`edge.history`), and training a run again retires its training outputs and everything made
from them (:meth:`RunDir.retired_by_training`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError

CHECKPOINT = "checkpoint.pt"
LAST_CHECKPOINT = "last.pt"
TRAIN_METRICS_JSON = "metrics.json"
TRAIN_METRICS_CSV = "metrics.csv"
TRAIN_SUMMARY = "summary.json"
TRAIN_CURVES = "curves.png"
TRAIN_CONFUSION = "confusion.png"
SPLITS_FILE = "splits.json"  # the data split training pinned (train.splits)
ONNX_FP32 = "model.onnx"
ONNX_INT8_CPU = "model.int8-cpu.onnx"
ONNX_INT8_TRT = "model.int8-trt.onnx"
ONNX_INT8_OPENVINO = "model.int8-openvino.onnx"
ONNX_INT8 = {"cpu": ONNX_INT8_CPU, "trt": ONNX_INT8_TRT, "openvino": ONNX_INT8_OPENVINO}  # by edge quantize --target
ONNX_FP16_AUTOCAST = "model.fp16-autocast.onnx"  # TensorRT 11's FP16 source, beside its engine
CALIBRATION_DIR = "calibration"
CALIBRATION_FILE = "calibration.npy"
ENGINES_DIR = "engines"
TIMING_CACHE = "timing.cache"
BENCH_DIR = "bench"
REPORT = "report"  # report.json / .md / .csv / .png in bench/ and selftest/
REPORT_FORMATS = ("json", "csv", "md", "png")
ZOO_REPORT = "zoo"  # zoo.json / zoo.md
SELFTEST_DIR = "selftest"
DEPLOY_BUNDLE_SUFFIX = "-deploy.tar.gz"  # RUN/<run name>-deploy.tar.gz
BUNDLE_INDEX = "bundle.json"  # inside a bundle: what it holds, the backends and extras, the verification set's hash
VERIFICATION_SET = "verification.npz"  # inside a bundle: test inputs, labels and the float parent's logits
REJECTED_SUFFIX = ".rejected.onnx"  # model.int8-cpu.rejected.onnx: not accepted, beside an accepted model
HISTORY_DIR = "history"  # history/<UTC time>/<the same relative path>: what a stage replaced
DEMO_VIDEO = "demo.mp4"

# What training writes, and what later stages make from its checkpoint: training a run again retires
# both (files, then folders).
TRAINING_FILES = (CHECKPOINT, LAST_CHECKPOINT, SPLITS_FILE, TRAIN_METRICS_JSON, TRAIN_METRICS_CSV, TRAIN_SUMMARY)
TRAINING_PLOTS = (TRAIN_CURVES, TRAIN_CONFUSION)
DERIVED_FILES = (ONNX_FP32, *ONNX_INT8.values())
DERIVED_DIRS = (CALIBRATION_DIR, ENGINES_DIR, BENCH_DIR, SELFTEST_DIR)


def layer_report_name(quantized: str | os.PathLike[str]) -> str:
    """``model.int8-cpu.onnx`` -> ``model.int8-cpu.layers.json`` (the quantizer's per-layer report)."""
    name = Path(quantized).name
    return name.removesuffix(".onnx") + ".layers.json"


def rejected_name(quantized: str | os.PathLike[str]) -> str:
    """``model.int8-cpu.onnx`` -> ``model.int8-cpu.rejected.onnx`` (a result not accepted, written beside
    the accepted model it must not replace)."""
    return Path(quantized).name.removesuffix(".onnx") + REJECTED_SUFFIX


def report_paths(
    folder: str | os.PathLike[str], stem: str = REPORT, formats: tuple[str, ...] = REPORT_FORMATS
) -> dict[str, Path]:
    """``{"json": folder/report.json, ...}`` for a report written in several formats."""
    return {ext: Path(folder) / f"{stem}.{ext}" for ext in formats}


def engine_precision(path: str | os.PathLike[str]) -> str:
    """``model.fp16.engine`` -> ``fp16``."""
    path = Path(path)
    return path.name.removeprefix("model.").removesuffix(path.suffix)


def engine_name(precision: str) -> str:
    """``fp16`` -> ``model.fp16.engine``."""
    return f"model.{precision}.engine"


def trt_version_tuple(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> (10, 3, 0); raises UserError for something that is not a version."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", str(version))
    if not match:
        raise UserError(f"{version!r} is not a TensorRT version")
    return tuple(int(g or 0) for g in match.groups())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def engine_dir_name(gpu_name: str, compute_capability: str, trt_version: str) -> str:
    """``NVIDIA H200``, ``9.0``, ``10.3.0.26`` -> ``nvidia-h200-sm90-trt10.3.0`` (one machine's engines)."""
    cc = str(compute_capability).replace(".", "")
    return f"{_slug(gpu_name)}-sm{cc}-trt{'.'.join(map(str, trt_version_tuple(trt_version)))}"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def open(cls, path: str | os.PathLike[str], must_exist: bool = True) -> "RunDir":
        root = Path(path)
        if must_exist and not root.is_dir():
            raise UserError(f"run directory {root} does not exist: create it with `edge pretrained` or `edge train`")
        return cls(root)

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def onnx(self) -> Path:
        return self.root / ONNX_FP32

    @property
    def int8_cpu(self) -> Path:
        return self.root / ONNX_INT8_CPU

    @property
    def int8_trt(self) -> Path:
        return self.root / ONNX_INT8_TRT

    @property
    def int8_openvino(self) -> Path:
        return self.root / ONNX_INT8_OPENVINO

    def int8(self, target: str) -> Path:
        """The INT8 model of an ``edge quantize --target``."""
        return self.root / ONNX_INT8[target]

    @property
    def engines(self) -> Path:
        return self.root / ENGINES_DIR

    @property
    def calibration(self) -> Path:
        return self.root / CALIBRATION_DIR

    @property
    def bench(self) -> Path:
        return self.root / BENCH_DIR

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FILE

    @property
    def last_checkpoint(self) -> Path:
        return self.root / LAST_CHECKPOINT

    @property
    def calibration_file(self) -> Path:
        return self.calibration / CALIBRATION_FILE

    @property
    def selftest(self) -> Path:
        return self.root / SELFTEST_DIR

    @property
    def history(self) -> Path:
        return self.root / HISTORY_DIR

    @property
    def bundle(self) -> Path:
        return self.root / f"{self.root.name}{DEPLOY_BUNDLE_SUFFIX}"

    @property
    def bundle_index(self) -> Path:
        """``bundle.json``: present where this directory is an unpacked bundle."""
        return self.root / BUNDLE_INDEX

    @property
    def verification_set(self) -> Path:
        return self.root / VERIFICATION_SET

    def retired_by_training(self) -> list[Path]:
        """What training this run again moves to history: the previous training's outputs and every
        artifact made from its checkpoint (stale once the checkpoint changes), those that exist."""
        derived = [*DERIVED_FILES, *(rejected_name(name) for name in ONNX_INT8.values())]
        layer_reports = [layer_report_name(name) for name in derived if name != ONNX_FP32]
        files = [self.root / name for name in (*TRAINING_FILES, *TRAINING_PLOTS, *derived, *layer_reports)]
        files.append(self.bundle)
        folders = [self.root / name for name in DERIVED_DIRS]
        return [p for p in files if p.is_file()] + [p for p in folders if p.is_dir()]

    def require(self, path: Path, how: str) -> Path:
        """``path`` if it exists, else a UserError that names the command that makes it."""
        if not path.exists():
            raise UserError(f"{path} does not exist: {how}")
        return path

    def engine_file(self, gpu_name: str, compute_capability: str, trt_version: str, precision: str) -> Path:
        """Where a machine's engine of ``precision`` lives in this run."""
        return self.engines / engine_dir_name(gpu_name, compute_capability, trt_version) / engine_name(precision)

    def engine_files(self) -> list[Path]:
        return sorted(self.engines.glob("*/*.engine")) if self.engines.is_dir() else []
