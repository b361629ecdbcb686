"""Everything known about one building, for ``GET /buildings/{code}``: attributes, houses, BIM, devices,
events and the compliance of its parcel, as one JSON document built by one statement.

Devices and events belong to the building by their ``building_code`` link; houses by their code prefix. The
parcel compliance is the same SQL as the parcel contents (``fragments.COMPLIANCE_CTES``), so both answers
agree by construction. Houses are paged (``houses_limit``/``houses_offset``) because a tower may hold
thousands; counts and totals are always over all of them. Event descriptions and reporters' contacts are
personal data and are not part of this answer.
"""

from __future__ import annotations

import psycopg

from cim.store.fragments import COMPLIANCE_CTES, OPEN_EVENT
from cim.store.parcel_contents import GEOJSON_DIGITS

OPEN_EVENT_ITEMS = 100
"""At most this many open events are listed (newest first); the counts cover all of them."""

PROFILE_SQL = f"""
WITH building AS (SELECT * FROM buildings WHERE building_code = %(code)s),
target AS (SELECT parcel_code AS code FROM building WHERE parcel_code IS NOT NULL),
{COMPLIANCE_CTES},
house_totals AS (
    SELECT count(*) AS n, coalesce(sum(area_m2), 0) AS area_m2 FROM houses WHERE building_code = %(code)s
),
house_page AS (
    SELECT house_code, storey, area_m2, use FROM houses WHERE building_code = %(code)s
     ORDER BY house_code LIMIT %(houses_limit)s OFFSET %(houses_offset)s
),
models AS (
    SELECT model_guid, source_file, ifc_schema, element_count, storey_count, updated_at
      FROM bim_models WHERE building_code = %(code)s
),
element_classes AS (
    SELECT ifc_class, count(*) AS n FROM bim_elements WHERE building_code = %(code)s GROUP BY ifc_class
),
storeys AS (
    SELECT model_guid, ifc_guid, name, elevation_m, ordinal FROM bim_storeys WHERE building_code = %(code)s
),
building_devices AS (
    SELECT code, kind, name, status FROM devices WHERE building_code = %(code)s
),
building_events AS (
    SELECT code, category, subcategory, status, reported_at, ({OPEN_EVENT}) AS open
      FROM events WHERE building_code = %(code)s
),
events_by_category AS (
    SELECT category, count(*) FILTER (WHERE open) AS open, count(*) FILTER (WHERE NOT open) AS closed
      FROM building_events GROUP BY category
)
SELECT json_build_object(
    'code', b.building_code, 'name', b.name, 'use', b.use, 'height_m', b.height_m,
    'height_source', b.height_source, 'storeys', b.storeys, 'ground_elevation_m', b.ground_elevation_m,
    'footprint_area_m2', b.footprint_area_m2, 'floor_area_m2', b.floor_area_m2,
    'district_code', b.district_code, 'street_code', b.street_code, 'community_code', b.community_code,
    'grid_code', b.grid_code, 'parcel_code', b.parcel_code, 'attributes', b.attributes,
    'version', b.version, 'valid_from', b.valid_from,
    'geometry', ST_AsGeoJSON(ST_Transform(b.footprint, 4326), {GEOJSON_DIGITS})::json,
    'houses', (
        SELECT json_build_object(
            'count', ht.n, 'area_m2', ht.area_m2,
            'limit', %(houses_limit)s::int, 'offset', %(houses_offset)s::int,
            'next_offset', CASE WHEN %(houses_limit)s::int > 0
                                 AND %(houses_offset)s::int + %(houses_limit)s::int < ht.n
                                THEN %(houses_offset)s::int + %(houses_limit)s::int END,
            'items', coalesce((SELECT json_agg(json_build_object('code', house_code, 'storey', storey,
                                                                 'area_m2', area_m2, 'use', use)
                                               ORDER BY house_code) FROM house_page), '[]'))
          FROM house_totals ht),
    'bim', json_build_object(
        'models', coalesce((SELECT json_agg(json_build_object(
                                'model_guid', model_guid, 'source_file', source_file, 'ifc_schema', ifc_schema,
                                'element_count', element_count, 'storey_count', storey_count,
                                'updated_at', updated_at) ORDER BY model_guid) FROM models), '[]'),
        'element_count', (SELECT coalesce(sum(n), 0) FROM element_classes),
        'elements_by_class', coalesce((SELECT json_object_agg(ifc_class, n ORDER BY ifc_class)
                                         FROM element_classes), '{{}}'),
        'storeys', coalesce((SELECT json_agg(json_build_object(
                                 'model_guid', model_guid, 'ifc_guid', ifc_guid, 'name', name,
                                 'elevation_m', elevation_m, 'ordinal', ordinal)
                                 ORDER BY model_guid, ordinal) FROM storeys), '[]')),
    'devices', json_build_object(
        'count', (SELECT count(*) FROM building_devices),
        'by_kind', coalesce((SELECT json_object_agg(kind, n ORDER BY kind)
                               FROM (SELECT kind, count(*) AS n FROM building_devices GROUP BY kind) k), '{{}}'),
        'items', coalesce((SELECT json_agg(json_build_object('code', code, 'kind', kind, 'name', name,
                                                             'status', status) ORDER BY code)
                             FROM building_devices), '[]')),
    'events', json_build_object(
        'open', (SELECT count(*) FROM building_events WHERE open),
        'closed', (SELECT count(*) FROM building_events WHERE NOT open),
        'by_category', coalesce((SELECT json_object_agg(category, json_build_object('open', open, 'closed', closed)
                                                        ORDER BY category) FROM events_by_category), '{{}}'),
        'open_items', coalesce((SELECT json_agg(json_build_object(
                                    'code', code, 'category', category, 'subcategory', subcategory,
                                    'status', status, 'reported_at', reported_at) ORDER BY reported_at DESC, code)
                                  FROM (SELECT * FROM building_events WHERE open
                                         ORDER BY reported_at DESC, code LIMIT {OPEN_EVENT_ITEMS}) o), '[]')),
    'over_height_limit', coalesce(b.height_m > (SELECT height_limit_m FROM compliance_totals), false),
    'compliance', (SELECT doc FROM compliance)
)::text
  FROM building b
"""


def building_profile_json(conn: psycopg.Connection, code: str, houses_limit: int, houses_offset: int) -> str | None:
    """The profile of building ``code`` as JSON text (None when there is no such current building)."""
    params = {"code": code, "houses_limit": houses_limit, "houses_offset": houses_offset}
    row = conn.execute(PROFILE_SQL, params).fetchone()
    return None if row is None else str(row[0])
