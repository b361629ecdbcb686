"""SQL fragments shared by the CIM answer queries, so each rule is written once.

- ``OPEN_EVENT``: an event is open until it is finished, i.e. closed or rejected (a resolved case still
  awaits its review). Written as literal SQL, not a parameter, so the planner can match the partial index
  ``events_parcel_open_idx`` (migration 0008) whose predicate is the same text.
- ``REQUEST_POINT``: a point given by a client in any CRS (``%(x)s, %(y)s`` in EPSG ``%(in_srid)s``),
  transformed to the storage CRS (``%(srid)s``) inside the statement; a constant expression, so KNN
  (``<->``) and ``ST_DWithin`` still use the GiST indexes.
  PostGIS refuses points outside the projection's domain; `fetch_at_point` turns that into `PointError`.
- ``COMPLIANCE_CTES``: land post-approval supervision (土地批后监管) of one parcel. It needs a preceding CTE
  ``target(code)`` holding the parcel's code (zero or one row) and defines
  ``target_buildings`` (the buildings on it: ``buildings.parcel_code``, the parcel containing each
  footprint's interior point, as the load step assigns it), ``compliance_totals`` and ``compliance``
  (one JSON document). Achieved FAR is total floor area / parcel area, coverage is total footprint area /
  parcel area, and height is the tallest building. A limit the parcel does not set is never exceeded.
  Both ``GET /parcels/{code}/contents`` and ``GET /buildings/{code}`` use this one text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

FINISHED_EVENT_STATUSES = ("closed", "rejected")
OPEN_EVENT = "status NOT IN ('closed', 'rejected')"

REQUEST_POINT = "ST_Transform(ST_SetSRID(ST_MakePoint(%(x)s::float8, %(y)s::float8), %(in_srid)s::int), %(srid)s::int)"

COMPLIANCE_CTES = """
target_buildings AS (
    SELECT b.building_code, b.name, b.use, b.height_m, b.storeys, b.footprint_area_m2, b.floor_area_m2
      FROM buildings b
     WHERE b.parcel_code = (SELECT code FROM target)
),
compliance_totals AS (
    SELECT p.code, p.area_m2, p.far_limit, p.height_limit_m, p.coverage_limit,
           count(tb.building_code) AS building_count,
           coalesce(sum(tb.floor_area_m2), 0) AS floor_area_m2,
           coalesce(sum(tb.footprint_area_m2), 0) AS footprint_area_m2,
           coalesce(sum(tb.floor_area_m2), 0) / p.area_m2 AS far,
           coalesce(sum(tb.footprint_area_m2), 0) / p.area_m2 AS coverage,
           max(tb.height_m) AS max_height_m,
           coalesce(json_agg(tb.building_code ORDER BY tb.height_m DESC, tb.building_code)
                    FILTER (WHERE tb.height_m > p.height_limit_m), '[]') AS over_height
      FROM target t
      JOIN parcels p ON p.code = t.code
      LEFT JOIN target_buildings tb ON true
     GROUP BY p.code
),
compliance AS (
    SELECT json_build_object(
        'parcel_code', c.code,
        'parcel_area_m2', c.area_m2,
        'building_count', c.building_count,
        'floor_area_m2', c.floor_area_m2,
        'footprint_area_m2', c.footprint_area_m2,
        'far', json_build_object('limit', c.far_limit, 'achieved', c.far,
                                 'exceeded', coalesce(c.far > c.far_limit, false)),
        'coverage', json_build_object('limit', c.coverage_limit, 'achieved', c.coverage,
                                      'exceeded', coalesce(c.coverage > c.coverage_limit, false)),
        'height_m', json_build_object('limit', c.height_limit_m, 'achieved', c.max_height_m,
                                      'exceeded', coalesce(c.max_height_m > c.height_limit_m, false)),
        'violations', coalesce((
            SELECT json_agg(json_build_object(
                       'limit', v.name, 'limit_value', v.lim, 'achieved', v.val,
                       'excess', v.val - v.lim, 'excess_ratio', (v.val - v.lim) / v.lim,
                       'buildings', v.buildings) ORDER BY v.ord)
              FROM (VALUES (1, 'far', c.far_limit, c.far, '[]'::json),
                           (2, 'coverage', c.coverage_limit, c.coverage, '[]'::json),
                           (3, 'height_m', c.height_limit_m, c.max_height_m, c.over_height)
                   ) AS v (ord, name, lim, val, buildings)
             WHERE v.val > v.lim), '[]')
    ) AS doc
      FROM compliance_totals c
)
"""


class PointError(ValueError):
    """The request point cannot be transformed to the storage CRS (outside the projection's domain)."""


def fetch_at_point(conn: psycopg.Connection, query: Any, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run a statement using ``REQUEST_POINT`` and return its first row; a point PostGIS cannot transform
    raises `PointError` (the transaction is then aborted: the caller's connection block rolls it back)."""
    try:
        return conn.execute(query, params).fetchone()
    except psycopg.errors.InternalError_ as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if message.startswith("transform:"):
            raise PointError(message.removeprefix("transform:").strip()) from None
        raise
