"""What the commands print, through rich: tables, records, progress bars and live status on a terminal; the same
tables plain (no colour, no borders, never wrapped or cut) when piped; JSON documents or JSON lines with --json."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any

from pydantic import BaseModel
from rich import box
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.status import Status
from rich.table import Table

PROGRESS_AFTER_S = 1.0  # a transfer shows a progress bar once it has taken this long
PLAIN_WIDTH = 100_000  # piped tables are as wide as their cells: never wrapped, never cut


def cell(value: Any) -> str:
    """A value as a table cell: nothing for null, lists joined by commas, floats (Julian dates) to 5 decimals,
    times to the second."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.5f}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def jsonable(value: Any) -> Any:
    """A model (or list of models) as JSON values."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    return value


class Output:
    """Standard output for results, standard error for progress and notes; rich on a terminal, plain otherwise."""

    def __init__(self, stdout: IO[str] | None = None, stderr: IO[str] | None = None, *,
                 terminal: bool | None = None) -> None:
        out, err = stdout or sys.stdout, stderr or sys.stderr
        self.terminal = out.isatty() if terminal is None else terminal
        self.progress_terminal = err.isatty() if terminal is None else terminal
        if self.terminal:
            self.console = Console(file=out, force_terminal=True, highlight=False, emoji=False)
        else:
            self.console = Console(file=out, force_terminal=False, no_color=True, highlight=False, emoji=False,
                                   markup=False, width=PLAIN_WIDTH, soft_wrap=True)
        self.errors = Console(file=err, force_terminal=self.progress_terminal, highlight=False, emoji=False,
                              markup=False, soft_wrap=True)
        self._out = out

    def line(self, text: str) -> None:
        """One line of text as it is (no markup, never broken: the terminal wraps it, a copy keeps it whole)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        """A remark for the person at the terminal, on standard error (a script's output stays clean)."""
        self.errors.print(text, markup=False, highlight=False)

    def json(self, value: Any) -> None:
        """One JSON document (indented, keys sorted)."""
        self._write(json.dumps(jsonable(value), indent=2, sort_keys=True) + "\n")

    def json_line(self, value: Any) -> None:
        """One JSON document on one line (JSON lines)."""
        self._write(json.dumps(jsonable(value), separators=(",", ":"), sort_keys=True) + "\n")

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def table(self, rows: Sequence[Sequence[Any]], columns: Sequence[str], *, title: str | None = None,
              numeric: Sequence[str] = (), empty: str = "(no results)") -> None:
        """Rows under upper-case column headers; `empty` instead when there are none."""
        if not rows:
            self.line(empty)
            return
        self.render(self.table_of(rows, columns, title=title, numeric=numeric))

    def table_of(self, rows: Sequence[Sequence[Any]], columns: Sequence[str], *, title: str | None = None,
                 numeric: Sequence[str] = ()) -> Table:
        """The rich table `table` prints (for live displays)."""
        if self.terminal:
            table = Table(box=box.SIMPLE_HEAD, header_style="bold", title=title, title_justify="left")
        else:
            table = Table(box=None, show_edge=False, pad_edge=False, header_style=None, padding=(0, 2, 0, 0),
                          title=title, title_justify="left", title_style=None)
        for column in columns:
            table.add_column(column.upper(), justify="right" if column in numeric else "left",
                             no_wrap=not self.terminal, overflow="fold")
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        return table

    def record(self, values: Mapping[str, Any]) -> None:
        """Key-value lines, keys aligned."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold" if self.terminal else None, no_wrap=True)
        grid.add_column(overflow="fold")
        for key, value in values.items():
            grid.add_row(key, cell(value))
        self.render(grid)

    def render(self, renderable: RenderableType) -> None:
        """Print a rich renderable; piped, without trailing spaces."""
        if self.terminal:
            self.console.print(renderable)
            return
        with self.console.capture() as captured:
            self.console.print(renderable)
        self._write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))

    @contextmanager
    def transfer(self, label: str, *, after_s: float = PROGRESS_AFTER_S) -> Iterator[Callable[[str, int, int], None]]:
        """A progress callback (phase, done, total) for a transfer: a bar on standard error, shown once the
        transfer has taken `after_s` (a quick one shows none), only on a terminal."""
        if not self.progress_terminal:
            yield _ignore
            return
        bar = _TransferBar(self.errors, label)
        with _shown_after(bar.progress, after_s):
            yield bar.update

    @contextmanager
    def waiting(self, message: str, *, after_s: float = PROGRESS_AFTER_S) -> Iterator[None]:
        """A spinner with `message` on standard error while the block runs, shown once it has taken `after_s`,
        only on a terminal."""
        if not self.progress_terminal:
            yield
            return
        with _shown_after(Status(message, console=self.errors), after_s):
            yield


def _ignore(_phase: str, _done: int, _total: int) -> None:
    return None


@contextmanager
def _shown_after(display: Progress | Status, after_s: float) -> Iterator[None]:
    """Start a rich live display from a timer thread after `after_s`, unless the block is over by then."""
    lock = threading.Lock()
    state = {"shown": False, "over": False}

    def show() -> None:
        with lock:
            if not state["over"]:
                state["shown"] = True
                display.start()

    timer = threading.Timer(after_s, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["over"] = True
            if state["shown"]:
                display.stop()


class _TransferBar:
    """The bars of one transfer (its checksum, then its sending), updated from any thread."""

    def __init__(self, console: Console, label: str) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=console, transient=True,
        )
        self._label = label
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}

    def update(self, phase: str, done: int, total: int) -> None:
        """Record progress of `phase` ("checksum" or "send")."""
        with self._lock:
            task = self._tasks.get(phase)
            if task is None:
                verb = "checksumming" if phase == "checksum" else "sending"
                task = self._tasks[phase] = self.progress.add_task(f"{verb} {self._label}", total=total)
            self.progress.update(task, completed=done, total=total)
