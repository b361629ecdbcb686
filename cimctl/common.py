"""What every command module shares: failure reporting, progress display, JSON reports."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console


def fail(message: str, details: tuple[str, ...] | list[str] = ()) -> NoReturn:
    """Print ``error: message`` (one line) in red on stderr, then any detail lines indented, and exit 1
    (no stack trace for user errors)."""
    click.secho(f"error: {message}", fg="red", err=True)
    for line in details:
        click.echo(f"  {line}", err=True)
    sys.exit(1)


@contextmanager
def progress_reporter() -> Iterator[Callable[[str], None]]:
    """A callback that shows the current step with a spinner and elapsed time on stderr (a live display
    on a terminal only; nothing in pipes and logs, where it would be noise)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _step: None
        return
    with console.status("starting …") as status:
        yield lambda step: status.update(step + " …")


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
