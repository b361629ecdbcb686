"""CIM answers, proximity and change endpoints over real HTTP (``cim serve``), each answer checked against an
independent computation: SQL written another way (spatial joins instead of the code links, areas from the
geometries instead of the stored columns, brute-force distances instead of the KNN index) or shapely.

The demo district answers most questions; a small city of our own (tinycity, plus pipes that cross its
parcels, a 2025 change survey and a two-storey IFC house) answers the clipped pipe lengths, the change list
and the BIM summary, in a database of its own so the shared demo is not disturbed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import LineString, Point, box, shape

from api.routers.answer_models import (
    BuildingProfile,
    ChangeCollection,
    FeatureCollection,
    LocateAnswer,
    ParcelContents,
    ProximityCollection,
    UnitSummary,
)
from api.routers.proximity import Collection
from cim.db import connect, ensure_database
from cim.settings import Settings
from cim.store.proximity import PROXIMITY_COLLECTIONS
from ingest.city_layers import ingest_files
from ingest.ifc import ingest_ifc, open_ifc
from ingest.ifc_georef import parse_anchor

import tinycity
from conftest import new_database
from server import api_server

FINISHED = ("closed", "rejected")
TO_LONLAT = pyproj.Transformer.from_crs(4547, 4326, always_xy=True)
TO_STORAGE = pyproj.Transformer.from_crs(4326, 4547, always_xy=True)


def to_storage(geometry: dict[str, Any]) -> shapely.Geometry:
    """A CRS84 GeoJSON geometry in EPSG:4547, by pyproj (independent of PostGIS)."""
    return shapely.transform(shape(geometry), lambda xy: np.column_stack(TO_STORAGE.transform(xy[:, 0], xy[:, 1])))


def q(s: Settings, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with connect(s) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def api(settings: Settings, demo_loaded: str) -> Iterator[httpx.Client]:
    with (
        api_server({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"}) as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        yield client


def get_ok(api: httpx.Client, url: str, params: dict[str, Any] | None = None) -> Any:
    res = api.get(url, params=params)
    assert res.status_code == 200, (url, res.status_code, res.text[:500])
    return res.json()


# --------------------------------------------------------------------------------------------------------
# GET /parcels/{code}/contents


def sample_parcels(s: Settings) -> list[str]:
    """The parcel with the most buildings, ones over their FAR and height limits, ones with devices and open
    events, and one with no building: every branch of the answer."""
    rows = q(
        s,
        """
        (SELECT parcel_code FROM buildings GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1)
        UNION (SELECT p.code FROM parcels p JOIN buildings b ON b.parcel_code = p.code
                GROUP BY p.code, p.area_m2, p.far_limit HAVING sum(b.floor_area_m2) / p.area_m2 > p.far_limit
                ORDER BY 1 LIMIT 2)
        UNION (SELECT parcel_code FROM buildings b JOIN parcels p ON p.code = b.parcel_code
                WHERE b.height_m > p.height_limit_m ORDER BY 1 LIMIT 2)
        UNION (SELECT parcel_code FROM devices WHERE parcel_code IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 2)
        UNION (SELECT parcel_code FROM events WHERE parcel_code IS NOT NULL AND status = 'reported'
                GROUP BY 1 ORDER BY count(*) DESC LIMIT 2)
        UNION (SELECT code FROM parcels p WHERE NOT EXISTS (SELECT 1 FROM buildings b WHERE b.parcel_code = p.code)
                ORDER BY 1 LIMIT 1)
        """,
    )
    return sorted({r[0] for r in rows})


def independent_contents(s: Settings, code: str) -> dict[str, Any]:
    """The parcel's figures by spatial joins (interior points in the parcel) and areas from geometry."""
    ((area, far_limit, height_limit, coverage_limit),) = q(
        s, "SELECT ST_Area(geom), far_limit, height_limit_m, coverage_limit FROM parcels WHERE code = %s", (code,)
    )
    buildings = q(
        s,
        """
        SELECT b.building_code, ST_Area(b.footprint), ST_Area(b.footprint) * b.storeys, b.height_m
          FROM buildings b JOIN parcels p ON ST_Contains(p.geom, ST_PointOnSurface(b.footprint))
         WHERE p.code = %s
        """,
        (code,),
    )
    devices = q(
        s,
        "SELECT d.kind FROM devices d JOIN parcels p ON ST_Contains(p.geom, d.geom) WHERE p.code = %s",
        (code,),
    )
    events = q(
        s,
        "SELECT e.category, e.status FROM events e JOIN parcels p ON ST_Contains(p.geom, e.geom) WHERE p.code = %s",
        (code,),
    )
    floor = math.fsum(b[2] for b in buildings)
    footprint = math.fsum(b[1] for b in buildings)
    return {
        "area": area,
        "limits": (far_limit, height_limit, coverage_limit),
        "codes": sorted(b[0] for b in buildings),
        "floor": floor,
        "footprint": footprint,
        "far": floor / area,
        "coverage": footprint / area,
        "max_height": max((b[3] for b in buildings), default=None),
        "over_height": sorted(b[0] for b in buildings if height_limit is not None and b[3] > height_limit),
        "devices": dict(Counter(d[0] for d in devices)),
        "open_events": dict(Counter(e[0] for e in events if e[1] not in FINISHED)),
    }


def test_parcel_contents_match_spatial_sql(settings: Settings, api: httpx.Client) -> None:
    codes = sample_parcels(settings)
    assert len(codes) >= 6
    seen_violation = seen_empty = False
    for code in codes:
        doc = get_ok(api, f"/parcels/{code}/contents")
        ParcelContents.model_validate(doc)
        want = independent_contents(settings, code)
        got_b = doc["buildings"]
        assert sorted(b["code"] for b in got_b["items"]) == want["codes"]
        assert got_b["count"] == len(want["codes"])
        assert got_b["floor_area_m2"] == pytest.approx(want["floor"], rel=1e-9, abs=1e-6)
        c = doc["compliance"]
        assert c["far"]["achieved"] == pytest.approx(want["far"], rel=1e-9, abs=1e-12)
        assert c["coverage"]["achieved"] == pytest.approx(want["coverage"], rel=1e-9, abs=1e-12)
        assert c["height_m"]["achieved"] == want["max_height"]
        far_limit, height_limit, coverage_limit = want["limits"]
        expected = {
            name: (limit, achieved)
            for name, limit, achieved in (
                ("far", far_limit, want["far"]),
                ("coverage", coverage_limit, want["coverage"]),
                ("height_m", height_limit, want["max_height"]),
            )
            if limit is not None and achieved is not None and achieved > limit
        }
        got_v = {v["limit"]: v for v in c["violations"]}
        assert set(got_v) == set(expected), code
        for name, (limit, achieved) in expected.items():
            assert got_v[name]["limit_value"] == limit
            assert got_v[name]["excess"] == pytest.approx(achieved - limit, rel=1e-9, abs=1e-12)
        if "height_m" in got_v:
            assert sorted(got_v["height_m"]["buildings"]) == want["over_height"]
        assert sorted(b["code"] for b in got_b["items"] if b["over_height_limit"]) == want["over_height"]
        assert c["far"]["exceeded"] == ("far" in expected) and c["height_m"]["exceeded"] == ("height_m" in expected)
        assert doc["devices"]["by_kind"] == want["devices"]
        assert doc["devices"]["count"] == sum(want["devices"].values())
        assert doc["open_events"]["by_category"] == want["open_events"]
        # No demo pipe crosses a parcel (they run under the roads): the clipped length is exactly zero.
        assert doc["pipes"] == {"count": 0, "length_m": 0, "by_network": {}}
        seen_violation |= bool(expected)
        seen_empty |= not want["codes"]
    assert seen_violation and seen_empty


def test_parcel_contents_as_geojson(settings: Settings, api: httpx.Client) -> None:
    code = sample_parcels(settings)[0]
    res = api.get(f"/parcels/{code}/contents", params={"format": "geojson"})
    assert res.status_code == 200 and res.headers["content-type"] == "application/geo+json"
    fc = FeatureCollection.model_validate(res.json())
    layers = Counter(f.properties["layer"] for f in fc.features)
    want = independent_contents(settings, code)
    assert layers["parcel"] == 1 and layers["building"] == len(want["codes"])
    assert layers["device"] == sum(want["devices"].values())
    assert layers["event"] == sum(want["open_events"].values())
    parcel = next(f for f in fc.features if f.properties["layer"] == "parcel")
    area = to_storage(parcel.geometry.model_dump()).area
    assert area == pytest.approx(want["area"], rel=1e-4)  # coordinates are rounded to 1e-7° (~1 cm)
    assert sorted(f.id for f in fc.features if f.properties["layer"] == "building") == want["codes"]


# --------------------------------------------------------------------------------------------------------
# GET /locate


def test_locate_chain_at_building_interior_points(settings: Settings, api: httpx.Client) -> None:
    rows = q(
        settings,
        """
        SELECT b.building_code, b.parcel_code, ST_X(pt), ST_Y(pt)
          FROM (SELECT building_code, parcel_code, ST_PointOnSurface(footprint) AS pt FROM buildings
                 ORDER BY md5(building_code) LIMIT 12) b
        """,
    )
    names = dict(q(settings, "SELECT code, name FROM admin_units"))
    for code, parcel, x, y in rows:
        lon, lat = TO_LONLAT.transform(x, y)
        for params in ({"x": x, "y": y, "crs": "EPSG:4547"}, {"lon": lon, "lat": lat}):
            doc = get_ok(api, "/locate", params)
            LocateAnswer.model_validate(doc)
            chain = [doc[level]["code"] for level in ("district", "street", "community", "grid")]
            assert chain == [code[:6], code[:9], code[:12], code[:14]], (code, params)
            assert doc["grid"]["name"] == names[code[:14]]
            assert (doc["parcel"] or {}).get("code") == parcel
            assert doc["building"]["code"] == code
    # Outside the city every level is null.
    far = get_ok(api, "/locate", {"lon": 100.0, "lat": 30.0})
    assert [far[k] for k in ("district", "street", "community", "grid", "parcel", "building")] == [None] * 6


# --------------------------------------------------------------------------------------------------------
# GET /units/{code}


def _add_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    cats: dict[str, Counter[str]] = {}
    for st in stats:
        kinds.update(st["devices"]["by_kind"])
        for cat, oc in st["events"]["by_category"].items():
            cats.setdefault(cat, Counter()).update(oc)
    return {
        "buildings": sum(st["buildings"] for st in stats),
        "floor_area_m2": math.fsum(st["floor_area_m2"] for st in stats),
        "houses": sum(st["houses"] for st in stats),
        "by_kind": dict(kinds),
        "by_category": {c: dict(v) for c, v in cats.items()},
    }


def test_unit_rollups_sum_their_children_and_match_sql(settings: Settings, api: httpx.Client) -> None:
    (district,) = q(settings, "SELECT code FROM admin_units WHERE level = 'district'")[0]
    code = district
    for expected_child in ("street", "community", "grid"):
        doc = get_ok(api, f"/units/{code}")
        UnitSummary.model_validate(doc)
        assert doc["children_level"] == expected_child and doc["buildings"] is None
        want_children = [r[0] for r in q(settings, "SELECT code FROM admin_units WHERE parent_code = %s", (code,))]
        assert sorted(ch["code"] for ch in doc["children"]) == sorted(want_children)
        total = _add_stats([ch["stats"] for ch in doc["children"]])
        st = doc["stats"]
        assert (total["buildings"], total["houses"]) == (st["buildings"], st["houses"])
        assert total["floor_area_m2"] == pytest.approx(st["floor_area_m2"], rel=1e-9)
        assert total["by_kind"] == st["devices"]["by_kind"]
        assert {
            c: {"open": v.get("open", 0), "closed": v.get("closed", 0)} for c, v in total["by_category"].items()
        } == (st["events"]["by_category"])
        # The unit's own figures by another route: code prefixes and geometry-derived floor areas.
        prefix = code + "%"
        ((nb, floor),) = q(
            settings,
            "SELECT count(*), sum(ST_Area(footprint) * storeys) FROM buildings WHERE building_code LIKE %s",
            (prefix,),
        )
        ((nh,),) = q(settings, "SELECT count(*) FROM houses WHERE house_code LIKE %s", (prefix,))
        assert (st["buildings"], st["houses"]) == (nb, nh)
        assert st["floor_area_m2"] == pytest.approx(floor, rel=1e-9)
        kinds = dict(q(settings, "SELECT kind, count(*) FROM devices WHERE grid_code LIKE %s GROUP BY 1", (prefix,)))
        assert st["devices"]["by_kind"] == kinds and st["devices"]["count"] == sum(kinds.values())
        events = q(settings, "SELECT category, status FROM events WHERE grid_code LIKE %s", (prefix,))
        assert st["events"]["open"] == sum(1 for e in events if e[1] not in FINISHED)
        assert st["events"]["closed"] == sum(1 for e in events if e[1] in FINISHED)
        # Next level down: the child with the most buildings.
        code = max(doc["children"], key=lambda ch: ch["stats"]["buildings"])["code"]

    grid = get_ok(api, f"/units/{code}", {"limit": 7})
    assert grid["level"] == "grid" and grid["children"] == [] and grid["children_level"] == "building"
    page = grid["buildings"]
    assert page["count"] == grid["stats"]["buildings"] and len(page["items"]) == 7 and page["next_offset"] == 7
    counts_only = get_ok(api, f"/units/{code}", {"limit": 0})["buildings"]
    assert counts_only["items"] == [] and counts_only["next_offset"] is None and counts_only["count"] == page["count"]
    everything = get_ok(api, f"/units/{code}", {"limit": 10000})["buildings"]
    assert everything["next_offset"] is None
    assert [b["code"] for b in everything["items"][7:14]] == [
        b["code"] for b in get_ok(api, f"/units/{code}", {"limit": 7, "offset": 7})["buildings"]["items"]
    ]
    assert sum(b["houses"] for b in everything["items"]) == grid["stats"]["houses"]
    assert sorted(b["code"] for b in everything["items"]) == [
        r[0] for r in q(settings, "SELECT building_code FROM buildings WHERE grid_code = %s ORDER BY 1", (code,))
    ]


# --------------------------------------------------------------------------------------------------------
# GET /buildings/{code}


def test_building_profile(settings: Settings, api: httpx.Client) -> None:
    ((code, parcel),) = q(
        settings,
        """
        SELECT b.building_code, b.parcel_code FROM buildings b
         WHERE EXISTS (SELECT 1 FROM devices d WHERE d.building_code = b.building_code)
           AND EXISTS (SELECT 1 FROM events e WHERE e.building_code = b.building_code)
         ORDER BY (SELECT count(*) FROM houses h WHERE h.building_code = b.building_code) DESC, 1 LIMIT 1
        """,
    )
    doc = get_ok(api, f"/buildings/{code}", {"houses_limit": 5, "houses_offset": 3})
    BuildingProfile.model_validate(doc)
    houses = q(settings, "SELECT house_code, area_m2 FROM houses WHERE left(house_code, 19) = %s ORDER BY 1", (code,))
    assert doc["houses"]["count"] == len(houses) > 8
    assert doc["houses"]["area_m2"] == pytest.approx(math.fsum(h[1] for h in houses))
    assert [h["code"] for h in doc["houses"]["items"]] == [h[0] for h in houses[3:8]]
    assert doc["houses"]["next_offset"] == 8
    devices = q(settings, "SELECT code FROM devices WHERE building_code = %s ORDER BY 1", (code,))
    assert [d["code"] for d in doc["devices"]["items"]] == [d[0] for d in devices]
    events = q(settings, "SELECT category, status FROM events WHERE building_code = %s", (code,))
    assert doc["events"]["open"] + doc["events"]["closed"] == len(events)
    assert doc["events"]["open"] == len(doc["events"]["open_items"]) == sum(1 for e in events if e[1] not in FINISHED)
    # The parcel compliance is the very answer the parcel gives.
    assert doc["parcel_code"] == parcel
    assert doc["compliance"] == get_ok(api, f"/parcels/{parcel}/contents")["compliance"]
    assert doc["bim"] == {"models": [], "element_count": 0, "elements_by_class": {}, "storeys": []}
    assert shape(doc["geometry"]).is_valid


# --------------------------------------------------------------------------------------------------------
# GET /nearest and /within


def test_collection_parameter_lists_the_store_whitelist() -> None:
    from typing import get_args

    assert set(get_args(get_args(Collection)[0])) == set(PROXIMITY_COLLECTIONS)


def brute_force_distances(s: Settings, collection: str, x: float, y: float, kind: str | None = None) -> list[Any]:
    """Every feature's distance computed one by one (no index), sorted by distance then id."""
    c = PROXIMITY_COLLECTIONS[collection]
    rows = q(
        s,
        f"SELECT {c.key}, ST_Distance({c.geom}, ST_SetSRID(ST_MakePoint(%s, %s), 4547))"  # names from the whitelist
        f"{f' , {c.kind}' if c.kind else ', NULL'} FROM {c.table}",
        (x, y),
    )
    rows = [r for r in rows if kind is None or r[2] == kind]
    return sorted(rows, key=lambda r: (r[1], r[0]))


def test_nearest_and_within_match_brute_force(settings: Settings, api: httpx.Client) -> None:
    ((x, y),) = q(
        settings,
        "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Centroid(geom) c FROM admin_units WHERE level = 'district') d",
    )
    lon, lat = TO_LONLAT.transform(x + 123.4, y - 56.7)
    px, py = TO_STORAGE.transform(lon, lat)
    for collection in PROXIMITY_COLLECTIONS:
        want = brute_force_distances(settings, collection, px, py)
        doc = get_ok(api, "/nearest", {"collection": collection, "lon": lon, "lat": lat, "k": 25})
        ProximityCollection.model_validate(doc)
        got = [(f["id"], f["properties"]["distance_m"]) for f in doc["features"]]
        assert [g[0] for g in got] == [w[0] for w in want[:25]], collection
        assert [g[1] for g in got] == pytest.approx([w[1] for w in want[:25]], abs=1e-6)
        assert [f["properties"]["rank"] for f in doc["features"]] == list(range(1, len(got) + 1))

        radius = 300.0
        inside = [w for w in want if w[1] <= radius]
        doc = get_ok(api, "/within", {"collection": collection, "lon": lon, "lat": lat, "radius_m": radius, "limit": 5})
        assert doc["numberMatched"] == len(inside) and doc["numberReturned"] == min(5, len(inside))
        assert [f["id"] for f in doc["features"]] == [w[0] for w in inside[:5]]
    # kind filters devices
    kind = q(settings, "SELECT kind FROM devices GROUP BY 1 ORDER BY count(*) LIMIT 1")[0][0]
    doc = get_ok(api, "/nearest", {"collection": "devices", "lon": lon, "lat": lat, "k": 1000, "kind": kind})
    want = brute_force_distances(settings, "devices", px, py, kind)
    assert [f["id"] for f in doc["features"]] == [w[0] for w in want]
    assert {f["properties"]["kind"] for f in doc["features"]} == {kind}


# --------------------------------------------------------------------------------------------------------
# Parameter errors: 400 naming the parameter, 404 for unknown objects, never a 500


BAD_REQUESTS = [
    ("/parcels/t107-0091/contents", "code"),
    ("/parcels/T107-0091/contents?format=kml", "format"),
    ("/buildings/440305", "code"),
    ("/buildings/4403050010010200026?houses_limit=-1", "houses_limit"),
    ("/buildings/4403990010010200026", "code"),
    ("/units/44030X", "code"),
    ("/units/4403050010010200026", "code"),
    ("/units/44030500100102?limit=100000", "limit"),
    ("/locate", "lon"),
    ("/locate?lon=113.9", "lat"),
    ("/locate?lon=181&lat=22.5", "lon"),
    ("/locate?lon=113.9&lat=-91", "lat"),
    ("/locate?lon=nan&lat=22.5", "lon"),
    ("/locate?lon=113.9&lat=22.5&x=1", "x"),
    ("/locate?x=1&y=2&crs=EPSG:0", "crs"),
    ("/locate?x=1&y=2&crs=not-a-crs", "crs"),
    ("/locate?x=1e300&y=2&crs=CRS84", "x"),
    ("/locate?x=inf&y=2", "x"),
    ("/nearest?collection=roads&lon=113.9&lat=22.5", "collection"),
    ("/nearest?collection=buildings&lon=113.9&lat=22.5&k=1001", "k"),
    ("/nearest?collection=buildings&lon=113.9&lat=22.5&k=0", "k"),
    ("/nearest?collection=buildings&lon=113.9&lat=22.5&kind=camera", "kind"),
    ("/nearest?collection=devices&lon=113.9&lat=22.5&kind=Camera;DROP", "kind"),
    ("/nearest?collection=devices&lat=22.5", "lon"),
    ("/within?collection=devices&lon=113.9&lat=22.5", "radius_m"),
    ("/within?collection=devices&lon=113.9&lat=22.5&radius_m=0", "radius_m"),
    ("/within?collection=devices&lon=113.9&lat=22.5&radius_m=1e9", "radius_m"),
    ("/changes?from=2025-02-30&to=2025-03-01", "from"),
    ("/changes?from=2025-01-01&to=yesterday", "to"),
    ("/changes?from=2025-06-01&to=2025-01-01", "from"),
    ("/changes?to=2025-01-01", "from"),
    ("/changes?from=2025-01-01&to=9999-12-31", "to"),
    ("/changes?from=2025-01-01&to=2025-12-31&unit=4403050010010200026", "unit"),
    ("/changes?from=2025-01-01&to=2025-12-31&unit=abc", "unit"),
]


def test_bad_parameters_are_400_naming_the_parameter(api: httpx.Client) -> None:
    for url, parameter in BAD_REQUESTS:
        res = api.get(url)
        assert res.status_code == 400, (url, res.status_code, res.text[:300])
        body = res.json()
        assert body["code"] == "InvalidParameterValue" and body["parameter"] == parameter, (url, body)
    for url in ("/parcels/Z999-9999/contents", "/buildings/4403050019990199999", "/units/440311", "/units/44030599"):
        res = api.get(url)
        assert res.status_code in (404, 400) and res.status_code != 500, (url, res.text)
    assert api.get("/units/440311").status_code == 404
    assert api.get("/parcels/Z999-9999/contents?format=geojson").status_code == 404


def test_openapi_documents_the_answers(api: httpx.Client) -> None:
    doc = get_ok(api, "/openapi.json")
    for path in (
        "/parcels/{code}/contents",
        "/buildings/{code}",
        "/units/{code}",
        "/locate",
        "/nearest",
        "/within",
        "/changes",
    ):
        responses = doc["paths"][path]["get"]["responses"]
        assert "400" in responses and all("schema" in c for c in responses["200"]["content"].values()), path
    contents = doc["paths"]["/parcels/{code}/contents"]["get"]["responses"]["200"]["content"]
    assert set(contents) == {"application/json", "application/geo+json"}
    params = {p["name"]: p for p in doc["paths"]["/nearest"]["get"]["parameters"]}
    assert set(params["collection"]["schema"]["enum"]) == set(PROXIMITY_COLLECTIONS)


# --------------------------------------------------------------------------------------------------------
# A city of our own: pipes across parcels, a change survey, a BIM model


def crossing_pipes(out: Path) -> Path:
    """Rain pipes along y = Y0+250: YS-1 crosses parcel T107-0001 (400 m inside), YS-2 enters T107-0002 (50 m)."""
    x0, y = tinycity.X0, tinycity.Y0 + 250
    nodes = gpd.GeoDataFrame(
        {
            "code": ["YSJ-1", "YSJ-2", "YSJ-3"],
            "network": ["rain"] * 3,
            "kind": ["manhole", "manhole", "outfall"],
            "ground_elevation_m": [6.0, 5.8, 5.5],
            "invert_elevation_m": [3.0, 2.7, 2.4],
        },
        geometry=[Point(x0 + 20, y), Point(x0 + 480, y), Point(x0 + 600, y)],
        crs=tinycity.SRID,
    )
    lines = gpd.GeoDataFrame(
        {
            "code": ["YS-1", "YS-2"],
            "network": ["rain", "rain"],
            "from_node": ["YSJ-1", "YSJ-2"],
            "to_node": ["YSJ-2", "YSJ-3"],
            "diameter_mm": [600.0, 800.0],
            "material": ["RC", "RC"],
            "start_invert_m": [3.0, 2.7],
            "end_invert_m": [2.7, 2.4],
        },
        geometry=[LineString([(x0 + 20, y), (x0 + 480, y)]), LineString([(x0 + 480, y), (x0 + 600, y)])],
        crs=tinycity.SRID,
    )
    path = out / "crossing-pipes.gpkg"
    tinycity.write(nodes, path, layer="pipe_nodes")
    tinycity.write(lines, path, layer="pipes")
    return path


def survey_2025() -> gpd.GeoDataFrame:
    """b1 grows to 36 m, the L building (b3) is gone, the rest as they were."""
    frame = tinycity.buildings_frame()
    frame.loc[0, "height_m"] = 36.0
    return frame.drop(index=2).reset_index(drop=True)


def write_two_storey_house(path: Path) -> None:
    """An IFC4 house in metres: two storeys (EG at 0 m, OG at 3 m), each with two walls and a slab."""
    import ifcopenshell.api.aggregate
    import ifcopenshell.api.context
    import ifcopenshell.api.geometry
    import ifcopenshell.api.project
    import ifcopenshell.api.root
    import ifcopenshell.api.spatial
    import ifcopenshell.api.unit

    f = ifcopenshell.api.project.create_file(version="IFC4")
    project = ifcopenshell.api.root.create_entity(f, ifc_class="IfcProject", name="P")
    ifcopenshell.api.unit.assign_unit(f, units=[ifcopenshell.api.unit.add_si_unit(f, "LENGTHUNIT")])
    model = ifcopenshell.api.context.add_context(f, context_type="Model")
    body = ifcopenshell.api.context.add_context(
        f, context_type="Model", context_identifier="Body", target_view="MODEL_VIEW", parent=model
    )
    site = ifcopenshell.api.root.create_entity(f, ifc_class="IfcSite", name="Site")
    building = ifcopenshell.api.root.create_entity(f, ifc_class="IfcBuilding", name="House")
    ifcopenshell.api.aggregate.assign_object(f, relating_object=project, products=[site])
    ifcopenshell.api.aggregate.assign_object(f, relating_object=site, products=[building])
    for name, z in (("EG", 0.0), ("OG", 3.0)):
        storey = ifcopenshell.api.root.create_entity(f, ifc_class="IfcBuildingStorey", name=name)
        storey.Elevation = z
        place = np.eye(4)
        place[2, 3] = z
        ifcopenshell.api.geometry.edit_object_placement(f, product=storey, matrix=place)
        ifcopenshell.api.aggregate.assign_object(f, relating_object=building, products=[storey])
        for i, (x, angle) in enumerate(((0.0, 0.0), (0.0, 90.0))):
            wall = ifcopenshell.api.root.create_entity(f, ifc_class="IfcWall", name=f"{name}-W{i}")
            m = np.eye(4)
            c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
            m[:2, :2] = [[c, -s], [s, c]]
            m[0, 3], m[2, 3] = x, z
            ifcopenshell.api.geometry.edit_object_placement(f, product=wall, matrix=m)
            rep = ifcopenshell.api.geometry.add_wall_representation(f, context=body, length=8, height=3, thickness=0.2)
            ifcopenshell.api.geometry.assign_representation(f, product=wall, representation=rep)
            ifcopenshell.api.spatial.assign_container(f, relating_structure=storey, products=[wall])
        slab = ifcopenshell.api.root.create_entity(f, ifc_class="IfcSlab", name=f"{name}-Slab")
        m = np.eye(4)
        m[2, 3] = z
        ifcopenshell.api.geometry.edit_object_placement(f, product=slab, matrix=m)
        rep = ifcopenshell.api.geometry.add_slab_representation(
            f, context=body, depth=0.2, polyline=[(0.0, 0.0), (8.0, 0.0), (8.0, 8.0), (0.0, 8.0)]
        )
        ifcopenshell.api.geometry.assign_representation(f, product=slab, representation=rep)
        ifcopenshell.api.spatial.assign_container(f, relating_structure=storey, products=[slab])
    f.write(str(path))


@pytest.fixture(scope="module")
def small_city(
    settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, str, httpx.Client]]:
    """tinycity surveyed in 2024 and 2025, with crossing pipes and an IFC house on parcel T107-0001; yields
    the settings, the house's building code and a client of a server on that database."""
    out = tmp_path_factory.mktemp("small-city")
    with new_database(settings, cluster_url) as s:
        ensure_database(s)
        files = tinycity.write_all(out)
        for kind in ("admin", "parcels"):
            ingest_files(kind, [files[kind]], settings=s)
        ingest_files("buildings", [files["buildings"]], settings=s, survey_date="2024-01-01")
        ingest_files("houses", [files["houses"]], settings=s)
        ingest_files("pipes", [crossing_pipes(out)], settings=s)
        ingest_files(
            "buildings",
            [tinycity.buildings(out, survey_2025(), name="s2025.gpkg")],
            settings=s,
            survey_date="2025-06-30",
        )
        write_two_storey_house(out / "house.ifc")
        lon, lat = TO_LONLAT.transform(tinycity.X0 + 250.0, tinycity.Y0 + 280.0)
        house = ingest_ifc(open_ifc(out / "house.ifc"), anchor=parse_anchor(f"{lon!r},{lat!r},5.0", 0.0), settings=s)
        ifc_building = house.building_code
        env = {"CIM_HOME": str(s.home), "CIM_DATABASE_URL": str(s.database_url)}
        with api_server(env) as base, httpx.Client(base_url=base, timeout=60) as client:
            yield s, ifc_building, client


def test_pipes_are_clipped_to_the_parcel(small_city: tuple[Settings, str, httpx.Client]) -> None:
    s, _, api = small_city
    parcels = {
        code: box(*b)
        for code, b in (
            ("T107-0001", (tinycity.X0 + 50, tinycity.Y0 + 50, tinycity.X0 + 450, tinycity.Y0 + 450)),
            ("T107-0002", (tinycity.X0 + 550, tinycity.Y0 + 50, tinycity.X0 + 950, tinycity.Y0 + 450)),
        )
    }
    pipes = {code: shapely.from_wkb(bytes(wkb)) for code, wkb in q(s, "SELECT code, ST_AsBinary(geom) FROM pipes")}
    for code, polygon in parcels.items():
        doc = get_ok(api, f"/parcels/{code}/contents")
        clipped = {p: g.intersection(polygon).length for p, g in pipes.items() if g.intersection(polygon).length > 0}
        assert doc["pipes"]["count"] == len(clipped) == 1
        assert doc["pipes"]["length_m"] == pytest.approx(sum(clipped.values()), abs=1e-6)
        assert doc["pipes"]["by_network"] == {"rain": {"count": 1, "length_m": pytest.approx(sum(clipped.values()))}}
    assert get_ok(api, "/parcels/T107-0001/contents")["pipes"]["length_m"] == pytest.approx(400.0)
    fc = get_ok(api, "/parcels/T107-0002/contents", {"format": "geojson"})
    (pipe,) = [f for f in fc["features"] if f["properties"]["layer"] == "pipe"]
    inside = to_storage(pipe["geometry"])
    assert pipe["id"] == "YS-2" and inside.length == pytest.approx(50.0, abs=0.05)


def test_changes_between_surveys(small_city: tuple[Settings, str, httpx.Client]) -> None:
    s, ifc_building, api = small_city
    b1, b3 = tinycity.GRID_A + "00001", tinycity.GRID_A + "00002"
    res = api.get("/changes", params={"from": "2025-01-01", "to": "2025-12-31"})
    assert res.status_code == 200 and res.headers["content-type"] == "application/geo+json"
    doc = res.json()
    ChangeCollection.model_validate(doc)
    got = sorted((f["properties"]["change"], f["properties"]["building_code"]) for f in doc["features"])
    assert got == [("altered", b1), ("demolished", b3)]
    assert doc["counts"] == {"added": 0, "altered": 1, "demolished": 1}
    by_change = {f["properties"]["change"]: f for f in doc["features"]}
    assert by_change["altered"]["properties"]["height_m"] == 36.0
    survey_day = datetime(2025, 6, 30, tzinfo=timezone(timedelta(hours=8)))  # local midnight of the survey date
    assert datetime.fromisoformat(by_change["altered"]["properties"]["changed_at"]) == survey_day
    # The demolished building is drawn as it stood: the L shape of 700 m².
    demolished = to_storage(by_change["demolished"]["geometry"])
    assert demolished.area == pytest.approx(700.0, rel=1e-4)
    first = get_ok(api, "/changes", {"from": "2024-01-01", "to": "2024-01-01"})
    assert first["counts"] == {"added": 4, "altered": 0, "demolished": 0}
    assert get_ok(api, "/changes", {"from": "2024-01-02", "to": "2024-12-31"})["features"] == []
    only_b = get_ok(api, "/changes", {"from": "2024-01-01", "to": "2025-12-31", "unit": tinycity.GRID_B})
    assert [f["properties"]["building_code"] for f in only_b["features"]] == [tinycity.GRID_B + "00001"]
    # The IFC house was ingested today: an addition of today.
    today = q(s, "SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date::text")[0][0]
    now = get_ok(api, "/changes", {"from": today, "to": today})
    assert [(f["properties"]["change"], f["properties"]["building_code"]) for f in now["features"]] == [
        ("added", ifc_building)
    ]


def test_building_bim_summary(small_city: tuple[Settings, str, httpx.Client]) -> None:
    s, ifc_building, api = small_city
    doc = get_ok(api, f"/buildings/{ifc_building}")
    BuildingProfile.model_validate(doc)
    classes = dict(
        q(s, "SELECT ifc_class, count(*) FROM bim_elements WHERE building_code = %s GROUP BY 1", (ifc_building,))
    )
    assert doc["bim"]["elements_by_class"] == classes and doc["bim"]["element_count"] == sum(classes.values()) > 0
    storeys = q(s, "SELECT name, ordinal FROM bim_storeys WHERE building_code = %s ORDER BY ordinal", (ifc_building,))
    assert [(st["name"], st["ordinal"]) for st in doc["bim"]["storeys"]] == storeys and len(storeys) >= 2
    ((guid, n),) = q(s, "SELECT model_guid, element_count FROM bim_models WHERE building_code = %s", (ifc_building,))
    assert [(m["model_guid"], m["element_count"]) for m in doc["bim"]["models"]] == [(guid, n)]
    assert (
        doc["parcel_code"] == "T107-0001" and doc["compliance"]["building_count"] == 3
    )  # b1, the courtyard, the house
    # A building with houses: all four of b1's, on one page.
    b1 = get_ok(api, f"/buildings/{tinycity.GRID_A}00001")
    assert b1["houses"]["count"] == 4 and b1["houses"]["next_offset"] is None and b1["version"] == 2
