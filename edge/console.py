"""The one console of the CLI's plain output: tables that never cut a cell, progress that shows in logs.

Every command prints through :func:`make_console`, :func:`make_table` and :func:`make_progress` (or :func:`track`), so
output reads the same in a terminal, in a CI log and through ``| tee``:

- the width is the terminal's, or ``COLUMNS``, or 80 when stdout is not a terminal; ``NO_COLOR``
  turns colour off (rich reads both when the console is made);
- a table wider than that never ends a cell with "…": columns get the widths that keep every word
  whole, and a table that cannot fit whole words (too many columns for the width) is printed as one
  ``header  value`` record per row instead;
- a progress bar is live in a terminal; elsewhere (CI, a pipe) a live bar prints nothing until the
  end, so :class:`LogProgress` prints a line such as ``bench matrix: 3/8 rows, 41 s`` every tenth of
  the work or every 10 seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

T = TypeVar("T")

LOG_EVERY_FRACTION = 0.1
LOG_EVERY_S = 10.0
# the layout tried when a table's own borders and padding leave too little room: columns one space apart
COMPACT_STYLE: dict[str, Any] = {"box": box.SIMPLE_HEAD, "padding": (0, 0), "show_edge": False, "pad_edge": False}


def make_console(stderr: bool = False, width: int | None = None) -> Console:
    """A console on stdout (or stderr) that honours ``COLUMNS`` and ``NO_COLOR``; 80 columns when not a terminal."""
    return Console(stderr=stderr, width=width)


def make_table(*columns: str, title: str | None = None, justify: str = "left", **options: Any) -> FittedTable:
    """A table whose cells fold or re-flow but are never cut; ``columns`` are added with ``justify``."""
    table = FittedTable(title=title, **options)
    for column in columns:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    return table


class FittedTable(Table):
    """A rich Table that keeps every cell whole at any width (see the module docstring)."""

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        kwargs.setdefault("no_wrap", False)
        super().add_column(*args, **kwargs)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.columns or any(column.width is not None for column in self.columns):
            yield from super().__rich_console__(console, options)
            return
        available = options.max_width if self.width is None else min(self.width, options.max_width)
        for style in ({}, COMPACT_STYLE):
            saved = {name: getattr(self, name) for name in style}
            try:
                for name, value in style.items():
                    setattr(self, name, value)
                widths = self._word_keeping_widths(console, options, available)
                if widths is not None:
                    for column, width in zip(self.columns, widths):
                        column.width = width
                    yield from super().__rich_console__(console, options)
                    return
            finally:
                for name, value in saved.items():
                    setattr(self, name, value)
                for column in self.columns:
                    column.width = None
        yield from self._records(console, options)

    def _word_keeping_widths(self, console: Console, options: ConsoleOptions, available: int) -> list[int] | None:
        """Column widths (without padding) that fit ``available`` and break no word; None when none do."""
        ranges = [_column_range(console, options, column) for column in self.columns]
        overhead = Measurement.get(console, options.update_width(10**6), _copy_shape(self)).maximum
        lows = [low for low, _ in ranges]
        highs = [high for _, high in ranges]
        if sum(highs) + overhead <= available:
            return highs
        if sum(lows) + overhead > available:
            return None
        return _distribute(available - overhead - sum(lows), lows, highs)

    def _records(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """One ``header  value`` block per row: the layout for a width that cannot hold the columns."""
        if self.title:
            yield Text(str(self.title), style="table.title") if isinstance(self.title, str) else self.title
        headers = [column.header for column in self.columns]
        rows = list(zip(*(list(column.cells) for column in self.columns)))
        for number, row in enumerate(rows):
            record = Table.grid(padding=(0, 2))
            record.add_column(style="bold", overflow="fold", max_width=max(8, options.max_width // 3))
            record.add_column(overflow="fold")
            for header, cell in zip(headers, row):
                record.add_row(header, cell)
            if number:
                yield Text("")
            yield record
        if self.caption:
            yield Text(str(self.caption)) if isinstance(self.caption, str) else self.caption


def _column_range(console: Console, options: ConsoleOptions, column: Any) -> tuple[int, int]:
    """(longest word, longest line) over a column's header and cells."""
    wide = options.update_width(10**6)
    measures = [Measurement.get(console, wide, cell) for cell in [column.header, *column.cells]]
    return max(m.minimum for m in measures), max(m.maximum for m in measures)


def _copy_shape(table: Table) -> Table:
    """An empty table with ``table``'s borders and padding (its width minus the cells is the overhead)."""
    shape = Table(
        box=table.box,
        padding=table.padding,
        collapse_padding=table.collapse_padding,
        pad_edge=table.pad_edge,
        show_edge=table.show_edge,
        show_header=False,
    )
    for _ in table.columns:
        shape.add_column(width=0)
    return shape


def _distribute(spare: int, lows: Sequence[int], highs: Sequence[int]) -> list[int]:
    """``lows`` grown towards ``highs`` by ``spare`` columns, in proportion to what each lacks."""
    wants = [high - low for low, high in zip(lows, highs)]
    total = sum(wants)
    widths = [low + (spare * want // total if total else 0) for low, want in zip(lows, wants)]
    left = spare - sum(widths) + sum(lows)
    for i in sorted(range(len(widths)), key=lambda i: widths[i] - highs[i]):
        if left <= 0:
            break
        if widths[i] < highs[i]:
            widths[i] += 1
            left -= 1
    return widths


class LogProgress:
    """Progress for a console that is not a terminal: periodic log lines, the Progress API's common part.

    ``add_task``/``update``/``advance``/``remove_task``/``track`` behave as rich's; a line
    ``description: 3/8 unit, 41 s`` (then the task's text fields, such as ``status``) is printed when
    another tenth of the total is done or 10 s have passed with some progress, and once at the end."""

    def __init__(self, console: Console, unit: str = "", clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.unit = unit
        self._clock = clock
        self._tasks: dict[TaskID, dict[str, Any]] = {}
        self._next_id = 0

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            for task_id in list(self._tasks):
                self.remove_task(task_id)

    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0, **fields: Any) -> TaskID:
        task_id = TaskID(self._next_id)
        self._next_id += 1
        now = self._clock()
        self._tasks[task_id] = dict(
            description=description, total=total, completed=completed, start=now, logged_at=now, logged=completed
        )
        self._tasks[task_id]["fields"] = {k: v for k, v in fields.items() if k not in ("start", "visible")}
        return task_id

    def update(
        self,
        task_id: TaskID,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        visible: bool | None = None,
        refresh: bool = False,
        **fields: Any,
    ) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task["total"] = total
        if description is not None:
            task["description"] = description
        if completed is not None:
            task["completed"] = completed
        if advance is not None:
            task["completed"] += advance
        task["fields"].update(fields)
        if self._due(task):
            self._log(task)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def remove_task(self, task_id: TaskID) -> None:
        """Forget a task, printing its last state when that was not printed yet."""
        task = self._tasks.pop(task_id)
        if task["completed"] != task["logged"]:
            self._log(task)

    def track(self, sequence: Iterable[T], total: float | None = None, description: str = "Working...") -> Iterator[T]:
        if total is None and hasattr(sequence, "__len__"):
            total = len(sequence)  # type: ignore[arg-type]
        task_id = self.add_task(description, total=total)
        for item in sequence:
            yield item
            self.advance(task_id)

    def _due(self, task: dict[str, Any]) -> bool:
        total, done = task["total"], task["completed"]
        if done == task["logged"]:
            return False
        if total and (done >= total or done - task["logged"] >= LOG_EVERY_FRACTION * total):
            return True
        return self._clock() - task["logged_at"] >= LOG_EVERY_S

    def _log(self, task: dict[str, Any]) -> None:
        task["logged"], task["logged_at"] = task["completed"], self._clock()
        of = f"/{_count(task['total'])}" if task["total"] else ""
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{task['description']}: {_count(task['completed'])}{of}{unit}", f"{task['logged_at'] - task['start']:.0f} s"]
        parts += [str(value) for value in task["fields"].values() if isinstance(value, str) and value.strip()]
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def make_progress(*columns: Any, console: Console | None = None, unit: str = "", **options: Any) -> Progress | LogProgress:
    """A live rich Progress in a terminal, a :class:`LogProgress` elsewhere (``unit`` names what is counted)."""
    console = console or make_console()
    if console.is_terminal or options.get("disable"):
        return Progress(*columns, console=console, **options)
    return LogProgress(console, unit=unit)


def track(
    sequence: Iterable[T],
    description: str,
    total: float | None = None,
    console: Console | None = None,
    unit: str = "",
    **options: Any,
) -> Iterator[T]:
    """``rich.progress.track`` that shows as log lines when not in a terminal (see :func:`make_progress`)."""
    with make_progress(console=console, unit=unit, **options) as progress:
        yield from progress.track(sequence, total=total, description=description)
