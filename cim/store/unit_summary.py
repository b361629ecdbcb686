"""One unit of the block-data hierarchy (district, street, community or grid) with its children and rolled-up
statistics, for ``GET /units/{code}``: one statement, one JSON document.

Statistics are over the rows whose grid lies in the unit (``grid_code = ANY(grids of the unit)``, so every
layer is read through its grid index): buildings and their floor area, houses, devices by kind, events open
and closed by category (closed means finished: closed or rejected). Each table is aggregated once with
``GROUPING SETS`` giving every child's figures and the unit's total in the same pass, so a child's figures
and the unit's always describe the same rows. A district's children are its streets, a street's its
communities, a community's its grids; a grid's children are its buildings (paged, with houses per building).
"""

from __future__ import annotations

import psycopg

from cim.codes import LEVEL_LENGTHS, LEVELS
from cim.store.fragments import OPEN_EVENT

TOTAL_KEY = ""
"""The grouping key of the unit's own total (children are keyed by their code)."""

_STATS_CTES = f"""
unit AS (
    SELECT u.code, u.level, u.name, u.area_m2, u.parent_code, pu.name AS parent_name
      FROM admin_units u LEFT JOIN admin_units pu ON pu.code = u.parent_code
     WHERE u.code = %(code)s
),
unit_grids AS (
    SELECT ARRAY(SELECT code::text FROM admin_units
                  WHERE level = 'grid' AND left(code, %(unit_len)s) = %(code)s) AS codes
),
b AS (
    SELECT CASE WHEN GROUPING(child) = 1 THEN '{TOTAL_KEY}' ELSE child END AS key,
           count(*) AS n, sum(floor_area_m2) AS floor_area_m2
      FROM (SELECT left(grid_code, %(child_len)s) AS child, floor_area_m2 FROM buildings
             WHERE grid_code = ANY ((SELECT codes FROM unit_grids)::text[])) s
     GROUP BY GROUPING SETS ((child), ())
),
h AS (
    SELECT CASE WHEN GROUPING(child) = 1 THEN '{TOTAL_KEY}' ELSE child END AS key, count(*) AS n
      FROM (SELECT left(grid_code, %(child_len)s) AS child FROM houses
             WHERE grid_code = ANY ((SELECT codes FROM unit_grids)::text[])) s
     GROUP BY GROUPING SETS ((child), ())
),
d AS (
    SELECT CASE WHEN GROUPING(child) = 1 THEN '{TOTAL_KEY}' ELSE child END AS key, kind, count(*) AS n
      FROM (SELECT left(grid_code, %(child_len)s) AS child, kind FROM devices
             WHERE grid_code = ANY ((SELECT codes FROM unit_grids)::text[])) s
     GROUP BY GROUPING SETS ((child, kind), (kind))
),
e AS (
    SELECT CASE WHEN GROUPING(child) = 1 THEN '{TOTAL_KEY}' ELSE child END AS key, category,
           count(*) FILTER (WHERE open) AS open, count(*) FILTER (WHERE NOT open) AS closed
      FROM (SELECT left(grid_code, %(child_len)s) AS child, category, ({OPEN_EVENT}) AS open FROM events
             WHERE grid_code = ANY ((SELECT codes FROM unit_grids)::text[])) s
     GROUP BY GROUPING SETS ((child, category), (category))
),
children AS (
    SELECT code, name FROM admin_units WHERE parent_code = %(code)s AND %(has_unit_children)s
),
stats AS (
    SELECT k.key, json_build_object(
        'buildings', coalesce(b.n, 0),
        'floor_area_m2', coalesce(b.floor_area_m2, 0),
        'houses', coalesce(h.n, 0),
        'devices', json_build_object(
            'count', coalesce((SELECT sum(n) FROM d WHERE d.key = k.key), 0),
            'by_kind', coalesce((SELECT json_object_agg(kind, n ORDER BY kind) FROM d WHERE d.key = k.key), '{{}}')),
        'events', json_build_object(
            'open', coalesce((SELECT sum(open) FROM e WHERE e.key = k.key), 0),
            'closed', coalesce((SELECT sum(closed) FROM e WHERE e.key = k.key), 0),
            'by_category', coalesce((SELECT json_object_agg(category, json_build_object('open', open,
                                                                                         'closed', closed)
                                                            ORDER BY category)
                                       FROM e WHERE e.key = k.key), '{{}}'))
    ) AS doc
      FROM (SELECT '{TOTAL_KEY}' AS key UNION ALL SELECT code FROM children) k
      LEFT JOIN b ON b.key = k.key
      LEFT JOIN h ON h.key = k.key
),
building_page AS (
    SELECT bl.building_code, bl.name, bl.use, bl.storeys, bl.floor_area_m2,
           (SELECT count(*) FROM houses ho WHERE ho.building_code = bl.building_code) AS houses
      FROM buildings bl
     WHERE %(lists_buildings)s AND bl.grid_code = %(code)s
     ORDER BY bl.building_code LIMIT %(limit)s OFFSET %(offset)s
)"""

UNIT_SQL = f"""
WITH {_STATS_CTES}
SELECT json_build_object(
    'code', u.code, 'level', u.level, 'name', u.name, 'area_m2', u.area_m2,
    'parent', CASE WHEN u.parent_code IS NOT NULL
                   THEN json_build_object('code', u.parent_code, 'name', u.parent_name) END,
    'stats', (SELECT doc FROM stats WHERE key = '{TOTAL_KEY}'),
    'children_level', %(children_level)s::text,
    'children', coalesce((SELECT json_agg(json_build_object('code', c.code, 'name', c.name, 'stats', s.doc)
                                          ORDER BY c.code)
                            FROM children c JOIN stats s ON s.key = c.code), '[]'),
    'buildings', CASE WHEN %(lists_buildings)s THEN json_build_object(
        'count', (SELECT coalesce(n, 0) FROM b WHERE key = '{TOTAL_KEY}'),
        'limit', %(limit)s::int, 'offset', %(offset)s::int,
        'next_offset', CASE WHEN %(limit)s::int > 0
                             AND %(offset)s::int + %(limit)s::int < (SELECT coalesce(max(n), 0) FROM b
                                                                      WHERE key = '{TOTAL_KEY}')
                            THEN %(offset)s::int + %(limit)s::int END,
        'items', coalesce((SELECT json_agg(json_build_object(
                               'code', building_code, 'name', name, 'use', use, 'storeys', storeys,
                               'floor_area_m2', floor_area_m2, 'houses', houses) ORDER BY building_code)
                             FROM building_page), '[]')) END
)::text
  FROM unit u
"""

UNIT_LEVELS = LEVELS[:4]
"""The levels ``GET /units/{code}`` answers for: district, street, community, grid."""


def unit_summary_json(conn: psycopg.Connection, code: str, limit: int, offset: int) -> str | None:
    """The summary of unit ``code`` (a valid district … grid code) as JSON text; None when it is not loaded.

    ``limit``/``offset`` page the building list of a grid (other levels list their child units in full).
    """
    level = LEVELS[[LEVEL_LENGTHS[lvl] for lvl in LEVELS].index(len(code))]
    if level not in UNIT_LEVELS:
        raise ValueError(f"{code} is a {level} code, not a unit code")
    child_level = LEVELS[LEVELS.index(level) + 1]
    is_grid = level == "grid"
    params = {
        "code": code,
        "unit_len": len(code),
        # A grid's figures are its own; other units are split by child unit.
        "child_len": len(code) if is_grid else LEVEL_LENGTHS[child_level],
        "has_unit_children": not is_grid,
        "lists_buildings": is_grid,
        "children_level": child_level,
        "limit": limit,
        "offset": offset,
    }
    row = conn.execute(UNIT_SQL, params).fetchone()
    return None if row is None else str(row[0])
