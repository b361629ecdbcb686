"""What lies at a point, for ``GET /locate``: district → street → community → grid → parcel → building.

Each unit level is searched among the children of the unit found one level up, so the chain is always a
consistent code chain even on a shared boundary; where several units of a level contain the point (it lies
on their common edge) the smallest code wins, the rule the load step uses. Parcel and building are the ones
containing the point (smallest code on a tie). Every level is null where nothing contains the point.
"""

from __future__ import annotations

import psycopg

from cim.crs import storage_srid
from cim.store.fragments import REQUEST_POINT, fetch_at_point

_UNIT = """
{name} AS (
    SELECT a.code, a.name FROM admin_units a, pt
     WHERE a.level = '{name}' AND {parent} AND ST_Intersects(a.geom, pt.g)
     ORDER BY a.code LIMIT 1
)"""

LOCATE_SQL = f"""
WITH pt AS (SELECT {REQUEST_POINT} AS g),
{_UNIT.format(name="district", parent="true")},
{_UNIT.format(name="street", parent="a.parent_code = (SELECT code FROM district)")},
{_UNIT.format(name="community", parent="a.parent_code = (SELECT code FROM street)")},
{_UNIT.format(name="grid", parent="a.parent_code = (SELECT code FROM community)")},
parcel AS (
    SELECT p.code, p.name, p.land_use FROM parcels p, pt WHERE ST_Intersects(p.geom, pt.g)
     ORDER BY p.code LIMIT 1
),
building AS (
    SELECT b.building_code AS code, b.name, b.use, b.height_m FROM buildings b, pt
     WHERE ST_Intersects(b.footprint, pt.g)
     ORDER BY b.building_code LIMIT 1
)
SELECT json_build_object(
    'point', json_build_object('x', ST_X(pt.g), 'y', ST_Y(pt.g), 'srid', ST_SRID(pt.g)),
    'district', (SELECT row_to_json(district) FROM district),
    'street', (SELECT row_to_json(street) FROM street),
    'community', (SELECT row_to_json(community) FROM community),
    'grid', (SELECT row_to_json(grid) FROM grid),
    'parcel', (SELECT row_to_json(parcel) FROM parcel),
    'building', (SELECT row_to_json(building) FROM building)
)::text
  FROM pt
"""

KNOWN_SRID_SQL = "SELECT EXISTS (SELECT 1 FROM spatial_ref_sys WHERE srid = %s)"


def srid_known(conn: psycopg.Connection, srid: int) -> bool:
    """True when PostGIS can transform from EPSG ``srid`` (it is in ``spatial_ref_sys``)."""
    row = conn.execute(KNOWN_SRID_SQL, (srid,)).fetchone()
    return bool(row and row[0])


def locate_point_json(conn: psycopg.Connection, x: float, y: float, in_srid: int) -> str:
    """The chain at point (``x``, ``y``) of EPSG ``in_srid`` as JSON text (the point echoed in storage CRS)."""
    row = fetch_at_point(conn, LOCATE_SQL, {"x": x, "y": y, "in_srid": in_srid, "srid": storage_srid()})
    assert row is not None  # one row always: FROM pt
    return str(row[0])
