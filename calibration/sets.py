"""Calibration sets: a seeded, stratified draw from the training split, stored with its manifest.

    RUN/calibration/calibration.npy        float32 NCHW, preprocessed with the model's spec
    RUN/calibration/calibration.npy.json   manifest: data, split, seed, items and their content
                                           hashes, the train split's fingerprint, class counts,
                                           content hash of the tensor

The set is drawn from the training split only, never from the evaluation split. It belongs to the
split it was drawn from: every reader (:func:`load_calibration_set`, so ``edge quantize`` with or
without ``--calibration``, the selftest and the bench scripts) refuses a set whose items are not all
in the run's *current* train split (``RUN/splits.json``: a run trained again with another seed has
other test images, some of them drawn for calibration before), and a set that records no item
hashes (made before this check) when the run has a pinned split. The fix is one command: `edge
calibrate RUN`. The cached tensor is memory-mapped when read, so a large set never has to sit in RAM.
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
from edge.run import CALIBRATION_DIR, CALIBRATION_FILE, RunDir
from edge.spec import PreprocessSpec

log = logging.getLogger(__name__)

DEFAULT_SIZE = 512
SPLIT = "train"
PHOTO_SPLIT = "photos"  # a set of scikit-image photos (a run with no data of its own)


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
    from train.splits import item_ids, split_hashes

    return store_calibration_set(
        run,
        spec,
        images,
        item_ids(split, pinned.pinned.source),  # as splits.json names them
        np.asarray(split.labels),
        data=pinned.data,
        seed=seed,
        requested=size,
        classes=source.classes,
        out=out,
        item_hashes=split_hashes(split),
        split_fingerprint=pinned.pinned.fingerprint(SPLIT),
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
    item_hashes: Sequence[str] | None = None,
    split_fingerprint: str | None = None,
) -> CalibrationSet:
    """Preprocess ``images`` with ``spec`` and write the tensor cache and its manifest atomically;
    ``item_hashes`` and ``split_fingerprint`` tie a set drawn from the run's train split to it."""
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
        "split": SPLIT if classes else PHOTO_SPLIT,
        "seed": seed,
        "requested": requested,
        "count": len(tensor),
        "class_counts": counts,
        "items": ids,
        "labels": [int(v) for v in labels],
        "content_hash": content_hash(ids, labels, tensor),
        "input_shape": list(tensor.shape[1:]),
    }
    if item_hashes is not None:
        provenance["item_hashes"] = list(item_hashes)
        provenance["split_fingerprint"] = split_fingerprint
        provenance["run_splits"] = str(run.splits)
    parent = run.onnx if run.onnx.exists() else (run.checkpoint if run.checkpoint.exists() else None)
    write_manifest(path, "calibration", spec, parent=parent, provenance=provenance)
    log.info("calibration set: %d images from %s (%s split), seed %d -> %s", len(tensor), data, provenance["split"], seed, path)
    return load_calibration_set(path, run=run)


def _warn_if_short(count: int, requested: int, class_counts: dict[str, int]) -> None:
    if count < requested:
        log.warning("calibration set has %d images, fewer than the %d requested (the split is smaller)", count, requested)
    missing = [name for name, n in class_counts.items() if n == 0]
    if missing:
        log.warning("calibration set misses class(es) %s; class counts: %s", missing, class_counts)


def load_calibration_set(
    path_or_run: str | os.PathLike[str], spec: PreprocessSpec | None = None, run: RunDir | str | os.PathLike[str] | None = None
) -> CalibrationSet:
    """Open a stored calibration set (a run directory or the .npy); refuse one made for another spec,
    or one that does not belong to ``run``'s current train split (:func:`check_split`).

    ``run`` defaults to the run that holds the set (``RUN`` or ``RUN/calibration/calibration.npy``);
    a set elsewhere is checked against the run it is used for when the caller names it."""
    path = Path(path_or_run)
    if path.is_dir():
        run = run if run is not None else path
        path = RunDir(path).calibration_file
    elif run is None and path.parent.name == CALIBRATION_DIR and path.name == CALIBRATION_FILE:
        run = path.parent.parent
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
    calib = CalibrationSet(path, tensor, dict(manifest.provenance), stored_spec)
    if run is not None:
        check_split(calib, run if isinstance(run, RunDir) else RunDir(Path(run)))
    return calib


def check_split(calib: CalibrationSet, run: RunDir) -> None:
    """Refuse (UserError, one line) a set whose items are not all in ``run``'s current train split.

    A run with no pinned split (a pretrained run calibrated on photos) has nothing to compare with.
    An item counts as in the split when splits.json lists its id under train with the same content
    hash; a set that records no hashes predates the check and cannot be shown to hold only training
    images."""
    from train.splits import read_splits

    pinned = read_splits(run)
    if pinned is None:
        return
    fix = f"run `edge calibrate {run.root}`"
    items, hashes = calib.provenance.get("items"), calib.provenance.get("item_hashes")
    if calib.provenance.get("split") == PHOTO_SPLIT:
        raise UserError(
            f"calibration set {calib.path} holds scikit-image photos, but {run.root} pins a data split ({pinned.path}): "
            f"calibrate on its training images, {fix}"
        )
    if not isinstance(items, list) or not isinstance(hashes, list) or len(items) != len(hashes):
        raise UserError(
            f"calibration set {calib.path} records no content hashes of its items (it predates the check against the run's "
            f"split), so nothing shows that it holds only training images of {pinned.path}: {fix}"
        )
    train = dict(zip(pinned.splits[SPLIT]["items"], pinned.splits[SPLIT]["hashes"]))
    outside = [item for item, digest in zip(items, hashes) if train.get(item) != digest]
    if outside:
        drawn = calib.provenance.get("split_fingerprint")
        raise UserError(
            f"{len(outside)} of {len(items)} images of calibration set {calib.path} are not in the current train split of "
            f"{pinned.path} (e.g. {outside[0]}; drawn from train split {drawn}, now {pinned.fingerprint(SPLIT)}): {fix}"
        )


def photo_calibration_set(run_dir: str | os.PathLike[str], count: int = 48, seed: int = 0) -> CalibrationSet:
    """A calibration set of crops of scikit-image photos, for a model with no data here (the
    ImageNet-pretrained Lite0): the calibration role of ``edge.photos.photo_set``, crops of other
    photos than the val and test photo sets that quantize evaluates on. Its item ids name the photo
    each crop comes from (``photo:calibration:INDEX:PHOTO``)."""
    from edge.photos import photo_set, photo_set_sources
    from train.splits import read_splits

    run = RunDir.open(run_dir)
    if read_splits(run) is not None:  # it would be refused by every reader (check_split)
        raise UserError(
            f"{run.root} pins a data split ({run.splits}): calibrate on its training images, run `edge calibrate {run.root}`"
        )
    spec = artifact_spec(run.root)
    images = photo_set(count, seed, role="calibration")
    ids = [f"photo:calibration:{i}:{name}" for i, name in enumerate(photo_set_sources(len(images), "calibration"))]
    return store_calibration_set(
        run, spec, images, ids, np.full(len(images), -1), data="scikit-image photos", seed=seed, requested=count
    )


def _progress(items: Any, description: str, enabled: bool) -> Any:
    if not enabled:
        return items
    from edge.console import track

    return track(items, description=description, transient=True, unit="images")
