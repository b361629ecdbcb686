"""Ingest of hand-made files with obvious answers: counts, sums, code assignment, idempotency, history,
and bad files that must fail with a clear message and change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import psycopg
import pytest
from shapely.geometry import Point, Polygon, box

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.city_layers import ingest_files
from ingest.errors import IngestError

import tinycity
from dbcheck import fingerprint


@pytest.fixture()
def city(fresh_settings: Settings, tmp_path: Path) -> tuple[Settings, dict[str, Path]]:
    ensure_database(fresh_settings)
    files = tinycity.write_all(tmp_path)
    for kind in ("admin", "parcels", "buildings", "houses", "pipes"):
        ingest_files(kind, [files[kind]], settings=fresh_settings)
    return fresh_settings, files


def query(settings: Settings, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def test_counts_areas_and_links(city: tuple[Settings, dict[str, Path]]) -> None:
    s, _ = city
    assert query(s, "SELECT level, count(*) FROM admin_units GROUP BY level ORDER BY level") == [
        ("community", 1),
        ("district", 1),
        ("grid", 2),
        ("street", 1),
    ]
    n, area = query(s, "SELECT count(*), sum(footprint_area_m2) FROM buildings")[0]
    assert n == 4
    assert area == pytest.approx(tinycity.BUILDING_AREA_M2, abs=1e-6)
    # The courtyard keeps its hole; the attributes outside the contract are kept.
    court = query(
        s, "SELECT ST_NumInteriorRings(ST_GeometryN(footprint, 1)), attributes FROM buildings WHERE name = '院楼'"
    )[0]
    assert court[0] == 1 and court[1] == {"owner": "区政府"}
    # Parcel and unit codes come from where the building lies.
    rows = query(s, "SELECT name, parcel_code, grid_code, street_code, district_code FROM buildings ORDER BY name")
    assert ("二号楼", "T107-0002", tinycity.GRID_B, tinycity.STREET, tinycity.DISTRICT) in rows
    assert query(s, "SELECT count(*), sum(area_m2) FROM houses") == [(4, 341.0)]


def test_building_without_code_gets_next_number_in_its_grid(city: tuple[Settings, dict[str, Path]]) -> None:
    s, files = city
    assert query(s, "SELECT building_code FROM buildings WHERE source_id = 'b2'") == [(tinycity.GRID_B + "00001",)]
    # Reloading keeps that code (matched by source file and id) instead of numbering it again.
    reports = ingest_files("buildings", [files["buildings"]], settings=s)
    assert (reports[0].inserted, reports[0].updated, reports[0].unchanged) == (0, 0, 4)
    assert query(s, "SELECT count(*) FROM buildings") == [(4,)]


def test_loading_twice_leaves_the_same_database(city: tuple[Settings, dict[str, Path]]) -> None:
    s, files = city
    before = fingerprint(s)
    for kind in ("admin", "parcels", "buildings", "houses", "pipes"):
        for report in ingest_files(kind, [files[kind]], settings=s):
            assert report.inserted == 0 and report.updated == 0, report.summary()
    assert fingerprint(s) == before


def test_pipes_are_3d_with_invert_z_and_nodes_at_ground(city: tuple[Settings, dict[str, Path]]) -> None:
    s, _ = city
    rows = query(
        s,
        "SELECT code, ST_Z(ST_StartPoint(geom)), ST_Z(ST_PointN(geom, 2)), ST_Z(ST_EndPoint(geom)), "
        "length_m FROM pipes ORDER BY code",
    )
    assert rows[0][0] == "YS-1"
    assert rows[0][1:] == pytest.approx((3.0, 2.9, 2.8, 40.0))
    assert rows[1][1] == pytest.approx(2.7) and rows[1][3] == pytest.approx(2.4)
    assert query(s, "SELECT ST_Z(geom), depth_m FROM pipe_nodes WHERE code = 'YSJ-1'")[0] == pytest.approx((6.0, 3.0))


def test_an_edit_makes_a_new_version_and_keeps_the_old(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, _ = city
    frame = tinycity.buildings_frame()
    frame.loc[0, "height_m"] = 33.0
    path = tinycity.buildings(tmp_path / "v2", frame)
    report = ingest_files("buildings", [path], settings=s)[0]
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 3)
    code = tinycity.GRID_A + "00001"
    assert query(s, "SELECT version, height_m FROM buildings WHERE building_code = %s", (code,)) == [(2, 33.0)]
    assert query(s, "SELECT version, change, height_m FROM building_history WHERE building_code = %s", (code,)) == [
        (1, "altered", 30.0)
    ]
    assert query(s, "SELECT count(*) FROM building_versions WHERE building_code = %s", (code,)) == [(2,)]


def assert_refused(s: Settings, kind: str, path: Path, *needles: str, **kw: object) -> str:
    before = fingerprint(s)
    with pytest.raises(IngestError) as info:
        ingest_files(kind, [path], settings=s, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert fingerprint(s) == before
    return message


def test_wrong_geometry_type_is_refused(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, _ = city
    frame = tinycity.buildings_frame()
    points = gpd.GeoDataFrame(
        frame.drop(columns="geometry"), geometry=[Point(tinycity.X0 + 5, tinycity.Y0 + 5)] * 4, crs=tinycity.SRID
    )
    path = tinycity.write(points, tmp_path / "points.geojson")
    assert_refused(s, "buildings", path, "points.geojson", "wrong geometry type", "Polygon", "Point")


def test_unknown_crs_is_refused(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, files = city
    assert_refused(s, "buildings", files["buildings"], "unknown CRS", "EPSG:999999", crs="EPSG:999999")
    # A file that declares no CRS at all is refused too, with the remedy.
    frame = tinycity.buildings_frame()
    bare = tmp_path / "bare.geojson"
    text = json.loads(frame.to_json())
    text.pop("crs", None)
    bare.write_text(json.dumps(text))
    # GeoJSON without "crs" means CRS84 by the standard: metres read as degrees are refused as such.
    assert_refused(s, "buildings", bare, "bare.geojson")


def test_invalid_and_mismatched_codes_are_rejected_with_both_codes(
    city: tuple[Settings, dict[str, Path]], tmp_path: Path
) -> None:
    s, _ = city
    frame = tinycity.buildings_frame()
    frame.loc[1, "building_code"] = "44030500700101ABCDE"
    path = tinycity.buildings(tmp_path, frame, name="badcode.gpkg")
    assert_refused(s, "buildings", path, "badcode.gpkg", "feature 2", "44030500700101ABCDE")
    # The slab lies in grid B but is coded into grid A: the message names both grids.
    frame = tinycity.buildings_frame()
    frame.loc[1, "building_code"] = tinycity.GRID_A + "00009"
    path = tinycity.buildings(tmp_path, frame, name="mismatch.gpkg")
    message = assert_refused(s, "buildings", path, tinycity.GRID_A, tinycity.GRID_B, "lies in grid")
    assert "nothing was loaded" in message


def test_allow_rejects_loads_the_rest_and_reports(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, _ = city
    frame = tinycity.buildings_frame()
    frame.loc[0, "height_m"] = -3
    frame.loc[1, "building_code"] = tinycity.GRID_A + "00009"
    frame.loc[2, "use"] = "castle"
    path = tinycity.buildings(tmp_path, frame, name="some_bad.gpkg")
    report = ingest_files("buildings", [path], settings=s, allow_rejects=True)[0]
    reasons = dict(report.rejected)
    assert set(reasons) == {1, 2, 3}
    assert "height_m" in reasons[1] and "lies in grid" in reasons[2] and "castle" in reasons[3]
    assert report.loaded == 1


def test_self_intersecting_footprint_is_repaired(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, _ = city
    frame = tinycity.buildings_frame()
    x, y = tinycity.X0 + 400, tinycity.Y0 + 400
    bowtie = Polygon([(x, y), (x + 20, y + 20), (x + 20, y), (x, y + 20)])
    frame = gpd.GeoDataFrame(
        frame.iloc[[0]].assign(building_code=None, source_id="bowtie"), geometry=[bowtie], crs=tinycity.SRID
    )
    path = tinycity.buildings(tmp_path, frame, name="bowtie.gpkg")
    report = ingest_files("buildings", [path], settings=s)[0]
    assert report.repaired == 1 and report.inserted == 1
    assert query(
        s, "SELECT ST_IsValid(footprint), round(footprint_area_m2) FROM buildings WHERE source_id = 'bowtie'"
    ) == [(True, 200)]


def test_outside_every_grid_is_rejected(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, _ = city
    frame = tinycity.buildings_frame().iloc[[1]].copy()
    frame["geometry"] = [box(tinycity.X0 + 5000, tinycity.Y0, tinycity.X0 + 5010, tinycity.Y0 + 10)]
    path = tinycity.buildings(tmp_path, gpd.GeoDataFrame(frame, crs=tinycity.SRID), name="away.gpkg")
    assert_refused(s, "buildings", path, "outside every administrative grid")


def test_pipe_to_missing_node_is_refused(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    s, files = city
    lines = gpd.read_file(files["pipes"], layer="pipes")
    lines.loc[1, "to_node"] = "YSJ-99"
    path = tinycity.write(lines, tmp_path / "lines.geojson")
    assert_refused(s, "pipes", path, "YSJ-99", "does not exist")


def test_database_constraints_are_the_last_line(city: tuple[Settings, dict[str, Path]]) -> None:
    s, _ = city
    with connect(s) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE pipes SET diameter_mm = -1 WHERE code = 'YS-1'")
    # A grid whose parent is not the prefix of its code.
    with connect(s) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO admin_units (code, level, name, parent_code, geom) VALUES "
            "('44030500700103', 'grid', 'x', '440305007002', ST_Multi(ST_MakeEnvelope(0,0,1,1,4547)))"
        )


def test_cli_reports_a_bad_file_with_exit_code_1(city: tuple[Settings, dict[str, Path]], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    s, _ = city
    frame = tinycity.buildings_frame()
    frame.loc[1, "building_code"] = tinycity.GRID_A + "00009"
    path = tinycity.buildings(tmp_path, frame, name="cli_mismatch.gpkg")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(s.home), "CIM_DATABASE_URL": str(s.database_url)})
    before = fingerprint(s)
    res = subprocess.run(
        [str(Path(sys.executable).parent / "cim"), "ingest", "buildings", str(path)],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.startswith("error: cli_mismatch.gpkg (buildings) feature 2: building ")
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr and "lies in grid " + tinycity.GRID_B in res.stderr
    assert fingerprint(s) == before
    ok = subprocess.run(
        [str(Path(sys.executable).parent / "cim"), "ingest", "buildings", str(path), "--allow-rejects"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "rejected 1" in ok.stdout
