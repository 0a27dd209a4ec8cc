"""What the camera classifier does with a result: the overlay, the recording, the JSONL log, the window
and the served page (:class:`RunOutputs` hands each result to all that a run has).

Files are written beside their target under a temporary name and renamed when the run ends (also
after Ctrl-C), so a recording is always a finished, playable file and a JSONL log never ends in a
half-written line. A file they replace is kept first under ``history/<UTC time>/`` (the run's when
the file lies in the run given to ``edge camera``, else beside it; :mod:`edge.history`) and one line
says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge.camera.metrics import format_figure
from edge.camera.sources import Frame
from edge.errors import UserError, require
from edge.history import history_root, keeping_previous, replaces


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k result."""

    class_id: int
    label: str
    prob: float


def top_k(logits: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """Softmax over one row of logits and the ``k`` most probable classes, best first."""
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    exp = np.exp(row - row.max())
    probs = exp / exp.sum()
    order = np.argsort(-probs, kind="stable")[: max(1, k)]
    return [Prediction(int(i), labels[i] if i < len(labels) else f"class {i}", float(probs[i])) for i in order]


# ---- overlay ----------------------------------------------------------------------------------


def draw_overlay(frame: np.ndarray, predictions: list[Prediction], status: str) -> np.ndarray:
    """A copy of ``frame`` with the top-k labels, their probabilities and a status line drawn on it."""
    cv2 = require("cv2", "opencv", "The camera overlay")
    image = frame.copy() if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    height, width = image.shape[:2]
    scale = max(0.35, min(1.0, width / 900))
    thickness = 1 if scale < 0.6 else 2
    line_h = int(28 * scale) + 4
    lines = [f"{p.label[:32]}  {100 * p.prob:5.1f}%" for p in predictions] + [status]
    box_h = line_h * len(lines) + 8
    box_w = min(width, int(max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for t in lines)) + 16)
    # A darkened box keeps the text readable on any background.
    image[:box_h, :box_w] = (image[:box_h, :box_w] * 0.35).astype(np.uint8)
    for i, text in enumerate(lines):
        color = (80, 255, 80) if i == 0 else (255, 255, 255) if i < len(predictions) else (0, 215, 255)
        y = 4 + line_h * (i + 1) - 6
        cv2.putText(image, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return image


# ---- files written atomically at the end of the run --------------------------------------------


def _temporary_beside(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(fd)
    os.chmod(name, 0o644)
    return Path(name)


class VideoRecorder:
    """Writes annotated frames to ``.mp4`` (MPEG-4) or ``.avi`` (MJPEG); renamed into place on ``close``."""

    def __init__(self, path: str | os.PathLike[str], fps: float):
        from edge.camera.demo import video_fourcc

        self.cv2 = require("cv2", "opencv", "Recording video")
        self.path = Path(path)
        self.fourcc = video_fourcc(self.cv2, self.path)  # validates the suffix before any work
        self.fps = fps
        self.frames = 0
        self._writer: Any = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray, repeat: int = 1) -> None:
        """Append ``frame`` (``repeat`` times: a live run keeps the recording on the source's clock)."""
        height, width = frame.shape[:2]
        if self._writer is None:
            self._tmp = _temporary_beside(self.path)
            self._writer = self.cv2.VideoWriter(str(self._tmp), self.fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                self.discard()
                raise UserError(f"cannot record to {self.path}: OpenCV has no encoder for {self.path.suffix} here (try .avi)")
            self._size = (width, height)
        if (width, height) != self._size:
            frame = self.cv2.resize(frame, self._size)
        for _ in range(max(1, repeat)):
            self._writer.write(frame)
            self.frames += 1

    @property
    def pending(self) -> bool:
        """Whether a recording waits to be moved into place (no frame written: nothing to move)."""
        return self._writer is not None

    def close(self) -> Path | None:
        """Finish the file (release writes the index that makes it playable) and move it into place."""
        if self._writer is None or self._tmp is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.path

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self._tmp = None


class JsonlLog:
    """One JSON object per classified frame, to a file (renamed into place on ``close``) or stdout (``-``)."""

    def __init__(self, target: str):
        self.target = target
        self.lines = 0
        self._tmp: Path | None = None
        self._handle: TextIO
        if target == "-":
            self._handle = sys.stdout
        else:
            path = Path(target)
            if path.is_dir():
                raise UserError(f"--jsonl {path} is a directory: give a file path (or - for stdout)")
            self._tmp = _temporary_beside(path)
            self._handle = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict[str, Any]) -> None:
        # One write per line: an interrupt between records never leaves a partial line.
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()
        self.lines += 1

    @property
    def pending(self) -> bool:
        """Whether a log file waits to be moved into place (not stdout, not closed yet)."""
        return self._tmp is not None and not self._handle.closed

    def close(self) -> None:
        if self._tmp is None:
            self._handle.flush()
            return
        if not self._handle.closed:
            self._handle.close()
            os.replace(self._tmp, self.target)

    def discard(self) -> None:
        """Drop the log file that was not moved into place."""
        if self._tmp is not None and not self._handle.closed:
            self._handle.close()
            self._tmp.unlink(missing_ok=True)


def jsonl_record(
    frame_index: int,
    captured_unix: float,
    predictions: list[Prediction],
    latency_ms: float,
    inference_ms: float,
    source_time_s: float | None,
    *,
    grabbed_unix: float | None = None,
    source_ts_ms: float | None = None,
) -> dict[str, Any]:
    """The JSONL schema: one classified frame (one JSON object per line, keys in JSONL_FIELDS order).

    ``frame``          index of the frame in the source (counting every frame read, dropped ones too)
    ``captured_at``    Unix time (s) when the decoded BGR frame was in hand
    ``source_time_s``  ``frame / declared fps`` for a file, null for a live source
    ``latency_ms``     from ``grabbed_at`` to the top-k result: decode, queueing, preprocessing, inference
    ``inference_ms``   the runner's ``infer`` call alone
    ``topk``           ``[{class_id, label, prob}]``, most probable first
    ``grabbed_at``     Unix time (s) when the frame was grabbed, before decode: a live source right after
                       the driver handed it over, a file just before it was read (--realtime: when it was
                       released); ``latency_ms`` and every latency figure start here
    ``source_ts_ms``   the source's own timestamp of the frame (OpenCV CAP_PROP_POS_MSEC at grab time):
                       for a file the container's presentation time (restarting at 0 on each --loop pass),
                       for a live source what its backend reports (V4L2: driver buffer time), else null
    """
    return {
        "frame": frame_index,
        "captured_at": round(captured_unix, 6),
        "source_time_s": None if source_time_s is None else round(source_time_s, 4),
        "latency_ms": round(latency_ms, 3),
        "inference_ms": round(inference_ms, 3),
        "topk": [{"class_id": p.class_id, "label": p.label, "prob": round(p.prob, 6)} for p in predictions],
        "grabbed_at": None if grabbed_unix is None else round(grabbed_unix, 6),
        "source_ts_ms": None if source_ts_ms is None else round(source_ts_ms, 3),
    }


JSONL_FIELDS = (
    "frame",
    "captured_at",
    "source_time_s",
    "latency_ms",
    "inference_ms",
    "topk",
    "grabbed_at",
    "source_ts_ms",
)


# ---- the window ---------------------------------------------------------------------------------


def display_problem(cv2: Any) -> str | None:
    """Why no window can be shown here, or None when one can."""
    gui = next((line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")), "")
    if gui and gui.split(":", 1)[1].strip().upper() in ("NONE", "NO", ""):
        return "this OpenCV has no GUI support (opencv-python-headless?)"
    if not sys.platform.startswith("linux"):
        return None
    display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
    if not (display or wayland):
        return "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    if wayland and Path(os.environ.get("XDG_RUNTIME_DIR", "/run/user/0"), wayland).exists():
        return None
    # Qt aborts the whole process (no exception) when the X server is not there: look first.
    if display and not _x_display_reachable(display):
        return f"display {display} is not reachable"
    return None


def _x_display_reachable(display: str) -> bool:
    """True when an X server answers at ``display`` (':0' -> its unix socket, 'host:10.0' -> TCP 6010)."""
    import socket

    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    if host in ("", "unix"):
        return Path(f"/tmp/.X11-unix/X{number}").exists()
    try:
        with socket.create_connection((host, 6000 + number), timeout=0.5):
            return True
    except OSError:
        return False


class Window:
    """An OpenCV window; ``show`` returns False when the user pressed q or Esc (or closed it)."""

    NAME = "edge camera"

    def __init__(self) -> None:
        self.cv2 = require("cv2", "opencv", "The camera window")
        self.cv2.namedWindow(self.NAME, self.cv2.WINDOW_NORMAL)

    def show(self, image: np.ndarray) -> bool:
        self.cv2.imshow(self.NAME, image)
        key = self.cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        return self.cv2.getWindowProperty(self.NAME, self.cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        self.cv2.destroyWindow(self.NAME)


def open_window() -> tuple[Window | None, str | None]:
    """A window, or (None, why not) when this machine cannot show one."""
    cv2 = require("cv2", "opencv", "The camera window")
    problem = display_problem(cv2)
    if problem is not None:
        return None, problem
    try:
        return Window(), None
    except cv2.error as exc:
        return None, f"OpenCV cannot open a window: {str(exc).strip().splitlines()[-1][:120]}"


# ---- every output of a run --------------------------------------------------------------------


def status_line(stats: dict[str, Any]) -> str:
    """The overlay's last line: achieved FPS, inference and latency p50, dropped frames."""
    if not stats:
        return "starting"
    return (
        f"{format_figure(stats['achieved_fps'])} FPS | infer {format_figure(stats['inference_p50_ms'])} ms | "
        f"latency {format_figure(stats['latency_p50_ms'])} ms | dropped {stats['dropped']}"
    )


class RunOutputs:
    """Where a run's results go: the JSONL log, the recording, the served page and the window.

    ``emit`` hands each result to all of them; ``finish`` leaves finished files behind (``files``
    names them) and closes the window; the page stays up until ``close``, so a run can keep serving
    its last frame.
    """

    def __init__(self, unix_offset: float, run_root: Path | None = None, say: Callable[[str], None] | None = None) -> None:
        self.unix_offset = unix_offset  # time.time() - time.monotonic(): the JSONL's times are Unix times
        self.run_root = run_root  # the run the model came from: a file replaced inside it is kept in RUN/history/
        self.say = say  # where the line on the files kept goes (None: the log)
        self.jsonl: JsonlLog | None = None
        self.recorder: VideoRecorder | None = None
        self.server: Any = None
        self.window: Window | None = None
        self.files: dict[str, str] = {}
        self._last_recorded = -1

    def open(
        self,
        *,
        jsonl: str | None,
        record: str | None,
        record_fps: float,
        show: bool,
        serve: str | None,
        notice: Callable[[str], None],
        public: bool = False,
    ) -> None:
        """Open the outputs asked for (``--jsonl``, ``--record``, ``--show``, ``--serve``)."""
        if jsonl is not None:
            self.jsonl = JsonlLog(jsonl)
        if record is not None:
            self.recorder = VideoRecorder(record, record_fps)
        if show:
            self.window, problem = open_window()
            if self.window is None:
                notice(f"--show: {problem}; running headless (use --serve or --record to see the output)")
        if serve is not None:
            from edge.camera.server import StreamServer, parse_address

            self.server = StreamServer(*parse_address(serve), public=public)
            notice(f"serving the annotated stream on {self.server.url}")

    def emit(
        self,
        frame: Frame,
        predictions: list[Prediction],
        stats: dict[str, Any],
        result_at: float,
        inference_s: float,
        source_fps: float | None,
        drawn: bool = True,
    ) -> bool:
        """Hand one result to every output; False when the user closed the window. A result that is
        not ``drawn`` (older than one already shown) goes to the JSONL log only. ``stats``: the live
        statistics the overlay and the page show; ``source_fps``: a file's frame rate (None: live)."""
        if self.jsonl is not None:
            source_time = frame.index / source_fps if source_fps else None
            latency_ms = (result_at - frame.grabbed_at) * 1000
            self.jsonl.write(
                jsonl_record(
                    frame.index,
                    self.unix_offset + frame.captured_at,
                    predictions,
                    latency_ms,
                    inference_s * 1000,
                    source_time,
                    grabbed_unix=self.unix_offset + frame.grabbed_at,
                    source_ts_ms=frame.source_ts_ms,
                )
            )
        if not drawn or (self.recorder is None and self.server is None and self.window is None):
            return True
        annotated = draw_overlay(frame.image, predictions, status_line(stats))
        if self.recorder is not None:
            # A live run holds each annotated frame over the source frames it stands for, so the
            # recording plays at the source's speed.
            repeat = 1 if self._last_recorded < 0 else frame.index - self._last_recorded
            self.recorder.write(annotated, repeat=repeat)
            self._last_recorded = frame.index
        if self.server is not None:
            cv2 = require("cv2", "opencv", "Serving the stream")
            ok, jpeg = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 80])
            self.server.publish(jpeg.tobytes() if ok else None, stats)
        if self.window is not None:
            return bool(self.window.show(annotated))
        return True

    def finish(self) -> None:
        """Move the recording and the JSONL log into place, keeping the files they replace, and close
        the window (the page stays up)."""
        try:
            with self._keeping_replaced():
                if self.recorder is not None:
                    path = self.recorder.close()
                    if path is not None:
                        self.files["recording"] = str(path)
                if self.jsonl is not None:
                    self.jsonl.close()
                    self.files["jsonl"] = self.jsonl.target
        finally:
            if self.window is not None:
                self.window.close()

    @contextlib.contextmanager
    def _keeping_replaced(self) -> Iterator[None]:
        """Keep the files the recording and the log are about to replace around their move into
        place: one history folder per place (the run's, else beside the file), one line each."""
        replaced: dict[Path, list[Path]] = {}
        pending: list[tuple[VideoRecorder | JsonlLog, Path]] = []
        if self.recorder is not None and self.recorder.pending:
            pending.append((self.recorder, self.recorder.path))
        if self.jsonl is not None and self.jsonl.pending:
            pending.append((self.jsonl, Path(self.jsonl.target)))
        for _, path in pending:
            if path.is_file():
                replaced.setdefault(history_root(path, self.run_root), []).append(path)
        with contextlib.ExitStack() as keeping:
            try:
                for root, paths in replaced.items():
                    keeping.enter_context(keeping_previous(root, paths, replaces("edge camera", paths), say=self.say))
            except OSError:
                for output, _ in pending:  # nothing was replaced; the error names the file that was to be
                    output.discard()
                raise
            yield

    def close(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.close()
