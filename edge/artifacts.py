"""Artifact manifests: a ``<file>.json`` beside every artifact, and atomic writes.

A manifest says what the file is (kind, sha256), what it was made from (parent sha256), how it
was made (provenance), how to feed it (the PreprocessSpec), where (environment fingerprint) and
what it measured (metrics). Stages read manifests to find stale artifacts and to refuse
incompatible ones. Staleness follows the whole chain (checkpoint -> ONNX -> INT8 -> engine):
:func:`stale_link` finds the first link that no longer holds and :func:`stale_reason` says it in
one line with the commands that remake everything below it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.errors import UserError, plain_errno
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


_TMP_SUFFIX = ".tmp"
_NAME_MAX = 200  # of the target's name inside a temporary file's name (file systems allow 255 bytes)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    - The temporary file lives in the target's own directory (so the rename is atomic) and is
      created as ``open()`` would create it: mode 0666 minus the umask (0644 under umask 022), so
      another user (a camera service, a web server) can read what was written.
    - A target that is a directory, or a file this user may not write (read-only), is refused
      before anything is written.
    - After the block the file is fsync'ed, renamed onto the target, and the directory fsync'ed:
      after a power cut the target is the old file or the new one, never a torn one.
    - Any failure (an OSError, another exception, Ctrl-C) removes the temporary file and leaves the
      old target (or nothing). An OSError about the target or its temporary file names the target
      and carries ``edge_action = "write"``, so the CLI prints "cannot write PATH: permission denied".
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[tuple[Path, ...]]:
    """:func:`atomic_path` for files that belong together (a report in several formats): a
    temporary for each; only when the block succeeds for all are they fsync'ed, every one, and then
    renamed into place, so a failure while writing any of them leaves every old target as it was."""
    staged = [StagedFile(p) for p in paths]
    try:
        for item in staged:
            item.create()
        yield tuple(item.tmp for item in staged if item.tmp is not None)
        for item in staged:
            item.flush()
        for item in staged:
            item.commit()
    except OSError as exc:
        if exc.errno is None:  # a library's OSError("message"): no errno to explain
            full = next((item.target for item in staged if _out_of_space(item.target.parent)), None)
            if full is not None:
                raise _write_error(errno.ENOSPC, full) from exc
            raise
        _name_the_target(exc, staged)
        raise
    except Exception as exc:
        if isinstance(exc, UserError):
            raise
        # A C++ writer (torch.save, OpenCV) reports a full disk as RuntimeError: say what it is.
        full = next((item.target for item in staged if _out_of_space(item.target.parent)), None)
        if full is not None:
            raise _write_error(errno.ENOSPC, full) from exc
        raise
    finally:
        for item in staged:
            item.discard()


class StagedFile:
    """One file written in place of ``target`` and moved onto it only when finished: what
    :func:`atomic_paths` uses, for writers that live longer than a ``with`` block (a recording, a
    JSONL log): ``create()`` it, write ``tmp``, then ``commit()`` (fsync, rename, fsync the
    directory) or ``discard()``. Its OSErrors name ``target`` ("cannot write TARGET: ...")."""

    def __init__(self, target: str | os.PathLike[str]):
        self.target = Path(target)
        self.tmp: Path | None = None
        self.mode = 0o644

    def create(self) -> Path:
        """Refuse a directory or read-only target, then create the empty temporary file beside it."""
        try:
            _check_target(self.target)
            self.tmp, self.mode = _create_temporary(self.target)
        except OSError as exc:
            _name_the_target(exc, [self])
            raise
        return self.tmp

    def flush(self) -> None:
        """Give the file its mode (umask) and fsync it."""
        assert self.tmp is not None, "create() first"
        try:
            if stat.S_IMODE(os.stat(self.tmp).st_mode) != self.mode:  # a writer that replaced the file
                os.chmod(self.tmp, self.mode)
            _fsync_path(self.tmp)
        except OSError as exc:
            _name_the_target(exc, [self])
            raise

    def commit(self) -> Path:
        """Move the finished file onto the target (``flush`` first) and make the rename durable."""
        assert self.tmp is not None, "create() first"
        try:
            os.replace(self.tmp, self.target)
            self.tmp = None
            _fsync_directory(self.target.parent)
        except OSError as exc:
            _name_the_target(exc, [self])
            raise
        return self.target

    def discard(self) -> None:
        """Remove the temporary file (safe to call at any time, and again)."""
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            self.tmp = None

    def owns(self, name: Any) -> bool:
        path = Path(os.fsdecode(name))
        return path in (self.target, self.tmp) or (path.parent == self.target.parent and is_temporary(path))


def _check_target(target: Path) -> None:
    """Refuse a target that is a directory or a read-only file before anything is written."""
    if target.is_dir():
        raise _write_error(errno.EISDIR, target)
    if target.exists() and not _writable(target):
        if _read_only_file_system(target.parent):
            raise _write_error(errno.EROFS, target)
        raise _write_error(errno.EACCES, target, "the file is read-only (make it writable, or write elsewhere)")


def check_writable(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Raise the OSError that writing ``path`` would meet, before any long work; creates nothing.

    ``directory``: ``path`` is a folder the command writes files into (created when missing).
    Refused: a file target that is a directory, a read-only target, a directory (the nearest one
    that exists) that this user cannot write, a read-only file system, a full one, and a path with
    a file where a directory must be. The errors name ``path`` and read "cannot write PATH: ...".
    """
    target = Path(path)
    if target.exists() and directory:
        if not target.is_dir():
            raise _write_error(errno.ENOTDIR, target, "exists and is not a directory")
        _check_directory(target, target)
        return
    if target.exists():
        _check_target(target)
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _write_error(errno.ENOTDIR, target, f"{ancestor} is not a directory")
    _check_directory(ancestor, target)


def _check_directory(directory: Path, target: Path) -> None:
    """``directory`` (which exists) takes new files: writable, on a writable file system with space."""
    if not _writable(directory, os.W_OK | os.X_OK):
        raise _write_error(errno.EROFS if _read_only_file_system(directory) else errno.EACCES, target)
    if _free_bytes(directory) == 0:
        raise _write_error(errno.ENOSPC, target)


def _write_error(code: int, target: Path, reason: str | None = None) -> OSError:
    exc = OSError(code, os.strerror(code), str(target))  # OSError picks the subclass of the errno
    exc.edge_action = "write"  # type: ignore[attr-defined]
    if reason is not None:
        exc.edge_reason = reason  # type: ignore[attr-defined]
    return exc


def _read_only_file_system(directory: Path) -> bool:
    if not hasattr(os, "statvfs"):  # not POSIX
        return False
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _free_bytes(directory: Path) -> int | None:
    """Bytes this user may still write on the file system of ``directory`` (None: unknown)."""
    if not hasattr(os, "statvfs"):  # not POSIX
        return None
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    if st.f_blocks == 0:  # /proc, /sys and friends count no blocks at all
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize  # root may use the reserved blocks


def _writable(path: Path, mode: int = os.W_OK) -> bool:
    if os.access in os.supports_effective_ids:  # the permissions this process has (seteuid, capabilities)
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _create_temporary(target: Path) -> tuple[Path, int]:
    """A new empty file beside ``target``, mode 0666 minus the umask; returns it and its mode."""
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
    parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = parent / f".{target.name[:_NAME_MAX]}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask, as for open(path, "w")
        except FileExistsError:
            continue
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# a directory that cannot be opened or fsync'ed on this file system: the rename is done, carry on
_DIRECTORY_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.EACCES, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP}


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; a file system without directory fsync is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in _DIRECTORY_FSYNC_UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIRECTORY_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _name_the_target(exc: OSError, staged: list[StagedFile]) -> None:
    """An error about a target or its temporary file names the target (never the temporary)."""
    for item in staged:
        # filename2 is the destination of a copy or rename: the write is what failed
        if (exc.filename is not None and item.owns(exc.filename)) or (exc.filename2 is not None and item.owns(exc.filename2)):
            break
    else:
        if exc.filename is not None or not staged:
            return  # about another file (an input read inside the block)
        item = staged[0]
    exc.filename = str(item.target)
    exc.filename2 = None
    exc.edge_action = "write"  # type: ignore[attr-defined]


def _out_of_space(directory: Path) -> bool:
    """True when the file system of ``directory`` has (almost) no free block left for this user."""
    free = _free_bytes(directory)
    return free is not None and free < 1 << 16


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a temporary file of :func:`atomic_path` (for cleanup checks)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


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


# The command that makes each kind again (RUN is the artifact's run directory).
_REMAKE = {
    "checkpoint": "`edge train --out {run}` (or `edge pretrained --out {run}`)",
    "onnx": "`edge export {run}`",
    "onnx-int8-cpu": "`edge quantize {run} --target cpu`",
    "onnx-int8-trt": "`edge quantize {run} --target trt`",
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


# ---- lineage: staleness down the manifest chain -----------------------------------------------
#
# checkpoint.pt -> model.onnx -> model.int8-{cpu,trt}.onnx -> engines/<machine>/model.<precision>.engine:
# every manifest records the file it was made from (parent_file, found in its run directory) and
# that file's sha256. An artifact is stale when any link up its chain no longer holds.

_MADE = {
    "onnx": "exported",
    "onnx-int8-cpu": "quantized",
    "onnx-int8-trt": "quantized",
    "engine": "built",
    "calibration": "drawn",
}


@dataclass(frozen=True)
class StaleLink:
    """A link of the manifest chain that no longer holds: ``artifact``'s manifest records
    ``recorded`` as the sha256 of ``parent`` (None: none recorded), which now hashes to ``current``."""

    artifact: Path
    parent: Path
    recorded: str | None
    current: str


def artifact_parent(artifact: str | os.PathLike[str]) -> Path | None:
    """The file ``artifact`` was made from, as its manifest records it (``parent_file``, in the
    artifact's run directory), whether or not it exists here; None without a manifest or a parent.
    The one parent lookup: inspect, bench and the staleness checks all use it."""
    path = Path(artifact)
    if not manifest_path(path).exists():
        return None
    manifest = read_manifest(path)
    if manifest.parent_file is None:
        return None
    return run_root(path, manifest.kind) / manifest.parent_file


def lineage(artifact: str | os.PathLike[str]) -> list[Path]:
    """``artifact`` and the ancestors present here, nearest first (``model.int8-cpu.onnx``,
    ``model.onnx``, ``checkpoint.pt``); the chain ends at an ancestor that is absent, has no
    manifest or records no parent."""
    chain = [Path(artifact)]
    while (parent := artifact_parent(chain[-1])) is not None and parent.exists() and parent not in chain:
        chain.append(parent)
    return chain


def _link(child: Path, parent: Path) -> StaleLink | None:
    """The link child -> parent when it no longer holds: the parent's file (hashed now, so a file
    replaced behind its own manifest counts too) is not the one the child's manifest recorded."""
    recorded = read_manifest(child).parent_sha256
    current = sha256_file(parent)
    return None if recorded == current else StaleLink(child, parent, recorded, current)


def is_stale(artifact: str | os.PathLike[str], parent: str | os.PathLike[str]) -> bool | None:
    """One link: True when ``parent`` changed since the artifact was made from it (or the artifact
    or its manifest is missing); None when the parent is absent (a device that has only the
    artifact: not stale, but it cannot be rebuilt here). :func:`stale_link` follows the whole chain."""
    artifact, parent = Path(artifact), Path(parent)
    if not artifact.exists() or not manifest_path(artifact).exists():
        return True
    if not parent.exists():
        return None
    return _link(artifact, parent) is not None


def stale_link(artifact: str | os.PathLike[str]) -> StaleLink | None:
    """The stale link of ``artifact``'s chain nearest the root (where the remaking starts): its own
    link, or an ancestor's (an INT8 model quantized from a stale ``model.onnx`` is stale too).
    None when every link present holds, including an artifact without a manifest or whose parent
    is absent (a deployed bundle: not stale)."""
    chain = lineage(artifact)
    for child, parent in reversed(list(zip(chain, chain[1:]))):
        link = _link(child, parent)
        if link is not None:
            return link
    return None


def stale_reason(artifact: str | os.PathLike[str]) -> str | None:
    """One line saying why ``artifact`` is stale and what remakes it, or None when it is current
    (or cannot be judged: no manifest, parent absent). Names the first stale link of the chain and
    the commands from there down to ``artifact``, e.g. "model.onnx was exported from a different
    checkpoint.pt (sha256 ab12cd34ef56.. recorded, 0123456789ab.. now): re-run `edge export RUN`,
    then `edge quantize RUN --target cpu`"."""
    link = stale_link(artifact)
    if link is None:
        return None
    chain = lineage(artifact)
    remade = chain[: chain.index(link.artifact) + 1][::-1]  # from the stale link down to the artifact
    commands = ", then ".join(remake_command(path, read_manifest(path)) for path in remade)
    made = _MADE.get(read_manifest(link.artifact).kind, "made")
    recorded = f"{link.recorded[:12]}.." if link.recorded else "none"
    return (
        f"{link.artifact.name} was {made} from a different {link.parent.name} "
        f"(sha256 {recorded} recorded, {link.current[:12]}.. now): re-run {commands}"
    )


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
