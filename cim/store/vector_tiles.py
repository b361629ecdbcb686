"""Mapbox Vector Tiles (MVT) of the city layers, rendered by PostGIS (``ST_AsMVTGeom`` / ``ST_AsMVT``).

Decisions recorded here:
- **Layers and fields are a whitelist** (`TILE_LAYERS`) derived from the OGC collections
  (`cim.store.collections`, the one list of what the API serves: table, row filter, properties as SQL
  written there, never user text): every property but JSON ``attributes`` and bulky free text
  (`NOT_IN_TILES`), plus a minimum zoom per layer (`TILE_MINZOOM`). A request picks a subset by name.
- **Index-friendly**: the tile envelope (WebMercatorQuad, EPSG:3857, grown by the clip buffer) is densified
  and transformed to the storage CRS once, as a constant, and rows are filtered with ``&&`` on the stored
  geometry, so the GiST index is used and no stored geometry is transformed before it is known to be needed.
  The search rectangle is first cut to the layer's extent (computed by the caller, `layer_extent`), so a
  low-zoom tile never asks PROJ to transform a world-sized rectangle into a local Gauss-Krüger zone.
- **Consistent version**: a tile is rendered in the same statement that reads the table's change counter
  (``data_versions``), so a cache keyed by that counter never files a tile under a version it does not show.
- **JIT off** for tile statements: LLVM compilation cost 80 ms of a 360 ms tile of 5k buildings, and a tile
  statement never runs often enough on one plan to pay it back.
- Timestamps and dates are ISO 8601 text (MVT has no time type); feature ids are set where the key is an
  integer (building and unit codes, road ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from cim.store.collections import COLLECTIONS, Collection, Prop

MVT_EXTENT = 4096
MVT_BUFFER = 64  # in tile units, as ST_AsMVTGeom's default: lines and polygons reach past the edge, no seams
MAX_ZOOM = 22  # deepest tiles rendered; clients overzoom beyond


@dataclass(frozen=True)
class TileField:
    """One attribute a tile may carry: its name, the SQL expression over the layer's row ``t`` (from the
    collection's definition, never user text), and its TileJSON type (``String``, ``Number``, ``Boolean``)."""

    name: str
    expr: str
    kind: str = "String"


@dataclass(frozen=True)
class TileLayer:
    """A collection served as vector tiles."""

    name: str
    table: str
    geom: str
    fields: tuple[TileField, ...]
    minzoom: int
    description: str
    where: str = "TRUE"
    """A fixed row filter from the collection's definition (e.g. the admin level)."""
    feature_id: str | None = None
    """SQL giving a bigint feature id, or None."""
    field_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_names", tuple(f.name for f in self.fields))

    def select_fields(self, names: tuple[str, ...]) -> tuple[TileField, ...]:
        """The fields named, in whitelist order. Raises KeyError naming the first unknown one."""
        for n in names:
            if n not in self.field_names:
                raise KeyError(n)
        wanted = set(names)
        return tuple(f for f in self.fields if f.name in wanted)


TILE_MINZOOM: dict[str, int] = {
    "districts": 6,
    "streets": 8,
    "communities": 10,
    "grids": 12,
    "parcels": 12,
    "roads": 12,
    "buildings": 13,
    "pipes": 13,
    "devices": 13,
    "events": 13,
    "pois": 13,
    "pipe_nodes": 14,
}
"""The collections served as vector tiles and the lowest zoom each is drawn at: a tile carries every feature
it touches, so lower zooms would put a whole district's buildings into one tile."""

NUMERIC_CODE_IDS = frozenset({"districts", "streets", "communities", "grids", "buildings"})
"""Collections whose text codes are all digits (unit and building codes ≤ 19 digits): MVT feature ids."""

NOT_IN_TILES = frozenset({"description"})
"""Properties the feature API serves but tiles leave out (bulky free text); JSON ``attributes`` neither."""

_MVT_KIND = {"number": "Number", "integer": "Number", "boolean": "Boolean"}


def _tile_field(prop: Prop) -> TileField:
    """The MVT attribute of an OGC property: dates and timestamps as ISO 8601 text (UTC), MVT having no time type."""
    expr = prop.sql
    if prop.type == "date":
        expr = f"({expr})::text"
    elif prop.type == "date-time":
        expr = f"""to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
    return TileField(prop.name, expr, _MVT_KIND.get(prop.type, "String"))


def _tile_layer(c: Collection) -> TileLayer:
    """The tile view of an OGC collection (`cim.store.collections`, the one list of what is served)."""
    if c.geometry_join is not None:
        raise ValueError(f"{c.id}: collections without a geometry of their own are not tiled")
    feature_id = None
    if c.id_type == "integer":
        feature_id = c.id_sql
    elif c.id in NUMERIC_CODE_IDS:
        feature_id = f"{c.id_sql}::bigint"
    return TileLayer(
        name=c.id,
        table=c.table,
        geom=c.geometry_column,
        where=f"t.level = '{c.level}'" if c.level else "TRUE",
        feature_id=feature_id,
        minzoom=TILE_MINZOOM[c.id],
        description=c.title,
        fields=tuple(_tile_field(p) for p in c.properties if p.type != "object" and p.name not in NOT_IN_TILES),
    )


TILE_LAYERS: dict[str, TileLayer] = {cid: _tile_layer(COLLECTIONS[cid]) for cid in TILE_MINZOOM if cid in COLLECTIONS}
"""Every collection served as vector tiles, by name."""


@dataclass(frozen=True)
class LayerExtent:
    """A layer's extent in EPSG:3857 and in longitude/latitude (degrees), and the table's change counter it
    was read at; ``None`` boxes when the layer has no rows."""

    mercator: tuple[float, float, float, float] | None
    lonlat: tuple[float, float, float, float] | None
    version: int


def storage_srid(conn: psycopg.Connection) -> int:
    """The database's storage SRID (fixed at the first migration)."""
    row = conn.execute("SELECT value::int FROM cim_settings WHERE key = 'storage_srid'").fetchone()
    if row is None:
        raise RuntimeError("the database has no storage SRID: it was never migrated")
    return int(row[0])


def layer_extent(conn: psycopg.Connection, layer: TileLayer, srid: int) -> LayerExtent:
    """The bounding box of ``layer``'s rows in EPSG:3857 and EPSG:4326, with the change counter read in the
    same statement. Corners are transformed from the densified storage-CRS box, so the boxes contain
    every feature."""
    query = sql.SQL(
        """
        WITH e AS (SELECT ST_Segmentize(ST_SetSRID(ST_Extent(t.{geom})::geometry, %(srid)s), 50) AS box
                     FROM {table} t WHERE {where})
        SELECT (SELECT version FROM data_versions WHERE table_name = %(table)s),
               ST_XMin(m), ST_YMin(m), ST_XMax(m), ST_YMax(m), ST_XMin(g), ST_YMin(g), ST_XMax(g), ST_YMax(g)
          FROM e, LATERAL (SELECT ST_Transform(e.box, 3857) AS m, ST_Transform(e.box, 4326) AS g) b
        """
    ).format(geom=sql.Identifier(layer.geom), table=sql.Identifier(layer.table), where=sql.SQL(layer.where))
    row = conn.execute(query, {"table": layer.table, "srid": srid}).fetchone()
    assert row is not None
    version = int(row[0] or 0)
    if row[1] is None:
        return LayerExtent(None, None, version)
    m = (float(row[1]), float(row[2]), float(row[3]), float(row[4]))
    g = (float(row[5]), float(row[6]), float(row[7]), float(row[8]))
    return LayerExtent(m, g, version)


def _tile_query(layer: TileLayer, fields: tuple[TileField, ...]) -> sql.Composed:
    columns = [sql.SQL("ST_AsMVTGeom(ST_Transform(t.{}, 3857), ST_TileEnvelope(%(z)s, %(x)s, %(y)s), "
                       "%(extent)s, %(buffer)s, true) AS mvt_geom").format(sql.Identifier(layer.geom))]  # fmt: skip
    if layer.feature_id is not None:
        columns.append(sql.SQL("{} AS mvt_id").format(sql.SQL(layer.feature_id)))
    columns += [sql.SQL("{} AS {}").format(sql.SQL(f.expr), sql.Identifier(f.name)) for f in fields]
    return sql.SQL(
        """
        SELECT (SELECT version FROM data_versions WHERE table_name = %(table)s),
               (SELECT ST_AsMVT(q, %(layer)s, %(extent)s, 'mvt_geom'{fid})
                  FROM (SELECT {columns}
                          FROM {table} t
                         WHERE t.{geom} && ST_Transform(ST_Segmentize(
                                   ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, 3857), %(step)s), %(srid)s)
                           AND {where}) q
                 WHERE q.mvt_geom IS NOT NULL)
        """
    ).format(
        fid=sql.SQL(", 'mvt_id'") if layer.feature_id is not None else sql.SQL(""),
        columns=sql.SQL(", ").join(columns),
        table=sql.Identifier(layer.table),
        geom=sql.Identifier(layer.geom),
        where=sql.SQL(layer.where),
    )


def render_mvt(
    conn: psycopg.Connection,
    layer: TileLayer,
    z: int,
    x: int,
    y: int,
    fields: tuple[TileField, ...],
    search_box: tuple[float, float, float, float],
    srid: int,
) -> tuple[bytes, int]:
    """One MVT tile of ``layer`` (a single layer named after it) and the table's change counter read in the
    same statement. ``search_box`` (EPSG:3857) is where features are looked up: the tile grown by the clip
    buffer, cut to the layer's extent. Empty tile → ``b""``. Runs inside the caller's transaction, with JIT
    off for it (``SET LOCAL``)."""
    x0, y0, x1, y1 = search_box
    params = {
        "table": layer.table,
        "layer": layer.name,
        "z": z,
        "x": x,
        "y": y,
        "extent": MVT_EXTENT,
        "buffer": MVT_BUFFER,
        "x0": x0,
        "y0": y0,
        "x1": x1,
        "y1": y1,
        "step": max(x1 - x0, y1 - y0, 1.0) / 16,
        "srid": srid,
    }
    with conn.pipeline():  # one round trip for both statements
        conn.execute("SET LOCAL jit = off")
        cur = conn.execute(_tile_query(layer, fields), params, prepare=True)
    row = cur.fetchone()
    assert row is not None
    return (bytes(row[1]) if row[1] is not None else b""), int(row[0] or 0)


def raw_tile_sql(layer: TileLayer, fields: tuple[TileField, ...]) -> sql.Composed:
    """The statement `render_mvt` runs (for the benchmark to time the same query straight through psycopg)."""
    return _tile_query(layer, fields)
