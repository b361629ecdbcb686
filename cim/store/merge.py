"""Merge staged rows into the city tables: locate them in the unit hierarchy, check what only the database
can check (containment, code prefixes, references), and upsert.

Each ``merge_<layer>`` runs inside the caller's transaction and returns a ``MergeResult``. Rows that fail a
check are removed from the stage and reported as ``(row_no, reason)``; the caller decides whether any reject
aborts the load (the default) or the rest goes in. Upserts skip rows whose content did not change, so
loading the same file twice leaves the same data (and building versions untouched).

Speed (100k footprints in a few seconds): rows whose content equals the stored row are filtered out by one
set-based anti-join before the upsert, so a reload writes and locks nothing. A large load into an empty or
small table (``MergeOptions.bulk_min_rows``) takes the bulk path of ``_bulk_load``: foreign keys and plain
secondary indexes are dropped, the rows inserted, the indexes rebuilt in one pass each, and the foreign keys
added back, which checks every row against its referenced table in one join instead of one query per row.
All of it is DDL inside the load's transaction: a failure or kill rolls it back with everything else. A
first load of buildings (``BuildingsFirstLoad``) COPYs the rows that pass its checks by construction
straight into the table, with no stage table in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import psycopg
from psycopg import sql

from cim.networks import connected_components
from cim.store.staging import STAGE_COLUMNS, copy_into_stage, copy_into_table, stage_table

if TYPE_CHECKING:  # not imported at run time: merges of one IFC building do without pandas
    import pandas as pd


@dataclass
class MergeResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    """Rows removed because a survey no longer has them (demolished buildings)."""
    rejects: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    """Loaded anyway, but worth a look (row 0: about the layer as a whole)."""


@dataclass(frozen=True)
class MergeOptions:
    """How a merge treats its rows. ``snap_m``: pipe ends within this distance of their node are moved onto
    it (further is an error). ``survey_date``/``survey_extent_wkb``: see ``merge_buildings``."""

    snap_m: float = 0.5
    survey_date: str | None = None
    survey_extent_wkb: str | None = None
    bulk_min_rows: int = 10_000
    """A load that inserts at least this many rows, and more than the table already has, takes the bulk
    path (see the module docstring). It locks the table and the tables it references (ACCESS EXCLUSIVE)
    until commit, which only a first or near-first load can afford; smaller loads keep row-level locks."""

    def __post_init__(self) -> None:
        # snap_m is written into SQL text as a float literal: only finite, sane values pass.
        if not (0.0 <= float(self.snap_m) <= 100.0):
            raise ValueError(f"snap tolerance {self.snap_m} m must be between 0 and 100 m")


def _reject(conn: psycopg.Connection, layer: str, query: str) -> list[tuple[int, str]]:
    """Run a check returning (row_no, reason) rows, and drop those rows from the stage.

    ``query`` is SQL written in this module (never user text) with ``{stage}`` for the stage table; it takes
    no parameters, so ``%`` in ``format()`` patterns is passed through as is."""
    rows = conn.execute(sql.SQL(query).format(stage=stage_table(layer))).fetchall()
    if rows:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE row_no = ANY(%s)").format(stage_table(layer)),
            ([r[0] for r in rows],),
        )
    return [(int(r[0]), str(r[1])) for r in rows]


def _duplicates(conn: psycopg.Connection, layer: str, key: str) -> list[tuple[int, str]]:
    # ``key`` is a column name constant of this module. A hash aggregate finds the duplicated keys (cheap
    # when there are none, the usual case); only their rows are then reported.
    return _reject(
        conn,
        layer,
        f"""
        SELECT s.row_no, format('duplicate {key} %s (first at feature %s)', s.{key}, d.first_row)
          FROM {{stage}} s
          JOIN (SELECT {key}, min(row_no) AS first_row FROM {{stage}} WHERE {key} IS NOT NULL
                 GROUP BY {key} HAVING count(*) > 1) d ON d.{key} = s.{key}
         WHERE s.row_no <> d.first_row
        """,
    )


def _locate(conn: psycopg.Connection, layer: str, geom: str = "geom", parcels: bool = True) -> list[tuple[int, str]]:
    """Unit codes from the grid code; rows the load step could not place in bulk (``cim.locate``) are placed
    here, one subquery per row, by the same rule; rows in no grid are rejected. Rows the load step placed
    come with their district, street and community codes (rewriting every stage row here costs a second
    per 100k footprints)."""
    stage = stage_table(layer)
    g = sql.Identifier(geom)
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} s SET grid_code = (
                SELECT a.code FROM admin_units a
                 WHERE a.level = 'grid' AND ST_Intersects(a.geom, ST_PointOnSurface(s.{g}))
                 ORDER BY a.code LIMIT 1),
                parcel_code = CASE WHEN {parcels} THEN (
                    SELECT p.code FROM parcels p WHERE ST_Intersects(p.geom, ST_PointOnSurface(s.{g}))
                     ORDER BY p.code LIMIT 1) END
             WHERE s.grid_code IS NULL
            """
        ).format(stage=stage, g=g, parcels=sql.Literal(parcels))
    )
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} SET district_code = left(grid_code, 6), street_code = left(grid_code, 9),
                               community_code = left(grid_code, 12)
             WHERE grid_code IS NOT NULL AND district_code IS NULL
            """
        ).format(stage=stage)
    )
    return _reject(
        conn,
        layer,
        """
        SELECT row_no, format('lies outside every administrative grid (interior point %s)',
                              ST_AsText(ST_PointOnSurface(s.geom_), 1))
          FROM (SELECT row_no, grid_code, {g} AS geom_ FROM {stage}) s WHERE grid_code IS NULL
        """.replace("{g}", geom),
    )


def _upsert(
    conn: psycopg.Connection,
    layer: str,
    table: str,
    key: str,
    columns: list[tuple[str, str]],
    touch: bool = True,
    unchanged_when_same: list[str] | None = None,
    bulk_min_rows: int | None = None,
) -> tuple[int, int, int]:
    """INSERT … ON CONFLICT DO UPDATE of ``columns`` (target name, stage expression); unchanged rows are
    skipped. Returns (inserted, updated, unchanged).

    Rows whose ``unchanged_when_same`` columns (default: every column but the key) equal the stored row's are
    left out before the upsert by one anti-join: the upsert would skip them anyway, but only after locking
    each one. ``bulk_min_rows``: see ``MergeOptions``; None never takes the bulk path."""
    stage = stage_table(layer)
    staged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage)).fetchone()
    n_staged = int(staged[0]) if staged else 0
    names = [c for c, _ in columns]
    target = sql.Identifier(table)
    updates = [c for c in names if c != key]
    same = unchanged_when_same or updates

    def value(alias: str, column: str) -> sql.Composable:
        ident = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column))
        return sql.SQL("ST_AsEWKB({})").format(ident) if column in ("geom", "footprint") else ident

    q = sql.SQL(
        """
        WITH written AS (
            INSERT INTO {target} AS t ({cols})
            SELECT n.* FROM (SELECT {exprs} FROM {stage}) n
             WHERE NOT EXISTS (SELECT 1 FROM {target} o
                                WHERE o.{key} = n.{key} AND ({o_same}) IS NOT DISTINCT FROM ({n_same}))
             ORDER BY n.{key}
            ON CONFLICT ({key}) DO UPDATE SET {sets}{touch}
             WHERE ({old}) IS DISTINCT FROM ({new})
            RETURNING (xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FROM written
        """
    ).format(
        target=target,
        cols=sql.SQL(", ").join(map(sql.Identifier, names)),
        exprs=sql.SQL(", ").join(sql.SQL("{} AS {}").format(sql.SQL(e), sql.Identifier(c)) for c, e in columns),
        stage=stage,
        key=sql.Identifier(key),
        o_same=sql.SQL(", ").join(value("o", c) for c in same),
        n_same=sql.SQL(", ").join(value("n", c) for c in same),
        touch=sql.SQL(", updated_at = now()" if touch else ""),
        sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates),
        old=sql.SQL(", ").join(value("t", c) for c in updates),
        new=sql.SQL(", ").join(value("excluded", c) for c in updates),
    )
    keys = [(key, dict(columns)[key])]
    bulk = bulk_min_rows is not None and _takes_bulk_path(conn, layer, table, keys, bulk_min_rows)
    with _bulk_load(conn, table) if bulk else _nothing():
        row = conn.execute(q).fetchone()
    inserted, written = (int(row[0]), int(row[1])) if row else (0, 0)
    return inserted, written - inserted, n_staged - written


def _takes_bulk_path(
    conn: psycopg.Connection, layer: str, table: str, keys: list[tuple[str, str]], min_rows: int
) -> bool:
    """Whether the load inserts at least ``min_rows`` new rows and more than ``table`` holds already.
    ``keys``: (target column, stage expression) pairs of the table's unique key."""
    match = sql.SQL(" AND ").join(
        sql.SQL("t.{} = s.{}").format(sql.Identifier(column), sql.SQL(expr)) for column, expr in keys
    )
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {match})").format(
            stage=stage_table(layer), target=sql.Identifier(table), match=match
        )
    ).fetchone()
    new_rows = int(row[0]) if row else 0
    if new_rows < max(min_rows, 1):
        return False
    # Counting stops at new_rows: a large table is not scanned to the end.
    held = conn.execute(
        sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) t").format(sql.Identifier(table)), (new_rows,)
    ).fetchone()
    return (int(held[0]) if held else 0) < new_rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _bulk_load(conn: psycopg.Connection, table: str) -> Iterator[None]:
    """Inside: ``table`` without its foreign keys and its plain (non-unique) secondary indexes; after:
    with them again, exactly as defined before (their definitions are read from the catalog, so an index a
    later migration adds is handled too). Adding a foreign key back validates every row in one join, and
    fails the statement (so the load) if any row points nowhere: integrity is the same as row by row.

    The DDL takes ACCESS EXCLUSIVE locks on ``table`` and on the tables its foreign keys reference until
    the transaction ends: readers of those tables wait for the load (``MergeOptions.bulk_min_rows``)."""
    foreign_keys = conn.execute(
        """
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname
        """,
        (table,),
    ).fetchall()
    indexes = conn.execute(
        """
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.indrelid = %s::regclass AND NOT i.indisunique AND NOT i.indisprimary
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
         ORDER BY c.relname
        """,
        (table,),
    ).fetchall()
    target = sql.Identifier(table)
    for name, _ in foreign_keys:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(target, sql.Identifier(name)))
    for schema, name, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
    yield
    # The definitions are PostgreSQL's own rendering of objects that existed a moment ago, not user text.
    for _, _, definition in indexes:
        conn.execute(sql.SQL(definition))
    for name, definition in foreign_keys:
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                target,
                sql.Identifier(name),
                sql.SQL(definition),
            )
        )


def _same(names: list[str]) -> list[tuple[str, str]]:
    return [(n, n) for n in names]


UNIT_TARGETS = _same(["district_code", "street_code", "community_code", "grid_code"])
# A building's content: what its history trigger (buildings_keep_history, migration 0006) compares.
BUILDING_CONTENT = (
    *("name", "use", "height_m", "height_source", "storeys", "ground_elevation_m"),
    *("footprint", "parcel_code", "attributes"),
)


# ---------------------------------------------------------------------------------------------------------
def merge_admin(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "admin"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "code")
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT s.row_no, format('parent unit %s of %s %s is neither in the file nor in the database',
                                left(s.code, length(s.code) - CASE s.level WHEN 'grid' THEN 2 ELSE 3 END),
                                s.level, s.code)
          FROM {stage} s
         WHERE s.level <> 'district'
           AND NOT EXISTS (SELECT 1 FROM {stage} p
                            WHERE p.code = left(s.code, length(s.code) - CASE s.level WHEN 'grid' THEN 2 ELSE 3 END))
           AND NOT EXISTS (SELECT 1 FROM admin_units p
                            WHERE p.code = left(s.code, length(s.code) - CASE s.level WHEN 'grid' THEN 2 ELSE 3 END))
        """,
    )
    # A child must lie inside its parent (1% of its area may stick out, for digitising slivers).
    res.rejects += _reject(
        conn,
        layer,
        """
        WITH parents AS (
            SELECT code, geom FROM {stage}
            UNION ALL
            SELECT code, geom FROM admin_units a WHERE NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.code = a.code)
        )
        SELECT s.row_no, format('%s %s lies outside its parent %s (%s%% of its area outside)', s.level, s.code,
                                p.code,
                                round((100 * ST_Area(ST_Difference(s.geom, p.geom)) / ST_Area(s.geom))::numeric, 1))
          FROM {stage} s JOIN parents p
            ON p.code = left(s.code, length(s.code) - CASE s.level WHEN 'grid' THEN 2 ELSE 3 END)
         WHERE s.level <> 'district'
           AND ST_Area(ST_Difference(s.geom, p.geom)) > 0.01 * ST_Area(s.geom)
        """,
    )
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "admin_units",
        "code",
        [
            ("code", "code"),
            ("level", "level"),
            ("name", "name"),
            (
                "parent_code",
                "CASE level WHEN 'district' THEN NULL ELSE left(code, length(code) - "
                "CASE level WHEN 'grid' THEN 2 ELSE 3 END) END",
            ),
            ("geom", "geom"),
            ("attributes", "attributes"),
            ("source_file", "source_file"),
        ],
    )
    return res


def merge_parcels(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "parcels"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "code")
    res.rejects += _locate(conn, layer, parcels=False)
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "parcels",
        "code",
        _same(
            [
                "code",
                "name",
                "land_use",
                "far_limit",
                "height_limit_m",
                "coverage_limit",
                "approved_at",
                "geom",
                "attributes",
                "source_file",
                "source_id",
            ]
        )
        + UNIT_TARGETS,
    )
    return res


BUILDING_COLUMNS = [
    *_same(["building_code", "name", "use", "height_m", "height_source", "storeys", "ground_elevation_m"]),
    *_same(["footprint", "parcel_code", "attributes", "source_file", "source_id"]),
    ("valid_from", "coalesce(valid_from, cim_change_time())"),
]
"""Target column and stage expression of every column a building load writes."""


def merge_buildings(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "buildings"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "building_code")
    res.rejects += _locate(conn, layer, geom="footprint")
    res.rejects += _miscoded_buildings(conn, layer)
    res.rejects += _dangling_building_links(conn, layer)
    # Rows without a code keep the code they got when the same source feature was loaded before …
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} s SET building_code = b.building_code
              FROM buildings b
             WHERE s.building_code IS NULL AND b.source_file = s.source_file AND b.source_id = s.source_id
               AND b.grid_code = s.grid_code
            """
        ).format(stage=stage_table(layer))
    )
    if opts.survey_date:
        # … in a survey, a footprint that mostly overlaps a current building (IoU >= 0.5) is that building …
        conn.execute(
            sql.SQL(
                """
                WITH pairs AS (
                    SELECT s.row_no, b.building_code,
                           ST_Area(ST_Intersection(s.footprint, b.footprint))
                           / NULLIF(ST_Area(ST_Union(s.footprint, b.footprint)), 0) AS iou
                      FROM {stage} s JOIN buildings b ON ST_Intersects(s.footprint, b.footprint)
                     WHERE s.building_code IS NULL
                       AND NOT EXISTS (SELECT 1 FROM {stage} x WHERE x.building_code = b.building_code)),
                best AS (
                    SELECT DISTINCT ON (building_code) row_no, building_code, iou FROM pairs
                     WHERE iou >= 0.5 ORDER BY building_code, iou DESC, row_no)
                UPDATE {stage} s SET building_code = best.building_code FROM best WHERE s.row_no = best.row_no
                """
            ).format(stage=stage_table(layer))
        )
    # … or the next free numbers of their grid.
    res.rejects += _number_new_buildings(conn, layer)
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "buildings",
        "building_code",
        BUILDING_COLUMNS,
        # The history trigger skips a row equal in content even when its source or valid_from differ.
        unchanged_when_same=[*BUILDING_CONTENT],
        bulk_min_rows=opts.bulk_min_rows,
    )
    if opts.survey_date:
        res.deleted = _demolish_missing(conn, layer, opts.survey_extent_wkb)
    return res


def _miscoded_buildings(conn: psycopg.Connection, layer: str) -> list[tuple[int, str]]:
    """A given building code must name the grid the building lies in."""
    return _reject(
        conn,
        layer,
        """
        SELECT row_no, format('building %s is coded into grid %s but lies in grid %s',
                              building_code, left(building_code, 14), grid_code)
          FROM {stage} WHERE building_code IS NOT NULL AND left(building_code, 14) <> grid_code
        """,
    )


def _dangling_building_links(conn: psycopg.Connection, layer: str) -> list[tuple[int, str]]:
    """The foreign keys (grid of the code, else the located grid; parcel), checked for all rows in one
    join: a reject names the feature, where the bulk path would only learn of a dangling link when the
    constraint is added back, for the whole load."""
    return _reject(
        conn,
        layer,
        """
        SELECT s.row_no, CASE WHEN g.code IS NULL
                              THEN format('grid %s does not exist', coalesce(left(s.building_code, 14), s.grid_code))
                              ELSE format('parcel %s does not exist', s.parcel_code)
                         END
          FROM {stage} s
          LEFT JOIN admin_units g ON g.code = coalesce(left(s.building_code, 14), s.grid_code)
          LEFT JOIN parcels p ON p.code = s.parcel_code
         WHERE g.code IS NULL OR (s.parcel_code IS NOT NULL AND p.code IS NULL)
        """,
    )


def _number_new_buildings(conn: psycopg.Connection, layer: str) -> list[tuple[int, str]]:
    """Rows still without a code get the next free numbers of their grid, in row order (a number is never
    reused, even that of a demolished building); rows of a full grid are rejected."""
    conn.execute(
        sql.SQL(
            """
            WITH used AS (
                SELECT left(code, 14) AS grid_code, max(right(code, 5)::int) AS top FROM (
                    SELECT building_code AS code FROM buildings
                    UNION ALL SELECT building_code FROM building_history
                    UNION ALL SELECT building_code FROM {stage} WHERE building_code IS NOT NULL) c
                 GROUP BY 1),
            numbered AS (
                SELECT s.row_no, s.grid_code,
                       coalesce(u.top, 0) + row_number() OVER (PARTITION BY s.grid_code ORDER BY s.row_no) AS n
                  FROM {stage} s LEFT JOIN used u USING (grid_code)
                 WHERE s.building_code IS NULL)
            UPDATE {stage} s SET building_code = n.grid_code || lpad(n.n::text, 5, '0')
              FROM numbered n WHERE s.row_no = n.row_no AND n.n <= 99999
            """
        ).format(stage=stage_table(layer))
    )
    return _reject(
        conn,
        layer,
        "SELECT row_no, format('grid %s has no free building number left', grid_code) "
        "FROM {stage} WHERE building_code IS NULL",
    )


class BuildingsFirstLoad:
    """``merge_buildings`` for a large load into an EMPTY buildings table, chunk by chunk as the rows
    arrive, so the database inserts one chunk while the ingest reads and checks the next.

    Same rules, same rejects and messages, same rows as ``merge_buildings`` on the whole stage: with no
    building stored, codes of earlier loads are never reused, and the only checks that need every row are
    the duplicate codes (``drop_duplicates`` keeps the first row of each code seen so far) and the numbering
    of rows without a code (left to ``finish``, when every given code is known). A chunk's rows with a code
    are inserted at once; the others wait in the stage. The table takes the bulk path of ``_bulk_load`` for
    the whole load (``MergeOptions.bulk_min_rows``).

    ``start`` (after ``create_stage(conn, "buildings")``) says whether the load qualifies (no survey, at least
    ``bulk_min_rows`` rows expected, no building stored); it locks the buildings table against other
    writers (SHARE ROW EXCLUSIVE) to ask, and if so the grids and parcels too (SHARE)."""

    CHUNK = "buildings_chunk"  # the stage of one chunk: stage_buildings_chunk

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.result = MergeResult()
        self._bulk = _bulk_load(conn, "buildings")
        self._first_rows: dict[str, int] = {}
        row = conn.execute("SELECT cim_change_time()").fetchone()
        self._change_time = row[0].isoformat() if row else None  # valid_from of rows that give none

    @classmethod
    def start(cls, conn: psycopg.Connection, expected_rows: int, opts: MergeOptions) -> BuildingsFirstLoad | None:
        if opts.survey_date or expected_rows < max(opts.bulk_min_rows, 1):
            return None
        conn.execute("LOCK TABLE buildings IN SHARE ROW EXCLUSIVE MODE")
        if conn.execute("SELECT EXISTS (SELECT 1 FROM buildings)").fetchone() != (False,):
            return None
        # The grids and parcels the rows are placed in stay as they are until commit (``load_chunk``); the
        # foreign keys added back at the end lock them anyway.
        conn.execute("LOCK TABLE admin_units, parcels IN SHARE MODE")
        load = cls(conn)
        load._bulk.__enter__()
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING ALL) ON COMMIT DROP").format(
                stage_table(cls.CHUNK), stage_table("buildings")
            )
        )
        return load

    def drop_duplicates(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The chunk's rows less those whose code an earlier row (of this or an earlier chunk) has, which
        are rejected as ``_duplicates`` words it. Rows arrive in row order, so the first row seen is the
        first row. In Python: a dict lookup per row, where the same in SQL costs ten times as much."""
        keep = np.ones(len(frame), dtype=bool)
        first_rows = self._first_rows
        for i, (code, row) in enumerate(zip(frame["building_code"].tolist(), frame["row_no"].tolist(), strict=True)):
            if not isinstance(code, str):  # None or NaN: no code given
                continue
            first = first_rows.setdefault(code, row)
            if first != row:
                keep[i] = False
                self.result.rejects.append((int(row), f"duplicate building_code {code} (first at feature {first})"))
        return frame if keep.all() else frame[keep]

    def load_chunk(self, frame: pd.DataFrame, placed: bool) -> None:
        """Merge one chunk (after ``drop_duplicates``). ``placed``: the load step placed its rows in their
        grid and parcel (``cim.locate``, from the grids and parcels read after ``start`` locked them). Such
        a row placed in the very grid its code names passes every check of ``chunk`` by construction: these
        rows are COPYed straight into the buildings table, sorted by code as ``chunk`` inserts them; a placed
        row without a code passes them too, and goes straight to the stage, to be numbered by ``finish``.
        The others (placed in no grid, or coded into another) take ``chunk``, for its messages. COPYing into
        a stage table and inserting from there would cost the database a second pass over every row."""
        direct = np.zeros(len(frame), dtype=bool)
        uncoded = np.zeros(len(frame), dtype=bool)
        if placed and "grid_code" in frame:
            codes = frame["building_code"].tolist()
            grids = frame["grid_code"].tolist()
            direct[:] = [type(c) is str and type(g) is str and c[:14] == g for c, g in zip(codes, grids, strict=True)]
            uncoded[:] = [not isinstance(c, str) and type(g) is str for c, g in zip(codes, grids, strict=True)]
        if direct.any():
            rows = frame[direct].sort_values("building_code", kind="stable")
            if self._change_time is not None:
                rows = rows.assign(valid_from=rows["valid_from"].where(rows["valid_from"].notna(), self._change_time))
            self.result.inserted += copy_into_table(self.conn, "buildings", DIRECT_COLUMNS, rows)
        if uncoded.any():
            copy_into_stage(self.conn, "buildings", frame[uncoded], analyze=False)
        rest = ~(direct | uncoded)
        if rest.any():
            copy_into_stage(self.conn, "buildings", frame[rest], analyze=False, stage=self.CHUNK)
            self.chunk()

    def chunk(self) -> None:
        """Merge the rows COPYed into ``stage_table(CHUNK)`` (after ``drop_duplicates``); leaves it empty."""
        conn, chunk = self.conn, self.CHUNK
        self.result.rejects += _locate(conn, chunk, geom="footprint")
        self.result.rejects += _miscoded_buildings(conn, chunk)
        self.result.rejects += _dangling_building_links(conn, chunk)
        self.result.inserted += _insert_new(conn, chunk, "buildings", BUILDING_COLUMNS, "building_code IS NOT NULL")
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE building_code IS NULL").format(
                stage_table("buildings"), stage_table(chunk)
            )
        )
        conn.execute(sql.SQL("TRUNCATE {}").format(stage_table(chunk)))

    def finish(self) -> MergeResult:
        """Number and insert the rows without a code; indexes and foreign keys back."""
        conn = self.conn
        self.result.rejects += _number_new_buildings(conn, "buildings")
        self.result.inserted += _insert_new(conn, "buildings", "buildings", BUILDING_COLUMNS, "true")
        self._bulk.__exit__(None, None, None)
        return self.result


DIRECT_COLUMNS = [
    *((name, typ) for name, typ in STAGE_COLUMNS["buildings"] if name in dict(BUILDING_COLUMNS)),
    ("parcel_code", "text"),
]
"""The columns (and their types) ``BuildingsFirstLoad.load_chunk`` COPYs into the buildings table: those
of ``BUILDING_COLUMNS``, whose expressions are the plain stage columns but for ``valid_from``'s default."""


def _insert_new(conn: psycopg.Connection, layer: str, table: str, columns: list[tuple[str, str]], where: str) -> int:
    """Plain INSERT of the stage rows matching ``where`` (SQL of this module): for rows known to be new, a
    conflict is an error, not an update. Returns the row count."""
    cur = conn.execute(
        sql.SQL("INSERT INTO {target} ({cols}) SELECT {exprs} FROM {stage} WHERE {where} ORDER BY 1").format(
            target=sql.Identifier(table),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns),
            exprs=sql.SQL(", ").join(sql.SQL(e) for _, e in columns),
            stage=stage_table(layer),
            where=sql.SQL(where),
        )
    )
    return max(cur.rowcount, 0)


def _demolish_missing(conn: psycopg.Connection, layer: str, extent_wkb: str | None) -> int:
    """A survey covers an extent (given, or the convex hull of its footprints): current buildings inside it
    that the survey no longer has are demolished (the history trigger closes them at the survey date)."""
    rows = conn.execute(
        sql.SQL(
            """
            WITH extent AS (
                SELECT coalesce(ST_SetSRID(%(extent)s::geometry, ST_SRID(min(footprint))),
                                ST_ConvexHull(ST_Collect(footprint))) AS geom
                  FROM {stage})
            DELETE FROM buildings b USING extent
             WHERE ST_Intersects(extent.geom, ST_PointOnSurface(b.footprint))
               AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.building_code = b.building_code)
            RETURNING b.building_code
            """
        ).format(stage=stage_table(layer)),
        {"extent": extent_wkb},
    ).fetchall()
    return len(rows)


def merge_houses(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "houses"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "house_code")
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT s.row_no, format('house %s: building %s does not exist', s.house_code, left(s.house_code, 19))
          FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM buildings b WHERE b.building_code = left(s.house_code, 19))
        """,
    )
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT s.row_no, format('house %s: storey %s is above the building''s %s storeys', s.house_code,
                                s.storey, b.storeys)
          FROM {stage} s JOIN buildings b ON b.building_code = left(s.house_code, 19) WHERE s.storey > b.storeys
        """,
    )
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "houses",
        "house_code",
        _same(["house_code", "storey", "area_m2", "use", "attributes", "source_file"]),
    )
    return res


def merge_pipe_nodes(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "pipe_nodes"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "code")
    res.rejects += _locate(conn, layer, parcels=False)
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "pipe_nodes",
        "code",
        _same(
            [
                "code",
                "network",
                "kind",
                "ground_elevation_m",
                "invert_elevation_m",
                "geom",
                "attributes",
                "source_file",
                "source_id",
            ]
        )
        + UNIT_TARGETS,
    )
    return res


def merge_pipes(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    """Pipes after their nodes (same transaction).

    Errors (rows rejected): duplicate codes, missing end nodes (dangling pipes), ends of another network,
    line ends further than ``opts.snap_m`` from their nodes, an invert above the node's ground level.
    Repairs: ends within ``snap_m`` are moved exactly onto the node; rows without geometry (CSV) get the
    straight line between their nodes. Warnings (loaded): gravity pipes sloping uphill, pipe inverts below
    the node's invert, and networks that fall into several disconnected parts."""
    layer = "pipes"
    stage = stage_table(layer)
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "code")
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT s.row_no, CASE
                 WHEN f.code IS NULL THEN format('pipe %s: from_node %s does not exist', s.code, s.from_node)
                 WHEN t.code IS NULL THEN format('pipe %s: to_node %s does not exist', s.code, s.to_node)
                 WHEN s.from_node = s.to_node THEN format('pipe %s starts and ends at node %s', s.code, s.to_node)
                 ELSE format('pipe %s (%s) joins nodes of networks %s and %s', s.code, s.network, f.network,
                             t.network)
               END
          FROM {stage} s
          LEFT JOIN pipe_nodes f ON f.code = s.from_node
          LEFT JOIN pipe_nodes t ON t.code = s.to_node
         WHERE f.code IS NULL OR t.code IS NULL OR s.from_node = s.to_node
            OR f.network <> s.network OR t.network <> s.network
        """,
    )
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} s
               SET geom = ST_SetSRID(ST_MakeLine(ST_MakePoint(ST_X(f.geom), ST_Y(f.geom), s.start_invert_m),
                                                 ST_MakePoint(ST_X(t.geom), ST_Y(t.geom), s.end_invert_m)),
                                     ST_SRID(f.geom))
              FROM pipe_nodes f, pipe_nodes t
             WHERE s.geom IS NULL AND f.code = s.from_node AND t.code = s.to_node
            """
        ).format(stage=stage)
    )
    res.rejects += _reject(
        conn,
        layer,
        f"""
        SELECT s.row_no, format('pipe %s: its ends are %s m and %s m from nodes %s and %s (snap tolerance %s m)',
                                s.code, round(ST_Distance(ST_StartPoint(s.geom), f.geom)::numeric, 2),
                                round(ST_Distance(ST_EndPoint(s.geom), t.geom)::numeric, 2), s.from_node, s.to_node,
                                {float(opts.snap_m)!r})
          FROM {{stage}} s JOIN pipe_nodes f ON f.code = s.from_node JOIN pipe_nodes t ON t.code = s.to_node
         WHERE ST_Distance(ST_StartPoint(s.geom), f.geom) > {float(opts.snap_m)!r}
            OR ST_Distance(ST_EndPoint(s.geom), t.geom) > {float(opts.snap_m)!r}
        """,
    )
    conn.execute(
        sql.SQL(
            """
            UPDATE {stage} s
               SET geom = ST_SetPoint(ST_SetPoint(s.geom, 0,
                              ST_MakePoint(ST_X(f.geom), ST_Y(f.geom), ST_Z(ST_StartPoint(s.geom)))), -1,
                              ST_MakePoint(ST_X(t.geom), ST_Y(t.geom), ST_Z(ST_EndPoint(s.geom))))
              FROM pipe_nodes f, pipe_nodes t
             WHERE f.code = s.from_node AND t.code = s.to_node
               AND (NOT ST_Equals(ST_Force2D(ST_StartPoint(s.geom)), ST_Force2D(f.geom))
                    OR NOT ST_Equals(ST_Force2D(ST_EndPoint(s.geom)), ST_Force2D(t.geom)))
            """
        ).format(stage=stage)
    )
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT s.row_no, format('pipe %s: invert %s m is above the ground (%s m) at node %s', s.code,
                                CASE WHEN s.start_invert_m > f.ground_elevation_m THEN s.start_invert_m
                                     ELSE s.end_invert_m END,
                                CASE WHEN s.start_invert_m > f.ground_elevation_m THEN f.ground_elevation_m
                                     ELSE t.ground_elevation_m END,
                                CASE WHEN s.start_invert_m > f.ground_elevation_m THEN f.code ELSE t.code END)
          FROM {stage} s JOIN pipe_nodes f ON f.code = s.from_node JOIN pipe_nodes t ON t.code = s.to_node
         WHERE s.start_invert_m > f.ground_elevation_m OR s.end_invert_m > t.ground_elevation_m
        """,
    )
    res.rejects += _locate(conn, layer, parcels=False)
    res.warnings += _rows(
        conn,
        """
        SELECT s.row_no, format('pipe %s (%s) slopes uphill: invert %s m at %s, %s m at %s', s.code, s.network,
                                s.start_invert_m, s.from_node, s.end_invert_m, s.to_node)
          FROM {stage} s WHERE s.network IN ('drainage', 'rain', 'sewage') AND s.start_invert_m < s.end_invert_m
        """,
        layer,
    )
    res.warnings += _rows(
        conn,
        """
        SELECT s.row_no, format('pipe %s: invert %s m is below the invert of node %s (%s m)', s.code,
                                CASE WHEN s.start_invert_m < f.invert_elevation_m THEN s.start_invert_m
                                     ELSE s.end_invert_m END,
                                CASE WHEN s.start_invert_m < f.invert_elevation_m THEN f.code ELSE t.code END,
                                CASE WHEN s.start_invert_m < f.invert_elevation_m THEN f.invert_elevation_m
                                     ELSE t.invert_elevation_m END)
          FROM {stage} s JOIN pipe_nodes f ON f.code = s.from_node JOIN pipe_nodes t ON t.code = s.to_node
         WHERE s.start_invert_m < f.invert_elevation_m - 0.001 OR s.end_invert_m < t.invert_elevation_m - 0.001
        """,
        layer,
    )
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "pipes",
        "code",
        _same(["code", "network", "from_node", "to_node", "diameter_mm", "material", "start_invert_m"])
        + _same(["end_invert_m", "built_year", "geom", "attributes", "source_file", "source_id"])
        + UNIT_TARGETS,
    )
    res.warnings += _component_warnings(conn, layer)
    return res


def _rows(conn: psycopg.Connection, query: str, layer: str) -> list[tuple[int, str]]:
    """(row_no, message) rows of a check that does not reject (``query``: module SQL with ``{stage}``)."""
    rows = conn.execute(sql.SQL(query).format(stage=stage_table(layer))).fetchall()
    return [(int(r[0]), str(r[1])) for r in rows]


GRAVITY_NETWORKS = ("drainage", "rain", "sewage")
DRAIN_KINDS = ("outfall", "pump_station")


def _component_warnings(conn: psycopg.Connection, layer: str) -> list[tuple[int, str]]:
    """Connectivity of each network the load touched (nodes with no pipe are parts of their own).

    A gravity network (drainage, rain, sewage) is normally several catchments, each with its own outfall:
    the warning is for parts that drain nowhere (no outfall or pump station). A pressurised network (water,
    gas, …) should be one piece: the warning is for every extra part."""
    networks = [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT network FROM {}").format(stage_table(layer)))]
    out: list[tuple[int, str]] = []
    for network in sorted(networks):
        node_rows = conn.execute(
            "SELECT code, kind FROM pipe_nodes WHERE network = %s ORDER BY code", (network,)
        ).fetchall()
        nodes = [r[0] for r in node_rows]
        drains = np.array([r[1] in DRAIN_KINDS for r in node_rows], dtype=bool)
        edges = conn.execute("SELECT from_node, to_node FROM pipes WHERE network = %s", (network,)).fetchall()
        labels, count = connected_components(nodes, [e[0] for e in edges], [e[1] for e in edges])
        if count == 0:
            continue
        sizes = np.bincount(labels)
        if network in GRAVITY_NETWORKS:
            drained = np.bincount(labels, weights=drains, minlength=count) > 0
            suspect = [k for k in range(count) if not drained[k]]
            what = "drain nowhere (no outfall or pump station)"
        else:
            suspect = list(range(1, count))
            what = "are cut off from the main network"
        if suspect:
            first = {k: nodes[int(np.flatnonzero(labels == k)[0])] for k in suspect[:5]}
            examples = ", ".join(f"node {code} ({sizes[k]} nodes)" for k, code in first.items())
            more = f" and {len(suspect) - 5} more" if len(suspect) > 5 else ""
            out.append((0, f"network {network}: {len(suspect)} of its {count} parts {what}: {examples}{more}"))
    return out


def _reject_unknown(conn: psycopg.Connection, layer: str, column: str, table: str, key: str) -> list[tuple[int, str]]:
    # column, table and key are constants of this module.
    return _reject(
        conn,
        layer,
        f"""
        SELECT s.row_no, format('{column} %s does not exist', s.{column}) FROM {{stage}} s
         WHERE s.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{key} = s.{column})
        """,
    )


def merge_devices(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "devices"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "code")
    res.rejects += _reject_unknown(conn, layer, "pipe_node_code", "pipe_nodes", "code")
    res.rejects += _reject_unknown(conn, layer, "building_code", "buildings", "building_code")
    res.rejects += _locate(conn, layer)
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "devices",
        "code",
        _same(
            [
                "code",
                "kind",
                "name",
                "status",
                "installed_at",
                "geom",
                "pipe_node_code",
                "building_code",
                "parcel_code",
                "attributes",
                "source_file",
                "source_id",
            ]
        )
        + UNIT_TARGETS,
    )
    return res


def merge_observations(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "observations"
    res = MergeResult()
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT row_no, format('duplicate observation of %s %s at %s (first at line %s)', device_code, property,
                              observed_at, first_row)
          FROM (SELECT row_no, device_code, property, observed_at,
                       min(row_no) OVER (PARTITION BY device_code, property, observed_at) AS first_row
                  FROM {stage}) d
         WHERE row_no <> first_row
        """,
    )
    res.rejects += _reject(
        conn,
        layer,
        """
        SELECT s.row_no, format('device %s does not exist', s.device_code) FROM {stage} s
         WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.code = s.device_code)
        """,
    )
    staged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(stage_table(layer))).fetchone()
    keys = [("device_code", "device_code"), ("property", "property"), ("observed_at", "observed_at")]
    bulk = _takes_bulk_path(conn, layer, "observations", keys, opts.bulk_min_rows)
    with _bulk_load(conn, "observations") if bulk else _nothing():
        row = conn.execute(
            sql.SQL(
                """
                WITH written AS (
                    INSERT INTO observations AS o (device_code, property, observed_at, value, district_code)
                    SELECT s.device_code, s.property, s.observed_at, s.value, d.district_code
                      FROM {stage} s JOIN devices d ON d.code = s.device_code
                     WHERE NOT EXISTS (SELECT 1 FROM observations x
                                        WHERE x.device_code = s.device_code AND x.property = s.property
                                          AND x.observed_at = s.observed_at AND x.value IS NOT DISTINCT FROM s.value)
                     ORDER BY 1, 2, 3
                    ON CONFLICT (device_code, property, observed_at) DO UPDATE SET value = EXCLUDED.value
                     WHERE o.value IS DISTINCT FROM EXCLUDED.value
                    RETURNING (xmax = 0) AS inserted)
                SELECT count(*) FILTER (WHERE inserted), count(*) FROM written
                """
            ).format(stage=stage_table(layer))
        ).fetchone()
    inserted, written = (int(row[0]), int(row[1])) if row else (0, 0)
    res.inserted, res.updated = inserted, written - inserted
    res.unchanged = (int(staged[0]) if staged else 0) - written
    return res


def merge_events(conn: psycopg.Connection, opts: MergeOptions) -> MergeResult:
    layer = "events"
    res = MergeResult()
    res.rejects += _duplicates(conn, layer, "code")
    res.rejects += _reject_unknown(conn, layer, "building_code", "buildings", "building_code")
    res.rejects += _locate(conn, layer)
    res.inserted, res.updated, res.unchanged = _upsert(
        conn,
        layer,
        "events",
        "code",
        _same(
            [
                "code",
                "category",
                "subcategory",
                "status",
                "reported_at",
                "updated_at",
                "due_at",
                "closed_at",
                "department",
                "reopen_count",
                "description",
                "reporter_contact",
                "geom",
                "building_code",
                "parcel_code",
                "attributes",
                "source_file",
                "source_id",
            ]
        )
        + UNIT_TARGETS,
        touch=False,
    )
    return res


MERGERS = {
    "admin": merge_admin,
    "parcels": merge_parcels,
    "buildings": merge_buildings,
    "houses": merge_houses,
    "pipe_nodes": merge_pipe_nodes,
    "pipes": merge_pipes,
    "devices": merge_devices,
    "observations": merge_observations,
    "events": merge_events,
}
