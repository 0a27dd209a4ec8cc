"""Calibration sets: a seeded, stratified draw from the training split, stored with its manifest.

    RUN/calibration/calibration.npy        float32 NCHW, preprocessed with the model's spec
    RUN/calibration/calibration.npy.json   manifest: data, split, seed, items, class counts, content hash

The set is drawn from the training split only, never from the evaluation split. The cached
tensor is memory-mapped when read, so a large set never has to sit in RAM.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.artifact_spec import artifact_spec
from edge.atomic import atomic_path
from edge.errors import UserError
from edge.history import history_root, keeping_previous
from edge.manifest import read_manifest, write_manifest
from edge.run import RunDir
from edge.spec import PreprocessSpec

log = logging.getLogger(__name__)

DEFAULT_SIZE = 512
SPLIT = "train"


@dataclass
class CalibrationSet:
    """A calibration tensor (memory-mapped) and what it was drawn from."""

    path: Path
    tensor: np.ndarray
    provenance: dict[str, Any]
    spec: PreprocessSpec

    @property
    def content_hash(self) -> str:
        return str(self.provenance["content_hash"])

    def __len__(self) -> int:
        return len(self.tensor)


def content_hash(ids: Sequence[str], labels: np.ndarray, tensor: np.ndarray) -> str:
    """Hash of what the set holds: item ids, labels and the preprocessed values."""
    digest = hashlib.sha256("\n".join(ids).encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(tensor).tobytes())
    return digest.hexdigest()


def build_calibration_set(
    run_dir: str | os.PathLike[str],
    data: str | None,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CalibrationSet:
    """Draw ``size`` training images (stratified, seeded), preprocess them with the run's spec and
    store tensor + manifest under RUN/calibration/."""
    if size < 1:
        raise UserError(f"--size must be at least 1, got {size}")
    run = RunDir.open(run_dir)
    spec = artifact_spec(run.root)
    from train.splits import run_data

    pinned = run_data(run.root, data)
    source = pinned.source
    if spec.num_classes and len(source.classes) != spec.num_classes:
        raise UserError(
            f"{data} has {len(source.classes)} classes but the model in {run.root} has {spec.num_classes}: "
            "calibrate with the data the model was trained on"
        )
    split = pinned.split(SPLIT, size, seed)  # only the run's own training items, whatever the seed
    images = [split.image(i) for i in _progress(range(len(split)), "reading calibration images", progress)]
    return store_calibration_set(
        run,
        spec,
        images,
        list(split.ids),
        np.asarray(split.labels),
        data=pinned.data,
        seed=seed,
        requested=size,
        classes=source.classes,
        out=out,
    )


def store_calibration_set(
    run: RunDir,
    spec: PreprocessSpec,
    images: Sequence[np.ndarray],
    ids: list[str],
    labels: np.ndarray,
    data: str,
    seed: int,
    requested: int,
    classes: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
) -> CalibrationSet:
    """Preprocess ``images`` with ``spec`` and write the tensor cache and its manifest atomically."""
    path = Path(out) if out else run.calibration_file
    tensor = spec.apply_batch(list(images))
    if not np.isfinite(tensor).all():
        raise UserError(f"calibration images from {data} preprocess to NaN/Inf values: check the data and the spec")
    counts = {name: int(np.count_nonzero(labels == i)) for i, name in enumerate(classes)} if len(classes) else {}
    _warn_if_short(len(tensor), requested, counts)
    # the set already there (and its manifest) goes to RUN/history/<time>/ first: a failed write drops that copy again
    keeping = keeping_previous(history_root(path, run.root), [path], "edge calibrate replaces it")
    with keeping, atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, tensor)
    provenance = {
        "data": data,
        "split": SPLIT if classes else "photos",
        "seed": seed,
        "requested": requested,
        "count": len(tensor),
        "class_counts": counts,
        "items": ids,
        "labels": [int(v) for v in labels],
        "content_hash": content_hash(ids, labels, tensor),
        "input_shape": list(tensor.shape[1:]),
    }
    parent = run.onnx if run.onnx.exists() else (run.checkpoint if run.checkpoint.exists() else None)
    write_manifest(path, "calibration", spec, parent=parent, provenance=provenance)
    log.info("calibration set: %d images from %s (%s split), seed %d -> %s", len(tensor), data, provenance["split"], seed, path)
    return load_calibration_set(path)


def _warn_if_short(count: int, requested: int, class_counts: dict[str, int]) -> None:
    if count < requested:
        log.warning("calibration set has %d images, fewer than the %d requested (the split is smaller)", count, requested)
    missing = [name for name, n in class_counts.items() if n == 0]
    if missing:
        log.warning("calibration set misses class(es) %s; class counts: %s", missing, class_counts)


def load_calibration_set(path_or_run: str | os.PathLike[str], spec: PreprocessSpec | None = None) -> CalibrationSet:
    """Open a stored calibration set (a run directory or the .npy); refuse one made for another spec."""
    path = Path(path_or_run)
    if path.is_dir():
        path = RunDir(path).calibration_file
    if not path.is_file():
        raise UserError(f"calibration set {path} does not exist: build it with `edge calibrate RUN --data DATA`")
    manifest = read_manifest(path)
    if manifest.kind != "calibration":
        raise UserError(f"{path} is a {manifest.kind!r} artifact, not a calibration set")
    try:
        tensor = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable calibration tensor ({exc}): rebuild it with `edge calibrate`") from exc
    stored_spec = manifest.preprocess_spec
    if spec is not None and stored_spec.to_dict() != spec.to_dict():
        raise UserError(f"{path} was preprocessed for another model spec: rebuild it with `edge calibrate`")
    if tensor.ndim != 4 or tuple(tensor.shape[1:]) != stored_spec.input_shape:
        raise UserError(f"{path} holds shape {tensor.shape}, expected (N, {', '.join(map(str, stored_spec.input_shape))})")
    return CalibrationSet(path, tensor, dict(manifest.provenance), stored_spec)


def photo_calibration_set(run_dir: str | os.PathLike[str], count: int = 48, seed: int = 0) -> CalibrationSet:
    """A calibration set of crops of the scikit-image photos, for a model with no data here (the
    ImageNet-pretrained Lite0): the calibration role of ``edge.photos.photo_set``, which shares no
    image with the val and test photo sets that quantize evaluates on."""
    from edge.photos import photo_set

    run = RunDir.open(run_dir)
    spec = artifact_spec(run.root)
    images = photo_set(count, seed, role="calibration")
    ids = [f"photo:calibration:{i}" for i in range(len(images))]
    return store_calibration_set(
        run, spec, images, ids, np.full(len(images), -1), data="scikit-image photos", seed=seed, requested=count
    )


def _progress(items: Any, description: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from edge.console import track

    return track(items, description=description, transient=True, unit="images")
