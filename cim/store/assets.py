"""The 3D asset catalogue (``assets``, migration 0003): point clouds and photogrammetry meshes kept as files
under ``$CIM_HOME/assets/<name>/`` for the 3D Tiles step.

Functions run inside the caller's transaction and never commit. Bounds are in the asset's own CRS; the
footprint is WKB in the storage CRS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ASSET_KINDS = ("pointcloud", "mesh")
ASSET_FORMATS = ("las", "laz", "ply", "xyz", "obj", "gltf", "glb")


@dataclass(frozen=True)
class AssetRecord:
    """One row of ``assets``. ``point_count`` is set for point clouds, ``vertex_count``/``triangle_count``
    and ``origin`` (the CRS position of the mesh's local 0,0,0) for meshes."""

    name: str
    kind: str
    format: str
    path: str
    files: list[str]
    crs: str
    srid: int | None
    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]
    footprint_wkb: bytes
    size_bytes: int
    sha256: str
    point_count: int | None = None
    vertex_count: int | None = None
    triangle_count: int | None = None
    origin: tuple[float, float, float] | None = None
    up_axis: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


_COLUMNS = (
    "name, kind, format, path, files, crs, srid, point_count, vertex_count, triangle_count, bounds_min, "
    "bounds_max, origin, up_axis, footprint, size_bytes, sha256, attributes"
)


def upsert_asset(conn: psycopg.Connection, record: AssetRecord) -> bool:
    """Register ``record``, replacing an asset of the same name; returns True if one was replaced."""
    row = conn.execute(
        f"""
        INSERT INTO assets AS a ({_COLUMNS})
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                ST_GeomFromWKB(%s, (SELECT value::int FROM cim_settings WHERE key = 'storage_srid')), %s, %s, %s)
        ON CONFLICT (name) DO UPDATE SET
            kind = EXCLUDED.kind, format = EXCLUDED.format, path = EXCLUDED.path, files = EXCLUDED.files,
            crs = EXCLUDED.crs, srid = EXCLUDED.srid, point_count = EXCLUDED.point_count,
            vertex_count = EXCLUDED.vertex_count, triangle_count = EXCLUDED.triangle_count,
            bounds_min = EXCLUDED.bounds_min, bounds_max = EXCLUDED.bounds_max, origin = EXCLUDED.origin,
            up_axis = EXCLUDED.up_axis, footprint = EXCLUDED.footprint, size_bytes = EXCLUDED.size_bytes,
            sha256 = EXCLUDED.sha256, attributes = EXCLUDED.attributes, registered_at = now()
        RETURNING (xmax <> 0) AS replaced
        """,
        (
            record.name,
            record.kind,
            record.format,
            record.path,
            record.files,
            record.crs,
            record.srid,
            record.point_count,
            record.vertex_count,
            record.triangle_count,
            list(record.bounds_min),
            list(record.bounds_max),
            None if record.origin is None else list(record.origin),
            record.up_axis,
            record.footprint_wkb,
            record.size_bytes,
            record.sha256,
            Jsonb(record.attributes),
        ),
    ).fetchone()
    return bool(row and row[0])


def get_asset(conn: psycopg.Connection, name: str) -> AssetRecord | None:
    """The catalogue row of asset ``name`` (footprint as WKB in the storage CRS), or None."""
    row = conn.execute(
        """
        SELECT name, kind, format, path, files, crs, srid, point_count, vertex_count, triangle_count, bounds_min,
               bounds_max, origin, up_axis, ST_AsBinary(footprint), size_bytes, sha256, attributes
          FROM assets WHERE name = %s
        """,
        (name,),
    ).fetchone()
    if row is None:
        return None
    return AssetRecord(
        name=row[0],
        kind=row[1],
        format=row[2],
        path=row[3],
        files=list(row[4]),
        crs=row[5],
        srid=row[6],
        point_count=row[7],
        vertex_count=row[8],
        triangle_count=row[9],
        bounds_min=(float(row[10][0]), float(row[10][1]), float(row[10][2])),
        bounds_max=(float(row[11][0]), float(row[11][1]), float(row[11][2])),
        origin=None if row[12] is None else (float(row[12][0]), float(row[12][1]), float(row[12][2])),
        up_axis=row[13],
        footprint_wkb=bytes(row[14]),
        size_bytes=int(row[15]),
        sha256=row[16],
        attributes=dict(row[17]),
    )


def assets_of_kind(conn: psycopg.Connection, kind: str) -> list[AssetRecord]:
    """Every registered asset of ``kind`` (``pointcloud`` or ``mesh``), ordered by name (the 3D Tiles step
    tiles each one; a catalogue holds tens of assets, so one `get_asset` per name is fine)."""
    if kind not in ASSET_KINDS:
        raise ValueError(f"asset kind must be one of {ASSET_KINDS}, not {kind!r}")
    names = [r[0] for r in conn.execute("SELECT name FROM assets WHERE kind = %s ORDER BY name", (kind,)).fetchall()]
    records = [get_asset(conn, name) for name in names]
    return [r for r in records if r is not None]
