"""Bundle a run's deployable artifacts and their manifests into one .tar.gz for a device.

The bundle holds the ONNX models, INT8 models and engines with their ``.json`` manifests (plus any
external-data files they list) — no checkpoint, no calibration data, no bench reports. Unpack it
on the device and point ``edge camera`` or ``edge bench`` at the directory.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

from edge.artifacts import atomic_path, manifest_path, read_manifest, write_manifest
from edge.errors import UserError
from edge.run import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory")
    parser.add_argument("--out", default=None, help="archive path (default: RUN/<name>-deploy.tar.gz)")


def deployable_files(run: RunDir) -> list[Path]:
    """Artifacts (with manifests and external data) that a device needs; never checkpoints or calibration."""
    files: list[Path] = []
    for name, path in run.artifacts().items():
        if name == "torch-fp32":
            continue
        if not manifest_path(path).exists():
            raise UserError(f"{path} has no manifest: rebuild it before packing")
        files += [path, manifest_path(path)]
        for extra in read_manifest(path).extra_files:
            files.append(path.parent / extra)
    return files


def pack_run(run_path: str | Path, out: str | Path | None = None) -> Path:
    run = RunDir.open(run_path)
    files = deployable_files(run)
    if not files:
        raise UserError(f"{run.root} has no deployable artifacts: run `edge export {run.root}` first")
    out = Path(out) if out else run.root / f"{run.root.name}-deploy.tar.gz"
    contents = [str(f.relative_to(run.root)) for f in files]
    with atomic_path(out) as tmp, tarfile.open(tmp, "w:gz") as archive:
        for path, arcname in zip(files, contents):
            archive.add(path, arcname=f"{run.root.name}/{arcname}")
    write_manifest(out, "bundle", None, provenance={"run": str(run.root), "contents": contents})
    return out


def run(args: argparse.Namespace) -> int:
    out = pack_run(args.run, args.out)
    manifest = read_manifest(out)
    print(
        json.dumps(
            {"bundle": str(out), "size_mb": round(manifest.size_bytes / 1e6, 2), "contents": manifest.provenance["contents"]},
            indent=2,
        )
    )
    return 0
