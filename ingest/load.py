"""The one load step every ingest ends in: validated stage frames go into PostGIS in ONE transaction.

Order inside the transaction: COPY into a temporary stage table, database-side checks and unit assignment
(``cim.store.merge``), upsert, a row in ``ingest_runs``. Any reject (unless ``allow_rejects``), constraint
violation or error rolls everything back: a failed load changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from cim.db import transaction
from cim.locate import locate
from cim.settings import Settings, get_settings
from cim.store.catalog import record_ingest_run
from cim.store.history import set_change_time
from cim.store.merge import MERGERS, MergeOptions
from cim.store.staging import copy_into_stage, create_stage
from ingest.errors import IngestError, RejectedFeatures
from ingest.prepare import Prepared


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Layers whose rows are placed in a grid (and, for some, a parcel) by where they lie.
LOCATED_LAYERS = ("parcels", "buildings", "pipe_nodes", "pipes", "devices", "events")
PARCEL_LINKED_LAYERS = ("buildings", "devices", "events")


class _RollBack(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""


Progress = Callable[[str], None]


def load_prepared(
    parts: list[tuple[Path, Prepared]],
    allow_rejects: bool = False,
    settings: Settings | None = None,
    options: MergeOptions | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[LayerReport]:
    """Load prepared layers (in the given order) in one transaction; see the module docstring.

    ``dry_run`` runs every check, including the database's, then rolls back: the reports say what a real
    load would do. ``progress`` is told each step as it starts."""
    settings = settings or get_settings()
    options = options or MergeOptions()
    started = datetime.now(UTC)
    reports: list[LayerReport] = []
    try:
        with transaction(settings) as conn:
            if options.survey_date:
                # The history trigger stamps versions with this time instead of now().
                set_change_time(conn, options.survey_date)
            digests: dict[Path, str] = {}  # a GeoPackage of several layers is hashed once
            for path, prepared in parts:
                if progress:
                    progress(f"loading {prepared.layer} from {path.name}")
                report = _load_one(conn, path, prepared, allow_rejects, options)
                report.dry_run = dry_run
                if path not in digests:
                    digests[path] = file_sha256(path)
                _record_run(conn, path, digests[path], report, started)
                reports.append(report)
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
    conn: psycopg.Connection, path: Path, prepared: Prepared, allow_rejects: bool, options: MergeOptions
) -> LayerReport:
    layer = prepared.layer
    report = LayerReport(layer, path.name, read=prepared.read, repaired=prepared.repaired, unit=prepared.unit)
    rejects = dict(prepared.rejects)
    if rejects and not allow_rejects:
        raise RejectedFeatures(path.name, layer, list(rejects.items()), prepared.unit)
    frame = prepared.frame
    if layer in LOCATED_LAYERS and prepared.geometry is not None:
        grid_codes, parcel_codes = locate(conn, prepared.geometry, parcels=layer in PARCEL_LINKED_LAYERS)
        frame = frame.assign(grid_code=grid_codes, parcel_code=parcel_codes)
    create_stage(conn, layer)
    copy_into_stage(conn, layer, frame)
    result = MERGERS[layer](conn, options)
    for row, reason in result.rejects:
        rejects.setdefault(row, reason)
    if rejects and not allow_rejects:
        raise RejectedFeatures(path.name, layer, list(rejects.items()), prepared.unit)
    report.inserted, report.updated, report.unchanged = result.inserted, result.updated, result.unchanged
    report.rejected = sorted(rejects.items())
    report.warnings = result.warnings
    report.deleted = result.deleted
    return report


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
