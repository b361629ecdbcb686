"""``cim ingest raster PATH --kind ortho|dsm|dtm``: oblique-photogrammetry rasters (true orthophotos, digital
surface and terrain models) as Cloud-Optimized GeoTIFFs under ``$CIM_HOME/rasters/<name>.tif``, registered
in the ``rasters`` catalogue.

Decisions recorded here:
- **Validation before writing**: the file opens with GDAL, declares a CRS, has a north-up geotransform with
  finite, non-zero pixel sizes (rotated or sheared rasters are refused: warp them first), 1 to
  `MAX_SIDE` pixels a side and at most `MAX_PIXELS` pixels (and, for a single file, no more than
  `MAX_CLAIM_RATIO` times its size in pixel bytes beyond 1 GiB: a "1 GB-claiming" damaged or sparse header
  is refused before anything expands it), and numeric bands of one data type. A DSM or
  DTM has exactly one band of integer or floating-point heights. Its extent must lie in the storage CRS's
  area of use (`ingest.file_catalog`).
- **CRS**: the raster keeps its own CRS (no resampling on ingest). GDAL's identification of the CRS
  (an authority code such as ``EPSG:32650``) is preferred to the file's WKT, because files often carry an
  ESRI-style WKT with an "unknown" datum that PROJ cannot transform, though GDAL recognises it.
- **COG**: GDAL's COG driver, 512×512 tiles, DEFLATE (the most widely readable TIFF codec) at level 1 with
  the predictor suited to the data type (2 for integers, 3 for floats) on 2 threads — level 1 writes in
  half the time of the default level 6 for files about 1 % larger on orthophotos and float DSMs, whose
  noise limits compression anyway — and overviews recomputed (never copied from the source, which may be
  stale) down to one tile, averaging (nodata-aware). Lossless, so heights measured later are the
  surveyed ones. The
  pixel data is read in full while the COG is written, so a file whose header is fine but whose tiles are
  corrupt fails here, with the catalogue and ``$CIM_HOME/rasters`` unchanged.
- **Damage first**: a few blocks (corners and a diagonal) are read before the extent is checked, so a damaged
  file is reported as damaged (also by ``--dry-run``) rather than as misplaced; the COG copy reads the rest.
- **Result check**: the written file must reopen as a tiled GeoTIFF with ``LAYOUT=COG``, the source's size,
  bands, data type, CRS and geotransform, and the overviews the size calls for.
- **Resolution** in the catalogue is the geometric mean of the pixel's sides, in units of the raster's CRS.
- **Replacing**: registering an existing name replaces file and row together (`file_catalog.swapped_in`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import rasterio.crs
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from shapely import to_wkb

from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.rasters import RasterRecord, upsert_raster
from ingest.errors import IngestError
from ingest.file_catalog import (
    catalogue_name,
    crs_label,
    new_folder,
    staging_path,
    storage_footprint,
    swapped_in,
)
from ingest.gdal_copy import copy_with_progress
from ingest.progress import Progress, counter

RASTER_KINDS = ("ortho", "dsm", "dtm")
HEIGHT_KINDS = ("dsm", "dtm")
MAX_SIDE = 1_000_000
MAX_PIXELS = 100_000_000_000  # 100 Gpx: a 100 km² oblique survey at 3 cm is ~1e11 pixels
BLOCK_SIZE = 512
MAX_CLAIM_RATIO = 1000  # DEFLATE cannot compress beyond ~1032:1
_NUMERIC_KINDS = ("u", "i", "f")


class RasterError(IngestError):
    """A raster file is unreadable, not georeferenced, or unsuitable for its kind; nothing was written."""


@dataclass
class RasterReport:
    """What ``ingest_raster`` found and did (``written`` is False for a dry run)."""

    name: str
    kind: str
    source: str
    path: str
    crs: str
    width: int
    height: int
    bands: int
    dtype: str
    nodata: float | None
    resolution: float
    footprint_bounds: tuple[float, float, float, float]
    overviews: list[int] = field(default_factory=list)
    replaced: bool = False
    written: bool = False

    def summary(self) -> str:
        crs = self.crs if len(self.crs) < 40 else self.crs[:37] + "…"
        action = ("replaced" if self.replaced else "registered") if self.written else "valid (dry run)"
        return (
            f"raster {self.name} ({self.kind}) {action}: {self.width}x{self.height} px, {self.bands} band(s) "
            f"{self.dtype}, nodata {self.nodata}, {self.resolution:g} units/px, {crs}"
            + (f", overviews {self.overviews}" if self.overviews else "")
            + (f" -> {self.path}" if self.written else "")
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.nodata is not None and not math.isfinite(self.nodata):
            data["nodata"] = str(self.nodata)  # strict JSON has no NaN
        return data


@dataclass(frozen=True)
class _Description:
    gdal_crs: rasterio.crs.CRS
    crs: pyproj.CRS
    crs_label: str
    width: int
    height: int
    bands: int
    dtype: str
    nodata: float | None
    transform: tuple[float, ...]
    bounds: tuple[float, float, float, float]
    resolution: float


def rasters_folder(settings: Settings) -> Path:
    return settings.home / "rasters"


def _first_line(exc: BaseException) -> str:
    """The first line of the most specific message: rasterio's "see previous exception" wraps GDAL's."""
    while exc.__cause__ is not None and "previous exception" in str(exc):
        exc = exc.__cause__
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def raster_crs(ds: rasterio.io.DatasetReader, where: str) -> tuple[pyproj.CRS, str]:
    """The raster's CRS as pyproj sees it (GDAL's authority code preferred) and its catalogue label."""
    if ds.crs is None:
        raise RasterError(f"{where}: declares no CRS (georeference it, e.g. gdal_edit.py -a_srs EPSG:4547)")
    crs: pyproj.CRS | None = None
    authority = ds.crs.to_authority()
    if authority is not None:
        try:
            crs = pyproj.CRS.from_user_input(f"{authority[0]}:{authority[1]}")
        except pyproj.exceptions.CRSError:
            crs = None
    if crs is None:
        try:
            crs = pyproj.CRS.from_wkt(ds.crs.to_wkt())
        except pyproj.exceptions.CRSError as exc:
            raise RasterError(f"{where}: its CRS cannot be read ({_first_line(exc)})") from None
    label, _ = crs_label(crs)
    return crs, label


def _describe(ds: rasterio.io.DatasetReader, kind: str, where: str) -> _Description:
    width, height, bands = int(ds.width), int(ds.height), int(ds.count)
    if bands < 1:
        raise RasterError(f"{where}: has no bands")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or width * height > MAX_PIXELS:
        raise RasterError(f"{where}: implausible size {width}x{height} pixels (header damaged?)")
    dtypes = set(ds.dtypes)
    if len(dtypes) != 1:
        raise RasterError(f"{where}: bands of different data types {sorted(dtypes)}")
    dtype = dtypes.pop()
    if np.dtype(dtype).kind not in _NUMERIC_KINDS:
        raise RasterError(f"{where}: data type {dtype} is not an integer or floating-point type")
    if kind in HEIGHT_KINDS and bands != 1:
        raise RasterError(f"{where}: a {kind.upper()} must have one band of heights, this has {bands}")
    t = ds.transform
    if ds.transform.is_identity:
        raise RasterError(f"{where}: has no geotransform (not georeferenced)")
    if not all(math.isfinite(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f)) or t.a == 0 or t.e == 0:
        raise RasterError(f"{where}: invalid geotransform {tuple(t)[:6]}")
    if t.b != 0 or t.d != 0:
        raise RasterError(f"{where}: rotated or sheared geotransform; warp it north-up first (gdalwarp)")
    crs, label = raster_crs(ds, where)
    left, bottom, right, top = ds.bounds
    bounds = (min(left, right), min(bottom, top), max(left, right), max(bottom, top))
    nodata = None if ds.nodata is None else float(ds.nodata)  # NaN is a common (and valid) nodata of DSMs
    return _Description(
        gdal_crs=ds.crs,
        crs=crs,
        crs_label=label,
        width=width,
        height=height,
        bands=bands,
        dtype=str(dtype),
        nodata=nodata,
        transform=tuple(t)[:6],
        bounds=bounds,
        resolution=math.sqrt(abs(t.a * t.e)),
    )


def _probe_pixels(ds: rasterio.io.DatasetReader, where: str, samples: int = 8) -> None:
    """Read a few blocks (the corners and a diagonal) so a damaged file is reported as damaged before any
    other complaint and even in a dry run; the COG copy later reads every block."""
    block_h, block_w = ds.block_shapes[0]
    rows, cols = -(-ds.height // block_h), -(-ds.width // block_w)
    picks = {(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1)}
    picks |= {(round(k * (rows - 1) / samples), round(k * (cols - 1) / samples)) for k in range(samples + 1)}
    try:
        for row, col in sorted(picks):
            window = Window(col * block_w, row * block_h, block_w, block_h).intersection(
                Window(0, 0, ds.width, ds.height)
            )
            ds.read(window=window)
    except Exception as exc:  # GDAL reports undecodable tiles as its own error classes
        raise RasterError(f"{where}: cannot read the pixel data ({_first_line(exc)})") from None


def _refuse_implausible_claim(path: Path, files: list[str], desc: _Description, where: str) -> None:
    """A single file whose header claims over 1 GiB of pixels at more than `MAX_CLAIM_RATIO` times its size
    is a damaged or sparse header: expanding it would fill the disk with made-up pixels."""
    if len(files) > 1:
        return  # side-car overviews or a VRT: the main file's size says nothing
    claimed = desc.width * desc.height * desc.bands * np.dtype(desc.dtype).itemsize
    size = max(path.stat().st_size, 1)
    if claimed > 2**30 and claimed > MAX_CLAIM_RATIO * size:
        raise RasterError(
            f"{where}: its header claims {claimed / 2**30:.1f} GiB of pixels in a {size / 2**20:.1f} MiB file "
            "(damaged or sparse header)"
        )


def expected_overviews(width: int, height: int, block: int = BLOCK_SIZE) -> int:
    """How many overview levels GDAL's COG driver makes: halve until the image fits in one tile."""
    levels = 0
    while max(width, height) > block:
        width, height = (width + 1) // 2, (height + 1) // 2
        levels += 1
    return levels


def _write_cog(
    source: Path, target: Path, desc: _Description, where: str, progress: Progress | None = None, label: str = ""
) -> None:
    """Write ``source`` as a COG at ``target`` (see the module docstring); ``progress`` counts the pixels
    GDAL reports done (overviews first, then the full resolution), under ``label``."""
    predictor = "3" if np.dtype(desc.dtype).kind == "f" else "2"
    options = {
        "COMPRESS": "DEFLATE",
        "LEVEL": "1",
        "NUM_THREADS": "2",
        "PREDICTOR": predictor,
        "BLOCKSIZE": str(BLOCK_SIZE),
        "OVERVIEWS": "IGNORE_EXISTING",
        "RESAMPLING": "AVERAGE",
        "BIGTIFF": "IF_SAFER",
    }
    pixels = desc.width * desc.height
    written = counter(progress, f"writing {label or target.name} (COG)", pixels, "pixels")
    done = [0]

    def on_fraction(fraction: float) -> None:
        now = round(fraction * pixels)
        if now > done[0]:
            written.advance(now - done[0])
            done[0] = now

    try:
        with rasterio.Env(GDAL_NUM_THREADS="2"):
            if not copy_with_progress(source, target, "COG", options, on_fraction):
                rasterio.shutil.copy(str(source), str(target), driver="COG", **options)
    except Exception as exc:  # GDAL reports corrupt tiles, full disks, … as its own error classes
        raise RasterError(f"{where}: cannot read the pixel data ({_first_line(exc)})") from None
    written.done()


def _check_cog(target: Path, desc: _Description, where: str) -> list[int]:
    """Reopen the written COG and compare it with the source description; returns the overview factors."""
    try:
        with rasterio.open(target) as out:
            layout = out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
            problems = []
            if out.driver != "GTiff" or layout != "COG":
                problems.append(f"layout {layout!r}")
            if (out.width, out.height, out.count) != (desc.width, desc.height, desc.bands):
                problems.append("size or band count")
            if set(out.dtypes) != {desc.dtype}:
                problems.append("data type")
            if any(shape != (BLOCK_SIZE, BLOCK_SIZE) for shape in out.block_shapes):
                problems.append(f"blocks {out.block_shapes}")
            if not np.allclose(tuple(out.transform)[:6], desc.transform, rtol=0, atol=1e-9):
                problems.append("geotransform")
            if out.crs != desc.gdal_crs:
                problems.append("CRS")
            overviews = out.overviews(1)
            if len(overviews) != expected_overviews(desc.width, desc.height):
                problems.append(f"overviews {overviews}")
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{where}: the written COG cannot be reopened ({_first_line(exc)})") from None
    if problems:
        raise RasterError(f"{where}: the written COG does not match the source: {', '.join(problems)}")
    return list(overviews)


def ingest_raster(
    path: Path,
    kind: str,
    name: str | None = None,
    *,
    dry_run: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> RasterReport:
    """Validate ``path``, write it as a COG under ``$CIM_HOME/rasters/<name>.tif`` and register it.

    Raises RasterError (or another IngestError) with a one-line message naming the file; then neither the
    catalogue nor ``$CIM_HOME/rasters`` changed. ``dry_run`` validates the header and extent only."""
    settings = settings or get_settings()
    step = progress or (lambda _text: None)
    where = str(path)
    if kind not in RASTER_KINDS:
        raise RasterError(f"{where}: unknown raster kind {kind!r}; use one of {', '.join(RASTER_KINDS)}")
    if not path.is_file():
        raise RasterError(f"{where}: no such file")
    name = catalogue_name(path, name)
    step(f"checking {path.name}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                desc = _describe(ds, kind, where)
                files = list(ds.files)
                _probe_pixels(ds, where)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"{where}: not a readable raster ({_first_line(exc)})") from None
    _refuse_implausible_claim(path, files, desc, where)
    footprint = storage_footprint(desc.bounds, desc.crs, settings.storage_srid, where)
    folder = rasters_folder(settings)
    final = folder / f"{name}.tif"
    report = RasterReport(
        name=name,
        kind=kind,
        source=where,
        path=str(final),
        crs=desc.crs_label,
        width=desc.width,
        height=desc.height,
        bands=desc.bands,
        dtype=desc.dtype,
        nodata=desc.nodata,
        resolution=desc.resolution,
        footprint_bounds=tuple(float(v) for v in footprint.bounds),  # type: ignore[arg-type]
    )
    if dry_run:
        return report
    with new_folder(folder):
        staged = staging_path(final)
        try:
            _write_cog(path, staged, desc, where, progress, final.name)
            report.overviews = _check_cog(staged, desc, where)
        except BaseException:
            staged.unlink(missing_ok=True)
            staged.with_name(staged.name + ".ovr.tmp").unlink(missing_ok=True)  # GDAL's overview scratch file
            raise
        record = RasterRecord(
            name=name,
            kind=kind,
            path=str(final),
            crs=desc.crs_label,
            bands=desc.bands,
            dtype=desc.dtype,
            nodata=desc.nodata,
            width=desc.width,
            height=desc.height,
            resolution=desc.resolution,
            footprint_wkb=to_wkb(footprint),
            attributes={
                "source_file": os.path.abspath(path),
                "transform": list(desc.transform),
                "bounds": list(desc.bounds),
                "block_size": BLOCK_SIZE,
                "overviews": report.overviews,
                "compression": "DEFLATE",
            },
        )
        step(f"registering {name}")
        with swapped_in(staged, final), transaction(settings) as conn:
            report.replaced = upsert_raster(conn, record)
    report.written = True
    return report
