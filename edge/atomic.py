"""Atomic writes and file hashing: how the harness writes its files.

A write goes to a temporary file beside its target and is moved onto the target only when the
whole write succeeded (fsync, rename, fsync the directory), so after a failure or a power cut the
target is the old file or the new one, never a torn one. Refusals (a directory target, a read-only
file or file system, a full disk) are OSErrors that name the target, never the temporary file, and
read "cannot write PATH: ..." on the command line. :func:`sha256_file` hashes a file in chunks.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.errors import UserError

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
            fsync_file(self.tmp)
        except OSError as exc:
            _name_the_target(exc, [self])
            raise

    def commit(self) -> Path:
        """Move the finished file onto the target (``flush`` first) and make the rename durable."""
        assert self.tmp is not None, "create() first"
        try:
            os.replace(self.tmp, self.target)
            self.tmp = None
            fsync_directory(self.target.parent)
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


def fsync_file(path: Path) -> None:
    """Flush a written file to the disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# a directory that cannot be opened or fsync'ed on this file system: the rename is done, carry on
_DIRECTORY_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.EACCES, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP}


def fsync_directory(directory: Path) -> None:
    """Make a rename (or a new link) in ``directory`` durable; a file system without directory fsync
    is not an error."""
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
