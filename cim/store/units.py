"""Unit and parcel polygons as WKB, for locating features in bulk (``cim.locate``)."""

from __future__ import annotations

import psycopg


def grid_polygons(conn: psycopg.Connection) -> tuple[list[str], list[bytes]]:
    rows = conn.execute("SELECT code, ST_AsBinary(geom) FROM admin_units WHERE level = 'grid'").fetchall()
    return [r[0] for r in rows], [bytes(r[1]) for r in rows]


def parcel_polygons(conn: psycopg.Connection) -> tuple[list[str], list[bytes]]:
    rows = conn.execute("SELECT code, ST_AsBinary(geom) FROM parcels").fetchall()
    return [r[0] for r in rows], [bytes(r[1]) for r in rows]
