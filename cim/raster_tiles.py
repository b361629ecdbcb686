"""Web map tiles (WebMercatorQuad, 256 px) of the registered rasters, read from their COGs by rio-tiler.

Decisions recorded here:
- **How a raster is drawn follows its kind.** An orthophoto (three or more bands) shows bands 1–3 as RGB:
  8-bit data as it is, other data types stretched per band between their 2nd and 98th percentiles. A DSM or
  DTM (one band of heights, usually float) is stretched between the 2nd and 98th percentiles of its heights
  and coloured (DSM ``viridis``, DTM ``terrain``); any other single band is stretched grey. ``rescale`` and
  ``colormap`` override the stretch and the colours.
- **One colour scale per raster**, not per tile: percentiles come from one read of at most 1024 px a side
  (the COG's overviews), computed once per raster version, so neighbouring tiles never show a seam.
- Nodata and masks become transparency (PNG and WEBP carry alpha). Pixels are resampled bilinearly.
- A tile that does not touch the raster is `RasterTileOutside` (the API answers 404: the tileset's bounds in
  TileJSON keep clients from asking).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from rio_tiler.colormap import cmap
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader

from cim.store.rasters import RasterRecord

TILE_SIZE = 256
FORMATS = {"png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
KIND_COLORMAPS = {"dsm": "viridis", "dtm": "terrain"}


class RasterTileOutside(LookupError):
    """The tile does not touch the raster."""


@dataclass(frozen=True)
class RasterStyle:
    """Bands to draw, the value range of each mapped to 0–255 (None: as stored), and a colormap name."""

    indexes: tuple[int, ...]
    rescale: tuple[tuple[float, float], ...] | None
    colormap: str | None


@dataclass(frozen=True)
class RasterInfo:
    """Longitude/latitude bounds (degrees) and the zoom levels where the raster has native detail."""

    bounds: tuple[float, float, float, float]
    minzoom: int
    maxzoom: int


def colormap_names() -> list[str]:
    return sorted(cmap.list())


def raster_info(record: RasterRecord) -> RasterInfo:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Reader(record.path) as src:
            w, s, e, n = src.get_geographic_bounds(src.tms.rasterio_geographic_crs)
            return RasterInfo((float(w), float(s), float(e), float(n)), int(src.minzoom), int(src.maxzoom))


def default_style(record: RasterRecord) -> RasterStyle:
    """How ``record`` is drawn when the request does not say (see the module docstring)."""
    if record.bands >= 3:
        indexes: tuple[int, ...] = (1, 2, 3)
        if record.dtype == "uint8":
            return RasterStyle(indexes, None, None)
        return RasterStyle(indexes, _percentiles(record, indexes), None)
    return RasterStyle((1,), _percentiles(record, (1,)), KIND_COLORMAPS.get(record.kind))


def _percentiles(record: RasterRecord, indexes: tuple[int, ...]) -> tuple[tuple[float, float], ...]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Reader(record.path) as src:
            stats = src.statistics(indexes=indexes, percentiles=[2, 98], max_size=1024)
    ranges = []
    for band in stats.values():
        extra = band.model_extra or {}
        lo, hi = float(extra.get("percentile_2", band.min)), float(extra.get("percentile_98", band.max))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            lo, hi = 0.0, 1.0
        if hi <= lo:
            hi = lo + 1.0
        ranges.append((lo, hi))
    return tuple(ranges)


def render_raster_tile(record: RasterRecord, z: int, x: int, y: int, style: RasterStyle, fmt: str) -> bytes:
    """The tile as PNG or WEBP bytes; raises RasterTileOutside when it does not touch the raster."""
    driver, _ = FORMATS[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Reader(record.path, options={"resampling_method": "bilinear", "reproject_method": "bilinear"}) as src:
            try:
                img = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=style.indexes)
            except TileOutsideBounds as exc:
                raise RasterTileOutside(str(exc)) from None
        if style.rescale is not None:
            ranges = style.rescale if len(style.rescale) == img.count else style.rescale[:1] * img.count
            img.rescale(in_range=ranges)
        colormap = cmap.get(style.colormap) if style.colormap and img.count == 1 else None
        return img.render(img_format=driver, colormap=colormap)
