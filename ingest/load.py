"""The one load step every ingest ends in: validated stage frames go into PostGIS in ONE transaction.

Order inside the transaction: COPY into a temporary stage table, database-side checks and unit assignment
(``cim.store.merge``), upsert, a row in ``ingest_runs``. Any reject (unless ``allow_rejects``), constraint
violation or error rolls everything back: a failed load changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.catalog import record_ingest_run
from cim.store.merge import MERGERS
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
    repaired: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def summary(self) -> str:
        text = (
            f"{self.layer:<13} {self.source}: read {self.read}, loaded {self.loaded} "
            f"(new {self.inserted}, changed {self.updated}, unchanged {self.unchanged}), "
            f"repaired {self.repaired}, rejected {len(self.rejected)}"
        )
        for row, reason in self.rejected[:20]:
            text += f"\n    rejected feature {row}: {reason}"
        if len(self.rejected) > 20:
            text += f"\n    … and {len(self.rejected) - 20} more"
        return text


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_prepared(
    parts: list[tuple[Path, Prepared]],
    allow_rejects: bool = False,
    settings: Settings | None = None,
) -> list[LayerReport]:
    """Load prepared layers (in the given order) in one transaction; see the module docstring."""
    settings = settings or get_settings()
    started = datetime.now(UTC)
    reports: list[LayerReport] = []
    try:
        with transaction(settings) as conn:
            for path, prepared in parts:
                report = _load_one(conn, path, prepared, allow_rejects)
                _record_run(conn, path, report, started)
                reports.append(report)
    except psycopg.errors.IntegrityError as exc:
        raise IngestError(f"the database refused the data, nothing was loaded: {_pg_message(exc)}") from exc
    except psycopg.errors.DataException as exc:
        raise IngestError(f"a value was refused by the database, nothing was loaded: {_pg_message(exc)}") from exc
    return reports


def _load_one(conn: psycopg.Connection, path: Path, prepared: Prepared, allow_rejects: bool) -> LayerReport:
    layer = prepared.layer
    report = LayerReport(layer, path.name, read=prepared.read, repaired=prepared.repaired)
    rejects = dict(prepared.rejects)
    if rejects and not allow_rejects:
        raise RejectedFeatures(path.name, layer, list(rejects.items()))
    create_stage(conn, layer)
    copy_into_stage(conn, layer, prepared.frame)
    result = MERGERS[layer](conn)
    for row, reason in result.rejects:
        rejects.setdefault(row, reason)
    if rejects and not allow_rejects:
        raise RejectedFeatures(path.name, layer, list(rejects.items()))
    report.inserted, report.updated, report.unchanged = result.inserted, result.updated, result.unchanged
    report.rejected = sorted(rejects.items())
    return report


def _record_run(conn: psycopg.Connection, path: Path, report: LayerReport, started: datetime) -> None:
    record_ingest_run(
        conn,
        layer=report.layer,
        source_file=str(path),
        sha256=file_sha256(path),
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
