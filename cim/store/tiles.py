"""SQL for building 3D Tiles: a light index of every building, the full rows of one tile, and the
``tilesets`` catalogue.

Decisions recorded here:
- A build reads one consistent snapshot (`read_snapshot`: REPEATABLE READ, read only), so the index and
  the per-tile rows agree even while ingests run.
- The index holds, per building, only what planning and change detection need (code as a 64-bit integer,
  bounding-box centre, size, vertex and ring counts, a 64-bit content hash): about 60 bytes, so a million
  buildings fit in ~60 MB while geometries are fetched tile by tile. It travels as packed binary records
  (see `_INDEX_SQL`).
- Building codes are 19 decimal digits starting with 4403 (the ``shenzhen_code`` domain), so they fit a
  signed 64-bit integer exactly.
- The content hash covers everything a tile shows (footprint, heights, use, names, codes, version): a 64-bit
  ``hash_record_extended`` of those columns. A changed hash means the building's tile must be rewritten.
  (PostgreSQL's hash functions are stable within a major version; after an upgrade that changed them, an
  incremental build just rewrites every tile once.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, LiteralString

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.types.json import Jsonb

from cim.db import connect
from cim.settings import Settings

# The inner subquery (kept apart by OFFSET 0) reads each footprint's box once; hash_record_extended
# (PostgreSQL 14+) hashes the row in C, several times faster than md5 over its text. Each building becomes one
# fixed-width big-endian record (int8send, float8send, …) and the records are concatenated server-side into a
# few bytea chunks (grouped by the code's low bits, so no chunk nears bytea's 1 GB limit): the client reads a
# million buildings as ~56 MB in 16 rows with one np.frombuffer instead of seven million Python values, and the
# scan below can run in parallel workers (a server-side cursor cannot).
_INDEX_SQL = """
SELECT string_agg(int8send(code)
                  || float8send((ST_XMin(b) + ST_XMax(b)) / 2)
                  || float8send((ST_YMin(b) + ST_YMax(b)) / 2)
                  || float8send(sqrt(power(ST_XMax(b) - ST_XMin(b), 2) + power(ST_YMax(b) - ST_YMin(b), 2)
                                     + power(h, 2)))
                  || int4send(n_points - n_rings) || int4send(n_rings) || int8send(digest), ''::bytea)
  FROM (SELECT building_code::bigint AS code, Box2D(footprint) AS b, height_m AS h,
               ST_NPoints(footprint) AS n_points, ST_NRings(footprint) AS n_rings,
               hash_record_extended(ROW(building_code, version, name, use, height_m, storeys, ground_elevation_m,
                                        grid_code, parcel_code, height_source, ST_AsEWKB(footprint)), 0) AS digest
          FROM buildings OFFSET 0) s
 GROUP BY code & 15
"""

_INDEX_DTYPE = np.dtype(
    [("code", ">i8"), ("x", ">f8"), ("y", ">f8"), ("size", ">f8"), ("vertices", ">i4"), ("rings", ">i4"),
     ("digest", ">i8")]
)  # fmt: skip


@dataclass(frozen=True)
class BuildingIndex:
    """One entry per building, as parallel arrays.

    ``x``/``y``: centre of the footprint's bounding box (storage CRS, m); ``size``: diagonal of the
    building's 3D bounding box (m); ``vertices``: footprint vertices without ring closures; ``rings``:
    exterior plus interior rings; ``digest``: 64-bit content hash."""

    code: npt.NDArray[np.int64]
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    size: npt.NDArray[np.float64]
    vertices: npt.NDArray[np.int64]
    rings: npt.NDArray[np.int64]
    digest: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.code)


@dataclass(frozen=True)
class BuildingRows:
    """The buildings of one tile, ordered by code: attributes as lists, footprints as WKB (storage CRS)."""

    building_code: list[str]
    name: list[str | None]
    use: list[str]
    height_m: npt.NDArray[np.float64]
    storeys: npt.NDArray[np.int64]
    ground_elevation_m: npt.NDArray[np.float64]
    grid_code: list[str]
    parcel_code: list[str | None]
    height_source: list[str]
    version: npt.NDArray[np.int64]
    footprint_wkb: list[bytes]

    def __len__(self) -> int:
        return len(self.building_code)


@contextmanager
def read_snapshot(settings: Settings | None = None) -> Iterator[psycopg.Connection]:
    """A read-only connection inside one REPEATABLE READ transaction (a consistent view for a whole build)."""
    conn = connect(settings)
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    with conn, conn.transaction():
        yield conn


def fetch_columns(conn: psycopg.Connection, query: LiteralString, params: Params | None, width: int) -> list[Any]:
    """The result's columns, one tuple each (read in binary; ``width`` empty ones when no row matches): the
    shape the tile-row dataclasses are filled from."""
    rows = conn.execute(query, params, binary=True).fetchall()
    return list(zip(*rows, strict=True)) if rows else [()] * width


def building_index(conn: psycopg.Connection) -> BuildingIndex:
    """The index of every current building, ordered by code (so a build plans the same tree whatever order
    the parallel scan returned them in)."""
    chunks = [bytes(row[0]) for row in conn.execute(_INDEX_SQL, binary=True).fetchall() if row[0] is not None]
    data = b"".join(chunks)
    if len(data) % _INDEX_DTYPE.itemsize:
        raise ValueError("the building index came back truncated (a NULL box or code?)")
    table = np.frombuffer(data, dtype=_INDEX_DTYPE)
    table = table[np.argsort(table["code"], kind="stable")]
    return BuildingIndex(
        code=table["code"].astype(np.int64),
        x=table["x"].astype(np.float64),
        y=table["y"].astype(np.float64),
        size=table["size"].astype(np.float64),
        vertices=table["vertices"].astype(np.int64),
        rings=table["rings"].astype(np.int64),
        digest=table["digest"].astype(np.int64),
    )


def building_rows(conn: psycopg.Connection, codes: Sequence[int]) -> BuildingRows:
    """Full rows of the given buildings (codes as integers, as in the index; missing ones are left out),
    ordered by code."""
    cols = fetch_columns(
        conn,
        """
        SELECT building_code, name, use, height_m, storeys, ground_elevation_m, grid_code, parcel_code,
               height_source, version, ST_AsBinary(footprint)
          FROM buildings WHERE building_code = ANY(%s::bigint[]::text[]) ORDER BY building_code
        """,
        ([int(c) for c in codes],),
        11,
    )
    return BuildingRows(
        building_code=list(cols[0]),
        name=list(cols[1]),
        use=list(cols[2]),
        height_m=np.array(cols[3], dtype=np.float64),
        storeys=np.array(cols[4], dtype=np.int64),
        ground_elevation_m=np.array(cols[5], dtype=np.float64),
        grid_code=list(cols[6]),
        parcel_code=list(cols[7]),
        height_source=list(cols[8]),
        version=np.array(cols[9], dtype=np.int64),
        footprint_wkb=[bytes(b) for b in cols[10]],
    )


def register_tileset(
    conn: psycopg.Connection,
    *,
    layer: str,
    path: str,
    tileset_version: int,
    feature_count: int,
    tile_count: int,
    bounds: tuple[float, float, float, float] | None,
    attributes: dict[str, Any],
) -> None:
    """Insert or replace the catalogue row of a layer's tileset (bounds in the storage CRS)."""
    xmin, ymin, xmax, ymax = bounds if bounds is not None else (None, None, None, None)
    conn.execute(
        """
        INSERT INTO tilesets (layer, path, tileset_version, feature_count, tile_count, bounds, attributes, built_at)
        VALUES (%s, %s, %s, %s, %s,
                CASE WHEN %s::float8 IS NULL THEN NULL
                     ELSE ST_MakeEnvelope(%s, %s, %s, %s, Find_SRID(current_schema()::text, 'tilesets', 'bounds')) END,
                %s, now())
        ON CONFLICT (layer) DO UPDATE SET
            path = EXCLUDED.path, tileset_version = EXCLUDED.tileset_version,
            feature_count = EXCLUDED.feature_count, tile_count = EXCLUDED.tile_count, bounds = EXCLUDED.bounds,
            attributes = EXCLUDED.attributes, built_at = now()
        """,
        (layer, path, tileset_version, feature_count, tile_count, xmin, xmin, ymin, xmax, ymax, Jsonb(attributes)),
    )


def tileset_entry(conn: psycopg.Connection, layer: str) -> dict[str, Any] | None:
    """The catalogue row of a layer's tileset, or None if it was never built."""
    row = conn.execute(
        """
        SELECT layer, path, tileset_version, feature_count, tile_count, ST_XMin(bounds), ST_YMin(bounds),
               ST_XMax(bounds), ST_YMax(bounds), attributes, built_at
          FROM tilesets WHERE layer = %s
        """,
        (layer,),
    ).fetchone()
    if row is None:
        return None
    bounds = None if row[5] is None else (float(row[5]), float(row[6]), float(row[7]), float(row[8]))
    return {
        "layer": row[0],
        "path": row[1],
        "tileset_version": int(row[2]),
        "feature_count": int(row[3]),
        "tile_count": int(row[4]),
        "bounds": bounds,
        "attributes": row[9],
        "built_at": row[10],
    }


def create_lod1_solids_table(conn: psycopg.Connection, table: str, height_offset_m: float) -> int:
    """(Re)create ``table`` (id text, geom MultiPolygonZ in EPSG:4978) holding every building's LOD1 faces
    (roof and walls, as this project's tiles draw them) in ECEF, for other 3D Tiles tools to read (the
    benchmark feeds it to ``py3dtiles export``). Heights get ``height_offset_m`` (geoid undulation) added.
    Returns the row count. ``table`` must be a plain lower-case identifier."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
        raise ValueError(f"{table!r} is not a plain table name")
    name = sql.Identifier(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute(
        sql.SQL(
            """
            CREATE TABLE {} AS
            WITH b AS (
                SELECT building_code, footprint, ground_elevation_m + %(n)s AS z0,
                       ground_elevation_m + height_m + %(n)s AS z1
                  FROM buildings),
            faces AS (
                SELECT building_code, ST_Force3D((ST_Dump(footprint)).geom, z1) AS face FROM b
                UNION ALL
                SELECT b.building_code, ST_SetSRID(ST_MakePolygon(ST_MakeLine(ARRAY[
                           ST_MakePoint(ST_X(ST_StartPoint(s.geom)), ST_Y(ST_StartPoint(s.geom)), b.z0),
                           ST_MakePoint(ST_X(ST_EndPoint(s.geom)), ST_Y(ST_EndPoint(s.geom)), b.z0),
                           ST_MakePoint(ST_X(ST_EndPoint(s.geom)), ST_Y(ST_EndPoint(s.geom)), b.z1),
                           ST_MakePoint(ST_X(ST_StartPoint(s.geom)), ST_Y(ST_StartPoint(s.geom)), b.z1),
                           ST_MakePoint(ST_X(ST_StartPoint(s.geom)), ST_Y(ST_StartPoint(s.geom)), b.z0)])),
                           ST_SRID(b.footprint))
                  FROM b, ST_DumpSegments(b.footprint) s)
            SELECT building_code AS id, ST_Transform(ST_Collect(face), 4978)::geometry(MultiPolygonZ, 4978) AS geom
              FROM faces GROUP BY building_code
            """
        ).format(name),
        {"n": float(height_offset_m)},
    )
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
    return int(row[0]) if row else 0


def drop_table(conn: psycopg.Connection, table: str) -> None:
    """Drop a table made by `create_lod1_solids_table`."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", table):
        raise ValueError(f"{table!r} is not a plain table name")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
