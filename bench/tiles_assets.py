"""Benchmark of the asset layers' per-asset tiling (no database): one synthetic point cloud (LAS, EPSG:4547, RGB)
through `tilesets.pointcloud.tile_pointcloud` (py3dtiles + rewrite) and one synthetic textured terrain mesh
(OBJ + PNG) through `tilesets.mesh_tiles.tile_mesh`. Prints wall time, throughput, tiles, bytes and peak RSS.

    .venv/bin/python bench/tiles_assets.py --points 1000000 --triangles 200000
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import laspy
import numpy as np
import pyproj
from PIL import Image

from cim.store.assets import AssetRecord
from tilesets.layer_build import BuildOptions
from tilesets.mesh_tiles import tile_mesh
from tilesets.pointcloud import tile_pointcloud

X0, Y0 = 494_000.0, 2_490_000.0


def make_cloud(folder: Path, n: int) -> AssetRecord:
    rng = np.random.default_rng(0)
    side = max(50.0, np.sqrt(n) / 4)  # ~16 points per m²
    xyz = np.column_stack([X0 + rng.random(n) * side, Y0 + rng.random(n) * side, 5 + rng.random(n) * 30])
    header = laspy.LasHeader(point_format=3, version="1.4")
    header.offsets, header.scales = np.floor(xyz.min(axis=0)), np.array([0.001, 0.001, 0.001])
    header.add_crs(pyproj.CRS.from_epsg(4547))
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz.T
    las.red, las.green, las.blue = (rng.integers(0, 256, (3, n)) * 257).astype(np.uint16)
    path = folder / "cloud.las"
    las.write(path)
    return AssetRecord(name="cloud", kind="pointcloud", format="las", path=str(path), files=[path.name],
                       crs="EPSG:4547", srid=4547, bounds_min=tuple(xyz.min(axis=0)), bounds_max=tuple(xyz.max(axis=0)),
                       footprint_wkb=b"", size_bytes=path.stat().st_size, sha256="0" * 64, point_count=n)  # fmt: skip


def make_mesh(folder: Path, triangles: int) -> AssetRecord:
    nx = int(np.sqrt(triangles / 2)) + 1
    xs, ys = np.meshgrid(np.arange(nx, dtype=float), np.arange(nx, dtype=float))
    v = np.column_stack([xs.ravel() * 0.5, ys.ravel() * 0.5, 3 * np.sin(xs.ravel() / 15) * np.cos(ys.ravel() / 11)])
    uv = np.column_stack([xs.ravel() / (nx - 1), ys.ravel() / (nx - 1)])
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(nx - 1))
    a = (j * nx + i).ravel()
    faces = np.concatenate([np.column_stack([a, a + 1, a + nx + 1]), np.column_stack([a, a + nx + 1, a + nx])]) + 1
    Image.fromarray((np.random.default_rng(1).random((2048, 2048, 3)) * 255).astype(np.uint8)).save(folder / "t.jpg")
    (folder / "m.mtl").write_text("newmtl m\nmap_Kd t.jpg\n")
    with (folder / "m.obj").open("w") as fh:
        fh.write("mtllib m.mtl\n")
        np.savetxt(fh, v, fmt="v %.4f %.4f %.4f")
        np.savetxt(fh, uv, fmt="vt %.6f %.6f")
        fh.write("usemtl m\n")
        np.savetxt(fh, np.repeat(faces, 2, axis=1), fmt="f %d/%d %d/%d %d/%d")
    return AssetRecord(name="mesh", kind="mesh", format="obj", path=str(folder / "m.obj"), files=["m.obj"],
                       crs="EPSG:4547", srid=4547, bounds_min=(0, 0, 0), bounds_max=(1, 1, 1), footprint_wkb=b"",
                       size_bytes=1, sha256="0" * 64, vertex_count=len(v), triangle_count=len(faces),
                       origin=(X0, Y0, 10.0), up_axis="z")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--triangles", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cim-bench-assets-"))
    try:
        for what, make, tile, count in (
            ("point cloud", make_cloud, tile_pointcloud, args.points),
            ("mesh", make_mesh, tile_mesh, args.triangles),
        ):
            asset = make(work, count)
            out = work / f"out-{asset.name}"
            out.mkdir()
            started = time.perf_counter()
            made = tile(asset, out, BuildOptions(), 1, lambda _t: None)
            seconds = time.perf_counter() - started
            unit = "points" if what == "point cloud" else "triangles"
            print(
                f"{what}: {made.features:,} {unit} in {seconds:.1f} s ({made.features / seconds:,.0f} {unit}/s), "
                f"{made.tile_count:,} tiles, {made.bytes / 1e6:,.1f} MB, geometric error {made.geometric_error:.2f} m, "
                f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
