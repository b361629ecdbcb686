"""A tiny hand-made city (two grids, two parcels, a few buildings and pipes) written as real files, for
ingest tests whose expected numbers are obvious by construction."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

X0, Y0 = 494_000.0, 2_490_000.0
SRID = 4547
DISTRICT = "440305"
STREET = "440305007"
COMMUNITY = "440305007001"
GRID_A = "44030500700101"  # west half
GRID_B = "44030500700102"  # east half


def write(gdf: gpd.GeoDataFrame, path: Path, layer: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    gdf.to_file(path, layer=layer, engine="pyogrio")
    return path


def admin(out: Path) -> Path:
    rows = [
        (DISTRICT, "南山区", box(X0, Y0, X0 + 1000, Y0 + 500)),
        (STREET, "粤海街道", box(X0, Y0, X0 + 1000, Y0 + 500)),
        (COMMUNITY, "海珠社区", box(X0, Y0, X0 + 1000, Y0 + 500)),
        (GRID_A, "海珠社区第01网格", box(X0, Y0, X0 + 500, Y0 + 500)),
        (GRID_B, "海珠社区第02网格", box(X0 + 500, Y0, X0 + 1000, Y0 + 500)),
    ]
    gdf = gpd.GeoDataFrame(
        {"code": [r[0] for r in rows], "name": [r[1] for r in rows]},
        geometry=[r[2] for r in rows],
        crs=SRID,
    )
    return write(gdf, out / "admin.geojson")


def parcels(out: Path) -> Path:
    gdf = gpd.GeoDataFrame(
        {
            "code": ["T107-0001", "T107-0002"],
            "land_use": ["R2", "C1"],
            "far_limit": [2.0, 4.0],
            "height_limit_m": [60.0, 100.0],
            "coverage_limit": [0.4, 0.5],
        },
        geometry=[box(X0 + 50, Y0 + 50, X0 + 450, Y0 + 450), box(X0 + 550, Y0 + 50, X0 + 950, Y0 + 450)],
        crs=SRID,
    )
    return write(gdf, out / "parcels.geojson")


def buildings_frame() -> gpd.GeoDataFrame:
    """Four buildings: 20x20 in grid A (coded), 30x10 in grid B (no code: assigned), an L shape and a
    courtyard (ring with a hole) in grid A."""
    sq = box(X0 + 100, Y0 + 100, X0 + 120, Y0 + 120)  # 400 m²
    slab = box(X0 + 600, Y0 + 100, X0 + 630, Y0 + 110)  # 300 m²
    ell = Polygon(
        [
            (X0 + 200, Y0 + 200),
            (X0 + 240, Y0 + 200),
            (X0 + 240, Y0 + 210),
            (X0 + 210, Y0 + 210),
            (X0 + 210, Y0 + 240),
            (X0 + 200, Y0 + 240),
        ]
    )  # 400 + 300 = 700 m²
    court = Polygon(
        box(X0 + 300, Y0 + 300, X0 + 340, Y0 + 340).exterior.coords,
        [box(X0 + 310, Y0 + 310, X0 + 330, Y0 + 330).exterior.coords[::-1]],
    )  # 1600 - 400 = 1200 m²
    return gpd.GeoDataFrame(
        {
            "building_code": [GRID_A + "00001", None, GRID_A + "00002", GRID_A + "00003"],
            "name": ["一号楼", "二号楼", "L楼", "院楼"],
            "use": ["residential", "office", "commercial", "public"],
            "height_m": [30.0, 45.5, 12.0, 9.0],
            "storeys": [10, 12, 3, 2],
            "ground_elevation_m": [5.0, 6.0, 5.5, 5.2],
            "source_id": ["b1", "b2", "b3", "b4"],
            "owner": ["A公司", None, None, "区政府"],
        },
        geometry=[sq, slab, MultiPolygon([ell]), court],
        crs=SRID,
    )


BUILDING_AREA_M2 = 400 + 300 + 700 + 1200


def buildings(out: Path, frame: gpd.GeoDataFrame | None = None, name: str = "buildings.gpkg") -> Path:
    return write(buildings_frame() if frame is None else frame, out / name, layer="buildings")


def pipes(out: Path) -> Path:
    nodes = gpd.GeoDataFrame(
        {
            "code": ["YSJ-1", "YSJ-2", "YSJ-3"],
            "network": ["rain"] * 3,
            "kind": ["manhole", "manhole", "outfall"],
            "ground_elevation_m": [6.0, 5.8, 5.5],
            "invert_elevation_m": [3.0, 2.7, 2.4],
        },
        geometry=[Point(X0 + 480, Y0 + 20), Point(X0 + 520, Y0 + 20), Point(X0 + 560, Y0 + 20)],
        crs=SRID,
    )
    lines = gpd.GeoDataFrame(
        {
            "code": ["YS-1", "YS-2"],
            "network": ["rain", "rain"],
            "from_node": ["YSJ-1", "YSJ-2"],
            "to_node": ["YSJ-2", "YSJ-3"],
            "diameter_mm": [400.0, 500.0],
            "material": ["RC", "RC"],
            "start_invert_m": [3.0, 2.7],
            "end_invert_m": [2.8, 2.4],
        },
        geometry=[
            LineString([(X0 + 480, Y0 + 20), (X0 + 500, Y0 + 20), (X0 + 520, Y0 + 20)]),
            LineString([(X0 + 520, Y0 + 20), (X0 + 560, Y0 + 20)]),
        ],
        crs=SRID,
    )
    path = out / "pipes.gpkg"
    write(nodes, path, layer="pipe_nodes")
    write(lines, path, layer="pipes")
    return path


def houses(out: Path) -> Path:
    b1 = GRID_A + "00001"
    frame = pd.DataFrame(
        {
            "house_code": [f"{b1}{s:04d}{u:02d}" for s in (1, 2) for u in (1, 2)],
            "storey": [1, 1, 2, 2],
            "area_m2": [90.0, 80.5, 90.0, 80.5],
            "use": ["residential"] * 4,
        }
    )
    path = out / "houses.csv"
    frame.to_csv(path, index=False)
    return path


def write_all(out: Path) -> dict[str, Path]:
    return {
        "admin": admin(out),
        "parcels": parcels(out),
        "buildings": buildings(out),
        "pipes": pipes(out),
        "houses": houses(out),
    }


def devices(out: Path) -> Path:
    gdf = gpd.GeoDataFrame(
        {"code": ["WL-00001"], "kind": ["water_level"], "status": ["online"], "pipe_node_code": ["YSJ-1"]},
        geometry=[Point(X0 + 480, Y0 + 20)],
        crs=SRID,
    )
    return write(gdf, out / "devices.geojson")
