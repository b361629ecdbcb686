"""Raster tiles of the registered COGs: ``GET /raster/{name}/{z}/{x}/{y}.png|webp`` and ``GET /raster/{name}.json``
(TileJSON 3.0.0), rendered by rio-tiler (`cim.raster_tiles`).

Decisions recorded here: a tile that does not touch the raster is **404** (not a transparent tile: TileJSON's
bounds tell clients where tiles are, and 404 costs no rendering); a tile over the raster's edge is partly
transparent. ``rescale=min,max`` and ``colormap=NAME`` (rio-tiler's colormaps, single-band rasters only)
override how the raster is drawn; tiles are cached per raster version and file identity.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError, WholeNumber, bad_parameter, not_found, single_valued
from api.http_cache import Body, body_response, json_body, max_age
from api.routers.tiles import ERROR_RESPONSES, Column, Row
from api.tile_grid import TMS_MAXZOOM, center_zoom, check_tile
from api.tile_state import TileState, tile_state
from cim.raster_tiles import (
    FORMATS,
    RasterStyle,
    RasterTileOutside,
    colormap_names,
    default_style,
    raster_info,
    render_raster_tile,
)
from cim.store.rasters import RasterRecord

router = APIRouter(tags=["tiles"], dependencies=[Depends(single_valued)])

_COLORMAPS = frozenset(colormap_names())

Name = Annotated[str, Path(description="Catalogue name of a raster registered by `cim ingest raster`")]
Rescale = Annotated[
    str | None, Query(description="Value range drawn as 0–255, `min,max` (default: 2nd–98th percentile)")
]
Colormap = Annotated[str | None, Query(description="rio-tiler colormap name for single-band rasters (default by kind)")]
Overrides = tuple[tuple[float, float] | None, str | None]


def _overrides(rescale: str | None, colormap: str | None) -> Overrides:
    rng: tuple[float, float] | None = None
    if rescale is not None:
        parts = rescale.split(",")
        try:
            lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            lo, hi = math.nan, math.nan
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise bad_parameter("rescale", "must be two finite numbers min,max with min < max, e.g. 0,120")
        rng = (lo, hi)
    if colormap is not None and colormap not in _COLORMAPS:
        raise bad_parameter("colormap", "unknown colormap; e.g. viridis, terrain, gray (rio-tiler's names)")
    return rng, colormap


async def _record(state: TileState, name: str) -> tuple[RasterRecord, int, tuple[int, int]]:
    version = (await state.current_versions()).get("rasters", 0)
    record = await state.raster_async(name, version)
    if record is None:
        raise not_found(f"raster {name!r}")
    try:
        st = os.stat(record.path)
    except OSError:
        raise not_found(f"the file of raster {name!r}") from None
    return record, version, (st.st_ino, st.st_mtime_ns)


def _style(state: TileState, record: RasterRecord, version: int, overrides: Overrides) -> RasterStyle:
    base = state.memo("raster-style", record.name, version, lambda: default_style(record))
    rescale, colormap = overrides
    if colormap is not None and len(base.indexes) != 1:
        raise bad_parameter("colormap", f"raster {record.name!r} has {record.bands} bands; colormaps need one")
    return RasterStyle(
        base.indexes,
        (rescale,) if rescale is not None else base.rescale,
        colormap if colormap is not None else base.colormap,
    )


def _render(state: TileState, record: RasterRecord, version: int, key: tuple, z: int, x: int, y: int, fmt: str,
            overrides: Overrides) -> Body:  # fmt: skip
    style = _style(state, record, version, overrides)
    try:
        data = render_raster_tile(record, z, x, y, style, fmt)
    except RasterTileOutside:
        raise not_found(f"tile {z}/{x}/{y} of raster {record.name!r} (outside its bounds)") from None
    body = Body(data, FORMATS[fmt][1], False)
    state.cache.put(key, body)
    return body


def _tile_key(name: str, version: int, ident: tuple[int, int], z: int, x: int, y: int, fmt: str,
              overrides: Overrides) -> tuple:  # fmt: skip
    return ("rasters", version, "raster", name, ident, z, x, y, fmt, overrides)


def cached_raster_tile(state: TileState, name: str, z: int, x: int, y: int, fmt: str, rescale: str | None,
                       colormap: str | None) -> Body | None:  # fmt: skip
    """The cached tile, without database I/O, when the versions are fresh and the raster's record and the tile
    are in memory; None otherwise (also for any invalid input: the full path answers that)."""
    versions = state.versions.fresh()
    if versions is None or fmt not in FORMATS or not (0 <= z <= TMS_MAXZOOM and 0 <= x < 1 << z and 0 <= y < 1 << z):
        return None
    version = versions.get("rasters", 0)
    known, record = state.peek_raster(name, version)
    if not known or record is None:
        return None
    try:
        overrides = _overrides(rescale, colormap)
        st = os.stat(record.path)
    except (ApiError, OSError):
        return None
    return state.cache.get(_tile_key(name, version, (st.st_ino, st.st_mtime_ns), z, x, y, fmt, overrides))


@router.get(
    "/raster/{name}/{z}/{x}/{y}.{fmt}",
    summary="A PNG or WEBP map tile of a registered raster (WebMercatorQuad, 256 px)",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "image/webp": {}}, "description": "The tile (transparent where no data)"},
        **ERROR_RESPONSES,
    },
)
async def raster_tile(
    request: Request,
    name: Name,
    z: Annotated[
        int, Path(description="Zoom level", json_schema_extra={"minimum": 0, "maximum": TMS_MAXZOOM}), WholeNumber
    ],
    x: Column,
    y: Row,
    fmt: Annotated[Literal["png", "webp"], Path(description="Image format")],
    rescale: Rescale = None,
    colormap: Colormap = None,
) -> Response:
    check_tile(z, x, y, 0, TMS_MAXZOOM)
    overrides = _overrides(rescale, colormap)
    state = tile_state()
    record, version, ident = await _record(state, name)
    key = _tile_key(name, version, ident, z, x, y, fmt, overrides)
    body = state.cache.get(key)
    if body is None:
        body = await state.render_once(key, lambda: _render(state, record, version, key, z, x, y, fmt, overrides))
    return body_response(request, body, max_age(state.settings.tile_max_age_s))


def _tilejson(state: TileState, record: RasterRecord, version: int, key: tuple, base: str, query: str,
              fmt: str, overrides: Overrides) -> Body:  # fmt: skip
    _style(state, record, version, overrides)  # refuse a colormap for a multi-band raster here too
    info = state.memo("raster-info", record.name, version, lambda: raster_info(record))
    w, s, e, n = info.bounds
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": record.name,
        "description": f"{record.kind} raster, {record.bands} band(s) of {record.dtype}, CRS {record.crs}",
        "version": f"1.0.{version}",
        "scheme": "xyz",
        "tiles": [f"{base}/raster/{record.name}/{{z}}/{{x}}/{{y}}.{fmt}{query}"],
        "minzoom": info.minzoom,
        "maxzoom": info.maxzoom,
        "bounds": [w, s, e, n],
        "center": [(w + e) / 2, (s + n) / 2, center_zoom(info.bounds, info.minzoom, info.maxzoom)],
    }
    body = json_body(doc)
    state.cache.put(key, body)
    return body


@router.get(
    "/raster/{name}.json",
    summary="TileJSON 3.0.0 of a registered raster's map tiles",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "TileJSON 3.0.0"}, **ERROR_RESPONSES},
)
async def raster_tilejson(
    request: Request,
    name: Name,
    rescale: Rescale = None,
    colormap: Colormap = None,
    tile_format: Annotated[Literal["png", "webp"], Query(description="Image format of the tile URLs")] = "png",
) -> Response:
    overrides = _overrides(rescale, colormap)
    state = tile_state()
    record, version, ident = await _record(state, name)
    base = str(request.base_url).rstrip("/")
    rng, cmap_name = overrides
    params = [f"rescale={rng[0]!r},{rng[1]!r}" if rng else "", f"colormap={cmap_name}" if cmap_name else ""]
    query = "&".join(p for p in params if p)
    query = f"?{query}" if query else ""
    key = ("rasters", version, "tilejson", name, ident, base, query, tile_format)
    body = state.cache.get(key)
    if body is None:
        body = await run_in_threadpool(_tilejson, state, record, version, key, base, query, tile_format, overrides)
    return body_response(request, body, max_age(state.settings.tile_max_age_s))
