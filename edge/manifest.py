"""The artifact manifest: the ``<file>.json`` beside every artifact, its schema, reading and writing it.

A manifest says what the file is (kind, sha256), what it was made from (parent sha256), how it
was made (provenance), how to feed it (the PreprocessSpec), where (environment fingerprint) and
what it measured (metrics). Every field is required and no other is allowed: a manifest of
another shape is a UserError naming the file and the field. Writes are atomic.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.atomic import atomic_write_json, sha256_file
from edge.environment import environment_fingerprint
from edge.errors import UserError, plain_errno
from edge.spec import PreprocessSpec

MANIFEST_VERSION = 1
KINDS = (
    "checkpoint",
    "onnx",
    "onnx-int8-cpu",
    "onnx-int8-trt",
    "onnx-int8-openvino",
    "engine",
    "calibration",
    "bench-report",
    "bundle",
    "video",
)


@dataclass
class Manifest:
    """The sidecar ``<artifact>.json``. Every field is required; no others are allowed."""

    kind: str
    file: str
    sha256: str
    size_bytes: int
    parent_sha256: str | None
    parent_file: str | None
    spec: dict[str, Any] | None
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    environment: dict[str, Any]
    created_at: str
    extra_files: dict[str, str] = field(default_factory=dict)
    manifest_version: int = MANIFEST_VERSION

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        if self.spec is None:
            raise UserError(f"{self.file} has no preprocess spec in its manifest")
        return PreprocessSpec.from_dict(self.spec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MANIFEST_FIELDS = frozenset(f.name for f in fields(Manifest))


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


# field -> (accepted JSON types, what the message says it must be)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "kind": ((str,), "a string"),
    "file": ((str,), "a string"),
    "sha256": ((str,), "a string"),
    "size_bytes": ((int,), "a whole number"),
    "parent_sha256": ((str, type(None)), "a string or null"),
    "parent_file": ((str, type(None)), "a string or null"),
    "spec": ((dict, type(None)), "an object or null"),
    "provenance": ((dict,), "an object"),
    "metrics": ((dict,), "an object"),
    "environment": ((dict,), "an object"),
    "created_at": ((str,), "a string"),
    "extra_files": ((dict,), "an object"),
    "manifest_version": ((int,), "a whole number"),
}


def validate_manifest(data: Any, source: str = "manifest") -> Manifest:
    """Check a manifest dict against the schema: no missing, no unknown fields, every field of its
    type, a known kind and version, a valid spec. Anything else is one UserError naming ``source``."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a manifest must be a JSON object, not {_json_type(data)}; rebuild the artifact")
    missing = sorted(MANIFEST_FIELDS - set(data))
    unknown = sorted(set(data) - MANIFEST_FIELDS)
    if missing or unknown:
        raise UserError(
            f"{source}: manifest schema mismatch (missing {missing}, unknown {unknown}); "
            "rebuild the artifact with this version of edge"
        )
    for name, (types, expected) in _FIELD_TYPES.items():
        value = data[name]
        if not isinstance(value, types) or isinstance(value, bool):
            shown = "" if value is None else f" ({_short_json(value)})"
            raise UserError(
                f"{source}: manifest field {name!r} must be {expected}, not {_json_type(value)}{shown}; "
                "rebuild the artifact with the edge CLI"
            )
    if data["manifest_version"] > MANIFEST_VERSION:
        raise UserError(f"{source}: manifest version {data['manifest_version']} is newer than this tool's: upgrade edge")
    if data["manifest_version"] < 1:
        raise UserError(f"{source}: manifest version {data['manifest_version']} is not a version; rebuild the artifact")
    if data["kind"] not in KINDS:
        raise UserError(f"{source}: unknown artifact kind {data['kind']!r} (known: {', '.join(KINDS)})")
    if data["size_bytes"] < 0:
        raise UserError(f"{source}: manifest field 'size_bytes' is negative ({data['size_bytes']}); rebuild the artifact")
    bad_extra = [name for name, digest in data["extra_files"].items() if not isinstance(digest, str)]
    if bad_extra:
        raise UserError(f"{source}: manifest field 'extra_files' must map file names to sha256 strings ({bad_extra[0]!r})")
    if data["spec"] is not None:
        try:
            PreprocessSpec.from_dict(data["spec"])
        except (UserError, TypeError, ValueError) as exc:
            raise UserError(
                f"{source}: manifest field 'spec' is not a valid preprocess spec ({exc}); rebuild the artifact"
            ) from exc
    return Manifest(**data)


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short_json(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def write_manifest(
    artifact: str | os.PathLike[str],
    kind: str,
    spec: PreprocessSpec | None,
    parent: str | os.PathLike[str] | None = None,
    provenance: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra_files: list[str | os.PathLike[str]] | None = None,
    environment: dict[str, Any] | None = None,
) -> Manifest:
    """Hash ``artifact`` (and its parent) and write ``<artifact>.json`` atomically."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise UserError(f"cannot write a manifest for {artifact}: the file does not exist")
    parent_path = Path(parent) if parent is not None else None
    parent_sha = None
    if parent_path is not None:
        parent_manifest = manifest_path(parent_path)
        if parent_manifest.exists():
            parent_sha = read_manifest(parent_path).sha256
        elif parent_path.exists():
            parent_sha = sha256_file(parent_path)
    manifest = Manifest(
        kind=kind,
        file=artifact.name,
        sha256=sha256_file(artifact),
        size_bytes=artifact.stat().st_size,
        parent_sha256=parent_sha,
        parent_file=str(parent_path.name) if parent_path else None,
        spec=spec.to_dict() if spec is not None else None,
        provenance=dict(provenance or {}),
        metrics=dict(metrics or {}),
        environment=environment if environment is not None else environment_fingerprint(),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        extra_files={Path(p).name: sha256_file(p) for p in (extra_files or [])},
    )
    validate_manifest(manifest.to_dict(), str(manifest_path(artifact)))
    atomic_write_json(manifest_path(artifact), manifest.to_dict())
    return manifest


def read_manifest(artifact: str | os.PathLike[str]) -> Manifest:
    path = manifest_path(artifact)
    if not path.exists():
        raise UserError(f"{artifact} has no manifest ({path.name}); rebuild it with the edge CLI")
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read the manifest {path}: {plain_errno(exc.errno)}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError: a truncated or corrupt file
        raise UserError(
            f"{path} is not a readable manifest ({_first_line(exc)}): rebuild the artifact with the edge CLI"
        ) from exc
    return validate_manifest(data, str(path))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def update_metrics(artifact: str | os.PathLike[str], metrics: dict[str, Any]) -> Manifest:
    """Merge measured metrics into an existing manifest (atomic)."""
    manifest = read_manifest(artifact)
    manifest.metrics.update(metrics)
    atomic_write_json(manifest_path(artifact), manifest.to_dict())
    return manifest
