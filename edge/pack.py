"""Bundle a run's deployable artifacts and their manifests into one .tar.gz for a device.

The bundle holds the ONNX models, INT8 models and engines with their ``.json`` manifests (plus any
external-data files they list) — no checkpoint, no calibration data, no bench reports. Unpack it
on the device and point ``edge camera`` or ``edge bench`` at the directory.

An artifact whose maker did not accept it (manifest metrics ``accepted: false``: an INT8 model that
missed `edge quantize`'s budget on the test split, or an engine built from one with --force) is
refused, unless --force, which bundles it and records it in the bundle's manifest.

The bundle says which backends run each artifact (``onnxruntime`` and ``openvino`` for the ONNX
models, ``ort-tensorrt`` too for all but the cpu and openvino INT8 models, ``tensorrt`` for engines) and the extra
that installs each: in its manifest (``provenance.backends`` / ``provenance.install``) and in a
``bundle.json`` inside the archive, so the device that unpacks it knows what to install.

The bundle carries its own proof (``--verify-images N``, default 256; 0 leaves it out): a
verification set (:mod:`edge.verification_set`) of N test images of the run's pinned split, their
labels and the float model's logits, in ``verification.npz`` with its sha256 in ``bundle.json``.
``edge verify`` on the device runs every artifact on every backend there over it. The size it adds
is printed.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tarfile
import time
from pathlib import Path
from typing import Any

from edge.atomic import atomic_path
from edge.errors import UserError
from edge.history import history_root, keeping_previous
from edge.manifest import Manifest, manifest_path, read_manifest, write_manifest
from edge.measure.rows import TORCH_FP32, run_artifacts
from edge.run import BUNDLE_INDEX, VERIFICATION_SET, RunDir
from edge.runners import compatible_backends
from edge.verification_set import DEFAULT_COUNT, build_verification_set, encode_verification_set, sha256_bytes
from edge.verify import is_rejected, unverified_reason, verify_file

log = logging.getLogger(__name__)

# backend -> the extra that installs it on the device (pip install -e '.[EXTRA]')
BACKEND_EXTRAS = {"onnxruntime": "cpu", "ort-tensorrt": "gpu", "openvino": "openvino", "tensorrt": "tensorrt", "torch": "train"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--out", default=None, help="archive path (default: RUN/<name>-deploy.tar.gz)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="bundle artifacts that edge quantize did not accept (manifest accepted: false) or without a manifest (unverified)",
    )
    parser.add_argument(
        "--verify-images",
        type=int,
        metavar="N",
        help=f"test images of the run's pinned split in the bundle's verification set, with the float model's logits, "
        f"for `edge verify` on the device (default {DEFAULT_COUNT} where the run pinned a split, none for a run without "
        "one, such as a pretrained run; 0: none)",
    )


def not_accepted(manifest: Manifest) -> str | None:
    """Why an artifact's maker did not accept it (manifest metrics ``accepted: false``), else None."""
    if not is_rejected(manifest):
        return None
    return str(manifest.metrics.get("reason") or "manifest accepted: false")


def deployable_files(run: RunDir, force: bool = False) -> list[Path]:
    """Artifacts (with manifests and external data) that a device needs; never checkpoints or
    calibration. A model without its manifest is unverified: refused unless ``force`` (then bundled
    bare, and ``bundle.json`` lists it under ``unverified``)."""
    files: list[Path] = []
    for name, path in run_artifacts(run).items():
        if name == TORCH_FP32:
            continue
        unverified = unverified_reason(path)
        if unverified and not force:
            raise UserError(f"{path}: unverified: {unverified}; make it with edge, delete it, or pass --force to bundle it")
        if unverified:
            log.warning("bundling %s although it is unverified (--force): %s", path.name, unverified)
            files.append(path)
            continue
        verify_file(path)  # never bundle a file that no longer matches its manifest
        files += [path, manifest_path(path)]
        for extra in read_manifest(path).extra_files:
            files.append(path.parent / extra)
    return files


def unaccepted_artifacts(run: RunDir, files: list[Path]) -> dict[str, str]:
    """Bundled artifacts (run-relative) that their maker did not accept, with the reason."""
    found = {}
    for path in files:
        if manifest_path(path).exists() and path.suffix != ".json":
            reason = not_accepted(read_manifest(path))
            if reason is not None:
                found[str(path.relative_to(run.root))] = reason
    return found


def artifact_backends(run: RunDir, files: list[Path]) -> dict[str, list[str]]:
    """Each bundled artifact (run-relative) -> the backends that run it, from its suffix and manifest kind."""
    found = {}
    for path in files:
        if path.suffix != ".json" and manifest_path(path).exists():
            found[str(path.relative_to(run.root))] = list(compatible_backends(path, read_manifest(path).kind))
    return found


def bundle_index(run: RunDir, contents: list[str], backends: dict[str, list[str]], rejected: dict[str, str]) -> dict[str, Any]:
    """What ``bundle.json`` inside the archive (and the bundle's manifest) says about the bundle."""
    used = sorted({b for names in backends.values() for b in names}, key=list(BACKEND_EXTRAS).index)
    install = {b: f"pip install -e '.[{BACKEND_EXTRAS[b]}]'" for b in used}
    if "onnxruntime" in install:
        install["onnxruntime"] += " (or '.[gpu]' for CUDA; never both)"
    return {"run": str(run.root), "contents": contents, "backends": backends, "install": install, "not_accepted": rejected}


def pack_run(run_path: str | Path, out: str | Path | None = None, force: bool = False, verify_images: int | None = None) -> Path:
    """Write the bundle (a bundle already there is kept under RUN/history/<time>/ first); refuse an
    unaccepted artifact (``accepted: false``) unless ``force``. With ``verify_images`` > 0 the
    bundle holds a verification set of that many test images (``bundle.json``'s ``verification``);
    None: DEFAULT_COUNT where the run pinned a split (``splits.json``), else none, said in one line."""
    if verify_images is not None and verify_images < 0:
        raise UserError(f"--verify-images must be >= 0 (0: no verification set), got {verify_images}")
    run = RunDir.open(run_path)
    if verify_images is None:
        verify_images = DEFAULT_COUNT if run.splits.exists() else 0
        if not verify_images:
            log.warning(
                "no verification set: %s has no pinned test split (%s), so `edge verify` cannot check this bundle",
                run.root,
                run.splits.name,
            )
    files = deployable_files(run, force)
    if not files:
        raise UserError(f"{run.root} has no deployable artifacts: run `edge export {run.root}` first")
    rejected = unaccepted_artifacts(run, files)
    if rejected and not force:
        first, reason = next(iter(rejected.items()))
        more = f" (and {len(rejected) - 1} more: {', '.join(list(rejected)[1:])})" if len(rejected) > 1 else ""
        raise UserError(
            f"{first} was not accepted: {reason}{more}; requantize it, delete it, or pass --force to bundle it anyway"
        )
    for name, reason in rejected.items():
        log.warning("bundling %s although it was not accepted (--force): %s", name, reason)
    out = Path(out) if out else run.bundle
    contents = [str(f.relative_to(run.root)) for f in files]
    index = bundle_index(run, contents, artifact_backends(run, files), rejected)
    index["unverified"] = [str(f.relative_to(run.root)) for f in files if f.suffix != ".json" and unverified_reason(f)]
    verification = b""
    if verify_images:
        vset, info = build_verification_set(run, verify_images)
        verification = encode_verification_set(vset)
        index["verification"] = {
            "file": VERIFICATION_SET,
            "sha256": sha256_bytes(verification),
            "size_bytes": len(verification),
            **info,
        }
    else:
        index["verification"] = None
    with keeping_previous(history_root(out, run.root), [out], "edge pack replaces it"):
        with atomic_path(out) as tmp, tarfile.open(tmp, "w:gz") as archive:
            for path, arcname in zip(files, contents):
                archive.add(path, arcname=f"{run.root.name}/{arcname}")
            if verification:
                _add_bytes(archive, f"{run.root.name}/{VERIFICATION_SET}", verification)
            _add_bytes(
                archive,
                f"{run.root.name}/{BUNDLE_INDEX}",
                (json.dumps({**index, "run": run.root.name}, indent=2) + "\n").encode(),
            )
        write_manifest(out, "bundle", None, provenance=index)
    return out


def _add_bytes(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = int(time.time())
    archive.addfile(info, io.BytesIO(payload))


def verification_summary(verification: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``edge pack`` prints about the verification set: images, where from, the size it adds."""
    if not verification:
        return None
    return {
        "images": verification["count"],
        "from": f"{verification['data']} {verification['split']} split (pinned)",
        "added_mb": round(verification["size_bytes"] / 1e6, 3),
        "image_shape": verification["image_shape"],
    }


def run(args: argparse.Namespace) -> int:
    out = pack_run(args.run, args.out, force=args.force, verify_images=args.verify_images)
    manifest = read_manifest(out)
    print(
        json.dumps(
            {
                "bundle": str(out),
                "size_mb": round(manifest.size_bytes / 1e6, 2),
                "contents": manifest.provenance["contents"],
                "backends": manifest.provenance.get("backends", {}),
                "install": manifest.provenance.get("install", {}),
                "verification_set": verification_summary(manifest.provenance.get("verification")),
                **({"not_accepted": manifest.provenance["not_accepted"]} if manifest.provenance["not_accepted"] else {}),
            },
            indent=2,
        )
    )
    return 0
