"""Staging tables: validated rows are COPYed into a temporary table, then merged by SQL in one transaction.

Every stage table has the same shape as the rows the ingest step prepares (see ``STAGE_COLUMNS``), plus
``row_no`` (the feature's index in the source, used in reject messages) and the unit codes the merge
assigns. Stage tables are ``ON COMMIT DROP``: they live exactly as long as the load's transaction.

Rows travel in PostgreSQL's binary COPY format: geometries go as EWKB bytes and numbers as machine values,
so neither side formats or parses text (five times less CPU than CSV for 100k footprints, on both sides).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

if TYPE_CHECKING:  # pandas is not imported at run time: an IFC ingest of one building does without it
    import pandas as pd

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

# Stage columns the merges join or group on (their statistics steer those plans).
JOIN_KEYS = (
    *("code", "building_code", "house_code", "device_code", "pipe_node_code", "from_node", "to_node", "network"),
    *("level", "property", "observed_at", "source_file", "source_id", "grid_code", "parcel_code"),
)

# Columns the merge fills in on the stage table.
UNIT_COLUMNS = [
    ("district_code", "text"),
    ("street_code", "text"),
    ("community_code", "text"),
    ("grid_code", "text"),
    ("parcel_code", "text"),
]


LOAD_WORK_MEM = "256MB"
"""Sort and hash memory of a load's statements: 100k staged footprints (~30 MB) sort in memory."""
LOAD_STATEMENT_TIMEOUT = "15min"
"""A load's statements may run longer than the API's timeout (a million rows upserted), but not forever."""


def tune_load_transaction(conn: psycopg.Connection) -> None:
    """Settings for the rest of a load's transaction (``SET LOCAL``: they end with it)."""
    conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(LOAD_WORK_MEM)))
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(LOAD_STATEMENT_TIMEOUT)))


def stage_table(layer: str) -> sql.Identifier:
    return sql.Identifier(f"stage_{layer}")


def create_stage(conn: psycopg.Connection, layer: str) -> None:
    """Create the layer's temporary stage table (dropped at commit or rollback)."""
    cols = [("row_no", "integer"), *STAGE_COLUMNS[layer], *UNIT_COLUMNS]
    defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(typ)) for name, typ in cols)
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(stage_table(layer), defs))


def copy_into_stage(
    conn: psycopg.Connection,
    layer: str,
    frame: pd.DataFrame | Mapping[str, Sequence[Any]],
    analyze: bool = True,
    stage: str | None = None,
) -> int:
    """COPY a frame with columns ``row_no`` + ``STAGE_COLUMNS[layer]`` (+ any unit columns already known)
    into the stage table, in binary, appending. Geometries are EWKB (bytes, or hex text), JSON columns JSON
    text, times ISO 8601 text or datetimes (UTC when they have no offset); missing values are None or NaN.
    ``frame`` is a pandas DataFrame, or for a few rows a mapping of column name to values (which spares an
    ingest of one building, IFC, the import of pandas). ``analyze``: gather the planner statistics the
    merge's joins need (skip it when more rows follow). ``stage``: another stage table of the same shape,
    ``stage_table(stage)``."""
    present = set(frame.keys())
    names = ["row_no", *(name for name, _ in STAGE_COLUMNS[layer])]
    names += [name for name, _ in UNIT_COLUMNS if name in present]  # placed in bulk by the load step
    missing = [n for n in names if n not in present]
    if missing:
        raise KeyError(f"stage frame for {layer} lacks columns {missing}")
    types = {"row_no": "integer", **dict(STAGE_COLUMNS[layer]), **dict(UNIT_COLUMNS)}
    columns = [_binary_values(frame[name], types[name]) for name in names]
    table = stage_table(stage or layer)
    _write_binary_rows(conn, table, [(name, types[name]) for name in names], zip(*columns, strict=True))
    if analyze:
        analyze_stage(conn, layer)
    return len(columns[0])


def copy_into_table(
    conn: psycopg.Connection, table: str, columns: Sequence[tuple[str, str]], frame: pd.DataFrame
) -> int:
    """COPY the frame's ``columns`` ((name, SQL type) pairs, a fixed list of the caller's) into the city
    table ``table`` itself, in binary, as ``copy_into_stage`` does into a stage table: for rows already
    checked, which need no merge. Returns the row count."""
    values = [_binary_values(frame[name], typ) for name, typ in columns]
    _write_binary_rows(conn, sql.Identifier(table), columns, zip(*values, strict=True))
    return len(frame)


def analyze_stage(conn: psycopg.Connection, layer: str) -> None:
    """Planner statistics of a stage table's keys and codes, the columns the merges join and group on
    (temporary tables are never analysed automatically). The other columns are left out: their statistics,
    geometries' above all, cost four times as much and no plan depends on them."""
    stage_names = {name for name, _ in STAGE_COLUMNS[layer]} | {name for name, _ in UNIT_COLUMNS}
    columns = ["row_no", *(name for name in JOIN_KEYS if name in stage_names)]
    conn.execute(
        sql.SQL("ANALYZE {} ({})").format(stage_table(layer), sql.SQL(", ").join(map(sql.Identifier, columns)))
    )


def _write_binary_rows(
    conn: psycopg.Connection, table: sql.Composable, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT binary)`` of value tuples in ``columns`` order, each value
    of the Python type psycopg dumps for its SQL type, except geometry (EWKB bytes), jsonb (JSON text) and
    timestamptz (microseconds since 2000-01-01 UTC, see ``_timestamps``)."""
    oids = {"geometry": _geometry_oid(conn)}
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
        table, sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    )
    with conn.cursor() as cur:
        # On this cursor only, chosen by the columns' types (not by value): EWKB bytes → geometry, JSON text →
        # jsonb, microseconds → timestamptz.
        cur.adapters.register_dumper(None, _geometry_dumper(oids["geometry"]))
        cur.adapters.register_dumper(None, _JsonbTextDumper)
        cur.adapters.register_dumper(None, _TimestamptzMicrosDumper)
        with cur.copy(stmt) as copy:
            copy.set_types([oids.get(typ, typ) for _, typ in columns])
            for row in rows:
                copy.write_row(row)


class _JsonbTextDumper(Dumper):
    """JSON already serialised as text, in jsonb's binary format (a version byte, then the text)."""

    format = Format.BINARY
    oid = 3802  # jsonb, a built-in type with a fixed oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode("utf-8")


class _TimestamptzMicrosDumper(Dumper):
    """timestamptz's binary format: microseconds since 2000-01-01 UTC, a big-endian int64."""

    format = Format.BINARY
    oid = 1184  # timestamptz, a built-in type with a fixed oid

    def dump(self, obj: int) -> bytes:
        return _INT8.pack(obj)


_INT8 = struct.Struct(">q")
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
_PG_EPOCH_UTC = datetime(2000, 1, 1, tzinfo=UTC)


def _geometry_oid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT 'geometry'::regtype::oid").fetchone()
    if row is None:  # pragma: no cover - PostGIS is a requirement of every migrated database
        raise RuntimeError("the geometry type is missing (PostGIS not installed?)")
    return int(row[0])


def _geometry_dumper(oid: int) -> type[Dumper]:
    """EWKB bytes as they are: PostGIS' binary input of geometry reads (E)WKB."""

    class GeometryBinaryDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: bytes) -> bytes:
            return obj

    GeometryBinaryDumper.oid = oid
    return GeometryBinaryDumper


def _binary_values(column: pd.Series | Sequence[Any], typ: str) -> list[Any]:
    """One stage column (a pandas Series, or a list) as Python values for the binary COPY of SQL type
    ``typ`` (None for missing). A Series takes pandas' and numpy's vectorised paths."""
    series = hasattr(column, "to_numpy")
    if typ in ("float8", "integer"):
        if series:
            numbers = column.to_numpy(dtype=float, na_value=np.nan)  # type: ignore[union-attr]
        else:
            numbers = np.array([np.nan if _missing(v) else v for v in column], dtype=float)
        values = numbers.tolist()
        if typ == "integer":
            return [None if v != v else int(v) for v in values]
        return [None if v != v else v for v in values] if np.isnan(numbers).any() else values
    if typ == "timestamptz":
        return _timestamps(column) if series else [_convert(v, _micros) for v in column]  # type: ignore[arg-type]
    values = column.tolist() if series else list(column)  # type: ignore[union-attr]
    if typ == "geometry":
        return [v if type(v) is bytes else _convert(v, _ewkb) for v in values]
    if typ == "date":
        return [_convert(v, _date) for v in values]
    return [v if type(v) is str else _convert(v, str) for v in values]  # text, and jsonb as JSON text


def _timestamps(column: pd.Series) -> list[int | None]:
    """Times (ISO 8601 text or datetimes; UTC when they have no offset) as timestamptz's binary value,
    microseconds since 2000-01-01 UTC: parsed by pandas in one call, not one datetime object per row."""
    import pandas as pd  # only ever called with a Series: pandas is loaded

    parsed = pd.to_datetime(pd.Series(column, dtype=object), utc=True, format="ISO8601")
    micros = (parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]") - _PG_EPOCH).astype(np.int64)
    missing = parsed.isna().to_numpy()
    values: list[int | None] = micros.tolist()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            values[i] = None
    return values


def _micros(value: Any) -> int:
    """One time as ``_timestamps`` gives it."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _PG_EPOCH_UTC) // timedelta(microseconds=1)


def _missing(value: Any) -> bool:
    """None, NaN, and pandas' NA and NaT (recognised by type: pandas may not be loaded)."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or type(value).__name__ in ("NAType", "NaTType")
    )


def _convert(value: Any, convert: Callable[[Any], Any]) -> Any:
    return None if _missing(value) else convert(value)


def _date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _ewkb(value: Any) -> bytes:
    return value if isinstance(value, bytes) else bytes.fromhex(str(value))
