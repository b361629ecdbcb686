"""The one load step every ingest ends in: validated stage frames go into PostGIS in ONE transaction.

Order inside the transaction: COPY into a temporary stage table, database-side checks and unit assignment
(``cim.store.merge``), upsert, a row in ``ingest_runs``. Any reject (unless ``allow_rejects``), constraint
violation or error rolls everything back: a failed load changes nothing.

A layer arrives as a stream of checked chunks (``PreparedStream``; a large vector file is read and checked
in a process of its own, ``ingest.read_ahead``). Each chunk is handed to one background thread that places
it in its grid and parcel (``cim.locate``, by the interior points the checks computed) and COPYs it while
the next chunk arrives: shapely and psycopg (waiting for the server) do not hold the GIL, so Python's work
and the server's overlap. A first load of many buildings goes further (``BuildingsFirstLoad``): each chunk
is merged as it comes, its rows placed in the grid their code names COPYed straight into the table.
Rejects of the checks in Python are still all gathered (every chunk is checked) before the load is refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
import shapely

from cim.db import transaction
from cim.locate import Locator, unit_codes
from cim.settings import Settings, get_settings
from cim.store.catalog import record_ingest_run
from cim.store.history import set_change_time
from cim.store.merge import MERGERS, BuildingsFirstLoad, MergeOptions, MergeResult
from cim.store.staging import analyze_stage, copy_into_stage, create_stage, tune_load_transaction
from ingest.errors import IngestError, RejectedFeatures
from ingest.file_catalog import file_sha256
from ingest.prepare import Prepared, PreparedStream
from ingest.progress import Counter, Progress, counter, step


@dataclass
class LayerReport:
    """What one layer's load did; ``rejected`` lists (row, reason)."""

    layer: str
    source: str
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    repaired: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    dry_run: bool = False
    unit: str = "feature"

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def summary(self, shown: int = 20) -> str:
        verb = "would load" if self.dry_run else "loaded"
        text = (
            f"{self.layer:<13} {self.source}: read {self.read}, {verb} {self.loaded} "
            f"(new {self.inserted}, changed {self.updated}, unchanged {self.unchanged}), "
            f"repaired {self.repaired}, rejected {len(self.rejected)}, warnings {len(self.warnings)}"
        )
        if self.deleted:
            text += f", demolished {self.deleted}"
        for label, items in (("rejected", self.rejected), ("warning", self.warnings)):
            for row, reason in items[:shown]:
                where = f" {self.unit} {row}" if row else ""
                text += f"\n    {label}{where}: {reason}"
            if len(items) > shown:
                text += f"\n    … and {len(items) - shown} more"
        return text

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready data (``--report FILE``)."""
        return {
            "layer": self.layer,
            "source": self.source,
            "dry_run": self.dry_run,
            "read": self.read,
            "loaded": self.loaded,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "repaired": self.repaired,
            "rejected": [{"feature": r, "reason": m} for r, m in self.rejected],
            "warnings": [{"feature": r, "message": m} for r, m in self.warnings],
        }


# Layers whose rows are placed in a grid (and, for some, a parcel) by where they lie.
LOCATED_LAYERS = ("parcels", "buildings", "pipe_nodes", "pipes", "devices", "events")
PARCEL_LINKED_LAYERS = ("buildings", "devices", "events")


class _RollBack(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""


def load_prepared(
    parts: Sequence[tuple[Path, Prepared | PreparedStream]],
    allow_rejects: bool = False,
    settings: Settings | None = None,
    options: MergeOptions | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[LayerReport]:
    """Load prepared layers (in the given order) in one transaction; see the module docstring.

    ``dry_run`` runs every check, including the database's, then rolls back: the reports say what a real
    load would do. ``progress`` is told each step as it starts and counts the rows loaded."""
    settings = settings or get_settings()
    options = options or MergeOptions()
    started = datetime.now(UTC)
    reports: list[LayerReport] = []
    try:
        with transaction(settings) as conn:
            tune_load_transaction(conn)
            if options.survey_date:
                # The history trigger stamps versions with this time instead of now().
                set_change_time(conn, options.survey_date)
            # Each file is hashed once (a GeoPackage of several layers too), in the background while it loads:
            # hashlib does not hold the GIL over large blocks.
            hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-sha256")
            try:
                digests = {path: hashing.submit(file_sha256, path) for path in dict.fromkeys(p for p, _ in parts)}
                for path, part in parts:
                    stream = part if isinstance(part, PreparedStream) else PreparedStream.of(part)
                    report = _load_one(conn, path, stream, allow_rejects, options, progress)
                    report.dry_run = dry_run
                    _record_run(conn, path, digests[path].result(), report, started)
                    reports.append(report)
            finally:
                hashing.shutdown(wait=False, cancel_futures=True)  # a failed load does not wait for a hash
            if dry_run:
                raise _RollBack
    except _RollBack:
        return reports
    except psycopg.errors.IntegrityError as exc:
        raise IngestError(f"the database refused the data, nothing was loaded: {_pg_message(exc)}") from exc
    except psycopg.errors.DataException as exc:
        raise IngestError(f"a value was refused by the database, nothing was loaded: {_pg_message(exc)}") from exc
    return reports


def _load_one(
    conn: psycopg.Connection,
    path: Path,
    stream: PreparedStream,
    allow_rejects: bool,
    options: MergeOptions,
    progress: Progress | None,
) -> LayerReport:
    layer = stream.layer
    report = LayerReport(layer, path.name, unit=stream.unit)
    rejects: dict[int, str] = {}
    create_stage(conn, layer)
    first = BuildingsFirstLoad.start(conn, stream.total, options) if layer == "buildings" else None
    # After ``start``: a first load locks the grids and parcels before they are read.
    locator = Locator(conn, parcels=layer in PARCEL_LINKED_LAYERS) if layer in LOCATED_LAYERS else None
    units = "lines" if stream.unit == "line" else "features"
    loading: Counter | None = None  # made with the first chunk: its bar shows below reading and checking

    def stage(frame: pd.DataFrame, points: Any, loading: Counter) -> None:  # in the worker thread
        placed = False
        if locator is not None and points is not None:  # shapely releases the GIL: overlaps the checks
            placed = True
            grid_codes, parcel_codes = locator.codes(_points(points))
            frame = frame.assign(grid_code=grid_codes, parcel_code=parcel_codes, **unit_codes(grid_codes))
        if first is not None:
            first.load_chunk(first.drop_duplicates(frame), placed)
        else:
            copy_into_stage(conn, layer, frame, analyze=False)
        loading.advance(len(frame))

    with _DatabaseWorker() as worker:
        for prepared in stream.chunks:
            report.read += prepared.read
            report.repaired += prepared.repaired
            rejects.update(prepared.rejects)
            if rejects and not allow_rejects:
                continue  # nothing will be loaded; every chunk is still checked, to list every reject
            loading = loading or counter(progress, f"loading {path.name}", stream.total, units)
            worker.submit(partial(stage, prepared.frame, prepared.points, loading))
    stream.finish()
    if loading is not None:
        loading.done()
    if rejects and not allow_rejects:
        raise RejectedFeatures(path.name, layer, list(rejects.items()), stream.unit)
    step(progress, f"merging {layer}")
    result: MergeResult
    if first is not None:
        result = first.finish()
    else:
        analyze_stage(conn, layer)
        result = MERGERS[layer](conn, options)
    for row, reason in result.rejects:
        rejects.setdefault(row, reason)
    if rejects and not allow_rejects:
        raise RejectedFeatures(path.name, layer, list(rejects.items()), stream.unit)
    report.inserted, report.updated, report.unchanged = result.inserted, result.updated, result.unchanged
    report.rejected = sorted(rejects.items())
    report.warnings = result.warnings
    report.deleted = result.deleted
    return report


def _points(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.object_]:
    """Shapely points of (x, y) rows, None where a row has none (NaN)."""
    out = np.full(len(xy), None, dtype=object)
    given = ~np.isnan(xy).any(axis=1)
    out[given] = shapely.points(xy[given])
    return out


class _DatabaseWorker:
    """One background thread that runs the database side of each chunk, in order, while the caller
    prepares the next. At most one job waits behind the running one (so at most three chunks are held).
    The connection belongs to this thread from the first ``submit`` until the ``with`` block ends; a job's
    error is raised by the next ``submit`` or at the end of the block."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-load")
        self._jobs: deque[Future[None]] = deque()

    def submit(self, job: Callable[[], None]) -> None:
        while self._jobs and (self._jobs[0].done() or len(self._jobs) > 1):
            self._jobs.popleft().result()
        self._jobs.append(self._pool.submit(job))

    def __enter__(self) -> _DatabaseWorker:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:  # the caller failed: drop waiting jobs, let the running one end, keep its error
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        try:
            while self._jobs:
                self._jobs.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _record_run(conn: psycopg.Connection, path: Path, sha256: str, report: LayerReport, started: datetime) -> None:
    record_ingest_run(
        conn,
        layer=report.layer,
        source_file=str(path),
        sha256=sha256,
        started_at=started,
        counts={
            "read": report.read,
            "inserted": report.inserted,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "repaired": report.repaired,
        },
        rejected=report.rejected,
    )


def _pg_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(diag.message_detail)
    if diag.constraint_name:
        parts.append(f"constraint {diag.constraint_name}")
    return "; ".join(parts)
