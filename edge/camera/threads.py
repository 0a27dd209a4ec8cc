"""How many threads (and streams) the camera's model gets: ``--threads``/``--streams``, a choice
cached for this machine and model, or a short measurement on the first frames.

On a CPU the model's threads share the cores with the capture thread, which decodes and
preprocesses the next frame. Giving the model every core can win (the model is most of the work)
or lose (capture is starved and the model waits for frames); which one depends on the CPU, the
model and the source. Measured on 2 cores with Lite0 at 224 px, keeping a core for capture gave
about 101 FPS where both cores gave 110-114 FPS, and on a busier moment the reverse. So no fixed
rule: the camera runs the candidates (all physical cores, all but one, two streams: below) side by
side on the first frames, in slices A B B A A B B A (A B C C B A twice with three; a load that
drifts during the measurement weighs on all alike;
each candidate's figure is the median of its slices, so a burst of other work spoils one slice, not
the choice), keeps the one with the highest achieved FPS (within 2% of it, the lower latency: a source
slower than the model gives every setting the same FPS) and caches it under the machine
fingerprint, the model's sha256, the backend, the device, the frame size and the candidates.

The candidates run as separate runners, activated together, so switching costs nothing. That needs
a backend whose thread count belongs to the runner (ONNX Runtime's and OpenVINO's sessions); torch
sets threads for the whole process, so a torch model gets every core without a measurement.

When the model gets the newest frame only (a live source or --realtime, no window), a third
candidate is two *streams* of half the cores each: two threads each take the newest frame and run
it on their own runner, side by side. One multi-threaded call synchronises its threads at every
operator, and the camera must run them without spinning (the capture thread needs the cores between
operators); two single-threaded calls need neither. Measured on this 2-core machine, Lite0 at 224 px
on ONNX Runtime, 5 interleaved rounds (``python -m bench.scripts.camera_benchmark runs/imagenet-lite0
--rounds 5 --seconds 8``): batch-1 throughput 208.6-211.8 img/s for two 1-thread streams against
123.8-206.2 img/s for one 2-thread stream; the camera at a 313 FPS source 137.1-141.7 FPS with two
streams against 109.9-131.4 FPS with 2 threads and 93.1-106.4 FPS with 1. Each frame then waits a
1-thread inference instead of a 2-thread one (inference p50 10.8 against 7.2 ms, latency p50 17.7
against 12.9 ms).
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


# A setting: an int is one inference stream with that many threads; "SxT" is S streams (threads
# classifying frames side by side, each with its own runner) of T threads each.
Setting = int | str
STREAMS = 2  # the multi-stream candidate's stream count


def setting_of(streams: int, threads: int) -> Setting:
    return threads if streams == 1 else f"{streams}x{threads}"


def streams_of(setting: Setting) -> int:
    return 1 if isinstance(setting, int) else int(setting.split("x")[0])


def threads_of(setting: Setting) -> int:
    """Threads per stream."""
    return setting if isinstance(setting, int) else int(setting.split("x")[1])


def parse_setting(text: Any) -> Setting | None:
    """A setting from its JSON form (``2``, ``"2"``, ``"2x1"``); None when it is not one."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text if text >= 1 else None
    parts = str(text).split("x")
    if not all(p.isdigit() and int(p) >= 1 for p in parts) or len(parts) > 2:
        return None
    return int(parts[0]) if len(parts) == 1 else setting_of(int(parts[0]), int(parts[1]))


def setting_label(setting: Setting | None) -> str:
    """``2 threads``, ``1 thread``, ``2 streams x 1 thread``."""
    if setting is None:
        return "backend default threads"
    threads = threads_of(setting)
    label = f"{threads} thread{'s' if threads != 1 else ''}"
    return label if streams_of(setting) == 1 else f"{streams_of(setting)} streams x {label}"


def thread_candidates(cores: int, streams: bool = False) -> list[Setting]:
    """All physical cores and all but one (at least one), most first; one entry on a 1-core CPU.
    With ``streams`` (and 2+ cores) also two streams of half the cores each: two frames classified
    side by side, each on its own runner, which avoids the per-operator synchronisation of one
    multi-threaded call (measured on 2 cores, Lite0 224 px: two 1-thread streams 208-215 img/s at
    batch 1 against 173-195 img/s for one 2-thread stream)."""
    singles: list[Setting] = list(sorted({max(1, cores), max(1, cores - 1)}, reverse=True))
    if streams and cores >= STREAMS:
        singles.append(setting_of(STREAMS, cores // STREAMS))
    return singles


@dataclass
class ThreadChoice:
    """The model's thread setting and how it was decided.

    ``how``: ``--threads`` | ``measured`` | ``cached`` | ``only one core`` | ``backend default`` |
    ``not measured: <why>``. ``fps`` and ``latency_ms`` hold the measurement behind a measured or
    cached choice (achieved FPS and latency p50 per thread count, over ``frames`` results).
    """

    threads: Setting | None
    how: str
    fps: dict[Setting, float | None] = field(default_factory=dict)
    latency_ms: dict[Setting, float | None] = field(default_factory=dict)
    frames: int = 0
    cache: str | None = None  # the file a measured choice was stored in, or a cached one read from
    key: str | None = None  # the cache key (machine, model, backend, device, frame size); None: no cache

    def describe(self) -> str:
        """One line for the summary, e.g. ``2 (measured on the first 64 frames: 2 threads 112.3 FPS, 1 thread 101.2 FPS)``."""
        threads = "backend default" if self.threads is None else str(self.threads)
        if self.threads is not None and streams_of(self.threads) > 1:
            threads = setting_label(self.threads)
        if not self.fps:
            return threads if self.how == "backend default" else f"{threads} ({self.how})"
        order = sorted(self.fps.items(), key=lambda item: (streams_of(item[0]), -threads_of(item[0])))
        figures = ", ".join(f"{setting_label(t)} {'n/a' if fps is None else f'{fps:.1f}'} FPS" for t, fps in order)
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

        def figures(name: str) -> dict[Setting, float | None]:
            values = data.get(name)
            if not isinstance(values, dict):
                return {}
            return {setting: v for t, v in values.items() if (setting := parse_setting(t)) is not None}

        threads = data.get("threads")
        return cls(
            None if threads is None else parse_setting(threads),
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

    def __init__(self, runners: dict[Setting, Any], slice_frames: int | None = None, slice_s: float | None = None):
        order = list(runners)
        self.runners = runners
        self.schedule = (order + order[::-1]) * PASSES
        self.slice_frames = SLICE_FRAMES if slice_frames is None else slice_frames
        self.slice_s = SLICE_S if slice_s is None else slice_s
        self._slice = 0
        self._slice_count = 0
        self._slice_started: float | None = None
        self._last_result: float | None = None
        self._intervals: dict[Setting, list[float]] = {t: [] for t in order}  # the current slice's
        self._slice_fps: dict[Setting, list[float]] = {t: [] for t in order}
        self._latency: dict[Setting, list[float]] = {t: [] for t in order}
        self.frames = 0
        self.choice: ThreadChoice | None = None

    @property
    def threads(self) -> Setting:
        """The setting of the runner(s) that classify the next frames."""
        choice = self.choice
        if choice is not None and choice.threads is not None:
            return choice.threads
        return self.schedule[min(self._slice, len(self.schedule) - 1)]

    def runner(self) -> Any:
        return self.runners[self.threads]

    def record(self, result_at: float, latency_s: float, setting: Setting | None = None) -> bool:
        """Count one result of :meth:`runner`; True when this result completed the measurement.

        ``setting``: the setting the frame was taken under. A result of another stream setting's frame
        that finishes after its slice ended (two streams in flight when the slice switched) does not
        count for the new slice; it only marks the time the next interval runs from."""
        if self.choice is not None:
            return False
        threads = self.threads
        if setting is not None and setting != threads:
            self._last_result = result_at
            return False
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
            self._slice_count, self._slice_started = 0, result_at
            if self._slice + 1 == len(self.schedule):
                # The choice is in place before the schedule runs out: the second stream's thread
                # reads :attr:`threads` without the session's lock.
                self.choice = self.decide()
                self._slice += 1
                return True
            self._slice += 1
        return False

    def figures(self) -> tuple[dict[Setting, float | None], dict[Setting, float | None]]:
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


def thread_cache_key(
    model_sha256: str, backend: str, device: str, frame_size: tuple[int, int] | None, candidates: list[Setting] | None = None
) -> str:
    """What decides the choice: this machine, the model file, the backend, the device, the frame size
    and the candidates measured (a choice among fewer candidates is not reused for more)."""
    from edge.environment import environment_fingerprint

    machine = environment_fingerprint()["machine_fingerprint"]
    size = "unknown" if frame_size is None else f"{frame_size[0]}x{frame_size[1]}"
    key = f"machine={machine};model={model_sha256[:16]};backend={backend};device={device};frame={size}"
    return key if candidates is None else key + ";candidates=" + ",".join(str(c) for c in candidates)
