"""How an ingest tells its caller what it is doing: named steps, and counted phases (read, check, load …)
with a total, so a terminal can show count/total and rate.

An ingest takes ``progress: Progress | None``. A plain ``Callable[[str], None]`` (told each step's name) is a
``Progress`` too: ``counter()`` gives it a counter that only names the phase. The command line's reporter
(``cimctl.common.progress_reporter``) also implements ``count`` and draws bars.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable


class Counter(Protocol):
    """One counted phase: ``advance`` by the units done since the last call; ``done`` when finished."""

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


@runtime_checkable
class CountingProgress(Protocol):
    """A progress display that can count: ``count(what, total, unit)`` starts a phase of ``total`` units
    (None when unknown)."""

    def __call__(self, step: str) -> None: ...

    def count(self, what: str, total: int | None, unit: str) -> Counter: ...


Progress = Callable[[str], None]


class _Silent:
    def advance(self, n: int = 1) -> None:
        pass

    def done(self) -> None:
        pass


def counter(progress: Progress | None, what: str, total: int | None, unit: str = "features") -> Counter:
    """A counter for phase ``what`` on ``progress``; with a plain callable, the phase is only named."""
    if progress is None:
        return _Silent()
    if isinstance(progress, CountingProgress):
        return progress.count(what, total, unit)
    progress(what if total is None else f"{what} ({total:,} {unit})")
    return _Silent()


def step(progress: Progress | None, text: str) -> None:
    """Name the step now running (no count)."""
    if progress is not None:
        progress(text)
