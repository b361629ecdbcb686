"""The fast paths of the ingest give what the plain paths give, and keep integrity:

- a first load of many buildings, merged chunk by chunk as they stream in (``BuildingsFirstLoad``, with
  foreign keys and secondary indexes dropped and rebuilt), ends with the same rows, codes and rejects as the
  whole-stage merge, over chunks that split duplicates and uncoded rows apart;
- a reload finds every row unchanged (the set-based pre-filter) and leaves versions and history alone;
- a dangling grid or parcel link is refused by name, with the database unchanged, and should a row slip
  past that check, adding the foreign key back fails the whole load;
- chunked reading gives the rows of a whole read, progress counts every row, and IFC triangulation in
  worker processes gives the meshes of IfcOpenShell's own threads (also where its one-thread iterator
  gives up) and leaves no process behind when stopped.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pytest
import shapely
from shapely.geometry import box

from cim import codes
from cim.db import connect, ensure_database, transaction
from cim.settings import Settings
from cim.store import merge
from cim.store.merge import BuildingsFirstLoad, MergeOptions
from cim.store.staging import create_stage
from ingest.city_layers import ingest_files, prepare_streams
from ingest.errors import RejectedFeatures
from ingest.ifc import open_ifc
from ingest.ifc_geometry import Triangulation, triangulate
from ingest.load import LayerReport, load_prepared
from ingest.prepare import Prepared
from ingest.vector import read_vector, read_vector_chunks

import tinycity
from conftest import new_database
from dbcheck import fingerprint

IFC = Path(__file__).resolve().parents[2] / "shared" / "data" / "ifc"
CHUNK = 100  # rows per chunk: the 640-row file below comes in 7 chunks
BULK = MergeOptions(bulk_min_rows=1)  # every load big enough for the bulk paths
PLAIN = MergeOptions(bulk_min_rows=10**9)  # none
WRONG = f"{tinycity.GRID_A}00999"  # coded into grid A, lies in grid B


def city_buildings() -> gpd.GeoDataFrame:
    """640 footprints on a 32 × 20 lattice over both grids: coded rows, uncoded rows (numbered after the
    highest given code of their grid, which comes last in the file), a duplicate pair and a triple across
    chunks, one footprint outside every grid and one coded into the wrong grid."""
    rows = []
    for k in range(640):
        i, j = k % 32, k // 32
        x, y = tinycity.X0 + 10 + i * 30, tinycity.Y0 + 10 + j * 24
        grid = tinycity.GRID_A if x < tinycity.X0 + 500 else tinycity.GRID_B
        code = f"{grid}{k + 1:05d}" if k % 3 else None  # every third row has no code
        rows.append((code, box(x, y, x + 12, y + 9), f"s{k}"))
    rows[639] = (f"{tinycity.GRID_B}09000", rows[639][1], rows[639][2])  # grid B's highest number, last
    rows[250] = (rows[4][0], rows[250][1], rows[250][2])  # duplicate of row 5 (feature 5), another chunk
    rows[420] = (rows[4][0], rows[420][1], rows[420][2])  # and a third time
    rows[333] = (rows[333][0], box(tinycity.X0 + 2000, tinycity.Y0, tinycity.X0 + 2010, tinycity.Y0 + 10), "out")
    rows[500] = (WRONG, box(tinycity.X0 + 700, tinycity.Y0 + 300, tinycity.X0 + 710, tinycity.Y0 + 310), "wrong")
    return gpd.GeoDataFrame(
        {
            "building_code": [r[0] for r in rows],
            "use": ["residential"] * len(rows),
            "height_m": [12.0 + k % 7 for k in range(len(rows))],
            "storeys": [4] * len(rows),
            "source_id": [r[2] for r in rows],
        },
        geometry=[r[1] for r in rows],
        crs=tinycity.SRID,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("speed")
    return {
        "admin": tinycity.admin(out),
        "parcels": tinycity.parcels(out),
        "buildings": tinycity.write(city_buildings(), out / "city.gpkg", layer="buildings"),
    }


def empty_city(settings: Settings, cluster_url: str, files: dict[str, Path]) -> Iterator[Settings]:
    """A new database with the tiny city's grids and parcels and no building."""
    with new_database(settings, cluster_url) as fresh:
        ensure_database(fresh)
        for kind in ("admin", "parcels"):
            ingest_files(kind, [files[kind]], settings=fresh)
        yield fresh


@pytest.fixture(scope="module")
def streamed(settings: Settings, cluster_url: str, files: dict[str, Path]) -> Iterator[tuple[Settings, LayerReport]]:
    """The lattice loaded by the chunk-by-chunk first load (rejects allowed, so that both paths load)."""
    yield from _loaded(settings, cluster_url, files, BULK)


@pytest.fixture(scope="module")
def whole(settings: Settings, cluster_url: str, files: dict[str, Path]) -> Iterator[tuple[Settings, LayerReport]]:
    """The same file through the whole-stage merge, without any bulk path."""
    yield from _loaded(settings, cluster_url, files, PLAIN)


def _loaded(
    settings: Settings, cluster_url: str, files: dict[str, Path], options: MergeOptions
) -> Iterator[tuple[Settings, LayerReport]]:
    for db in empty_city(settings, cluster_url, files):
        (report,) = load(db, files["buildings"], options, allow_rejects=True)
        yield db, report


def load(db: Settings, path: Path, options: MergeOptions, allow_rejects: bool = False) -> list[LayerReport]:
    with codes.city_scope(db.city_code):
        streams = prepare_streams("buildings", path, None, None, db, chunk_rows=CHUNK)
        return load_prepared([(path, s) for s in streams], allow_rejects, db, options)


def rows(db: Settings, sql: str) -> list[tuple[object, ...]]:
    with connect(db) as conn:
        return conn.execute(sql).fetchall()


BUILDINGS = """
    SELECT building_code, grid_code, parcel_code, source_id, height_m, version, ST_AsEWKB(footprint)::text
      FROM buildings ORDER BY building_code
"""
SCHEMA = """
    SELECT 'i', indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index
     WHERE indrelid = 'buildings'::regclass
    UNION ALL
    SELECT 'c', conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'buildings'::regclass
    ORDER BY 1, 2
"""


def test_first_load_in_chunks_equals_the_whole_stage_merge(
    streamed: tuple[Settings, LayerReport], whole: tuple[Settings, LayerReport]
) -> None:
    (fast, fast_report), (plain, plain_report) = streamed, whole
    assert fast_report.rejected == plain_report.rejected
    assert dict(fast_report.rejected) == {
        251: f"duplicate building_code {tinycity.GRID_A}00005 (first at feature 5)",
        334: "lies outside every administrative grid (interior point POINT(496005 2490005))",
        421: f"duplicate building_code {tinycity.GRID_A}00005 (first at feature 5)",
        501: f"building {WRONG} is coded into grid {tinycity.GRID_A} but lies in grid {tinycity.GRID_B}",
    }
    assert (fast_report.inserted, fast_report.updated, fast_report.unchanged) == (636, 0, 0)
    assert (plain_report.inserted, plain_report.updated, plain_report.unchanged) == (636, 0, 0)
    assert rows(fast, BUILDINGS) == rows(plain, BUILDINGS)
    # Uncoded rows are numbered after the highest number given anywhere in the file (the last row).
    assert rows(fast, "SELECT building_code FROM buildings WHERE source_id = 's18'") == [(f"{tinycity.GRID_B}09001",)]
    # The foreign keys and indexes dropped for the load are back, exactly as defined.
    assert rows(fast, SCHEMA) == rows(plain, SCHEMA)


def test_reload_changes_nothing(streamed: tuple[Settings, LayerReport], files: dict[str, Path]) -> None:
    db, _ = streamed
    before = fingerprint(db)
    report = load(db, files["buildings"], MergeOptions(), allow_rejects=True)[0]
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 636)
    assert fingerprint(db) == before
    assert rows(db, "SELECT max(version), count(*) FILTER (WHERE version > 1) FROM buildings") == [(1, 0)]


def test_first_load_qualifies_only_for_an_empty_table(streamed: tuple[Settings, LayerReport]) -> None:
    db, _ = streamed
    before = fingerprint(db)
    with transaction(db) as conn:
        create_stage(conn, "buildings")
        assert BuildingsFirstLoad.start(conn, 10**6, BULK) is None  # buildings are stored
        conn.execute("DELETE FROM buildings")
        assert BuildingsFirstLoad.start(conn, 10, MergeOptions(bulk_min_rows=11)) is None  # too few rows
        assert BuildingsFirstLoad.start(conn, 10, MergeOptions(bulk_min_rows=1, survey_date="2025-01-01")) is None
        assert isinstance(BuildingsFirstLoad.start(conn, 10, BULK), BuildingsFirstLoad)
        raise psycopg.Rollback  # psycopg rolls back quietly: the deletion and the dropped constraints go
    assert fingerprint(db) == before


@pytest.mark.parametrize("options", [BULK, PLAIN], ids=["bulk", "plain"])
def test_a_dangling_parcel_link_is_refused_by_name(
    settings: Settings, cluster_url: str, files: dict[str, Path], options: MergeOptions
) -> None:
    for db in empty_city(settings, cluster_url, files):
        stream = prepare_streams("buildings", files["buildings"], None, None, db, chunk_rows=10**6)[0]
        with codes.city_scope(db.city_code):
            prepared = stream.whole()
        # As if the parcel had gone between placing the buildings and loading them.
        frame = prepared.frame.iloc[:50].assign(grid_code=tinycity.GRID_A, parcel_code="T107-0001")
        frame.loc[7, "parcel_code"] = "T999-9999"
        frame["grid_code"] = [c[:14] if isinstance(c, str) else tinycity.GRID_A for c in frame["building_code"]]
        part = Prepared("buildings", frame, read=len(frame))  # no geometry: the load step keeps these codes
        before = fingerprint(db, ("ingest_runs",))
        with pytest.raises(RejectedFeatures) as refused:
            load_prepared([(files["buildings"], part)], settings=db, options=options)
        assert f"feature {frame['row_no'].iloc[7]}: parcel T999-9999 does not exist" in str(refused.value)
        assert fingerprint(db, ("ingest_runs",)) == before


def test_adding_a_foreign_key_back_refuses_a_row_that_slipped_through(streamed: tuple[Settings, LayerReport]) -> None:
    db, _ = streamed
    schema, before = rows(db, SCHEMA), fingerprint(db)
    fk = "SELECT 1 FROM pg_constraint WHERE conname = 'buildings_parcel_code_fkey'"
    with (
        pytest.raises(psycopg.errors.ForeignKeyViolation),
        transaction(db) as conn,
        merge._bulk_load(conn, "buildings"),
    ):
        assert not conn.execute(fk).fetchall()  # dropped for the load
        conn.execute("UPDATE buildings SET parcel_code = 'T999-9999' WHERE source_id = 's1'")
    assert rows(db, SCHEMA) == schema and fingerprint(db) == before


def test_chunked_reading_gives_the_rows_of_a_whole_read(files: dict[str, Path], tmp_path: Path) -> None:
    for path in (files["buildings"], tinycity.write(city_buildings(), tmp_path / "city.geojson")):
        whole_frame = read_vector(path, None, None, tinycity.SRID)
        chunks = read_vector_chunks(path, None, None, tinycity.SRID, chunk_rows=CHUNK)
        frames = list(chunks.frames)
        assert chunks.total == len(whole_frame) == 640 and [len(f) for f in frames] == [100] * 6 + [40]
        joined = pd.concat(frames, ignore_index=True)
        assert joined.drop(columns="geometry").equals(whole_frame.drop(columns="geometry"))
        assert shapely.equals_exact(np.asarray(joined.geometry), np.asarray(whole_frame.geometry), 0).all()


def test_progress_counts_every_row(settings: Settings, cluster_url: str, files: dict[str, Path]) -> None:
    counted: dict[str, int] = {}
    steps: list[str] = []

    class Recorder:
        def __call__(self, step: str) -> None:
            steps.append(step)

        def count(self, what: str, total: int | None, unit: str) -> Recorder.Counter:
            counted[what] = 0
            return Recorder.Counter(what)

        class Counter:
            def __init__(self, what: str) -> None:
                self.what = what

            def advance(self, n: int = 1) -> None:
                counted[self.what] += n

            def done(self) -> None:
                pass

    for db in empty_city(settings, cluster_url, files):
        with codes.city_scope(db.city_code):
            path = files["buildings"]
            streams = prepare_streams("buildings", path, None, None, db, progress=Recorder(), chunk_rows=CHUNK)
            load_prepared(
                [(path, s) for s in streams], allow_rejects=True, settings=db, options=BULK, progress=Recorder()
            )
    name = files["buildings"].name
    assert counted == {f"reading {name}": 640, f"checking {name}": 640, f"loading {name}": 640}
    assert steps == ["merging buildings"]


def test_worker_triangulation_gives_the_meshes_of_the_threaded_iterator() -> None:
    # grid-placement.ifc: IfcOpenShell builds 10 of its 35 elements, and its one-thread iterator gives up at
    # the first it cannot build; the workers retry the others one by one.
    source = open_ifc(IFC / "grid-placement.ifc")
    expected = triangulate(source.model, source.elements, threads=2)
    done: list[int] = []
    got = Triangulation(source.model, source.elements, workers=2).collect(lambda: done.append(1))
    assert len(source.elements) == len(done) == 35 and sorted(got) == sorted(expected) and len(got) == 10
    for key, mesh in expected.items():
        assert np.array_equal(got[key].faces, mesh.faces) and np.allclose(got[key].verts, mesh.verts)
    running = Triangulation(source.model, source.elements, workers=2)
    assert len(multiprocessing.active_children()) == 2
    running.stop()
    assert multiprocessing.active_children() == []
