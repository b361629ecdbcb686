"""SQL of the OpenStreetMap load: the walkable road network (``roads`` + ``road_vertices``) and ``pois``.

Everything runs inside the caller's transaction. Rows are COPYed into temporary stage tables (dropped at commit
or rollback), located in the grid hierarchy, then upserted; rows whose content did not change are skipped, so
loading the same extract twice changes nothing. Rows of the same source file that the new load no longer has
are deleted (a newer extract of the same name replaces the older one).

Outside the grids (OSM extracts always spill over the edges of the area a city manages): a POI or a road
vertex is outside when no grid contains its point; a road edge is outside when no grid contains its midpoint
or one of its end vertices is outside. Such rows are dropped from the stage and reported, never an error.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd
import psycopg
from psycopg import sql

from cim.store.staging import stage_table

VERTEX_STAGE = "osm_stage_road_vertices"
ROAD_STAGE = "osm_stage_roads"
POI_STAGE = "osm_stage_pois"

UNIT_COLUMNS = [("district_code", "text"), ("street_code", "text"), ("community_code", "text"), ("grid_code", "text")]

STAGES: dict[str, list[tuple[str, str]]] = {
    VERTEX_STAGE: [("id", "bigint"), ("geom", "geometry"), ("source_file", "text")],
    ROAD_STAGE: [
        ("id", "bigint"),
        ("osm_way_id", "bigint"),
        ("seq", "integer"),
        ("source", "bigint"),
        ("target", "bigint"),
        ("highway", "text"),
        ("name", "text"),
        ("length_m", "float8"),
        ("cost", "float8"),
        ("reverse_cost", "float8"),
        ("oneway_car", "smallint"),
        ("oneway_foot", "smallint"),
        ("geom", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
        ("source_id", "text"),
    ],
    POI_STAGE: [
        ("osm_id", "text"),
        ("kind", "text"),
        ("name", "text"),
        ("geom", "geometry"),
        ("attributes", "jsonb"),
        ("source_file", "text"),
    ],
}
"""Columns the ingest step provides per stage (geometries as hex EWKB in the storage SRID)."""


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass
class NetworkResult:
    """What merging the road network did; ``skipped_edges`` lists (edge id, reason) of edges outside."""

    edges: UpsertCounts = field(default_factory=UpsertCounts)
    vertices: UpsertCounts = field(default_factory=UpsertCounts)
    skipped_edges: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class PoiResult:
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def grid_count(conn: psycopg.Connection) -> int:
    """How many grids the database has (OSM features are placed into grids, so there must be some)."""
    row = conn.execute("SELECT count(*) FROM admin_units WHERE level = 'grid'").fetchone()
    return int(row[0]) if row else 0


def drop_outside_grids(conn: psycopg.Connection, layer: str, geom_column: str) -> list[int]:
    """Remove rows of the layer's stage (``cim.store.staging``) whose interior point lies in no grid, the
    criterion the merge uses; returns their ``row_no``. ``geom_column`` is a stage column name."""
    rows = conn.execute(
        sql.SQL(
            """
            DELETE FROM {stage} s
             WHERE NOT EXISTS (SELECT 1 FROM admin_units a
                                WHERE a.level = 'grid' AND ST_Intersects(a.geom, ST_PointOnSurface(s.{g})))
            RETURNING row_no
            """
        ).format(stage=stage_table(layer), g=sql.Identifier(geom_column))
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def create_osm_stages(conn: psycopg.Connection) -> None:
    """The temporary stage tables of the road network and POIs (dropped at the end of the transaction)."""
    for name, columns in STAGES.items():
        cols = [*columns, *UNIT_COLUMNS]
        if name == POI_STAGE:
            cols = [("row_no", "integer"), *cols, ("building_code", "text")]
        defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in cols)
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(sql.Identifier(name), defs))


def copy_stage(conn: psycopg.Connection, stage: str, frame: pd.DataFrame) -> int:
    """COPY ``frame`` (the stage's columns from ``STAGES``; ``row_no`` too for POIs) into a stage table."""
    names = [c for c, _ in STAGES[stage]]
    if stage == POI_STAGE:
        names = ["row_no", *names]
    buf = io.StringIO()
    frame[names].to_csv(buf, header=False, index=False, na_rep="")
    data = buf.getvalue().encode("utf-8")
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.Identifier(stage), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for start in range(0, len(data), 1 << 20):
            copy.write(data[start : start + (1 << 20)])
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(stage)))
    return len(frame)


def _locate(conn: psycopg.Connection, stage: str, point: str) -> None:
    """Fill the unit codes of a stage from the grid containing ``point`` (an SQL expression of this module)."""
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} s SET grid_code = (
                SELECT a.code FROM admin_units a
                 WHERE a.level = 'grid' AND ST_Intersects(a.geom, {point})
                 ORDER BY a.code LIMIT 1)
            """
        ).format(stage=sql.Identifier(stage), point=sql.SQL(point))
    )
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} SET district_code = left(grid_code, 6), street_code = left(grid_code, 9),
                               community_code = left(grid_code, 12)
             WHERE grid_code IS NOT NULL
            """
        ).format(stage=sql.Identifier(stage))
    )


def _upsert(conn: psycopg.Connection, table: str, stage: str, key: str, columns: list[str]) -> UpsertCounts:
    """INSERT … ON CONFLICT DO UPDATE from a stage (table, stage, key and columns are constants of this
    module); rows whose content is unchanged are skipped and keep their ``updated_at``."""
    staged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(stage))).fetchone()
    updates = [c for c in columns if c != key]

    def value(prefix: str, c: str) -> sql.Composable:
        ref = sql.SQL("{}.{}").format(sql.SQL(prefix), sql.Identifier(c))
        return sql.SQL("ST_AsEWKB({})").format(ref) if c == "geom" else ref

    rows = conn.execute(
        sql.SQL(
            """
            INSERT INTO {table} AS t ({cols})
            SELECT {cols} FROM {stage} ORDER BY {key}
            ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = now()
             WHERE ({old}) IS DISTINCT FROM ({new})
            RETURNING (xmax = 0)
            """
        ).format(
            table=sql.Identifier(table),
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            stage=sql.Identifier(stage),
            key=sql.Identifier(key),
            sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates),
            old=sql.SQL(", ").join(value("t", c) for c in updates),
            new=sql.SQL(", ").join(value("EXCLUDED", c) for c in updates),
        )
    ).fetchall()
    inserted = sum(1 for r in rows if r[0])
    return UpsertCounts(inserted, len(rows) - inserted, (int(staged[0]) if staged else 0) - len(rows))


_UNITS = ["district_code", "street_code", "community_code", "grid_code"]


def merge_road_network(conn: psycopg.Connection, source_file: str) -> NetworkResult:
    """Locate, upsert and prune the staged road network of ``source_file`` (see the module docstring)."""
    res = NetworkResult()
    _locate(conn, VERTEX_STAGE, "s.geom")
    _locate(conn, ROAD_STAGE, "ST_LineInterpolatePoint(s.geom, 0.5)")
    rows = conn.execute(
        sql.SQL(
            """
            DELETE FROM {roads} r
             WHERE r.grid_code IS NULL
                OR r.source IN (SELECT id FROM {vertices} WHERE grid_code IS NULL)
                OR r.target IN (SELECT id FROM {vertices} WHERE grid_code IS NULL)
            RETURNING r.id, r.grid_code IS NULL
            """
        ).format(roads=sql.Identifier(ROAD_STAGE), vertices=sql.Identifier(VERTEX_STAGE))
    ).fetchall()
    res.skipped_edges = sorted(
        (int(r[0]), "midpoint outside every grid" if r[1] else "an end lies outside every grid") for r in rows
    )
    # Vertices of skipped edges only (and vertices outside) are not part of the loaded network.
    conn.execute(
        sql.SQL(
            "DELETE FROM {vertices} WHERE id NOT IN (SELECT source FROM {roads} UNION SELECT target FROM {roads})"
        ).format(roads=sql.Identifier(ROAD_STAGE), vertices=sql.Identifier(VERTEX_STAGE))
    )
    res.vertices = _upsert(conn, "road_vertices", VERTEX_STAGE, "id", ["id", "geom", "source_file", *_UNITS])
    res.edges = _upsert(
        conn,
        "roads",
        ROAD_STAGE,
        "id",
        [c for c, _ in STAGES[ROAD_STAGE]] + _UNITS,
    )
    deleted = conn.execute(
        sql.SQL("DELETE FROM roads WHERE source_file = %s AND id NOT IN (SELECT id FROM {roads})").format(
            roads=sql.Identifier(ROAD_STAGE)
        ),
        (source_file,),
    )
    res.edges.deleted = deleted.rowcount
    deleted = conn.execute(
        """
        DELETE FROM road_vertices v
         WHERE v.source_file = %s
           AND NOT EXISTS (SELECT 1 FROM roads r WHERE r.source = v.id)
           AND NOT EXISTS (SELECT 1 FROM roads r WHERE r.target = v.id)
        """,
        (source_file,),
    )
    res.vertices.deleted = deleted.rowcount
    return res


def merge_pois(conn: psycopg.Connection, source_file: str) -> PoiResult:
    """Locate the staged POIs (grid, containing building), upsert them and delete this file's stale ones."""
    res = PoiResult()
    _locate(conn, POI_STAGE, "s.geom")
    rows = conn.execute(
        sql.SQL("DELETE FROM {pois} WHERE grid_code IS NULL RETURNING osm_id").format(pois=sql.Identifier(POI_STAGE))
    ).fetchall()
    res.skipped = sorted((str(r[0]), "lies outside every grid") for r in rows)
    conn.execute(
        sql.SQL(
            """
            UPDATE {pois} s SET building_code = (
                SELECT b.building_code FROM buildings b WHERE ST_Intersects(b.footprint, s.geom)
                 ORDER BY b.building_code LIMIT 1)
            """
        ).format(pois=sql.Identifier(POI_STAGE))
    )
    columns = [c for c, _ in STAGES[POI_STAGE]] + ["building_code", *_UNITS]
    res.counts = _upsert(conn, "pois", POI_STAGE, "osm_id", columns)
    deleted = conn.execute(
        sql.SQL("DELETE FROM pois WHERE source_file = %s AND osm_id NOT IN (SELECT osm_id FROM {pois})").format(
            pois=sql.Identifier(POI_STAGE)
        ),
        (source_file,),
    )
    res.counts.deleted = deleted.rowcount
    return res


def network_summary(conn: psycopg.Connection) -> dict[str, float]:
    """Size of the loaded road network: edges, vertices, total length (m), and POIs."""
    row = conn.execute(
        """
        SELECT (SELECT count(*) FROM roads), (SELECT count(*) FROM road_vertices),
               (SELECT coalesce(sum(length_m), 0) FROM roads), (SELECT count(*) FROM pois)
        """
    ).fetchone()
    assert row is not None
    return {"edges": int(row[0]), "vertices": int(row[1]), "length_m": float(row[2]), "pois": int(row[3])}
