"""Feature queries of the OGC API – Features: each feature leaves PostGIS as finished GeoJSON text.

Decisions recorded here:
- **GeoJSON is written by PostGIS** (``ST_AsGeoJSON`` with ``maxdecimaldigits`` of the output CRS and no
  ``crs`` member, ``json_build_object`` for properties, concatenated as text), one row per feature, streamed
  (``cursor.stream``); Python never parses or builds a feature.
- **Only whitelisted identifiers** (`cim.store.collections`) appear in the SQL; every value is a bound
  parameter (filters from `cim.store.cql2_filter`, bboxes as EWKB in the storage CRS).
- **Stable paging**: rows are ordered by the requested sort keys and then by the feature id, so ``offset``
  pages partition the result.
- **numberMatched**: counted exactly up to `COUNT_EXACT_UP_TO` rows (``count(*)`` over a ``LIMIT``ed
  subquery, so a huge match costs no more than that); beyond, the planner's row estimate (``EXPLAIN``) is
  returned and flagged as an estimate.
- **Times**: a ``datetime`` instant t selects the rows living at t (``start <= t < end``, open end while
  NULL); an interval [a, b] the rows whose life overlaps it. For buildings the rows are versions
  (``building_versions``), see `cim.store.collections`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from cim.store.collections import Collection, Prop
from cim.store.feature_crs import FeatureCrs

COUNT_EXACT_UP_TO = 10_000


@dataclass(frozen=True)
class TimeFilter:
    """An instant (``start == end``) or a closed interval; None is an open end (``..``)."""

    start: datetime | None
    end: datetime | None

    @property
    def instant(self) -> bool:
        return self.start is not None and self.start == self.end


@dataclass(frozen=True)
class ItemsQuery:
    """One page of features: what to select (all filters optional) and how to write it."""

    collection: Collection
    crs: FeatureCrs
    storage_srid: int
    limit: int
    offset: int = 0
    bbox_ewkb: bytes | None = None
    time: TimeFilter | None = None
    filter_sql: sql.Composable | None = None
    filter_params: dict[str, Any] = field(default_factory=dict)
    properties: tuple[Prop, ...] | None = None
    """The properties to write (None: all)."""
    sortby: tuple[tuple[Prop, bool], ...] = ()
    """(property, descending) sort keys, before the id."""


# ------------------------------------------------------------------------------------------------------
# SQL building


def _geometry_out(c: Collection, crs: FeatureCrs, storage_srid: int) -> sql.Composable:
    geom: sql.Composable = sql.SQL(c.geometry_sql)
    if crs.srid != storage_srid:
        geom = sql.SQL("ST_Transform({}, {})").format(geom, sql.Literal(crs.srid))
    if crs.lat_first:
        geom = sql.SQL("ST_FlipCoordinates({})").format(geom)
    return sql.SQL("ST_AsGeoJSON({}, {}, 0)").format(geom, sql.Literal(crs.decimals))


def feature_sql(c: Collection, crs: FeatureCrs, storage_srid: int, props: tuple[Prop, ...]) -> sql.Composable:
    """SQL of one feature as GeoJSON text over the row ``t`` (and ``g`` for a joined geometry)."""
    if props:
        pairs = sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(p.name), sql.SQL(p.sql)) for p in props)
        properties: sql.Composable = sql.SQL("json_build_object({})::text").format(pairs)
    else:
        properties = sql.Literal("{}")
    return sql.SQL("{} || to_json({})::text || {} || coalesce({}, 'null') || {} || {} || '}}'").format(
        sql.Literal('{"type":"Feature","id":'),
        sql.SQL(c.id_sql),
        sql.Literal(',"geometry":'),
        _geometry_out(c, crs, storage_srid),
        sql.Literal(',"properties":'),
        properties,
    )


def _source(c: Collection, versions: bool) -> sql.Composable:
    table = c.temporal.history_table if versions and c.temporal and c.temporal.history_table else c.table
    src = sql.SQL("{} t").format(sql.Identifier(table))
    if c.geometry_join is not None:
        j = c.geometry_join
        src = sql.SQL("{} JOIN {} g ON g.{} = t.{}").format(
            src, sql.Identifier(j.table), sql.Identifier(j.key), sql.Identifier(j.key)
        )
    return src


def _from_where(q: ItemsQuery) -> tuple[sql.Composable, dict[str, Any]]:
    """``FROM … WHERE …`` of a query and its parameters."""
    c = q.collection
    params: dict[str, Any] = dict(q.filter_params)
    conds: list[sql.Composable] = []
    if c.level is not None:
        params["q_level"] = c.level
        conds.append(sql.SQL("t.level = %(q_level)s"))
    if q.bbox_ewkb is not None:
        params["q_bbox"] = q.bbox_ewkb
        geom = sql.SQL(c.geometry_sql)
        box = sql.SQL("ST_GeomFromEWKB(%(q_bbox)s::bytea)")
        if c.nd_index:  # an n-D GiST index is used by &&&, not by the && inside ST_Intersects
            conds.append(sql.SQL("{} &&& {}").format(geom, box))
        conds.append(sql.SQL("ST_Intersects({}, {})").format(geom, box))
    if q.time is not None:
        conds.extend(_time_conditions(c, q.time, params))
    if q.filter_sql is not None:
        conds.append(q.filter_sql)
    where = sql.SQL(" AND ").join(conds) if conds else sql.SQL("TRUE")
    return sql.SQL("FROM {} WHERE {}").format(_source(c, q.time is not None), where), params


def _time_conditions(c: Collection, t: TimeFilter, params: dict[str, Any]) -> list[sql.Composable]:
    if c.temporal is None:
        raise ValueError(f"collection {c.id} has no temporal extent")
    start = sql.SQL("t.{}").format(sql.Identifier(c.temporal.start))
    end = sql.SQL("t.{}").format(sql.Identifier(c.temporal.end)) if c.temporal.end else start
    conds: list[sql.Composable] = []
    if t.end is not None:  # it started by the end of the asked time
        params["q_t_end"] = t.end
        conds.append(sql.SQL("{} <= %(q_t_end)s::timestamptz").format(start))
    if t.start is not None:  # and had not ended by its start (an end is exclusive; without one, an instant)
        params["q_t_start"] = t.start
        if c.temporal.end:
            conds.append(sql.SQL("({} IS NULL OR {} > %(q_t_start)s::timestamptz)").format(end, end))
        else:
            conds.append(sql.SQL("{} >= %(q_t_start)s::timestamptz").format(start))
    return conds


def items_sql(q: ItemsQuery) -> tuple[sql.Composed, dict[str, Any]]:
    """The page's SQL: one text column, a feature per row, in a stable order."""
    c = q.collection
    props = q.properties if q.properties is not None else c.properties
    from_where, params = _from_where(q)
    keys: list[sql.Composable] = [
        sql.SQL("{} {}").format(sql.SQL(p.sql), sql.SQL("DESC" if desc else "ASC")) for p, desc in q.sortby
    ]
    keys.append(sql.SQL(c.id_sql))
    params["q_limit"] = q.limit
    params["q_offset"] = q.offset
    query = sql.SQL("SELECT {} {} ORDER BY {} LIMIT %(q_limit)s OFFSET %(q_offset)s").format(
        feature_sql(c, q.crs, q.storage_srid, props), from_where, sql.SQL(", ").join(keys)
    )
    return query, params


# ------------------------------------------------------------------------------------------------------
# Running


# Rows arrive in chunks where libpq can (17+, bundled with psycopg[binary]), else one by one.
_STREAM_CHUNK = 256 if psycopg.pq.version() >= 170000 else 1


def stream_features(conn: psycopg.Connection, q: ItemsQuery) -> Generator[str, None, None]:
    """The page's features as GeoJSON texts, streamed from the server as they are written. Closing the
    generator early stops the query."""
    query, params = items_sql(q)
    try:
        with conn.cursor() as cur:
            for row in cur.stream(query, params, size=_STREAM_CHUNK):
                yield row[0]
    finally:
        # A stream closed early is cancelled by psycopg, which aborts the transaction: end it, so the caller
        # can go on using the connection (e.g. to count the matches).
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()


def count_features(conn: psycopg.Connection, q: ItemsQuery, exact_up_to: int = COUNT_EXACT_UP_TO) -> tuple[int, bool]:
    """(number of matching features, exact?): exact up to ``exact_up_to``, else the planner's estimate."""
    from_where, params = _from_where(q)
    params["q_cap"] = exact_up_to + 1
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT 1 {} LIMIT %(q_cap)s) s").format(from_where), params
    ).fetchone()
    n = int(row[0]) if row else 0
    if n <= exact_up_to:
        return n, True
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 {}").format(from_where), params).fetchone()
    estimate = int(plan[0][0]["Plan"]["Plan Rows"]) if plan else n
    return max(estimate, n), False


def feature_by_id(
    conn: psycopg.Connection, c: Collection, fid: str | int, crs: FeatureCrs, storage_srid: int
) -> str | None:
    """One current feature as GeoJSON text, or None."""
    query = sql.SQL("SELECT {} FROM {} WHERE {} = %(fid)s{}").format(
        feature_sql(c, crs, storage_srid, c.properties),
        _source(c, versions=False),
        sql.SQL(c.id_sql),
        sql.SQL(" AND t.level = %(level)s") if c.level else sql.SQL(""),
    )
    row = conn.execute(query, {"fid": fid, "level": c.level}).fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True)
class Extent:
    """A collection's extent: CRS84 bbox (None when empty) and time interval (ends None when open)."""

    bbox: tuple[float, float, float, float] | None
    interval: tuple[datetime | None, datetime | None] | None


def collection_extent(conn: psycopg.Connection, c: Collection, storage_srid: int) -> Extent:
    """The spatial (CRS84, from the densified storage-CRS box) and temporal extent of a collection."""
    geom_table = c.geometry_join.table if c.geometry_join else c.table
    geom_col = c.geometry_join.column if c.geometry_join else c.geometry_column
    level = sql.SQL(" WHERE level = %(level)s") if c.level else sql.SQL("")
    row = conn.execute(
        sql.SQL(
            "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM ("
            " SELECT ST_Transform(ST_Segmentize(ST_SetSRID(e::geometry, %(srid)s), greatest("
            "  ST_XMax(e) - ST_XMin(e), ST_YMax(e) - ST_YMin(e), 1) / 16), 4326)::box2d AS b"
            " FROM (SELECT ST_Extent({}) AS e FROM {}{}) s WHERE e IS NOT NULL) x"
        ).format(sql.Identifier(geom_col), sql.Identifier(geom_table), level),
        {"srid": storage_srid, "level": c.level},
    ).fetchone()
    bbox = (float(row[0]), float(row[1]), float(row[2]), float(row[3])) if row else None
    interval = None
    if c.temporal is not None:
        t = c.temporal
        table = t.history_table or c.table
        end = sql.Identifier(t.end or t.start)
        trow = conn.execute(
            sql.SQL("SELECT min({}), CASE WHEN bool_or({} IS NULL) THEN NULL ELSE max({}) END FROM {}").format(
                sql.Identifier(t.start), end, end, sql.Identifier(table)
            )
        ).fetchone()
        if trow and trow[0] is not None:
            interval = (trow[0], trow[1])
    return Extent(bbox, interval)
