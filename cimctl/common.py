"""What every command module shares: failure reporting, progress display, JSON reports."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressBar,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from ingest.progress import Counter, CountingProgress


def fail(message: str, details: tuple[str, ...] | list[str] = ()) -> NoReturn:
    """Print ``error: message`` (one line) in red on stderr, then any detail lines indented, and exit 1
    (no stack trace for user errors)."""
    click.secho(f"error: {message}", fg="red", err=True)
    for line in details:
        click.echo(f"  {line}", err=True)
    sys.exit(1)


@contextmanager
def progress_reporter() -> Iterator[CountingProgress]:
    """A progress display on stderr: the current step with a spinner, and for each counted phase (read,
    check, load, triangulate, write …) a bar with count/total, rate and elapsed time. A live display on a
    terminal only; nothing in pipes and logs, where it would be noise."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield _Quiet()
        return
    columns = (
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("{task.description}"),
        _Bar(bar_width=28),
        _Count(),
        _Rate(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bars:
        reporter = _Bars(bars)
        yield reporter
        reporter.end_step()  # on success; after an error the step it stopped in stays open


class _Quiet:
    """No display: steps and counts are dropped."""

    def __call__(self, step: str) -> None:
        pass

    def count(self, what: str, total: int | None, unit: str) -> Counter:
        return _QuietCounter()


class _QuietCounter:
    def advance(self, n: int = 1) -> None:
        pass

    def done(self) -> None:
        pass


class _Bars:
    """Steps on one spinner line (each new step finishes the previous one); counted phases as bars."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.step_task: TaskID | None = None

    def __call__(self, step: str) -> None:
        self.end_step()
        self.step_task = self.bars.add_task(step, total=None, unit="")

    def count(self, what: str, total: int | None, unit: str) -> Counter:
        self.end_step()
        return _BarCounter(self.bars, self.bars.add_task(what, total=total, unit=unit))

    def end_step(self) -> None:
        """Mark the step now shown as finished."""
        if self.step_task is not None:
            self.bars.update(self.step_task, total=1, completed=1)
            self.step_task = None


class _BarCounter:
    def __init__(self, bars: Progress, task: TaskID) -> None:
        self.bars, self.task = bars, task

    def advance(self, n: int = 1) -> None:
        self.bars.advance(self.task, n)

    def done(self) -> None:
        """The phase ends at what it counted (fewer than announced when rejected rows were skipped)."""
        completed = self.bars.tasks[self.task].completed
        self.bars.update(self.task, total=completed, completed=completed)


class _Bar(ProgressColumn):
    """The bar of a counted phase (a step has none)."""

    def __init__(self, bar_width: int) -> None:
        super().__init__()
        self.bar = BarColumn(bar_width=bar_width)

    def render(self, task: Task) -> Text | ProgressBar:
        return self.bar.render(task) if task.fields.get("unit") else Text("")


class _Count(ProgressColumn):
    """``12,345/113,334 features`` (or the count alone when the total is unknown; nothing for a step)."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        if not unit:
            return Text("")
        total = "" if task.total is None else f"/{task.total:,.0f}"
        return Text(f"{task.completed:,.0f}{total} {unit}", style="progress.download")


class _Rate(ProgressColumn):
    """Average units per second since the phase started."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        elapsed = task.finished_time if task.finished_time is not None else task.elapsed
        if not unit or not elapsed:
            return Text("")
        return Text(f"{task.completed / elapsed:,.0f} {unit}/s", style="progress.data.speed")


def write_json_atomically(path: Path, data: object) -> None:
    """Write JSON to a temp file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
