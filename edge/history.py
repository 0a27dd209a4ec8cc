"""Nothing is replaced without a copy: a stage keeps the previous files it would replace under
``RUN/history/<UTC time>/``, at the same relative paths, and says so in one line.

- :func:`keeping_previous` wraps a stage's write of a new version (export, calibrate, quantize,
  engine, pack, bench; camera's recording and log, check's JUnit XML, compare's tables, triton's
  model folders). Each previous file, with its manifest and the extra files the manifest names
  (a layer report, external data), is hard-linked into the history folder, or copied where the file
  system has no hard links (vfat, exFAT); it stays in place until the stage's atomic write replaces
  it. When the write fails before replacing anything, the copy is dropped again (:func:`forget`).
- ``keep_previous(..., retire=True)`` is training a run again: the training outputs and everything
  made from them move (rename; where rename fails, a flushed copy and then removal), so nothing
  stale stays in the run.

The history folder's entries are flushed (files and folders fsync'ed) before the stage replaces
anything, so after a crash or a power cut each previous file is in place or in history, never in
neither. When the keeping itself fails (no space, no permission) nothing is replaced: what was kept
so far is undone and the error names the file that was to be replaced ("cannot write PATH: ...").
A folder outside any run (an explicit ``--out``) keeps its history in ``FOLDER/history/``.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edge.atomic import atomic_path, check_writable, fsync_directory, fsync_file
from edge.manifest import manifest_path
from edge.run import HISTORY_DIR, RunDir

log = logging.getLogger(__name__)

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # UTC: 20261206T031500Z
RETIRED = "a new checkpoint: everything made from the previous one is retired with it"
LISTED_FILES = 8  # the line names every file up to this many, else the top-level entries


def retire_previous_training(run: RunDir) -> Path | None:
    """Before a new training (or pretrained checkpoint) writes into ``run``: move the previous
    training's outputs and every artifact made from its checkpoint to history (they would be stale),
    with the one line; returns the folder (None: nothing to move)."""
    return keep_previous(run.root, run.retired_by_training(), RETIRED, retire=True)


def history_root(path: str | os.PathLike[str], run_root: str | os.PathLike[str] | None = None) -> Path:
    """The folder whose ``history/`` keeps ``path``'s previous version: the run when ``path`` lies
    inside it, else the folder ``path`` is in (an explicit ``--out`` elsewhere)."""
    path = Path(path)
    if run_root is not None and _relative(path, Path(run_root)) is not None:
        return Path(run_root)
    return path.parent


def keep_previous(
    root: str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]],
    reason: str,
    *,
    retire: bool = False,
    announce: bool = True,
) -> Path | None:
    """Keep the files among ``paths`` that exist (each with its manifest and the extra files that
    manifest names) under ``root/history/<UTC time>/`` at their paths relative to ``root``; returns
    that folder, or None when there was nothing to keep.

    Without ``retire`` only regular files are kept (hard link, else a copy) and they stay in place;
    with ``retire`` files and folders move out of ``root``. ``announce`` logs the one line
    (:func:`kept_line`, with ``reason``). An OSError undoes what was kept and names the first file.
    """
    root = Path(root)
    items = _what_to_keep(root, [Path(p) for p in paths], retire)
    if not items:
        return None
    if retire:  # a read-only file or folder is the user's to protect: moving it is refused, as writing it is
        for source, _ in items:
            check_writable(source, directory=source.is_dir())
    done: list[tuple[Path, Path, str]] = []  # (source, kept copy, how)
    folder: Path | None = None
    try:
        folder = _new_folder(root / HISTORY_DIR)
        for source, relative in items:
            dest = folder / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            how = _move(source, dest) if retire else _link_or_copy(source, dest)
            done.append((source, dest, how))
        _flush(root, folder, done)
    except BaseException as exc:  # an OSError, or Ctrl-C midway: put back what was done
        _undo(folder, done)
        if isinstance(exc, OSError):
            raise _keeping_error(exc, items[0][0]) from exc
        raise
    if announce:
        (log.warning if retire else log.info)("%s", kept_line(folder, reason))
    return folder


@contextlib.contextmanager
def keeping_previous(
    root: str | os.PathLike[str],
    paths: Iterable[str | os.PathLike[str]],
    reason: str,
    *,
    say: Callable[[str], object] | None = None,
) -> Iterator[Path | None]:
    """Keep the previous ``paths`` (:func:`keep_previous`) around the block that writes their new
    versions; the line is logged (or handed to ``say``: a command whose stdout is data prints it on
    stderr) once the block succeeded. A block that fails drops the kept copy again, unless some file
    was already replaced (then the copy is the only one, and is said)."""
    kept = keep_previous(root, paths, reason, announce=False)

    def announce(folder: Path) -> None:
        line = kept_line(folder, reason)
        if say is None:
            log.info("%s", line)
        else:
            say(line)

    try:
        yield kept
    except BaseException:
        if kept is not None and not forget(kept):
            announce(kept)
        raise
    if kept is not None:
        announce(kept)


def replaces(command: str, paths: Iterable[str | os.PathLike[str]]) -> str:
    """The reason a keep gives: "edge check replaces it" (one of ``paths`` is there), else "... them"."""
    present = sum(Path(p).is_file() for p in paths)
    return f"{command} replaces {'it' if present == 1 else 'them'}"


def forget(kept: Path | None) -> bool:
    """Undo a keep whose write failed: remove the history folder ``kept`` (and ``history/`` when
    empty) if every file in it is still in place unchanged; otherwise leave it whole, since it then
    holds the only copy of something. Returns whether it was removed."""
    if kept is None:
        return True
    root = kept.parent.parent
    for path in kept.rglob("*"):
        if path.is_file() and not _still_in_place(path, root / path.relative_to(kept)):
            return False
    shutil.rmtree(kept, ignore_errors=True)
    with contextlib.suppress(OSError):
        kept.parent.rmdir()  # only when empty
    return True


def kept_line(folder: Path, reason: str | None = None) -> str:
    """ "kept the previous checkpoint.pt, last.pt, ... (with their manifests) in RUN/history/<time>/ (reason)"."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    manifests = {name for name in files if name.endswith(".json") and name.removesuffix(".json") in files}
    names = [name for name in files if name not in manifests]
    if len(names) > LISTED_FILES:
        entries = sorted(folder.iterdir(), key=lambda p: (p.is_dir(), p.name))
        names = [f"{p.name}/" if p.is_dir() else p.name for p in entries if p.name not in manifests]
    with_manifests = ""
    if manifests:
        with_manifests = " (with its manifest)" if len(names) == 1 else " (with their manifests)"
    why = f" ({reason})" if reason else ""
    return f"kept the previous {', '.join(names)}{with_manifests} in {folder}/{why}"


# ---- what to keep ---------------------------------------------------------------------------------


def _relative(path: Path, root: Path) -> Path | None:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return None


def _what_to_keep(root: Path, paths: list[Path], retire: bool) -> list[tuple[Path, Path]]:
    """(path, path relative to root) of everything to keep, manifests and their extra files after
    their artifact; each once."""
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        relative = _relative(path, root)
        if relative is None:
            raise ValueError(f"{path} is not inside {root}: its history would not be the run's")
        if relative in seen or relative.parts[:1] == (HISTORY_DIR,):
            return
        seen.add(relative)
        found.append((path, relative))

    for path in paths:
        if not (path.is_file() or (retire and path.is_dir())):
            continue  # not there, or a folder where a file is written (the write says so)
        add(path)
        if path.is_file():
            for companion in _companions(path):
                add(companion)
    return found


def _companions(path: Path) -> list[Path]:
    """The manifest of ``path`` and the extra files it names (a layer report, external data)."""
    manifest = manifest_path(path)
    if not manifest.is_file():
        return []
    try:
        extra = json.loads(manifest.read_text()).get("extra_files") or {}
    except (OSError, ValueError, AttributeError):
        extra = {}  # a damaged manifest is kept as it is; its readers say what is wrong
    names = [name for name in extra if isinstance(name, str) and Path(name).name == name]
    return [manifest, *(p for p in (path.with_name(n) for n in names) if p.is_file())]


def _new_folder(history: Path) -> Path:
    history.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime(STAMP_FORMAT, time.gmtime())
    for n in range(1, 1000):
        folder = history / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(errno.EEXIST, "no free history folder name", str(history / stamp))


# ---- keeping, durably -----------------------------------------------------------------------------


def _link_or_copy(source: Path, dest: Path) -> str:
    try:
        os.link(source, dest)
        return "link"
    except OSError:  # vfat/exFAT (EPERM), another file system, too many links: a copy does
        _copy_file(source, dest)
        return "copy"


def _copy_file(source: Path, dest: Path) -> None:
    """A flushed copy with the source's times and mode; ``dest`` appears only whole."""
    with atomic_path(dest) as tmp:
        shutil.copy2(source, tmp)


def _copy_tree(source: Path, dest: Path) -> None:
    """A flushed copy of a folder; ``dest`` appears only whole."""
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copytree(source, tmp, symlinks=True)
        for folder, _, names in os.walk(tmp):
            for name in names:
                if not os.path.islink(os.path.join(folder, name)):
                    fsync_file(Path(folder, name))
            fsync_directory(Path(folder))
        os.replace(tmp, dest)  # within one folder: dest appears whole
        fsync_directory(dest.parent)  # before the source is removed
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move(source: Path, dest: Path) -> str:
    try:
        os.rename(source, dest)
        return "rename"
    except OSError:  # another file system, or one that will not rename: copy, then remove
        pass
    if source.is_dir():
        _copy_tree(source, dest)
        shutil.rmtree(source)  # a failure midway leaves the whole copy in history: nothing is lost
        return "copy"
    _copy_file(source, dest)
    try:
        source.unlink()
    except OSError:
        dest.unlink()  # the source stays in place: drop its copy, and say why
        raise
    return "copy"


def _flush(root: Path, folder: Path, done: list[tuple[Path, Path, str]]) -> None:
    """fsync every folder a kept entry was added to (and, for moves, removed from), deepest first,
    up to ``root`` itself (which may have just got ``history/``)."""
    folders: set[Path] = {root}
    for source, dest, how in done:
        parent = dest.parent
        while parent != root and root in parent.parents:
            folders.add(parent)
            parent = parent.parent
        if how in ("rename", "copy"):
            folders.add(source.parent)
    for path in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_directory(path)


def _undo(folder: Path | None, done: list[tuple[Path, Path, str]]) -> None:
    """Put back what a failed keep did: moves renamed back, links and copies of files still in place
    removed, then the empty folders. Nothing that may be the only copy is removed."""
    for source, dest, how in reversed(done):
        with contextlib.suppress(OSError):
            if how == "rename":
                os.rename(dest, source)
            elif how == "link" or (how == "copy" and source.exists()):
                dest.unlink()
    if folder is None or not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty
    for path in (folder, folder.parent):
        with contextlib.suppress(OSError):
            path.rmdir()


def _still_in_place(kept: Path, original: Path) -> bool:
    """Whether ``original`` is still the file ``kept`` keeps (the same inode, or the same bytes)."""
    try:
        return original.is_file() and (os.path.samefile(kept, original) or filecmp.cmp(kept, original, shallow=False))
    except OSError:
        return False


def _keeping_error(exc: OSError, target: Path) -> OSError:
    """The OSError of a failed keep, naming the file that was to be replaced: "cannot write TARGET: ..."."""
    if exc.errno is None:
        return exc
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and exc.filename is not None:
        target = Path(os.fsdecode(exc.filename))  # history/ is a file: name it
    error = OSError(exc.errno, os.strerror(exc.errno), str(target))  # OSError picks the errno's subclass
    error.edge_action = "write"  # type: ignore[attr-defined]
    return error
