"""The run owns its data split: ``RUN/splits.json``, written by training, read by every later stage.

Training pins which items are train, val and test (ids: dataset indices such as ``train:123`` for
Fashion-MNIST, paths relative to the data root for an ImageFolder tree), each with a content hash
(of the file's bytes, or of the decoded pixels for Fashion-MNIST), beside the seed, fractions,
classes and a fingerprint per split. No content is in two splits: the data source
(:func:`train.data.open_data`) keeps an exact duplicate in one split only (train first) and
splits.json counts what it left out (``duplicates``: ``removed_from_val``, ``removed_from_test``),
beside the files that did not decode (``unreadable``: per split, and their paths). Later stages
never re-draw the split from their own ``--seed``:

- ``calibrate`` draws only from train items, ``quantize --method auto`` chooses on val items, and
  acceptance, ``export`` verification and ``bench`` evaluate test items; a stage's ``--seed`` only
  subsamples *within* the pinned split;
- other data given to ``bench --eval`` is an *external* set, evaluated whole and labelled so; an
  image whose content hash is in the run's train or val split is refused, or excluded and counted.

A run trained before splits were pinned has no splits.json and gets a clear message. A pretrained
run (no training data) has none either: the first stage given ``--data`` pins one for it, marked
``trained: false``.

Small sets are named: a validation split under MIN_VAL_IMAGES images or MIN_VAL_PER_CLASS of a
class moves its top-1 by whole points per image, so training warns about it
(:func:`small_split_warning`) and ``quantize --method auto`` refuses to choose on one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomic import atomic_write_json
from edge.errors import UserError
from edge.manifest import manifest_path, read_manifest
from edge.run import RunDir
from train.data import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    HASH_CHARS,
    SPLITS,
    DataSource,
    ImageSplit,
    content_hash,
    open_data,
)

log = logging.getLogger(__name__)

SCHEMA = "edge-splits"
SCHEMA_VERSION = 1
FASHION_MNIST = "fashion-mnist"
# Below these a validation split is too small to choose on: one image of 200 is half a point of top-1.
MIN_VAL_IMAGES = 200
MIN_VAL_PER_CLASS = 20


# ---- identity of a data source and of its items ---------------------------------------------------


def source_key(data: str | os.PathLike[str]) -> str:
    """How a data source is recorded and compared: ``fashion-mnist`` or the folder's absolute path."""
    text = str(data)
    if text.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist"):
        return FASHION_MNIST
    return str(Path(text).expanduser().resolve())


def item_ids(split: ImageSplit, root: str) -> list[str]:
    """The split's items as recorded: dataset ids, or paths relative to the data root."""
    if split.source == FASHION_MNIST:
        return list(split.ids)
    return [os.path.relpath(Path(i).resolve(), root) for i in split.ids]


def item_hash(split: ImageSplit, index: int) -> str:
    """Content hash of one item: the file's bytes, or the decoded pixels where there is no file (the
    hash the data scan took, when it took one: the scan of this process read the file as it is now)."""
    if split.hashes:
        return split.hashes[index]
    if split.source == FASHION_MNIST:
        data = np.ascontiguousarray(split.image(index)).tobytes()
    else:
        data = Path(split.ids[index]).read_bytes()
    return content_hash(data)


def _relative(paths: list[str], root: str) -> list[str]:
    return [os.path.relpath(Path(p).resolve(), root) for p in paths]


def split_hashes(split: ImageSplit) -> list[str]:
    return [item_hash(split, i) for i in range(len(split))]


def fingerprint(ids: list[str], hashes: list[str], labels: list[int]) -> str:
    digest = hashlib.sha256()
    for item, content, label in zip(ids, hashes, labels):
        digest.update(f"{item}\t{content}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def small_split_warning(split: ImageSplit, fix: str, what: str = "validation") -> str | None:
    """One line when ``split`` has fewer than MIN_VAL_IMAGES images or fewer than MIN_VAL_PER_CLASS
    of some class (None otherwise): how small it is, what rests on it, and ``fix``."""
    counts = split.class_counts()
    rarest = min(counts, key=lambda c: counts[c]) if counts else None
    fewest = counts[rarest] if rarest is not None else 0
    if len(split) >= MIN_VAL_IMAGES and fewest >= MIN_VAL_PER_CLASS:
        return None
    per_image = 100.0 / max(len(split), 1)
    return (
        f"the {what} split has only {len(split)} images ({fewest} of class {rarest!r}; fewer than {MIN_VAL_IMAGES} "
        f"or {MIN_VAL_PER_CLASS} per class): one image moves its top-1 by {per_image:.2f} points, so early stopping, "
        f"the best checkpoint and `edge quantize --method auto` rest on noise; {fix}"
    )


# ---- the file ----------------------------------------------------------------------------------------


@dataclass
class PinnedSplits:
    """``RUN/splits.json`` as read back."""

    path: Path
    source: str
    classes: tuple[str, ...]
    seed: int
    val_fraction: float
    test_fraction: float | None
    trained: bool
    splits: dict[str, dict[str, Any]]  # name -> {"items", "labels", "hashes", "fingerprint", "count"}

    def fingerprint(self, name: str) -> str:
        return str(self.splits[name]["fingerprint"])

    def hashes(self, *names: str) -> set[str]:
        return {h for name in names for h in self.splits[name]["hashes"]}


def pin_splits(
    run: RunDir,
    data: str | os.PathLike[str],
    source: DataSource,
    seed: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    trained: bool = True,
    write: bool = True,
) -> PinnedSplits:
    """Write ``RUN/splits.json`` for ``source`` (opened with ``seed`` and ``val_fraction``); with
    ``write=False`` only compute it."""
    key = source_key(data)
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "source": key,
        "classes": list(source.classes),
        "seed": int(seed),
        "fractions": {"val": float(val_fraction), "test": None if key == FASHION_MNIST else DEFAULT_TEST_FRACTION},
        "trained": bool(trained),
        "hash": f"sha256[:{HASH_CHARS}] of the file bytes (pixels for fashion-mnist)",
        # left out by the data scan: content already in an earlier split, files that do not decode
        "duplicates": {f"removed_from_{name}": int(source.duplicates.get(f"removed_from_{name}", 0)) for name in ("val", "test")},
        "unreadable": {
            **{name: len(source.splits[name].skipped) for name in SPLITS},
            "items": [item for name in SPLITS for item in _relative(source.splits[name].skipped, key)],
        },
        "splits": {},
    }
    for name in SPLITS:
        split = source.splits[name]
        ids, hashes, labels = item_ids(split, key), split_hashes(split), [int(v) for v in split.labels]
        payload["splits"][name] = {
            "count": len(ids),
            "fingerprint": fingerprint(ids, hashes, labels),
            "items": ids,
            "labels": labels,
            "hashes": hashes,
        }
    if write:
        atomic_write_json(run.splits, payload)
        log.info("pinned the %s data split of %s to %s", key, run.root, run.splits)
    return _parse(run.splits, payload)


def read_splits(run: RunDir) -> PinnedSplits | None:
    """The run's pinned splits, None when it has no splits.json; a malformed file is a user error."""
    import json

    if not run.splits.exists():
        return None
    try:
        payload = json.loads(run.splits.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{run.splits} is not readable JSON ({exc}): retrain the run to write it again") from exc
    return _parse(run.splits, payload)


def _parse(path: Path, payload: Any) -> PinnedSplits:
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA:
        raise UserError(f"{path} is not an edge splits file (schema {SCHEMA!r} expected)")
    if payload.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {payload.get('schema_version')!r}; this edge reads {SCHEMA_VERSION}")
    try:
        splits = payload["splits"]
        for name in SPLITS:
            entry = splits[name]
            if not (len(entry["items"]) == len(entry["labels"]) == len(entry["hashes"])):
                raise ValueError(f"{name}: items, labels and hashes differ in length")
        fractions = payload["fractions"]
        return PinnedSplits(
            path,
            str(payload["source"]),
            tuple(payload["classes"]),
            int(payload["seed"]),
            float(fractions["val"]),
            None if fractions.get("test") is None else float(fractions["test"]),
            bool(payload["trained"]),
            splits,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is malformed ({type(exc).__name__}: {exc}): retrain the run to write it again") from exc


# ---- what a stage reads ------------------------------------------------------------------------------


@dataclass
class RunData:
    """The data a stage of a run works on: the run's own pinned split, or an external set."""

    pinned: PinnedSplits
    source: DataSource
    data: str
    external: bool = False
    exclude_seen: bool = False
    excluded: int = 0  # external images refused as seen in training, when exclude_seen

    def split(self, name: str, limit: int | None = None, seed: int = 0) -> ImageSplit:
        """Items of a pinned split (``limit`` of them, seeded, stratified; None = all), checked
        against their recorded ids and content hashes; for an external set, ``test`` is all of it."""
        if self.external:
            if name != "test":
                raise UserError(f"{self.data} is not the data {self.pinned.path.parent} was trained on: it can only be evaluated")
            return self._external().take(limit, seed)
        split = self.source.splits[name]
        recorded = self.pinned.splits[name]
        ids = item_ids(split, self.pinned.source)
        if ids != recorded["items"] or [int(v) for v in split.labels] != recorded["labels"]:
            missing = len(set(recorded["items"]) - set(ids))
            raise UserError(
                f"{self.data} no longer matches {self.pinned.path} ({name} split: {missing} of {len(recorded['items'])} "
                f"recorded items missing, {len(set(ids) - set(recorded['items']))} new): retrain on it, or evaluate it "
                "as external data with `edge bench RUN --eval DIR`"
            )
        subset = split.take(limit, seed)
        self._check_hashes(subset, recorded)
        return subset

    def _check_hashes(self, subset: ImageSplit, recorded: dict[str, Any]) -> None:
        expected = dict(zip(recorded["items"], recorded["hashes"]))
        for index, item in enumerate(item_ids(subset, self.pinned.source)):
            if item_hash(subset, index) != expected[item]:
                raise UserError(
                    f"{item} in {self.data} changed since training (its content hash differs from {self.pinned.path}): "
                    "retrain, or evaluate the folder as external data"
                )

    def _external(self) -> ImageSplit:
        whole = concat_splits([self.source.splits[n] for n in SPLITS if n in self.source.splits], "external")
        seen = self.pinned.hashes("train", "val")
        hashes = split_hashes(whole)
        overlap = [i for i, h in enumerate(hashes) if h in seen]
        if overlap and not self.exclude_seen:
            raise UserError(
                f"{len(overlap)} of {len(whole)} images in {self.data} are in {self.pinned.path.parent}'s train or val split "
                f"(e.g. {whole.ids[overlap[0]]}): an evaluation never touches training images; pass --exclude-seen "
                "to evaluate the rest"
            )
        keep = np.setdiff1d(np.arange(len(whole)), np.asarray(overlap, dtype=np.int64))
        self.excluded = len(overlap)
        return whole.subset(keep, "external")

    def describe(self, split: ImageSplit, name: str) -> dict[str, Any]:
        """What a report or manifest says about the images a stage used."""
        info: dict[str, Any] = {
            "data": self.data,
            "split": "external" if self.external else name,
            "external": self.external,
            "count": len(split),
            "fingerprint": split.fingerprint(),
            "run_splits": str(self.pinned.path),
        }
        if self.external:
            info["excluded_seen"] = self.excluded
        else:
            info["split_fingerprint"] = self.pinned.fingerprint(name)
        return info


def concat_splits(parts: list[ImageSplit], name: str) -> ImageSplit:
    """Several splits of one source as one split (items in order)."""
    offsets = np.cumsum([0] + [len(p) for p in parts])

    def load(index: int) -> np.ndarray:
        part = int(np.searchsorted(offsets, index, side="right") - 1)
        return parts[part].image(index - int(offsets[part]))

    first = parts[0]
    return ImageSplit(
        first.source,
        name,
        first.classes,
        np.concatenate([p.labels for p in parts]).astype(np.int64),
        [i for p in parts for i in p.ids],
        load,
        [s for p in parts for s in p.skipped],
        [h for p in parts for h in p.hashes] if all(p.hashes for p in parts) else [],
    )


def _was_trained(run: RunDir) -> bool:
    """A run whose checkpoint manifest does not say ``trained: false`` was (or may have been) trained."""
    if run.checkpoint.exists() and manifest_path(run.checkpoint).exists():
        return read_manifest(run.checkpoint).provenance.get("trained", True) is not False
    return True


def run_data(
    run_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    evaluate: bool = False,
    exclude_seen: bool = False,
) -> RunData:
    """The data of a run for a later stage.

    ``data`` None means the run's own data. The run's own data comes back split as training pinned
    it. Other data is refused, except for an evaluation (``evaluate=True``: ``bench --eval``),
    where it is an external set.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    if data is not None and source_key(data) != FASHION_MNIST and not Path(data).exists():
        raise UserError(f"data {data} does not exist: give an ImageFolder directory or 'fashion-mnist'")
    pinned = read_splits(run)
    if pinned is None:
        if _was_trained(run):
            raise UserError(
                f"{run.root} has no {run.splits.name}: it was trained before runs pinned their data split, so no stage "
                "can tell its training images from its test images; retrain it with `edge train`"
            )
        if data is None:
            raise UserError(f"{run.root} has no data of its own (a pretrained run): give --data")
        source = open_data(data)
        # A stage that draws from the data pins it; an evaluation only reads (and may still refuse it).
        pinned = pin_splits(run, data, source, seed=0, trained=False, write=not evaluate)
        return RunData(pinned, source, str(data))
    if data is None or source_key(data) == pinned.source:
        source = open_data(pinned.source, seed=pinned.seed, val_fraction=pinned.val_fraction)
        if source.classes != pinned.classes:
            raise UserError(
                f"{pinned.source} now has classes {list(source.classes)}; {pinned.path} recorded {list(pinned.classes)}"
            )
        return RunData(pinned, source, str(data or pinned.source))
    if not evaluate:
        raise UserError(
            f"{run.root} was trained on {pinned.source}, and this stage draws from that data's pinned split: "
            f"drop --data {data} (or pass the training data); other data can only be evaluated, with `edge bench --eval`"
        )
    return RunData(pinned, open_data(data), str(data), external=True, exclude_seen=exclude_seen)
