"""The tile grid of every 2D tile endpoint: OGC WebMercatorQuad (EPSG:3857, 256 px tiles), from morecantile.

Decision recorded here: a tile address outside the grid or outside a layer's zoom levels (z above 24 or below
the layer's minimum zoom, x or y outside 0 … 2^z − 1) is **404** — the tile does not exist, as OGC API –
Tiles answers for a tile outside the tile matrix limits; a z/x/y that is not an integer is 400 (the
parameter is malformed).
"""

from __future__ import annotations

import morecantile

from api.errors import ApiError

TMS = morecantile.tms.get("WebMercatorQuad")
TMS_MAXZOOM = 24

Box = tuple[float, float, float, float]


def check_tile(z: int, x: int, y: int, minzoom: int = 0, maxzoom: int = TMS_MAXZOOM) -> None:
    """Raise 404 unless z/x/y is a tile of the grid within the zoom levels ``minzoom`` … ``maxzoom``."""
    if not (minzoom <= z <= maxzoom and 0 <= x < (1 << z) and 0 <= y < (1 << z)):
        side = (1 << z) - 1 if 0 <= z <= TMS_MAXZOOM else "2^z − 1"
        raise ApiError(
            404,
            "NotFound",
            f"tile {z}/{x}/{y} does not exist: zoom levels {minzoom}–{maxzoom}, x and y 0–{side}",
        )


def mercator_bounds(z: int, x: int, y: int) -> Box:
    """The tile's bounds in EPSG:3857 metres."""
    b = TMS.xy_bounds(morecantile.Tile(x, y, z))
    return (b.left, b.bottom, b.right, b.top)


def grow(box: Box, fraction: float) -> Box:
    """``box`` grown on every side by ``fraction`` of its width/height."""
    dx, dy = (box[2] - box[0]) * fraction, (box[3] - box[1]) * fraction
    return (box[0] - dx, box[1] - dy, box[2] + dx, box[3] + dy)


def intersection(a: Box, b: Box) -> Box | None:
    """The overlap of two boxes, or None when they do not touch."""
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] <= box[2] and box[1] <= box[3] else None


def search_box(z: int, x: int, y: int, extent: Box | None, buffer_fraction: float) -> Box | None:
    """Where to look for a tile's features (EPSG:3857): the tile grown by the clip buffer, cut to the layer's
    extent grown by 1 m (so a one-point layer still has an area); None when the tile misses the layer."""
    if extent is None:
        return None
    padded = (extent[0] - 1.0, extent[1] - 1.0, extent[2] + 1.0, extent[3] + 1.0)
    return intersection(grow(mercator_bounds(z, x, y), buffer_fraction), padded)


def center_zoom(lonlat: Box, minzoom: int, maxzoom: int) -> int:
    """A zoom at which the box fills about one 512-pixel view (for TileJSON ``center``)."""
    span = max(lonlat[2] - lonlat[0], 1e-9)
    z = 0
    while z < maxzoom and 360.0 / (1 << (z + 1)) * 2 >= span:
        z += 1
    return max(minzoom, min(z, maxzoom))
