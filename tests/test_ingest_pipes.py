"""Pipe networks: snapping, 3D lines from inverts, CSV tables, errors that stop the load and warnings that
load and are reported."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import LineString, Point

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.city_layers import ingest_files
from ingest.errors import IngestError

import tinycity
from dbcheck import fingerprint

X0, Y0 = tinycity.X0, tinycity.Y0


@pytest.fixture()
def base(fresh_settings: Settings, tmp_path: Path) -> Settings:
    ensure_database(fresh_settings)
    files = tinycity.write_all(tmp_path / "city")
    for kind in ("admin", "parcels"):
        ingest_files(kind, [files[kind]], settings=fresh_settings)
    return fresh_settings


def nodes_frame() -> gpd.GeoDataFrame:
    """A rain line of 4 manholes west→east, plus two water nodes."""
    return gpd.GeoDataFrame(
        {
            "code": ["R1", "R2", "R3", "R4", "W1", "W2"],
            "network": ["rain"] * 4 + ["water"] * 2,
            "kind": ["manhole", "manhole", "manhole", "outfall", "valve", "hydrant"],
            "ground_elevation_m": [6.0, 5.9, 5.8, 5.5, 6.0, 6.0],
            "invert_elevation_m": [4.0, 3.8, 3.6, 3.0, 5.0, 5.0],
        },
        geometry=[Point(X0 + 100 + 50 * i, Y0 + 20) for i in range(4)]
        + [Point(X0 + 100, Y0 + 60), Point(X0 + 200, Y0 + 60)],
        crs=tinycity.SRID,
    )


def pipes_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "code": ["P1", "P2", "P3", "WP1"],
            "network": ["rain", "rain", "rain", "water"],
            "from_node": ["R1", "R2", "R3", "W1"],
            "to_node": ["R2", "R3", "R4", "W2"],
            "diameter_mm": [300.0, 400.0, 500.0, 150.0],
            "material": ["HDPE", "RC", "RC", "DI"],
            "start_invert_m": [4.0, 3.8, 3.6, 5.0],
            "end_invert_m": [3.8, 3.6, 3.0, 5.0],
        },
        geometry=[
            # P1 ends 0.3 m short of R2: within the 0.5 m tolerance, snapped onto it.
            LineString([(X0 + 100, Y0 + 20), (X0 + 120, Y0 + 20), (X0 + 149.7, Y0 + 20)]),
            LineString([(X0 + 150, Y0 + 20), (X0 + 200, Y0 + 20)]),
            LineString([(X0 + 200, Y0 + 20), (X0 + 250, Y0 + 20)]),
            LineString([(X0 + 100, Y0 + 60), (X0 + 200, Y0 + 60)]),
        ],
        crs=tinycity.SRID,
    )


def write(nodes: gpd.GeoDataFrame, pipes: gpd.GeoDataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nodes.to_file(path, layer="pipe_nodes")
    pipes.to_file(path, layer="pipes")
    return path


def rows(s: Settings, q: str) -> list[tuple[object, ...]]:
    with connect(s) as conn:
        return conn.execute(q).fetchall()  # type: ignore[arg-type]


def test_snapping_and_3d_lines(base: Settings, tmp_path: Path) -> None:
    reports = ingest_files("pipes", [write(nodes_frame(), pipes_frame(), tmp_path / "net.gpkg")], settings=base)
    assert [(r.layer, r.inserted) for r in reports] == [("pipe_nodes", 6), ("pipes", 4)]
    assert reports[1].warnings == []
    end = rows(
        base,
        "SELECT ST_X(ST_EndPoint(geom)), ST_Z(ST_EndPoint(geom)), ST_Z(ST_PointN(geom, 2)) "
        "FROM pipes WHERE code = 'P1'",
    )[0]
    assert end[0] == pytest.approx(X0 + 150)  # snapped onto R2
    assert end[1] == pytest.approx(3.8)
    assert end[2] == pytest.approx(4.0 - 0.2 * 20 / 49.7)  # linear in distance along the drawn line


def test_errors_stop_the_load(base: Settings, tmp_path: Path) -> None:
    cases = {
        "dangling": ("to_node", 2, "R9", "to_node R9 does not exist"),
        "far": ("geometry", 1, LineString([(X0 + 150, Y0 + 20), (X0 + 199, Y0 + 20)]), "snap tolerance"),
        "above": ("start_invert_m", 2, 7.0, "above the ground"),
        "diameter": ("diameter_mm", 0, 0.0, "diameter_mm 0 must be > 0"),
        "network": ("network", 3, "rain", "joins nodes of networks"),
    }
    for name, (column, row, value, needle) in cases.items():
        pipes = pipes_frame()
        pipes.loc[row, column] = value
        if column == "geometry":
            pipes = pipes.set_geometry("geometry")
        before = fingerprint(base)
        with pytest.raises(IngestError) as info:
            ingest_files("pipes", [write(nodes_frame(), pipes, tmp_path / f"{name}.gpkg")], settings=base)
        assert needle in str(info.value), (name, str(info.value))
        assert fingerprint(base) == before, name
    nodes = nodes_frame()
    nodes.loc[1, "invert_elevation_m"] = 9.0
    with pytest.raises(IngestError, match=r"invert 9 m is above ground 5\.9 m"):
        ingest_files("pipes", [write(nodes, pipes_frame(), tmp_path / "node.gpkg")], settings=base)
    pipes = pd.concat([pipes_frame(), pipes_frame().iloc[[0]]])
    with pytest.raises(IngestError, match="duplicate code P1"):
        ingest_files("pipes", [write(nodes_frame(), gpd.GeoDataFrame(pipes), tmp_path / "dup.gpkg")], settings=base)


def test_warnings_load_and_are_listed(base: Settings, tmp_path: Path) -> None:
    pipes = pipes_frame()
    pipes.loc[1, ["start_invert_m", "end_invert_m"]] = [3.6, 3.8]  # P2 slopes uphill
    pipes = pipes.drop(index=2)  # R4 (the outfall) is cut off: rain falls into two parts
    nodes = nodes_frame()
    extra = gpd.GeoDataFrame(
        {
            "code": ["P9"],
            "network": ["rain"],
            "from_node": ["R3"],
            "to_node": ["R4"],
            "diameter_mm": [300.0],
            "start_invert_m": [3.0],
            "end_invert_m": [2.9],
        },
        geometry=[LineString([(X0 + 200, Y0 + 20), (X0 + 250, Y0 + 20)])],
        crs=tinycity.SRID,
    )
    reports = ingest_files("pipes", [write(nodes, pipes, tmp_path / "w.gpkg")], settings=base)
    warnings = [m for _, m in reports[1].warnings]
    assert any("P2 (rain) slopes uphill" in m for m in warnings), warnings
    assert any("network rain: 1 of its 2 parts drain nowhere" in m and "node R1 (3 nodes)" in m for m in warnings), (
        warnings
    )
    assert rows(base, "SELECT count(*) FROM pipes") == [(3,)]
    # P9's start invert (3.0) is below node R3's invert (3.6): loaded, with a warning.
    report = ingest_files("pipes", [write(nodes, extra, tmp_path / "w2.gpkg")], settings=base)[1]
    assert any("below the invert of node R3" in m for _, m in report.warnings)
    assert not any("parts" in m for _, m in report.warnings)


def test_csv_tables_and_dry_run(base: Settings, tmp_path: Path) -> None:
    nodes = nodes_frame()
    table = pd.DataFrame(nodes.drop(columns="geometry"))
    table["x"], table["y"] = nodes.geometry.x, nodes.geometry.y
    nodes_csv = tmp_path / "nodes.csv"
    table.to_csv(nodes_csv, index=False)
    pipes_csv = tmp_path / "pipes.csv"
    pd.DataFrame(pipes_frame().drop(columns="geometry")).to_csv(pipes_csv, index=False)
    with pytest.raises(IngestError, match="declares no CRS; pass --crs"):
        ingest_files("pipes", [nodes_csv, pipes_csv], settings=base)
    before = fingerprint(base)
    dry = ingest_files("pipes", [nodes_csv, pipes_csv], crs="EPSG:4547", settings=base, dry_run=True)
    assert [r.inserted for r in dry] == [6, 4] and all(r.dry_run for r in dry)
    assert fingerprint(base) == before
    ingest_files("pipes", [pipes_csv, nodes_csv], crs="EPSG:4547", settings=base)
    assert rows(base, "SELECT ST_AsText(geom) FROM pipes WHERE code = 'P3'") == [
        (f"LINESTRING Z ({X0 + 200:.0f} {Y0 + 20:.0f} 3.6,{X0 + 250:.0f} {Y0 + 20:.0f} 3)",)
    ]
