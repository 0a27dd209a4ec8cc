"""Systems under test: a runner (``LocalSUT``) answering LoadGen's queries.

SingleStream, MultiStream and Offline are answered in LoadGen's issue call (LoadGen waits for the
answer before the next SingleStream/MultiStream query anyway): a query's samples go through the
runner as one batch (Offline: in batches of ``max_batch``, the size bench measured best). Server
queries arrive on LoadGen's schedule; a batcher thread answers each as it arrives, batching
whatever is queued at that moment up to ``max_batch``.

Every sample is answered with its top-1 class (one little-endian int64), which LoadGen writes to
its accuracy log in accuracy mode. The SUT also notes each query's latency as it saw it (or each
Offline batch's time), only to split a run into rounds for ``edge check --baseline``'s interval
rule; the figures a report quotes are LoadGen's.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.loadgen.library import SampleLibrary

ROUNDS = 10  # a run's queries in this many consecutive parts: the rounds the gate compares
_PERCENTILE = {"single-stream": 90, "multi-stream": 99, "server": 99}


def answer(lg: Any, samples: Sequence[Any], logits: np.ndarray) -> None:
    """Complete ``samples`` with their top-1 classes (the buffer lives until LoadGen copied it)."""
    top1 = np.ascontiguousarray(np.argmax(logits, axis=1).astype("<i8"))
    base, size = top1.ctypes.data, top1.itemsize
    lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, base + i * size, size) for i, s in enumerate(samples)])


class LatencyLog:
    """What the SUT saw: (samples, ns) per query or Offline batch, in completion order."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def add(self, samples: int, ns: int) -> None:
        with self._lock:
            self.entries.append((samples, ns))

    def rounds_ms(self, scenario: str, rounds: int = ROUNDS) -> list[float]:
        """The run in ``rounds`` consecutive parts: each part's scenario percentile of query latency
        (ms), or for Offline its ms per sample; empty when there are fewer entries than rounds."""
        entries = list(self.entries)
        if len(entries) < rounds:
            return []
        parts = np.array_split(np.arange(len(entries)), rounds)
        out = []
        for part in parts:
            chunk = [entries[i] for i in part]
            if scenario == "offline":
                out.append(sum(ns for _, ns in chunk) / 1e6 / sum(n for n, _ in chunk))
            else:
                out.append(float(np.percentile([ns / 1e6 for _, ns in chunk], _PERCENTILE[scenario])))
        return out


class LocalSUT:
    """``infer(batch) -> logits`` (a runner's) as LoadGen's system under test for ``scenario``."""

    def __init__(self, lg: Any, library: SampleLibrary, infer: Callable[[np.ndarray], np.ndarray], scenario: str, max_batch: int):
        self.lg, self.library, self.infer, self.scenario = lg, library, infer, scenario
        self.max_batch = max(1, int(max_batch))
        self.log = LatencyLog()
        self._queue: queue.Queue[tuple[Any, int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> LocalSUT:
        if self.scenario == "server":
            self._thread = threading.Thread(target=self._serve, name="edge-loadgen-server", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=60)

    def issue(self, samples: list[Any]) -> None:
        now = time.monotonic_ns()
        if self.scenario == "server":
            for sample in samples:
                self._queue.put((sample, now))
            return
        step = self.max_batch if self.scenario == "offline" else len(samples)
        for start in range(0, len(samples), step):
            part = samples[start : start + step]
            began = time.monotonic_ns()
            if self.error is None:
                try:
                    self._answer(part)
                except BaseException as exc:  # raised into LoadGen's C++ thread it would end the process
                    self.error = exc
            if self.error is not None:  # answered (wrongly) so LoadGen finishes; the run then fails with it
                answer(self.lg, part, np.zeros((len(part), 1), dtype=np.float32))
                continue
            self.log.add(len(part), time.monotonic_ns() - (began if self.scenario == "offline" else now))

    def flush(self) -> None:
        """LoadGen's FlushQueries: nothing is held back (the batcher never waits for more)."""

    def _answer(self, samples: Sequence[Any]) -> None:
        answer(self.lg, samples, self.infer(self.library.batch([s.index for s in samples])))

    def _serve(self) -> None:
        """The Server batcher: take what is queued (up to ``max_batch``), answer it, repeat."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            taken = [item]
            while len(taken) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                taken.append(more)
            try:
                self._answer([sample for sample, _ in taken])
            except BaseException as exc:  # LoadGen would wait forever for these answers: fail them loudly
                self.error = exc
                answer(self.lg, [sample for sample, _ in taken], np.zeros((len(taken), 1), dtype=np.float32))
            done = time.monotonic_ns()
            for _, arrived in taken:
                self.log.add(1, done - arrived)
