"""Faults made real on this machine, for the fault tests (issue 13).

- File modes that bite (an unwritable directory, a read-only file): ``chmod`` does it for a user;
  root ignores modes, so ``modes_enforced`` drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and
  CAP_FOWNER from the calling thread's effective capabilities meanwhile (capset, restored after):
  the kernel then checks modes as for any owner and open/mkdir fail with a real EACCES. (Dropping
  to another uid would not do in-process: the interpreter's own files may be unreadable to it.)
- A full disk or a read-only file system: a tiny tmpfs mounted in the test's directory (root with
  mount rights), filled with ``fill`` or remounted ``ro``; ``can_mount`` says whether that works.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_CAPS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capset(drop: bool) -> Callable[[], None] | None:
    """Drop (or check) the DAC-bypassing capabilities of this thread; returns the restore call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, this thread
        if libc.capget(ctypes.byref(header), data) != 0:
            return None
        saved = [(d.effective, d.permitted, d.inheritable) for d in data]
        for cap in _CAPS:
            data[0].effective &= ~(1 << cap)
        if libc.capset(ctypes.byref(header), data) != 0:
            return None
    except (OSError, AttributeError):
        return None

    def restore() -> None:
        for item, values in zip(data, saved):
            item.effective, item.permitted, item.inheritable = values
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed restoring capabilities")

    if not drop:
        restore()
    return restore


def modes_bite() -> bool:
    return os.geteuid() != 0 or _capset(drop=False) is not None


@contextlib.contextmanager
def modes_enforced() -> Iterator[None]:
    """File modes apply to this thread, root or not (root: DAC capabilities dropped meanwhile)."""
    if os.geteuid() != 0:
        yield
        return
    restore = _capset(drop=True)
    if restore is None:
        pytest.skip("root cannot drop CAP_DAC_OVERRIDE here (capset refused): file modes do not bite")
    try:
        yield
    finally:
        restore()


_MOUNT_OK: bool | None = None


def can_mount() -> bool:
    global _MOUNT_OK
    if _MOUNT_OK is None:
        _MOUNT_OK = False
        if os.geteuid() == 0 and shutil.which("mount") and shutil.which("umount"):
            probe = Path(tempfile.mkdtemp(prefix="edge-mount-probe-"))
            try:
                if mount_tmpfs(probe, check=False):
                    _MOUNT_OK = True
                    umount(probe)
            finally:
                probe.rmdir()
    return _MOUNT_OK


def mount_tmpfs(path: Path, check: bool = True, size: str = "64k") -> bool:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "edge-faults", str(path)], capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"mount tmpfs on {path}: {result.stderr.strip()}")
    return result.returncode == 0


def umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Write until the file system is full (ENOSPC), or until ``leave`` bytes are free."""
    fd = os.open(directory / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        if leave:
            st = os.statvfs(directory)
            os.write(fd, b"\0" * (st.f_bfree * st.f_frsize - leave))
            return
        for size in (4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created) for the block; check ``can_mount`` first."""
    path.mkdir(parents=True, exist_ok=True)
    mount_tmpfs(path, size=size)
    try:
        yield path
    finally:
        umount(path)


def remount_read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
