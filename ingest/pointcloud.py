"""``cim ingest pointcloud PATH [--crs EPSG:x] [--name NAME]``: register a point cloud from laser scanning or
photogrammetric dense matching (LAS/LAZ, PLY, XYZ text) in the ``assets`` catalogue for the 3D Tiles step.

Decisions recorded here:
- **Formats** by extension: ``.las``/``.laz`` (laspy, LAZ via lazrs), ``.ply`` (ASCII or binary, vertices
  only are used; trimesh), ``.xyz``/``.txt``/``.csv`` (text, one point a line, X Y Z first, separated by
  spaces, tabs, commas or semicolons; an optional header line and ``#`` comments; more columns are kept in
  the file but not read).
- **CRS**: ``--crs`` states the CRS of the coordinates and overrides the file's own. A LAS/LAZ file with a
  WKT or GeoTIFF-keys CRS VLR needs none. PLY and XYZ carry no CRS, so they need ``--crs``; a file with no
  CRS and no ``--crs`` is refused. For a compound CRS (horizontal + vertical) the horizontal part places the
  footprint; the catalogue keeps the whole CRS.
- **Validation**: the file reads to its end (LAS/LAZ and XYZ in chunks of `CHUNK_POINTS`, so a
  1-billion-point file needs no more memory than a chunk; PLY is read whole by trimesh, so very large
  clouds should come as LAZ), has at least one point, every coordinate is finite, a LAS file holds
  the number of points its header claims, the footprint lies in the storage CRS's area of use, and
  coordinates that look like degrees are refused in a projected CRS.
- **Bounds** are the 3D min/max of the coordinates in the file's CRS (computed with numpy, not trusted from
  the header); the footprint is their horizontal box in the storage CRS.
- **Files**: the file is copied unchanged into ``$CIM_HOME/assets/<name>/`` (hashed while copying) and
  swapped in with the catalogue row in one step (``ingest.file_catalog``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import laspy
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyproj
import trimesh
from shapely import to_wkb

from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.assets import AssetRecord, upsert_asset
from ingest.errors import IngestError
from ingest.file_catalog import (
    CatalogueError,
    catalogue_name,
    crs_label,
    new_folder,
    refuse_degrees_in_projected,
    stage_folder,
    storage_footprint,
    swapped_in,
    user_crs,
)

POINTCLOUD_FORMATS = {".las": "las", ".laz": "laz", ".ply": "ply", ".xyz": "xyz", ".txt": "xyz", ".csv": "xyz"}
CHUNK_POINTS = 2_000_000
FloatArray = npt.NDArray[np.float64]


class PointCloudError(IngestError):
    """A point cloud is unreadable, empty, has non-finite coordinates or no CRS; nothing was written."""


@dataclass
class AssetReport:
    """What an asset ingest found and did (``written`` is False for a dry run); shared with meshes."""

    name: str
    kind: str
    format: str
    source: str
    path: str
    crs: str
    bounds_min: tuple[float, float, float]
    bounds_max: tuple[float, float, float]
    footprint_bounds: tuple[float, float, float, float]
    point_count: int | None = None
    vertex_count: int | None = None
    triangle_count: int | None = None
    origin: tuple[float, float, float] | None = None
    files: list[str] = field(default_factory=list)
    replaced: bool = False
    written: bool = False

    def summary(self) -> str:
        action = ("replaced" if self.replaced else "registered") if self.written else "valid (dry run)"
        counts = (
            f"{self.point_count} points"
            if self.point_count is not None
            else f"{self.vertex_count} vertices, {self.triangle_count} triangles"
        )
        lo = ", ".join(f"{v:.3f}" for v in self.bounds_min)
        hi = ", ".join(f"{v:.3f}" for v in self.bounds_max)
        crs = self.crs if len(self.crs) < 40 else self.crs[:37] + "…"
        return f"{self.kind} {self.name} ({self.format}) {action}: {counts}, bounds ({lo}) .. ({hi}) in {crs}" + (
            f" -> {self.path}" if self.written else ""
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def assets_folder(settings: Settings) -> Path:
    return settings.home / "assets"


def horizontal(crs: pyproj.CRS) -> pyproj.CRS:
    """The horizontal part of a compound CRS (the CRS itself otherwise)."""
    if crs.is_compound and crs.sub_crs_list:
        return crs.sub_crs_list[0]
    return crs


class Extent:
    """Running 3D min/max over chunks of points, refusing non-finite coordinates."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.count = 0
        self.lo = np.full(3, np.inf)
        self.hi = np.full(3, -np.inf)

    def add(self, xyz: FloatArray, first_row: int | None = None) -> None:
        if xyz.size == 0:
            return
        finite = np.isfinite(xyz).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            at = f"line {first_row + bad}" if first_row is not None else f"point {self.count + bad}"
            raise PointCloudError(f"{self.where}: {at}: non-finite coordinate {tuple(xyz[bad].tolist())}")
        self.lo = np.minimum(self.lo, xyz.min(axis=0))
        self.hi = np.maximum(self.hi, xyz.max(axis=0))
        self.count += len(xyz)

    def bounds(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        if self.count == 0:
            raise PointCloudError(f"{self.where}: holds no points")
        lo, hi = self.lo.tolist(), self.hi.tolist()
        return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _read_las(path: Path, where: str, extent: Extent) -> tuple[pyproj.CRS | None, dict[str, Any]]:
    try:
        with laspy.open(path) as reader:
            header = reader.header
            try:
                crs = header.parse_crs()
            except Exception as exc:
                raise PointCloudError(f"{where}: its CRS VLR cannot be read ({_first_line(exc)}); pass --crs") from None
            claimed = int(header.point_count)
            for chunk in reader.chunk_iterator(CHUNK_POINTS):
                extent.add(np.column_stack([np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)]))
            info = {
                "las_version": str(header.version),
                "point_format": int(header.point_format.id),
                "dimensions": list(header.point_format.dimension_names),
                "scales": [float(v) for v in header.scales],
                "offsets": [float(v) for v in header.offsets],
            }
    except PointCloudError:
        raise
    except Exception as exc:  # laspy/lazrs raise many kinds for damaged files
        raise PointCloudError(f"{where}: not a readable LAS/LAZ file ({_first_line(exc)})") from None
    if extent.count != claimed:
        raise PointCloudError(f"{where}: the header claims {claimed} points but the file holds {extent.count}")
    return crs, info


def _read_ply(path: Path, where: str, extent: Extent) -> dict[str, Any]:
    try:
        loaded = trimesh.load(path, file_type="ply", process=False)
    except Exception as exc:
        raise PointCloudError(f"{where}: not a readable PLY file ({_first_line(exc)})") from None
    if not isinstance(loaded, trimesh.PointCloud | trimesh.Trimesh):
        raise PointCloudError(f"{where}: not a PLY point cloud (read as {type(loaded).__name__})")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise PointCloudError(f"{where}: its vertices are not x, y, z")
    extent.add(vertices)
    return {"has_faces": isinstance(loaded, trimesh.Trimesh) and len(loaded.faces) > 0}


_NUMBER = re.compile(rb"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _xyz_layout(path: Path, where: str) -> tuple[str, int]:
    """Separator regex and number of lines to skip (comments and a header) of an XYZ text file."""
    skip = 0
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.strip()
            if not line or line.startswith(b"#"):
                skip += 1
                continue
            sep = rb"," if b"," in line else rb";" if b";" in line else None
            tokens = line.split(sep) if sep else line.split()
            if len(tokens) < 3:
                raise PointCloudError(
                    f"{where}: line {skip + 1}: needs at least 3 columns (x y z), found {len(tokens)}"
                )
            if not all(_NUMBER.match(t.strip()) for t in tokens[:3]):
                skip += 1  # a header line: the next line decides the separator
                continue
            return ("," if sep == b"," else ";" if sep == b";" else r"\s+"), skip
    raise PointCloudError(f"{where}: holds no points")


def _xyz_chunks(path: Path, where: str) -> Iterator[tuple[int, FloatArray]]:
    """(line number of the first row, x y z array) per chunk of an XYZ text file."""
    sep, skip = _xyz_layout(path, where)
    first = skip + 1
    try:
        reader = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=skip,
            usecols=[0, 1, 2],
            dtype=np.float64,
            comment="#",
            chunksize=CHUNK_POINTS,
            engine="c",
        )
        for frame in reader:
            numbers = frame.to_numpy(dtype=np.float64)
            missing = np.isnan(numbers).any(axis=1)  # a short line or a literal NaN
            if missing.any():
                k = int(np.argmax(missing))
                raise PointCloudError(f"{where}: line {first + k}: x y z are not three numbers {numbers[k].tolist()}")
            yield first, numbers
            first += len(frame)
    except PointCloudError:
        raise
    except Exception as exc:  # pandas names the value it could not convert
        raise PointCloudError(f"{where}: not a readable XYZ text file ({_first_line(exc)})") from None


def ingest_pointcloud(
    path: Path,
    crs: str | None = None,
    name: str | None = None,
    *,
    dry_run: bool = False,
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
) -> AssetReport:
    """Validate the point cloud ``path``, copy it to ``$CIM_HOME/assets/<name>/`` and register it.

    Raises PointCloudError (or another IngestError) with a one-line message naming the file; then neither the
    catalogue nor ``$CIM_HOME/assets`` changed."""
    settings = settings or get_settings()
    step = progress or (lambda _text: None)
    where = str(path)
    fmt = POINTCLOUD_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PointCloudError(f"{where}: unsupported point cloud format {path.suffix!r} (use LAS, LAZ, PLY or XYZ)")
    if not path.is_file():
        raise PointCloudError(f"{where}: no such file")
    if path.stat().st_size == 0:
        raise PointCloudError(f"{where}: is empty")
    name = catalogue_name(path, name)
    given = user_crs(crs, where) if crs is not None else None
    step(f"reading {path.name}")
    extent = Extent(where)
    file_crs: pyproj.CRS | None = None
    if fmt in ("las", "laz"):
        file_crs, info = _read_las(path, where, extent)
    elif fmt == "ply":
        info = _read_ply(path, where, extent)
    else:
        for first, chunk in _xyz_chunks(path, where):
            extent.add(chunk, first_row=first)
        info = {}
    lo, hi = extent.bounds()
    source_crs = given or file_crs
    if source_crs is None:
        raise CatalogueError(f"{where}: the file declares no CRS; pass --crs (e.g. --crs EPSG:4547)")
    plane = horizontal(source_crs)
    refuse_degrees_in_projected((lo[0], lo[1], hi[0], hi[1]), plane, where)
    footprint = storage_footprint((lo[0], lo[1], hi[0], hi[1]), plane, settings.storage_srid, where)
    label, srid = crs_label(source_crs)
    folder = assets_folder(settings) / name
    report = AssetReport(
        name=name,
        kind="pointcloud",
        format=fmt,
        source=where,
        path=str(folder / path.name),
        crs=label,
        bounds_min=lo,
        bounds_max=hi,
        footprint_bounds=tuple(float(v) for v in footprint.bounds),  # type: ignore[arg-type]
        point_count=extent.count,
        files=[path.name],
    )
    if dry_run:
        return report
    with new_folder(assets_folder(settings)):
        step(f"copying {path.name}")
        staged, hashes = stage_folder(folder, [(path, path.name)])
        record = AssetRecord(
            name=name,
            kind="pointcloud",
            format=fmt,
            path=report.path,
            files=report.files,
            crs=label,
            srid=srid,
            bounds_min=lo,
            bounds_max=hi,
            footprint_wkb=to_wkb(footprint),
            size_bytes=path.stat().st_size,
            sha256=hashes[path.name],
            point_count=extent.count,
            attributes={"source_file": str(path.resolve()), "crs_from": "--crs" if given else "file", **info},
        )
        with swapped_in(staged, folder), transaction(settings) as conn:
            report.replaced = upsert_asset(conn, record)
    report.written = True
    return report
