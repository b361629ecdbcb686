"""What stands on, runs under and happens on one parcel: the answer to ``GET /parcels/{code}/contents``.

Each answer is ONE statement whose result is one JSON document built by PostgreSQL and returned as text,
so the API passes it through without parsing: one round trip, no per-row Python. What belongs to the
parcel: buildings, devices and events by their ``parcel_code`` link (the parcel containing their interior
point, set by the load step); pipes by geometry, clipped to the parcel (``ST_Intersection``), pipes that
only touch its boundary left out. Lengths are 2D, in metres of the storage CRS; GeoJSON is CRS84.
"""

from __future__ import annotations

import psycopg

from cim.store.fragments import COMPLIANCE_CTES, OPEN_EVENT

GEOJSON_DIGITS = 7
"""Decimal places of CRS84 coordinates in GeoJSON (1e-7° ≈ 1 cm)."""

_PARCEL_PIECES = f"""
WITH target AS (SELECT code FROM parcels WHERE code = %(code)s),
{COMPLIANCE_CTES},
clipped_pipes AS (
    SELECT pi.code, pi.network, pi.diameter_mm, pi.material,
           ST_CollectionExtract(ST_Intersection(pi.geom, p.geom), 2) AS geom
      FROM target t
      JOIN parcels p ON p.code = t.code
      JOIN pipes pi ON ST_Intersects(pi.geom, p.geom)
),
inside_pipes AS (
    SELECT code, network, diameter_mm, material, geom, ST_Length(geom) AS length_m
      FROM clipped_pipes WHERE ST_Length(geom) > 0
)"""

CONTENTS_SQL = f"""
{_PARCEL_PIECES},
pipes_by_network AS (
    SELECT network, count(*) AS n, sum(length_m) AS length_m FROM inside_pipes GROUP BY network
),
devices_by_kind AS (
    SELECT kind, count(*) AS n FROM devices WHERE parcel_code = (SELECT code FROM target) GROUP BY kind
),
open_events_by_category AS (
    SELECT category, count(*) AS n FROM events
     WHERE parcel_code = (SELECT code FROM target) AND {OPEN_EVENT}
     GROUP BY category
)
SELECT json_build_object(
    'parcel', json_build_object(
        'code', p.code, 'name', p.name, 'land_use', p.land_use, 'area_m2', p.area_m2,
        'approved_at', p.approved_at, 'district_code', p.district_code, 'street_code', p.street_code,
        'community_code', p.community_code, 'grid_code', p.grid_code,
        'limits', json_build_object('far', p.far_limit, 'height_m', p.height_limit_m,
                                    'coverage', p.coverage_limit)),
    'buildings', json_build_object(
        'count', c.building_count,
        'floor_area_m2', c.floor_area_m2,
        'footprint_area_m2', c.footprint_area_m2,
        'items', coalesce((
            SELECT json_agg(json_build_object(
                       'code', tb.building_code, 'name', tb.name, 'use', tb.use, 'height_m', tb.height_m,
                       'storeys', tb.storeys, 'footprint_area_m2', tb.footprint_area_m2,
                       'floor_area_m2', tb.floor_area_m2,
                       'over_height_limit', coalesce(tb.height_m > p.height_limit_m, false))
                   ORDER BY tb.building_code)
              FROM target_buildings tb), '[]')),
    'compliance', (SELECT doc FROM compliance),
    'pipes', json_build_object(
        'count', (SELECT count(*) FROM inside_pipes),
        'length_m', (SELECT coalesce(sum(length_m), 0) FROM inside_pipes),
        'by_network', coalesce((
            SELECT json_object_agg(network, json_build_object('count', n, 'length_m', length_m) ORDER BY network)
              FROM pipes_by_network), '{{}}')),
    'devices', json_build_object(
        'count', (SELECT coalesce(sum(n), 0) FROM devices_by_kind),
        'by_kind', coalesce((SELECT json_object_agg(kind, n ORDER BY kind) FROM devices_by_kind), '{{}}')),
    'open_events', json_build_object(
        'count', (SELECT coalesce(sum(n), 0) FROM open_events_by_category),
        'by_category', coalesce((SELECT json_object_agg(category, n ORDER BY category)
                                   FROM open_events_by_category), '{{}}'))
)::text
  FROM target t
  JOIN parcels p ON p.code = t.code
  CROSS JOIN compliance_totals c
"""

GEOJSON_SQL = f"""
{_PARCEL_PIECES},
features AS (
    SELECT 0 AS layer_order, p.code AS id, p.geom,
           json_build_object('layer', 'parcel', 'code', p.code, 'name', p.name, 'land_use', p.land_use,
                             'area_m2', p.area_m2, 'far_limit', p.far_limit, 'height_limit_m', p.height_limit_m,
                             'coverage_limit', p.coverage_limit, 'compliance', (SELECT doc FROM compliance)) AS props
      FROM target t JOIN parcels p ON p.code = t.code
    UNION ALL
    SELECT 1, b.building_code, b.footprint,
           json_build_object('layer', 'building', 'code', b.building_code, 'name', b.name, 'use', b.use,
                             'height_m', b.height_m, 'storeys', b.storeys, 'floor_area_m2', b.floor_area_m2)
      FROM buildings b WHERE b.parcel_code = (SELECT code FROM target)
    UNION ALL
    SELECT 2, ip.code, ip.geom,
           json_build_object('layer', 'pipe', 'code', ip.code, 'network', ip.network,
                             'diameter_mm', ip.diameter_mm, 'material', ip.material,
                             'length_inside_m', ip.length_m)
      FROM inside_pipes ip
    UNION ALL
    SELECT 3, d.code, d.geom,
           json_build_object('layer', 'device', 'code', d.code, 'kind', d.kind, 'name', d.name,
                             'status', d.status)
      FROM devices d WHERE d.parcel_code = (SELECT code FROM target)
    UNION ALL
    SELECT 4, e.code, e.geom,
           json_build_object('layer', 'event', 'code', e.code, 'category', e.category,
                             'subcategory', e.subcategory, 'status', e.status, 'reported_at', e.reported_at)
      FROM events e WHERE e.parcel_code = (SELECT code FROM target) AND {OPEN_EVENT}
)
SELECT json_build_object(
    'type', 'FeatureCollection',
    'features', coalesce(json_agg(json_build_object(
        'type', 'Feature', 'id', f.id,
        'geometry', ST_AsGeoJSON(ST_Transform(f.geom, 4326), {GEOJSON_DIGITS})::json,
        'properties', f.props) ORDER BY f.layer_order, f.id), '[]')
)::text
  FROM features f
HAVING EXISTS (SELECT 1 FROM target)
"""


def parcel_contents_json(conn: psycopg.Connection, code: str) -> str | None:
    """The contents document of parcel ``code`` as JSON text (None when there is no such parcel)."""
    row = conn.execute(CONTENTS_SQL, {"code": code}).fetchone()
    return None if row is None else str(row[0])


def parcel_contents_geojson(conn: psycopg.Connection, code: str) -> str | None:
    """The parcel, its buildings, the clipped pipes, its devices and open events as one GeoJSON
    FeatureCollection (CRS84; each feature's ``layer`` property says what it is); None for no such parcel."""
    row = conn.execute(GEOJSON_SQL, {"code": code}).fetchone()
    return None if row is None else str(row[0])


async def parcel_contents_async(conn: psycopg.AsyncConnection, code: str, geojson: bool = False) -> str | None:
    """`parcel_contents_json` (or with ``geojson`` `parcel_contents_geojson`) on an asyncio connection."""
    cur = await conn.execute(GEOJSON_SQL if geojson else CONTENTS_SQL, {"code": code})
    row = await cur.fetchone()
    return None if row is None else str(row[0])
