"""BIM models in the store: models, storeys and elements of an ingested IFC file (all SQL for BIM).

Everything runs inside the caller's transaction. The building itself goes through the ordinary buildings
stage and ``merge_buildings`` (codes, grid and parcel links, history); this module only adds what is BIM.
Upserts skip rows whose content did not change, so re-ingesting the same file changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from cim.store.staging import stage_table

ELEMENT_STAGE = sql.Identifier("stage_bim_elements")


@dataclass
class ElementCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class StoreyRow:
    ifc_guid: str
    name: str | None
    elevation_m: float
    ordinal: int


def model_building(conn: psycopg.Connection, model_guid: str) -> tuple[str, str] | None:
    """(building code, source file) of an earlier ingest of this model (None for a new model)."""
    row = conn.execute(
        "SELECT building_code, source_file FROM bim_models WHERE model_guid = %s", (model_guid,)
    ).fetchone()
    return (str(row[0]), str(row[1])) if row else None


def grid_containing(conn: psycopg.Connection, footprint_ewkb: bytes) -> str | None:
    """The grid containing the footprint's interior point (the rule ``merge_buildings`` applies)."""
    row = conn.execute(
        """
        SELECT a.code FROM admin_units a
         WHERE a.level = 'grid' AND ST_Intersects(a.geom, ST_PointOnSurface(ST_GeomFromEWKB(%s)))
         ORDER BY a.code LIMIT 1
        """,
        (footprint_ewkb,),
    ).fetchone()
    return str(row[0]) if row else None


def building_use_and_name(conn: psycopg.Connection, building_code: str) -> tuple[str, str | None] | None:
    """(use, name) of an existing building, None when there is no such building."""
    row = conn.execute("SELECT use, name FROM buildings WHERE building_code = %s", (building_code,)).fetchone()
    return (str(row[0]), row[1]) if row else None


def staged_building_code(conn: psycopg.Connection) -> str:
    """The code ``merge_buildings`` gave the one staged building row."""
    row = conn.execute(sql.SQL("SELECT building_code FROM {}").format(stage_table("buildings"))).fetchone()
    if row is None or row[0] is None:
        raise LookupError("the building stage holds no coded row")
    return str(row[0])


def upsert_model(
    conn: psycopg.Connection,
    *,
    model_guid: str,
    building_code: str,
    source_file: str,
    sha256: str,
    ifc_schema: str,
    georeference: dict[str, Any],
    element_count: int,
    meshless_count: int,
    storey_count: int,
) -> str:
    """Insert or update the model row; returns 'inserted', 'updated' or 'unchanged'."""
    row = conn.execute(
        """
        INSERT INTO bim_models AS t (model_guid, building_code, source_file, source_sha256, ifc_schema, georeference,
                                     element_count, meshless_count, storey_count)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (model_guid) DO UPDATE SET
            building_code = EXCLUDED.building_code, source_file = EXCLUDED.source_file,
            source_sha256 = EXCLUDED.source_sha256, ifc_schema = EXCLUDED.ifc_schema,
            georeference = EXCLUDED.georeference, element_count = EXCLUDED.element_count,
            meshless_count = EXCLUDED.meshless_count, storey_count = EXCLUDED.storey_count, updated_at = now()
         WHERE (t.building_code, t.source_file, t.source_sha256, t.ifc_schema, t.georeference, t.element_count,
                t.meshless_count, t.storey_count)
               IS DISTINCT FROM
               (EXCLUDED.building_code, EXCLUDED.source_file, EXCLUDED.source_sha256, EXCLUDED.ifc_schema,
                EXCLUDED.georeference, EXCLUDED.element_count, EXCLUDED.meshless_count, EXCLUDED.storey_count)
        RETURNING (xmax = 0)
        """,
        (
            model_guid,
            building_code,
            source_file,
            sha256,
            ifc_schema,
            Jsonb(georeference),
            element_count,
            meshless_count,
            storey_count,
        ),
    ).fetchone()
    if row is None:
        return "unchanged"
    return "inserted" if row[0] else "updated"


def drop_building_made_by(conn: psycopg.Connection, building_code: str, model_guid: str) -> bool:
    """Delete the building an earlier ingest of this model created, once the model has moved elsewhere.

    Only a building this model made (height_source 'bim', source_id the model GUID) and no other model uses
    is deleted; the history trigger keeps it as 'demolished'. Returns whether it was deleted."""
    row = conn.execute(
        """
        DELETE FROM buildings b
         WHERE b.building_code = %s AND b.height_source = 'bim' AND b.source_id = %s
           AND NOT EXISTS (SELECT 1 FROM bim_models m WHERE m.building_code = b.building_code)
        RETURNING 1
        """,
        (building_code, model_guid),
    ).fetchone()
    return row is not None


# ---------------------------------------------------------------------------------------------------------
# Elements

ELEMENT_STAGE_COLUMNS = (
    ("ifc_guid", "text"),
    ("ifc_class", "text"),
    ("name", "text"),
    ("storey", "text"),
    ("storey_elevation_m", "float8"),
    ("properties", "jsonb"),
    ("quantities", "jsonb"),
    ("mesh", "bytea"),
)


def stage_elements(conn: psycopg.Connection, rows: Iterable[Sequence[Any]]) -> int:
    """COPY element rows (``ELEMENT_STAGE_COLUMNS`` order; JSON as text, mesh as ISO WKB bytes or None)
    into a temporary stage table dropped at commit."""
    defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(typ)) for name, typ in ELEMENT_STAGE_COLUMNS
    )
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(ELEMENT_STAGE, defs))
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in ELEMENT_STAGE_COLUMNS)
    n = 0
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(ELEMENT_STAGE, names)) as copy:
        # JSON arrives as text (already serialised); the server parses it into the jsonb columns.
        copy.set_types(["text" if typ == "jsonb" else typ for _, typ in ELEMENT_STAGE_COLUMNS])
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def elements_of_other_models(conn: psycopg.Connection, model_guid: str, limit: int = 3) -> list[tuple[str, str, str]]:
    """Staged GUIDs already stored for another model: (ifc_guid, building_code, model_guid or '?')."""
    rows = conn.execute(
        sql.SQL(
            """
            SELECT s.ifc_guid, e.building_code, coalesce(e.model_guid, '?') FROM {stage} s
              JOIN bim_elements e ON e.ifc_guid = s.ifc_guid
             WHERE e.model_guid IS DISTINCT FROM %s
             ORDER BY s.ifc_guid LIMIT %s
            """
        ).format(stage=ELEMENT_STAGE),
        (model_guid, limit),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def merge_elements(
    conn: psycopg.Connection, *, model_guid: str, building_code: str, source_file: str, srid: int
) -> ElementCounts:
    """Upsert the staged elements of a model and delete its elements missing from the stage."""
    rows = conn.execute(
        sql.SQL(
            """
            INSERT INTO bim_elements AS t (ifc_guid, building_code, ifc_class, name, storey, storey_elevation_m,
                                           properties, quantities, mesh, source_file, model_guid)
            SELECT s.ifc_guid, %(building)s, s.ifc_class, s.name, s.storey, s.storey_elevation_m, s.properties,
                   s.quantities, ST_GeomFromWKB(s.mesh, %(srid)s), %(file)s, %(model)s
              FROM {stage} s ORDER BY s.ifc_guid
            ON CONFLICT (ifc_guid) DO UPDATE SET
                building_code = EXCLUDED.building_code, ifc_class = EXCLUDED.ifc_class, name = EXCLUDED.name,
                storey = EXCLUDED.storey, storey_elevation_m = EXCLUDED.storey_elevation_m,
                properties = EXCLUDED.properties, quantities = EXCLUDED.quantities, mesh = EXCLUDED.mesh,
                source_file = EXCLUDED.source_file, model_guid = EXCLUDED.model_guid, updated_at = now()
             WHERE (t.building_code, t.ifc_class, t.name, t.storey, t.storey_elevation_m, t.properties,
                    t.quantities, ST_AsEWKB(t.mesh), t.source_file, t.model_guid)
                   IS DISTINCT FROM
                   (EXCLUDED.building_code, EXCLUDED.ifc_class, EXCLUDED.name, EXCLUDED.storey,
                    EXCLUDED.storey_elevation_m, EXCLUDED.properties, EXCLUDED.quantities, ST_AsEWKB(EXCLUDED.mesh),
                    EXCLUDED.source_file, EXCLUDED.model_guid)
            RETURNING (xmax = 0)
            """
        ).format(stage=ELEMENT_STAGE),
        {"building": building_code, "srid": srid, "file": source_file, "model": model_guid},
    ).fetchall()
    staged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ELEMENT_STAGE)).fetchone()
    deleted = conn.execute(
        sql.SQL(
            """
            DELETE FROM bim_elements e
             WHERE e.model_guid = %s AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.ifc_guid = e.ifc_guid)
            """
        ).format(stage=ELEMENT_STAGE),
        (model_guid,),
    )
    counts = ElementCounts(inserted=sum(1 for r in rows if r[0]), deleted=deleted.rowcount)
    counts.updated = len(rows) - counts.inserted
    counts.unchanged = (int(staged[0]) if staged else 0) - len(rows)
    return counts


def merge_storeys(
    conn: psycopg.Connection, *, model_guid: str, building_code: str, storeys: Sequence[StoreyRow]
) -> ElementCounts:
    """Upsert a model's storeys and delete its storeys missing from ``storeys``."""
    rows = conn.execute(
        """
        INSERT INTO bim_storeys AS t (model_guid, ifc_guid, building_code, name, elevation_m, ordinal)
        SELECT %s, g, %s, n, e, o FROM unnest(%s::text[], %s::text[], %s::float8[], %s::int[]) AS u(g, n, e, o)
        ON CONFLICT (model_guid, ifc_guid) DO UPDATE SET
            building_code = EXCLUDED.building_code, name = EXCLUDED.name, elevation_m = EXCLUDED.elevation_m,
            ordinal = EXCLUDED.ordinal
         WHERE (t.building_code, t.name, t.elevation_m, t.ordinal)
               IS DISTINCT FROM (EXCLUDED.building_code, EXCLUDED.name, EXCLUDED.elevation_m, EXCLUDED.ordinal)
        RETURNING (xmax = 0)
        """,
        (
            model_guid,
            building_code,
            [s.ifc_guid for s in storeys],
            [s.name for s in storeys],
            [s.elevation_m for s in storeys],
            [s.ordinal for s in storeys],
        ),
    ).fetchall()
    deleted = conn.execute(
        "DELETE FROM bim_storeys WHERE model_guid = %s AND NOT (ifc_guid = ANY(%s::text[]))",
        (model_guid, [s.ifc_guid for s in storeys]),
    )
    counts = ElementCounts(inserted=sum(1 for r in rows if r[0]), deleted=deleted.rowcount)
    counts.updated = len(rows) - counts.inserted
    counts.unchanged = len(storeys) - len(rows)
    return counts
