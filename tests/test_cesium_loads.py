"""CesiumJS itself loads our tilesets (headless Chromium, WebGL on SwiftShader, offline; tests/cesium.py): no tile
failures, console or page errors, content drawn, features picked on screen carry the database's metadata and are
drawn where PostGIS puts them, and the root bounding sphere is centred over the data. The same tilesets pass the
structural checker (tests/tileset_checks.py).

All layers load in one browser page (one start-up, shaders compiled once): the demo district's buildings and
pipes, FZK-Haus's BIM tileset on the tiny city, and a copy of the buildings tileset with one tile cut short, which
Cesium must report (so a silent loader would fail this module). To cover another layer: build it in
``tilesets_to_load``, add its `Layer` (how to view it, how a feature names its database row, where its data lies).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cim.db import connect
from cim.settings import Settings
from tilesets.build import LAYERS

from cesium import CesiumLoad, CesiumRun, load_tilesets_in_cesium
from tile_reader import Glb
from tileset_checks import check_tileset

ROOF_CM = 0.05  # sampleHeight against the database roof: depth-buffer sampling of a float32 mesh


@dataclass(frozen=True)
class Layer:
    """How a layer is viewed in Cesium and checked against its database."""

    sse: float  # maximumScreenSpaceError for the whole-tileset view (the demo's pipes need fine tiles from afar)
    globe: bool  # False for content under the ground
    knows: str  # SQL: 1 row when the feature's properties (named parameters) name a database row
    area: str  # SQL: the polygon (storage CRS) the root sphere's centre must lie over


DISTRICT = "SELECT geom FROM admin_units WHERE level = 'district'"
LAYERS_IN_CESIUM: dict[str, Layer] = {
    "buildings": Layer(16, True, "SELECT 1 FROM buildings WHERE building_code = %(building_code)s", DISTRICT),
    "pipes": Layer(
        2,
        False,
        "SELECT 1 FROM pipes WHERE code = %(code)s AND network = %(network)s "
        "UNION ALL SELECT 1 FROM pipe_nodes WHERE code = %(code)s AND network = %(network)s",
        DISTRICT,
    ),
    "bim": Layer(
        1,
        True,
        "SELECT 1 FROM bim_elements WHERE ifc_guid = %(ifc_guid)s "
        "UNION ALL SELECT 1 FROM buildings WHERE building_code = %(building_code)s AND %(ifc_guid)s IS NULL",
        "SELECT ST_Buffer(footprint, 2) FROM buildings WHERE height_source = 'bim'",
    ),
}


# --------------------------------------------------------------------------------------------------
# One Cesium run over every layer


@pytest.fixture(scope="module")
def databases(demo_loaded: str, settings: Settings, tiny_fzk: Settings) -> dict[str, Settings]:
    """The demo district for buildings and pipes; the tiny city with FZK-Haus (conftest) for BIM."""
    return {"buildings": settings, "pipes": settings, "bim": tiny_fzk}


@pytest.fixture(scope="module")
def highest_roof(demo_loaded: str, settings: Settings) -> dict[str, Any]:
    """The demo building with the highest roof: a point on its roof nothing can hide from a camera above."""
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT building_code, ST_X(p), ST_Y(p), ground_elevation_m + height_m FROM ("
            " SELECT building_code, ground_elevation_m, height_m,"
            "        ST_Transform(ST_PointOnSurface(footprint), 4326) AS p FROM buildings"
            " ORDER BY ground_elevation_m + height_m DESC LIMIT 1) b"
        ).fetchone()
    assert row is not None
    code, lon, lat, roof = row
    return {"code": code, "lon": lon, "lat": lat, "roof": roof + settings.height_offset_m}


@pytest.fixture(scope="module")
def tilesets_to_load(databases: dict[str, Settings], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cesium")
    return {layer: LAYERS[layer](db, out=out / layer).path for layer, db in databases.items()}


@pytest.fixture(scope="module")
def cut_tile(tilesets_to_load: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of the buildings tileset with its biggest tile cut in half (folder, that tile's path in it)."""
    broken = tmp_path_factory.mktemp("broken") / "buildings"
    shutil.copytree(tilesets_to_load["buildings"], broken)
    victim = max(broken.rglob("*.glb"), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return broken, str(victim.relative_to(broken))


@pytest.fixture(scope="module")
def cesium(
    tilesets_to_load: dict[str, Path],
    cut_tile: tuple[Path, str],
    highest_roof: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> CesiumRun:
    """The one Cesium run; screenshots and the reports are kept in the test's temporary folder to look at."""
    artifacts = tmp_path_factory.mktemp("cesium-artifacts")
    loads = []
    for name, folder in [*tilesets_to_load.items(), ("broken", cut_tile[0])]:
        layer = LAYERS_IN_CESIUM["buildings" if name == "broken" else name]
        probes = [(highest_roof["lon"], highest_roof["lat"], highest_roof["roof"])] if name == "buildings" else []
        shot = str(artifacts / f"{name}.png")
        loads.append(
            CesiumLoad(str(folder / "tileset.json"), layer.sse, globe=layer.globe, probes=probes, screenshot=shot)
        )
    run = load_tilesets_in_cesium(loads)
    (artifacts / "reports.json").write_text(json.dumps(dataclasses.asdict(run), indent=1, ensure_ascii=False))
    assert run.errors == [], "errors while the page started"
    assert len(run.reports) == len(loads)
    return run


def content_path(folder: Path, url: str) -> Path:
    """The file behind a content URL the harness served from ``folder`` (at /tiles/<i>/)."""
    return folder / re.sub(r"^.*?/tiles/\d+/", "", url).split("?")[0]


def report_of(cesium: CesiumRun, tilesets: dict[str, Path], name: str) -> dict[str, Any]:
    [report] = [r for r in cesium.reports if r["tileset"] == str(tilesets[name] / "tileset.json")]
    return report


# --------------------------------------------------------------------------------------------------
# Every layer


@pytest.mark.parametrize("layer", sorted(LAYERS_IN_CESIUM))
def test_layer_loads_in_cesium_without_errors_over_its_data(
    layer: str, cesium: CesiumRun, tilesets_to_load: dict[str, Path], databases: dict[str, Settings]
) -> None:
    report = report_of(cesium, tilesets_to_load, layer)
    assert report["errors"] == []
    assert report["tilesLoaded"] and not report["timedOut"]
    assert report["tilesWithContent"] >= 1 and report["featuresLoaded"] >= 1 and report["commandsDrawn"] >= 1
    assert all(url.startswith("http://127.0.0.1:") for url in report["contentUrls"])
    spec = LAYERS_IN_CESIUM[layer]
    root = report["root"]
    with connect(databases[layer]) as conn:
        [inside] = conn.execute(
            f"SELECT ST_Contains(area.geom, ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), ST_SRID(area.geom)))"
            f" FROM ({spec.area}) AS area(geom)",
            (root["lon"], root["lat"]),
        ).fetchall()
        assert inside == (True,), f"root sphere centre {root} is not over the layer's data"
        for feature in (report["sample"], report["pick"]):
            if feature is None:
                continue
            props = {"building_code": None, "ifc_guid": None, "code": None, "network": None, **feature["properties"]}
            assert conn.execute(spec.knows, props).fetchall(), f"{feature['properties']} is no database row"


@pytest.mark.parametrize("layer", sorted(LAYERS_IN_CESIUM))
def test_layer_passes_the_structural_checker(layer: str, tilesets_to_load: dict[str, Path]) -> None:
    assert check_tileset(tilesets_to_load[layer]) == []


def test_every_layer_found_a_feature_on_screen(cesium: CesiumRun, tilesets_to_load: dict[str, Path]) -> None:
    for layer in LAYERS_IN_CESIUM:
        report = report_of(cesium, tilesets_to_load, layer)
        assert report["sample"] is not None and report["pick"] is not None, layer


def test_a_cut_tile_is_reported_by_cesium(cesium: CesiumRun, cut_tile: tuple[Path, str]) -> None:
    folder, victim = cut_tile
    [report] = [r for r in cesium.reports if r["tileset"] == str(folder / "tileset.json")]
    assert any(e.startswith("tile failed:") and f"/{victim}?" in e for e in report["errors"]), report["errors"]


# --------------------------------------------------------------------------------------------------
# Buildings: what Cesium picks and draws against PostGIS


def building_row(settings: Settings, code: str) -> dict[str, Any]:
    with connect(settings) as conn:
        cur = conn.execute(
            "SELECT building_code, coalesce(name, '') AS name, use, height_m, storeys, ground_elevation_m, grid_code,"
            " coalesce(parcel_code, '') AS parcel_code, height_source, version FROM buildings WHERE building_code = %s",
            (code,),
        )
        row = cur.fetchone()
        assert row is not None, f"{code} is not in the database"
        return dict(zip([c.name for c in cur.description or []], row, strict=True))


def assert_metadata_is_the_row(properties: dict[str, Any], row: dict[str, Any]) -> None:
    for name in ("building_code", "use", "storeys", "grid_code", "height_source", "version"):
        assert properties[name] == row[name], name
    assert (properties.get("name") or "") == row["name"] and (properties.get("parcel_code") or "") == row["parcel_code"]
    assert properties["height_m"] == pytest.approx(row["height_m"], abs=1e-3)


def test_the_highest_roof_is_picked_where_postgis_puts_it_and_drawn_at_its_height(
    cesium: CesiumRun, tilesets_to_load: dict[str, Path], highest_roof: dict[str, Any], settings: Settings
) -> None:
    """A point on the highest roof, projected to the screen and picked there, is that building; Cesium's scene
    height at that lon/lat (a depth pass looking down) is the database's ground + height within 5 cm."""
    [probe] = report_of(cesium, tilesets_to_load, "buildings")["probes"]
    assert probe["feature"] is not None, f"nothing drawn at {probe}"
    assert probe["feature"]["properties"]["building_code"] == highest_roof["code"]
    assert_metadata_is_the_row(probe["feature"]["properties"], building_row(settings, highest_roof["code"]))
    assert probe["sampledHeight"] == pytest.approx(highest_roof["roof"], abs=ROOF_CM)


def test_a_building_picked_on_screen_is_the_database_building_there(
    cesium: CesiumRun, tilesets_to_load: dict[str, Path], settings: Settings
) -> None:
    """The first building found on a grid of screen positions: its metadata is its database row, and the point
    picked (depth buffer: metres of error from this far) lies within 5 m of its footprint, between ground and roof."""
    pick = report_of(cesium, tilesets_to_load, "buildings")["pick"]
    row = building_row(settings, pick["properties"]["building_code"])
    assert_metadata_is_the_row(pick["properties"], row)
    where = pick["position"]
    assert where is not None, "pickPosition is not supported"
    with connect(settings) as conn:
        [distance] = conn.execute(
            "SELECT ST_Distance(footprint, ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), ST_SRID(footprint)))"
            " FROM buildings WHERE building_code = %s",
            (where["lon"], where["lat"], row["building_code"]),
        ).fetchone() or [None]
    assert distance is not None and distance < 5.0
    ground = row["ground_elevation_m"] + settings.height_offset_m
    assert ground - 5 < where["height"] < ground + row["height_m"] + 5


def test_cesium_reads_the_property_table_our_reader_reads(
    cesium: CesiumRun, tilesets_to_load: dict[str, Path], settings: Settings
) -> None:
    """Cesium's feature count and metadata for a sampled feature equal those the independent reader finds in the
    file and the database row of that building."""
    report = report_of(cesium, tilesets_to_load, "buildings")
    sample = report["sample"]
    folder = tilesets_to_load["buildings"]
    table = Glb(content_path(folder, sample["url"])).property_table()
    assert sample["featuresLength"] == len(table["building_code"])
    assert sample["properties"]["building_code"] == table["building_code"][sample["featureId"]]
    assert_metadata_is_the_row(sample["properties"], building_row(settings, sample["properties"]["building_code"]))
    with connect(settings) as conn:
        [n] = conn.execute("SELECT count(*) FROM buildings").fetchone() or [0]
    loaded = sum(len(Glb(content_path(folder, u)).property_table()["building_code"]) for u in report["contentUrls"])
    assert report["featuresLoaded"] == loaded <= n
