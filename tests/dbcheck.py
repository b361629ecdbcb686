"""Database comparisons for tests: a fingerprint of all city data, to prove a failed load changed nothing."""

from __future__ import annotations

from psycopg import sql

from cim.db import connect
from cim.model import CITY_TABLES
from cim.settings import Settings

CITY_DATA_TABLES = (*CITY_TABLES, "building_history", "rasters", "assets", "tilesets")


def fingerprint(settings: Settings, extra_tables: tuple[str, ...] = ()) -> dict[str, str]:
    """Row count and an md5 over every row's full text per table: equal fingerprints, unchanged data.
    ``extra_tables`` adds tables a failed load must not touch either (e.g. the ``ingest_runs`` log)."""
    out = {}
    with connect(settings) as conn:
        for table in (*CITY_DATA_TABLES, *extra_tables):
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t"
                ).format(sql.Identifier(table))
            ).fetchone()
            out[table] = row[0] if row else ""
    return out
