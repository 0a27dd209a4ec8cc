"""The live classification session: capture -> preprocess -> infer -> overlay -> outputs.

:func:`run_camera` opens the source and the runner, runs a capture thread that reads and
preprocesses (the artifact's own PreprocessSpec) while the model works on the previous frame, and
returns the figures (:class:`CameraResult`). Live sources and --realtime files hand the model only
the newest frame, dropping and counting older ones; --every-frame classifies every frame in order.
The model's thread setting is ``--threads``/``--streams``, else chosen on the first frames or read
from the cache (:mod:`edge.camera.threads`); with two streams the main thread and a second one each
take the newest frame and classify it on their own runner, and the results are handed on under a lock. With --serve a run that ended on its own keeps serving its last frame
until Ctrl-C. The `edge camera` command is :mod:`edge.camera.cli`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.camera.cache import load_thread_choice, store_thread_choice, thread_choices_path
from edge.camera.outputs import JsonlLog, Prediction, VideoRecorder, draw_overlay, jsonl_record, open_window, top_k
from edge.camera.sources import (
    Frame,
    FrameGrabber,
    RetryPolicy,
    SourceSpec,
    capture_fps,
    capture_frame_count,
    open_capture,
    parse_source,
)
from edge.camera.threads import (
    MEASURED_BACKENDS,
    Setting,
    ThreadChoice,
    ThreadProbe,
    setting_of,
    streams_of,
    thread_cache_key,
    thread_candidates,
    threads_of,
)
from edge.errors import UserError, require

LIVE_WINDOW = 300  # results behind the live statistics (the final summary uses all of them)
# Every latency figure (summary, result JSON, served page, JSONL latency_ms) runs from this timestamp
# of the frame to its result: when it was grabbed, before decode (see edge.camera.sources.Frame).
LATENCY_FROM = "grabbed_at"
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass
class CameraOptions:
    """Everything ``edge camera`` takes besides the model; validated before any work starts."""

    source: str = "0"
    backend: str = "auto"
    device: str = "cpu"
    threads: int | None = None
    streams: int | None = None  # inference streams side by side (None: measured on CPU with the threads)
    topk: int = 3
    every_frame: bool = False
    realtime: bool = False
    loop: bool = False
    show: bool = False
    record: str | None = None
    jsonl: str | None = None
    serve: str | None = None
    max_frames: int | None = None
    duration: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    quiet: bool = False
    thread_cache: bool = True  # reuse (and store) the thread choice measured for this machine and model

    def validate(self, source: SourceSpec) -> None:
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.streams is not None and self.streams < 1:
            raise UserError(f"--streams must be at least 1, got {self.streams}")
        if self.streams is not None and self.streams > 1:
            if self.device != "cpu":
                raise UserError(f"--streams is for --device cpu (got --device {self.device}): use one stream")
            if self.show:
                raise UserError("--streams with --show: the window is drawn by one thread; use --serve or --record to watch")
            if not self.one_slot(source):
                raise UserError(
                    f"--streams {self.streams} classifies frames side by side, which needs a live source or --realtime "
                    "(every frame in order, as a file is read by default or with --every-frame, runs one stream)"
                )
        if self.topk < 1:
            raise UserError(f"--topk must be at least 1, got {self.topk}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"--max-frames must be at least 1, got {self.max_frames}")
        if self.duration is not None and self.duration <= 0:
            raise UserError(f"--duration must be positive, got {self.duration}")
        if source.live and (self.realtime or self.loop):
            flag = "--realtime" if self.realtime else "--loop"
            raise UserError(f"{flag} is for video files; {source.text} is a live source that keeps its own clock")
        if self.record is not None:
            suffix = Path(self.record).suffix.lower()
            if suffix not in (".mp4", ".m4v", ".mov", ".avi"):
                raise UserError(f"--record {self.record}: use a .mp4 or .avi path")
        if self.serve is not None:
            from edge.camera.server import parse_address

            parse_address(self.serve)

    def one_slot(self, source: SourceSpec) -> bool:
        """True when the model gets the newest frame only (a live source or --realtime), not every frame in order."""
        return not self.every_frame and (source.live or self.realtime)


# ---- metrics ----------------------------------------------------------------------------------


class CameraMetrics:
    """Per-frame timings and the figures made from them (all times in seconds, reported in ms)."""

    def __init__(self) -> None:
        self.latency = array("d")  # grabbed (before decode) -> result
        self.inference = array("d")  # runner.infer only
        self.preprocess = array("d")  # spec.apply
        self.first_result: float | None = None
        self.last_result: float | None = None
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=LIVE_WINDOW)

    def add(self, latency: float, inference: float, preprocess: float, result_at: float) -> None:
        self.latency.append(latency)
        self.inference.append(inference)
        self.preprocess.append(preprocess)
        self.first_result = result_at if self.first_result is None else self.first_result
        self.last_result = result_at
        self._recent.append((result_at, latency, inference))

    @property
    def classified(self) -> int:
        return len(self.latency)

    def figures(self, recent: bool = False) -> dict[str, float | None]:
        """Achieved FPS (results per second of wall time), inference-only FPS, latency percentiles."""
        if recent:
            rows = list(self._recent)
            count = len(rows)
            span = rows[-1][0] - rows[0][0] if rows else 0.0
            latency = np.array([r[1] for r in rows])
            inference = np.array([r[2] for r in rows])
        else:
            count = self.classified
            span = (self.last_result or 0.0) - (self.first_result or 0.0)
            latency = np.frombuffer(self.latency, dtype=np.float64) if self.latency else np.zeros(0)
            inference = np.frombuffer(self.inference, dtype=np.float64) if self.inference else np.zeros(0)
        out: dict[str, float | None] = {
            "achieved_fps": (count - 1) / span if count >= 2 and span > 0 else None,
            "inference_fps": float(len(inference) / inference.sum()) if len(inference) and inference.sum() > 0 else None,
        }
        for name, values in (("latency", latency), ("inference", inference)):
            for q in (50, 90, 99):
                out[f"{name}_p{q}_ms"] = float(np.percentile(values, q) * 1000) if len(values) else None
        pre = np.frombuffer(self.preprocess, dtype=np.float64) if self.preprocess else np.zeros(0)
        out["preprocess_p50_ms"] = float(np.median(pre) * 1000) if len(pre) else None
        return out


@dataclass
class CameraResult:
    """What a run did: its figures, counts and why it ended (the first reason to stop)."""

    figures: dict[str, float | None]
    captured: int
    classified: int
    dropped: int
    retries: int
    reconnects: int
    end_reason: str
    source: str
    model: str
    runner: dict[str, Any]
    wall_s: float
    outputs: dict[str, str] = field(default_factory=dict)
    threads: dict[str, Any] = field(default_factory=dict)  # ThreadChoice.to_dict(): the setting and how it was chosen
    paced: bool = True  # False: a file read as fast as the model takes frames (its latency is mostly queueing)
    preprocessed: int = 0  # frames the capture thread preprocessed (the others were replaced before the model was free)
    preprocessed_on_take: int = 0  # of the classified frames, those the capture thread had left raw
    out_of_order: int = 0  # results (two streams) that came after a newer frame's: counted and logged, not drawn

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C was the first reason to stop (``edge camera`` then exits 130)."""
        return self.end_reason == INTERRUPTED

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.figures)
        data.update(
            latency_from=LATENCY_FROM,
            captured=self.captured,
            classified=self.classified,
            dropped=self.dropped,
            retries=self.retries,
            reconnects=self.reconnects,
            end_reason=self.end_reason,
            source=self.source,
            model=self.model,
            runner=self.runner,
            wall_s=self.wall_s,
            outputs=self.outputs,
            threads=self.threads,
            paced=self.paced,
            preprocessed=self.preprocessed,
            preprocessed_on_take=self.preprocessed_on_take,
            out_of_order=self.out_of_order,
        )
        return data


# ---- the run ----------------------------------------------------------------------------------


def resolve_source(options: CameraOptions) -> tuple[SourceSpec, float | None]:
    """The parsed source; ``demo`` becomes the demo video in the user cache (written once, atomically),
    never a file in the run directory or a deploy bundle."""
    source = parse_source(options.source)
    if source.kind != "demo":
        return source, None
    from edge.camera.cache import writable_cache_dir
    from edge.camera.demo import ensure_demo_video

    video = ensure_demo_video(writable_cache_dir("the demo video"))
    return SourceSpec("demo", "file", str(video.path), live=False), video.fps


def inference_threads(options: CameraOptions, one_slot: bool = True) -> list[Setting] | None:
    """The settings the model may get: ``[--threads/--streams]``; on CPU the candidates the camera
    measures (all physical cores, all but one, and with ``one_slot`` (the newest frame only: a live
    source or --realtime; not --show) two streams of half the cores each:
    :func:`edge.camera.threads.thread_candidates`); None elsewhere (on CUDA the host threads matter
    little and the backend keeps its own default)."""
    from edge.runners.onnxruntime_runner import physical_cores

    if options.threads is not None or options.streams is not None:
        streams = options.streams or 1
        return [setting_of(streams, options.threads or max(1, physical_cores() // streams))]
    if options.device != "cpu":
        return None
    return thread_candidates(physical_cores(), streams=one_slot and not options.show)


def plan_threads(
    model: str | Path, options: CameraOptions, capture: Any, one_slot: bool = True
) -> tuple[dict[Setting | None, list[Any]], ThreadChoice]:
    """The runners to start with, per setting (one runner per stream), and the choice so far: one
    setting when it is fixed (``--threads``/``--streams``, not CPU, one core, a backend that cannot
    run two settings side by side, a cached choice), else every candidate and ``how == "measuring"``
    (:class:`ThreadProbe` decides)."""
    from edge.runners import select_runner

    def make(threads: int | None) -> Any:
        runner = select_runner(model, device=options.device, backend=options.backend, threads=threads)
        # The capture thread decodes and preprocesses while the model runs: spinning inference threads
        # would starve it (measured: 40% -> 60% of batch-1 throughput, and no drops below model speed).
        # (measured again with just-in-time preprocessing, 224 px Lite0 at 2 threads: spinning only
        # within a call, ORT's session.force_spinning_stop, gave 94 FPS against 117 FPS without spinning).
        runner.spin_wait = False
        return runner

    def make_setting(setting: Setting, first: Any = None) -> list[Any]:
        runners = [first] if first is not None else []
        return runners + [make(threads_of(setting)) for _ in range(streams_of(setting) - len(runners))]

    candidates = inference_threads(options, one_slot)
    if candidates is None:
        return {None: [make(None)]}, ThreadChoice(None, "backend default")
    first = make(threads_of(candidates[0]))
    if first.backend not in MEASURED_BACKENDS and any(streams_of(c) > 1 for c in candidates):
        if options.streams is not None:
            first.deactivate()
            raise UserError(
                f"--streams needs a backend whose threads belong to one runner (onnxruntime, openvino), not {first.backend}"
            )
        candidates = [c for c in candidates if streams_of(c) == 1]
    if options.threads is not None or options.streams is not None:
        how = "--threads" if options.streams is None else "--streams" if options.threads is None else "--threads --streams"
        return {candidates[0]: make_setting(candidates[0], first)}, ThreadChoice(candidates[0], how)
    if len(candidates) == 1:
        return {candidates[0]: [first]}, ThreadChoice(candidates[0], "only one core")
    if first.backend not in MEASURED_BACKENDS:
        why = f"every core; not measured: {first.backend} sets threads for the whole process"
        return {candidates[0]: [first]}, ThreadChoice(candidates[0], why)
    key = _thread_key(first, options, capture, candidates) if options.thread_cache else None
    cached = load_thread_choice(key) if key is not None else None
    if cached is not None and cached["threads"] in candidates:
        choice = ThreadChoice.from_dict({**cached, "how": "cached", "cache": str(thread_choices_path()), "key": key})
        assert choice.threads is not None
        reuse = first if threads_of(choice.threads) == threads_of(candidates[0]) else None
        if reuse is None:
            first.deactivate()
        return {choice.threads: make_setting(choice.threads, reuse)}, choice
    runners: dict[Setting | None, list[Any]] = {candidates[0]: make_setting(candidates[0], first)}
    runners.update({t: make_setting(t) for t in candidates[1:]})
    return runners, ThreadChoice(None, "measuring", key=key)


def _thread_key(runner: Any, options: CameraOptions, capture: Any, candidates: list[Setting]) -> str:
    from edge.atomic import sha256_file
    from edge.manifest import manifest_path, read_manifest

    sha = read_manifest(runner.path).sha256 if manifest_path(runner.path).exists() else sha256_file(runner.path)
    width, height = int(capture.get(3) or 0), int(capture.get(4) or 0)  # CAP_PROP_FRAME_WIDTH / HEIGHT
    return thread_cache_key(sha, runner.backend, options.device, (width, height) if width and height else None, candidates)


def run_camera(
    model: str | Path,
    options: CameraOptions,
    stop: threading.Event | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    console: Any = None,
    on_hold: Callable[[CameraResult], None] | None = None,
) -> CameraResult:
    """Classify ``options.source`` with ``model`` until the source ends, a limit is reached, ``stop``
    is set, the window is closed or Ctrl-C; returns the figures. ``on_ready`` gets the served URL etc.

    With ``--serve`` a run whose source ended (or reached a limit) keeps serving the last frame until
    Ctrl-C or ``stop``; ``on_hold`` gets the finished figures before that wait (``edge camera``
    prints its summary there), and they are what is returned."""
    stop = stop or threading.Event()
    source = parse_source(options.source)  # validate the source string before any work
    options.validate(source)
    if not Path(model).exists():
        raise UserError(f"{model} does not exist: give a run directory or an artifact file (.pt, .onnx, .engine)")
    source, _ = resolve_source(options)
    capture = open_capture(source, read_timeout_s=options.retry.stall_timeout_s / 2)
    try:
        runners, choice = plan_threads(model, options, capture, one_slot=options.one_slot(source))
    except BaseException:
        capture.release()
        raise

    session = _Session(runners, choice, source, options, stop, console)
    session.capture = capture
    # The handler stays through close: a Ctrl-C while the files are finished is recorded (as a later
    # reason, so it changes nothing) instead of cutting the finishing short; a second one still does.
    with _ctrl_c_stops(session):
        try:
            session.start(capture, on_ready)
            session.loop()
            if session.holds():
                session.finish()
                if on_hold is not None:
                    on_hold(session.result())
                session.hold()
        except KeyboardInterrupt:
            session.end(INTERRUPTED)
        finally:
            session.close()
    return session.result()


@contextlib.contextmanager
def _ctrl_c_stops(session: "_Session") -> Iterator[None]:
    """The first Ctrl-C ends the run after the frame in hand (so the JSONL and the recording hold the
    same frames); a second one interrupts at once. Only the main thread can own signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if session.stop.is_set():
            raise KeyboardInterrupt
        session.end(INTERRUPTED)
        session.stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Session:
    """One run's moving parts; ``close`` always leaves finished files behind."""

    def __init__(
        self,
        runners: dict[Setting | None, list[Any]],
        threads: ThreadChoice,
        source: SourceSpec,
        options: CameraOptions,
        stop: threading.Event,
        console: Any,
    ):
        # setting -> its runners (one per stream): one setting, or the candidates while they are measured
        self.runners = runners
        self._all_runners = dict(runners)  # every runner started, released at the end
        self._kept: Setting | None = next(iter(runners))  # the setting in use once none is being measured
        self.runner = runners[self._kept][0]
        self.spec = self.runner.spec
        self.threads = threads
        self.probe: ThreadProbe | None = None
        self.source = source
        self.options = options
        self.stop = stop
        self.console = console
        self.metrics = CameraMetrics()
        self._end_reasons: list[str] = []  # every reason to stop, in order; the first one is the run's
        self.grabber: FrameGrabber | None = None
        self.capture: Any = None  # released here unless the grabber took it over
        self.recorder: VideoRecorder | None = None
        self.jsonl: JsonlLog | None = None
        self.server: Any = None
        self.window: Any = None
        self.outputs: dict[str, str] = {}
        self.started = time.monotonic()
        self.wall_clock_offset = time.time() - self.started
        self.progress: Any = None
        self._last_recorded = -1
        self._last_stats = -1.0
        self._stats: dict[str, Any] = {}
        self._last_predictions: list[Prediction] = []
        self._cv2_threads: int | None = None
        self._count_position = False  # the progress counts the position in the file, not classified frames
        self._last_index = -1
        # Two streams classify frames side by side: the results are handled under this lock, and one
        # that finishes after a newer frame's is counted (and logged) but not drawn.
        self._lock = threading.Lock()
        self._helper: threading.Thread | None = None
        self._helper_error: BaseException | None = None
        self._retired: set[Setting | None] = set()  # settings the measurement did not keep
        self.out_of_order = 0
        self._finished = False
        self._source_ended = False
        self._ended_at: float | None = None

    def end(self, reason: str) -> None:
        """Record a reason to stop. The first one is the run's and is never overwritten: a Ctrl-C
        followed by "end of file" or "N frames classified" stays an interrupted run. ``list.append``
        is atomic, so the SIGINT handler (which runs between any two bytecodes of the main thread)
        cannot lose or reorder a reason the loop is recording."""
        self._end_reasons.append(reason)

    @property
    def end_reason(self) -> str:
        return self._end_reasons[0] if self._end_reasons else ""

    # ---- set-up -------------------------------------------------------------------------
    def start(self, capture: Any, on_ready: Callable[[dict[str, Any]], None] | None) -> None:
        options, source = self.options, self.source
        cv2 = require("cv2", "opencv", "The camera classifier")
        # The model's threads already use the cores; OpenCV's own pool for the per-frame resize
        # would fight them (more threads than cores) and slow both down.
        self._cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        for runners in self.runners.values():
            for runner in runners:
                runner.activate()
                # The first call pays for lazy initialisation (allocations, kernel selection); keep it out of the figures.
                runner.infer(np.zeros((1, *self.spec.input_shape), dtype=np.float32))
        if self.threads.how == "measuring":
            self.probe = ThreadProbe({t: rs[0] for t, rs in self.runners.items() if t is not None})
        fps_declared = capture_fps(capture)
        every_frame = options.every_frame or (not source.live and not options.realtime)
        realtime_fps = None
        if options.realtime:
            if fps_declared is None:
                raise UserError(f"--realtime needs the file's frame rate, and {source.text} declares none")
            realtime_fps = fps_declared
        self.grabber = FrameGrabber(
            lambda: open_capture(source, read_timeout_s=options.retry.stall_timeout_s / 2),
            live=source.live,
            every_frame=every_frame,
            realtime_fps=realtime_fps,
            loop=options.loop,
            retry=options.retry,
            preprocess=self.spec.apply,
        )
        if options.jsonl is not None:
            self.jsonl = JsonlLog(options.jsonl)
        if options.record is not None:
            self.recorder = VideoRecorder(options.record, fps_declared or 30.0)
        if options.show:
            self.window, problem = open_window()
            if self.window is None:
                self._notice(f"--show: {problem}; running headless (use --serve or --record to see the output)")
        if options.serve is not None:
            from edge.camera.server import StreamServer, parse_address

            self.server = StreamServer(*parse_address(options.serve))
            self._notice(f"serving the annotated stream on {self.server.url}")
        self._start_progress(self._progress_total(capture, every_frame))
        self.grabber.start(capture)
        if any(t is not None and streams_of(t) > 1 for t in self.runners):
            self._helper = threading.Thread(target=self._helper_loop, name="edge-camera-stream-2", daemon=True)
            self._helper.start()
        if on_ready is not None:
            on_ready({"url": self.server.url if self.server else None})

    def _notice(self, text: str) -> None:
        if not self.options.quiet:
            self._console().print(text, highlight=False, soft_wrap=True)

    def _console(self) -> Any:
        if self.console is None:
            from edge.console import make_console

            # With --jsonl - stdout carries the records only; everything else goes to stderr.
            self.console = make_console(stderr=self.options.jsonl == "-")
        return self.console

    def _progress_total(self, capture: Any, every_frame: bool) -> int | None:
        """The frames this run will process: --max-frames (capped by the file's length when every frame
        is classified), else a file's length (then a --realtime bar counts the position in the file)."""
        declared = None if self.source.live or self.options.loop else capture_frame_count(capture)
        limit = self.options.max_frames
        if limit is not None:
            return min(limit, declared) if declared and every_frame else limit
        self._count_position = declared is not None and not every_frame
        return declared

    def _start_progress(self, total: int | None) -> None:
        if self.options.quiet:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        from edge.console import make_progress

        columns: list[Any] = [TextColumn("[bold]camera[/bold] {task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
        self.progress = make_progress(*columns, console=self._console(), unit="frames", transient=False)
        self.progress.__enter__()
        self._task = self.progress.add_task(f"camera {self.source.text[-40:]}", total=total, status="starting")

    def _progress_completed(self) -> int:
        return self._last_index + 1 if self._count_position else self.metrics.classified

    # ---- the loop -------------------------------------------------------------------------
    def setting(self) -> Setting | None:
        """The setting that classifies the next frames (the probe's while it measures)."""
        probe = self.probe
        return probe.threads if probe is not None else self._kept

    def loop(self) -> None:
        """The main thread's stream: take the newest frame, classify it, hand the result on."""
        assert self.grabber is not None
        options, grabber = self.options, self.grabber
        deadline = self.started + options.duration if options.duration else None
        stall_limit = options.retry.stall_timeout_s
        while not self.stop.is_set() and not self._end_reasons:
            frame = grabber.get(timeout=0.05)
            if frame is None:
                if grabber.finished:
                    self._source_ended = True
                    self.end(grabber.stats.end_reason or "source ended")
                elif grabber.stalled_for() > stall_limit:
                    self.end(f"source stalled: a read blocked for more than {stall_limit:g} s")
                elif deadline is not None and time.monotonic() >= deadline:
                    self.end(f"duration of {options.duration:g} s reached")
                continue
            self._classify(frame, 0, self.setting())
        self._stop_helper()
        if self._helper_error is not None:
            raise self._helper_error
        self.end("stopped")

    def _helper_loop(self) -> None:
        """The second stream's thread: it takes frames while the setting in use has two streams."""
        assert self.grabber is not None
        try:
            while not self.stop.is_set() and not self._end_reasons:
                setting = self.setting()
                if setting is None or streams_of(setting) < 2:
                    self.grabber.leave()  # while idle, this stream's next free time must not steer the reader
                    if self.probe is None:
                        break  # one stream was kept
                    time.sleep(0.002)  # the measurement is on a one-stream setting
                    continue
                frame = self.grabber.get(timeout=0.05)
                if frame is not None:
                    self._classify(frame, 1, setting)
        except BaseException as exc:  # handed to the main thread, which raises it
            self._helper_error = exc
            self.end(f"inference error in the second stream: {type(exc).__name__}")
        finally:
            self.grabber.leave()
            self._release_retired(1)

    def _stop_helper(self) -> None:
        """Wait for the second stream to hand on the frame in hand (it stops once a reason to end is recorded)."""
        if self._helper is not None:
            if not self._end_reasons:
                self.end("stopped")
            self._helper.join(10.0)

    def _classify(self, frame: Frame, stream: int, setting: Setting | None) -> None:
        """Classify ``frame`` on ``stream``'s runner of ``setting``, then hand the result on (under the lock)."""
        assert frame.tensor is not None  # get() returns every frame preprocessed
        runner = self._all_runners[setting][stream]
        t1 = time.monotonic()
        logits = runner.infer(frame.tensor[None])
        t2 = time.monotonic()
        options = self.options
        predictions = top_k(logits[0], self.spec.labels, options.topk)
        with self._lock:
            result_at = time.monotonic()
            if options.max_frames is not None and self.metrics.classified >= options.max_frames:
                return  # the other stream reached the limit while this frame was classified
            self.metrics.add(result_at - frame.grabbed_at, t2 - t1, frame.preprocess_s, result_at)
            in_order = frame.index > self._last_index
            if in_order:
                self._last_index, self._last_predictions = frame.index, predictions
            else:
                self.out_of_order += 1
            if self.probe is not None and self.probe.record(result_at, result_at - frame.grabbed_at, setting):
                self._keep_threads(self.probe)
            if not self._emit(frame, predictions, result_at, t2 - t1, drawn=in_order):
                self.end("window closed")
            if options.max_frames is not None and self.metrics.classified >= options.max_frames:
                self.end(f"{options.max_frames} frames classified")
            if options.duration and result_at >= self.started + options.duration:
                self.end(f"duration of {options.duration:g} s reached")
        self._release_retired(stream)

    def _release_retired(self, stream: int) -> None:
        """Release this stream's runners of the settings the measurement did not keep. Each stream's
        runners are used by its own thread only, so that thread releases them, between two calls."""
        for setting in list(self._retired):
            runners = self._all_runners.get(setting, [])
            if stream < len(runners):
                runners[stream].deactivate()

    def _emit(
        self, frame: Frame, predictions: list[Prediction], result_at: float, inference_s: float, drawn: bool = True
    ) -> bool:
        """Hand one result to every output; False when the user closed the window. A result that is
        not ``drawn`` (older than one already shown) goes to the JSONL log only."""
        if result_at - self._last_stats >= 0.25:  # live figures a few times a second, not per frame
            self._last_stats = result_at
            self._stats = self.live_stats(predictions)
            if self.progress is not None:
                self.progress.update(self._task, completed=self._progress_completed(), status=_progress_status(self._stats))
        if self.jsonl is not None:
            fps = self.grabber.stats.fps if self.grabber else None
            source_time = frame.index / fps if (fps and not self.source.live) else None
            latency_ms = (result_at - frame.grabbed_at) * 1000
            self.jsonl.write(
                jsonl_record(
                    frame.index,
                    self.wall_clock_offset + frame.captured_at,
                    predictions,
                    latency_ms,
                    inference_s * 1000,
                    source_time,
                    grabbed_unix=self.wall_clock_offset + frame.grabbed_at,
                    source_ts_ms=frame.source_ts_ms,
                )
            )
        if not drawn or (self.recorder is None and self.server is None and self.window is None):
            return True
        annotated = draw_overlay(frame.image, predictions, _status_line(self._stats))
        if self.recorder is not None:
            # A live run holds each annotated frame over the source frames it stands for, so the
            # recording plays at the source's speed.
            repeat = 1 if self._last_recorded < 0 else frame.index - self._last_recorded
            self.recorder.write(annotated, repeat=repeat)
            self._last_recorded = frame.index
        if self.server is not None:
            cv2 = require("cv2", "opencv", "Serving the stream")
            ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 80])
            self.server.publish(jpeg.tobytes() if ok else None, self._stats)
        if self.window is not None:
            return bool(self.window.show(annotated))
        return True

    def live_stats(self, predictions: list[Prediction] | None = None) -> dict[str, Any]:
        """The statistics on the served page (a rolling window of recent frames)."""
        figures = self.metrics.figures(recent=True)
        grabber = self.grabber.stats if self.grabber else None
        stats: dict[str, Any] = {k: (round(v, 2) if v is not None else None) for k, v in figures.items()}
        stats.update(
            captured=grabber.captured if grabber else 0,
            classified=self.metrics.classified,
            dropped=grabber.dropped if grabber else 0,
            source=self.source.text,
            model=f"{self.runner.path.name} ({self.runner.name})",
            latency_from=LATENCY_FROM,
            top1=f"{predictions[0].label} {100 * predictions[0].prob:.1f}%" if predictions else None,
            topk=[{"class_id": p.class_id, "label": p.label, "prob": round(p.prob, 4)} for p in predictions or []],
        )
        return stats

    # ---- the thread setting ---------------------------------------------------------------
    def _keep_threads(self, probe: ThreadProbe) -> None:
        """The measurement is done: keep the chosen setting, retire the others (each stream's thread
        releases its own runners after its current call), cache the choice."""
        choice = probe.choice
        assert choice is not None and choice.threads is not None
        choice.key = self.threads.key
        self._kept = choice.threads
        self.runner = self._all_runners[choice.threads][0]
        self._retired = {t for t in self._all_runners if t != choice.threads}
        self.runners, self.probe, self.threads = {choice.threads: self._all_runners[choice.threads]}, None, choice
        if choice.key is not None and choice.how == "measured":
            entry = {k: v for k, v in choice.to_dict().items() if k not in ("how", "cache", "key")}
            try:
                choice.cache = str(store_thread_choice(choice.key, {**entry, "model": str(self.runner.path)}))
            except (OSError, UserError) as exc:
                self._notice(f"threads: the choice is not cached ({exc})")
        self._notice(f"threads: {choice.describe()}")

    # ---- tear-down ------------------------------------------------------------------------
    def holds(self) -> bool:
        """A served run that ended on its own (source ended, a limit, a stall) keeps its page up until
        Ctrl-C, so a browser opened after a short run still finds it."""
        return self.server is not None and not self.stop.is_set() and self.end_reason != "window closed"

    def hold(self) -> None:
        """Serve the last frame and the final statistics until Ctrl-C (or ``stop``)."""
        assert self.server is not None
        final = {**self.live_stats(self._last_predictions), "ended": self.end_reason}
        self.server.publish(None, final)
        # Said even under --quiet: the process does not end by itself from here.
        self._console().print(
            f"{'source ended' if self._source_ended else 'stopped'} after "
            f"{self.metrics.classified} frames ({self.end_reason}); still serving the last frame at "
            f"{self.server.url} — Ctrl-C to stop",
            highlight=False,
            soft_wrap=True,
        )
        while not self.stop.wait(0.2):
            pass

    def finish(self) -> None:
        """Stop the reader and finish every output file (the server stays up); safe after any failure."""
        if self._finished:
            return
        self._finished, self._ended_at = True, time.monotonic()
        self._stop_helper()
        if self.grabber is not None and self.grabber.started:
            self.grabber.stop()
        elif self.capture is not None:
            self.capture.release()
        if self.progress is not None:
            status = _progress_status(self.live_stats(self._last_predictions)) if self.metrics.classified else "no frame"
            self.progress.update(self._task, completed=self._progress_completed(), status=status)
            self.progress.__exit__(None, None, None)
        if self.recorder is not None:
            path = self.recorder.close()
            if path is not None:
                self.outputs["recording"] = str(path)
        if self.jsonl is not None:
            self.jsonl.close()
            self.outputs["jsonl"] = self.options.jsonl or ""
        if self.window is not None:
            self.window.close()
        if self.probe is not None:
            self.threads, self.probe = self.probe.unfinished(), None
        for runners in self._all_runners.values():
            for runner in runners:
                runner.deactivate()

    def close(self) -> None:
        """Finish the outputs, stop serving, restore OpenCV's threads; safe to call after any failure."""
        self.finish()
        if self.server is not None:
            self.server.close()
        if self._cv2_threads is not None:
            require("cv2", "opencv", "The camera classifier").setNumThreads(self._cv2_threads)

    def result(self) -> CameraResult:
        grabber = self.grabber.stats if self.grabber else None
        threads = self.probe.unfinished() if self.probe is not None else self.threads
        if threads.threads is None and self.runner.threads is not None:  # the backend's default, as it reported it
            threads = ThreadChoice(self.runner.threads, threads.how)
        return CameraResult(
            figures=self.metrics.figures(),
            captured=grabber.captured if grabber else 0,
            classified=self.metrics.classified,
            dropped=grabber.dropped if grabber else 0,
            preprocessed=grabber.preprocessed if grabber else 0,
            preprocessed_on_take=grabber.preprocessed_on_take if grabber else 0,
            out_of_order=self.out_of_order,
            retries=grabber.retries if grabber else 0,
            reconnects=grabber.reconnects if grabber else 0,
            end_reason=self.end_reason,
            source=self.source.text,
            model=str(self.runner.path),
            runner={**self.runner.describe(), "streams": len(self.runners.get(self._kept, [])) or 1},
            wall_s=(self._ended_at or time.monotonic()) - self.started,
            outputs=self.outputs,
            threads=threads.to_dict(),
            paced=self.source.live or self.options.realtime,
        )


def format_figure(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _status_line(stats: dict[str, Any]) -> str:
    if not stats:
        return "starting"
    return (
        f"{format_figure(stats['achieved_fps'])} FPS | infer {format_figure(stats['inference_p50_ms'])} ms | "
        f"latency {format_figure(stats['latency_p50_ms'])} ms | dropped {stats['dropped']}"
    )


def _progress_status(stats: dict[str, Any]) -> str:
    return f"{format_figure(stats['achieved_fps'])} FPS, p50 {format_figure(stats['latency_p50_ms'], 0)} ms, {stats['dropped']} dropped, {(stats['top1'] or '')[:24]}"
