"""Checking an artifact against its manifest, and naming the command that makes it again.

A file that no longer has the sha256 its manifest recorded (changed, cut short or replaced after
it was made) is refused with the command that remakes it; an artifact its maker did not accept
is told apart from one that was; a file without a manifest is *unverified* (:func:`unverified_reason`). :func:`run_root` finds the run directory an artifact belongs to:
where its recorded parent lives, and what the remake command names.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.atomic import sha256_file
from edge.errors import UserError
from edge.manifest import Manifest, manifest_path, read_manifest

# The command that makes each kind again (RUN is the artifact's run directory).
_REMAKE = {
    "checkpoint": "`edge train --out {run}` (or `edge pretrained --out {run}`)",
    "onnx": "`edge export {run}`",
    "onnx-int8-cpu": "`edge quantize {run} --target cpu`",
    "onnx-int8-trt": "`edge quantize {run} --target trt`",
    "onnx-int8-openvino": "`edge quantize {run} --target openvino`",
    "engine": "`edge engine {run} --precision {precision}`",
    "calibration": "`edge calibrate {run}`",
    "bench-report": "`edge bench {run}`",
    "bundle": "`edge pack {run}`",
    "video": "delete it (the demo video is written again)",
}
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> the sha256 found to match


def verify_file(artifact: str | os.PathLike[str]) -> Manifest:
    """Read the manifest and check that the file still has the recorded sha256; a mismatched pair
    (the file changed, was cut short or replaced after its manifest was written) is a UserError
    naming the command that makes it again. Hashing is cached by path, size and mtime, so a reader
    pays for it once per process."""
    path = Path(artifact)
    manifest = read_manifest(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key) == manifest.sha256:
        return manifest
    if sha256_file(path) != manifest.sha256:
        raise UserError(
            f"{path} does not match its manifest {manifest_path(path).name} (sha256 differs: the file changed or "
            f"was cut short after it was made): make it again with {remake_command(path, manifest)}"
        )
    _VERIFIED[key] = manifest.sha256
    return manifest


def is_rejected(manifest: Manifest, fix: str = "rebuild it") -> bool:
    """Whether the artifact's maker did not accept it (manifest metrics ``accepted: false``); no
    verdict recorded counts as accepted. A verdict that is not a boolean is a UserError."""
    accepted = manifest.metrics.get("accepted")
    if accepted is not None and not isinstance(accepted, bool):
        raise UserError(f"{manifest.file}'s manifest says accepted: {accepted!r} (not true or false): {fix}")
    return accepted is False


def verify_artifact(artifact: str | os.PathLike[str]) -> Manifest | None:
    """:func:`verify_file` for an artifact with a manifest; None for a bare file (a user's own ONNX
    model, say), which has nothing to be checked against."""
    return verify_file(artifact) if manifest_path(artifact).exists() else None


def unverified_reason(artifact: str | os.PathLike[str]) -> str | None:
    """Why ``artifact`` is *unverified* (None: it has a manifest): a model file without its manifest
    beside it — made outside edge, or its manifest deleted — has no hash, parent or acceptance to
    check, so nothing vouches for it. Bench marks its row ``unverified``, the gate fails it unless
    --allow-unverified, and pack, engine and triton refuse it unless --force."""
    path = Path(artifact)
    if manifest_path(path).exists():
        return None
    return (
        f"{path.name} has no manifest ({manifest_path(path).name}): made outside edge or its manifest was deleted, "
        "so nothing vouches for its hash, parent or acceptance"
    )


def remake_command(artifact: str | os.PathLike[str], manifest: Manifest) -> str:
    """The command that makes ``artifact`` (of ``manifest.kind``) again, in backticks."""
    return _REMAKE.get(manifest.kind, "the edge command that made it").format(
        run=run_root(artifact, manifest.kind), precision=manifest.provenance.get("precision", "PRECISION")
    )


# How far below its run directory an artifact of each kind lives (engines/<machine>/, calibration/, bench/).
_DEPTH = {"engine": 2, "calibration": 1, "bench-report": 1}


def run_root(artifact: str | os.PathLike[str], kind: str) -> Path:
    """The run directory an artifact of ``kind`` belongs to (where its recorded parent lives)."""
    root = Path(artifact).parent
    for _ in range(_DEPTH.get(kind, 0)):
        root = root.parent
    return root
