"""The raster catalogue (``rasters``) and the building heights measured on rasters.

Every function runs inside the caller's transaction (``cim.db.transaction``); none commits. Footprints are
passed as WKB in the storage CRS; the caller decides where they come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class RasterRecord:
    """One row of ``rasters``: a Cloud-Optimized GeoTIFF under ``$CIM_HOME/rasters`` in its own CRS.

    ``footprint_wkb`` is the raster's extent as a polygon in the storage CRS; ``resolution`` is the pixel
    size in units of the raster's CRS (geometric mean of the two sides)."""

    name: str
    kind: str
    path: str
    crs: str
    bands: int
    dtype: str
    nodata: float | None
    width: int
    height: int
    resolution: float
    footprint_wkb: bytes
    attributes: dict[str, Any] = field(default_factory=dict)


def upsert_raster(conn: psycopg.Connection, record: RasterRecord) -> bool:
    """Register ``record``, replacing a raster of the same name; returns True if one was replaced."""
    row = conn.execute(
        """
        INSERT INTO rasters AS r (name, kind, path, crs, bands, dtype, nodata, width, height, resolution,
                                  footprint, attributes)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                ST_GeomFromWKB(%s, (SELECT value::int FROM cim_settings WHERE key = 'storage_srid')), %s)
        ON CONFLICT (name) DO UPDATE SET
            kind = EXCLUDED.kind, path = EXCLUDED.path, crs = EXCLUDED.crs, bands = EXCLUDED.bands,
            dtype = EXCLUDED.dtype, nodata = EXCLUDED.nodata, width = EXCLUDED.width, height = EXCLUDED.height,
            resolution = EXCLUDED.resolution, footprint = EXCLUDED.footprint, attributes = EXCLUDED.attributes,
            registered_at = now()
        RETURNING (xmax <> 0) AS replaced
        """,
        (
            record.name,
            record.kind,
            record.path,
            record.crs,
            record.bands,
            record.dtype,
            record.nodata,
            record.width,
            record.height,
            record.resolution,
            record.footprint_wkb,
            Jsonb(record.attributes),
        ),
    ).fetchone()
    return bool(row and row[0])


def get_raster(conn: psycopg.Connection, name: str) -> RasterRecord | None:
    """The catalogue row of raster ``name`` (footprint as WKB in the storage CRS), or None."""
    row = conn.execute(
        """
        SELECT name, kind, path, crs, bands, dtype, nodata, width, height, resolution, ST_AsBinary(footprint),
               attributes
          FROM rasters WHERE name = %s
        """,
        (name,),
    ).fetchone()
    if row is None:
        return None
    return RasterRecord(
        name=row[0],
        kind=row[1],
        path=row[2],
        crs=row[3],
        bands=int(row[4]),
        dtype=row[5],
        nodata=None if row[6] is None else float(row[6]),
        width=int(row[7]),
        height=int(row[8]),
        resolution=float(row[9]) if row[9] is not None else 0.0,
        footprint_wkb=bytes(row[10]),
        attributes=dict(row[11]),
    )


# ---------------------------------------------------------------------------------------------------------
# Building heights from a DSM and a DTM


@dataclass(frozen=True)
class BuildingFootprints:
    """Current buildings whose footprint meets a polygon: codes, footprints (WKB, storage CRS), heights and
    their sources, and the number of buildings in the table."""

    codes: list[str]
    footprints_wkb: list[bytes]
    heights_m: list[float]
    height_sources: list[str]
    total_buildings: int


def buildings_within(conn: psycopg.Connection, area_wkb: bytes) -> BuildingFootprints:
    """Buildings whose footprint intersects ``area_wkb`` (a polygon in the storage CRS), ordered by code,
    and how many buildings the table holds in all."""
    rows = conn.execute(
        """
        SELECT building_code, ST_AsBinary(footprint), height_m, height_source
          FROM buildings
         WHERE ST_Intersects(
                   footprint, ST_GeomFromWKB(%s, (SELECT value::int FROM cim_settings WHERE key = 'storage_srid')))
         ORDER BY building_code
        """,
        (area_wkb,),
    ).fetchall()
    total = conn.execute("SELECT count(*) FROM buildings").fetchone()
    return BuildingFootprints(
        codes=[r[0] for r in rows],
        footprints_wkb=[bytes(r[1]) for r in rows],
        heights_m=[float(r[2]) for r in rows],
        height_sources=[r[3] for r in rows],
        total_buildings=int(total[0]) if total else 0,
    )


def set_building_heights(conn: psycopg.Connection, codes: list[str], heights_m: list[float], source: str) -> int:
    """Set ``height_m`` and ``height_source`` of the given buildings (storeys kept); returns how many rows
    really changed. The history trigger archives the previous version of each changed building and skips
    rows whose values are already those."""
    if not codes:
        return 0
    rows = conn.execute(
        """
        UPDATE buildings b SET height_m = v.height_m, height_source = %s
          FROM unnest(%s::text[], %s::float8[]) AS v(building_code, height_m)
         WHERE b.building_code = v.building_code
        RETURNING b.building_code
        """,
        (source, codes, heights_m),
    ).fetchall()
    return len(rows)
