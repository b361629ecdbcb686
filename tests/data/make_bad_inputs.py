"""Write the bad-input corpus into tests/data/bad/ (run: python tests/data/make_bad_inputs.py).

Every file is refused with a one-line message naming the file, the feature and the problem, or repaired
when a repair is safe (the report records it). The expectations go to ``bad/cases.json``, which
tests/test_bad_inputs.py checks against the committed files. The
inputs are made against the hand-made city of tests/tinycity.py (grids 44030500700101 west and …02 east,
around x 494000–495000, y 2490000–2490500 in EPSG:4547)."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad"
sys.path.insert(0, str(HERE.parent))

import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from shapely.geometry import LineString, Point  # noqa: E402

import tinycity  # noqa: E402

X0, Y0 = tinycity.X0, tinycity.Y0
GA, GB = tinycity.GRID_A, tinycity.GRID_B
CRS_MEMBER = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4547"}}


@dataclass(frozen=True)
class Case:
    file: str
    kind: str  # the `cim ingest` subcommand
    expect: tuple[str, ...]  # substrings of the one-line error (or of the report for repairs)
    outcome: str = "error"  # "repair": loads, the repair counted in the report; "loads": handled as normal
    args: tuple[str, ...] = ()


def ring(x: float, y: float, w: float = 20, h: float = 20) -> list[list[float]]:
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]


def feature(geometry: dict | None, **props: object) -> dict:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def building(geometry: dict | None, **over: object) -> dict:
    props: dict[str, object] = {"use": "office", "height_m": 30.0, "storeys": 8, "ground_elevation_m": 5.0}
    props.update(over)
    return feature(geometry, **props)


def poly(*rings: list[list[float]]) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def geojson(name: str, features: list[dict], crs: dict | None = CRS_MEMBER) -> None:
    doc: dict[str, object] = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        doc["crs"] = crs
    (BAD / name).write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def good_building(**over: object) -> dict:
    return building(poly(ring(X0 + 100, Y0 + 100)), **over)


CASES: list[Case] = []


def case(file: str, kind: str, *expect: str, outcome: str = "error", args: tuple[str, ...] = ()) -> None:
    CASES.append(Case(file, kind, tuple(expect), outcome, args))


def make() -> None:
    if BAD.exists():
        shutil.rmtree(BAD)
    BAD.mkdir(parents=True)
    # --- unreadable files
    (BAD / "empty.geojson").write_bytes(b"")
    case("empty.geojson", "buildings", "empty.geojson", "cannot be read")
    geojson("no_features.geojson", [])
    case("no_features.geojson", "buildings", "no_features.geojson", "contains no features")
    good = gpd.GeoDataFrame(tinycity.buildings_frame())
    good.to_file(BAD / "whole.gpkg", layer="buildings")
    data = (BAD / "whole.gpkg").read_bytes()
    (BAD / "whole.gpkg").unlink()
    (BAD / "truncated.gpkg").write_bytes(data[:4096])
    case("truncated.gpkg", "buildings", "truncated.gpkg", "cannot be read")
    (BAD / "text_as.gpkg").write_text("this is not a GeoPackage\n")
    case("text_as.gpkg", "buildings", "text_as.gpkg", "cannot be read")
    (BAD / "broken.geojson").write_text('{"type": "FeatureCollection", "features": [{"type": "Feat')
    case("broken.geojson", "buildings", "broken.geojson", "cannot be read")
    (BAD / "footprints.kml").write_text("<kml/>")
    case("footprints.kml", "buildings", "footprints.kml", "unsupported format")
    # A GeoPackage whose SQLite header claims a database of 1 GB (page count field, bytes 28–31).
    good.to_file(BAD / "huge_claim.gpkg", layer="buildings")
    raw = bytearray((BAD / "huge_claim.gpkg").read_bytes())
    page_size = struct.unpack(">H", raw[16:18])[0] or 65536
    raw[28:32] = struct.pack(">I", (1 << 30) // page_size)
    raw[24:28] = struct.pack(">I", 7)  # change counter out of step with version-valid-for: SQLite distrusts it
    (BAD / "huge_claim.gpkg").write_bytes(bytes(raw))
    # SQLite ignores an untrusted size: the file reads as the small one it is and its data is checked normally.
    case("huge_claim.gpkg", "buildings", "would load 4", outcome="loads", args=("--dry-run",))
    # --- geometry problems
    geojson("points_as_buildings.geojson", [building({"type": "Point", "coordinates": [X0 + 100, Y0 + 100]})])
    case("points_as_buildings.geojson", "buildings", "wrong geometry type", "Polygon", "Point")
    geojson(
        "lines_as_parcels.geojson",
        [feature({"type": "LineString", "coordinates": [[X0, Y0], [X0 + 9, Y0]]}, code="T107-0009", land_use="R2")],
    )
    case("lines_as_parcels.geojson", "parcels", "wrong geometry type", "LineString")
    geojson("mixed_types.geojson", [good_building(), building({"type": "Point", "coordinates": [X0, Y0]})])
    case("mixed_types.geojson", "buildings", "feature 2", "geometry is Point")
    x, y = X0 + 150, Y0 + 150
    geojson("bowtie.geojson", [building(poly([[x, y], [x + 20, y + 20], [x + 20, y], [x, y + 20], [x, y]]))])
    case("bowtie.geojson", "buildings", "repaired 1", outcome="repair")
    # A ring touching itself at one vertex (an inverted hole): invalid in OGC terms, safely repaired.
    geojson(
        "self_touching.geojson",
        [
            building(
                poly(
                    [
                        [x, y],
                        [x + 40, y],
                        [x + 40, y + 40],
                        [x + 20, y + 40],
                        [x + 30, y + 20],
                        [x + 20, y + 10],
                        [x + 10, y + 20],
                        [x + 20, y + 40],
                        [x, y + 40],
                        [x, y],
                    ]
                )
            )
        ],
    )
    case("self_touching.geojson", "buildings", "repaired 1", outcome="repair")
    geojson("unclosed_ring.geojson", [building(poly(ring(x, y)[:-1]))])
    case("unclosed_ring.geojson", "buildings", "repaired 1", outcome="repair")
    geojson("two_point_ring.geojson", [building(poly([[x, y], [x + 10, y]]))])
    case("two_point_ring.geojson", "buildings", "two_point_ring.geojson", "feature 1", "cannot be repaired")
    geojson("zero_area.geojson", [building(poly([[x, y], [x + 10, y], [x + 20, y], [x, y]]))])
    case("zero_area.geojson", "buildings", "feature 1", "cannot be repaired")
    geojson("sliver.geojson", [building(poly(ring(x, y, 10, 0.01)))])
    case("sliver.geojson", "buildings", "feature 1", "too small")
    geojson("null_geometry.geojson", [good_building(), building(None)])
    case("null_geometry.geojson", "buildings", "feature 2", "has no geometry")
    # --- values
    geojson("nan_height.geojson", [good_building(height_m="NaN")])
    case("nan_height.geojson", "buildings", "feature 1", "height_m")
    geojson("negative_height.geojson", [good_building(height_m=-12.5)])
    case("negative_height.geojson", "buildings", "feature 1", "height_m -12.5 must be > 0")
    geojson("absurd_height.geojson", [good_building(height_m=12000)])
    case("absurd_height.geojson", "buildings", "feature 1", "height_m 12000 must be <= 1000")
    geojson("fractional_storeys.geojson", [good_building(storeys=2.5)])
    case("fractional_storeys.geojson", "buildings", "storeys 2.5 is not a whole number")
    geojson("unknown_use.geojson", [good_building(use="castle")])
    case("unknown_use.geojson", "buildings", "use 'castle' is not one of")
    geojson("missing_column.geojson", [feature(poly(ring(x, y)), use="office")])
    case("missing_column.geojson", "buildings", "missing column(s) height_m, storeys")
    # --- CRS problems
    geojson("unknown_crs.geojson", [good_building()], crs={"type": "name", "properties": {"name": "EPSG:999999"}})
    case("unknown_crs.geojson", "buildings", "unknown_crs.geojson", "CRS is missing or unknown")
    geojson("no_crs_metres.geojson", [good_building()], crs=None)
    case("no_crs_metres.geojson", "buildings", "not longitude/latitude", "pass --crs")
    gdf = tinycity.buildings_frame().drop(columns="owner").set_crs(None, allow_override=True)
    gdf.to_file(BAD / "no_prj.shp")
    case("no_prj.shp", "buildings", "no_prj.shp", "declares no CRS")
    geojson("degrees_as_metres.geojson", [building(poly(ring(113.94, 22.51, 0.0002, 0.0002)))])
    case("degrees_as_metres.geojson", "buildings", "look like longitude/latitude", "EPSG:4490")
    case("whole_ok.geojson", "buildings", "unknown CRS", args=("--crs", "EPSG:999999"))
    geojson("whole_ok.geojson", [good_building()])
    geojson("far_outside.geojson", [building(poly(ring(X0 + 200_000, Y0 + 100_000)))])
    case("far_outside.geojson", "buildings", "feature 1", "outside every administrative grid")
    # --- codes
    geojson(
        "duplicate_codes.geojson",
        [
            good_building(building_code=GA + "00007"),
            building(poly(ring(X0 + 200, Y0 + 300)), building_code=GA + "00007"),
        ],
    )
    case("duplicate_codes.geojson", "buildings", "feature 2", "duplicate building_code " + GA + "00007")
    geojson("bad_code.geojson", [good_building(building_code="4403050070010100A07")])
    case("bad_code.geojson", "buildings", "feature 1", "4403050070010100A07")
    geojson("wrong_grid_code.geojson", [good_building(building_code=GB + "00007")])
    case("wrong_grid_code.geojson", "buildings", f"coded into grid {GB} but lies in grid {GA}")
    geojson("not_shenzhen_code.geojson", [good_building(building_code="4401060070010100007")])
    case("not_shenzhen_code.geojson", "buildings", "4401060070010100007")
    geojson("numeric_code.geojson", [good_building(building_code=4403050070010100007.0)])
    case("numeric_code.geojson", "buildings", "column building_code is numeric")
    geojson("orphan_grid.geojson", [feature(poly(ring(X0, Y0, 100, 100)), code="44030500700901", name="孤网格")])
    case("orphan_grid.geojson", "admin", "parent unit 440305007009", "neither in the file nor in the database")
    geojson(
        "grid_outside_parent.geojson",
        [feature(poly(ring(X0 + 2000, Y0, 100, 100)), code="44030500700103", name="外网格")],
    )
    case("grid_outside_parent.geojson", "admin", "lies outside its parent 440305007001")
    geojson(
        "bad_parcel.geojson",
        [feature(poly(ring(X0 + 60, Y0 + 60)), code="T107-0003", land_use="R2", coverage_limit=1.5)],
    )
    case("bad_parcel.geojson", "parcels", "coverage_limit 1.5 must be <= 1")
    # --- tables
    (BAD / "non_utf8_houses.csv").write_bytes(
        ("house_code,storey,area_m2,use\n" + GA + "00001000101,1,90,南山区住宅楼\n").encode("gbk")
    )
    case("non_utf8_houses.csv", "houses", "not UTF-8", "--encoding")
    (BAD / "non_utf8.geojson").write_bytes(
        json.dumps({"type": "FeatureCollection", "crs": CRS_MEMBER, "features": [good_building(name="XXXX")]})
        .encode()
        .replace(b"XXXX", "南山区办公大楼".encode("gbk"))
    )
    case("non_utf8.geojson", "buildings", "non_utf8.geojson", "not UTF-8")
    (BAD / "empty.csv").write_bytes(b"")
    case("empty.csv", "houses", "empty.csv", "empty")
    (BAD / "house_no_building.csv").write_text(f"house_code,storey,area_m2\n{GA}00099000101,1,90\n")
    case("house_no_building.csv", "houses", "line 2", f"building {GA}00099 does not exist")
    (BAD / "house_storey_zero.csv").write_text(f"house_code,storey,area_m2\n{GA}00001000101,0,90\n")
    case("house_storey_zero.csv", "houses", "storey 0 does not exist")
    (BAD / "obs_unknown_device.csv").write_text(
        "device_code,observed_at,property,value\nWL-99999,2026-10-01T00:00:00+08:00,water_level_m,0.1\n"
    )
    case("obs_unknown_device.csv", "observations", "device WL-99999 does not exist")
    (BAD / "obs_bad_time.csv").write_text(
        "device_code,observed_at,property,value\nWL-00001,yesterday noon,water_level_m,0.1\n"
    )
    case("obs_bad_time.csv", "observations", "observed_at 'yesterday noon' is not an ISO 8601")
    geojson(
        "event_closed_at.geojson",
        [
            feature(
                {"type": "Point", "coordinates": [X0 + 50, Y0 + 50]},
                code="EV20261101000001",
                category="noise",
                status="closed",
                reported_at="2026-11-01T08:00:00+08:00",
                description="噪音",
            )
        ],
    )
    case("event_closed_at.geojson", "events", "closed_at must be set exactly when the status is closed")
    # --- pipes
    nodes = gpd.GeoDataFrame(
        {
            "code": ["N1", "N2"],
            "network": ["rain", "rain"],
            "kind": ["manhole", "outfall"],
            "ground_elevation_m": [6.0, 5.0],
            "invert_elevation_m": [7.0, 3.0],
        },
        geometry=[Point(X0 + 10, Y0 + 10), Point(X0 + 60, Y0 + 10)],
        crs=tinycity.SRID,
    )
    nodes.to_file(BAD / "node_above_ground.geojson")
    case("node_above_ground.geojson", "pipes", "invert 7 m is above ground 6 m")
    pipes = gpd.GeoDataFrame(
        {
            "code": ["Q1"],
            "network": ["rain"],
            "from_node": ["YSJ-1"],
            "to_node": ["NOPE-1"],
            "diameter_mm": [300.0],
            "start_invert_m": [3.0],
            "end_invert_m": [2.9],
        },
        geometry=[LineString([(X0 + 480, Y0 + 20), (X0 + 490, Y0 + 20)])],
        crs=tinycity.SRID,
    )
    pipes.to_file(BAD / "dangling_pipe.geojson")
    case("dangling_pipe.geojson", "pipes", "to_node NOPE-1 does not exist")
    # --- rasters, BIM, point clouds
    shared = HERE.parents[2] / "shared" / "data"
    shutil.copyfile(shared / "raster" / "corrupt.tif", BAD / "corrupt.tif")
    case("corrupt.tif", "raster", "corrupt.tif", "cannot read the pixel data", args=("--kind", "ortho"))
    profile = {
        "driver": "GTiff",
        "width": 20000,
        "height": 20000,
        "count": 1,
        "dtype": "float32",
        "crs": "EPSG:4547",
        "transform": from_origin(X0, Y0 + 500, 0.025, 0.025),
        "tiled": True,
        "blockxsize": 1024,
        "blockysize": 1024,
        "sparse_ok": True,
    }
    with rasterio.open(BAD / "huge_header.tif", "w", **profile):
        pass  # nothing written: a tiny file whose header claims 1.5 GiB of pixels
    case("huge_header.tif", "raster", "huge_header.tif", "header claims", args=("--kind", "dsm"))
    fzk = (shared / "ifc" / "AC20-FZK-Haus.ifc").read_bytes()
    (BAD / "truncated.ifc").write_bytes(fzk[:3000])
    case("truncated.ifc", "ifc", "truncated.ifc", "cut off")
    (BAD / "not_ifc.ifc").write_bytes(bytes(range(256)) * 8)
    case("not_ifc.ifc", "ifc", "not_ifc.ifc")
    (BAD / "empty.las").write_bytes(b"")
    case("empty.las", "pointcloud", "empty.las", "is empty", args=("--crs", "EPSG:4547"))
    _check_names()


def _check_not_utf8() -> None:
    for name in ("non_utf8_houses.csv", "non_utf8.geojson"):
        try:
            (BAD / name).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        raise SystemExit(f"{name} happens to be valid UTF-8: pick other text")


def _check_names() -> None:
    _check_not_utf8()
    files = {c.file for c in CASES}
    missing = [f for f in files if not (BAD / f).exists()]
    if missing:
        raise SystemExit(f"cases without a file: {missing}")
    (BAD / "cases.json").write_text(json.dumps([asdict(c) for c in CASES], ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    make()
    print(f"{len(CASES)} cases written to {BAD}")
