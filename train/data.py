"""Data sources: ImageFolder trees and Fashion-MNIST, as decoded uint8 images with labels.

Every split yields ``(image, label)`` where ``image`` is what a camera or ``cv2.imread`` gives:
HxWx3 BGR or HxW gray, uint8. So the evaluation path is exactly ``spec.apply(image)``, the same
code that runs on the device.

Splits: ``train`` (training), ``val`` (drawn from the training data, seeded and stratified: early
stopping, quantization choices) and ``test`` (held out: acceptance and reports only).

``open_data("fashion-mnist")`` reads Debian's ``dataset-fashion-mnist`` files
(``/usr/share/datasets/fashion-mnist``), else downloads through torchvision where online.
``open_data(PATH)`` reads an ImageFolder tree: ``PATH/train`` + ``PATH/val`` (+ ``PATH/test``), or
class folders directly under ``PATH`` with a seeded stratified split.

An image is evaluated once or not at all:

- the scan decodes every file in full (a truncated JPEG passes PIL's ``verify()`` but not a
  decode): unreadable files are skipped, counted per split (``ImageSplit.skipped``) and named in one
  warning; nothing is substituted later, so an image that breaks after the scan is an error that
  names it;
- no content is in two splits: every item carries a content hash (the file's bytes, the pixels for
  Fashion-MNIST), and an item of val or test whose content is already in train (or earlier in val,
  or earlier in its own split) is dropped and counted (``DataSource.duplicates``, one warning).
  Training keeps its copies; what is evaluated holds each image once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError, require

log = logging.getLogger(__name__)

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLITS = ("train", "val", "test")
HASH_CHARS = 16  # sha256 prefix per item: 64 bits, no accidental collision in any realistic data set
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.15


def content_hash(data: bytes) -> str:
    """What an item is, for splits.json and for finding duplicates: sha256 of its bytes, shortened."""
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def stratified_pick(labels: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of ``count`` items (all items when None)."""
    labels = np.asarray(labels)
    if count is None or count >= len(labels):
        return np.arange(len(labels))
    if count <= 0:
        raise UserError(f"subset size must be positive, got {count}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    # Round-robin over a seeded class order gives equal counts (+-1) without rounding drift.
    picked: list[int] = []
    depth = 0
    order = rng.permutation(classes)
    while len(picked) < count:
        progressed = False
        for c in order:
            if depth < len(per_class[c]):
                picked.append(int(per_class[c][depth]))
                progressed = True
                if len(picked) == count:
                    break
        if not progressed:
            break
        depth += 1
    return np.sort(np.asarray(picked, dtype=np.int64))


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split -> (keep, held_out) index arrays; every class keeps one item at least."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(len(idx) * fraction))
        n = min(max(n, 1 if len(idx) > 1 else 0), len(idx) - 1)
        held.append(idx[:n])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    return keep, held_out


@dataclass
class ImageSplit(Sequence):
    """One split: ``split[i] -> (uint8 image, label)``; ``ids`` name the items for manifests,
    ``hashes`` (where the source computed them) their content, ``skipped`` the unreadable files left out."""

    source: str
    name: str
    classes: tuple[str, ...]
    labels: np.ndarray
    ids: list[str]
    _load: Callable[[int], np.ndarray]
    skipped: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._load(int(index)), int(self.labels[index])

    def image(self, index: int) -> np.ndarray:
        return self._load(int(index))

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> "ImageSplit":
        idx = np.asarray(indices, dtype=np.int64)
        base = self._load
        return ImageSplit(
            self.source,
            name or self.name,
            self.classes,
            self.labels[idx],
            [self.ids[i] for i in idx],
            lambda i: base(int(idx[i])),
            list(self.skipped),
            [self.hashes[i] for i in idx] if self.hashes else [],
        )

    def take(self, count: int | None, seed: int = 0) -> "ImageSplit":
        """A seeded stratified subset of ``count`` items (the whole split when None)."""
        if count is None or count >= len(self):
            return self
        return self.subset(stratified_pick(self.labels, count, seed))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.source}|{self.name}|{','.join(self.classes)}".encode())
        digest.update("\n".join(self.ids).encode())
        digest.update(np.asarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


@dataclass
class DataSource:
    name: str
    classes: tuple[str, ...]
    splits: dict[str, ImageSplit]
    duplicates: dict[str, int] = field(default_factory=dict)  # {"removed_from_val": n, "removed_from_test": m}

    def split(self, name: str, limit: int | None = None, seed: int = 0) -> ImageSplit:
        if name not in self.splits:
            raise UserError(f"unknown split {name!r}: use one of {', '.join(self.splits)}")
        return self.splits[name].take(limit, seed)


def open_data(source: str | os.PathLike[str], seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION) -> DataSource:
    """``fashion-mnist`` or an ImageFolder directory -> DataSource with train/val/test splits."""
    text = str(source)
    if text.lower() in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return drop_duplicates(fashion_mnist(seed=seed, val_fraction=val_fraction))
    path = Path(text)
    if not path.exists():
        raise UserError(f"data {path} does not exist: give an ImageFolder directory or 'fashion-mnist'")
    if not path.is_dir():
        raise UserError(f"data {path} is not a directory: give an ImageFolder tree (class folders of images)")
    return drop_duplicates(image_folder(path, seed=seed, val_fraction=val_fraction))


def drop_duplicates(source: DataSource) -> DataSource:
    """Keep each content in one split only: an item of val or test whose content hash is already in
    train, in val, or earlier in its own split is dropped, counted in ``source.duplicates`` and named
    in one warning. Train keeps its own copies (they only weigh an image twice in training)."""
    seen = set(source.splits["train"].hashes)
    removed: dict[str, int] = {}
    example = ""
    for name in ("val", "test"):
        split = source.splits[name]
        keep = []
        for index, digest in enumerate(split.hashes):
            if digest in seen:
                example = example or split.ids[index]
                continue
            seen.add(digest)
            keep.append(index)
        removed[f"removed_from_{name}"] = len(split) - len(keep)
        if not keep:
            raise UserError(
                f"{source.name}: every image of the {name} split has the same content as an image kept in another split: "
                "add distinct images"
            )
        if len(keep) < len(split):
            source.splits[name] = split.subset(keep)
    source.duplicates = removed
    if any(removed.values()):
        _warn_once(
            "%s: %d val and %d test image(s) have the same content as an image in train or earlier in val/test "
            "(e.g. %s): each content is kept in one split only (train first), the copies are left out and counted "
            "in splits.json",
            source.name,
            removed["removed_from_val"],
            removed["removed_from_test"],
            example,
            key=("duplicates", source.name, str(removed)),
        )
    return source


# ---- Fashion-MNIST ---------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        magic, count = struct.unpack(">II", data[:8])
        if magic == 2051:
            rows, cols = struct.unpack(">II", data[8:16])
            return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
        if magic == 2049:
            return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise UserError(f"{path} is not a readable IDX file: {exc}") from exc
    raise UserError(f"{path} is not an IDX image or label file (magic {magic})")


def _fashion_mnist_dir() -> Path:
    for directory in FASHION_MNIST_DIRS:
        if (directory / "train-images-idx3-ubyte.gz").exists():
            return directory
    cache = Path(os.environ.get("EDGE_DATA_CACHE", Path.home() / ".cache" / "edge")) / "FashionMNIST" / "raw"
    if (cache / "train-images-idx3-ubyte.gz").exists():
        return cache
    tv_datasets = require("torchvision.datasets", "train", "Downloading Fashion-MNIST")
    try:
        import socket

        socket.create_connection(("github.com", 443), timeout=3).close()
        tv_datasets.FashionMNIST(str(cache.parent.parent), train=True, download=True)
        tv_datasets.FashionMNIST(str(cache.parent.parent), train=False, download=True)
    except Exception as exc:
        raise UserError(
            "Fashion-MNIST is not on this machine and cannot be downloaded: "
            "apt-get install dataset-fashion-mnist (Debian), or run online once"
        ) from exc
    return cache


def fashion_mnist(seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION) -> DataSource:
    directory = _fashion_mnist_dir()
    train_x = _read_idx(directory / "train-images-idx3-ubyte.gz")
    train_y = _read_idx(directory / "train-labels-idx1-ubyte.gz")
    test_x = _read_idx(directory / "t10k-images-idx3-ubyte.gz")
    test_y = _read_idx(directory / "t10k-labels-idx1-ubyte.gz")
    keep, held = stratified_split(train_y, val_fraction, seed)

    def split(name: str, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, origin: str) -> ImageSplit:
        return ImageSplit(
            "fashion-mnist",
            name,
            FASHION_MNIST_LABELS,
            labels[idx],
            [f"{origin}:{i}" for i in idx],
            lambda i: images[idx[i]],
            hashes=[content_hash(np.ascontiguousarray(images[i]).tobytes()) for i in idx],
        )

    everything = np.arange(len(test_y))
    return DataSource(
        "fashion-mnist",
        FASHION_MNIST_LABELS,
        {
            "train": split("train", train_x, train_y, keep, "train"),
            "val": split("val", train_x, train_y, held, "train"),
            "test": split("test", test_x, test_y, everything, "t10k"),
        },
    )


# ---- ImageFolder -------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to uint8 BGR (or gray); UserError when it is not a readable image."""
    cv2 = require("cv2", "opencv", "Reading images")
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    if data is None:
        raise UserError(f"image {path} does not exist")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UserError(f"{path} is not a readable image (corrupt or unsupported format)")
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = (image / (256 if image.dtype == np.uint16 else max(1, image.max() / 255))).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _scan_class_folders(root: Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise UserError(f"{root} has no class folders: an ImageFolder tree is ROOT/<class>/<image files>")
    files: list[Path] = []
    labels: list[int] = []
    empty = []
    for index, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not found:
            empty.append(name)
        files.extend(found)
        labels.extend([index] * len(found))
    if not files:
        raise UserError(f"{root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    if empty:
        raise UserError(f"{root}: class folder(s) {empty} hold no images; remove them or add images")
    if len(classes) < 2:
        raise UserError(f"{root} has a single class ({classes[0]}): a classifier needs at least two class folders")
    return classes, files, labels


# path -> ((size, mtime_ns), content hash or None when unreadable): a stage that opens the same folder
# again in one process (quantize reads it for calibration, val and test) decodes each file once.
_SCANNED: dict[str, tuple[tuple[int, int], str | None]] = {}


def scan_image(path: Path) -> str | None:
    """The content hash of an image file that decodes in full, None when it does not.

    ``verify()`` only checks the header and a truncated JPEG passes it; ``load()`` decodes every
    byte of the entropy-coded data and fails on it. A JPEG decodes at reduced scale (``draft``):
    the same data is read, in a fraction of the time."""
    from PIL import Image

    stat = path.stat()
    key, stamp = str(path.resolve()), (stat.st_size, stat.st_mtime_ns)
    cached = _SCANNED.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    data = path.read_bytes()
    digest: str | None = content_hash(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception:  # PIL raises many types for a broken file (OSError, SyntaxError, ValueError, ...): each is unreadable
        digest = None
    _SCANNED[key] = (stamp, digest)
    return digest


def _scan_images(files: list[Path]) -> tuple[list[Path], list[str], list[str]]:
    """Split ``files`` into the readable ones (with their content hashes) and the unreadable ones."""
    good, hashes, bad = [], [], []
    for path in files:
        digest = scan_image(path)
        if digest is None:
            bad.append(str(path))
        else:
            good.append(path)
            hashes.append(digest)
    return good, hashes, bad


_WARNED: set[tuple[str, ...]] = set()


def _warn_once(message: str, *args: Any, key: tuple[str, ...]) -> None:
    """Log a data warning once per process: a stage that opens the same folder again (quantize reads
    it for calibration, val and test) must not repeat it."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    log.warning(message, *args)


def image_folder(root: Path, seed: int = 0, val_fraction: float = DEFAULT_VAL_FRACTION) -> DataSource:
    layout = {name: root / name for name in SPLITS if (root / name).is_dir()}
    if "train" in layout:
        train_classes, train_files, train_labels = _scan_class_folders(layout["train"])
        parts: dict[str, tuple[list[Path], list[int]]] = {}
        for name in ("val", "test"):
            if name in layout:
                classes, files, labels = _scan_class_folders(layout[name])
                if classes != train_classes:
                    raise UserError(f"{layout[name]} has classes {list(classes)}, train/ has {list(train_classes)}")
                parts[name] = (files, labels)
        # With train/ and val/ only, val/ is the held-out test split and val is drawn from train.
        if "test" not in parts and "val" in parts:
            parts["test"] = parts.pop("val")
        labels_arr = np.asarray(train_labels)
        keep, held = stratified_split(labels_arr, val_fraction, seed)
        if "val" not in parts:
            parts["val"] = ([train_files[i] for i in held], [train_labels[i] for i in held])
            train_files, train_labels = [train_files[i] for i in keep], [train_labels[i] for i in keep]
        if "test" not in parts:
            raise UserError(f"{root} has train/ but neither val/ nor test/: add one, or put class folders directly under {root}")
        parts["train"] = (train_files, train_labels)
        classes = train_classes
    else:
        classes, files, labels = _scan_class_folders(root)
        labels_arr = np.asarray(labels)
        rest, test_idx = stratified_split(labels_arr, DEFAULT_TEST_FRACTION, seed)
        keep_rel, val_rel = stratified_split(labels_arr[rest], val_fraction, seed + 1)
        parts = {
            "train": ([files[i] for i in rest[keep_rel]], [labels[i] for i in rest[keep_rel]]),
            "val": ([files[i] for i in rest[val_rel]], [labels[i] for i in rest[val_rel]]),
            "test": ([files[i] for i in test_idx], [labels[i] for i in test_idx]),
        }

    splits = {}
    unreadable: dict[str, list[str]] = {}
    for name, (files, labels) in parts.items():
        good, hashes, bad = _scan_images(files)
        unreadable[name] = bad
        good_set = set(good)
        keep_labels = [lab for f, lab in zip(files, labels) if f in good_set]
        if not good:
            raise UserError(f"{root}: no readable images in the {name} split")
        splits[name] = _file_split(str(root), name, classes, good, keep_labels, bad, hashes)
    bad_files = [b for name in SPLITS for b in unreadable.get(name, [])]
    if bad_files:
        _warn_once(
            "skipped %d unreadable image(s) in %s (%s; a full decode failed), e.g. %s: they are left out and counted in "
            "splits.json",
            len(bad_files),
            root,
            ", ".join(f"{name} {len(unreadable[name])}" for name in SPLITS if name in unreadable),
            bad_files[0],
            key=tuple(str(Path(b).resolve()) for b in bad_files),
        )
    return DataSource(str(root), classes, splits)


def _file_split(
    source: str,
    name: str,
    classes: tuple[str, ...],
    files: list[Path],
    labels: list[int],
    skipped: list[str],
    hashes: list[str],
) -> ImageSplit:
    def load(index: int) -> np.ndarray:
        # Never a stand-in: an image that decoded at the scan and fails now is an error, so no image
        # is ever evaluated twice and n stays the number of distinct images.
        try:
            return read_image(files[index])
        except UserError as exc:
            raise UserError(
                f"{files[index]} was readable when {source} was scanned and no longer decodes ({exc}): "
                "restore or remove it and run again"
            ) from exc

    return ImageSplit(
        source, name, classes, np.asarray(labels, dtype=np.int64), [str(f) for f in files], load, list(skipped), hashes
    )
