"""Nearest features and features within a radius of a point, for ``GET /nearest`` and ``GET /within``.

Only the collections in ``PROXIMITY_COLLECTIONS`` can be asked for; table and column names come from that
fixed table, never from a request. Nearest is a KNN search: ``ORDER BY geom <-> point`` walks the GiST
index and PostGIS rechecks true distances, so polygons (buildings, parcels) come in true distance order, not
bounding-box order. Within is ``ST_DWithin`` (index-assisted). Distances are 2D, in metres of the storage
CRS, from the point to the nearest part of each feature (0 inside a polygon); ties are broken by id. The
answer is one GeoJSON FeatureCollection (CRS84) built by PostgreSQL. Event descriptions and reporters'
contacts are personal data and never listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from cim.crs import storage_srid
from cim.store.fragments import REQUEST_POINT, fetch_at_point
from cim.store.parcel_contents import GEOJSON_DIGITS

TIE_MARGIN_M = 1e-6
"""Nearest: features within the k-th distance plus this are candidates, so rounding never drops a tie."""


@dataclass(frozen=True)
class ProximityCollection:
    table: str
    geom: str
    key: str
    properties: tuple[str, ...]
    kind: str | None = None
    """The column the ``kind`` filter applies to (None: the collection has no kinds)."""


PROXIMITY_COLLECTIONS: dict[str, ProximityCollection] = {
    "buildings": ProximityCollection(
        "buildings", "footprint", "building_code", ("name", "use", "height_m", "storeys", "grid_code", "parcel_code")
    ),
    "devices": ProximityCollection(
        "devices", "geom", "code", ("kind", "name", "status", "grid_code", "building_code"), kind="kind"
    ),
    "pipe_nodes": ProximityCollection(
        "pipe_nodes", "geom", "code", ("network", "kind", "depth_m", "grid_code"), kind="kind"
    ),
    "pois": ProximityCollection("pois", "geom", "osm_id", ("kind", "name", "grid_code", "building_code"), kind="kind"),
    "events": ProximityCollection(
        "events", "geom", "code", ("category", "subcategory", "status", "reported_at", "grid_code")
    ),
    "parcels": ProximityCollection(
        "parcels", "geom", "code", ("name", "land_use", "far_limit", "height_limit_m", "coverage_limit", "grid_code")
    ),
}


def _feature_rows(
    c: ProximityCollection, where: sql.Composable, order_limit: sql.Composable, matched: sql.Composable
) -> sql.Composed:
    """Rows (id, geom, distance_m, props, matched) of collection ``c`` around the request point."""
    props = sql.SQL(", ").join(sql.SQL("{}, t.{}").format(sql.Literal(p), sql.Identifier(p)) for p in c.properties)
    return sql.SQL(
        """
        SELECT t.{key} AS id, t.{geom} AS geom, ST_Distance(t.{geom}, pt.g) AS distance_m,
               json_build_object({props}) AS props, {matched} AS matched
          FROM {table} t, pt
         WHERE {where}
         {order_limit}
        """
    ).format(
        key=sql.Identifier(c.key),
        geom=sql.Identifier(c.geom),
        props=props,
        table=sql.Identifier(c.table),
        where=where,
        order_limit=order_limit,
        matched=matched,
    )


def _collection_sql(rows: sql.Composable) -> sql.Composed:
    return sql.SQL(
        """
        WITH pt AS (SELECT {point} AS g),
        hits AS ({rows}),
        ranked AS (SELECT row_number() OVER (ORDER BY distance_m, id) AS rank, * FROM hits)
        SELECT json_build_object(
            'type', 'FeatureCollection',
            'numberMatched', coalesce(max(matched), count(*)),
            'numberReturned', count(*),
            'features', coalesce(json_agg(json_build_object(
                'type', 'Feature', 'id', id,
                'geometry', ST_AsGeoJSON(ST_Transform(geom, 4326), {digits})::json,
                'properties', json_build_object('rank', rank, 'distance_m', distance_m) :: jsonb || props::jsonb
            ) ORDER BY rank), '[]')
        )::text
          FROM ranked
        """
    ).format(point=sql.SQL(REQUEST_POINT), rows=rows, digits=sql.Literal(GEOJSON_DIGITS))


def _kind_filter(c: ProximityCollection, kind: str | None) -> sql.Composable:
    if kind is None:
        return sql.SQL("true")
    if c.kind is None:
        raise ValueError(f"collection {c.table} has no kinds")
    return sql.SQL("t.{} = %(kind)s").format(sql.Identifier(c.kind))


def nearest_geojson(
    conn: psycopg.Connection, collection: str, x: float, y: float, in_srid: int, k: int, kind: str | None = None
) -> str:
    """The ``k`` features of ``collection`` nearest to (``x``, ``y``) in EPSG ``in_srid``, nearest first."""
    c = PROXIMITY_COLLECTIONS[collection]
    # Two steps, so the index does the search and ties are still broken by id: a KNN scan ordered by <->
    # alone (a second sort key makes the planner give up the index-ordered scan) finds the k-th distance,
    # then the features within that distance (plus a rounding margin) are ranked by (distance, id).
    # No count(*) OVER () here: nearest reports as matched what it returns.
    kind_filter = _kind_filter(c, kind)
    # The KNN subquery spells the point out rather than joining the pt CTE: the index orders by distance only
    # to a constant, and an uncorrelated subquery runs once.
    reach = sql.SQL(
        "ST_DWithin(t.{geom}, pt.g, (SELECT max(d) + {margin} FROM (SELECT t.{geom} <-> {point} AS d FROM {table} t "
        "WHERE {kind} ORDER BY t.{geom} <-> {point} LIMIT %(k)s) knn)) AND {kind}"
    ).format(
        geom=sql.Identifier(c.geom),
        table=sql.Identifier(c.table),
        kind=kind_filter,
        margin=sql.Literal(TIE_MARGIN_M),
        point=sql.SQL(REQUEST_POINT),
    )
    rows = _feature_rows(
        c,
        reach,
        sql.SQL("ORDER BY distance_m, t.{key} LIMIT %(k)s").format(key=sql.Identifier(c.key)),
        sql.SQL("NULL::bigint"),
    )
    params = {"x": x, "y": y, "in_srid": in_srid, "srid": storage_srid(), "k": k, "kind": kind}
    row = fetch_at_point(conn, _collection_sql(rows), params)
    assert row is not None  # an aggregate always returns one row
    return str(row[0])


def within_geojson(
    conn: psycopg.Connection,
    collection: str,
    x: float,
    y: float,
    in_srid: int,
    radius_m: float,
    limit: int,
    kind: str | None = None,
) -> str:
    """Features of ``collection`` within ``radius_m`` metres of (``x``, ``y``), nearest first, at most
    ``limit`` of them; ``numberMatched`` counts all within the radius."""
    c = PROXIMITY_COLLECTIONS[collection]
    where = sql.SQL("ST_DWithin(t.{geom}, pt.g, %(radius)s) AND {kind}").format(
        geom=sql.Identifier(c.geom), kind=_kind_filter(c, kind)
    )
    rows = _feature_rows(
        c,
        where,
        sql.SQL("ORDER BY distance_m, t.{key} LIMIT %(limit)s").format(key=sql.Identifier(c.key)),
        sql.SQL("count(*) OVER ()"),
    )
    params = {
        "x": x,
        "y": y,
        "in_srid": in_srid,
        "srid": storage_srid(),
        "radius": radius_m,
        "limit": limit,
        "kind": kind,
    }
    row = fetch_at_point(conn, _collection_sql(rows), params)
    assert row is not None
    return str(row[0])
