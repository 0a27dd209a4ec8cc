"""What a camera run shows on the terminal: one progress line with the live figures, and notices.

With ``--jsonl -`` stdout carries the records only, so all of it goes to stderr. ``--quiet`` silences
the progress line and the notices; :meth:`CameraProgress.say` is for what must be said even then.
"""

from __future__ import annotations

from typing import Any

from edge.camera.metrics import format_figure


def progress_total(declared: int | None, max_frames: int | None, every_frame: bool) -> tuple[int | None, bool]:
    """The frames this run will process: --max-frames (capped by the file's length, ``declared``, when
    every frame is classified), else a file's length; and whether the bar counts the position in the
    file (a --realtime file) instead of the frames classified."""
    if max_frames is not None:
        return (min(max_frames, declared) if declared and every_frame else max_frames), False
    return declared, declared is not None and not every_frame


def progress_status(stats: dict[str, Any]) -> str:
    """The progress line's figures: achieved FPS, latency p50, dropped frames, the top-1 label."""
    return f"{format_figure(stats['achieved_fps'])} FPS, p50 {format_figure(stats['latency_p50_ms'], 0)} ms, {stats['dropped']} dropped, {(stats['top1'] or '')[:24]}"


class CameraProgress:
    """The progress line (``start``, ``update``, ``finish``) and the notices of one run."""

    def __init__(self, quiet: bool, stderr: bool, console: Any = None) -> None:
        self.quiet = quiet
        self.stderr = stderr
        self._console = console
        self._progress: Any = None
        self._task: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from edge.console import make_console

            # With --jsonl - stdout carries the records only; everything else goes to stderr.
            self._console = make_console(stderr=self.stderr)
        return self._console

    def notice(self, text: str) -> None:
        """Print ``text`` unless --quiet."""
        if not self.quiet:
            self.say(text)

    def say(self, text: str) -> None:
        """Print ``text``, even under --quiet."""
        self.console.print(text, highlight=False, soft_wrap=True)

    @property
    def running(self) -> bool:
        return self._progress is not None

    def start(self, source: str, total: int | None) -> None:
        """Show the progress line (a bar when ``total`` is known), unless --quiet."""
        if self.quiet:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        from edge.console import make_progress

        columns: list[Any] = [TextColumn("[bold]camera[/bold] {task.description}")]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
        self._progress = make_progress(*columns, console=self.console, unit="frames", transient=False)
        self._progress.__enter__()
        self._task = self._progress.add_task(f"camera {source[-40:]}", total=total, status="starting")

    def update(self, completed: int, stats: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, status=progress_status(stats))

    def finish(self, completed: int, status: str) -> None:
        """The last update, then the line stays as it is."""
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, status=status)
            self._progress.__exit__(None, None, None)
