"""Artifact manifests: a ``<file>.json`` beside every artifact, and atomic writes.

A manifest says what the file is (kind, sha256), what it was made from (parent sha256), how it
was made (provenance), how to feed it (the PreprocessSpec), where (environment fingerprint) and
what it measured (metrics). Stages read manifests to find stale artifacts and to refuse
incompatible ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.spec import PreprocessSpec

MANIFEST_VERSION = 1
KINDS = (
    "checkpoint",
    "onnx",
    "onnx-int8-cpu",
    "onnx-int8-trt",
    "engine",
    "calibration",
    "bench-report",
    "bundle",
    "video",
)

# ---- atomic writes ------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or Ctrl-C leaves the old file (or nothing), never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---- environment fingerprint ----------------------------------------------------------------

_PACKAGES = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "torchvision",
    "timm",
    "opencv-python",
    "opencv-python-headless",
    "tensorrt",
    "rich",
)
_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
    "i8mm",
)


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:  # JetPack installs tensorrt as a system module without pip metadata
        if "tensorrt" not in versions:
            import importlib.util

            if importlib.util.find_spec("tensorrt") is not None:
                import tensorrt  # type: ignore[import-not-found,unused-ignore]

                versions["tensorrt"] = str(tensorrt.__version__)
    except Exception as exc:  # a broken TensorRT install must not break fingerprinting
        versions["tensorrt"] = f"unimportable: {exc}"
    return versions


def _cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count() or 0,
        "cpu_flags": sorted(f for f in _CPU_FLAGS if f in flags),
    }


def _gpu_info() -> dict[str, Any]:
    """GPU name, driver, compute capability and CUDA, from nvidia-smi when present (no torch import)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        version_out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    name, driver, cc = (part.strip() for part in (out[0].split(",") + ["", "", ""])[:3])
    cuda = ""
    if "CUDA Version:" in version_out:
        cuda = version_out.split("CUDA Version:")[1].split()[0]
    return {"gpu_name": name, "gpu_driver": driver, "gpu_compute_capability": cc, "cuda": cuda, "gpu_count": len(out)}


def _jetson_info() -> dict[str, Any]:
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return {}
    info: dict[str, Any] = {"l4t_release": release.read_text().splitlines()[0].strip()}
    model = Path("/proc/device-tree/model")
    if model.exists():
        info["jetson_model"] = model.read_text(errors="replace").strip("\x00\n ")
    return info


def environment_fingerprint() -> dict[str, Any]:
    """Where an artifact was built or a figure measured."""
    env: dict[str, Any] = {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": _package_versions(),
    }
    env.update(_cpu_info())
    env.update(_gpu_info())
    env.update(_jetson_info())
    env["machine_fingerprint"] = machine_fingerprint(env)
    return env


def machine_fingerprint(env: dict[str, Any]) -> str:
    """A short hash of what decides absolute speed: CPU model and count, GPU, Jetson model."""
    key = "|".join(str(env.get(k, "")) for k in ("machine", "cpu_model", "cpu_count", "gpu_name", "jetson_model"))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# ---- manifests --------------------------------------------------------------------------------


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


def validate_manifest(data: Any, source: str = "manifest") -> Manifest:
    """Check a manifest dict against the schema: no missing, no unknown fields, known kind."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a manifest must be a JSON object")
    missing = sorted(MANIFEST_FIELDS - set(data))
    unknown = sorted(set(data) - MANIFEST_FIELDS)
    if missing or unknown:
        raise UserError(
            f"{source}: manifest schema mismatch (missing {missing}, unknown {unknown}); "
            "rebuild the artifact with this version of edge"
        )
    if data["manifest_version"] > MANIFEST_VERSION:
        raise UserError(f"{source}: manifest version {data['manifest_version']} is newer than this tool's")
    if data["kind"] not in KINDS:
        raise UserError(f"{source}: unknown artifact kind {data['kind']!r} (known: {', '.join(KINDS)})")
    for name in ("provenance", "metrics", "environment", "extra_files"):
        if not isinstance(data[name], dict):
            raise UserError(f"{source}: manifest field {name!r} must be an object")
    if data["spec"] is not None:
        PreprocessSpec.from_dict(data["spec"])
    return Manifest(**data)


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
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not a readable manifest: {exc}") from exc
    return validate_manifest(data, str(path))


def update_metrics(artifact: str | os.PathLike[str], metrics: dict[str, Any]) -> Manifest:
    """Merge measured metrics into an existing manifest (atomic)."""
    manifest = read_manifest(artifact)
    manifest.metrics.update(metrics)
    atomic_write_json(manifest_path(artifact), manifest.to_dict())
    return manifest


def verify_file(artifact: str | os.PathLike[str]) -> Manifest:
    """Read the manifest and check that the file still has the recorded sha256."""
    manifest = read_manifest(artifact)
    actual = sha256_file(artifact)
    if actual != manifest.sha256:
        raise UserError(f"{artifact} does not match its manifest (sha256 changed): rebuild it")
    return manifest


def is_stale(artifact: str | os.PathLike[str], parent: str | os.PathLike[str]) -> bool | None:
    """True when the parent changed since the artifact was made; None when the parent is absent
    (a device that has only the artifact: not stale, but it cannot be rebuilt here)."""
    artifact, parent = Path(artifact), Path(parent)
    if not artifact.exists() or not manifest_path(artifact).exists():
        return True
    if not parent.exists():
        return None
    recorded = read_manifest(artifact).parent_sha256
    current = read_manifest(parent).sha256 if manifest_path(parent).exists() else sha256_file(parent)
    return recorded != current


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
