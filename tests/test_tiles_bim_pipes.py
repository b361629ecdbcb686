"""The BIM and pipes tilesets, checked by tools and code that do not share the writer's code: the Khronos glTF
validator (node), an independent GLB reader (tests/tile_reader.py), pyproj for placement, the database for
metadata; incremental pipe builds on the tiny city compared file by file on disk; BIM from the real FZK-Haus
IFC model ingested with ``cim ingest ifc --anchor`` on a tiny-city parcel (the session's ``tiny_fzk``, conftest).
The layer-independent structure (schema fields, geometric-error order, containment, feature ids) is checked by
tests/tileset_checks.py; `check_layer` adds what is particular to these layers."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyproj import CRS, Transformer

from cim.db import connect, ensure_database
from cim.settings import Settings, get_settings
from cim.store.tiles import tileset_entry
from ingest.city_layers import ingest_files
from tilesets.bim import build_bim
from tilesets.layer_build import BuildOptions, BuildReport, content_uri
from tilesets.pipes import build_pipes
from tilesets.quadtree import Cell

import tinycity
from cliharness import run_cli
from tile_reader import Glb, content_files, decode_meshopt, tiles_with_world, to_ecef, validate_gltf
from tileset_checks import check_tileset

CM = 0.01
PLAIN = {"EXT_mesh_features", "EXT_structural_metadata", "KHR_mesh_quantization"}
MESHOPT = "EXT_meshopt_compression"
TO_ECEF_4547 = Transformer.from_crs(CRS("EPSG:4547").to_3d(), CRS("EPSG:4978"), always_xy=True)


def assert_valid(*folders: Path) -> list[dict[str, Any]]:
    reports = validate_gltf(*folders)
    bad = [(r["file"], m) for r in reports for m in r["messages"] if m["severity"] <= 1]
    assert bad == []
    assert all(r["errors"] == 0 and r["warnings"] == 0 for r in reports)
    return reports


def decoded_and_valid(folder: Path, target: Path) -> Path:
    """The tiles of ``folder`` decoded as a viewer decodes them; the validator passes both the compressed
    files (JSON, property tables) and the decoded ones (accessor data too: bounds, index ranges, unit normals)."""
    compressed = assert_valid(folder)
    assert compressed and all(set(r["extensionsUsed"]) == PLAIN | {MESHOPT} for r in compressed)
    decode_meshopt(folder, target)
    plain = assert_valid(target)
    assert len(plain) == len(compressed) and all(set(r["extensionsUsed"]) == PLAIN for r in plain)
    return target


def contents(folder: Path, decoded: Path) -> Iterator[tuple[dict[str, Any], np.ndarray, list[tuple[Any, ...]], Glb]]:
    """Every content tile with its world matrix, ancestors and decoded GLB."""
    for tile, world, chain in tiles_with_world(json.loads((folder / "tileset.json").read_text())):
        if "content" in tile:
            yield tile, world, chain, Glb(decoded / tile["content"]["uri"])


def check_layer(folder: Path, decoded: Path, tileset_version: int, tile_count: int) -> None:
    """The structural checker passes (schema fields, geometric-error order with leaves 0, containment of every
    decoded vertex in its tile and all ancestors, feature ids within their property table), and what it leaves
    to a layer: this build's tilesetVersion, a content on every leaf, exactly quantization and meshopt required,
    every row of a tile's property table drawn, written normals agreeing with the winding, one file per tile."""
    assert check_tileset(folder) == []
    doc = json.loads((folder / "tileset.json").read_text())
    assert doc["asset"]["tilesetVersion"] == str(tileset_version)
    assert all("children" in tile or "content" in tile for tile, _w, _c in tiles_with_world(doc)), "an empty leaf"
    seen = 0
    for tile, _world, _chain, glb in contents(folder, decoded):
        seen += 1
        required = Glb(folder / tile["content"]["uri"]).doc["extensionsRequired"]
        assert set(required) == {"KHR_mesh_quantization", MESHOPT}
        _pos, ids = glb.vertices()
        count = glb.doc["extensions"]["EXT_structural_metadata"]["propertyTables"][0]["count"]
        assert set(ids.tolist()) == set(range(count)), "every feature is drawn"
        corner, normal, _ = glb.triangles()
        face = np.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])
        facing = np.einsum("ij,ij->i", face, normal.sum(axis=1)) > 0
        if glb.doc["extensions"]["EXT_structural_metadata"]["schema"]["id"] == "cim_buildings":
            # The BIM leaves' LOD1 blocks (the buildings layer's meshes): roof slivers of footprints with
            # near-collinear vertices, thinner than the 2 mm a snap to the mm grid can move a vertex across, may
            # flip when compressed.
            longest = np.linalg.norm(corner - np.roll(corner, 1, axis=1), axis=2).max(axis=1)
            facing |= np.linalg.norm(face, axis=1) / longest < 0.002
        assert facing.all(), "a triangle faces inwards"
    assert seen == tile_count == len(list(folder.rglob("*.glb")))


def distance_to_lines(points: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Distance of each point to the nearest of the infinite lines through consecutive axis points."""
    out = np.full(len(points), np.inf)
    for a, b in itertools.pairwise(axis):
        d = (b - a) / np.linalg.norm(b - a)
        v = points - a
        out = np.minimum(out, np.linalg.norm(v - np.outer(v @ d, d), axis=1))
    return out


def load_tiny_pipes(s: Settings, folder: Path) -> None:
    """The tiny city's admin units and pipes into the new, empty database of ``s`` (files written to ``folder``)."""
    ensure_database(s)
    files = tinycity.write_all(folder)
    for kind in ("admin", "pipes"):
        ingest_files(kind, [files[kind]], settings=s)


def check_pipe_placement(drawn: np.ndarray, axis_ecef: np.ndarray, radius: float) -> None:
    """A tube: every ring vertex at the radius from the pyproj axis, cap centres on the axis' end points."""
    dist = distance_to_lines(drawn, axis_ecef)
    ring = dist > radius / 2
    assert np.abs(dist[ring] - radius).max() < CM, "a tube vertex is off the pipe's surface"
    centres = drawn[~ring]
    assert len(centres) == 2
    assert np.linalg.norm(centres[:, None] - axis_ecef[[0, -1]][None], axis=2).min(axis=1).max() < CM
    # The tube reaches both ends and no further.
    along = (drawn - axis_ecef[0]) @ (axis_ecef[-1] - axis_ecef[0]) / np.linalg.norm(axis_ecef[-1] - axis_ecef[0])
    assert abs(along.max() - np.linalg.norm(axis_ecef[-1] - axis_ecef[0])) < radius + CM and along.min() > -CM - radius


# --------------------------------------------------------------------------------------------------
# Pipes of the demo district


@pytest.fixture(scope="module")
def demo_pipes(
    demo_loaded: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[BuildReport, Path]:
    """The demo's pipes tileset and its tiles decoded (validated both ways)."""
    report = build_pipes(settings, out=tmp_path_factory.mktemp("tiles") / "pipes")
    return report, decoded_and_valid(report.path, tmp_path_factory.mktemp("decoded"))


def test_demo_pipe_tileset_structure(demo_pipes: tuple[BuildReport, Path]) -> None:
    report, decoded = demo_pipes
    assert report.tile_count > 1 and len(list(decoded.rglob("*.glb"))) == report.tile_count
    check_layer(report.path, decoded, report.tileset_version, report.tile_count)
    doc = json.loads((report.path / "tileset.json").read_text())
    assert doc["root"]["refine"] == "ADD"
    assert not list(report.path.parent.glob(".pipes.staging-*")), "staging folders left behind"


def test_demo_pipes_and_nodes_are_features_with_their_metadata(
    demo_pipes: tuple[BuildReport, Path], settings: Settings
) -> None:
    report, decoded = demo_pipes
    with connect(settings) as conn:
        pipe_sql = (
            "SELECT code, network, coalesce(material, ''), diameter_mm, start_invert_m, end_invert_m, from_node, "
            "to_node FROM pipes"
        )
        pipes = {r[0]: r[1:] for r in conn.execute(pipe_sql).fetchall()}
        node_sql = "SELECT code, network, kind, ground_elevation_m, invert_elevation_m, depth_m FROM pipe_nodes"
        nodes = {r[0]: r[1:] for r in conn.execute(node_sql).fetchall()}
        entry = tileset_entry(conn, "pipes")
    seen: dict[str, str] = {}
    for _tile, _world, _chain, glb in contents(report.path, decoded):
        t = glb.property_table()
        assert len(t["code"]) <= 1000, "more features in a tile than --max-features"
        for optional in ("material", "from_node", "to_node"):  # left out of a tile where no row has a value
            t.setdefault(optional, [""] * len(t["code"]))
        for i, code in enumerate(t["code"]):
            seen[code] = t["element"][i]
            if t["element"][i] == "pipe":
                network, material, diameter, start, end, from_node, to_node = pipes[code]
                assert (t["network"][i], t["material"][i]) == (network, material)
                assert (t["from_node"][i], t["to_node"][i]) == (from_node, to_node)
                assert t["diameter_mm"][i] == pytest.approx(diameter, abs=1e-3)
                assert (t["start_invert_m"][i], t["end_invert_m"][i]) == pytest.approx((start, end), abs=1e-4)
                assert t["ground_elevation_m"][i] == -9999.0  # noData
            else:
                network, kind, ground, invert, depth = nodes[code]
                assert (t["network"][i], t["element"][i]) == (network, kind)
                assert (t["ground_elevation_m"][i], t["start_invert_m"][i]) == pytest.approx((ground, invert), abs=1e-4)
                assert t["depth_m"][i] == pytest.approx(depth, abs=1e-4) and t["diameter_mm"][i] == -9999.0
    assert len(seen) == len(pipes) + len(nodes) == report.feature_count
    assert {c for c, e in seen.items() if e == "pipe"} == set(pipes)
    assert entry is not None and entry["path"] == str(report.path)
    assert (entry["feature_count"], entry["tile_count"]) == (len(seen), report.tile_count)
    assert entry["tileset_version"] == report.tileset_version


def test_demo_pipes_and_manholes_are_where_pyproj_puts_them(
    demo_pipes: tuple[BuildReport, Path], settings: Settings
) -> None:
    """Feature id → code (property table) → the stored line and node: drawn vertices within 1 cm of the tube
    around pyproj's ECEF of the line raised by half the diameter, manholes from invert to ground, valves
    centred on the pipe axis."""
    report, decoded = demo_pipes
    checked = {"pipe": 0, "manhole": 0, "valve": 0}
    with connect(settings) as conn:
        for _tile, world, _chain, glb in contents(report.path, decoded):
            pos, ids = glb.vertices()
            ecef = to_ecef(pos, world)
            t = glb.property_table()
            for kind in checked:
                of_kind = [i for i, e in enumerate(t["element"]) if e == kind]
                for fid in of_kind[:: max(1, len(of_kind) // 3)]:
                    drawn, code = ecef[ids == fid], t["code"][fid]
                    if kind == "pipe":
                        rows = conn.execute(
                            "SELECT ST_X(d.geom), ST_Y(d.geom), ST_Z(d.geom), p.diameter_mm / 1000 FROM pipes p, "
                            "ST_DumpPoints(p.geom) d WHERE p.code = %s ORDER BY d.path",
                            (code,),
                        ).fetchall()
                        a = np.array(rows, dtype=np.float64)
                        h = a[:, 2] + a[:, 3] / 2 + settings.height_offset_m
                        axis = np.stack(TO_ECEF_4547.transform(a[:, 0], a[:, 1], h), axis=1)
                        check_pipe_placement(drawn, axis, a[0, 3] / 2)
                    else:
                        x, y, ground, invert, d = conn.execute(
                            "SELECT ST_X(geom), ST_Y(geom), ground_elevation_m, invert_elevation_m, (SELECT "
                            "max(diameter_mm) / 1000 FROM pipes WHERE from_node = n.code OR to_node = n.code) "
                            "FROM pipe_nodes n WHERE code = %s",
                            (code,),
                        ).fetchone()
                        d = 0.3 if d is None else d
                        if kind == "manhole":
                            h = np.array([invert, ground]) + settings.height_offset_m
                            ends = np.stack(TO_ECEF_4547.transform([x, x], [y, y], h), axis=1)
                            radius = max(0.5, d / 2 + 0.2)
                            check_pipe_placement(drawn, ends, radius)
                        else:
                            centre = TO_ECEF_4547.transform(x, y, invert + d / 2 + settings.height_offset_m)
                            assert np.linalg.norm(drawn.mean(axis=0) - centre) < CM
                            assert np.linalg.norm(drawn - centre, axis=1).max() < max(0.3, 1.5 * d)
                    checked[kind] += 1
    assert min(checked.values()) >= report.tile_count // 2, checked


# --------------------------------------------------------------------------------------------------
# The tiny city with FZK-Haus (``tiny_fzk``, shared with other modules: tests restore what they change): BIM;
# incremental pipes on a database of their own


@pytest.fixture(scope="module")
def fzk_tiles(tiny_fzk: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[BuildReport, Path]:
    """FZK-Haus's BIM tileset (at most 40 elements per tile) and its tiles decoded (validated both ways)."""
    report = build_bim(tiny_fzk, out=tmp_path_factory.mktemp("bim") / "bim", options=BuildOptions(max_features=40))
    return report, decoded_and_valid(report.path, tmp_path_factory.mktemp("decoded"))


def test_bim_tileset_replaces_the_lod1_block_by_the_elements(
    fzk_tiles: tuple[BuildReport, Path], tiny_fzk: Settings
) -> None:
    report, decoded = fzk_tiles
    check_layer(report.path, decoded, report.tileset_version, report.tile_count)
    doc = json.loads((report.path / "tileset.json").read_text())
    with connect(tiny_fzk) as conn:
        code, height, storeys = conn.execute(
            "SELECT building_code, height_m, storeys FROM buildings WHERE height_source = 'bim'"
        ).fetchone()
    assert doc["extras"]["cim"]["buildings_with_bim"] == [code]
    with connect(tiny_fzk) as conn:
        entry = tileset_entry(conn, "bim")
    assert entry is not None and entry["path"] == str(report.path) and entry["feature_count"] == 83
    assert (entry["tile_count"], entry["tileset_version"]) == (report.tile_count, report.tileset_version)
    [leaf] = [t for t, _w, _c in tiles_with_world(doc) if t.get("children") and "content" in t]
    assert leaf["refine"] == "REPLACE" and leaf["geometricError"] == pytest.approx(height / storeys)
    assert len(leaf["children"]) >= 3, "83 elements with at most 40 per tile"
    block = Glb(decoded / leaf["content"]["uri"])
    assert block.doc["extensions"]["EXT_structural_metadata"]["schema"]["id"] == "cim_buildings"
    assert block.property_table()["building_code"] == [code]
    for child in leaf["children"]:
        assert "transform" not in child and child["geometricError"] == 0 and "children" not in child


def test_bim_elements_are_features_with_their_metadata_and_place(
    fzk_tiles: tuple[BuildReport, Path], tiny_fzk: Settings
) -> None:
    """Every drawn element once (spaces left out); feature id → IFC GUID → the stored TIN: its triangle corners
    through pyproj are exactly the drawn vertices of that feature (within 1 cm)."""
    with connect(tiny_fzk) as conn:
        db = {r[0]: r[1:] for r in conn.execute(
            "SELECT ifc_guid, ifc_class, coalesce(name, ''), coalesce(storey, ''), building_code FROM bim_elements "
            "WHERE mesh IS NOT NULL AND ifc_class <> 'IfcSpace'").fetchall()}  # fmt: skip
        spaces = conn.execute("SELECT count(*) FROM bim_elements WHERE ifc_class = 'IfcSpace'").fetchone()
        guids: list[str] = []
        checked = 0
        report, decoded = fzk_tiles
        for tile, world, _chain, glb in contents(report.path, decoded):
            if tile.get("children"):
                continue  # the LOD1 block
            t = glb.property_table()
            guids += t["ifc_guid"]
            pos, ids = glb.vertices()
            ecef = to_ecef(pos, world)
            materials = {m["name"] for m in glb.doc["materials"]}
            assert materials <= {"wall", "slab", "roof", "window", "door", "stair", "railing", "structure", "site"}
            for optional in ("name", "storey"):
                t.setdefault(optional, [""] * len(t["ifc_guid"]))
            assert set(t["load_bearing"]) <= {"unknown", "false", "true"}
            for fid, guid in enumerate(t["ifc_guid"]):
                ifc_class, name, storey, building = db[guid]
                assert (t["ifc_class"][fid], t["building_code"][fid]) == (ifc_class, building)
                assert (t["name"][fid], t["storey"][fid]) == (name, storey)
                drawn = ecef[ids == fid]
                if fid % 3 or len(drawn) > 2000:  # a sample (pairwise distances grow quadratically)
                    continue
                rows = conn.execute(
                    "SELECT ST_X(d.geom), ST_Y(d.geom), ST_Z(d.geom) FROM bim_elements e, ST_DumpPoints(e.mesh) d "
                    "WHERE e.ifc_guid = %s",
                    (guid,),
                ).fetchall()
                a = np.array(rows, dtype=np.float64)
                expected = np.stack(TO_ECEF_4547.transform(a[:, 0], a[:, 1], a[:, 2] + tiny_fzk.height_offset_m), 1)
                checked += 1
                gap = np.linalg.norm(drawn[:, None, :] - expected[None, :, :], axis=2)
                assert gap.min(axis=1).max() < CM, f"{guid}: a drawn vertex is not a stored corner"
                assert gap.min(axis=0).max() < CM, f"{guid}: a stored corner is not drawn"
    assert sorted(guids) == sorted(db) and len(guids) == report.feature_count
    assert spaces is not None and spaces[0] == 7 and checked >= 20


def test_incremental_bim_rewrites_a_building_only_when_its_elements_change(tiny_fzk: Settings, tmp_path: Path) -> None:
    out = tmp_path / "bim"
    first = build_bim(tiny_fzk, out=out)
    before = content_files(out)
    same = build_bim(tiny_fzk, out=out, incremental=True)
    assert (same.written, same.reused) == (0, 1) and content_files(out) == before
    with connect(tiny_fzk) as conn:
        guid, name = conn.execute(
            "SELECT ifc_guid, name FROM bim_elements WHERE ifc_class = 'IfcDoor' ORDER BY ifc_guid LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE bim_elements SET name = 'Haustür' WHERE ifc_guid = %s", (guid,))
    try:
        edited = build_bim(tiny_fzk, out=out, incremental=True)
    finally:
        with connect(tiny_fzk) as conn:
            conn.execute("UPDATE bim_elements SET name = %s WHERE ifc_guid = %s", (name, guid))
    after = content_files(out)
    assert edited.written == 1 and set(after) == set(before) and edited.tileset_version == first.tileset_version + 2
    assert all(after[k][:2] != before[k][:2] for k in before), "the building's leaf and element tiles are rewritten"
    names = {}
    for path in out.rglob("*-*.glb"):  # the element tiles
        table = Glb(path).property_table()
        names.update(zip(table["ifc_guid"], table["name"], strict=True))
    assert names[guid] == "Haustür"


ONE_PER_TILE = BuildOptions(max_features=1)


def test_incremental_pipes_rewrite_exactly_the_tiles_whose_features_changed(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    tiny = fresh_settings  # edited below: not the shared tiny city
    load_tiny_pipes(tiny, tmp_path / "in")
    out = tmp_path / "pipes"
    first = build_pipes(tiny, out=out, options=ONE_PER_TILE)
    assert (first.tile_count, first.written, first.feature_count) == (5, 5, 5)
    before = content_files(out)

    def tile_of(code: str) -> str:
        for tile, _w, _c in tiles_with_world(json.loads((out / "tileset.json").read_text())):
            if "content" in tile and code in Glb(out / tile["content"]["uri"]).property_table()["code"]:
                return str(tile["content"]["uri"])
        raise AssertionError(code)

    uri = {code: tile_of(code) for code in ("YS-1", "YS-2", "YSJ-1", "YSJ-2", "YSJ-3")}
    same = build_pipes(tiny, out=out, incremental=True, options=ONE_PER_TILE)
    assert (same.written, same.reused, same.tileset_version) == (0, 5, first.tileset_version + 1)
    assert content_files(out) == before

    with connect(tiny) as conn:  # one pipe: new material, 10 cm deeper
        conn.execute(
            "UPDATE pipes SET material = 'PVC', start_invert_m = start_invert_m - 0.1, end_invert_m = end_invert_m "
            "- 0.1, geom = ST_Translate(geom, 0, 0, -0.1) WHERE code = 'YS-1'"
        )
    edited = build_pipes(tiny, out=out, incremental=True, options=ONE_PER_TILE)
    after = content_files(out)
    assert (
        {k for k in before if after[k] != before[k]}
        == {uri["YS-1"]}
        == {content_uri(Cell.from_key(k)) for k in edited.written_keys}
    )
    table = Glb(out / uri["YS-1"]).property_table()
    assert table["material"] == ["PVC"] and table["start_invert_m"] == pytest.approx([2.9])
    assert json.loads((out / "tileset.json").read_text())["asset"]["tilesetVersion"] == str(same.tileset_version + 1)

    with connect(tiny) as conn:  # deleting YS-2 also resizes the glyphs of the nodes it was the widest pipe of
        conn.execute("DELETE FROM pipes WHERE code = 'YS-2'")
    deleted = build_pipes(tiny, out=out, incremental=True, options=ONE_PER_TILE)
    final = content_files(out)
    assert (deleted.feature_count, deleted.tile_count, deleted.removed) == (4, 4, 1)
    assert set(final) == set(after) - {uri["YS-2"]}
    assert {k for k in final if final[k] != after[k]} == {uri["YSJ-2"], uri["YSJ-3"]}
    codes = [c for k in final for c in Glb(out / k).property_table()["code"]]
    assert sorted(codes) == ["YS-1", "YSJ-1", "YSJ-2", "YSJ-3"]
    decoded = decoded_and_valid(out, tmp_path / "decoded")
    check_layer(out, decoded, deleted.tileset_version, deleted.tile_count)


def test_cli_builds_every_layer(tiny_fzk: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = run_cli(tiny_fzk, monkeypatch, "tiles", "build", "--layer", "all", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    with connect(tiny_fzk) as conn:
        n = conn.execute("SELECT (SELECT count(*) FROM pipes) + (SELECT count(*) FROM pipe_nodes)").fetchone()
    assert n is not None and f"pipes: {n[0]} features" in res.output and "bim: 83 features" in res.output
    assert all((tmp_path / layer / "tileset.json").is_file() for layer in ("buildings", "bim", "pipes"))
    assert_valid(tmp_path)


# --------------------------------------------------------------------------------------------------
# Another storage CRS and a geoid offset


def test_pipes_stored_in_utm_with_a_geoid_offset_are_placed_within_a_centimetre(
    fresh_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny city's pipes (delivered in EPSG:4547) stored in UTM 50N with N = -3.2 m: tube and manhole
    vertices within 1 cm of pyproj's ECEF of the source coordinates at ellipsoidal heights."""
    monkeypatch.setenv("CIM_STORAGE_SRID", "32650")
    monkeypatch.setenv("CIM_HEIGHT_OFFSET_M", "-3.2")
    get_settings.cache_clear()
    s = fresh_settings.model_copy(update={"storage_srid": 32650, "height_offset_m": -3.2})
    try:
        load_tiny_pipes(s, tmp_path / "in")
        res = run_cli(s, monkeypatch, "tiles", "build", "--out", str(tmp_path / "tiles"))  # --layer all
        assert res.exit_code == 0, res.output
        with connect(s) as conn:
            assert conn.execute("SELECT DISTINCT ST_SRID(geom) FROM pipes").fetchall() == [(32650,)]
            entry = tileset_entry(conn, "pipes")
    finally:
        get_settings.cache_clear()
    assert "buildings: skipped" in res.output and "bim: skipped" in res.output
    assert entry is not None and entry["feature_count"] == 5
    folder = Path(entry["path"])
    assert folder == tmp_path / "tiles" / "pipes"
    decoded = decoded_and_valid(folder, tmp_path / "decoded")
    check_layer(folder, decoded, entry["tileset_version"], entry["tile_count"])
    x0, y0 = tinycity.X0, tinycity.Y0
    # From tinycity.pipes: axis points with their inverts, diameters; manholes (x, y, invert, ground).
    source_pipes = {
        "YS-1": ([(x0 + 480, y0 + 20, 3.0), (x0 + 500, y0 + 20, 2.9), (x0 + 520, y0 + 20, 2.8)], 0.4),
        "YS-2": ([(x0 + 520, y0 + 20, 2.7), (x0 + 560, y0 + 20, 2.4)], 0.5),
    }
    manholes = {"YSJ-1": (x0 + 480, y0 + 20, 3.0, 6.0, 0.4), "YSJ-2": (x0 + 520, y0 + 20, 2.7, 5.8, 0.5)}
    found = 0
    for _tile, world, _chain, glb in contents(folder, decoded):
        pos, ids = glb.vertices()
        ecef = to_ecef(pos, world)
        for fid, code in enumerate(glb.property_table()["code"]):
            if code in source_pipes:
                pts, d = source_pipes[code]
                a = np.array(pts)
                axis = np.stack(TO_ECEF_4547.transform(a[:, 0], a[:, 1], a[:, 2] + d / 2 - 3.2), axis=1)
                check_pipe_placement(ecef[ids == fid], axis, d / 2)
                found += 1
            elif code in manholes:
                x, y, invert, ground, d = manholes[code]
                ends = np.stack(TO_ECEF_4547.transform([x, x], [y, y], [invert - 3.2, ground - 3.2]), axis=1)
                check_pipe_placement(ecef[ids == fid], ends, max(0.5, d / 2 + 0.2))
                found += 1
    assert found == 4


# --------------------------------------------------------------------------------------------------
# Meshes without a database: a bent pipe and every kind of node


def test_a_bent_sloping_pipe_keeps_its_radius_and_every_node_kind_gets_a_glyph(tmp_path: Path) -> None:
    import shapely
    from shapely.geometry import LineString

    from cim.model import PIPE_NODE_KINDS
    from cim.store.tile_layers import NodeRows, PipeRows
    from tilesets.pipes import NetworkRows, network_tile

    x0, y0 = tinycity.X0, tinycity.Y0
    bend = [(x0, y0, 3.0), (x0 + 20, y0, 2.8), (x0 + 20, y0 + 15, 2.0), (x0 + 5, y0 + 30, 1.9)]  # turns of 90° and 45°
    pipes = PipeRows(
        code=["YS-9"], network=["rain"], material=[None], diameter_mm=np.array([600.0]),
        start_invert_m=np.array([3.0]), end_invert_m=np.array([1.9]), from_node=["YSJ-1"], to_node=["YSJ-2"],
        built_year=np.array([0]), length_m=np.array([56.2]), depth_m=np.array([np.nan]), grid_code=[tinycity.GRID_A],
        line_wkb=[shapely.to_wkb(LineString(bend))],
    )  # fmt: skip
    n = len(PIPE_NODE_KINDS)
    nodes = NodeRows(
        code=[f"N-{k.upper()}" for k in PIPE_NODE_KINDS], network=["water"] * n, kind=list(PIPE_NODE_KINDS),
        ground_elevation_m=np.full(n, 6.0), invert_elevation_m=np.full(n, 4.5), grid_code=[tinycity.GRID_A] * n,
        x=x0 + 50 + 10 * np.arange(n), y=np.full(n, y0), pipe_diameter_m=np.r_[np.nan, np.full(n - 1, 0.2)],
    )  # fmt: skip
    tile = network_tile(NetworkRows(pipes, nodes), compress=False)
    path = tmp_path / "bent.glb"
    path.write_bytes(tile.glb)
    assert len(assert_valid(path)) == 1
    glb = Glb(path)
    table = glb.property_table()
    assert table["code"][0] == "YS-9" and table["element"] == ["pipe", *PIPE_NODE_KINDS]
    assert table["depth_m"][0] == -9999.0 and "material" not in table  # no value anywhere: left out (noData)
    pos, ids = glb.vertices()
    world = tile.frame.matrix
    ecef = to_ecef(pos, world)
    a = np.array(bend)
    axis = np.stack(TO_ECEF_4547.transform(a[:, 0], a[:, 1], a[:, 2] + 0.3), axis=1)
    check_pipe_placement(ecef[ids == 0], axis, 0.3)
    corner, normal, fid = glb.triangles()
    face = np.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0])
    assert (np.einsum("ij,ij->i", face, normal.sum(axis=1)) > 0).all(), "a triangle faces inwards"
    assert set(fid.tolist()) == set(range(1 + n))
    # Shafts reach from invert to ground; the hydrant stands 0.8 m above ground.
    up = world[:3, 2]
    for i, kind in enumerate(PIPE_NODE_KINDS, start=1):
        heights = (ecef[ids == i] - TO_ECEF_4547.transform(nodes.x[i - 1], y0, 0.0)) @ up
        if kind in ("manhole", "outfall", "inlet", "pump_station"):
            assert heights.min() == pytest.approx(4.5, abs=CM) and heights.max() == pytest.approx(6.0, abs=CM)
        elif kind == "hydrant":
            assert heights.max() == pytest.approx(6.8, abs=CM)
        else:  # boxes on the pipe axis (invert + d/2 = 4.6)
            assert (heights.min() + heights.max()) / 2 == pytest.approx(4.6, abs=CM)
