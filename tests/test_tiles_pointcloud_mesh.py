"""The point cloud and photogrammetry mesh tilesets (``cim tiles build --layer pointcloud|mesh``): small clouds
(LAS in UTM 50N with colours, XYZ text in EPSG:4547) and meshes (a textured OBJ terrain, an untextured y-up
GLB) are made here, ingested and tiled with a height-datum offset of -3.2 m; the output is checked by code that
does not share the writer's (tests/tile_reader.py, the structural checker tests/tileset_checks.py, pyproj for
placement), the Khronos glTF validator, CesiumJS (both layers in one page), and file inodes for incremental
builds."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import laspy
import numpy as np
import pyproj
import pytest
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial

from cim.db import connect, ensure_database
from cim.settings import Settings, get_settings
from cim.store.tiles import tileset_entry
from ingest.mesh import ingest_mesh
from ingest.pointcloud import ingest_pointcloud
from tilesets.layer_build import BuildOptions, BuildReport, NothingToTileError
from tilesets.mesh_tiles import build_mesh
from tilesets.pointcloud import build_pointcloud

from cesium import CesiumLoad, load_tilesets_in_cesium
from cliharness import run_cli
from conftest import new_database
from tile_reader import Glb, inside_box, to_ecef, validate_gltf
from tileset_checks import check_tileset

CM = 0.01
N = -3.2  # geoid undulation of this module's deployment (CIM_HEIGHT_OFFSET_M)
X0, Y0 = 494_000.0, 2_490_000.0  # EPSG:4547
Z_UP_FROM_Y_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # glTF (x, y, z) → 3D Tiles (x, -z, y)
TO_4547 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:4547", always_xy=True)
ASSETS = {"pointcloud": {"scan_utm", "dense"}, "mesh": {"terrain", "dome"}}  # the assets of each layer, by name
MESH_OPTIONS = BuildOptions(max_tile_bytes=20_000)  # ~500 triangles per leaf: a tree of three levels


# --------------------------------------------------------------------------------------------------
# Reading what was written (tests/tile_reader.py, plus external tilesets)


def walk(doc: dict[str, Any], folder: Path, start: np.ndarray | None = None) -> Iterator[tuple[Any, ...]]:
    """(tile, its world matrix, (box, world, error) of its ancestors, folder of its tileset) of every tile,
    descending into external tilesets."""

    def rec(tile: dict[str, Any], parent: np.ndarray, chain: list[Any], where: Path) -> Iterator[tuple[Any, ...]]:
        world = parent @ np.array(tile["transform"]).reshape(4, 4, order="F") if "transform" in tile else parent
        yield tile, world, chain, where
        below = [*chain, (tile["boundingVolume"]["box"], world, tile["geometricError"])]
        uri = tile.get("content", {}).get("uri", "")
        if uri.endswith(".json"):
            external = json.loads((where / uri).read_text())
            assert external["geometricError"] <= tile["geometricError"] + 1e-9
            yield from rec(external["root"], world, below, (where / uri).parent)
        for child in tile.get("children", []):
            yield from rec(child, world, below, where)

    yield from rec(doc["root"], np.eye(4) if start is None else start, [], folder)


def nearest(a: np.ndarray, b: np.ndarray, cell: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``, the distance to and index of the nearest row of ``b`` within ``cell`` metres
    (inf and -1 beyond): ``b`` hashed on a grid of ``cell``, the 27 cells around each point searched. Assumes
    at most one point of ``b`` per cell (the test data are centimetres apart at least)."""
    lo = np.minimum(a.min(axis=0), b.min(axis=0)) - 2 * cell
    span = np.floor((np.maximum(a.max(axis=0), b.max(axis=0)) - lo) / cell).astype(np.int64) + 3

    def key(c: np.ndarray) -> np.ndarray:
        return (c[:, 0] * span[1] + c[:, 1]) * span[2] + c[:, 2]

    b_cells = np.floor((b - lo) / cell).astype(np.int64)
    order = np.argsort(key(b_cells))
    keys = key(b_cells)[order]
    a_cells = np.floor((a - lo) / cell).astype(np.int64)
    dist, index = np.full(len(a), np.inf), np.full(len(a), -1, dtype=np.int64)
    for offset in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T:
        k = key(a_cells + offset)
        at = np.clip(np.searchsorted(keys, k), 0, len(keys) - 1)
        hit = keys[at] == k
        candidate = order[at]
        d = np.where(hit, np.linalg.norm(a - b[candidate], axis=1), np.inf)
        better = d < dist
        dist[better], index[better] = d[better], candidate[better]
    return dist, index


def assert_same_points(drawn: np.ndarray, source: np.ndarray, name: str) -> None:
    """Every drawn point within 1 cm of a source point and every source point drawn (ECEF)."""
    gap, _ = nearest(drawn, source)
    assert gap.max() < CM, f"{name}: a drawn point is {gap.max():.4f} m from every source point"
    back, _ = nearest(source, drawn)
    assert back.max() < CM, f"{name}: a source point is not drawn"


def files_state(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


# --------------------------------------------------------------------------------------------------
# Test data, made here


def cloud_points(n: int, seed: int, dx: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([X0 + dx + rng.random(n) * 60, Y0 + 200 + rng.random(n) * 40, 4.0 + rng.random(n) * 25])


def write_utm_las(path: Path, xyz_4547: np.ndarray) -> np.ndarray:
    """A LAS in EPSG:32650 with colours; returns its stored (quantised) coordinates."""
    to_utm = pyproj.Transformer.from_crs("EPSG:4547", "EPSG:32650", always_xy=True)
    ux, uy = to_utm.transform(xyz_4547[:, 0], xyz_4547[:, 1])
    xyz = np.column_stack([ux, uy, xyz_4547[:, 2]])
    header = laspy.LasHeader(point_format=3, version="1.4")
    header.offsets = np.floor(xyz.min(axis=0))
    header.scales = np.array([0.001, 0.001, 0.001])
    header.add_crs(pyproj.CRS.from_epsg(32650))
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rng = np.random.default_rng(1)
    las.red, las.green, las.blue = (rng.integers(0, 256, (3, len(xyz))) * 257).astype(np.uint16)
    las.write(path)
    back = laspy.read(path)
    return np.column_stack([np.asarray(back.x), np.asarray(back.y), np.asarray(back.z)])


def write_xyz(path: Path, xyz: np.ndarray) -> None:
    lines = ["# survey export", "X Y Z", *(f"{x:.3f}  {y:.3f}\t{z:.3f}" for x, y, z in xyz)]
    path.write_text("\n".join(lines) + "\n")


TERRAIN_NX, TERRAIN_NY = 41, 51  # 4000 triangles


def write_textured_obj(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An OBJ terrain (z up, 2 m grid) with a texture whose colour encodes the pixel position; returns local
    vertices, texture coordinates, triangles (0-based) and the texture as an array."""
    folder.mkdir(parents=True)
    h, w = 200, 160
    rows, cols = np.mgrid[0:h, 0:w]
    texels = np.stack([cols * 255 // (w - 1), rows * 255 // (h - 1), np.full_like(rows, 90)], axis=2).astype(np.uint8)
    Image.fromarray(texels).save(folder / "ortho.png")
    (folder / "terrain.mtl").write_text("newmtl ground\nKd 1 1 1\nmap_Kd ortho.png\n")
    xs, ys = np.meshgrid(np.arange(TERRAIN_NX, dtype=float), np.arange(TERRAIN_NY, dtype=float))
    v = np.column_stack([xs.ravel() * 2.0, ys.ravel() * 2.0, 3 * np.sin(xs.ravel() / 5) + np.cos(ys.ravel() / 7)])
    uv = np.column_stack([xs.ravel() / (TERRAIN_NX - 1), ys.ravel() / (TERRAIN_NY - 1)])
    i, j = np.meshgrid(np.arange(TERRAIN_NX - 1), np.arange(TERRAIN_NY - 1))
    a = (j * TERRAIN_NX + i).ravel()
    faces = np.concatenate(
        [np.column_stack([a, a + 1, a + TERRAIN_NX + 1]), np.column_stack([a, a + TERRAIN_NX + 1, a + TERRAIN_NX])]
    )
    lines = ["mtllib terrain.mtl", *(f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in v)]
    lines += [*(f"vt {s:.6f} {t:.6f}" for s, t in uv), "usemtl ground"]
    lines += [f"f {p + 1}/{p + 1} {q + 1}/{q + 1} {r + 1}/{r + 1}" for p, q, r in faces]
    (folder / "terrain.obj").write_text("\n".join(lines) + "\n")
    back = np.array([[float(t) for t in line.split()[1:]] for line in lines if line.startswith("v ")])
    return back, uv, faces, texels


def write_plain_glb(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An untextured y-up GLB (a bumpy sphere, 1280 triangles); returns its vertices (glTF frame) and faces."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=8.0)
    sphere.vertices[:, 1] += 9.0
    sphere.visual = trimesh.visual.TextureVisuals(material=PBRMaterial(baseColorFactor=[200, 80, 60, 255]))
    sphere.export(path)
    loaded: Any = trimesh.load(path, force="mesh", process=False)
    return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces)


@dataclass
class World:
    s: Settings
    monkeypatch: pytest.MonkeyPatch
    clouds: dict[str, tuple[np.ndarray, str]]  # name → (stored coordinates, CRS)
    meshes: dict[str, dict[str, Any]]
    pointcloud: BuildReport
    mesh: BuildReport
    empty_errors: list[BaseException]
    data: Path


@pytest.fixture(scope="module")
def world(settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("assets")
    with new_database(settings, cluster_url) as fresh, pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIM_HEIGHT_OFFSET_M", str(N))
        get_settings.cache_clear()
        s = fresh.model_copy(update={"home": data / "home", "height_offset_m": N})
        try:
            ensure_database(s)
            empty_errors: list[BaseException] = []
            for build in (build_pointcloud, build_mesh):
                try:
                    build(s)
                except NothingToTileError as exc:
                    empty_errors.append(exc)
            las = write_utm_las(data / "scan_utm.las", cloud_points(4000, 1, 100))
            xyz = cloud_points(3000, 2, 180)
            write_xyz(data / "dense.xyz", xyz)
            ingest_pointcloud(data / "scan_utm.las", settings=s)
            ingest_pointcloud(data / "dense.xyz", crs="EPSG:4547", settings=s)
            v, uv, faces, texels = write_textured_obj(data / "terrain")
            ingest_mesh(
                data / "terrain" / "terrain.obj", crs="EPSG:4547", origin=(X0 + 300, Y0 + 100, 12.0), settings=s
            )
            gv, gfaces = write_plain_glb(data / "dome.glb")
            ingest_mesh(data / "dome.glb", crs="EPSG:4547", origin=(X0 + 420, Y0 + 150, 20.0), settings=s)
            meshes = {
                "terrain": {
                    "vertices": v + np.array([X0 + 300, Y0 + 100, 12.0]),
                    "uv": uv,
                    "faces": faces,
                    "texels": texels,
                },
                "dome": {"vertices": gv @ Z_UP_FROM_Y_UP.T + np.array([X0 + 420, Y0 + 150, 20.0]), "faces": gfaces},
            }
            yield World(
                s=s,
                monkeypatch=mp,
                clouds={"scan_utm": (las, "EPSG:32650"), "dense": (np.round(xyz, 3), "EPSG:4547")},
                meshes=meshes,
                pointcloud=build_pointcloud(s),
                mesh=build_mesh(s, options=MESH_OPTIONS),
                empty_errors=empty_errors,
                data=data,
            )
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


@lru_cache(maxsize=4)
def _to_ecef(crs: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(pyproj.CRS(crs).to_3d(), pyproj.CRS("EPSG:4978"), always_xy=True)


def reference_ecef(xyz: np.ndarray, crs: str) -> np.ndarray:
    """pyproj's ECEF of source coordinates with orthometric heights (h = H + N)."""
    t = _to_ecef(crs)
    return np.column_stack(t.transform(xyz[:, 0], xyz[:, 1], xyz[:, 2] + N))


def layer_doc(report: BuildReport) -> dict[str, Any]:
    return json.loads((report.path / "tileset.json").read_text())


# --------------------------------------------------------------------------------------------------
# Both layers


def test_nothing_to_tile_without_assets(world: World) -> None:
    assert len(world.empty_errors) == 2
    assert all("ingest" in str(e) for e in world.empty_errors)


@pytest.mark.parametrize("layer", ["pointcloud", "mesh"])
def test_tileset_structure(world: World, layer: str) -> None:
    """The structural checker passes (schema fields, geometric-error order across the external tilesets with
    leaves 0, transforms, containment of every vertex in its tile and all ancestors); and the layout of an
    asset layer: one external tileset per asset, tilesetVersion of this build, refinement."""
    report = getattr(world, layer)
    assert check_tileset(report.path) == []
    doc = layer_doc(report)
    assert report.path == world.s.home / "tilesets" / layer
    assert doc["asset"]["tilesetVersion"] == str(report.tileset_version)
    assert doc["root"]["refine"] == "ADD" and "content" not in doc["root"]
    names = ASSETS[layer]
    assert {c["content"]["uri"] for c in doc["root"]["children"]} == {f"{n}/tileset.json" for n in names}
    assert doc["root"]["geometricError"] > 0
    for name in names:
        sub = json.loads((report.path / name / "tileset.json").read_text())
        assert sub["asset"]["tilesetVersion"] == str(report.tileset_version)
        assert sub["root"]["refine"] == "REPLACE"
    contents = sum(
        1 for t, _w, _c, _f in walk(doc, report.path) if t.get("content", {}).get("uri", "").endswith(".glb")
    )
    assert not list(report.path.rglob("*.pnts")) and not list(report.path.rglob("*.b3dm"))
    assert contents == len(list(report.path.rglob("*.glb"))) == report.tile_count
    assert not list(report.path.parent.glob(f".{layer}.staging-*")), "staging folders left behind"


def test_every_tile_passes_the_khronos_validator(world: World) -> None:
    for report, extensions in ((world.pointcloud, {"KHR_materials_unlit"}), (world.mesh, None)):
        results = validate_gltf(report.path)
        assert len(results) == report.tile_count
        bad = [(r["file"], m) for r in results for m in r["messages"] if m["severity"] <= 1]
        assert bad == []
        if extensions is not None:
            assert all(set(r["extensionsUsed"]) == extensions for r in results)


def test_both_layers_load_in_cesium_over_their_data(world: World) -> None:
    """CesiumJS (one page for both layers) opens each layer and its assets' external tilesets, loads content of
    every asset without errors, and centres the root bounding sphere over the test area."""
    reports = {layer: getattr(world, layer) for layer in ("pointcloud", "mesh")}
    # A small canvas: nothing is picked at known places here, and SwiftShader's frames cost by the pixel.
    loads = [CesiumLoad(str(r.path / "tileset.json")) for r in reports.values()]
    run = load_tilesets_in_cesium(loads, size=(240, 180))
    assert run.errors == []
    for (layer, report), seen in zip(reports.items(), run.reports, strict=True):
        assert seen["errors"] == [] and seen["tilesLoaded"] and not seen["timedOut"], (layer, seen["errors"])
        assert seen["tilesetVersion"] == str(report.tileset_version)
        assert seen["commandsDrawn"] >= 1 and all(url.startswith("http://127.0.0.1:") for url in seen["contentUrls"])
        assert {url.split("/tiles/", 1)[1].split("/")[1] for url in seen["contentUrls"]} == ASSETS[layer]
        x, y = TO_4547.transform(seen["root"]["lon"], seen["root"]["lat"])
        assert X0 + 90 < x < X0 + 600 and Y0 + 90 < y < Y0 + 300, (layer, seen["root"])


def test_catalogue_rows(world: World) -> None:
    with connect(world.s) as conn:
        for report in (world.pointcloud, world.mesh):
            entry = tileset_entry(conn, report.layer)
            assert entry is not None and entry["path"] == str(report.path)
            assert entry["tileset_version"] == report.tileset_version
            assert (entry["feature_count"], entry["tile_count"]) == (2, report.tile_count)
            xmin, ymin, xmax, ymax = entry["bounds"]
            assert X0 + 90 < xmin < xmax < X0 + 600 and Y0 + 90 < ymin < ymax < Y0 + 300


# --------------------------------------------------------------------------------------------------
# Point clouds


def decoded_clouds(report: BuildReport) -> dict[str, list[tuple[np.ndarray, dict[str, Any], np.ndarray, list[Any]]]]:
    """Per cloud, every content tile's decoded ECEF points, with the tile, its world matrix and its ancestors."""
    out: dict[str, list[tuple[np.ndarray, dict[str, Any], np.ndarray, list[Any]]]] = {}
    for tile, world, chain, where in walk(layer_doc(report), report.path):
        uri = tile.get("content", {}).get("uri", "")
        if uri.endswith(".glb"):
            glb = Glb(where / uri)
            (prim,) = glb.primitives()
            assert prim["mode"] == 0  # POINTS
            ecef = to_ecef(glb.accessor(prim["attributes"]["POSITION"]), world)
            out.setdefault(where.name, []).append((ecef, tile, world, chain))
    return out


def test_points_are_where_pyproj_puts_them_and_inside_every_ancestor(world: World) -> None:
    decoded = decoded_clouds(world.pointcloud)
    assert set(decoded) == set(world.clouds)
    for name, (xyz, crs) in world.clouds.items():
        reference = reference_ecef(xyz, crs)
        drawn = []
        for ecef, tile, world_m, chain in decoded[name]:
            assert inside_box(ecef, tile["boundingVolume"]["box"], world_m).all()
            for box, ancestor_world, _error in chain:
                assert inside_box(ecef, box, ancestor_world).all(), f"{name}: points leave an ancestor's box"
            drawn.append(ecef)
        every = np.concatenate(drawn)
        assert_same_points(every, reference, name)


def test_point_colours_survive(world: World) -> None:
    for tile, _w, _c, where in walk(layer_doc(world.pointcloud), world.pointcloud.path):
        if where.name == "scan_utm" and tile.get("content", {}).get("uri", "").endswith(".glb"):
            glb = Glb(where / tile["content"]["uri"])
            (prim,) = glb.primitives()
            colors = np.round(glb.accessor(prim["attributes"]["COLOR_0"]) * 255)  # normalized bytes
            assert colors.shape[1] == 4 and colors[:, :3].std() > 30 and (colors[:, 3] == 255).all()
            return
    pytest.fail("no content tile of scan_utm")


# --------------------------------------------------------------------------------------------------
# Meshes


def mesh_tiles(report: BuildReport, name: str) -> list[tuple[Glb, dict[str, Any], np.ndarray, list[Any]]]:
    out = []
    for tile, world, chain, where in walk(layer_doc(report), report.path):
        uri = tile.get("content", {}).get("uri", "")
        if where.name == name and uri.endswith(".glb"):
            out.append((Glb(where / uri), tile, world, chain))
    return out


@pytest.mark.parametrize("name", ["terrain", "dome"])
def test_mesh_leaves_are_the_source_triangles_where_pyproj_puts_them(world: World, name: str) -> None:
    source = world.meshes[name]
    reference = reference_ecef(source["vertices"], "EPSG:4547")
    triangles = 0
    drawn = []
    tiles = mesh_tiles(world.mesh, name)
    assert len(tiles) > (1 if name == "dome" else 10)
    for glb, tile, world_m, chain in tiles:
        for prim in glb.primitives():
            ecef = to_ecef(glb.accessor(prim["attributes"]["POSITION"]), world_m)
            assert inside_box(ecef, tile["boundingVolume"]["box"], world_m).all()
            for box, ancestor_world, _error in chain:
                assert inside_box(ecef, box, ancestor_world).all(), f"{name}: content leaves an ancestor's box"
            if not tile.get("children"):
                triangles += len(glb.accessor(prim["indices"])) // 3
                drawn.append(ecef)
    assert triangles == len(source["faces"]), "leaves do not hold every source triangle exactly once"
    every = np.concatenate(drawn)
    assert_same_points(every, reference, name)


def test_mesh_parents_are_simplified_with_growing_error(world: World) -> None:
    tiles = mesh_tiles(world.mesh, "terrain")
    by_depth: dict[int, list[int]] = {}
    for glb, tile, _w, chain in tiles:
        count = sum(len(glb.accessor(p["indices"])) // 3 for p in glb.primitives())
        by_depth.setdefault(len(chain), []).append(count)
        if tile.get("children"):
            assert tile["geometricError"] > 0
            assert count <= MESH_OPTIONS.max_tile_bytes // 40 * 1.5, "a parent is not simplified"
    depths = sorted(by_depth)
    assert len(depths) >= 3, "expected at least three levels"
    assert sum(by_depth[depths[0]]) < sum(by_depth[depths[-1]]) / 4


def test_mesh_textures_are_kept_per_tile(world: World) -> None:
    """Leaf textures are crops of the source texture: the texel a decoded texture coordinate points at has the
    colour of the source texel of the vertex's own texture coordinate (the texture encodes pixel positions)."""
    source = world.meshes["terrain"]
    texels = source["texels"]
    height, width = texels.shape[:2]
    reference = reference_ecef(source["vertices"], "EPSG:4547")
    checked = 0
    for glb, tile, world_m, _chain in mesh_tiles(world.mesh, "terrain"):
        (prim,) = glb.primitives()
        material = glb.doc["materials"][prim["material"]]
        assert "KHR_materials_unlit" in material["extensions"] and "NORMAL" not in prim["attributes"]
        image = np.asarray(glb.image(prim).convert("RGB"))
        if tile.get("children"):
            assert image.shape[0] * image.shape[1] < height * width, "a parent carries the full texture"
            continue
        ecef = to_ecef(glb.accessor(prim["attributes"]["POSITION"]), world_m)
        _, vertex = nearest(ecef, reference)
        uv = glb.accessor(prim["attributes"]["TEXCOORD_0"])
        h, w = image.shape[:2]
        got = image[np.clip((uv[:, 1] * h).astype(int), 0, h - 1), np.clip((uv[:, 0] * w).astype(int), 0, w - 1)]
        su = source["uv"][vertex]
        want = texels[np.clip(((1 - su[:, 1]) * height).astype(int), 0, height - 1),
                      np.clip((su[:, 0] * width).astype(int), 0, width - 1)]  # fmt: skip
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 3
        assert h * w < height * width
        checked += 1
    assert checked > 10


def test_untextured_mesh_has_its_colour_and_unit_normals(world: World) -> None:
    for glb, _tile, _w, _c in mesh_tiles(world.mesh, "dome"):
        for prim in glb.primitives():
            material = glb.doc["materials"][prim["material"]]["pbrMetallicRoughness"]
            assert material["baseColorFactor"][:3] == pytest.approx([200 / 255, 80 / 255, 60 / 255], abs=0.01)
            normals = glb.accessor(prim["attributes"]["NORMAL"]).astype(np.float64)
            assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Incremental builds (last: they replace the folders the tests above read)


def test_incremental_without_changes_rewrites_nothing(world: World) -> None:
    before = {layer: files_state(r.path) for layer, r in (("pointcloud", world.pointcloud), ("mesh", world.mesh))}
    again = {"pointcloud": build_pointcloud(world.s, incremental=True),
             "mesh": build_mesh(world.s, incremental=True, options=MESH_OPTIONS)}  # fmt: skip
    for layer, report in again.items():
        assert (report.written, report.reused, report.removed) == (0, 2, 0), report.summary()
        assert report.reason == "nothing changed since the last build"
        assert report.tileset_version == getattr(world, layer).tileset_version + 1
        after = files_state(report.path)
        assert set(after) == set(before[layer])
        changed = {k for k in after if after[k] != before[layer][k]}
        assert changed == {"tileset.json", "build-manifest.json"}, changed
        assert layer_doc(report)["asset"]["tilesetVersion"] == str(report.tileset_version)


def test_incremental_rebuilds_only_the_changed_cloud(world: World) -> None:
    before = files_state(world.pointcloud.path)
    write_xyz(world.data / "dense.xyz", cloud_points(2500, 7, 180))
    ingest_pointcloud(world.data / "dense.xyz", crs="EPSG:4547", settings=world.s)
    report = build_pointcloud(world.s, incremental=True)
    assert report.written_keys == ["dense"] and report.reused == 1, report.summary()
    after = files_state(report.path)
    for key, state in after.items():
        if key.startswith("scan_utm/"):
            assert before[key] == state, f"{key} was rewritten"
        elif key.startswith("dense/"):
            assert before.get(key) != state, f"{key} was not rewritten"
    doc = json.loads((report.path / "dense" / "tileset.json").read_text())
    assert doc["asset"]["tilesetVersion"] == str(report.tileset_version)
    scan = json.loads((report.path / "scan_utm" / "tileset.json").read_text())
    assert scan["asset"]["tilesetVersion"] == str(world.pointcloud.tileset_version)
    points = decoded_clouds(report)["dense"]
    every = np.concatenate([p for p, _t, _w, _c in points])
    gap, _ = nearest(reference_ecef(np.round(cloud_points(2500, 7, 180), 3), "EPSG:4547"), every)
    assert gap.max() < CM


def test_cli_builds_the_mesh_layer(world: World) -> None:
    before = files_state(world.mesh.path)
    result = run_cli(world.s, world.monkeypatch, "tiles", "build", "--layer", "mesh", "--incremental",
                     "--max-tile-bytes", str(MESH_OPTIONS.max_tile_bytes))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mesh: 2 features" in result.output and "0 written, 2 reused" in result.output
    after = files_state(world.mesh.path)
    assert {k for k in after if after[k] != before.get(k)} == {"tileset.json", "build-manifest.json"}
    assert os.path.isfile(world.mesh.path / "terrain" / "tileset.json")
