"""OGC API – Features over real HTTP (``cim serve``), read by real clients (GDAL's OAPIF driver through
``ogr2ogr``/``ogrinfo``, and OWSLib), checked against the same questions asked of PostGIS directly."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import shapely
from owslib.ogcapi.features import Features
from shapely.geometry import shape
from test_survey import survey_city

from cim.crs import storage_to_lonlat
from cim.db import connect
from cim.settings import Settings
from cim.store.collections import COLLECTION_LIST

import tinycity
from conftest import new_database
from server import api_server

# A box in the middle of the demo district (CRS84) and a point in it.
LON0, LAT0, LON1, LAT1 = 113.936, 22.510, 113.945, 22.516
POINT = (113.9405, 22.5130)


@pytest.fixture(scope="module")
def base(settings: Settings, demo_loaded: str) -> Iterator[str]:
    with api_server({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"}) as url:
        yield url


def sql(s: Settings, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(s) as conn:
        return conn.execute(query, params).fetchall()


def ids_of(s: Settings, query: str, params: tuple[Any, ...] = ()) -> set[str]:
    return {str(r[0]) for r in sql(s, query, params)}


def get(url: str, **params: Any) -> httpx.Response:
    return httpx.get(url, params=params, timeout=60)


def all_items(base: str, collection: str, **params: Any) -> dict[str, Any]:
    res = get(f"{base}/collections/{collection}/items", limit=10_000, **params)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["numberReturned"] == len(body["features"]) == body["numberMatched"]
    return body


def ids(body: dict[str, Any]) -> set[str]:
    return {str(f["id"]) for f in body["features"]}


# ------------------------------------------------------------------------------------------------------
# Discovery documents


def test_landing_conformance_and_api_definition(base: str) -> None:
    landing = get(base + "/").json()
    rels = {link["rel"]: link for link in landing["links"]}
    assert {"self", "service-desc", "service-doc", "conformance", "data"} <= set(rels)
    api = httpx.get(rels["service-desc"]["href"], timeout=30)
    assert api.status_code == 200
    assert api.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.0"
    doc = api.json()
    assert doc["openapi"].startswith("3.0") and doc == get(base + "/openapi.json").json()
    items = doc["paths"]["/collections/{collectionId}/items"]["get"]
    params = {p["name"]: p for p in items["parameters"]}
    assert {"bbox", "bbox-crs", "crs", "datetime", "limit", "offset", "filter", "filter-lang", "sortby"} <= set(params)
    assert params["limit"]["schema"]["maximum"] == 10_000 and params["limit"]["schema"]["minimum"] == 1
    assert {"200", "400", "404", "503"} <= set(items["responses"]) and "422" not in items["responses"]
    assert "application/geo+json" in items["responses"]["200"]["content"]
    assert '"anyOf"' not in json.dumps(doc["paths"]["/collections/{collectionId}/items"])  # 3.0, not 3.1 nulls
    conf = get(base + "/conformance").json()["conformsTo"]
    for cls in (
        "ogcapi-features-1/1.0/conf/core",
        "ogcapi-features-1/1.0/conf/geojson",
        "1.0/conf/oas30",
        "ogcapi-features-2/1.0/conf/crs",
        "ogcapi-features-3/1.0/conf/filter",
        "cql2/1.0/conf/cql2-text",
    ):
        assert any(c.endswith(cls) for c in conf), cls
    cols = get(base + "/collections").json()["collections"]
    assert [c["id"] for c in cols] == [c.id for c in COLLECTION_LIST]
    buildings = get(base + "/collections/buildings").json()
    assert "http://www.opengis.net/def/crs/EPSG/0/4490" in buildings["crs"]
    assert buildings["storageCrs"] == "http://www.opengis.net/def/crs/EPSG/0/4547"
    west, south, east, north = buildings["extent"]["spatial"]["bbox"][0]
    assert 113.8 < west < east < 114.1 and 22.4 < south < north < 22.6
    q = get(base + "/collections/buildings/queryables")
    assert q.headers["content-type"].startswith("application/schema+json")
    assert q.json()["properties"]["height_m"]["type"] == "number" and "attributes" not in q.json()["properties"]


# ------------------------------------------------------------------------------------------------------
# Real clients


def test_gdal_reads_the_same_features_as_sql(base: str, settings: Settings, tmp_path: Path) -> None:
    listing = subprocess.run(
        ["ogrinfo", "-ro", "-so", f"OAPIF:{base}", "buildings"], capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0, listing.stderr
    count = sql(settings, "SELECT count(*) FROM buildings")[0][0]
    assert f"Feature Count: {count}" in listing.stdout
    out = tmp_path / "buildings.geojson"
    spat = ["-spat", str(LON0), str(LAT0), str(LON1), str(LAT1)]
    res = subprocess.run(
        ["ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{base}", "buildings", "-oo", "PAGE_SIZE=1000", *spat],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(out.read_text())["features"]
    expected = sql(
        settings,
        "SELECT building_code, ST_AsBinary(footprint) FROM buildings WHERE ST_Intersects(footprint, "
        "ST_Transform(ST_Segmentize(ST_MakeEnvelope(%s, %s, %s, %s, 4326), 0.0005), 4547))",
        (LON0, LAT0, LON1, LAT1),
    )
    assert 100 < len(expected) < count
    by_id = {f["properties"]["id"]: f for f in got}
    assert len(got) == len(by_id) and set(by_id) == {r[0] for r in expected}
    code, wkb = expected[0]
    stored = shapely.from_wkb(bytes(wkb))
    lonlat = shapely.transform(stored, lambda xy: np.column_stack(storage_to_lonlat(xy[:, 0], xy[:, 1])))
    assert shapely.hausdorff_distance(lonlat, shape(by_id[code]["geometry"])) < 2e-7  # ≈ 2 cm
    assert (
        by_id[code]["properties"]["height_m"]
        == sql(settings, "SELECT height_m FROM buildings WHERE building_code = %s", (code,))[0][0]
    )


def test_owslib_reads_collections_items_and_queryables(base: str, settings: Settings) -> None:
    api = Features(base)
    assert {c["id"] for c in api.collections()["collections"]} == {c.id for c in COLLECTION_LIST}
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in api.conformance()["conformsTo"]
    page = api.collection_items("pipes", limit=10_000, filter="network = 'rain' AND diameter_mm >= 600")
    expected = ids_of(settings, "SELECT code FROM pipes WHERE network = 'rain' AND diameter_mm >= 600")
    assert expected and ids(page) == expected and page["numberMatched"] == len(expected)
    one = api.collection_item("pipes", sorted(expected)[0])
    assert one["id"] == sorted(expected)[0] and one["geometry"]["type"] == "LineString"
    assert len(one["geometry"]["coordinates"][0]) == 3  # pipes keep their invert elevations
    assert "diameter_mm" in api.collection_queryables("pipes")["properties"]


# ------------------------------------------------------------------------------------------------------
# Parameters


def test_bbox_in_three_crss_and_output_axis_order(base: str, settings: Settings) -> None:
    x0, y0, x1, y1 = 494_600.0, 2_490_300.0, 495_400.0, 2_490_900.0
    rows = sql(
        settings,
        "SELECT building_code FROM buildings WHERE ST_Intersects(footprint, ST_MakeEnvelope(%s, %s, %s, %s, 4547))",
        (x0, y0, x1, y1),
    )
    expected = {r[0] for r in rows}
    assert len(expected) > 20
    # EPSG:4547 is northing first: bbox = minN, minE, maxN, maxE.
    gk = all_items(base, "buildings", bbox=f"{y0},{x0},{y1},{x1}", **{"bbox-crs": "EPSG:4547"})
    assert ids(gk) == expected
    # The same box as lon/lat (CRS84, lon first) and lat/lon (EPSG:4490, lat first): a few edge buildings may
    # differ by the box's curvature, the bulk must agree.
    lons, lats = storage_to_lonlat([x0, x1], [y0, y1])
    crs84 = ids(all_items(base, "buildings", bbox=f"{lons[0]},{lats[0]},{lons[1]},{lats[1]}"))
    cgcs = ids(
        all_items(base, "buildings", bbox=f"{lats[0]},{lons[0]},{lats[1]},{lons[1]}", **{"bbox-crs": "EPSG:4490"})
    )
    assert crs84 == cgcs and len(crs84 ^ expected) <= 3
    # A CQL2 geometry in filter-crs EPSG:4490 is lat/lon too.
    box = f"BBOX({lats[0]}, {lons[0]}, {lats[1]}, {lons[1]})"
    cql = all_items(base, "buildings", filter=f"S_INTERSECTS(geometry, {box})", **{"filter-crs": "EPSG:4490"})
    assert ids(cql) == crs84
    code = sorted(expected)[0]
    x, y = sql(settings, "SELECT ST_X(ST_PointN(ST_ExteriorRing(ST_GeometryN(footprint, 1)), 1)), "
                         "ST_Y(ST_PointN(ST_ExteriorRing(ST_GeometryN(footprint, 1)), 1)) FROM buildings "
                         "WHERE building_code = %s", (code,))[0]  # fmt: skip
    first = {}
    for crs in ("EPSG:4547", "EPSG:4490", "http://www.opengis.net/def/crs/OGC/1.3/CRS84"):
        res = get(f"{base}/collections/buildings/items/{code}", crs=crs)
        assert res.status_code == 200
        first[crs] = res.json()["geometry"]["coordinates"][0][0][0]
        assert res.headers["content-crs"].startswith("<http://www.opengis.net/def/crs/")
    assert first["EPSG:4547"] == pytest.approx([y, x], abs=1e-3)  # northing, easting
    lon, lat = (float(v[0]) for v in storage_to_lonlat([x], [y]))
    assert first["http://www.opengis.net/def/crs/OGC/1.3/CRS84"] == pytest.approx([lon, lat], abs=2e-7)
    assert first["EPSG:4490"] == pytest.approx([lat, lon], abs=2e-7)


CQL2_VS_SQL = [
    ("buildings", "height_m > 60 AND use = 'office'", "height_m > 60 AND use = 'office'"),
    ("buildings", "use IN ('residential', 'mixed') AND storeys BETWEEN 10 AND 20",
     "use IN ('residential', 'mixed') AND storeys BETWEEN 10 AND 20"),
    ("buildings", "name LIKE '%科技园%' OR parcel_code IS NULL", "name LIKE '%%科技园%%' OR parcel_code IS NULL"),
    ("buildings", "NOT (height_m < 20) AND CASEI(use) = casei('Education')",
     "NOT (height_m < 20) AND use = 'education'"),
    ("buildings", "height_m / storeys > 4.2", "height_m / storeys > 4.2"),
    ("buildings", f"S_INTERSECTS(geometry, POLYGON(({LON0} {LAT0}, {LON1} {LAT0}, {LON1} {LAT1}, {LON0} {LAT0})))",
     f"ST_Intersects(footprint, ST_Transform(ST_GeomFromText('POLYGON(({LON0} {LAT0}, {LON1} {LAT0}, {LON1} {LAT1}, "
     f"{LON0} {LAT0}))', 4326), 4547))"),
    ("buildings", f"S_DWITHIN(footprint, POINT({POINT[0]} {POINT[1]}), 150, meters) AND storeys >= 5",
     f"ST_DWithin(footprint, ST_Transform(ST_SetSRID(ST_MakePoint({POINT[0]}, {POINT[1]}), 4326), 4547), 150) "
     "AND storeys >= 5"),
    ("events", "T_AFTER(reported_at, TIMESTAMP('2026-10-01T00:00:00Z')) AND status <> 'closed'",
     "reported_at > '2026-10-01T00:00:00Z' AND status <> 'closed'"),
    ("events", "T_DURING(reported_at, INTERVAL('2026-09-01', '2026-10-01')) OR reopen_count > 1",
     "(reported_at > '2026-09-01T00:00:00+08:00' AND reported_at < '2026-10-01T00:00:00+08:00') OR reopen_count > 1"),
    ("devices", "kind = 'water_level' OR S_WITHIN(geometry, BBOX(113.94, 22.51, 113.95, 22.52))",
     "kind = 'water_level' OR "
     "ST_Within(geom, ST_Transform(ST_MakeEnvelope(113.94, 22.51, 113.95, 22.52, 4326), 4547))"),
]  # fmt: skip


@pytest.mark.parametrize(("collection", "cql2", "where"), CQL2_VS_SQL)
def test_cql2_filter_selects_what_sql_selects(
    base: str, settings: Settings, collection: str, cql2: str, where: str
) -> None:
    key = "building_code" if collection == "buildings" else "code"
    expected = ids_of(settings, f"SELECT {key} FROM {collection} WHERE {where}")
    body = all_items(base, collection, filter=cql2, **{"filter-lang": "cql2-text"})
    assert ids(body) == expected
    assert expected, "the filter should select something in the demo district"


def test_queryables_as_parameters_properties_and_sortby(base: str, settings: Settings) -> None:
    body = all_items(base, "buildings", use="office", sortby="-height_m", properties="height_m,use")
    heights = [f["properties"]["height_m"] for f in body["features"]]
    assert heights == sorted(heights, reverse=True)
    assert ids(body) == ids_of(settings, "SELECT building_code FROM buildings WHERE use = 'office'")
    assert {tuple(sorted(f["properties"])) for f in body["features"]} == {("height_m", "use")}


def test_paging_through_next_links_returns_every_feature_once(base: str, settings: Settings) -> None:
    expected = ids_of(settings, "SELECT building_code FROM buildings")
    url: str | None = f"{base}/collections/buildings/items?limit=700&sortby=%2Bheight_m"
    seen: list[str] = []
    pages = 0
    while url:
        body = httpx.get(url, timeout=60).json()
        links = {link["rel"]: link["href"] for link in body["links"]}
        assert body["numberMatched"] == len(expected) and body["numberMatchedExact"] is True
        assert ("prev" in links) == (pages > 0)
        seen += [f["id"] for f in body["features"]]
        url = links.get("next")
        pages += 1
    assert pages == -(-len(expected) // 700) and len(seen) == len(set(seen)) and set(seen) == expected


def test_a_page_stops_early_past_its_byte_budget(
    settings: Settings, demo_loaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (to lower the budget): short pages with next links still cover every feature once."""
    from fastapi.testclient import TestClient

    import api.routers.features as features_router
    from api.app import app

    monkeypatch.setattr(features_router, "PAGE_BYTES", 200_000)
    expected = ids_of(settings, "SELECT building_code FROM buildings")
    seen: list[str] = []
    pages = 0
    with TestClient(app) as client:
        url: str | None = "/collections/buildings/items?limit=5000"
        while url:
            body = client.get(url).json()
            assert 0 < body["numberReturned"] < len(expected) and body["numberMatched"] == len(expected)
            seen += [f["id"] for f in body["features"]]
            url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
            pages += 1
    assert pages > 5 and len(seen) == len(set(seen)) and set(seen) == expected


def test_number_matched_is_an_estimate_past_ten_thousand(base: str, settings: Settings) -> None:
    houses = sql(settings, "SELECT count(*) FROM houses")[0][0]
    assert houses > 10_000
    body = get(f"{base}/collections/houses/items", limit=5).json()
    assert body["numberReturned"] == 5 and body["numberMatchedExact"] is False
    assert 0.5 * houses < body["numberMatched"] < 2 * houses
    nxt = next(link for link in body["links"] if link["rel"] == "next")
    assert "estimate" in nxt["title"]
    assert body["features"][0]["geometry"]["type"] == "MultiPolygon"  # the building's footprint


BAD_REQUESTS = [
    ("buildings", {"bbox": "1,2,3"}, "bbox", "4 or 6"),
    ("buildings", {"bbox": "a,b,c,d"}, "bbox", "number"),
    ("buildings", {"bbox": "114,22,113,23"}, "bbox", "lower corner"),
    ("buildings", {"bbox": "100,95,101,96"}, "bbox", "range"),
    ("buildings", {"crs": "EPSG:32650"}, "crs", "not offered"),
    ("buildings", {"bbox": "1,2,3,4", "bbox-crs": "EPSG:99999"}, "bbox-crs", "EPSG"),
    ("buildings", {"filter": "height_m >> 30"}, "filter", "column 11"),
    ("buildings", {"filter": "height_m > 'tall'"}, "filter", "cannot compare"),
    ("buildings", {"filter": "colour = 'red'"}, "filter", "unknown property 'colour'"),
    ("buildings", {"filter": "S_INTERSECTS(geometry, POLYGON((0 0, 1 1, 1 0, 0 1, 0 0)))"}, "filter", "invalid"),
    ("buildings", {"limit": "0"}, "limit", ""),
    ("buildings", {"limit": "10001"}, "limit", ""),
    ("buildings", {"offset": "-1"}, "offset", ""),
    ("buildings", {"sortby": "-colour"}, "sortby", "colour"),
    ("buildings", {"properties": "height_m,colour"}, "properties", "colour"),
    ("buildings", {"datetime": "last tuesday"}, "datetime", "RFC 3339"),
    ("buildings", {"storeys": "many"}, "storeys", "number"),
    ("buildings", {"colour": "red"}, "colour", "unknown query parameter"),
    ("pipes", {"datetime": "2025-01-01"}, "datetime", "no time extent"),
]


@pytest.mark.parametrize(("collection", "query", "parameter", "message"), BAD_REQUESTS)
def test_bad_parameters_are_400_naming_the_parameter(
    base: str, collection: str, query: dict[str, str], parameter: str, message: str
) -> None:
    res = get(f"{base}/collections/{collection}/items", **query)
    assert res.status_code == 400, res.text
    body = res.json()
    assert body["code"] == "InvalidParameterValue" and body["parameter"] == parameter
    assert message in body["description"]


def test_unknown_collections_and_features_are_404(base: str) -> None:
    for path in (
        "/collections/nope",
        "/collections/nope/items",
        "/collections/nope/queryables",
        "/collections/buildings/items/4403059999999999999",
        "/collections/roads/items/not-a-number",
    ):
        res = get(base + path)
        assert res.status_code == 404, path
        assert res.json()["code"] == "NotFound"  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# Buildings through time (a change survey in a database of its own)


@pytest.fixture(scope="module")
def surveyed_base(
    settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, str]]:
    with new_database(settings, cluster_url) as s:
        survey_city(s, tmp_path_factory.mktemp("survey"))
        env = {"CIM_HOME": str(settings.home), "CIM_DATABASE_URL": str(s.database_url)}
        with api_server(env) as url:
            yield s, url


AS_OF = "SELECT building_code, version, height_m FROM building_versions WHERE valid_from <= %s::timestamptz AND (valid_to IS NULL OR valid_to > %s::timestamptz)"  # noqa: E501


@pytest.mark.parametrize(
    "when", ["2023-12-31T00:00:00+08:00", "2024-06-01T00:00:00Z", "2025-06-30", "2025-07-01T12:00:00+08:00"]
)
def test_datetime_selects_the_buildings_of_that_day(surveyed_base: tuple[Settings, str], when: str) -> None:
    s, url = surveyed_base
    instant = when if "T" in when else when + "T00:00:00+08:00"
    expected = {(r[0], r[1], r[2]) for r in sql(s, AS_OF, (instant, instant))}
    body = all_items(url, "buildings", datetime=when)
    got = {(f["id"], f["properties"]["version"], f["properties"]["height_m"]) for f in body["features"]}
    assert got == expected
    if when.startswith("2023"):
        assert not got
    if when.startswith("2024"):  # the first survey: four buildings, all version 1
        assert len(got) == 4 and {v for _, v, _ in got} == {1}
    if when.startswith("2025"):  # after the 2025 survey: one demolished, one new, two altered (b1 is 36 m)
        assert got == {
            (f["id"], f["properties"]["version"], f["properties"]["height_m"])
            for f in all_items(url, "buildings")["features"]
        }
        assert (tinycity.GRID_A + "00001", 2, 36.0) in got and tinycity.GRID_A + "00002" not in {g[0] for g in got}


def test_datetime_interval_returns_every_version_alive_in_it(surveyed_base: tuple[Settings, str]) -> None:
    s, url = surveyed_base
    expected = sql(
        s,
        "SELECT building_code, version FROM building_versions WHERE valid_from <= %s AND "
        "(valid_to IS NULL OR valid_to > %s)",
        ("2025-12-31T00:00:00Z", "2024-06-01T00:00:00Z"),
    )
    body = all_items(url, "buildings", datetime="2024-06-01T00:00:00Z/2025-12-31T00:00:00Z")
    got = sorted((f["id"], f["properties"]["version"]) for f in body["features"])
    assert got == sorted(expected) and len(got) == 7  # 4 of 2024, 2 new versions, 1 new building
    open_end = all_items(url, "buildings", datetime="2025-07-01/..")
    assert {f["id"] for f in open_end["features"]} == {f["id"] for f in all_items(url, "buildings")["features"]}
