"""``cim heights from-dsm``: synthetic DSM/DTM GeoTIFFs over the hand-made tiny city, with known building
heights, sloped ground, noise and antenna spikes, give those heights back within 0.1 m; buildings without
coverage are untouched and counted; changed buildings get a history row."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.transform import from_origin
from shapely.geometry import box

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.city_layers import ingest_files
from ingest.errors import IngestError
from ingest.heights_from_dsm import group_statistic, heights_from_dsm, parse_statistic
from ingest.raster import ingest_raster

import tinycity
from cliharness import run_cli
from dbcheck import fingerprint

X0, Y0 = tinycity.X0, tinycity.Y0
RES = 0.5
# The DSM covers x X0+50..X0+450, y Y0+50..Y0+450: most of grid A; grid B (with the slab b2) is outside.
DSM_LEFT, DSM_TOP, DSM_SIZE = X0 + 50, Y0 + 450, 800
TRUE_HEIGHTS = {"b1": 24.0, "b3": 15.5, "b4": 21.25}  # the 20x20 square, the L shape, the courtyard
NODATA = -9999.0


def ground(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sloped terrain (1 % east, 0.5 % north) in EPSG:4547 metres."""
    return 5.0 + 0.01 * (x - X0) + 0.005 * (y - Y0)


def city_buildings() -> gpd.GeoDataFrame:
    """The tiny city's four buildings and three that must stay untouched: most of one footprint in a nodata
    hole, one smaller than 8 pixels, and one demolished (DSM = DTM there)."""
    base = tinycity.buildings_frame()
    extra = gpd.GeoDataFrame(
        {
            "building_code": [None, None, None],
            "name": ["遮挡楼", "小亭", "拆除楼"],
            "use": ["other", "public", "industrial"],
            "height_m": [18.0, 3.0, 7.0],
            "storeys": [6, 1, 2],
            "ground_elevation_m": [5.0, 5.0, 5.0],
            "source_id": ["b5", "b6", "b7"],
            "owner": [None, None, None],
        },
        geometry=[
            box(X0 + 150, Y0 + 300, X0 + 170, Y0 + 320),
            box(X0 + 400.2, Y0 + 400.2, X0 + 401.2, Y0 + 401.2),
            box(X0 + 120, Y0 + 380, X0 + 150, Y0 + 400),
        ],
        crs=tinycity.SRID,
    )
    return gpd.GeoDataFrame(pd.concat([base, extra], ignore_index=True), crs=tinycity.SRID)


def write(path: Path, data: np.ndarray, crs: str, transform: object) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": "float32"}
    with rasterio.open(path, "w", crs=crs, transform=transform, nodata=NODATA, **profile) as ds:
        ds.write(data.astype("float32"), 1)
    return path


def synthetic_rasters(out: Path, frame: gpd.GeoDataFrame, dtm_in_utm: bool) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    transform = from_origin(DSM_LEFT, DSM_TOP, RES, RES)
    cols, rows = np.meshgrid(np.arange(DSM_SIZE) + 0.5, np.arange(DSM_SIZE) + 0.5)
    x, y = DSM_LEFT + cols * RES, DSM_TOP - rows * RES
    terrain = ground(x, y)
    shapes = [
        (geom, TRUE_HEIGHTS[sid])
        for geom, sid in zip(frame.geometry, frame.source_id, strict=True)
        if sid in TRUE_HEIGHTS
    ]
    shapes.append((frame.geometry[frame.source_id == "b5"].iloc[0], 18.0))
    raised = rasterize(shapes, out_shape=terrain.shape, transform=transform, fill=0.0, dtype="float64")
    dsm = terrain + raised + rng.normal(0.0, 0.03, terrain.shape)
    # Antennas and matching spikes on 3 % of the pixels of building b1; a nodata hole over 70 % of b5.
    b1 = rasterize([frame.geometry[frame.source_id == "b1"].iloc[0]], out_shape=terrain.shape, transform=transform)
    spikes = (b1 > 0) & (rng.random(terrain.shape) < 0.03)
    dsm[spikes] += 15.0
    hole = rasterize([box(X0 + 150, Y0 + 306, X0 + 170, Y0 + 320)], out_shape=terrain.shape, transform=transform)
    dsm[hole > 0] = NODATA
    dsm_path = write(out / "dsm.tif", dsm, "EPSG:4547", transform)
    if not dtm_in_utm:
        return dsm_path, write(out / "dtm.tif", terrain, "EPSG:4547", transform)
    # The same terrain on a 1 m grid in UTM 50N (WGS84): the DTM is warped onto the DSM's grid.
    to_gk = pyproj.Transformer.from_crs("EPSG:32650", "EPSG:4547", always_xy=True)
    to_utm = pyproj.Transformer.from_crs("EPSG:4547", "EPSG:32650", always_xy=True)
    ux, uy = to_utm.transform([X0, X0 + 500], [Y0, Y0 + 500])
    left, top = float(np.floor(min(ux))) - 20, float(np.ceil(max(uy))) + 20
    size = int(max(ux) - min(ux) + 40)
    ucols, urows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    gx, gy = to_gk.transform(left + ucols, top - urows)
    return dsm_path, write(
        out / "dtm.tif", ground(np.asarray(gx), np.asarray(gy)), "EPSG:32650", from_origin(left, top, 1, 1)
    )


@pytest.fixture(params=[False, True], ids=["dtm-same-grid", "dtm-utm-1m"])
def city(fresh_settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    s = fresh_settings.model_copy(update={"home": tmp_path / "home"})
    ensure_database(s)
    frame = city_buildings()
    ingest_files("admin", [tinycity.admin(tmp_path)], settings=s)
    ingest_files("buildings", [tinycity.buildings(tmp_path, frame)], settings=s)
    dsm, dtm = synthetic_rasters(tmp_path, frame, dtm_in_utm=request.param)
    ingest_raster(dsm, "dsm", name="dsm", settings=s)
    ingest_raster(dtm, "dtm", name="dtm", settings=s)
    return s


def buildings(s: Settings) -> dict[str, tuple[float, str, int, int]]:
    with connect(s) as conn:
        rows = conn.execute("SELECT source_id, height_m, height_source, storeys, version FROM buildings").fetchall()
    return {r[0]: (float(r[1]), r[2], int(r[3]), int(r[4])) for r in rows}


def test_heights_come_back_within_10_cm_and_the_rest_is_untouched(city: Settings) -> None:
    before = buildings(city)
    report = heights_from_dsm("dsm", "dtm", settings=city)
    assert (report.buildings, report.measured, report.changed) == (7, 3, 3)
    assert (report.outside_rasters, report.too_few_pixels, report.implausible, report.untouched) == (1, 2, 1, 4)
    after = buildings(city)
    for sid, height in TRUE_HEIGHTS.items():
        assert after[sid][0] == pytest.approx(height, abs=0.1), sid
        assert after[sid][1:] == ("dsm", before[sid][2], 2)  # storeys kept, a new version
    for sid in ("b2", "b5", "b6", "b7"):  # outside, in a nodata hole, too small, demolished
        assert after[sid] == before[sid], sid
    with connect(city) as conn:
        history = conn.execute(
            "SELECT b.source_id, h.version, h.change, h.height_m, h.height_source FROM building_history h "
            "JOIN buildings b USING (building_code) ORDER BY source_id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[4]) for r in history] == [(s, 1, "altered", "survey") for s in ("b1", "b3", "b4")]
    assert [r[3] for r in history] == [before[s][0] for s in ("b1", "b3", "b4")]
    # The same rasters again change nothing (heights are rounded to centimetres).
    again = heights_from_dsm("dsm", "dtm", settings=city)
    assert (again.measured, again.changed) == (3, 0)
    assert buildings(city) == after
    # With the 10th percentile any ground pixel inside a footprint would show: the courtyard's hole must not.
    low = heights_from_dsm("dsm", "dtm", statistic="p10", settings=city)
    assert low.measured == 3
    for sid, height in TRUE_HEIGHTS.items():
        assert buildings(city)[sid][0] == pytest.approx(height, abs=0.1), sid


def test_group_statistic_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, 20_000)
    values = rng.normal(10, 3, ids.size)
    for stat in ("p90", "median", "p1", "p100", "mean", "max"):
        got, counts = group_statistic(ids, values, 52, parse_statistic(stat))
        assert np.isnan(got[50:]).all() and (counts[50:] == 0).all()
        for g in (0, 17, 49):
            mine = values[ids == g]
            if stat == "mean":
                expected = mine.mean()
            elif stat == "max":
                expected = mine.max()
            else:
                expected = np.percentile(mine, float(parse_statistic(stat)))
            assert got[g] == pytest.approx(expected, rel=1e-12), stat


def test_bad_requests_change_nothing(fresh_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = fresh_settings.model_copy(update={"home": tmp_path / "home"})
    ensure_database(s)
    frame = city_buildings()
    ingest_files("admin", [tinycity.admin(tmp_path)], settings=s)
    ingest_files("buildings", [tinycity.buildings(tmp_path, frame)], settings=s)
    dsm, dtm = synthetic_rasters(tmp_path, frame, dtm_in_utm=False)
    ingest_raster(dsm, "dsm", name="dsm", settings=s)
    ingest_raster(dtm, "dtm", name="dtm", settings=s)
    before = fingerprint(s)
    for args, message in [
        (("nope", "dtm"), "--dsm nope: no raster of that name"),
        (("dtm", "dsm"), "--dsm dtm: is a dtm raster, not a dsm"),
        (("dsm", "dsm"), "both name dsm"),
    ]:
        with pytest.raises(IngestError, match=message):
            heights_from_dsm(*args, settings=s)
    with pytest.raises(IngestError, match="unknown statistic 'p900'"):
        heights_from_dsm("dsm", "dtm", statistic="p900", settings=s)
    # A dry run through the CLI reports what it would change and writes nothing.
    report_file = tmp_path / "heights.json"
    cmd = ["heights", "from-dsm", "--dsm", "dsm", "--dtm", "dtm"]
    res = run_cli(s, monkeypatch, *cmd, "--dry-run", "--report", str(report_file))
    assert res.exit_code == 0, res.stderr
    assert "3 of 7 buildings measured, would change 3; left untouched 4" in res.stdout
    report = json.loads(report_file.read_text())
    assert report["ok"] and report["dry_run"] and report["untouched"] == 4
    assert fingerprint(s) == before
    bad = run_cli(s, monkeypatch, *cmd[:-1], "missing")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: --dtm missing: no raster")
    assert fingerprint(s) == before
