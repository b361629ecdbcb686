"""The demo district generator (no database): byte-identical output for a seed, counts at scale 1, valid
geometry, an exact administrative partition, codes that match their containing units and the contract,
gravity pipes that fall downstream, and consistent devices, observations and events."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely

from cim import model
from cim.codes import BUILDING_CODE_RE, EVENT_CODE_RE, HOUSE_CODE_RE, PARCEL_CODE_RE
from sample_data.generate import LAYER_FILES, SUMMARY_FILE, generate

END = pd.Timestamp("2026-11-01T00:00:00+08:00")
LEVEL_DIGITS = {"district": 6, "street": 9, "community": 12, "grid": 14}
PARENT_LEVEL = {"street": "district", "community": "street", "grid": "community"}
BUILDING_USES = set(model.BUILDING_USES)
NODE_KINDS = {"manhole", "valve", "junction", "outfall", "inlet", "hydrant", "meter", "pump_station"}
EVENT_CATEGORIES = {
    "environment",
    "noise",
    "traffic",
    "waterlogging",
    "illegal_construction",
    "fire_safety",
    "property_management",
    "road_facility",
    "public_order",
}
EVENT_STATUSES = {"reported", "dispatched", "in_progress", "resolved", "reopened", "closed", "rejected"}


@dataclass
class Demo:
    out: Path
    paths: dict[str, Path]
    summary: dict[str, Any]
    admin: gpd.GeoDataFrame
    parcels: gpd.GeoDataFrame
    buildings: gpd.GeoDataFrame
    nodes: gpd.GeoDataFrame
    pipes: gpd.GeoDataFrame
    devices: gpd.GeoDataFrame
    events: gpd.GeoDataFrame
    houses: pd.DataFrame
    observations: pd.DataFrame

    @property
    def district(self) -> shapely.Geometry:
        return self.admin.loc[self.admin.level == "district"].geometry.iloc[0]

    def level(self, name: str) -> gpd.GeoDataFrame:
        return self.admin.loc[self.admin.level == name].reset_index(drop=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = tmp_path_factory.mktemp("demo")
    paths = generate(out, scale=1)

    def read(layer: str, name: str | None = None) -> gpd.GeoDataFrame:
        return pyogrio.read_dataframe(paths[layer], layer=name)

    def read_csv(layer: str) -> pd.DataFrame:
        return pd.read_csv(paths[layer], dtype=str, keep_default_na=False, na_values=[""])

    return Demo(
        out=out,
        paths=paths,
        summary=json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8")),
        admin=read("admin"),
        parcels=read("parcels"),
        buildings=read("buildings"),
        nodes=read("pipes", "pipe_nodes"),
        pipes=read("pipes", "pipes"),
        devices=read("devices"),
        events=read("events"),
        houses=read_csv("houses"),
        observations=read_csv("observations"),
    )


def test_same_seed_gives_byte_identical_files(demo: Demo, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", scale=1)
    names = sorted(p.name for p in demo.out.iterdir())
    assert names == sorted([*LAYER_FILES.values(), SUMMARY_FILE])  # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == names
    for name in names:
        assert (demo.out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert {k: p.name for k, p in again.items()} == LAYER_FILES


def test_scale_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scale"):
        generate(tmp_path, scale=0)


def test_counts_at_scale_one_and_summary(demo: Demo) -> None:
    levels = demo.admin.level.value_counts().to_dict()
    assert levels["district"] == 1 and levels["street"] == 3
    assert 6 <= levels["community"] <= 10 and 35 <= levels["grid"] <= 45
    assert 250 <= len(demo.parcels) <= 350
    assert 4000 <= len(demo.buildings) <= 6000
    assert 50_000 <= len(demo.houses) <= 150_000
    assert 2500 <= len(demo.pipes) <= 3500
    assert 450 <= len(demo.devices) <= 550
    assert 150_000 <= len(demo.observations) <= 250_000
    assert 1800 <= len(demo.events) <= 2200

    counts = demo.summary["counts"]
    assert counts["admin"] == len(demo.admin)
    assert counts["parcels"] == len(demo.parcels)
    assert counts["buildings"] == len(demo.buildings)
    assert counts["buildings_without_code"] == int(demo.buildings.building_code.isna().sum())
    assert counts["houses"] == len(demo.houses)
    assert counts["pipe_nodes"] == len(demo.nodes) and counts["pipes"] == len(demo.pipes)
    assert counts["devices"] == len(demo.devices)
    assert counts["observations"] == len(demo.observations)
    assert counts["events"] == len(demo.events)
    area = math.fsum(shapely.area(demo.buildings.geometry.values).tolist())
    assert demo.summary["building_footprint_area_m2"] == pytest.approx(area, rel=1e-9)
    length = math.fsum(shapely.length(demo.pipes.geometry.values).tolist())
    assert demo.summary["pipe_length_m"] == pytest.approx(length, rel=1e-9)
    assert demo.summary["crs"] == "EPSG:4547"


def test_every_file_declares_epsg_4547(demo: Demo) -> None:
    for frame in (demo.admin, demo.parcels, demo.buildings, demo.nodes, demo.pipes, demo.devices, demo.events):
        assert frame.crs is not None and frame.crs.to_epsg() == 4547
    for layer in ("devices", "events"):
        doc = json.loads(demo.paths[layer].read_text(encoding="utf-8"))
        assert "4547" in doc["crs"]["properties"]["name"]
    # The district lies where Houhai is: Shenzhen's range in EPSG:4547.
    x0, y0, x1, y1 = demo.admin.total_bounds
    assert 480_000 < x0 < x1 < 560_000 and 2_480_000 < y0 < y1 < 2_530_000


def test_geometries_are_valid_and_include_special_shapes(demo: Demo) -> None:
    for frame in (demo.admin, demo.parcels, demo.buildings):
        geoms = frame.geometry.values
        assert shapely.is_valid(geoms).all()
        assert set(frame.geom_type) <= {"Polygon", "MultiPolygon"}
    b = demo.buildings.geometry.values
    parts = shapely.get_num_geometries(b)
    first = shapely.get_geometry(b, 0)
    holes = shapely.get_num_interior_rings(first)
    l_shaped = (parts == 1) & (holes == 0) & (shapely.get_num_coordinates(first) == 7)
    assert l_shaped.sum() >= 3
    assert ((parts == 1) & (holes >= 1)).sum() >= 3
    assert (parts >= 2).sum() >= 3
    # Footprints are realistic: guard houses of 20 m² and more, nothing wider than a shopping mall.
    assert shapely.area(b).min() >= 20
    width = demo.buildings.geometry.bounds
    assert ((width.maxx - width.minx) <= 150).all()


def test_admin_units_partition_their_parents(demo: Demo) -> None:
    codes = demo.admin.code.astype(str)
    assert codes.is_unique
    for level, digits in LEVEL_DIGITS.items():
        lvl = demo.level(level)
        assert lvl.code.str.fullmatch(rf"[0-9]{{{digits}}}").all(), level
        assert lvl.code.str.startswith("440305").all()
    grids = demo.level("grid")
    assert grids.code.str[-2:].astype(int).between(1, 99).all()
    assert (grids.name.str.fullmatch(r".+社区第[0-9]{2}网格")).all()
    assert demo.level("district").name.iloc[0] == "南山区"

    by_code = dict(zip(demo.admin.code, demo.admin.geometry, strict=True))
    for child, parent in PARENT_LEVEL.items():
        children = demo.level(child)
        parent_codes = children.code.str[: LEVEL_DIGITS[parent]]
        assert parent_codes.isin(demo.level(parent).code).all()
        for pcode, group in children.groupby(parent_codes):
            outer = by_code[pcode]
            assert shapely.covers(outer, group.geometry.values).all(), pcode
            total = math.fsum(shapely.area(group.geometry.values).tolist())
            assert total == pytest.approx(outer.area, rel=1e-6), pcode
        # No two siblings overlap (they may only share edges).
        tree = shapely.STRtree(children.geometry.values)
        a, b = tree.query(children.geometry.values, predicate="intersects")
        pairs = a < b
        overlap = shapely.area(
            shapely.intersection(children.geometry.values[a[pairs]], children.geometry.values[b[pairs]])
        )
        assert overlap.max(initial=0.0) < 1e-6


def test_parcels_lie_in_one_grid_and_buildings_in_one_parcel(demo: Demo) -> None:
    assert demo.parcels.code.str.match(PARCEL_CODE_RE).all() and demo.parcels.code.is_unique
    p = demo.parcels
    assert p.land_use.isin(["R1", "R2", "R3", "C1", "M0", "M1", "GIC2", "GIC3", "GIC4", "G1", "S1", "U1"]).all()
    assert (p.far_limit > 0).all() and (p.height_limit_m > 0).all()
    assert p.coverage_limit.between(0, 1).all()
    assert pd.to_datetime(p.approved_at, format="%Y-%m-%d").notna().all()

    grids = demo.level("grid")
    pi, _ = shapely.STRtree(grids.geometry.values).query(p.geometry.values, predicate="covered_by")
    assert np.bincount(pi, minlength=len(p)).tolist() == [1] * len(p)

    b = demo.buildings.geometry.values
    bi, parcel_of = shapely.STRtree(p.geometry.values).query(b, predicate="within")
    assert np.bincount(bi, minlength=len(b)).tolist() == [1] * len(b)
    assert shapely.contains_properly(p.geometry.values[parcel_of], b[bi]).all()
    # Footprints never overlap or touch one another.
    a, c = shapely.STRtree(b).query(b, predicate="intersects")
    assert (a == c).all()


def test_building_codes_follow_their_grid(demo: Demo) -> None:
    b = demo.buildings
    coded = b.loc[b.building_code.notna()]
    missing = 1 - len(coded) / len(b)
    assert 0.01 <= missing <= 0.03
    assert coded.building_code.str.match(BUILDING_CODE_RE).all() and coded.building_code.is_unique
    grids = demo.level("grid")
    bi, gi = shapely.STRtree(grids.geometry.values).query(coded.geometry.values, predicate="within")
    assert np.bincount(bi, minlength=len(coded)).tolist() == [1] * len(coded)
    assert (coded.building_code.str[:14].to_numpy()[bi] == grids.code.to_numpy()[gi]).all()
    number = coded.building_code.str[14:].astype(int)
    assert number.between(1, 99999).all()

    assert b.use.isin(BUILDING_USES).all()
    assert (b.height_source == "generated").all() and b.source_id.is_unique
    assert (b.height_m > 0).all() and (b.storeys >= 1).all()
    per_storey = b.height_m / b.storeys
    assert per_storey.between(2.95, 4.55).all()
    assert b.ground_elevation_m.between(2.0, 15.0).all()
    assert pd.to_datetime(b.valid_from, format="%Y-%m-%d").max() <= pd.Timestamp("2026-11-01")


def test_a_few_buildings_breach_planning_controls(demo: Demo) -> None:
    p = demo.parcels.reset_index(drop=True)
    b = demo.buildings.geometry.values
    bi, parcel_of = shapely.STRtree(p.geometry.values).query(b, predicate="within")
    parcel = np.empty(len(b), dtype=np.int64)
    parcel[bi] = parcel_of
    floor_area = shapely.area(b) * demo.buildings.storeys.to_numpy()
    far = np.bincount(parcel, weights=floor_area, minlength=len(p)) / shapely.area(p.geometry.values)
    over_far = far > p.far_limit.to_numpy()
    over_height = demo.buildings.height_m.to_numpy() > p.height_limit_m.to_numpy()[parcel]
    breach = over_height | over_far[parcel]
    assert over_height.sum() >= 10 and over_far.sum() >= 3
    assert 0.02 <= breach.mean() <= 0.05
    assert demo.summary["planning"]["buildings_in_breach"] == int(breach.sum())


def test_houses_belong_to_coded_residential_buildings(demo: Demo) -> None:
    h = demo.houses
    assert list(h.columns) == ["house_code", "storey", "area_m2", "use"]
    assert h.house_code.str.match(HOUSE_CODE_RE).all() and h.house_code.is_unique
    homes = demo.buildings.loc[demo.buildings.use.isin(["residential", "mixed"])]
    assert h.house_code.str[:19].isin(homes.building_code.dropna()).all()
    storey = h.storey.astype(int)
    assert (storey >= 1).all()
    assert (h.house_code.str[19:].astype(int) // 100 == storey).all()
    assert (h.area_m2.astype(float) > 0).all()
    assert h.area_m2.str.fullmatch(r"[0-9]+\.[0-9]{2}").all()


def test_pipes_connect_nodes_and_gravity_pipes_fall_downstream(demo: Demo) -> None:
    n, p = demo.nodes, demo.pipes
    assert n.code.is_unique and p.code.is_unique
    assert n.code.str.fullmatch(r"[A-Z]+-[0-9]{6}").all() and p.code.str.fullmatch(r"[A-Z]+-[0-9]{6}").all()
    assert n.kind.isin(NODE_KINDS).all()
    assert set(p.network) == {"rain", "sewage", "water"}
    assert (n.invert_elevation_m <= n.ground_elevation_m).all()
    assert shapely.contains_properly(demo.district, n.geometry.values).all()

    idx = pd.Series(np.arange(len(n)), index=n.code)
    a, b = idx[p.from_node].to_numpy(), idx[p.to_node].to_numpy()
    assert (n.network.to_numpy()[a] == p.network).all() and (n.network.to_numpy()[b] == p.network).all()
    start = shapely.get_point(p.geometry.values, 0)
    end = shapely.get_point(p.geometry.values, -1)
    assert shapely.equals_exact(start, n.geometry.values[a], tolerance=0).all()
    assert shapely.equals_exact(end, n.geometry.values[b], tolerance=0).all()
    assert (p.start_invert_m >= n.invert_elevation_m.to_numpy()[a] - 1e-9).all()
    assert (p.end_invert_m >= n.invert_elevation_m.to_numpy()[b] - 1e-9).all()

    gravity = p.network.isin(["rain", "sewage"]).to_numpy()
    length = shapely.length(p.geometry.values)
    slope = (p.start_invert_m - p.end_invert_m).to_numpy() / length
    assert (p.start_invert_m > p.end_invert_m)[gravity].all()
    assert slope[gravity].min() >= 0.001 - 1e-9 and slope[gravity].max() <= 0.01 + 1e-9
    assert length[gravity].min() >= 30 - 1e-6 and length[gravity].max() <= 50
    depth = (n.ground_elevation_m - n.invert_elevation_m)[n.network.isin(["rain", "sewage"])]
    assert depth.between(1.5, 6.0).all()
    assert p.diameter_mm[gravity].between(300, 1500).all()
    assert p.material[p.network == "rain"].isin(["RC", "HDPE"]).all()
    # Every gravity pipe's downstream pipe is at least as wide; every tree ends in an outfall or pump.
    out_pipe = pd.Series(np.arange(len(p))[gravity], index=p.from_node[gravity])
    assert out_pipe.index.is_unique
    nxt = out_pipe.reindex(p.to_node[gravity]).to_numpy()
    has_next = ~np.isnan(nxt)
    d = p.diameter_mm.to_numpy()
    assert (d[nxt[has_next].astype(int)] >= d[gravity][has_next]).all()
    ends = p.to_node[gravity][~has_next]
    assert n.set_index("code").kind[ends].isin(["outfall", "pump_station"]).all()
    assert (n.kind[n.network == "rain"] == "outfall").sum() >= 3

    water = ~gravity
    assert p.diameter_mm[water].between(100, 600).all()
    assert p.material[water].isin(["DI", "PE"]).all()
    wdepth = (n.ground_elevation_m - n.invert_elevation_m)[n.network == "water"]
    assert wdepth.between(0.99, 1.51).all()
    assert {"valve", "junction", "hydrant"} <= set(n.kind[n.network == "water"])


def test_devices_sit_in_the_district_and_link_to_things(demo: Demo) -> None:
    d = demo.devices
    assert d.code.is_unique and d.code.str.fullmatch(r"[A-Z]+-[0-9]{5}").all()
    assert set(d.kind) == {"water_level", "rain_gauge", "charging_pile", "camera", "air_quality"}
    assert d.status.isin(["online", "offline", "fault", "retired"]).all()
    assert (d.status == "online").mean() > 0.8
    assert shapely.contains_properly(demo.district, d.geometry.values).all()
    assert pd.to_datetime(d.installed_at, format="%Y-%m-%d").max() < pd.Timestamp("2026-10-01")

    wl = d.loc[d.kind == "water_level"]
    nodes = demo.nodes.set_index("code")
    assert (nodes.kind[wl.pipe_node_code] == "manhole").all()
    assert shapely.equals_exact(wl.geometry.values, nodes.geometry[wl.pipe_node_code].values, tolerance=1e-3).all()
    cp = d.loc[d.kind == "charging_pile"]
    owners = demo.buildings.set_index(demo.buildings.building_code.fillna("")).use
    assert owners[cp.building_code].isin(["commercial", "office", "mixed"]).all()
    # Piles stand outside footprints, close to their building.
    assert not shapely.STRtree(demo.buildings.geometry.values).query(cp.geometry.values, predicate="within").size
    assert d.loc[~d.kind.isin(["water_level"]), "pipe_node_code"].isna().all()


def test_observations_cover_30_days_with_storms(demo: Demo) -> None:
    o = demo.observations
    assert list(o.columns) == ["device_code", "observed_at", "property", "value"]
    assert o.device_code.isin(demo.devices.code).all()
    t = pd.to_datetime(o.observed_at, format="ISO8601")
    assert t.max() == END and t.min() > END - pd.Timedelta(days=30)
    assert o.observed_at.str.endswith("+08:00").all()
    kind = o.device_code.map(demo.devices.set_index("code").kind)
    expected = {
        "water_level": {"water_level_m"},
        "rain_gauge": {"rainfall_mm"},
        "air_quality": {"pm25_ugm3", "pm10_ugm3"},
        "charging_pile": {"power_kw", "occupied"},
    }
    for k, props in expected.items():
        assert set(o.property[kind == k]) == props
    assert not (kind == "camera").any()
    decimals = {"water_level_m": 3, "rainfall_mm": 1, "pm25_ugm3": 1, "pm10_ugm3": 1, "power_kw": 2}
    for prop, places in decimals.items():
        assert o.value[o.property == prop].str.fullmatch(rf"[0-9]+\.[0-9]{{{places}}}").all(), prop
    assert o.value[o.property == "occupied"].isin(["0", "1"]).all()

    value = o.value.astype(float)
    level = pd.DataFrame({"device": o.device_code, "t": t, "v": value})[o.property == "water_level_m"]
    high = level[level.v > 0.3]
    assert 0.001 < len(high) / len(level) < 0.05  # mostly low
    assert high.device.nunique() >= 3 and high.groupby("device").size().max() >= 4  # a few, for a while
    rain = pd.DataFrame({"t": t, "v": value})[o.property == "rainfall_mm"]
    wet_days = rain[rain.v >= 5].t.dt.tz_convert("Asia/Shanghai").dt.date.nunique()
    assert 2 <= wet_days <= 8
    # Water levels peak when it rains.
    rain_by_t = rain.groupby("t").v.mean()
    level_by_t = level.groupby("t").v.mean()
    assert level_by_t.corr(rain_by_t.reindex(level_by_t.index)) > 0.3


def test_events_are_consistent_and_clustered(demo: Demo) -> None:
    e = demo.events
    assert e.code.str.match(EVENT_CODE_RE).all() and e.code.is_unique
    assert set(e.category) == EVENT_CATEGORIES
    assert set(e.status) == EVENT_STATUSES
    assert shapely.contains_properly(demo.district, e.geometry.values).all()
    reported = pd.to_datetime(e.reported_at, format="ISO8601")
    updated = pd.to_datetime(e.updated_at, format="ISO8601")
    due = pd.to_datetime(e.due_at, format="ISO8601")
    closed = pd.to_datetime(e.closed_at, format="ISO8601")
    assert (reported < END).all() and (reported >= END - pd.Timedelta(days=90)).all()
    assert (e.code.str[2:10] == reported.dt.tz_convert("Asia/Shanghai").dt.strftime("%Y%m%d")).all()
    assert (updated >= reported).all() and (updated <= END).all() and (due > reported).all()
    is_closed = e.status == "closed"
    assert closed.notna().eq(is_closed).all()
    assert (closed[is_closed] == updated[is_closed]).all()
    assert e.department[e.status.isin(["dispatched", "in_progress", "resolved", "closed"])].notna().all()
    assert e.department[e.status == "reported"].isna().all()
    assert (e.reopen_count >= 0).all() and (e.reopen_count >= 2).sum() >= 5
    assert (e.reopen_count[e.status == "reopened"] >= 1).all()
    contact = e.reporter_contact.dropna()
    assert len(contact) > 0.8 * len(e) and contact.str.fullmatch(r"1[0-9]{2}\*{4}[0-9]{4}").all()
    assert re.search(r"[\u4e00-\u9fff]", "".join(e.description.head(50)))
    coded = e.building_code.dropna()
    assert 0.2 * len(e) < len(coded) and coded.isin(demo.buildings.building_code).all()

    # Waterlogging clusters: a few 100 m cells hold a large share of the cases.
    wl = e.loc[e.category == "waterlogging"].geometry
    cells = pd.Series(list(zip((wl.x // 100).astype(int), (wl.y // 100).astype(int), strict=True)))
    top = cells.value_counts().head(5).sum()
    assert top >= 0.2 * len(wl)
