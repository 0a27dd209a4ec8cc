"""The camera's user cache: the demo video and the thread settings it measured, kept out of run folders.

Both live in ``$XDG_CACHE_HOME/edge-harness`` (``~/.cache/edge-harness`` when the variable is not
set), so ``--source demo`` never writes a video into a run directory or an unpacked deploy bundle,
and a thread choice measured once on a machine for a model is reused by the next run. Nothing here
is needed for correctness: a cache that cannot be read is ignored, one that cannot be written is
said in one line by the caller.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from edge.atomic import atomic_write_json
from edge.errors import UserError

CACHE_NAME = "edge-harness"
THREAD_CHOICES = "camera-threads.json"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edge-harness``, else ``~/.cache/edge-harness`` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / CACHE_NAME


def writable_cache_dir(purpose: str) -> Path:
    """The cache directory, created; a UserError that names the fix when it cannot be."""
    directory = user_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{purpose} goes to {directory}, which cannot be created ({exc.strerror or exc}): "
            "set XDG_CACHE_HOME to a writable directory"
        ) from exc
    return directory


def thread_choices_path() -> Path:
    return user_cache_dir() / THREAD_CHOICES


def load_thread_choice(key: str) -> dict[str, Any] | None:
    """The cached thread choice for ``key``, or None (no cache, another key, or an unreadable file)."""
    try:
        entries = json.loads(thread_choices_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    entry = entries.get(key) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        return None
    from edge.camera.threads import parse_setting

    setting = parse_setting(entry.get("threads"))  # None for anything that is not a setting
    return None if setting is None else {**entry, "threads": setting}


def store_thread_choice(key: str, entry: dict[str, Any]) -> Path:
    """Add or replace ``key``'s entry (atomically; other keys are kept). OSError/UserError when it cannot."""
    path = writable_cache_dir("the measured thread choice") / THREAD_CHOICES
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = {}
    if not isinstance(entries, dict):
        entries = {}
    entries[key] = {**entry, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return atomic_write_json(path, entries)
