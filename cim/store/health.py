"""What ``GET /health`` reports about the database."""

from __future__ import annotations

from typing import Any

import psycopg

from cim.migrate import schema_version
from cim.store.catalog import table_counts


def database_health(conn: psycopg.Connection) -> dict[str, Any]:
    """Schema version, PostGIS version, storage SRID and exact row counts per layer."""
    row = conn.execute(
        "SELECT postgis_lib_version(), (SELECT value FROM cim_settings WHERE key = 'storage_srid')"
    ).fetchone()
    postgis, srid = (row[0], row[1]) if row else (None, None)
    return {
        "status": "ok",
        "schema_version": schema_version(conn),
        "postgis_version": postgis,
        "storage_srid": int(srid) if srid is not None else None,
        "counts": table_counts(conn),
    }
