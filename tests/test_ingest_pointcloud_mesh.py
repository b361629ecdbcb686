"""``cim ingest pointcloud`` and ``cim ingest mesh``: small LAS/LAZ, PLY, XYZ, OBJ, glTF and GLB files made here
are registered with their CRS, counts and numpy-computed 3D bounds, copied under ``$CIM_HOME/assets``; files
without a CRS, empty or corrupt files are refused with the database and ``$CIM_HOME`` unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import laspy
import numpy as np
import pyproj
import pytest
import shapely
import trimesh
from psycopg import sql

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.errors import IngestError
from ingest.mesh import ingest_mesh
from ingest.pointcloud import ingest_pointcloud

from cliharness import run_cli
from conftest import new_database
from dbcheck import fingerprint

X0, Y0 = 494_000.0, 2_490_000.0  # the tiny city, EPSG:4547


@pytest.fixture(scope="module")
def database(settings: Settings, cluster_url: str) -> Iterator[Settings]:
    """One empty database (EPSG:4547) for this module; asset names differ between tests."""
    with new_database(settings, cluster_url) as fresh:
        ensure_database(fresh)
        yield fresh


@pytest.fixture()
def s(database: Settings, tmp_path: Path) -> Settings:
    """The module's database with a $CIM_HOME of the test's own."""
    return database.model_copy(update={"home": tmp_path / "home"})


def state(settings: Settings) -> tuple[dict[str, str], str, list[str]]:
    """City tables, the assets table and the files under $CIM_HOME: equal states, nothing changed."""
    with connect(settings) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {} t"
            ).format(sql.Identifier("assets"))
        ).fetchone()
    root = settings.home
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
    return fingerprint(settings), row[0] if row else "", files


def asset(settings: Settings, name: str) -> dict[str, Any]:
    with connect(settings) as conn:
        cur = conn.execute(
            "SELECT kind, format, path, files, crs, srid, point_count, vertex_count, triangle_count, bounds_min, "
            "bounds_max, origin, up_axis, ST_AsBinary(footprint) AS footprint, size_bytes, sha256 "
            "FROM assets WHERE name = %s",
            (name,),
        )
        row = cur.fetchone()
        assert row is not None, f"asset {name} not registered"
        names = [d.name for d in cur.description or []]
    return dict(zip(names, row, strict=True))


def random_points(n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.column_stack([X0 + 100 + rng.random(n) * 50, Y0 + 200 + rng.random(n) * 30, 4.0 + rng.random(n) * 25])


def write_las(path: Path, xyz: np.ndarray, crs: pyproj.CRS | None) -> np.ndarray:
    """A LAS/LAZ file (by extension) with millimetre scale; returns the stored (quantised) coordinates."""
    header = laspy.LasHeader(point_format=3, version="1.4")
    header.offsets = np.floor(xyz.min(axis=0))
    header.scales = np.array([0.001, 0.001, 0.001])
    if crs is not None:
        header.add_crs(crs)
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.write(path)
    back = laspy.read(path)
    return np.column_stack([np.asarray(back.x), np.asarray(back.y), np.asarray(back.z)])


def test_las_with_a_crs_vlr_needs_no_crs_option(s: Settings, tmp_path: Path) -> None:
    stored = write_las(tmp_path / "scan.las", random_points(), pyproj.CRS.from_epsg(4547))
    before = state(s)
    dry = ingest_pointcloud(tmp_path / "scan.las", dry_run=True, settings=s)
    assert not dry.written and dry.point_count == 500 and state(s) == before
    report = ingest_pointcloud(tmp_path / "scan.las", settings=s)
    assert report.written and report.point_count == 500
    row = asset(s, "scan")
    target = s.home / "assets" / "scan" / "scan.las"
    assert row["kind"] == "pointcloud" and row["format"] == "las" and row["path"] == str(target)
    assert (row["crs"], row["srid"], row["point_count"], row["triangle_count"]) == ("EPSG:4547", 4547, 500, None)
    assert row["bounds_min"] == pytest.approx(stored.min(axis=0).tolist(), abs=1e-9)
    assert row["bounds_max"] == pytest.approx(stored.max(axis=0).tolist(), abs=1e-9)
    footprint = shapely.from_wkb(bytes(row["footprint"]))
    lo, hi = stored.min(axis=0), stored.max(axis=0)
    assert footprint.bounds == pytest.approx((lo[0], lo[1], hi[0], hi[1]), abs=1e-6)
    assert target.read_bytes() == (tmp_path / "scan.las").read_bytes()
    assert row["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert state(s)[2] == ["assets", "assets/scan", "assets/scan/scan.las"]


def test_laz_in_utm_is_placed_in_the_storage_crs(s: Settings, tmp_path: Path) -> None:
    to_utm = pyproj.Transformer.from_crs("EPSG:4547", "EPSG:32650", always_xy=True)
    pts = random_points()
    ux, uy = to_utm.transform(pts[:, 0], pts[:, 1])
    stored = write_las(tmp_path / "utm.laz", np.column_stack([ux, uy, pts[:, 2]]), pyproj.CRS.from_epsg(32650))
    ingest_pointcloud(tmp_path / "utm.laz", settings=s)
    row = asset(s, "utm")
    assert (row["format"], row["crs"], row["srid"]) == ("laz", "EPSG:32650", 32650)
    assert row["bounds_min"] == pytest.approx(stored.min(axis=0).tolist(), abs=1e-9)
    footprint = shapely.from_wkb(bytes(row["footprint"]))
    lo, hi = stored.min(axis=0), stored.max(axis=0)
    back = pyproj.Transformer.from_crs("EPSG:32650", "EPSG:4547", always_xy=True)
    cx, cy = back.transform([lo[0], hi[0], hi[0], lo[0]], [lo[1], lo[1], hi[1], hi[1]])
    verts = shapely.get_coordinates(footprint)
    for x, y in zip(cx, cy, strict=True):
        assert np.min(np.hypot(verts[:, 0] - x, verts[:, 1] - y)) < 1e-6


def write_ply(path: Path, xyz: np.ndarray) -> None:
    vertex = np.zeros(len(xyz), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f4"), ("red", "u1")])
    vertex["x"], vertex["y"], vertex["z"], vertex["red"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], 200
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment made by a test\n"
        f"element vertex {len(xyz)}\nproperty double x\nproperty double y\nproperty float z\n"
        "property uchar red\nend_header\n"
    )
    path.write_bytes(header.encode() + vertex.tobytes())


def test_ply_and_xyz_need_a_crs_option(s: Settings, tmp_path: Path) -> None:
    pts = random_points(300)
    write_ply(tmp_path / "dense.ply", pts)
    xyz = tmp_path / "cloud.xyz"
    lines = ["x,y,z,intensity"] + [f"{x:.3f},{y:.3f},{z:.3f},7" for x, y, z in pts]
    xyz.write_text("\n".join(lines) + "\n")
    txt = tmp_path / "spaces.txt"
    txt.write_text("# exported\n" + "\n".join(f"{x:.3f}\t{y:.3f}  {z:.3f}" for x, y, z in pts[:10]) + "\n")
    before = state(s)
    for path in (tmp_path / "dense.ply", xyz):
        with pytest.raises(IngestError, match=rf"{path.name}: the file declares no CRS; pass --crs"):
            ingest_pointcloud(path, settings=s)
    assert state(s) == before
    ingest_pointcloud(tmp_path / "dense.ply", "EPSG:4547", settings=s)
    ingest_pointcloud(xyz, "EPSG:4547", settings=s)
    ingest_pointcloud(txt, "4547", name="spaces", settings=s)
    ply, text, few = asset(s, "dense"), asset(s, "cloud"), asset(s, "spaces")
    assert (ply["format"], ply["point_count"], text["format"], text["point_count"]) == ("ply", 300, "xyz", 300)
    lo32 = [pts[:, 0].min(), pts[:, 1].min(), float(np.float32(pts[:, 2]).min())]
    assert ply["bounds_min"] == pytest.approx(lo32, abs=1e-9)
    assert text["bounds_max"] == pytest.approx(np.round(pts, 3).max(axis=0).tolist(), abs=1e-9)
    assert few["point_count"] == 10
    assert few["bounds_min"] == pytest.approx(np.round(pts[:10], 3).min(axis=0).tolist(), abs=1e-9)


def test_reregistering_replaces_the_asset(s: Settings, tmp_path: Path) -> None:
    write_las(tmp_path / "a.las", random_points(50), pyproj.CRS.from_epsg(4547))
    ingest_pointcloud(tmp_path / "a.las", name="site", settings=s)
    write_ply(tmp_path / "b.ply", random_points(20))
    report = ingest_pointcloud(tmp_path / "b.ply", "EPSG:4547", name="site", settings=s)
    assert report.replaced
    row = asset(s, "site")
    assert (row["format"], row["point_count"]) == ("ply", 20)
    assert state(s)[2] == ["assets", "assets/site", "assets/site/b.ply"]


def bad_pointclouds(tmp: Path) -> list[tuple[Path, str | None, str]]:
    good = tmp / "good.las"
    write_las(good, random_points(2000), pyproj.CRS.from_epsg(4547))
    data = good.read_bytes()
    cases: list[tuple[Path, str | None, str]] = []

    def add(name: str, content: bytes | str, crs: str | None, message: str) -> None:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        cases.append((path, crs, message))

    add("empty.las", b"", None, "is empty")
    add("truncated.las", data[: len(data) // 2], None, "(not a readable LAS|claims 2000 points)")
    add("noise.laz", os.urandom(4096), None, "not a readable LAS/LAZ file")
    add("nocrs.las", b"", None, "")  # replaced below: a LAS without a CRS VLR
    write_las(tmp / "nocrs.las", random_points(10), None)
    cases[-1] = (tmp / "nocrs.las", None, "declares no CRS; pass --crs")
    zero = laspy.LasData(laspy.LasHeader(point_format=3, version="1.4"))
    zero.header.add_crs(pyproj.CRS.from_epsg(4547))
    zero.write(tmp / "zero.las")
    cases.append((tmp / "zero.las", None, "holds no points"))
    add("words.xyz", "1 2 3\n4 five 6\n", "EPSG:4547", "not a readable XYZ")
    add("short.xyz", "494000 2490000 1\n494001 2490001\n", "EPSG:4547", "line 2: x y z are not three numbers")
    add("inf.xyz", "494000 2490000 1\n494001 2490001 inf\n", "EPSG:4547", "line 2: non-finite coordinate")
    add("header_only.xyz", "x y z\n", "EPSG:4547", "holds no points")
    add("two_columns.xyz", "1 2\n", "EPSG:4547", "needs at least 3 columns")
    add("degrees.xyz", "113.9 22.5 3\n113.91 22.51 4\n", "EPSG:4547", "look like longitude/latitude degrees")
    add("far.xyz", "-77.0 40.0 0\n-76.9 40.1 0\n", "EPSG:4326", "outside the area of the storage CRS")
    add("bad.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n", "EPSG:4547", "readable PLY")
    add("unknown_crs.xyz", "494000 2490000 1\n", "EPSG:999999", "unknown CRS")
    add("points.e57", b"x", "EPSG:4547", "unsupported point cloud format '.e57'")
    return cases


def test_bad_point_clouds_are_refused_and_change_nothing(s: Settings, tmp_path: Path) -> None:
    before = state(s)
    for path, crs, message in bad_pointclouds(tmp_path):
        with pytest.raises(IngestError, match=message) as err:
            ingest_pointcloud(path, crs, settings=s)
        text = str(err.value)
        assert text.startswith(str(path)) and "\n" not in text, text
    assert state(s) == before


# ---------------------------------------------------------------------------------------------------------
# Meshes

CUBE_OBJ = """# a 10 m cube, z up
mtllib cube.mtl
v 0 0 0
v 10 0 0
v 10 10 0
v 0 10 0
v 0 0 10
v 10 0 10
v 10 10 10
v 0 10 10
vt 0 0
usemtl facade
f 1 2 3 4
f 5 6 7 8
f 1 2 6 5
f 2 3 7 6
f 3 4 8 7
f 4 1 5 8
"""


def write_obj(folder: Path, texture: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cube.obj").write_text(CUBE_OBJ)
    (folder / "cube.mtl").write_text("newmtl facade\nKd 0.8 0.8 0.8\n" + ("map_Kd -s 1 1 1 tex/facade.jpg\n" * texture))
    if texture:
        (folder / "tex").mkdir(exist_ok=True)
        (folder / "tex" / "facade.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder / "cube.obj"


def test_obj_with_mtl_and_texture_is_placed_at_its_origin(s: Settings, tmp_path: Path) -> None:
    path = write_obj(tmp_path / "model")
    report = ingest_mesh(path, "EPSG:4547", (X0 + 100, Y0 + 100, 5.0), settings=s)
    assert report.written
    row = asset(s, "cube")
    assert (row["kind"], row["format"], row["crs"], row["up_axis"]) == ("mesh", "obj", "EPSG:4547", "z")
    assert (row["vertex_count"], row["triangle_count"], row["point_count"]) == (8, 12, None)
    assert row["origin"] == [X0 + 100, Y0 + 100, 5.0]
    assert row["bounds_min"] == pytest.approx([X0 + 100, Y0 + 100, 5.0])
    assert row["bounds_max"] == pytest.approx([X0 + 110, Y0 + 110, 15.0])
    footprint = shapely.from_wkb(bytes(row["footprint"]))
    assert footprint.bounds == pytest.approx((X0 + 100, Y0 + 100, X0 + 110, Y0 + 110), abs=1e-6)
    assert row["files"] == ["cube.obj", "cube.mtl", "tex/facade.jpg"]
    copied = s.home / "assets" / "cube"
    for rel in row["files"]:
        assert (copied / rel).read_bytes() == (path.parent / rel).read_bytes()


def box_mesh() -> trimesh.Trimesh:
    """A y-up glTF-style box: 4 m east (x), 3 m up (y), 2 m north (z from -2 to 0, since +z is south)."""
    mesh = trimesh.creation.box(extents=(4.0, 3.0, 2.0))
    mesh.apply_translation((2.0, 1.5, -1.0))
    return mesh


def test_gltf_with_external_buffer_is_y_up(s: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "gltf"
    folder.mkdir()
    box_mesh().export(folder / "box.gltf")
    buffers = sorted(p.name for p in folder.glob("*.bin"))
    assert buffers, "trimesh wrote no external buffer"
    ingest_mesh(folder / "box.gltf", "EPSG:4547", (X0, Y0, 10.0), settings=s)
    row = asset(s, "box")
    assert (row["format"], row["up_axis"], row["vertex_count"], row["triangle_count"]) == ("gltf", "y", 8, 12)
    assert row["bounds_min"] == pytest.approx([X0, Y0, 10.0])
    assert row["bounds_max"] == pytest.approx([X0 + 4, Y0 + 2, 13.0])
    assert row["files"] == ["box.gltf", *buffers]


def test_glb_placed_by_context_capture_metadata(s: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "production" / "Data"
    folder.mkdir(parents=True)
    box_mesh().export(folder / "tile.glb")
    (tmp_path / "production" / "metadata.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<ModelMetadata version="1">\n'
        f"\t<SRS>EPSG:4547</SRS>\n\t<SRSOrigin>{X0 + 300},{Y0 + 50},2.5</SRSOrigin>\n</ModelMetadata>\n"
    )
    report = ingest_mesh(folder / "tile.glb", settings=s)
    assert report.origin == (X0 + 300, Y0 + 50, 2.5)
    row = asset(s, "tile")
    assert (row["format"], row["crs"], row["files"]) == ("glb", "EPSG:4547", ["tile.glb"])
    assert row["bounds_max"] == pytest.approx([X0 + 304, Y0 + 52, 5.5])


def test_bad_meshes_are_refused_and_change_nothing(s: Settings, tmp_path: Path) -> None:
    ok = write_obj(tmp_path / "ok")
    no_mtl = write_obj(tmp_path / "no_mtl", texture=False)
    (no_mtl.parent / "cube.mtl").unlink()
    no_tex = write_obj(tmp_path / "no_tex")
    (no_tex.parent / "tex" / "facade.jpg").unlink()
    escape = tmp_path / "escape" / "e.obj"
    escape.parent.mkdir()
    escape.write_text("mtllib ../ok/cube.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    glb = tmp_path / "box.glb"
    box_mesh().export(glb)
    files: dict[str, str | bytes] = {
        "empty.obj": "",
        "points.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\n",
        "dangling.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n",
        "nan.obj": "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n",
        "broken.glb": b"glTF\x02\x00\x00\x00garbage",
        "broken.gltf": "{not json",
        "model.fbx": "x",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    cases: list[tuple[Path, str | None, str]] = [
        (ok, None, "declares no CRS; pass --crs"),
        (ok, "EPSG:4490", "is not projected"),
        (no_mtl, "EPSG:4547", "material library 'cube.mtl' is missing"),
        (no_tex, "EPSG:4547", "texture 'tex/facade.jpg' is missing"),
        (escape, "EPSG:4547", "points outside the mesh's folder"),
        (glb, "EPSG:32618", "outside the area of the storage CRS"),
        (tmp_path / "empty.obj", "EPSG:4547", "is empty"),
        (tmp_path / "points.obj", "EPSG:4547", "holds no triangles"),
        (tmp_path / "dangling.obj", "EPSG:4547", "not a readable OBJ mesh|refers to a vertex"),
        (tmp_path / "nan.obj", "EPSG:4547", "non-finite"),
        (tmp_path / "broken.glb", "EPSG:4547", "not a readable GLB mesh"),
        (tmp_path / "broken.gltf", "EPSG:4547", "not a glTF JSON file"),
        (tmp_path / "model.fbx", "EPSG:4547", "unsupported mesh format"),
    ]
    before = state(s)
    for path, crs, message in cases:
        with pytest.raises(IngestError, match=message) as err:
            ingest_mesh(path, crs, (X0, Y0, 0.0), settings=s)
        text = str(err.value)
        assert text.startswith(str(path)) and "\n" not in text, text
    assert state(s) == before


def test_cli_refuses_no_crs_and_registers_with_origin(
    s: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xyz = tmp_path / "pts.xyz"
    xyz.write_text(f"{X0} {Y0} 1\n{X0 + 5} {Y0 + 5} 2\n")
    before = state(s)
    res = run_cli(s, monkeypatch, "ingest", "pointcloud", str(xyz))
    assert res.exit_code == 1
    assert res.stderr == f"error: {xyz}: the file declares no CRS; pass --crs (e.g. --crs EPSG:4547)\n"
    assert state(s) == before
    obj = write_obj(tmp_path / "m")
    report = tmp_path / "mesh.json"
    args = ["--crs", "EPSG:4547", "--origin", f"{X0},{Y0},3", "--name", "cube-1", "--report", str(report)]
    res = run_cli(s, monkeypatch, "ingest", "mesh", str(obj), *args)
    assert res.exit_code == 0, res.stderr
    assert "mesh cube-1 (obj) registered: 8 vertices, 12 triangles" in res.stdout
    assert json.loads(report.read_text())["bounds_max"] == pytest.approx([X0 + 10, Y0 + 10, 13.0])
    assert asset(s, "cube-1")["origin"] == [X0, Y0, 3.0]
