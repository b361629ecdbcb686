"""The LOD1 buildings tileset, checked by tools and code that do not share the writer's code: the Khronos
glTF validator (node, tests/js), meshoptimizer's JavaScript decoder (the one CesiumJS uses) to undo the
compression, an independent GLB reader, pyproj for placement, the database for counts and metadata;
incremental builds on the tiny city compared file by file on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Polygon, box

from cim.crs import ecef_to_storage
from cim.db import connect, ensure_database
from cim.settings import Settings
from cim.store.tiles import BuildingRows
from ingest.city_layers import ingest_files
from tilesets.build import BuildOptions, BuildReport, TilesBuildError, build_buildings, content_uri
from tilesets.buildings import building_tile, extrude, parse_footprints
from tilesets.layer_build import MIN_PARALLEL_LEAVES
from tilesets.quadtree import Cell, QuadGrid, plan
from tilesets.tileset import LocalFrame, TilesetBusyError, build_lock

import tinycity
from tile_reader import Glb, content_files, tiles_with_world, to_ecef, validate_gltf
from tileset_checks import check_tileset

REPO = Path(__file__).resolve().parents[1]
MESHOPT_DECODER = REPO / "tests" / "js" / "decode_meshopt.mjs"
CM = 0.01
MM = 0.001
MESHOPT = "EXT_meshopt_compression"
DECODED_EXTENSIONS = {"EXT_mesh_features", "EXT_structural_metadata", "KHR_mesh_quantization"}
GLTF_EXTENSIONS = DECODED_EXTENSIONS | {MESHOPT}


# --------------------------------------------------------------------------------------------------
# Tools: the independent reader is tests/tile_reader.py, the structural checker tests/tileset_checks.py


def decode_meshopt(source: Path, target: Path) -> list[dict[str, Any]]:
    """Every .glb under ``source`` (or the file) decoded by meshoptimizer's JS decoder into plain GLBs at the same
    relative paths under ``target``: what CesiumJS gets after its own decoding."""
    if not (REPO / "node_modules" / "meshoptimizer").is_dir():
        pytest.fail("node_modules/meshoptimizer is missing: run `make npm-deps` (npm ci) first")
    res = subprocess.run(["node", str(MESHOPT_DECODER), str(source), str(target)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def assert_clean(reports: list[dict[str, Any]]) -> None:
    bad = [(r["file"], m) for r in reports for m in r["messages"] if m["severity"] <= 1]
    assert bad == []
    assert all(r["errors"] == 0 and r["warnings"] == 0 for r in reports)


# --------------------------------------------------------------------------------------------------
# The demo district


@pytest.fixture(scope="module")
def demo_tileset(demo_loaded: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> BuildReport:
    """The demo district's tileset, meshed by two worker processes."""
    out = tmp_path_factory.mktemp("tiles") / "buildings"
    return build_buildings(settings, out=out, options=BuildOptions(workers=2))


@pytest.fixture(scope="module")
def decoded(demo_tileset: BuildReport, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo tiles as CesiumJS sees them after meshopt decoding (same relative paths as the tileset)."""
    target = tmp_path_factory.mktemp("decoded")
    reports = decode_meshopt(demo_tileset.path, target)
    assert len(reports) == demo_tileset.tile_count and all(r["decodedViews"] > 0 for r in reports)
    return target


def test_demo_tiles_pass_the_khronos_validator(demo_tileset: BuildReport, decoded: Path) -> None:
    reports = validate_gltf(demo_tileset.path)
    assert len(reports) == demo_tileset.tile_count > 1
    assert_clean(reports)
    assert all(set(r["extensionsUsed"]) == GLTF_EXTENSIONS for r in reports)
    # The validator cannot decode meshopt; decoded, the accessors' data (bounds, index ranges, unit normals) is
    # checked too.
    plain = validate_gltf(decoded)
    assert len(plain) == demo_tileset.tile_count
    assert_clean(plain)
    assert all(set(r["extensionsUsed"]) == DECODED_EXTENSIONS for r in plain)


def test_demo_tiles_are_meshopt_compressed_with_positions_on_a_millimetre_grid(
    demo_tileset: BuildReport, decoded: Path, settings: Settings, tmp_path: Path
) -> None:
    """Every vertex and index bufferView is compressed (positions through the EXPONENTIAL filter with one
    power-of-two step per tile of at most 1 mm), property tables are not; a decoded tile holds the uncompressed
    tile's vertices within 1 mm, and its file is less than half as big."""
    doc = json.loads((demo_tileset.path / "tileset.json").read_text())
    uris = [t["content"]["uri"] for t, _, _ in tiles_with_world(doc) if "content" in t]
    for uri in uris:
        glb = Glb(demo_tileset.path / uri)
        assert set(glb.doc["extensionsRequired"]) == {"KHR_mesh_quantization", MESHOPT}
        fallback = glb.doc["buffers"][1]
        assert "uri" not in fallback and fallback["extensions"][MESHOPT] == {"fallback": True}
        geometry = set()
        for prim in glb.primitives():
            for name, acc in [*prim["attributes"].items(), ("indices", prim["indices"])]:
                view = glb.doc["bufferViews"][glb.doc["accessors"][acc]["bufferView"]]
                ext = view["extensions"][MESHOPT]
                assert view["buffer"] == 1 and ext["buffer"] == 0
                assert ext["mode"] == ("TRIANGLES" if name == "indices" else "ATTRIBUTES")
                assert ext.get("filter", "NONE") == ("EXPONENTIAL" if name == "POSITION" else "NONE")
                geometry.add(glb.doc["accessors"][acc]["bufferView"])
        others = [v for i, v in enumerate(glb.doc["bufferViews"]) if i not in geometry]
        assert others and all("extensions" not in v and v["buffer"] == 0 for v in others)
        plain = Glb(decoded / uri)
        pos, _ids = plain.vertices()
        steps = [_grid_step(plain.accessor(p["attributes"]["POSITION"])) for p in plain.primitives()]
        assert len(set(steps)) == 1 and steps[0] <= MM, "one grid of at most 1 mm per tile"
    # The biggest tile against the same rows written without compression.
    from cim.store.tiles import building_rows

    biggest = max(uris, key=lambda u: (demo_tileset.path / u).stat().st_size)
    with connect(settings) as conn:
        codes = Glb(decoded / biggest).property_table()["building_code"]
        rows = building_rows(conn, [int(c) for c in codes])
    exact = building_tile(rows, compress=False)
    assert exact.frame.transform() == building_tile(rows).frame.transform()
    path = tmp_path / "exact.glb"
    path.write_bytes(exact.glb)
    ref_pos, ref_ids = Glb(path).vertices()
    pos, ids = Glb(decoded / biggest).vertices()
    assert sorted(ids.tolist()) == sorted(ref_ids.tolist())
    for fid in np.unique(ids):
        gap = np.linalg.norm(pos[ids == fid][:, None, :] - ref_pos[ref_ids == fid][None, :, :], axis=2)
        assert gap.min(axis=1).max() <= MM and gap.min(axis=0).max() <= MM
    assert (demo_tileset.path / biggest).stat().st_size < 0.5 * len(exact.glb)


def _grid_step(values: np.ndarray) -> float:
    """The largest power of two (down to 2^-20) all values are multiples of."""
    for exponent in range(10, -21, -1):
        step = 2.0**exponent
        if np.array_equal(np.round(values / step) * step, values):
            return step
    raise AssertionError("positions are not on a power-of-two grid")


def test_demo_tileset_structure(demo_tileset: BuildReport, decoded: Path) -> None:
    """The structural checker finds nothing (schema-required fields, geometric-error order, leaves 0, extension
    lists, feature ids, every decoded vertex inside its tile and all ancestors); then what is ours: one ADD tree
    with content in the leaves only, this build's tilesetVersion, unit normals, no staging folder left."""
    folder = demo_tileset.path
    assert check_tileset(folder) == []
    doc = json.loads((folder / "tileset.json").read_text())
    assert doc["asset"]["tilesetVersion"] == str(demo_tileset.tileset_version)
    assert doc["root"]["refine"] == "ADD" and doc["root"]["geometricError"] > 0
    contents = 0
    for tile, _world, _chain in tiles_with_world(doc):
        assert tile.get("refine", "ADD") == "ADD" and ("content" in tile) == ("children" not in tile)
        if "content" in tile:
            contents += 1
            assert set(Glb(folder / tile["content"]["uri"]).doc["extensionsUsed"]) == GLTF_EXTENSIONS
            glb = Glb(decoded / tile["content"]["uri"])
            for prim in glb.primitives():
                fid = prim["extensions"]["EXT_mesh_features"]["featureIds"][0]
                assert fid["attribute"] == 0 and fid["propertyTable"] == 0
                normals = glb.accessor(prim["attributes"]["NORMAL"])
                assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=0.01)
    assert contents == demo_tileset.tile_count
    assert not list(folder.parent.glob(".buildings.staging-*")), "staging folders left behind"


def test_demo_features_are_the_buildings_with_their_metadata(demo_tileset: BuildReport, settings: Settings) -> None:
    doc = json.loads((demo_tileset.path / "tileset.json").read_text())
    codes: list[str] = []
    tables = {}
    for tile, _world, _chain in tiles_with_world(doc):
        if "content" in tile:
            table = Glb(demo_tileset.path / tile["content"]["uri"]).property_table()
            codes += table["building_code"]
            tables[tile["content"]["uri"]] = table
    with connect(settings) as conn:
        db = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT building_code, coalesce(name, ''), use, height_m, storeys, grid_code, "
                "coalesce(parcel_code, ''), height_source, version FROM buildings"
            ).fetchall()
        }
    assert len(codes) == len(set(codes)) == len(db) == demo_tileset.feature_count
    assert set(codes) == set(db)
    for table in tables.values():
        parcels = table.get("parcel_code", [""] * len(table["building_code"]))  # optional: absent when all empty
        names = table.get("name", [""] * len(table["building_code"]))
        for i, code in enumerate(table["building_code"]):
            name, use, height, storeys, grid, parcel, source, version = db[code]
            assert (names[i], table["use"][i], table["storeys"][i]) == (name, use, storeys)
            assert (table["grid_code"][i], parcels[i]) == (grid, parcel)
            assert (table["height_source"][i], table["version"][i]) == (source, version)
            assert table["height_m"][i] == pytest.approx(height, abs=1e-3)


def test_demo_vertices_are_where_pyproj_puts_the_footprints(
    demo_tileset: BuildReport, decoded: Path, settings: Settings
) -> None:
    """Decoded vertices of sampled buildings, through the tile transforms, are within 1 cm of pyproj's ECEF of
    the stored footprint vertices at ground and roof height (and nothing else is drawn for them)."""
    from cim import crs

    reference = Transformer.from_crs(CRS("EPSG:4547").to_3d(), CRS("EPSG:4978"), always_xy=True)
    doc = json.loads((demo_tileset.path / "tileset.json").read_text())
    checked = 0
    with connect(settings) as conn:
        for tile, world, _chain in tiles_with_world(doc):
            if "content" not in tile:
                continue
            glb = Glb(decoded / tile["content"]["uri"])
            pos, ids = glb.vertices()
            ecef = to_ecef(pos, world)
            table = glb.property_table()
            for fid in (0, len(table["building_code"]) // 2, len(table["building_code"]) - 1):
                code = table["building_code"][fid]
                rows = conn.execute(
                    "SELECT ST_X(d.geom), ST_Y(d.geom), ground_elevation_m, height_m FROM buildings b, "
                    "ST_DumpPoints(b.footprint) d WHERE building_code = %s",
                    (code,),
                ).fetchall()
                xy = np.array([r[:2] for r in rows])
                ground, height = rows[0][2], rows[0][3]
                h = settings.height_offset_m + np.r_[np.full(len(xy), ground), np.full(len(xy), ground + height)]
                expected = np.stack(reference.transform(np.r_[xy[:, 0], xy[:, 0]], np.r_[xy[:, 1], xy[:, 1]], h), 1)
                mine = ecef[ids == fid]
                gap = np.linalg.norm(mine[:, None, :] - expected[None, :, :], axis=2)
                assert gap.min(axis=1).max() < CM, f"{code}: a drawn vertex is off"
                assert gap.min(axis=0).max() < CM, f"{code}: a footprint corner is not drawn"
                cx, cy, cz = crs.storage_to_ecef(xy[0, 0], xy[0, 1], ground)
                assert np.linalg.norm(mine - [float(cx), float(cy), float(cz)], axis=1).min() < CM
                checked += 1
    assert checked >= 3 * demo_tileset.tile_count


def test_demo_catalogue_row(demo_tileset: BuildReport, settings: Settings) -> None:
    from cim.store.tiles import tileset_entry

    with connect(settings) as conn:
        entry = tileset_entry(conn, "buildings")
        n = conn.execute("SELECT count(*) FROM buildings").fetchone()
    assert entry is not None and n is not None
    assert entry["path"] == str(demo_tileset.path)
    assert entry["tileset_version"] == demo_tileset.tileset_version
    assert (entry["feature_count"], entry["tile_count"]) == (n[0], demo_tileset.tile_count)
    xmin, ymin, xmax, ymax = entry["bounds"]
    assert 480_000 < xmin < xmax < 560_000 and 2_480_000 < ymin < ymax < 2_530_000


def test_worker_processes_write_the_same_bytes_as_one_process(
    demo_tileset: BuildReport, settings: Settings, tmp_path: Path
) -> None:
    """Meshing in a pool of forked workers changes nothing on disk: every tile and the tree are byte for byte
    those of a build in this process alone."""
    assert demo_tileset.written >= MIN_PARALLEL_LEAVES  # so the fixture's build went through the pool
    serial = build_buildings(settings, out=tmp_path / "buildings", options=BuildOptions(workers=1))
    files = sorted(p.relative_to(serial.path) for p in serial.path.rglob("*.glb"))
    assert files == sorted(p.relative_to(demo_tileset.path) for p in demo_tileset.path.rglob("*.glb"))
    assert [f for f in files if (serial.path / f).read_bytes() != (demo_tileset.path / f).read_bytes()] == []
    docs = [json.loads((r.path / "tileset.json").read_text()) for r in (serial, demo_tileset)]
    for doc in docs:
        doc["asset"].pop("tilesetVersion")
    assert docs[0] == docs[1]


# --------------------------------------------------------------------------------------------------
# Meshes of awkward footprints, no database


def _rows(footprints: list[Any], heights: list[float], uses: list[str]) -> BuildingRows:
    n = len(footprints)
    return BuildingRows(
        building_code=[f"440305007001010{i + 1:04d}" for i in range(n)],
        name=[None if i % 2 else f"楼{i}" for i in range(n)],
        use=uses,
        height_m=np.array(heights),
        storeys=np.full(n, 3),
        ground_elevation_m=np.full(n, 4.0),
        grid_code=["44030500700101"] * n,
        parcel_code=[None] * n,
        height_source=["survey"] * n,
        version=np.ones(n, dtype=np.int64),
        footprint_wkb=[shapely.to_wkb(MultiPolygon([g]) if isinstance(g, Polygon) else g) for g in footprints],
    )


X0, Y0 = tinycity.X0, tinycity.Y0


def awkward_footprints() -> list[Any]:
    court = Polygon(  # clockwise exterior, counter-clockwise hole: both must be reoriented
        box(X0, Y0, X0 + 40, Y0 + 40).exterior.coords[::-1], [box(X0 + 10, Y0 + 10, X0 + 30, Y0 + 30).exterior.coords]
    )
    two_parts = MultiPolygon([box(X0 + 100, Y0, X0 + 110, Y0 + 10), box(X0 + 120, Y0, X0 + 135, Y0 + 5)])
    repeated = Polygon([(X0 + 200, Y0), (X0 + 200, Y0), (X0 + 220, Y0), (X0 + 220, Y0 + 15), (X0 + 200, Y0 + 15)])
    u_shape = Polygon(
        [(X0 + 300, Y0), (X0 + 330, Y0), (X0 + 330, Y0 + 30), (X0 + 320, Y0 + 30), (X0 + 320, Y0 + 10),
         (X0 + 310, Y0 + 10), (X0 + 310, Y0 + 30), (X0 + 300, Y0 + 30)]
    )  # fmt: skip
    return [court, two_parts, repeated, u_shape]


def test_walls_face_out_of_the_solid_and_roofs_cover_the_footprint() -> None:
    shapes = awkward_footprints()
    fp = parse_footprints([shapely.to_wkb(MultiPolygon([g]) if isinstance(g, Polygon) else g) for g in shapes])
    frame = LocalFrame.at_storage_point(X0, Y0, 0.0)
    mesh = extrude(fp, np.full(len(shapes), 2.0), np.array([10.0, 20.0, 5.0, 8.0]), frame)
    assert np.allclose(np.linalg.norm(mesh.normals, axis=1), 1, atol=1e-9)
    tri = mesh.positions[mesh.triangles]
    face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(face, axis=1) / 2
    assert (area > 1e-6).all()
    # Counter-clockwise winding seen from outside: geometric normal agrees with the written normal.
    assert (np.einsum("ij,ij->i", face, mesh.normals[mesh.triangles[:, 0]]) > 0).all()
    # Walls: a step of 1 cm along the normal from a wall's middle leaves the footprint; against it, enters.
    vertical = np.abs(mesh.normals[:, 2]) < 1e-6  # east-north-up
    walls = mesh.triangles[vertical[mesh.triangles[:, 0]]]
    mid = mesh.positions[walls].mean(axis=1)
    n = mesh.normals[walls[:, 0]]
    for sign, expect_inside in ((1.0, False), (-1.0, True)):
        probe = mid + sign * 0.01 * n
        east, north = probe[:, 0], probe[:, 1]
        ecef = frame.to_ecef(np.stack([east, north, np.zeros(len(east))], axis=1))
        x, y, _ = ecef_to_storage(ecef[:, 0], ecef[:, 1], ecef[:, 2])
        solid = shapely.union_all(shapes)
        assert (shapely.contains_xy(solid, x, y) == expect_inside).all()
    # Roofs (upward faces) cover exactly the footprint area.
    roof = np.abs(mesh.normals[mesh.triangles[:, 0], 2]) > 0.99
    assert area[roof].sum() == pytest.approx(sum(g.area for g in shapes), rel=1e-4)
    assert (mesh.normals[mesh.triangles[roof, 0], 2] > 0).all()


def test_awkward_footprints_make_a_valid_glb(tmp_path: Path) -> None:
    tile = building_tile(_rows(awkward_footprints(), [10.0, 20.0, 5.0, 8.0], ["public", "office", "public", "other"]))
    path = tmp_path / "awkward.glb"
    path.write_bytes(tile.glb)
    [report] = validate_gltf(path)
    assert (report["errors"], report["warnings"]) == (0, 0), report["messages"]
    decode_meshopt(path, tmp_path / "plain" / "awkward.glb")
    [report] = validate_gltf(tmp_path / "plain")
    assert (report["errors"], report["warnings"]) == (0, 0), report["messages"]
    glb = Glb(path)
    table = glb.property_table()
    assert table["use"] == ["office", "public", "public", "other"]  # rows sorted by use, then code
    assert table["name"] == ["", "楼0", "楼2", ""] and "parcel_code" not in table  # no parcel anywhere: left out
    assert [m["name"] for m in glb.doc["materials"]] == ["office", "public", "other"]
    assert len(list(glb.primitives())) == 3


@pytest.mark.parametrize(("spread_m", "max_step"), [(9_000.0, MM), (40_000.0, 4 * MM)])
def test_compressed_positions_stay_within_half_a_step_across_a_wide_tile(
    tmp_path: Path, spread_m: float, max_step: float
) -> None:
    """Buildings spread over a tile far wider than any leaf of a city tileset: decoded (by meshoptimizer's JS
    decoder) vertices are within half a grid step (along each axis) of the uncompressed ones, and the step stays
    at 2^-10 m (under 1 mm of 3D error) up to 8 km from the tile origin, 2^-8 m (3.4 mm) at 20 to 32 km."""
    corners = [(0.0, 0.0), (spread_m, 0.0), (0.0, 0.7 * spread_m), (0.4 * spread_m, 0.3 * spread_m)]
    shapes = [box(X0 + dx, Y0 + dy, X0 + dx + 12.3456, Y0 + dy + 7.891) for dx, dy in corners]
    rows = _rows(shapes, [30.0, 55.55, 12.25, 80.125], ["office", "office", "public", "office"])
    (tmp_path / "packed.glb").write_bytes(building_tile(rows).glb)
    (tmp_path / "exact.glb").write_bytes(building_tile(rows, compress=False).glb)
    decode_meshopt(tmp_path / "packed.glb", tmp_path / "decoded.glb")
    pos, ids = Glb(tmp_path / "decoded.glb").vertices()
    ref_pos, ref_ids = Glb(tmp_path / "exact.glb").vertices()
    step = _grid_step(pos)
    assert step <= max_step
    assert np.abs(pos).max() > spread_m / 3  # the tile really is that wide
    for fid in range(len(shapes)):
        gap = np.abs(pos[ids == fid][:, None, :] - ref_pos[ref_ids == fid][None, :, :]).max(axis=2)
        assert gap.min(axis=1).max() <= step / 2 + 1e-9 and gap.min(axis=0).max() <= step / 2 + 1e-9
        if step <= MM:
            dist = np.linalg.norm(pos[ids == fid][:, None, :] - ref_pos[ref_ids == fid][None, :, :], axis=2)
            assert dist.min(axis=1).max() <= MM


def test_the_meshopt_writer_refuses_positions_off_its_grid() -> None:
    from tilesets.gltf import GltfError, Material, Meshopt, Primitive, PropertyTable, glb_bytes

    schema = {"id": "t", "classes": {"c": {"properties": {"v": {"type": "SCALAR", "componentType": "UINT8"}}}}}
    table = PropertyTable("c", 1, {"v": [1]})
    on_grid = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -(2.0**-9)]])
    prim = Primitive(on_grid, np.tile([0.0, 1.0, 0.0], (3, 1)), np.zeros(3, dtype=np.int64), np.arange(3), 0)
    assert glb_bytes([prim], [Material("m", (1, 1, 1, 1))], schema, table, compression=Meshopt(2.0**-9))
    prim.positions = on_grid + np.array([0.0, 0.0, 0.0001])
    with pytest.raises(GltfError, match="not multiples"):
        glb_bytes([prim], [Material("m", (1, 1, 1, 1))], schema, table, compression=Meshopt(2.0**-9))
    with pytest.raises(GltfError, match="power of two"):
        Meshopt(0.001)


def test_quadtree_leaves_respect_the_limits_and_hold_every_point_once() -> None:
    rng = np.random.default_rng(7)
    x = np.r_[rng.normal(500_000, 300, 5000), np.full(30, 501_000.0)]  # a dense cluster and 30 equal points
    y = np.r_[rng.normal(2_490_000, 300, 5000), np.full(30, 2_490_500.0)]
    weight = np.full(len(x), 1000.0)
    grid = QuadGrid.around(x, y)
    leaves = plan(grid, x, y, weight, max_features=100, max_bytes=80_000)
    members = np.concatenate(list(leaves.values()))
    assert np.array_equal(np.sort(members), np.arange(len(x)))
    for cell, idx in leaves.items():
        xmin, ymin, xmax, ymax = grid.bounds(cell)
        assert ((x[idx] >= xmin) & (x[idx] < xmax) & (y[idx] >= ymin) & (y[idx] < ymax)).all()
        assert len(idx) <= 80 or (x[idx] == 501_000.0).all()  # equal points cannot be split


# --------------------------------------------------------------------------------------------------
# Incremental builds on the tiny city


@pytest.fixture()
def tiny(fresh_settings: Settings, tmp_path: Path) -> tuple[Settings, Path]:
    ensure_database(fresh_settings)
    files = tinycity.write_all(tmp_path / "in")
    for kind in ("admin", "parcels", "buildings"):
        ingest_files(kind, [files[kind]], settings=fresh_settings)
    return fresh_settings, tmp_path / "tiles" / "buildings"


ONE_PER_TILE = BuildOptions(max_features=1)


def test_incremental_rewrites_exactly_the_tiles_that_changed(tiny: tuple[Settings, Path]) -> None:
    settings, out = tiny
    first = build_buildings(settings, out=out, options=ONE_PER_TILE)
    assert (first.tile_count, first.written, first.feature_count) == (4, 4, 4)
    before = content_files(out)

    same = build_buildings(settings, out=out, incremental=True, options=ONE_PER_TILE)
    assert (same.written, same.reused, same.tileset_version) == (0, 4, first.tileset_version + 1)
    assert content_files(out) == before
    assert json.loads((out / "tileset.json").read_text())["asset"]["tilesetVersion"] == str(same.tileset_version)

    code = tinycity.GRID_A + "00001"
    with connect(settings) as conn:
        conn.execute("UPDATE buildings SET height_m = 33.5 WHERE building_code = %s", (code,))
    edited = build_buildings(settings, out=out, incremental=True, options=ONE_PER_TILE)
    after = content_files(out)
    changed = {k for k in before if after[k] != before[k]}
    assert changed == {content_uri(Cell.from_key(k)) for k in edited.written_keys}
    assert len(changed) == 1 and edited.written == 1 and set(after) == set(before)
    [path] = changed
    table = Glb(out / path).property_table()
    assert table["building_code"] == [code] and table["height_m"] == [33.5] and table["version"] == [2]

    with connect(settings) as conn:
        conn.execute("DELETE FROM buildings WHERE building_code = %s", (tinycity.GRID_A + "00002",))
    deleted = build_buildings(settings, out=out, incremental=True, options=ONE_PER_TILE)
    final = content_files(out)
    assert (deleted.written, deleted.removed, deleted.feature_count, deleted.tile_count) == (0, 1, 3, 3)
    assert set(final) < set(after) and all(final[k] == after[k] for k in final)
    codes = [c for k in final for c in Glb(out / k).property_table()["building_code"]]
    assert tinycity.GRID_A + "00002" not in codes and len(codes) == 3
    doc = json.loads((out / "tileset.json").read_text())
    uris = {t["content"]["uri"] for t, _, _ in tiles_with_world(doc) if "content" in t}
    assert uris == set(final)


def test_new_building_starts_a_tile_and_a_full_build_can_be_forced(tiny: tuple[Settings, Path]) -> None:
    settings, out = tiny
    build_buildings(settings, out=out, options=ONE_PER_TILE)
    before = content_files(out)
    extra = tinycity.buildings_frame().iloc[[0]].copy()
    extra["building_code"] = tinycity.GRID_A + "00009"
    extra["source_id"] = "b9"
    extra["geometry"] = [box(X0 + 400, Y0 + 400, X0 + 410, Y0 + 410)]
    ingest_files("buildings", [tinycity.buildings(out.parent, extra, name="extra.gpkg")], settings=settings)
    added = build_buildings(settings, out=out, incremental=True, options=ONE_PER_TILE)
    after = content_files(out)
    assert (added.written, added.tile_count, added.feature_count) == (1, 5, 5)
    assert all(after[k] == before[k] for k in before)
    full = build_buildings(settings, out=out, options=ONE_PER_TILE)
    assert full.full and full.written == 5


def test_a_second_build_of_the_same_tileset_is_refused(tiny: tuple[Settings, Path]) -> None:
    settings, out = tiny
    with build_lock(out), pytest.raises(TilesetBusyError):
        build_buildings(settings, out=out)
    assert not out.exists()


def test_a_folder_that_is_not_a_tileset_is_never_replaced(tiny: tuple[Settings, Path]) -> None:
    settings, out = tiny
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TilesBuildError, match="not a tileset folder"):
        build_buildings(settings, out=out)
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_cli_builds_the_tileset_and_reports_user_errors(tiny: tuple[Settings, Path]) -> None:
    settings, out = tiny
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(settings.home), "CIM_DATABASE_URL": str(settings.database_url)})
    cim = str(Path(sys.executable).parent / "cim")
    args = [cim, "tiles", "build", "--layer", "buildings", "--out", str(out.parent), "--max-features", "2"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "4 features in 3 tiles" in res.stdout and (out / "tileset.json").is_file()
    with connect(settings) as conn:
        conn.execute("DELETE FROM buildings")
    res = subprocess.run([*args, "--incremental"], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "no buildings" in res.stderr and "Traceback" not in res.stderr
    assert (out / "tileset.json").is_file(), "a failed build must leave the published tileset alone"


def test_buildings_from_a_lonlat_file_with_a_geoid_offset_are_placed_within_a_centimetre(
    fresh_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Footprints delivered in CRS84 lon/lat and a deployment geoid undulation of -3.2 m: every drawn vertex is
    within 1 cm of pyproj's ECEF of the source lon/lat at the ellipsoidal ground and roof heights."""
    from cim.settings import get_settings

    monkeypatch.setenv("CIM_HEIGHT_OFFSET_M", "-3.2")
    get_settings.cache_clear()
    settings = fresh_settings.model_copy(update={"height_offset_m": -3.2})
    try:
        ensure_database(settings)
        files = tinycity.write_all(tmp_path / "in")
        lonlat = tinycity.buildings_frame().to_crs("OGC:CRS84")
        for kind in ("admin", "parcels"):
            ingest_files(kind, [files[kind]], settings=settings)
        ingest_files("buildings", [tinycity.buildings(tmp_path / "in", lonlat, name="lonlat.gpkg")], settings=settings)
        report = build_buildings(settings, out=tmp_path / "tiles" / "buildings")
    finally:
        get_settings.cache_clear()
    doc = json.loads((report.path / "tileset.json").read_text())
    decode_meshopt(report.path, tmp_path / "decoded")
    reference = Transformer.from_crs(CRS("OGC:CRS84").to_3d(), CRS("EPSG:4978"), always_xy=True)
    by_code: dict[str, np.ndarray] = {}
    for tile, world, _chain in tiles_with_world(doc):
        if "content" in tile:
            glb = Glb(tmp_path / "decoded" / tile["content"]["uri"])
            pos, ids = glb.vertices()
            ecef = to_ecef(pos, world)
            for fid, code in enumerate(glb.property_table()["building_code"]):
                by_code[code] = ecef[ids == fid]
    source = lonlat.set_index(lonlat["source_id"])
    with connect(settings) as conn:
        codes = dict(conn.execute("SELECT source_id, building_code FROM buildings").fetchall())
    assert len(by_code) == len(source) == 4
    for source_id, row in source.iterrows():
        xy = shapely.get_coordinates(row.geometry)
        ground, top = row.ground_elevation_m - 3.2, row.ground_elevation_m + row.height_m - 3.2
        h = np.r_[np.full(len(xy), ground), np.full(len(xy), top)]
        expected = np.stack(reference.transform(np.r_[xy[:, 0], xy[:, 0]], np.r_[xy[:, 1], xy[:, 1]], h), axis=1)
        drawn = by_code[codes[source_id]]
        gap = np.linalg.norm(drawn[:, None, :] - expected[None, :, :], axis=2)
        assert gap.min(axis=1).max() < CM and gap.min(axis=0).max() < CM, source_id


def test_tile_frames_are_cim_crs_east_north_up_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    from cim.crs import storage_enu_to_ecef_matrix
    from cim.settings import get_settings

    monkeypatch.setenv("CIM_HEIGHT_OFFSET_M", "-3.1")
    get_settings.cache_clear()
    try:
        for x, y, h in ((494_000.0, 2_490_000.0, 5.0), (560_000.0, 2_530_000.0, 900.0)):
            mine = LocalFrame.at_storage_point(x, y, h).matrix
            assert np.allclose(mine, storage_enu_to_ecef_matrix(x, y, h), rtol=0, atol=1e-6)
    finally:
        get_settings.cache_clear()


def test_publishing_swaps_whole_folders(tmp_path: Path) -> None:
    from tilesets.tileset import publish_directory, staging_directory

    target = tmp_path / "layer"
    first = staging_directory(target)
    (first / "tileset.json").write_text("1")
    publish_directory(first, target)
    second = staging_directory(target)
    (second / "tileset.json").write_text("2")
    (second / "content").mkdir()
    publish_directory(second, target)
    assert (target / "tileset.json").read_text() == "2" and (target / "content").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer"], "staging or old folders left behind"
