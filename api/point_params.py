"""Parsing of the point and code parameters the CIM answers share, in one place.

A point is given as ``lon``/``lat`` (CRS84, degrees) or as ``x``/``y`` with ``crs`` (an EPSG code, CRS84, or
an OGC URI; default the storage CRS). Either way the handler gets (x, y, EPSG code) and the transformation
to the storage CRS happens in SQL. Every fault becomes a 400 naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import psycopg
from fastapi import Query

from api.errors import bad_parameter
from cim.codes import CodeError, validate, validate_parcel_code
from cim.crs import CRS84, CRSError, crs_id, storage_srid
from cim.store.point_chain import srid_known

WGS84_SRID = 4326
"""CRS84 is EPSG:4326 with longitude first, which is how PostGIS stores 4326 points anyway."""

Lon = Annotated[float, Query(ge=-180, le=180, description="Longitude, degrees (CRS84)")]
Lat = Annotated[float, Query(ge=-90, le=90, description="Latitude, degrees (CRS84)")]


@dataclass(frozen=True)
class RequestPoint:
    x: float
    y: float
    srid: int


def lonlat_point(lon: float, lat: float) -> RequestPoint:
    return RequestPoint(lon, lat, WGS84_SRID)


def point_from_params(
    conn: psycopg.Connection,
    lon: float | None,
    lat: float | None,
    x: float | None,
    y: float | None,
    crs: str | None,
) -> RequestPoint:
    """The point of a request that gives either lon/lat or x/y[/crs] (raises a 400 ApiError otherwise)."""
    if lon is not None or lat is not None:
        if x is not None or y is not None or crs is not None:
            raise bad_parameter("x", "give either lon/lat or x/y/crs, not both")
        if lon is None:
            raise bad_parameter("lon", "missing; lat needs lon")
        if lat is None:
            raise bad_parameter("lat", "missing; lon needs lat")
        return lonlat_point(lon, lat)
    if x is None and y is None:
        raise bad_parameter("lon", "missing; give lon and lat (CRS84) or x and y (with crs)")
    if x is None:
        raise bad_parameter("x", "missing; y needs x")
    if y is None:
        raise bad_parameter("y", "missing; x needs y")
    return RequestPoint(x, y, srid_of(conn, crs))


def srid_of(conn: psycopg.Connection, crs: str | None) -> int:
    """The EPSG code of the ``crs`` parameter (None: the storage CRS); 400 for unknown or unusable ones."""
    if crs is None:
        return storage_srid()
    try:
        name = crs_id(crs)
    except CRSError as exc:
        raise bad_parameter("crs", str(exc)) from None
    if name == CRS84:
        return WGS84_SRID
    authority, _, code = name.partition(":")
    if authority != "EPSG" or not code.isdigit() or int(code) > 2**31 - 1 or not srid_known(conn, int(code)):
        raise bad_parameter("crs", f"{crs!r} is not a 2D CRS this database knows; use CRS84 or an EPSG code")
    return int(code)


def unit_or_building_code(code: str, level: str | None = None, parameter: str = "code") -> str:
    """``code`` if it is a valid code of the deployment's city (of ``level`` when given), else a 400."""
    try:
        return validate(code, level)
    except CodeError as exc:
        raise bad_parameter(parameter, str(exc)) from None


def parcel_code(code: str) -> str:
    try:
        return validate_parcel_code(code)
    except CodeError as exc:
        raise bad_parameter("code", str(exc)) from None
