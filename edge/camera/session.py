"""The live classification session: capture -> preprocess -> infer -> overlay -> outputs.

:func:`run_camera` opens the source and the runner, runs a capture thread that reads and
preprocesses (the artifact's own PreprocessSpec) while the model works on the previous frame, and
returns the figures (:class:`CameraResult`). Live sources and --realtime files hand the model only
the newest frame, dropping and counting older ones; --every-frame classifies every frame in order.
The model's thread setting is ``--threads``/``--streams``, else chosen on the first frames or read
from the cache (:mod:`edge.camera.thread_plan`, :mod:`edge.camera.threads`); with two streams the main
thread and a second one each take the newest frame and classify it on their own runner, and the
results are handed on under a lock to the outputs (:class:`edge.camera.outputs.RunOutputs`), the
figures (:mod:`edge.camera.metrics`) and the progress line (:mod:`edge.camera.progress`). With
--serve a run that ended on its own keeps serving its last frame until Ctrl-C. The options are
:class:`edge.camera.options.CameraOptions`; the `edge camera` command is :mod:`edge.camera.cli`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.camera.cache import store_thread_choice
from edge.camera.metrics import INTERRUPTED, LATENCY_FROM, CameraMetrics, CameraResult
from edge.camera.options import CameraOptions
from edge.camera.outputs import Prediction, RunOutputs, top_k
from edge.camera.progress import CameraProgress, progress_status, progress_total
from edge.camera.sources import (
    Frame,
    FrameGrabber,
    SourceSpec,
    capture_fps,
    capture_frame_count,
    open_capture,
    parse_source,
)
from edge.camera.thread_plan import plan_threads
from edge.camera.threads import Setting, ThreadChoice, ThreadProbe, streams_of
from edge.errors import UserError, require


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

    session = _Session(runners, choice, source, options, stop, console, run_root=Path(model) if Path(model).is_dir() else None)
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
        run_root: Path | None = None,
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
        self.progress = CameraProgress(options.quiet, stderr=options.jsonl == "-", console=console)
        self.metrics = CameraMetrics()
        self._end_reasons: list[str] = []  # every reason to stop, in order; the first one is the run's
        self.grabber: FrameGrabber | None = None
        self.capture: Any = None  # released here unless the grabber took it over
        self.started = time.monotonic()
        # A file the outputs replace is kept (in the run's history/ when it lies in the run) and said, even under --quiet.
        self.outputs = RunOutputs(unix_offset=time.time() - self.started, run_root=run_root, say=self.progress.say)
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
        self.outputs.open(
            jsonl=options.jsonl,
            record=options.record,
            record_fps=fps_declared or 30.0,
            show=options.show,
            serve=options.serve,
            public=options.public,
            notice=self.progress.notice,
        )
        declared = None if source.live or options.loop else capture_frame_count(capture)
        total, self._count_position = progress_total(declared, options.max_frames, every_frame)
        self.progress.start(source.text, total)
        self.grabber.start(capture)
        if any(t is not None and streams_of(t) > 1 for t in self.runners):
            self._helper = threading.Thread(target=self._helper_loop, name="edge-camera-stream-2", daemon=True)
            self._helper.start()
        if on_ready is not None:
            server = self.outputs.server
            on_ready({"url": server.url if server else None})

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
        """Hand one result to the outputs and the progress line; False when the user closed the window."""
        if result_at - self._last_stats >= 0.25:  # live figures a few times a second, not per frame
            self._last_stats = result_at
            self._stats = self.live_stats(predictions)
            self.progress.update(self._progress_completed(), self._stats)
        source_fps = self.grabber.stats.fps if self.grabber and not self.source.live else None
        return self.outputs.emit(frame, predictions, self._stats, result_at, inference_s, source_fps, drawn)

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
                self.progress.notice(f"threads: the choice is not cached ({exc})")
        self.progress.notice(f"threads: {choice.describe()}")

    # ---- tear-down ------------------------------------------------------------------------
    def holds(self) -> bool:
        """A served run that ended on its own (source ended, a limit, a stall) keeps its page up until
        Ctrl-C, so a browser opened after a short run still finds it."""
        return self.outputs.server is not None and not self.stop.is_set() and self.end_reason != "window closed"

    def hold(self) -> None:
        """Serve the last frame and the final statistics until Ctrl-C (or ``stop``)."""
        server = self.outputs.server
        assert server is not None
        final = {**self.live_stats(self._last_predictions), "ended": self.end_reason}
        server.publish(None, final)
        # Said even under --quiet: the process does not end by itself from here.
        self.progress.say(
            f"{'source ended' if self._source_ended else 'stopped'} after "
            f"{self.metrics.classified} frames ({self.end_reason}); still serving the last frame at "
            f"{server.url} — Ctrl-C to stop"
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
        if self.progress.running:
            status = progress_status(self.live_stats(self._last_predictions)) if self.metrics.classified else "no frame"
            self.progress.finish(self._progress_completed(), status)
        self.outputs.finish()
        if self.probe is not None:
            self.threads, self.probe = self.probe.unfinished(), None
        for runners in self._all_runners.values():
            for runner in runners:
                runner.deactivate()

    def close(self) -> None:
        """Finish the outputs, stop serving, restore OpenCV's threads; safe to call after any failure."""
        self.finish()
        self.outputs.close()
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
            outputs=self.outputs.files,
            threads=threads.to_dict(),
            paced=self.source.live or self.options.realtime,
        )
