"""``cim heights from-dsm --dsm NAME --dtm NAME``: building heights measured on a digital surface model (DSM)
and a digital terrain model (DTM) from oblique photogrammetry.

Per building, height = a statistic of the normalised DSM (DSM − DTM, pixel by pixel) over the pixels whose
centres lie inside the footprint. Decisions recorded here:

- **Statistic: the 90th percentile** by default. Roof pixels of a photogrammetric DSM are mixed with pixels
  that are not the roof: edge pixels that fall on the ground or the facade (footprints are digitised a few
  decimetres off, and matching smears roof edges), matching noise and spikes, and rooftop structures
  (water tanks, stair and lift housings, antennas — common on Shenzhen roofs). The maximum follows the
  spikes and antennas; the median and mean are pulled down by edge pixels and under-measure stepped or
  pitched roofs. p90 sits on the main roof and ignores the top 10 % of outliers. ``--statistic`` takes
  ``pNN``, ``median``, ``mean`` or ``max``. Percentiles interpolate linearly (numpy's default method).
- **Coverage**: a building is measured only with at least `MIN_PIXELS` (8) valid pixels — fewer make the
  90th percentile the maximum of a handful of samples, i.e. whatever spike is there (8 pixels are 2 m² at
  0.5 m) — and with valid DSM and DTM values on at least `MIN_VALID_FRACTION` (half) of its footprint's
  pixels, so a footprint half in a nodata hole or off the raster's edge is not measured from its rim.
  Buildings outside either raster or below these thresholds are left untouched and counted.
- **Plausibility**: a measured height under `MIN_HEIGHT_M` (2 m) is not written (the building is probably
  gone, or the DSM predates it) and neither is one of 1000 m or more; both are counted as implausible.
- **Storeys are kept**: a DSM sees the roof, not the floors; storey counts come from surveys and house
  registers, and guessing them from height would overwrite better data.
- **Grids**: footprints (storage CRS) are transformed to the DSM's CRS in one vectorised PROJ call and
  rasterised onto the DSM's own grid (no resampling of the DSM). A DTM on another grid or CRS is warped onto
  the DSM's grid with bilinear resampling (GDAL, nodata-aware). Overlapping footprints give a shared pixel
  to the building whose code sorts last.
- **Vectorised**: the DSM is read in `CHUNK`×`CHUNK` windows (only those meeting a footprint), each
  rasterised once with building ids; the per-building statistic is one sort over (id, value) and split
  indices (`group_statistic`) — no Python loop over buildings or pixels.
- **One transaction**: heights are written with ``height_source = 'dsm'`` in one UPDATE; the history
  trigger keeps the previous version of every building whose height really changes. Heights are rounded to
  centimetres, so running twice on the same rasters changes nothing the second time.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window, from_bounds
from shapely.geometry import box

from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.rasters import RasterRecord, buildings_within, get_raster, set_building_heights
from ingest.errors import IngestError
from ingest.file_catalog import transformer_between
from ingest.progress import Progress, counter
from ingest.raster import raster_crs

DEFAULT_STATISTIC = "p90"
MIN_PIXELS = 8
MIN_VALID_FRACTION = 0.5
MIN_HEIGHT_M = 2.0
MAX_HEIGHT_M = 1000.0
CHUNK = 2048
_STATISTIC = re.compile(r"^p(100|[1-9][0-9]?)$")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class HeightsError(IngestError):
    """The rasters cannot be used to measure heights (unknown name, wrong kind, missing file, …)."""


@dataclass
class HeightsReport:
    """What ``heights_from_dsm`` measured and changed (nothing is written in a dry run)."""

    dsm: str
    dtm: str
    statistic: str
    min_pixels: int
    buildings: int = 0
    outside_rasters: int = 0
    too_few_pixels: int = 0
    implausible: int = 0
    measured: int = 0
    changed: int = 0
    pixels: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def untouched(self) -> int:
        return self.buildings - self.measured

    def summary(self) -> str:
        verb = "would change" if self.dry_run else "changed"
        return (
            f"heights from {self.dsm} - {self.dtm} ({self.statistic}): {self.measured} of {self.buildings} "
            f"buildings measured, {verb} {self.changed}; left untouched {self.untouched} "
            f"({self.outside_rasters} outside the rasters, {self.too_few_pixels} with too few valid pixels "
            f"(< {self.min_pixels} or < {MIN_VALID_FRACTION:.0%} of the footprint), {self.implausible} with an "
            f"implausible height (< {MIN_HEIGHT_M:g} m or >= {MAX_HEIGHT_M:g} m)); {self.pixels} pixels in "
            f"{self.seconds:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "untouched": self.untouched}


def parse_statistic(text: str) -> float | str:
    """A percentile in 0..100 for ``pNN``/``median``, or ``"mean"``/``"max"``; raises HeightsError."""
    value = text.strip().lower()
    if value == "median":
        return 50.0
    if value in ("mean", "max"):
        return value
    m = _STATISTIC.fullmatch(value)
    if not m:
        raise HeightsError(f"unknown statistic {text!r}; use pNN (e.g. p90), median, mean or max")
    return float(m.group(1))


def group_statistic(
    ids: IntArray, values: FloatArray, n_groups: int, statistic: float | str
) -> tuple[FloatArray, IntArray]:
    """Per group 0..n_groups-1: the statistic of ``values`` whose id is that group (NaN for an empty group),
    and the group sizes. One sort of all values; percentiles interpolate linearly like ``np.percentile``."""
    counts = np.bincount(ids, minlength=n_groups).astype(np.int64)
    result = np.full(n_groups, np.nan)
    has = counts > 0
    if statistic == "mean":
        sums = np.bincount(ids, weights=values, minlength=n_groups)
        result[has] = sums[has] / counts[has]
        return result, counts
    order = _group_value_order(ids, values)
    ordered = values[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    q = 100.0 if statistic == "max" else float(statistic)
    pos = starts[has] + (q / 100.0) * (counts[has] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, starts[has] + counts[has] - 1)
    frac = pos - lo
    result[has] = ordered[lo] + frac * (ordered[hi] - ordered[lo])
    return result, counts


def _group_value_order(ids: IntArray, values: FloatArray) -> IntArray:
    """The permutation sorting by group, then by value within a group.

    One float sort of the key ``id * span + (value - min)`` is ~10x faster than ``np.lexsort`` on millions of
    pixels; ``span`` is twice the value range, so rounding can never carry a value into the next group, and
    values closer than the key's precision (~1e-7 m for a million buildings) may swap, which moves a
    percentile by less than that. Should groups come out unordered anyway, lexsort decides."""
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    low = float(values.min())
    span = (float(values.max()) - low) * 2.0 + 1.0
    order = np.argsort(ids.astype(np.float64) * span + (values - low))
    if np.any(np.diff(ids[order]) < 0):
        order = np.lexsort((values, ids))
    return order.astype(np.int64, copy=False)


def _raster(conn: Any, name: str, kind: str, option: str) -> RasterRecord:
    record = get_raster(conn, name)
    if record is None:
        raise HeightsError(
            f"{option} {name}: no raster of that name in the catalogue (cim ingest raster … --kind {kind})"
        )
    if record.kind != kind:
        raise HeightsError(f"{option} {name}: is a {record.kind} raster, not a {kind}")
    if not Path(record.path).is_file():
        raise HeightsError(f"{option} {name}: its file {record.path} is missing")
    return record


def _heights(ds: Any, window: Window) -> npt.NDArray[np.float32]:
    """Band 1 in ``window`` as float32 with NaN where there is no data."""
    data = ds.read(1, window=window, out_dtype="float32", masked=True)
    return np.ma.filled(data, np.nan).astype(np.float32, copy=False)


def _to_raster_crs(geoms: npt.NDArray[Any], storage_srid: int, crs: pyproj.CRS, where: str) -> npt.NDArray[Any]:
    t = transformer_between(pyproj.CRS.from_epsg(storage_srid), crs, where)

    def move(xy: FloatArray) -> FloatArray:
        x, y = t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, move)


def _pixel_samples(
    dsm: Any, dtm: Any, geoms: npt.NDArray[Any], progress: Progress | None
) -> tuple[IntArray, FloatArray, IntArray]:
    """Building index and DSM − DTM of every valid pixel inside a footprint, and footprint pixel counts."""
    n = len(geoms)
    footprint_px = np.zeros(n, dtype=np.int64)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0), footprint_px
    full = Window(0, 0, dsm.width, dsm.height)
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    area = from_bounds(xmin, ymin, xmax, ymax, transform=dsm.transform).round_offsets(op="floor")
    area = area.round_lengths(op="ceil")
    try:
        area = area.intersection(full)
    except rasterio.errors.WindowError:
        return np.zeros(0, np.int64), np.zeros(0), footprint_px
    tree = shapely.STRtree(geoms)
    ids_parts: list[IntArray] = []
    value_parts: list[FloatArray] = []
    col0, row0 = int(area.col_off), int(area.row_off)
    cols, rows = int(area.width), int(area.height)
    chunks = [(r, c) for r in range(row0, row0 + rows, CHUNK) for c in range(col0, col0 + cols, CHUNK)]
    measured = counter(progress, "measuring heights on the DSM", len(chunks), "windows")
    for r, c in chunks:
        measured.advance()
        window = Window(c, r, min(CHUNK, col0 + cols - c), min(CHUNK, row0 + rows - r))
        transform = dsm.window_transform(window)
        hit = tree.query(box(*rasterio.windows.bounds(window, dsm.transform)))
        if hit.size == 0:
            continue
        labels = rasterize(
            zip(geoms[np.sort(hit)], np.sort(hit) + 1, strict=True),
            out_shape=(int(window.height), int(window.width)),
            transform=transform,
            fill=0,
            dtype="int32",
        )
        inside = labels > 0
        if not inside.any():
            continue
        footprint_px += np.bincount(labels[inside] - 1, minlength=n)
        normalised = _heights(dsm, window) - _heights(dtm, window)
        valid = inside & np.isfinite(normalised)
        ids_parts.append(labels[valid].astype(np.int64) - 1)
        value_parts.append(normalised[valid].astype(np.float64))
    measured.done()
    if not ids_parts:
        return np.zeros(0, np.int64), np.zeros(0), footprint_px
    return np.concatenate(ids_parts), np.concatenate(value_parts), footprint_px


def heights_from_dsm(
    dsm_name: str,
    dtm_name: str,
    *,
    statistic: str = DEFAULT_STATISTIC,
    min_pixels: int = MIN_PIXELS,
    dry_run: bool = False,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> HeightsReport:
    """Measure building heights on the catalogued rasters ``dsm_name`` and ``dtm_name`` and write them (one
    transaction); see the module docstring for the rules. Raises HeightsError with a one-line message."""
    settings = settings or get_settings()
    step = progress or (lambda _text: None)
    started = time.perf_counter()
    stat = parse_statistic(statistic)
    if min_pixels < 1:
        raise HeightsError(f"--min-pixels {min_pixels}: must be at least 1")
    if dsm_name == dtm_name:
        raise HeightsError(f"--dsm and --dtm both name {dsm_name}: heights need a surface and a terrain model")
    report = HeightsReport(dsm_name, dtm_name, statistic, min_pixels, dry_run=dry_run)
    with transaction(settings) as conn:
        dsm_rec = _raster(conn, dsm_name, "dsm", "--dsm")
        dtm_rec = _raster(conn, dtm_name, "dtm", "--dtm")
        covered = shapely.from_wkb(dsm_rec.footprint_wkb).intersection(shapely.from_wkb(dtm_rec.footprint_wkb))
        if covered.is_empty:
            raise HeightsError(f"--dsm {dsm_name} and --dtm {dtm_name} do not overlap")
        step("finding buildings on the rasters")
        found = buildings_within(conn, shapely.to_wkb(covered))
        report.buildings = found.total_buildings
        report.outside_rasters = found.total_buildings - len(found.codes)
        n = len(found.codes)
        with rasterio.open(dsm_rec.path) as dsm, rasterio.open(dtm_rec.path) as dtm_file:
            dsm_crs, _ = raster_crs(dsm, dsm_rec.path)
            same_grid = (
                dtm_file.crs == dsm.crs
                and dtm_file.transform == dsm.transform
                and (dtm_file.width, dtm_file.height) == (dsm.width, dsm.height)
            )
            dtm = (
                dtm_file
                if same_grid
                else WarpedVRT(
                    dtm_file,
                    crs=dsm.crs,
                    transform=dsm.transform,
                    width=dsm.width,
                    height=dsm.height,
                    resampling=Resampling.bilinear,
                    dtype="float32",
                    nodata=np.nan,
                )
            )
            try:
                geoms = _to_raster_crs(
                    shapely.from_wkb(np.asarray(found.footprints_wkb, dtype=object)),
                    settings.storage_srid,
                    dsm_crs,
                    f"--dsm {dsm_name}",
                )
                ids, values, footprint_px = _pixel_samples(dsm, dtm, geoms, progress)
            finally:
                if dtm is not dtm_file:
                    dtm.close()
        report.pixels = int(values.size)
        step("computing statistics")
        heights, valid_px = group_statistic(ids, values, n, stat)
        enough = (valid_px >= min_pixels) & (valid_px >= MIN_VALID_FRACTION * footprint_px) & (valid_px > 0)
        heights = np.round(heights, 2)
        plausible = enough & (heights >= MIN_HEIGHT_M) & (heights < MAX_HEIGHT_M)
        report.too_few_pixels = int(n - enough.sum())
        report.implausible = int((enough & ~plausible).sum())
        report.measured = int(plausible.sum())
        codes = [c for c, ok in zip(found.codes, plausible, strict=True) if ok]
        new_heights = [float(h) for h in heights[plausible]]
        if dry_run:
            old = np.asarray(found.heights_m)[plausible]
            sources = np.asarray(found.height_sources, dtype=object)[plausible]
            report.changed = int(np.sum((np.asarray(new_heights) != old) | (sources != "dsm")))
        else:
            step(f"writing {len(codes)} heights")
            report.changed = set_building_heights(conn, codes, new_heights, "dsm")
    report.seconds = time.perf_counter() - started
    return report
