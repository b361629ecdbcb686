"""The ``pointcloud`` layer of ``cim tiles build``: every catalogued point cloud (LAS/LAZ, PLY, XYZ; see
ingest/pointcloud.py) becomes a 3D Tiles 1.1 tileset through py3dtiles' converter (``py3dtiles.convert``:
octree, level-of-detail subsampling, reprojection to EPSG:4978), under ``$CIM_HOME/tilesets/pointcloud/<name>/``
with a layer ``tileset.json`` referencing them (`tilesets.asset_layer`).

Decisions recorded here:
- **CRS and heights.** py3dtiles reprojects with ``pyproj.Transformer.from_crs(crs_in, EPSG:4978,
  always_xy=True)``, which takes z as an *ellipsoidal* height, and has no height-datum option. Point
  heights are orthometric (H, the deployment's height datum, like every stored height), so the input is
  pre-shifted to h = H + N with N = ``CIM_HEIGHT_OFFSET_M`` before py3dtiles reads it: for LAS/LAZ by adding N
  to the header's Z offset (and Z min/max) of a copy — exact, since LAS stores z = Z_int · scale + offset,
  and the compressed point records are not touched; for PLY and XYZ by writing a temporary LAS (millimetre
  scale). With N = 0 a LAS/LAZ file is read in place. ``crs_in`` is the horizontal part of the catalogue's
  CRS made 3D (``CRS.to_3d()``: ellipsoidal height), forced for every file (``force_crs_in``): the catalogue's
  CRS wins over the file's VLR, as at ingest. Datum pairs PROJ has no transformation for are refused as in
  `cim.crs` (only the CGCS2000 ↔ WGS84 null shift is allowed).
- **3D Tiles 1.1.** py3dtiles is asked for 1.1 output (``SpecVersion.V1_1``: glTF ``.glb`` point tiles
  instead of the deprecated ``.pnts``). Its 12.1 glTF is not valid as written and not placed as the spec
  reads it, so every tile is rewritten (`tilesets.asset_gltf.points_glb`): positions are turned from z-up to
  glTF's y-up (3D Tiles applies the y-up → z-up rotation to glTF content; py3dtiles writes z-up positions,
  which CesiumJS would show rotated by 90°), ``COLOR_0`` becomes normalized VEC4 bytes (it writes
  unnormalized, unaligned RGB bytes, two Khronos-validator errors per tile), and the material is unlit.
- **Preview.** The content py3dtiles' merger puts on the root (``preview.glb``, a sample of the clouds) is
  made again from the children's points in float64 (py3dtiles goes through float32 absolute ECEF
  coordinates there, which misplaces those points by up to half a metre), sampled evenly instead of at random.
- **Bounding volumes** are recomputed bottom-up from the decoded content and the children's corners, in each
  tile's own frame (py3dtiles' boxes can miss a few points); geometric errors are kept but clamped so no
  child exceeds its parent, and leaves get 0. ``asset.tilesetVersion`` is set; the tiles' transforms,
  refinement (root REPLACE, deeper levels ADD, as py3dtiles' subsampling needs) and URIs stay.
- **Workers.** py3dtiles forks worker processes talking over ZeroMQ (one below `SMALL_CLOUD_POINTS`: each
  worker builds its own PROJ transformer, a second or two; else up to 4); no database connection is open
  while it runs. py3dtiles is imported only when a point cloud is tiled (its numba kernels compile at
  import, several seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj

from cim.crs import ECEF
from cim.settings import get_settings
from cim.store.assets import AssetRecord
from tilesets.asset_gltf import Y_UP_FROM_Z_UP, accessor_values, points_glb, read_glb
from tilesets.asset_layer import AssetLayer, AssetTileset, build_asset_layer, horizontal
from tilesets.layer_build import BuildOptions, TilesBuildError
from tilesets.tileset import BOX_MARGIN_M, aligned_box, box_corners, write_bytes, write_json

CONTENT_FORMAT = 1
LAS_Z_OFFSET_AT = 171  # LAS 1.0-1.4 public header: Z offset (double); Max Z and Min Z follow at 211 and 219
LAS_MAX_Z_AT = 211
CHUNK_POINTS = 2_000_000
SMALL_CLOUD_POINTS = 1_000_000  # below this one py3dtiles worker (each worker builds its own PROJ transformer)
FloatArray = npt.NDArray[np.float64]


_SAME_DATUM = ("China 2000", "World Geodetic System 1984")


def source_crs(asset: AssetRecord) -> pyproj.CRS:
    """The asset's horizontal CRS, checked to reach ECEF without guessing a datum shift: CGCS2000 and WGS84
    based CRSs pass (the null shift `cim.crs` allows), others need an operation PROJ knows."""
    try:
        plane = horizontal(pyproj.CRS.from_user_input(asset.crs))
    except pyproj.exceptions.CRSError as exc:
        raise TilesBuildError(f"{asset.name}: its CRS cannot be read ({exc})") from None
    datum = plane.datum.name if plane.datum is not None else ""
    if not datum.startswith(_SAME_DATUM):
        try:  # creating a PROJ transformer costs a second or two: only for datums that need the check
            pyproj.Transformer.from_crs(plane, ECEF, always_xy=True, allow_ballpark=False)
        except pyproj.exceptions.ProjError:
            raise TilesBuildError(
                f"{asset.name}: PROJ knows no datum transformation from {plane.name} ({datum}) to WGS84; "
                "refusing to assume they coincide"
            ) from None
    return plane


# --------------------------------------------------------------------------------------------------
# Input for py3dtiles: heights shifted by the datum offset


def shift_las_heights(path: Path, dz: float) -> None:
    """Add ``dz`` to every z of a LAS/LAZ file in place by moving its header's Z offset, max and min."""
    with path.open("r+b") as fh:
        head = fh.read(227)
        if len(head) < 227 or head[:4] != b"LASF":
            raise TilesBuildError(f"{path}: not a LAS/LAZ file")
        (z_offset,) = struct.unpack_from("<d", head, LAS_Z_OFFSET_AT)
        max_z, min_z = struct.unpack_from("<dd", head, LAS_MAX_Z_AT)
        fh.seek(LAS_Z_OFFSET_AT)
        fh.write(struct.pack("<d", z_offset + dz))
        fh.seek(LAS_MAX_Z_AT)
        fh.write(struct.pack("<dd", max_z + dz, min_z + dz))


def _xyz_chunks(path: Path) -> Iterator[FloatArray]:
    """x y z of an XYZ text file the ingest accepted: ``#`` comments, an optional header line, separator comma,
    semicolon or white space, three numbers first on every line."""
    import pandas as pd

    skip, sep = 0, r"\s+"
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.strip()
            if line and not line.startswith(b"#"):
                sep = "," if b"," in line else ";" if b";" in line else r"\s+"
                tokens = [t.strip() for t in (line.split(b",") if sep == "," else line.split(b";") if sep == ";"
                                              else line.split())]  # fmt: skip
                try:
                    [float(t) for t in tokens[:3]]
                    break
                except ValueError:
                    pass
            skip += 1
    reader = pd.read_csv(path, sep=sep, header=None, skiprows=skip, usecols=[0, 1, 2], dtype=np.float64,
                         comment="#", chunksize=CHUNK_POINTS, engine="c")  # fmt: skip
    for frame in reader:
        yield frame.to_numpy(dtype=np.float64)


def _ply_points(path: Path) -> tuple[FloatArray, npt.NDArray[np.uint8] | None]:
    import trimesh

    loaded: Any = trimesh.load(path, file_type="ply", process=False)
    xyz = np.asarray(loaded.vertices, dtype=np.float64)
    visual: Any = getattr(loaded, "visual", None)
    colors = None
    if getattr(visual, "kind", None) == "vertex":
        rgba = np.asarray(visual.vertex_colors)
        if rgba.shape == (len(xyz), 4):
            colors = rgba[:, :3].astype(np.uint8)
    return xyz, colors


def write_shifted_las(asset: AssetRecord, path: Path, dz: float) -> bool:
    """A LAS copy (millimetre scale) of a PLY or XYZ point cloud with ``dz`` added to z; True if it has RGB."""
    import laspy

    src = Path(asset.path)
    lo = np.asarray(asset.bounds_min, dtype=np.float64) + np.array([0.0, 0.0, dz])
    chunks: Iterator[tuple[FloatArray, npt.NDArray[np.uint8] | None]]
    if asset.format == "ply":
        xyz, colors = _ply_points(src)
        chunks = iter([(xyz, colors)])
    else:
        colors = None
        chunks = ((c, None) for c in _xyz_chunks(src))
    header = laspy.LasHeader(point_format=2 if colors is not None else 0, version="1.2")
    header.offsets = np.floor(lo)
    header.scales = np.array([0.001, 0.001, 0.001])
    with laspy.open(path, mode="w", header=header) as writer:
        for xyz, rgb in chunks:
            record = laspy.ScaleAwarePointRecord.zeros(len(xyz), header=header)
            record.x, record.y, record.z = xyz[:, 0], xyz[:, 1], xyz[:, 2] + dz
            if rgb is not None:
                record.red, record.green, record.blue = (rgb.astype(np.uint16) * 257).T
            writer.write_points(record)
    return colors is not None


def _las_has_rgb(path: Path) -> bool:
    import laspy

    with laspy.open(path) as reader:
        return "red" in reader.header.point_format.dimension_names


def _py3dtiles_convert(source: Path, out: Path, crs_in: pyproj.CRS, rgb: bool, points: int, where: str) -> None:
    from py3dtiles.constants import SpecVersion
    from py3dtiles.convert import convert

    jobs = 1 if points < SMALL_CLOUD_POINTS else max(1, min(os.cpu_count() or 1, 4))
    try:
        convert(
            [source],
            outfolder=out,
            overwrite=True,
            jobs=jobs,
            crs_in=crs_in,
            crs_out=pyproj.CRS(ECEF),
            force_crs_in=True,
            pyproj_always_xy=True,
            rgb=rgb,
            use_process_pool=False,
            verbose=0,
            spec_version=SpecVersion.V1_1,
        )
    except (Exception, SystemExit) as exc:  # py3dtiles raises its own kinds, or exits for unknown formats
        raise TilesBuildError(f"{where}: py3dtiles could not convert it ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------------------
# py3dtiles output → valid 3D Tiles 1.1


def _matrix(tile: dict[str, Any]) -> FloatArray:
    if "transform" not in tile:
        return np.eye(4)
    return np.asarray(tile["transform"], dtype=np.float64).reshape(4, 4, order="F")


Points = tuple[FloatArray, npt.NDArray[np.uint8] | None]


class _Rewrite:
    """Rewrites py3dtiles' tileset under ``src`` into ``dst`` (see the module docstring)."""

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.files: list[str] = []
        self.tiles = 0
        self.bytes = 0

    def read(self, uri: str) -> Points:
        """A content tile's positions in its tile's frame (z-up, as py3dtiles wrote them) and colours."""
        if not uri.endswith(".glb") or "/.." in f"/{uri}" or uri.startswith("/"):
            raise TilesBuildError(f"py3dtiles wrote unexpected content {uri!r}")
        doc, binary = read_glb((self.src / uri).read_bytes())
        prims = [p for m in doc.get("meshes", []) for p in m["primitives"]]
        positions, colors = [], []
        for prim in prims:
            attrs = prim["attributes"]
            positions.append(accessor_values(doc, binary, attrs["POSITION"]).astype(np.float64))
            if "COLOR_0" in attrs:
                colors.append(accessor_values(doc, binary, attrs["COLOR_0"])[:, :3].astype(np.uint8))
        xyz = np.concatenate(positions) if positions else np.zeros((0, 3))
        rgb = np.concatenate(colors) if colors and len(colors) == len(positions) else None
        return xyz, rgb

    def write(self, uri: str, points: Points) -> None:
        data = points_glb(points[0] @ Y_UP_FROM_Z_UP.T, points[1], generator="py3dtiles + cim-twin tilesets")
        path = self.dst / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
        self.files.append(uri)
        self.bytes += len(data)

    def preview(self, count: int, inverse: FloatArray, below: list[tuple[Points, FloatArray]]) -> Points:
        """The root's preview again: ``count`` points taken evenly from its children's content, moved into the
        root's frame in float64. (py3dtiles' merger goes through float32 absolute ECEF coordinates, which
        misplaces preview points by up to half a metre, and samples at random.)"""
        xyz = np.concatenate([(xyz @ (inverse @ w)[:3, :3].T + (inverse @ w)[:3, 3]) for (xyz, _), w in below])
        colours = [rgb for (_, rgb), _w in below]
        rgb = None if any(c is None for c in colours) else np.concatenate([c for c in colours if c is not None])
        pick = np.unique(np.linspace(0, len(xyz) - 1, num=min(count, len(xyz))).round().astype(np.int64))
        return xyz[pick], None if rgb is None else rgb[pick]

    def tile(
        self, tile: dict[str, Any], parent_world: FloatArray, parent_error: float, root: bool = False
    ) -> tuple[FloatArray, Points | None, FloatArray]:
        """Rewrite ``tile`` (and below) in place in the JSON; returns the world corners (8, 3) of its new box,
        its content points (tile frame) and its world matrix."""
        world = np.asarray(parent_world @ _matrix(tile), dtype=np.float64)
        inverse = np.asarray(np.linalg.inv(world), dtype=np.float64)
        self.tiles += 1
        children = tile.get("children", [])
        error = min(float(tile.get("geometricError", 0.0)), parent_error) if children else 0.0
        corners: list[FloatArray] = []
        below: list[tuple[Points, FloatArray]] = []
        for child in children:
            child_corners, child_points, child_world = self.tile(child, world, error)
            corners.append(child_corners @ inverse[:3, :3].T + inverse[:3, 3])
            if child_points is not None:
                below.append((child_points, child_world))
        points: Points | None = None
        if "content" in tile:
            uri = tile["content"]["uri"]
            points = self.read(uri)
            if root and Path(uri).name == "preview.glb" and below:
                points = self.preview(len(points[0]), inverse, below)
            self.write(uri, points)
            corners.append(points[0])
        local = np.concatenate(corners) if corners else np.zeros((0, 3))
        if len(local) == 0:
            raise TilesBuildError("py3dtiles wrote a tile without content or children")
        scale = abs(float(np.linalg.det(world[:3, :3]))) ** (1 / 3)
        box = aligned_box(local.min(axis=0), local.max(axis=0), margin=BOX_MARGIN_M / scale)
        tile["boundingVolume"] = {"box": box}
        tile["geometricError"] = error
        return np.asarray(box_corners(box) @ world[:3, :3].T + world[:3, 3], dtype=np.float64), points, world


def rewrite_tileset(src: Path, dst: Path, tileset_version: int) -> tuple[_Rewrite, FloatArray, float]:
    """Rewrite py3dtiles' output folder ``src`` into ``dst``: (what was written, world corners of the root
    box, tileset geometric error)."""
    doc = json.loads((src / "tileset.json").read_text(encoding="utf-8"))
    rewrite = _Rewrite(src, dst)
    root = doc["root"]
    top = float(doc.get("geometricError", root.get("geometricError", 0.0)))
    corners, _points, _world = rewrite.tile(
        root, np.eye(4), max(top, float(root.get("geometricError", 0.0))), root=True
    )
    error = max(top, float(root["geometricError"]))
    doc["asset"] = {
        "version": "1.1",
        "tilesetVersion": str(tileset_version),
        "generator": f"py3dtiles {package_version('py3dtiles')} (tiles rewritten by cim-twin tilesets)",
    }
    doc["geometricError"] = error
    write_json(dst / "tileset.json", doc)
    rewrite.files.append("tileset.json")
    return rewrite, corners, error


def tile_pointcloud(
    asset: AssetRecord, folder: Path, options: BuildOptions, tileset_version: int, progress: Callable[[str], None]
) -> AssetTileset:
    """Tile one catalogued point cloud into ``folder`` (see the module docstring)."""
    del options  # py3dtiles chooses its own octree node sizes
    source = Path(asset.path)
    if not source.is_file():
        raise TilesBuildError(f"{asset.name}: its file {source} is missing; ingest it again")
    plane = source_crs(asset)
    dz = get_settings().height_offset_m
    work = folder.parent / f".work-{asset.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        if asset.format in ("las", "laz"):
            if dz == 0.0:
                feed = source
            else:
                feed = work / source.name
                shutil.copyfile(source, feed)
                shift_las_heights(feed, dz)
            rgb = _las_has_rgb(feed)
        else:
            feed = work / f"{asset.name}.las"
            rgb = write_shifted_las(asset, feed, dz)
        progress(f"pointcloud: py3dtiles converting {asset.point_count or 0:,} points of {asset.name}")
        _py3dtiles_convert(feed, work / "tiles", plane.to_3d(), rgb, int(asset.point_count or 0), asset.name)
        rewrite, corners, error = rewrite_tileset(work / "tiles", folder, tileset_version)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return AssetTileset(
        files=rewrite.files,
        corners_ecef=corners.tolist(),
        geometric_error=error,
        tile_count=rewrite.tiles,
        bytes=rewrite.bytes,
        features=int(asset.point_count or 0),
        info={"crs": asset.crs, "height_offset_m": dz, "rgb": rgb},
    )


LAYER = AssetLayer(
    name="pointcloud",
    kind="pointcloud",
    tile_one=tile_pointcloud,
    content_format=CONTENT_FORMAT,
    attributes={"format": "3D Tiles 1.1 glb points (py3dtiles, rewritten): KHR_materials_unlit"},
)


build_pointcloud = partial(build_asset_layer, LAYER)
"""Build (or update) the point cloud layer: ``build_pointcloud(settings, out, incremental, options, progress)``."""
