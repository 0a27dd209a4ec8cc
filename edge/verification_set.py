"""A bundle's verification set: test inputs, their labels and the float parent's logits on them.

``edge pack`` draws ``N`` images (default 256) from the run's pinned test split (``RUN/splits.json``:
never a training, validation or calibration image), stratified and seeded inside it, and runs the
float model (``model.onnx`` on ONNX Runtime's CPU) on them. ``edge verify`` runs every artifact on
every backend of the device over the same inputs and compares with those logits.

Stored compactly in ``verification.npz`` (numpy's zip, deflated, read without pickle):

- ``images``: each input after :meth:`PreprocessSpec.resize_crop`, uint8, in the spec's working
  colour (HxW for a gray model, HxWx3 BGR otherwise). :meth:`PreprocessSpec.to_input` turns it into
  the float32 network input on the device; ``to_input(resize_crop(frame)) == apply(frame)`` bit
  for bit (the same float32 operations), so the set is exact at 1 byte a pixel instead of 12;
- ``labels``: int64, the test split's classes;
- ``logits``: float32 N x classes, the float parent's, computed from those very inputs.

Its sha256 is in ``bundle.json``; a set whose bytes differ is refused (:func:`read_verification_set`).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UserError
from edge.run import SPLITS_FILE, RunDir
from edge.spec import PreprocessSpec

DEFAULT_COUNT = 256
REFERENCE = "onnx-fp32"  # whose logits the set carries: the float parent of every INT8 model and engine
ENCODING = "uint8 after resize/crop (spec working colour); normalised by the spec when read"
_BATCH = 32
_ARRAYS = ("images", "labels", "logits")


@dataclass(frozen=True)
class VerificationSet:
    images: np.ndarray  # uint8, N x H x W (gray) or N x H x W x 3 (BGR)
    labels: np.ndarray  # int64, N
    logits: np.ndarray  # float32, N x classes: the float parent's

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, spec: PreprocessSpec, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Float32 NCHW network inputs of images ``start:stop``, as ``spec.apply`` gives them."""
        chunk = self.images[start:stop]
        out = np.empty((len(chunk), *spec.input_shape), dtype=np.float32)
        for i, image in enumerate(chunk):
            out[i] = spec.to_input(image)
        return out

    def predictions(self) -> np.ndarray:
        """The float parent's top-1 class per image."""
        return np.argmax(self.logits, axis=1)


def build_verification_set(run: RunDir, count: int = DEFAULT_COUNT, seed: int = 0) -> tuple[VerificationSet, dict[str, Any]]:
    """``count`` images of the run's pinned test split, resized and cropped by ``model.onnx``'s spec,
    with their labels and ``model.onnx``'s logits (ONNX Runtime, CPU); and what ``bundle.json`` says
    of them (source, split fingerprints, the reference model's sha256 and backend)."""
    from edge.artifact_spec import artifact_spec
    from edge.manifest import manifest_path, read_manifest
    from edge.runners import select_runner
    from train.splits import read_splits, run_data

    if count <= 0:
        raise UserError(f"--verify-images must be positive (or 0 for no verification set), got {count}")
    if not run.onnx.exists():
        raise UserError(f"{run.onnx} does not exist: the verification set needs the float model; run `edge export {run.root}`")
    if read_splits(run) is None:
        raise UserError(
            f"{run.root} has no pinned test split ({SPLITS_FILE}): a verification set is drawn from it; "
            "pass --verify-images 0 to pack without one"
        )
    spec = artifact_spec(run.onnx)
    data = run_data(run.root)
    split = data.split("test", limit=count, seed=seed)
    if spec.num_classes and len(split.classes) != spec.num_classes:
        raise UserError(f"{run.onnx} has {spec.num_classes} classes, its test split {len(split.classes)}: re-export the run")
    images = np.stack([spec.resize_crop(split.image(i)) for i in range(len(split))])
    labels = np.asarray(split.labels, dtype=np.int64)
    partial = VerificationSet(images, labels, np.zeros((len(labels), 0), dtype=np.float32))
    with select_runner(run.onnx, device="cpu", backend="onnxruntime") as runner:
        logits = np.concatenate(
            [runner.infer(partial.inputs(spec, start, start + _BATCH)) for start in range(0, len(labels), _BATCH)]
        ).astype(np.float32, copy=False)
    import onnxruntime

    reference = read_manifest(run.onnx) if manifest_path(run.onnx).exists() else None
    info = {
        "count": len(labels),
        "data": data.data,
        "split": "test",
        "seed": seed,
        "fingerprint": split.fingerprint(),
        "split_fingerprint": data.pinned.fingerprint("test"),
        "reference": REFERENCE,
        "reference_file": run.onnx.name,
        "reference_sha256": reference.sha256 if reference else None,
        "reference_backend": f"onnxruntime {onnxruntime.__version__} cpu",
        "encoding": ENCODING,
        "image_shape": list(images.shape[1:]),
    }
    return VerificationSet(images, labels, logits), info


def encode_verification_set(vset: VerificationSet) -> bytes:
    """The ``verification.npz`` bytes (deflated)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=vset.images, labels=vset.labels, logits=vset.logits)
    return buffer.getvalue()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verification_set(path: str | os.PathLike[str], sha256: str, spec: PreprocessSpec) -> VerificationSet:
    """The set at ``path``, refused (UserError, one line) unless its bytes have ``sha256`` (from
    ``bundle.json``) and its arrays the shapes ``spec`` and each other imply."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: the bundle's verification set is missing; copy the bundle again")
    data = path.read_bytes()
    found = sha256_bytes(data)
    if found != sha256:
        raise UserError(
            f"{path} does not match the sha256 in {path.parent.name}/bundle.json ({found[:12]} != {sha256[:12]}): the "
            "verification set was altered or cut short; copy the bundle again, or `edge pack` the run again"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in _ARRAYS}
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path} is not a verification set ({type(exc).__name__}: {exc}): `edge pack` the run again") from exc
    vset = VerificationSet(arrays["images"], arrays["labels"].astype(np.int64), arrays["logits"].astype(np.float32))
    side = spec.input_size
    image_shape = (side, side) if spec.color == "gray" else (side, side, 3)
    n = len(vset.labels)
    if vset.images.dtype != np.uint8 or vset.images.shape != (n, *image_shape) or vset.logits.shape[0] != n or n == 0:
        raise UserError(
            f"{path} holds images {vset.images.shape} {vset.images.dtype}, {n} labels and logits {vset.logits.shape}; "
            f"the model takes {image_shape} uint8 before normalisation: `edge pack` the run again"
        )
    return vset
