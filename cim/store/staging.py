"""Staging tables: validated rows are COPYed into a temporary table, then merged by SQL in one transaction.

Every stage table has the same shape as the rows the ingest step prepares (see ``STAGE_COLUMNS``), plus
``row_no`` (the feature's index in the source, used in reject messages) and the unit codes the merge
assigns. Stage tables are ``ON COMMIT DROP``: they live exactly as long as the load's transaction.
"""

from __future__ import annotations

import io

import pandas as pd
import psycopg
from psycopg import sql

# layer -> ordered (column, SQL type) of what the ingest step provides. Geometries are hex EWKB.
STAGE_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "admin": [
        ("code", "text"),
        ("level", "text"),
        ("name", "text"),
        ("geom", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
    ],
    "parcels": [
        ("code", "text"),
        ("name", "text"),
        ("land_use", "text"),
        ("far_limit", "float8"),
        ("height_limit_m", "float8"),
        ("coverage_limit", "float8"),
        ("approved_at", "date"),
        ("geom", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
    ],
    "buildings": [
        ("building_code", "text"),
        ("name", "text"),
        ("use", "text"),
        ("height_m", "float8"),
        ("height_source", "text"),
        ("storeys", "integer"),
        ("ground_elevation_m", "float8"),
        ("footprint", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
        ("valid_from", "timestamptz"),
    ],
    "houses": [
        ("house_code", "text"),
        ("storey", "integer"),
        ("area_m2", "float8"),
        ("use", "text"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
    ],
    "pipe_nodes": [
        ("code", "text"),
        ("network", "text"),
        ("kind", "text"),
        ("ground_elevation_m", "float8"),
        ("invert_elevation_m", "float8"),
        ("geom", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
    ],
    "pipes": [
        ("code", "text"),
        ("network", "text"),
        ("from_node", "text"),
        ("to_node", "text"),
        ("diameter_mm", "float8"),
        ("material", "text"),
        ("start_invert_m", "float8"),
        ("end_invert_m", "float8"),
        ("built_year", "integer"),
        ("geom", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
    ],
    "devices": [
        ("code", "text"),
        ("kind", "text"),
        ("name", "text"),
        ("status", "text"),
        ("installed_at", "date"),
        ("geom", "geometry"),
        ("pipe_node_code", "text"),
        ("building_code", "text"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
    ],
    "observations": [
        ("device_code", "text"),
        ("property", "text"),
        ("observed_at", "timestamptz"),
        ("value", "float8"),
    ],
    "events": [
        ("code", "text"),
        ("category", "text"),
        ("subcategory", "text"),
        ("status", "text"),
        ("reported_at", "timestamptz"),
        ("updated_at", "timestamptz"),
        ("due_at", "timestamptz"),
        ("closed_at", "timestamptz"),
        ("department", "text"),
        ("reopen_count", "integer"),
        ("description", "text"),
        ("reporter_contact", "text"),
        ("geom", "geometry"),
        ("building_code", "text"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
    ],
}

# Columns the merge fills in on the stage table.
UNIT_COLUMNS = [
    ("district_code", "text"),
    ("street_code", "text"),
    ("community_code", "text"),
    ("grid_code", "text"),
    ("parcel_code", "text"),
]


def stage_table(layer: str) -> sql.Identifier:
    return sql.Identifier(f"stage_{layer}")


def create_stage(conn: psycopg.Connection, layer: str) -> None:
    """Create the layer's temporary stage table (dropped at commit or rollback)."""
    cols = [("row_no", "integer"), *STAGE_COLUMNS[layer], *UNIT_COLUMNS]
    defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(typ)) for name, typ in cols)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage_table(layer), defs))


def copy_into_stage(conn: psycopg.Connection, layer: str, frame: pd.DataFrame) -> int:
    """COPY a frame with columns ``row_no`` + ``STAGE_COLUMNS[layer]`` (+ any unit columns already known)
    into the stage table (CSV, fast)."""
    names = ["row_no", *(name for name, _ in STAGE_COLUMNS[layer])]
    names += [name for name, _ in UNIT_COLUMNS if name in frame.columns]  # placed in bulk by the load step
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise KeyError(f"stage frame for {layer} lacks columns {missing}")
    buf = io.StringIO()
    frame[names].to_csv(buf, header=False, index=False, na_rep="")
    data = buf.getvalue().encode("utf-8")
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        stage_table(layer), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for start in range(0, len(data), 1 << 20):
            copy.write(data[start : start + (1 << 20)])
    conn.execute(sql.SQL("ANALYZE {}").format(stage_table(layer)))
    return len(frame)
