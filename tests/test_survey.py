"""Change surveys: a new survey of an area gives new versions to changed buildings, demolishes the missing
ones and adds new ones, all dated at the survey; re-running it changes nothing; ``cim changes`` lists it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.affinity import translate
from shapely.geometry import box

from cim.db import connect, ensure_database
from cim.settings import Settings
from cim.store.history import building_changes
from ingest.city_layers import ingest_files
from ingest.errors import IngestError
from ingest.load import LayerReport

import tinycity
from dbcheck import fingerprint

GRID_A, GRID_B = tinycity.GRID_A, tinycity.GRID_B


def survey_frame() -> gpd.GeoDataFrame:
    """The 2025 survey: b1 grew to 36 m, b2 (uncoded) redrawn 0.2 m east, b3 gone, b4 as it was, b5 new."""
    frame = tinycity.buildings_frame()
    frame.loc[0, "height_m"] = 36.0
    frame.loc[1, "geometry"] = translate(frame.geometry[1], 0.2, 0)
    frame = frame.drop(index=2)
    new = tinycity.buildings_frame().iloc[[0]].copy()
    new["building_code"] = None
    new["name"] = "新楼"
    new["source_id"] = "b5"
    new["geometry"] = [box(tinycity.X0 + 400, tinycity.Y0 + 100, tinycity.X0 + 420, tinycity.Y0 + 130)]
    return gpd.GeoDataFrame(gpd.pd.concat([frame, new], ignore_index=True), geometry="geometry", crs=tinycity.SRID)


def survey_city(s: Settings, out: Path) -> LayerReport:
    """Load the tiny city surveyed on 2024-01-01, then its 2025-06-30 survey (`survey_frame`) into ``s``;
    returns the 2025 load's report. Also used by the API tests of buildings through time."""
    ensure_database(s)
    files = tinycity.write_all(out / "city")
    for kind in ("admin", "parcels"):
        ingest_files(kind, [files[kind]], settings=s)
    ingest_files("buildings", [files["buildings"]], settings=s, survey_date="2024-01-01")
    path = tinycity.buildings(out, survey_frame(), name="survey2025.gpkg")
    return ingest_files("buildings", [path], settings=s, survey_date="2025-06-30")[0]


@pytest.fixture()
def surveyed(fresh_settings: Settings, tmp_path: Path) -> Settings:
    s = fresh_settings
    report = survey_city(s, tmp_path)
    assert (report.inserted, report.updated, report.unchanged, report.deleted) == (1, 2, 1, 1), report.summary()
    return s


def q(s: Settings, sql: str) -> list[tuple[object, ...]]:
    with connect(s) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def test_versions_are_dated_at_the_surveys(surveyed: Settings) -> None:
    s = surveyed
    b1, b2, b3 = GRID_A + "00001", GRID_B + "00001", GRID_A + "00002"
    rows = q(
        s,
        "SELECT version, height_m, (valid_from AT TIME ZONE 'Asia/Shanghai')::date::text FROM buildings "
        f"WHERE building_code = '{b1}'",
    )
    assert rows == [(2, 36.0, "2025-06-30")]
    hist = q(
        s,
        "SELECT version, change, (valid_to AT TIME ZONE 'Asia/Shanghai')::date::text FROM building_history "
        f"WHERE building_code = '{b1}'",
    )
    assert hist == [(1, "altered", "2025-06-30")]
    # The redrawn uncoded building kept its code (matched by overlap), the demolished one is closed.
    assert q(s, f"SELECT version FROM buildings WHERE building_code = '{b2}'") == [(2,)]
    assert q(s, f"SELECT count(*) FROM buildings WHERE building_code = '{b3}'") == [(0,)]
    assert q(s, f"SELECT change FROM building_history WHERE building_code = '{b3}'") == [("demolished",)]
    # The new building got the next free number of grid A (00004: 00001-00003 are taken, even the demolished).
    assert q(s, "SELECT building_code FROM buildings WHERE name = '新楼'") == [(GRID_A + "00004",)]


def test_rerunning_a_survey_changes_nothing(surveyed: Settings, tmp_path: Path) -> None:
    before = fingerprint(surveyed)
    path = tinycity.buildings(tmp_path, survey_frame(), name="survey2025.gpkg")
    report = ingest_files("buildings", [path], settings=surveyed, survey_date="2025-06-30")[0]
    assert (report.inserted, report.updated, report.deleted) == (0, 0, 0)
    assert fingerprint(surveyed) == before


def test_changes_between_dates(surveyed: Settings) -> None:
    with connect(surveyed) as conn:
        year = building_changes(conn, "2025-01-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00")
        first = building_changes(conn, "2024-01-01T00:00:00+08:00", "2024-01-02T00:00:00+08:00")
        grid_b = building_changes(conn, "2025-01-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00", GRID_B)
    kinds = sorted((r["change_type"], r["building_code"]) for r in year)
    assert kinds == [
        ("added", GRID_A + "00004"),
        ("altered", GRID_A + "00001"),
        ("altered", GRID_B + "00001"),
        ("demolished", GRID_A + "00002"),
    ]
    assert sorted(r["change_type"] for r in first) == ["added"] * 4
    assert [(r["change_type"], r["building_code"]) for r in grid_b] == [("altered", GRID_B + "00001")]


def test_cli_changes_and_survey_guards(surveyed: Settings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(surveyed.home), "CIM_DATABASE_URL": str(surveyed.database_url)})
    cim = str(Path(sys.executable).parent / "cim")
    res = subprocess.run(
        [cim, "changes", "--from", "2025-01-01", "--to", "2025-12-31"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("added 1, altered 2, demolished 1")
    assert "demolished 4403050070010100002" in " ".join(res.stdout.split())
    bad = subprocess.run(
        [cim, "changes", "--from", "2025-13-01", "--to", "2025-12-31"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "must be dates" in bad.stderr
    path = tinycity.buildings(tmp_path, survey_frame(), name="s.gpkg")
    with pytest.raises(IngestError, match="cannot be used with --survey-date"):
        ingest_files("buildings", [path], settings=surveyed, survey_date="2025-06-30", allow_rejects=True)
    with pytest.raises(IngestError, match="is not a date"):
        ingest_files("buildings", [path], settings=surveyed, survey_date="30/06/2025")
