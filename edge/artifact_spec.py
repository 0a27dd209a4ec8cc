"""Finding the preprocess spec of an artifact or a run directory, whatever made it.

Stages never re-type a spec as flags: they look it up here, in the artifact's manifest, else in an
ONNX model's metadata or a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from edge.errors import UserError
from edge.manifest import manifest_path, read_manifest
from edge.spec import PreprocessSpec


def artifact_spec(artifact: str | os.PathLike[str]) -> PreprocessSpec:
    """The spec (labels included) of any artifact or run directory: the one lookup every stage uses.

    A manifest's spec comes first; without one, an ONNX model's metadata or a checkpoint's own
    spec. A run directory means its ONNX model, else its checkpoint.
    """
    artifact = Path(artifact)
    if artifact.is_dir():
        from edge.run import RunDir

        run = RunDir.open(artifact)
        artifact = run.onnx if run.onnx.exists() else run.checkpoint
        if not artifact.exists():
            raise UserError(f"{run.root} has neither {run.onnx.name} nor {run.checkpoint.name}: train and export a model first")
    if manifest_path(artifact).exists():
        manifest = read_manifest(artifact)
        if manifest.spec is not None:
            return manifest.preprocess_spec
    if artifact.suffix == ".onnx":
        from edge.spec import spec_from_onnx

        return spec_from_onnx(artifact)
    if artifact.suffix in (".pt", ".pth"):
        from edge.checkpoints import checkpoint_spec

        return checkpoint_spec(artifact)
    raise UserError(
        f"cannot find the preprocess spec of {artifact}: it has no manifest ({manifest_path(artifact).name}) "
        "and is not a checkpoint or ONNX model"
    )
