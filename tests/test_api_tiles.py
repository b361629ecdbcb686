"""The tile server over real HTTP (``cim serve``): vector tiles decoded with mapbox-vector-tile against the demo
district's footprints transformed independently (pyproj, shapely), TileJSON, ETag/304, gzip, CORS, cache
invalidation by data version, raster tiles of COGs ingested here (decoded with Pillow), and 3D Tiles served
from a tileset built by ``cim tiles build --out`` (Range, media types, path traversal)."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import mapbox_vector_tile
import morecantile
import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from PIL import Image
from rasterio.transform import from_origin

from cim.db import connect
from cim.settings import Settings
from cim.store.data_versions import data_versions
from cim.store.vector_tiles import MVT_BUFFER, MVT_EXTENT, TILE_LAYERS
from ingest.raster import ingest_raster

from server import api_server

TMS = morecantile.tms.get("WebMercatorQuad")
TO_MERCATOR = pyproj.Transformer.from_crs(4547, 3857, always_xy=True)
TO_LONLAT = pyproj.Transformer.from_crs(4547, 4326, always_xy=True)
DSM, ORTHO = "apitiles_dsm", "apitiles_ortho"
RASTER_ORIGIN = (493000.0, 2491700.0)  # top-left corner in EPSG:4547, over the demo district
RASTER_SHAPE = (340, 500)  # rows, columns of 5 m pixels


@pytest.fixture(scope="module")
def env(settings: Settings, demo_loaded: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The demo district, two rasters ingested, a buildings tileset built to a folder of its own, and the server."""
    tmp = tmp_path_factory.mktemp("api-tiles")
    rows, cols = RASTER_SHAPE
    yy, xx = np.mgrid[0:rows, 0:cols]
    heights = (10 + 30 * np.sin(xx / 40.0) * np.cos(yy / 30.0) + xx * 0.05).astype("float32")
    heights[:20, :20] = -9999.0  # a nodata corner
    transform = from_origin(*RASTER_ORIGIN, 5.0, 5.0)
    profile = {"driver": "GTiff", "width": cols, "height": rows, "crs": "EPSG:4547", "transform": transform}
    with rasterio.open(tmp / "dsm.tif", "w", count=1, dtype="float32", nodata=-9999.0, **profile) as dst:
        dst.write(heights, 1)
    rgb = np.stack([xx % 256, yy % 256, (xx * 3) % 256]).astype("uint8")
    with rasterio.open(tmp / "ortho.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(rgb)
    ingest_raster(tmp / "dsm.tif", "dsm", name=DSM, settings=settings)
    ingest_raster(tmp / "ortho.tif", "ortho", name=ORTHO, settings=settings)

    child_env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    child_env.update({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"})
    cim = str(Path(sys.executable).parent / "cim")
    out = tmp / "tilesets"
    res = subprocess.run(
        [cim, "tiles", "build", "--layer", "buildings", "--out", str(out)],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    server_env = {"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1", "CIM_TILE_VERSION_TTL_S": "0.2"}
    try:
        with api_server(server_env) as base:
            yield {"base": base, "tileset": out / "buildings", "tmp": tmp}
    finally:
        with connect(settings) as conn:
            conn.execute("DELETE FROM rasters WHERE name = ANY(%s)", ([DSM, ORTHO],))
            conn.commit()
        for name in (DSM, ORTHO):
            (settings.home / "rasters" / f"{name}.tif").unlink(missing_ok=True)


def raw_get(base: str, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, Any, bytes]:
    """A request sent exactly as written (no client-side path normalisation or decompression)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        res = conn.getresponse()
        return res.status, res.headers, res.read()
    finally:
        conn.close()


def building_footprints(settings: Settings) -> tuple[list[int], Any]:
    """Every building's code and footprint in EPSG:3857, transformed here with pyproj (not by PostGIS)."""
    with connect(settings) as conn:
        rows = conn.execute("SELECT building_code, ST_AsBinary(footprint) FROM buildings").fetchall()
    geoms = shapely.from_wkb([bytes(r[1]) for r in rows])
    mercator = shapely.transform(geoms, lambda xy: np.column_stack(TO_MERCATOR.transform(xy[:, 0], xy[:, 1])))
    return [int(r[0]) for r in rows], mercator


def centre_tile(settings: Settings, zoom: int) -> morecantile.Tile:
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_Transform(ST_Centroid(ST_Collect(footprint)), 4326) AS c "
            "FROM buildings) s"
        ).fetchone()
    assert row is not None
    return TMS.tile(row[0], row[1], zoom)


def tile_url(collection: str, t: morecantile.Tile, query: str = "") -> str:
    return f"/tiles/{collection}/{t.z}/{t.x}/{t.y}.mvt{query}"


# ---------------------------------------------------------------------------------------------------------
# Vector tiles


def test_mvt_features_are_the_buildings_in_the_tile(env: dict[str, Any], settings: Settings) -> None:
    t = centre_tile(settings, 15)
    res = httpx.get(env["base"] + tile_url("buildings", t), timeout=60)
    assert res.status_code == 200 and res.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    layer = mapbox_vector_tile.decode(res.content)["buildings"]
    assert layer["extent"] == MVT_EXTENT
    ids = [f["id"] for f in layer["features"]]
    assert len(ids) == len(set(ids)) > 100

    # Independently: footprints transformed by pyproj, against the tile box from morecantile.
    codes, mercator = building_footprints(settings)
    b = TMS.xy_bounds(t)
    margin = (b.right - b.left) * MVT_BUFFER / MVT_EXTENT
    box = shapely.box(b.left, b.bottom, b.right, b.top)
    inside = shapely.intersects(mercator, box)
    buffered = shapely.intersects(
        mercator, shapely.box(b.left - margin, b.bottom - margin, b.right + margin, b.top + margin)
    )
    strictly = {c for c, hit in zip(codes, inside, strict=True) if hit}
    with_buffer = {c for c, hit in zip(codes, buffered, strict=True) if hit}
    assert strictly <= set(ids) <= with_buffer

    # And PostGIS's own count of buildings intersecting the tile (grown by the clip buffer) agrees.
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM buildings WHERE ST_Intersects(ST_Transform(footprint, 3857), "
            "ST_TileEnvelope(%s, %s, %s, margin => %s))",
            (t.z, t.x, t.y, MVT_BUFFER / MVT_EXTENT),
        ).fetchone()
        assert row is not None and len(ids) == row[0]
        code = str(min(c for c, hit in zip(codes, shapely.within(mercator, box), strict=True) if hit))
        height, use = conn.execute("SELECT height_m, use FROM buildings WHERE building_code = %s", (code,)).fetchone()

    # Attributes and placement of one building wholly inside the tile: tile coordinates from pyproj's box.
    feature = next(f for f in layer["features"] if f["id"] == int(code))
    assert feature["properties"]["height_m"] == pytest.approx(height) and feature["properties"]["use"] == use
    assert feature["properties"]["building_code"] == code
    fx0, fy0, fx1, fy1 = mercator[codes.index(int(code))].bounds
    scale = MVT_EXTENT / (b.right - b.left)
    expect = ((fx0 - b.left) * scale, (fy0 - b.bottom) * scale, (fx1 - b.left) * scale, (fy1 - b.bottom) * scale)
    got = shapely.geometry.shape(feature["geometry"]).bounds  # decoded with y up
    assert got == pytest.approx(expect, abs=1.0)


def test_properties_are_selectable_from_the_whitelist(env: dict[str, Any], settings: Settings) -> None:
    t = centre_tile(settings, 15)
    res = httpx.get(env["base"] + tile_url("buildings", t, "?properties=use,height_m"), timeout=60)
    features = mapbox_vector_tile.decode(res.content)["buildings"]["features"]
    assert features and all(set(f["properties"]) == {"use", "height_m"} for f in features)
    res = httpx.get(env["base"] + tile_url("buildings", t, "?properties="), timeout=60)
    features = mapbox_vector_tile.decode(res.content)["buildings"]["features"]
    assert features and all(f["properties"] == {} for f in features) and all(f["id"] for f in features)
    res = httpx.get(env["base"] + tile_url("buildings", t, "?properties=use,secret"), timeout=60)
    assert res.status_code == 400
    assert res.json()["parameter"] == "properties" and "secret" in res.json()["description"]


def test_other_collections_are_tiled(env: dict[str, Any], settings: Settings) -> None:
    t = centre_tile(settings, 15)
    with connect(settings) as conn:
        levels = dict(conn.execute("SELECT level, count(*) FROM admin_units GROUP BY level").fetchall())
    for collection in ("pipes", "pipe_nodes", "devices", "events", "parcels", "grids"):
        res = httpx.get(env["base"] + tile_url(collection, t), timeout=60)
        assert res.status_code == 200, collection
        features = mapbox_vector_tile.decode(res.content)[collection]["features"]
        allowed = set(TILE_LAYERS[collection].field_names)
        assert features and all(set(f["properties"]) <= allowed for f in features), collection
    res = httpx.get(env["base"] + tile_url("events", t), timeout=60)
    props = mapbox_vector_tile.decode(res.content)["events"]["features"][0]["properties"]
    assert "reporter_contact" not in props and "description" not in props
    assert props["reported_at"].endswith("Z") and len(props["reported_at"]) == 20
    # A zoom-10 tile holds the whole district: every street and community of it.
    z10 = morecantile.Tile(t.x >> 5, t.y >> 5, 10)
    for collection, level in (("streets", "street"), ("communities", "community")):
        res = httpx.get(env["base"] + tile_url(collection, z10), timeout=60)
        assert len(mapbox_vector_tile.decode(res.content)[collection]["features"]) == levels[level]


def test_tilejson_describes_the_layer(env: dict[str, Any], settings: Settings) -> None:
    base = env["base"]
    doc = httpx.get(base + "/tiles/buildings.json", timeout=30).json()
    layer = TILE_LAYERS["buildings"]
    assert doc["tilejson"] == "3.0.0" and doc["minzoom"] == layer.minzoom == 13 and doc["maxzoom"] == 22
    assert doc["vector_layers"][0]["id"] == "buildings"
    assert list(doc["vector_layers"][0]["fields"]) == list(layer.field_names)
    assert doc["vector_layers"][0]["fields"]["height_m"] == "Number"
    _, mercator = building_footprints(settings)
    x0, y0, x1, y1 = shapely.total_bounds(mercator)
    lon0, lat0 = pyproj.Transformer.from_crs(3857, 4326, always_xy=True).transform(x0, y0)
    lon1, lat1 = pyproj.Transformer.from_crs(3857, 4326, always_xy=True).transform(x1, y1)
    w, s, e, n = doc["bounds"]
    assert w <= lon0 and s <= lat0 and e >= lon1 and n >= lat1
    assert (lon0 - w, lat0 - s, e - lon1, n - lat1) < (1e-3,) * 4
    assert w < doc["center"][0] < e and s < doc["center"][1] < n
    t = centre_tile(settings, 15)
    url = doc["tiles"][0].format(z=t.z, x=t.x, y=t.y)
    assert httpx.get(url, timeout=60).content == httpx.get(base + tile_url("buildings", t), timeout=60).content
    doc = httpx.get(base + "/tiles/buildings.json?properties=use", timeout=30).json()
    assert doc["tiles"][0].endswith(".mvt?properties=use") and doc["vector_layers"][0]["fields"] == {"use": "String"}
    assert httpx.get(base + "/tiles/nothing.json", timeout=30).status_code == 404


def test_etag_304_gzip_cors_and_the_cached_path(env: dict[str, Any], settings: Settings) -> None:
    base = env["base"]
    path = tile_url("buildings", centre_tile(settings, 16), "?properties=building_code,height_m")
    status, first, body = raw_get(base, path)  # rendered through the router
    assert status == 200
    status, again, body_again = raw_get(base, path)  # answered from memory
    assert body_again == body
    for name in ("ETag", "Cache-Control", "Content-Type", "Content-Length", "Access-Control-Allow-Origin"):
        assert again[name] == first[name], name
    assert "Accept-Encoding" in again["Vary"]  # the routed answer also says Origin (the CORS middleware's habit)
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and first["Cache-Control"] == "public, max-age=60"
    assert first["Access-Control-Allow-Origin"] == "*" and "Accept-Encoding" in first["Vary"]

    status, headers, packed = raw_get(base, path, {"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed) == body and len(packed) < len(body)
    gz_etag = headers["ETag"]
    assert gz_etag != etag and gz_etag.startswith(etag[:-1])
    status, headers, _ = raw_get(base, path, {"Accept-Encoding": "gzip;q=0"})
    assert status == 200 and headers["Content-Encoding"] is None

    for tag in (etag, gz_etag, f"W/{etag}", f'"other", {etag}'):
        status, headers, empty = raw_get(base, path, {"If-None-Match": tag})
        assert (status, empty) == (304, b"") and headers["ETag"] in (etag, gz_etag)
        assert headers["Access-Control-Allow-Origin"] == "*"
    status, _, _ = raw_get(base, path, {"If-None-Match": '"stale"'})
    assert status == 200

    # CORS: a preflight for the conditional and range headers tile clients send.
    status, headers, _ = raw_get(
        base,
        path,
        {"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET",
         "Access-Control-Request-Headers": "if-none-match, range"},
        method="OPTIONS",
    )  # fmt: skip
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in headers["Access-Control-Allow-Methods"]
    status, headers, _ = raw_get(base, "/health", {"Origin": "https://viewer.example"})
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_empty_out_of_range_and_malformed_tiles(env: dict[str, Any], settings: Settings) -> None:
    base = env["base"]
    res = httpx.get(base + "/tiles/buildings/13/0/0.mvt", timeout=30)
    assert (res.status_code, res.content) == (204, b"") and res.headers["ETag"]
    for path in ("/tiles/buildings/23/0/0.mvt", "/tiles/buildings/12/0/0.mvt", "/tiles/buildings/15/32768/0.mvt",
                 "/tiles/buildings/15/0/-1.mvt", "/tiles/nothing/15/0/0.mvt"):  # fmt: skip
        res = httpx.get(base + path, timeout=30)
        assert res.status_code == 404 and res.json()["code"] == "NotFound", path
    res = httpx.get(base + "/tiles/buildings/15/0/abc.mvt", timeout=30)
    assert res.status_code == 400 and res.json()["parameter"] == "y"


def test_a_change_shows_in_the_next_tile(env: dict[str, Any], settings: Settings) -> None:
    """A POI inserted and deleted: the cached tile follows the pois table's data version."""
    base = env["base"]
    t = centre_tile(settings, 16)
    lon, lat = TMS.ul(t.x, t.y, t.z)
    lon2, lat2 = TMS.ul(t.x + 1, t.y + 1, t.z)
    path = tile_url("pois", t)
    before = httpx.get(base + path, timeout=30)
    assert before.status_code == 204
    with connect(settings) as conn:
        version = data_versions(conn)["pois"]
        conn.execute(
            """
            INSERT INTO pois (osm_id, kind, name, geom, district_code, street_code, community_code, grid_code)
            SELECT 'n990000001', 'hydrant', 'test hydrant', p,
                   left(u.code, 6), left(u.code, 9), left(u.code, 12), u.code
              FROM ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), 4547) p
              JOIN admin_units u ON u.level = 'grid' AND ST_Intersects(u.geom, p)
            """,
            ((lon + lon2) / 2, (lat + lat2) / 2),
        )
        conn.commit()
        assert data_versions(conn)["pois"] > version
    try:
        time.sleep(0.3)
        res = httpx.get(base + path, timeout=30)
        assert res.status_code == 200
        features = mapbox_vector_tile.decode(res.content)["pois"]["features"]
        assert [f["properties"]["osm_id"] for f in features] == ["n990000001"]
        assert raw_get(base, path, {"If-None-Match": before.headers["ETag"]})[0] == 200
    finally:
        with connect(settings) as conn:
            conn.execute("DELETE FROM pois WHERE osm_id = 'n990000001'")
            conn.commit()
    time.sleep(0.3)
    assert httpx.get(base + path, timeout=30).status_code == 204


# ---------------------------------------------------------------------------------------------------------
# Raster tiles


def raster_lonlat_bounds() -> tuple[float, float, float, float]:
    rows, cols = RASTER_SHAPE
    x0, y1 = RASTER_ORIGIN
    x1, y0 = x0 + cols * 5.0, y1 - rows * 5.0
    return TO_LONLAT.transform_bounds(x0, y0, x1, y1, densify_pts=21)


def decode_image(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.size == (256, 256)
    return np.asarray(image.convert("RGBA"))


def test_raster_tiles_of_a_dsm_and_an_ortho(env: dict[str, Any]) -> None:
    base = env["base"]
    w, s, e, n = raster_lonlat_bounds()
    inner = TMS.tile((w + e) / 2, (s + n) / 2, 16)
    res = httpx.get(f"{base}/raster/{DSM}/{inner.z}/{inner.x}/{inner.y}.png", timeout=60)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    pixels = decode_image(res.content)
    assert (pixels[..., 3] == 255).all()  # wholly inside the raster
    assert pixels[..., :3].reshape(-1, 3).std(axis=0).max() > 5  # coloured heights, not one flat colour
    assert (
        "content-encoding"
        not in httpx.get(
            f"{base}/raster/{DSM}/{inner.z}/{inner.x}/{inner.y}.png", headers={"Accept-Encoding": "gzip"}, timeout=60
        ).headers
    )

    # Around the north-west corner: outside the raster and its nodata corner transparent, heights opaque, in
    # the proportion the raster's valid footprint (transformed here by pyproj) covers the tile.
    x0, y1 = RASTER_ORIGIN
    rows, cols = RASTER_SHAPE
    valid = shapely.box(x0, y1 - rows * 5.0, x0 + cols * 5.0, y1).difference(shapely.box(x0, y1 - 100, x0 + 100, y1))
    valid = shapely.transform(
        shapely.segmentize(valid, 10), lambda xy: np.column_stack(TO_MERCATOR.transform(xy[:, 0], xy[:, 1]))
    )
    nw = TMS.tile(w + 1e-6, n - 1e-6, 16)

    def coverage(t: morecantile.Tile) -> float:
        b = TMS.xy_bounds(t)
        box = shapely.box(b.left, b.bottom, b.right, b.top)
        return float(valid.intersection(box).area / box.area)

    neighbours = [morecantile.Tile(nw.x + dx, nw.y + dy, nw.z) for dx in (0, 1) for dy in (0, 1)]
    edge = max(neighbours, key=lambda t: min(coverage(t), 1 - coverage(t)))
    covered = coverage(edge)
    assert 0.1 < covered < 0.9
    pixels = decode_image(httpx.get(f"{base}/raster/{DSM}/{edge.z}/{edge.x}/{edge.y}.png", timeout=60).content)
    assert (pixels[..., 3] == 255).mean() == pytest.approx(covered, abs=0.02)
    assert (pixels[..., 3] == 0).mean() == pytest.approx(1 - covered, abs=0.02)

    res = httpx.get(f"{base}/raster/{ORTHO}/{inner.z}/{inner.x}/{inner.y}.webp", timeout=60)
    assert res.status_code == 200 and res.headers["content-type"] == "image/webp"
    pixels = decode_image(res.content).astype(int)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).mean() > 5  # three distinct bands

    stretched = httpx.get(f"{base}/raster/{DSM}/{inner.z}/{inner.x}/{inner.y}.png?rescale=0,200", timeout=60)
    assert stretched.status_code == 200 and stretched.content != res.content
    etag = stretched.headers["ETag"]
    again = httpx.get(f"{base}/raster/{DSM}/{inner.z}/{inner.x}/{inner.y}.png?rescale=0,200",
                      headers={"If-None-Match": etag}, timeout=60)  # fmt: skip
    assert again.status_code == 304


def test_raster_errors_and_tilejson(env: dict[str, Any]) -> None:
    base = env["base"]
    w, s, e, n = raster_lonlat_bounds()
    t = TMS.tile((w + e) / 2, (s + n) / 2, 16)
    cases = {
        f"/raster/{DSM}/3/0/0.png": (404, None),
        f"/raster/nothing/{t.z}/{t.x}/{t.y}.png": (404, None),
        f"/raster/{DSM}/{t.z}/{t.x}/{t.y}.png?rescale=5": (400, "rescale"),
        f"/raster/{DSM}/{t.z}/{t.x}/{t.y}.png?rescale=9,1": (400, "rescale"),
        f"/raster/{DSM}/{t.z}/{t.x}/{t.y}.png?colormap=nope": (400, "colormap"),
        f"/raster/{ORTHO}/{t.z}/{t.x}/{t.y}.png?colormap=viridis": (400, "colormap"),
        f"/raster/{DSM}/{t.z}/{t.x}/{t.y}.gif": (400, "fmt"),
    }
    for path, (status, parameter) in cases.items():
        res = httpx.get(base + path, timeout=60)
        assert res.status_code == status, path
        if parameter:
            assert res.json()["parameter"] == parameter, path
    doc = httpx.get(f"{base}/raster/{DSM}.json?colormap=terrain", timeout=60).json()
    assert doc["tilejson"] == "3.0.0" and doc["minzoom"] <= doc["maxzoom"]
    assert doc["bounds"] == pytest.approx([w, s, e, n], abs=1e-4)
    assert doc["tiles"][0] == f"{base}/raster/{DSM}/{{z}}/{{x}}/{{y}}.png?colormap=terrain"
    url = doc["tiles"][0].format(z=t.z, x=t.x, y=t.y)
    assert httpx.get(url, timeout=60).headers["content-type"] == "image/png"


# ---------------------------------------------------------------------------------------------------------
# 3D Tiles


def first_content_uri(tile: dict[str, Any]) -> str | None:
    if "content" in tile:
        return str(tile["content"]["uri"])
    for child in tile.get("children", []):
        uri = first_content_uri(child)
        if uri:
            return uri
    return None


def test_3dtiles_are_served_with_media_types_validators_and_ranges(env: dict[str, Any]) -> None:
    base, folder = env["base"], env["tileset"]
    status, headers, body = raw_get(base, "/3dtiles/buildings/tileset.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body == (folder / "tileset.json").read_bytes() and headers["Cache-Control"] == "public, max-age=10"
    st = (folder / "tileset.json").stat()
    assert headers["ETag"] == f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
    assert raw_get(base, "/3dtiles/buildings/tileset.json", {"If-None-Match": headers["ETag"]})[0] == 304
    doc = json.loads(body)
    uri = first_content_uri(doc["root"])
    assert uri is not None and uri.endswith(".glb")
    data = (folder / uri).read_bytes()
    size = len(data)

    path = f"/3dtiles/buildings/{uri}"
    status, headers, body = raw_get(base, path)
    assert (status, headers["Content-Type"], body) == (200, "model/gltf-binary", data)
    assert headers["Accept-Ranges"] == "bytes" and headers["Cache-Control"] == "public, max-age=600"
    version = doc["asset"]["tilesetVersion"]
    assert raw_get(base, f"{path}?v={version}")[1]["Cache-Control"] == "public, max-age=31536000, immutable"
    status, headers, packed = raw_get(base, path, {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(packed) == data
    status, headers, _ = raw_get(base, path, method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == size

    ranges = {
        "bytes=100-199": (100, 199),
        "bytes=-50": (size - 50, size - 1),
        f"bytes={size - 10}-": (size - 10, size - 1),
        f"bytes=0-{size * 2}": (0, size - 1),
    }
    for spec, (first, last) in ranges.items():
        status, headers, body = raw_get(base, path, {"Range": spec, "Accept-Encoding": "gzip"})
        assert status == 206, spec
        assert headers["Content-Range"] == f"bytes {first}-{last}/{size}" and body == data[first : last + 1], spec
        assert headers["Content-Encoding"] is None
    for spec in (f"bytes={size}-", "bytes=-0"):
        status, headers, body = raw_get(base, path, {"Range": spec})
        assert (status, headers["Content-Range"], body) == (416, f"bytes */{size}", b""), spec
    for spec in ("bytes=0-1,5-6", "items=0-5", "bytes=9-2"):
        assert raw_get(base, path, {"Range": spec})[0] == 200, spec  # ignored, as RFC 9110 allows
    assert raw_get(base, path, {"Range": "bytes=0-9", "If-Range": '"old"'})[0] == 200


def test_3dtiles_never_serve_a_file_outside_the_tileset(env: dict[str, Any]) -> None:
    base, folder, tmp = env["base"], env["tileset"], env["tmp"]
    secret = tmp / "secret.json"
    secret.write_text('{"secret": "root:x:0:0"}')
    (folder / "evil.json").symlink_to("/etc/passwd")
    (folder / "escape.json").symlink_to(secret)
    try:
        attempts = [
            "/3dtiles/buildings/../../../../etc/passwd",
            "/3dtiles/buildings/..%2f..%2f..%2f..%2fetc%2fpasswd",
            "/3dtiles/buildings/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/3dtiles/buildings/content/../../secret.json",
            "/3dtiles/buildings//etc/passwd",
            "/3dtiles/buildings/%2fetc%2fpasswd",
            "/3dtiles/buildings/..%5c..%5csecret.json",
            "/3dtiles/buildings/tileset.json%00.png",
            "/3dtiles/buildings/evil.json",
            "/3dtiles/buildings/escape.json",
            "/3dtiles/buildings/build-manifest.json",
            "/3dtiles/buildings/",
            "/3dtiles/nothing/tileset.json",
            "/3dtiles/..%2f..%2fetc/passwd",
        ]
        for path in attempts:
            status, _, body = raw_get(base, path)
            assert status in (400, 404), path
            assert b"root:" not in body, path
    finally:
        (folder / "evil.json").unlink()
        (folder / "escape.json").unlink()
