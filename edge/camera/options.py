"""The options of a camera run (``edge camera``'s flags besides the model) and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge.camera.sources import RetryPolicy, SourceSpec
from edge.errors import UserError


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
    public: bool = False  # --serve answers any Host header (behind a reverse proxy)
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
        elif self.public:
            raise UserError("--public is for --serve: give --serve HOST:PORT too")

    def one_slot(self, source: SourceSpec) -> bool:
        """True when the model gets the newest frame only (a live source or --realtime), not every frame in order."""
        return not self.every_frame and (source.live or self.realtime)
