"""How many threads the camera's model gets: ``--threads``, a choice cached for this machine and
model, or a short measurement on the first frames.

On a CPU the model's threads share the cores with the capture thread, which decodes and
preprocesses the next frame. Giving the model every core can win (the model is most of the work)
or lose (capture is starved and the model waits for frames); which one depends on the CPU, the
model and the source. Measured on 2 cores with Lite0 at 224 px, keeping a core for capture gave
about 101 FPS where both cores gave 110-114 FPS, and on a busier moment the reverse. So no fixed
rule: the camera runs the candidates (all physical cores, all but one) side by side on the first
frames, in slices A B B A A B B A (a load that drifts during the measurement weighs on both alike;
each candidate's figure is the median of its slices, so a burst of other work spoils one slice, not
the choice), keeps the one with the highest achieved FPS (within 2% of it, the lower latency: a source
slower than the model gives every setting the same FPS) and caches it under the machine
fingerprint, the model's sha256, the backend, the device and the frame size.

The candidates run as separate runners, activated together, so switching costs nothing. That needs
a backend whose thread count belongs to the runner (ONNX Runtime's and OpenVINO's sessions); torch
sets threads for the whole process, so a torch model gets every core without a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Backends whose thread setting belongs to one runner, so two runners can run side by side.
MEASURED_BACKENDS = ("onnxruntime", "openvino")
SLICE_FRAMES = 8  # each slice of the measurement lasts at least this many results ...
SLICE_S = 0.25  # ... and this many seconds
PASSES = 2  # A B B A, twice: each candidate gets 4 slices, and a burst of other work spoils one of them at most
TIE = 0.02  # FPS within this share of the best: the lower latency decides


def thread_candidates(cores: int) -> list[int]:
    """All physical cores and all but one (at least one), most first; one entry on a 1-core CPU."""
    return sorted({max(1, cores), max(1, cores - 1)}, reverse=True)


@dataclass
class ThreadChoice:
    """The model's thread setting and how it was decided.

    ``how``: ``--threads`` | ``measured`` | ``cached`` | ``only one core`` | ``backend default`` |
    ``not measured: <why>``. ``fps`` and ``latency_ms`` hold the measurement behind a measured or
    cached choice (achieved FPS and latency p50 per thread count, over ``frames`` results).
    """

    threads: int | None
    how: str
    fps: dict[int, float | None] = field(default_factory=dict)
    latency_ms: dict[int, float | None] = field(default_factory=dict)
    frames: int = 0
    cache: str | None = None  # the file a measured choice was stored in, or a cached one read from
    key: str | None = None  # the cache key (machine, model, backend, device, frame size); None: no cache

    def describe(self) -> str:
        """One line for the summary, e.g. ``2 (measured on the first 64 frames: 2 threads 112.3 FPS, 1 thread 101.2 FPS)``."""
        threads = "backend default" if self.threads is None else str(self.threads)
        if not self.fps:
            return threads if self.how == "backend default" else f"{threads} ({self.how})"
        figures = ", ".join(
            f"{t} thread{'s' if t != 1 else ''} {'n/a' if fps is None else f'{fps:.1f}'} FPS"
            for t, fps in sorted(self.fps.items(), reverse=True)
        )
        if self.how == "cached":
            return f"{threads} (cached measurement of {self.frames} frames: {figures}; delete {self.cache} to measure again)"
        if self.how == "measured":
            where = f"; cached in {self.cache}" if self.cache else ""
            return f"{threads} (measured on the first {self.frames} frames: {figures}{where})"
        return f"{threads} ({self.how}: {figures})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "how": self.how,
            "fps": {str(t): v for t, v in self.fps.items()},
            "latency_p50_ms": {str(t): v for t, v in self.latency_ms.items()},
            "frames": self.frames,
            "cache": self.cache,
            "key": self.key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ThreadChoice":
        """The inverse of :meth:`to_dict` (also reads a cache entry, whose figures have string keys)."""

        def figures(name: str) -> dict[int, float | None]:
            values = data.get(name)
            return {int(t): v for t, v in values.items()} if isinstance(values, dict) else {}

        threads = data.get("threads")
        return cls(
            None if threads is None else int(threads),
            str(data.get("how", "")),
            figures("fps"),
            figures("latency_p50_ms"),
            int(data.get("frames") or 0),
            data.get("cache"),
            data.get("key"),
        )


class ThreadProbe:
    """Alternates the candidates' runners over the first results, then keeps the fastest.

    ``runners`` maps a thread count to an (active) runner. Call :meth:`runner` for each frame and
    :meth:`record` with its result; once every slice is done, :attr:`choice` is set. Each result's
    interval since the previous result (whoever produced it) counts for the runner that produced
    it, so waiting for the source and for the capture thread is part of the figure, as it is of the
    achieved FPS a user sees.
    """

    def __init__(self, runners: dict[int, Any], slice_frames: int | None = None, slice_s: float | None = None):
        order = list(runners)
        self.runners = runners
        self.schedule = (order + order[::-1]) * PASSES
        self.slice_frames = SLICE_FRAMES if slice_frames is None else slice_frames
        self.slice_s = SLICE_S if slice_s is None else slice_s
        self._slice = 0
        self._slice_count = 0
        self._slice_started: float | None = None
        self._last_result: float | None = None
        self._intervals: dict[int, list[float]] = {t: [] for t in order}  # the current slice's
        self._slice_fps: dict[int, list[float]] = {t: [] for t in order}
        self._latency: dict[int, list[float]] = {t: [] for t in order}
        self.frames = 0
        self.choice: ThreadChoice | None = None

    @property
    def threads(self) -> int:
        """The thread count of the runner that classifies the next frame."""
        if self.choice is not None and self.choice.threads is not None:
            return self.choice.threads
        return self.schedule[self._slice]

    def runner(self) -> Any:
        return self.runners[self.threads]

    def record(self, result_at: float, latency_s: float) -> bool:
        """Count one result of :meth:`runner`; True when this result completed the measurement."""
        if self.choice is not None:
            return False
        threads = self.threads
        self.frames += 1
        self._latency[threads].append(latency_s)
        if self._last_result is not None:
            self._intervals[threads].append(result_at - self._last_result)
        if self._slice_started is None:  # the first result of the run opens the first slice
            self._slice_started = result_at
        self._last_result = result_at
        self._slice_count += 1
        if self._slice_count >= self.slice_frames and result_at - self._slice_started >= self.slice_s:
            intervals = self._intervals[threads]
            if intervals and sum(intervals) > 0:
                self._slice_fps[threads].append(len(intervals) / sum(intervals))
            intervals.clear()
            self._slice += 1
            self._slice_count, self._slice_started = 0, result_at
            if self._slice == len(self.schedule):
                self.choice = self.decide()
                return True
        return False

    def figures(self) -> tuple[dict[int, float | None], dict[int, float | None]]:
        """Achieved FPS (the median over a candidate's finished slices) and latency p50 (ms) per thread count."""
        fps = {t: (float(np.median(v)) if v else None) for t, v in self._slice_fps.items()}
        latency = {t: (float(np.median(v)) * 1000 if v else None) for t, v in self._latency.items()}
        return fps, latency

    def decide(self) -> ThreadChoice:
        fps, latency = self.figures()
        best = max((v for v in fps.values() if v is not None), default=None)
        if best is None:
            return ThreadChoice(self.schedule[0], "not measured: no interval between results", fps, latency, self.frames)
        near = [t for t, v in fps.items() if v is not None and v >= best * (1 - TIE)]
        chosen = min(near, key=lambda t: (latency[t] if latency[t] is not None else float("inf"), -(fps[t] or 0.0)))
        return ThreadChoice(chosen, "measured", fps, latency, self.frames)

    def unfinished(self) -> ThreadChoice:
        """What a run that ended during the measurement reports (its partial figures)."""
        fps, latency = self.figures()
        why = f"not measured: the run ended during the measurement ({self.frames} frames, threads alternated)"
        return ThreadChoice(self.threads, why, fps, latency, self.frames)


def thread_cache_key(model_sha256: str, backend: str, device: str, frame_size: tuple[int, int] | None) -> str:
    """What decides the choice: this machine, the model file, the backend, the device, the frame size."""
    from edge.artifacts import environment_fingerprint

    machine = environment_fingerprint()["machine_fingerprint"]
    size = "unknown" if frame_size is None else f"{frame_size[0]}x{frame_size[1]}"
    return f"machine={machine};model={model_sha256[:16]};backend={backend};device={device};frame={size}"
