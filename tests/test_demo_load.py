"""The demo district through the real ``cim demo load``: what the generator says it wrote is what the
database holds (counts, areas, lengths), codes were assigned, and loading again changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cim.db import connect
from cim.settings import Settings
from ingest.city_layers import ingest_files
from sample_data.generate import LAYER_FILES

from dbcheck import fingerprint


@pytest.fixture(scope="module")
def summary(demo_dir: Path) -> dict[str, Any]:
    return dict(json.loads((demo_dir / "summary.json").read_text()))


def one(settings: Settings, q: str) -> Any:
    with connect(settings) as conn:
        row = conn.execute(q).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0] if len(row) == 1 else row


def test_demo_load_prints_the_table(demo_loaded: str, summary: dict[str, Any]) -> None:
    assert "layer" in demo_loaded and "rows" in demo_loaded
    assert f"{summary['counts']['buildings']:,}" in demo_loaded
    assert "rejected 0" in demo_loaded and "rejected 1" not in demo_loaded


def test_counts_match_the_generator(settings: Settings, demo_loaded: str, summary: dict[str, Any]) -> None:
    counts = summary["counts"]
    for level, n in counts["admin_by_level"].items():
        assert one(settings, f"SELECT count(*) FROM admin_units WHERE level = '{level}'") == n
    for table in ("parcels", "buildings", "houses", "pipe_nodes", "pipes", "devices", "observations", "events"):
        assert one(settings, f"SELECT count(*) FROM {table}") == counts[table], table
    assert 4000 <= counts["buildings"] <= 6000 and 2500 <= counts["pipes"] <= 3500


def test_sums_match_the_generator(settings: Settings, demo_loaded: str, summary: dict[str, Any]) -> None:
    rel = 1e-6
    assert one(settings, "SELECT sum(footprint_area_m2) FROM buildings") == pytest.approx(
        summary["building_footprint_area_m2"], rel=rel
    )
    assert one(settings, "SELECT sum(floor_area_m2) FROM buildings") == pytest.approx(
        summary["building_floor_area_m2"], rel=rel
    )
    assert one(settings, "SELECT sum(area_m2) FROM parcels") == pytest.approx(summary["parcel_area_m2"], rel=rel)
    assert one(settings, "SELECT sum(area_m2) FROM houses") == pytest.approx(summary["house_area_m2"], rel=rel)
    assert one(settings, "SELECT area_m2 FROM admin_units WHERE level = 'district'") == pytest.approx(
        summary["district_area_m2"], rel=rel
    )
    for network, length in summary["pipe_length_by_network_m"].items():
        assert one(settings, f"SELECT sum(length_m) FROM pipes WHERE network = '{network}'") == pytest.approx(
            length, rel=rel
        ), network
    # The units partition each other: grids add up to the district.
    assert one(settings, "SELECT sum(area_m2) FROM admin_units WHERE level = 'grid'") == pytest.approx(
        summary["district_area_m2"], rel=rel
    )


def test_links_and_codes(settings: Settings, demo_loaded: str, summary: dict[str, Any]) -> None:
    # Buildings without a code got one in their grid; every building lies in a parcel.
    assert (
        one(settings, "SELECT count(*) FROM buildings WHERE source_file = 'buildings.gpkg'")
        == summary["counts"]["buildings"]
    )
    assert (
        one(
            settings,
            "SELECT count(*) FROM buildings WHERE NOT ST_Intersects("
            "(SELECT geom FROM admin_units WHERE code = buildings.grid_code), "
            "ST_PointOnSurface(footprint))",
        )
        == 0
    )
    assert one(settings, "SELECT count(*) FROM buildings WHERE parcel_code IS NULL") == 0
    # Water-level sensors sit in manholes; every event and device is in a grid of the district.
    assert one(settings, "SELECT count(*) FROM devices WHERE kind = 'water_level' AND pipe_node_code IS NULL") == 0
    assert one(settings, "SELECT count(DISTINCT district_code) FROM events") == 1
    # Planning breaches the generator planted are visible with plain SQL.
    planning = summary["planning"]
    assert (
        one(
            settings,
            "SELECT count(*) FROM buildings b JOIN parcels p ON p.code = b.parcel_code "
            "WHERE b.height_m > p.height_limit_m",
        )
        == planning["buildings_over_height_limit"]
    )
    assert (
        one(
            settings,
            "SELECT count(*) FROM (SELECT p.code FROM parcels p JOIN buildings b ON b.parcel_code = p.code "
            "GROUP BY p.code, p.area_m2, p.far_limit HAVING sum(b.floor_area_m2) / p.area_m2 > p.far_limit) x",
        )
        == planning["parcels_over_far_limit"]
    )
    # Gravity pipes slope downstream.
    assert (
        one(
            settings,
            "SELECT count(*) FROM pipes WHERE network IN ('rain', 'sewage') AND start_invert_m <= end_invert_m",
        )
        == 0
    )


def test_loading_the_demo_again_changes_nothing(settings: Settings, demo_loaded: str, demo_dir: Path) -> None:
    before = fingerprint(settings)
    for kind, name in LAYER_FILES.items():
        for report in ingest_files(kind, [demo_dir / name], settings=settings):
            assert (report.inserted, report.updated, len(report.rejected)) == (0, 0, 0), report.summary()
    assert fingerprint(settings) == before
