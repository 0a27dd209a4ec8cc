"""Worker processes of a bench: each artifact x device row runs in ``python -m bench.worker`` of its own.

``run_worker`` runs a one-shot worker (the zoo's rows); ``LiveWorker`` keeps a stepped worker alive
so that ``bench.matrix`` can time every artifact of a device round by round. A timeout or a Ctrl-C
stops the worker's whole process group (SIGTERM, then SIGKILL after ``GRACE_S``), so no orphan
outlives the bench, and a crash or hang loses that row only.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GRACE_S = 3.0  # after SIGTERM, before SIGKILL: time for a backend to release its device
INTERRUPTED_REASON = "Ctrl-C stopped its worker mid-measurement (no numbers kept)"


class WorkerInterrupted(KeyboardInterrupt):
    """Ctrl-C while a worker ran: its process group is gone; ``row`` is the row to report."""

    def __init__(self, row: dict[str, Any]):
        super().__init__(row.get("reason", "interrupted"))
        self.row = row


def run_worker(job: dict[str, Any], timeout_s: float, on_progress: Any = None, module: str = "bench.worker") -> dict[str, Any]:
    """Run one job in a child process (``python -m MODULE JOB RESULT``); a crash or a timeout becomes an error row.

    The worker runs in its own session (so a terminal's Ctrl-C reaches only this process, and its
    process group holds everything the worker started). On a timeout or a Ctrl-C the whole group is
    stopped (``stop_process_group``: SIGTERM, SIGKILL after ``GRACE_S``), so no orphan keeps
    running and skews the next measurement; a Ctrl-C then raises ``WorkerInterrupted``.
    """
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        env = _worker_env()
        with _sigint_held() as pressed:  # a Ctrl-C while it starts must not lose the child's pid
            proc = subprocess.Popen(
                [sys.executable, "-m", module, str(job_path), str(out_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole, never orphaned
            )
        stderr_tail: list[str] = []
        readers = [
            threading.Thread(target=_read_progress, args=(proc.stdout, on_progress), daemon=True),
            threading.Thread(target=_keep_tail, args=(proc.stderr, stderr_tail), daemon=True),
        ]
        interrupted, timed_out = pressed[0], False
        try:
            if not interrupted:
                try:
                    for reader in readers:
                        reader.start()
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                except KeyboardInterrupt:
                    interrupted = True
        finally:  # on every way out (a bug in this process too), the worker's group is gone
            with _sigint_held() as again:
                # a worker that exited may have left a child in its group: that one goes too
                if interrupted or timed_out or proc.poll() is None or _group_alive(proc.pid):
                    interrupted = stop_process_group(proc) or interrupted
                for reader in readers:
                    if reader.ident is not None:
                        reader.join(timeout=5)
            interrupted = interrupted or again[0]
        if interrupted:
            raise WorkerInterrupted({"status": "interrupted", "reason": INTERRUPTED_REASON})
        if timed_out:
            return {"status": "error", "error": f"timed out after {timeout_s:.0f} s (raise --timeout)"}
        if out_path.exists():
            return json.loads(out_path.read_text())
        tail = "".join(stderr_tail)[-600:].strip().splitlines()
        return {"status": "error", "error": f"worker exited with code {proc.returncode}: {tail[-1] if tail else 'no output'}"}


def stop_process_group(proc: subprocess.Popen, grace_s: float | None = None) -> bool:
    """Stop a worker started with ``start_new_session`` and everything in its process group:
    SIGTERM, then SIGKILL for whatever is left after ``grace_s`` (``GRACE_S``; at once on another
    Ctrl-C); the worker is reaped. Returns whether Ctrl-C was pressed meanwhile (the caller stops too)."""
    with _sigint_held() as pressed:
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + (GRACE_S if grace_s is None else grace_s)
        while time.monotonic() < deadline and not pressed[0]:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return pressed[0]
            time.sleep(0.02)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    return pressed[0]


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigint_held() -> Iterator[list[bool]]:
    """Within the block, Ctrl-C only sets ``pressed[0]`` (main thread only: elsewhere Python
    delivers no signal anyway); the caller decides what it means."""
    pressed = [False]
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return
    previous = signal.getsignal(signal.SIGINT)

    def note(signum: int, frame: Any) -> None:
        pressed[0] = True

    signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)
        if pressed[0] and previous is signal.SIG_DFL:  # a process that chose to die on SIGINT
            os.kill(os.getpid(), signal.SIGINT)
        if previous is signal.SIG_IGN:
            pressed[0] = False


def _read_progress(stream: Any, on_progress: Any) -> None:
    for line in stream:
        parts = line.split(maxsplit=3)
        if on_progress is not None and len(parts) >= 3 and parts[0] == "progress":
            on_progress(int(parts[1]), int(parts[2]), parts[3].strip() if len(parts) > 3 else "")


def _keep_tail(stream: Any, tail: list[str]) -> None:
    for line in stream:
        tail.append(line)
        del tail[:-50]


class LiveWorker:
    """A stepped worker (``python -m bench.worker --stepped``) kept alive across rounds.

    ``start`` waits for ``ready``; ``step(batch)`` asks for one round and waits for ``done``;
    ``finish`` reads the row. Any failure (the worker exits, answers nothing within what is left
    of its ``timeout_s`` of own work) ends it: ``alive`` turns False and ``result`` holds the row
    (the worker's own result file when it wrote one: a skip, an error).
    """

    def __init__(self, job: dict[str, Any], timeout_s: float):
        self.job, self.timeout_s = job, timeout_s
        self.label = f"{job['name']} on {job['device']}"
        self.result: dict[str, Any] | None = None
        self.proc: subprocess.Popen | None = None
        self._used_s = 0.0
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._tail: list[str] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-bench-")
        self._out = Path(self._tmp.name) / "result.json"

    @property
    def alive(self) -> bool:
        return self.result is None and self.proc is not None

    def start(self) -> None:
        job_path = Path(self._tmp.name) / "job.json"
        job_path.write_text(json.dumps(self.job))
        with _sigint_held() as pressed:  # a Ctrl-C while it starts must not lose the child's pid
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker", "--stepped", str(job_path), str(self._out)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_worker_env(),
                start_new_session=True,  # its own process group: stopped as a whole, never orphaned
            )
        for target, args in ((_queue_lines, (self.proc.stdout, self._lines)), (_keep_tail, (self.proc.stderr, self._tail))):
            threading.Thread(target=target, args=args, daemon=True).start()
        if pressed[0]:
            raise KeyboardInterrupt
        self._await("ready")

    def step(self, batch: int) -> None:
        if self._send(f"time {batch}"):
            self._await("done")

    def finish(self) -> None:
        if self._send("finish"):
            self._await(None)

    def _send(self, line: str) -> bool:
        if not self.alive or self.proc is None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._ended()
            return False
        return True

    def _await(self, word: str | None) -> None:
        """Wait for ``word`` (None: for the worker to exit and leave its result)."""
        started = time.monotonic()
        try:
            while True:
                left = self.timeout_s - self._used_s - (time.monotonic() - started)
                try:
                    line = self._lines.get(timeout=max(left, 0.0))
                except queue.Empty:
                    self._fail(f"timed out after {self.timeout_s:.0f} s (raise --timeout)")
                    return
                if line is None:
                    self._ended()
                    return
                if word is not None and line.strip() == word:
                    return
        finally:
            self._used_s += time.monotonic() - started

    def _ended(self) -> None:
        """The worker exited: its result file, or an error row with the last line it wrote."""
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        if self._out.exists():
            self.result = json.loads(self._out.read_text())
            return
        tail = "".join(self._tail)[-600:].strip().splitlines()
        code = self.proc.returncode if self.proc is not None else None
        self._fail(f"worker exited with code {code}: {tail[-1] if tail else 'no output'}")

    def _fail(self, error: str) -> None:
        self.result = {"status": "error", "error": error}
        self.stop()

    def stop(self) -> None:
        """Stop the worker's process group (if still there) and remove its temporary folder."""
        if self.proc is not None:
            if self.proc.poll() is None or _group_alive(self.proc.pid):
                stop_process_group(self.proc)
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        self._tmp.cleanup()


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
    return env


def _queue_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Lines of a stepped worker's stdout, then None at its end (progress lines are dropped)."""
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            if not line.startswith("progress "):
                lines.put(line)
    lines.put(None)
