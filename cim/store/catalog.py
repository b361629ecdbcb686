"""Catalogue rows: the ingest audit log (``ingest_runs``) and what the database holds, for reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from cim.model import CITY_TABLES


def record_ingest_run(
    conn: psycopg.Connection,
    *,
    layer: str,
    source_file: str,
    sha256: str,
    started_at: datetime,
    counts: dict[str, int],
    rejected: list[tuple[int, str]],
) -> None:
    """One audit row per loaded layer (kept even when the data was unchanged)."""
    conn.execute(
        """
        INSERT INTO ingest_runs (layer, source_file, source_sha256, started_at, read_count, inserted_count,
                                 updated_count, unchanged_count, repaired_count, rejected_count, report)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            layer,
            source_file,
            sha256,
            started_at,
            counts["read"],
            counts["inserted"],
            counts["updated"],
            counts["unchanged"],
            counts["repaired"],
            len(rejected),
            Jsonb({"rejected": [{"row": r, "reason": m} for r, m in rejected[:1000]]}),
        ),
    )


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Exact row counts of the city tables (``admin_units`` split by level)."""
    counts: dict[str, int] = {}
    for level, n in conn.execute("SELECT level, count(*) FROM admin_units GROUP BY level").fetchall():
        counts[f"{level}s" if level != "community" else "communities"] = int(n)
    for table in CITY_TABLES:
        if table == "admin_units":
            continue
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def load_summary(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Per layer: rows and a size measure (area, length, floor area) for the load report table."""
    q = """
        SELECT 'districts' AS layer, count(*) AS n, sum(area_m2) / 1e6 AS measure, 'km²' AS unit
          FROM admin_units WHERE level = 'district'
        UNION ALL SELECT 'streets', count(*), sum(area_m2) / 1e6, 'km²' FROM admin_units WHERE level = 'street'
        UNION ALL SELECT 'communities', count(*), sum(area_m2) / 1e6, 'km²' FROM admin_units WHERE level = 'community'
        UNION ALL SELECT 'grids', count(*), sum(area_m2) / 1e6, 'km²' FROM admin_units WHERE level = 'grid'
        UNION ALL SELECT 'parcels', count(*), sum(area_m2) / 1e6, 'km²' FROM parcels
        UNION ALL SELECT 'buildings', count(*), sum(floor_area_m2) / 1e6, 'km² floor area' FROM buildings
        UNION ALL SELECT 'houses', count(*), sum(area_m2) / 1e6, 'km²' FROM houses
        UNION ALL SELECT 'pipe_nodes', count(*), NULL, '' FROM pipe_nodes
        UNION ALL SELECT 'pipes', count(*), sum(length_m) / 1e3, 'km' FROM pipes
        UNION ALL SELECT 'devices', count(*), count(DISTINCT kind), 'kinds' FROM devices
        UNION ALL SELECT 'observations', count(*), count(DISTINCT property), 'properties' FROM observations
        UNION ALL SELECT 'events', count(*), count(*) FILTER (WHERE status NOT IN ('closed', 'rejected')), 'open'
          FROM events
    """
    return [
        {"layer": r[0], "rows": int(r[1]), "measure": None if r[2] is None else float(r[2]), "unit": r[3]}
        for r in conn.execute(q).fetchall()
    ]
