"""The CRSs features are served in and queried with (OGC API – Features Part 2), and geometries that clients
send (bbox, CQL2 literals) brought into the storage CRS.

Decisions recorded here:
- **Offered CRSs**: CRS84 (the default), EPSG:4326, EPSG:4490 (CGCS2000), EPSG:4547 (CGCS2000 / GK CM 114E),
  EPSG:3857 and the storage CRS if it is another one.
- **Axis order follows each CRS's authority definition**, as Part 2 requires: CRS84 and EPSG:3857 are
  x/easting first; EPSG:4326 and EPSG:4490 are latitude first and EPSG:4547 northing first, so their output
  coordinates (and the ``bbox``/``filter`` coordinates given with ``bbox-crs``/``filter-crs``) are swapped.
  PostGIS itself is always x/y; the swap is ``ST_FlipCoordinates`` on output and a swap before PROJ on input.
- **Precision**: 7 decimals for degrees (≈1 cm), 3 for metres (1 mm).
- **Client geometries are transformed in Python** (pyproj, `cim.crs`), checked (finite, valid) and sent as
  storage-CRS WKB, so a point outside a projection's domain or a bow-tie polygon is a 400, not a PostGIS error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj
import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from cim.crs import CRSError, crs_id, crs_uri, parse_crs, transformer

CRS84_URI = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
OFFERED = ("OGC:CRS84", "EPSG:4326", "EPSG:4490", "EPSG:4547", "EPSG:3857")


class GeometryInputError(ValueError):
    """A geometry or bbox a client sent cannot be used (bad shape, outside the CRS's domain, invalid)."""


@dataclass(frozen=True)
class FeatureCrs:
    """A CRS as the API uses it: its URI, the PostGIS SRID, and whether its first axis is north."""

    uri: str
    srid: int
    lat_first: bool
    geographic: bool
    name: str

    @property
    def decimals(self) -> int:
        return 7 if self.geographic else 3


@lru_cache(maxsize=16)
def _feature_crs(name: str) -> FeatureCrs:
    crs = parse_crs(name)
    axes = crs.axis_info
    lat_first = bool(axes) and axes[0].direction.lower() == "north"
    srid = 4326 if name == "OGC:CRS84" else int(name.split(":")[1])
    return FeatureCrs(uri=crs_uri(name), srid=srid, lat_first=lat_first, geographic=crs.is_geographic, name=name)


def offered_crs(storage_srid: int) -> tuple[FeatureCrs, ...]:
    """The CRSs every collection is offered in, CRS84 first (the default)."""
    names = list(OFFERED)
    if f"EPSG:{storage_srid}" not in names:
        names.append(f"EPSG:{storage_srid}")
    return tuple(_feature_crs(n) for n in names)


def resolve_crs(text: str, storage_srid: int) -> FeatureCrs:
    """The offered CRS named by ``text`` (a URI, ``EPSG:n``, ``CRS84`` …). Raises CRSError otherwise."""
    name = crs_id(text)
    for crs in offered_crs(storage_srid):
        if crs.name == name:
            return crs
    offered = ", ".join(c.uri for c in offered_crs(storage_srid))
    raise CRSError(f"{text!r} is not offered; use one of {offered}")


_build_lock = threading.Lock()


@lru_cache(maxsize=16)
def _pipeline_to_storage(name: str, storage_srid: int) -> pyproj.Transformer:
    """The transformation `cim.crs` chooses (its datum rules), rebuilt from its PROJ pipeline text.

    pyproj gives every thread its own copy of a transformer and rebuilds a ``from_crs`` one from scratch in
    each new thread: PROJ's operation search takes about a second for CRS84, so each request thread would
    pay it. A pipeline transformer rebuilds in well under a millisecond."""
    with _build_lock:  # concurrent first requests wait for one search instead of each running it
        chosen = transformer(name, f"EPSG:{storage_srid}")
        return pyproj.Transformer.from_pipeline(chosen.definition)


def _to_storage_xy(crs: FeatureCrs, coords: npt.NDArray[np.float64], storage_srid: int) -> npt.NDArray[np.float64]:
    """(n, 2) coordinates in ``crs``'s axis order → storage-CRS x/y; raises if any point fails."""
    a, b = coords[:, 0], coords[:, 1]
    x, y = (b, a) if crs.lat_first else (a, b)
    if crs.geographic and (np.any(np.abs(x) > 180) or np.any(np.abs(y) > 90)):
        raise GeometryInputError(f"coordinates outside the range of {crs.uri} (axis order: {_axis_order(crs)})")
    if crs.srid == storage_srid:
        out = np.column_stack([x, y])
    else:
        sx, sy = _pipeline_to_storage(crs.name, storage_srid).transform(x, y)
        out = np.column_stack([sx, sy])
    if not np.all(np.isfinite(out)):
        raise GeometryInputError(f"coordinates cannot be transformed from {crs.uri}: outside its area of use")
    return out


def _axis_order(crs: FeatureCrs) -> str:
    if crs.geographic:
        return "lat, lon" if crs.lat_first else "lon, lat"
    return "northing, easting" if crs.lat_first else "easting, northing"


def bbox_to_storage_wkb(bbox: tuple[float, ...], crs: FeatureCrs, storage_srid: int) -> bytes:
    """A bbox (4 or 6 numbers in ``crs``'s axis order; heights are ignored) as a storage-CRS polygon (EWKB).

    The edges are densified before transforming, so the box stays the same area in a projected CRS."""
    if len(bbox) == 6:
        bbox = (bbox[0], bbox[1], bbox[3], bbox[4])
    a0, b0, a1, b1 = bbox
    if a0 > a1 or b0 > b1:
        raise GeometryInputError("the lower corner must come first (minimum values, then maximum values)")
    t = np.linspace(0.0, 1.0, 17)
    edge_a = np.concatenate([a0 + (a1 - a0) * t, np.full(17, a1), a1 - (a1 - a0) * t, np.full(17, a0)])
    edge_b = np.concatenate([np.full(17, b0), b0 + (b1 - b0) * t, np.full(17, b1), b1 - (b1 - b0) * t])
    xy = _to_storage_xy(crs, np.column_stack([edge_a, edge_b]), storage_srid)
    geom = shapely.Polygon(xy)
    if a0 == a1 or b0 == b1:  # a degenerate box (a line or a point) still selects what touches it
        geom = shapely.LineString(xy) if a0 != a1 or b0 != b1 else shapely.Point(xy[0])
    return _ewkb(geom, storage_srid)


def geojson_to_storage_wkb(geojson: dict[str, Any], crs: FeatureCrs, storage_srid: int) -> bytes:
    """A GeoJSON geometry in ``crs`` (its axis order) as storage-CRS EWKB; raises GeometryInputError."""
    try:
        geom = shape(geojson)
    except Exception as exc:  # shapely raises several types for malformed input
        raise GeometryInputError(f"malformed {geojson.get('type', 'geometry')}: {exc}") from None
    if geom.is_empty:
        raise GeometryInputError(f"empty {geom.geom_type}")
    geom = shapely.transform(geom, lambda xy: _to_storage_xy(crs, xy, storage_srid))
    if not geom.is_valid:
        raise GeometryInputError(f"invalid {geom.geom_type}: {shapely.is_valid_reason(geom)}")
    return _ewkb(geom, storage_srid)


def _ewkb(geom: BaseGeometry, srid: int) -> bytes:
    return bytes(shapely.to_wkb(shapely.set_srid(geom, srid), include_srid=True))


__all__ = [
    "CRS84_URI",
    "CRSError",
    "FeatureCrs",
    "GeometryInputError",
    "bbox_to_storage_wkb",
    "geojson_to_storage_wkb",
    "offered_crs",
    "resolve_crs",
]
