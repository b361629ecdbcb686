"""CIM answers no standard server gives in one call: what is on a parcel, everything about a building, a unit
of the block-data hierarchy with its figures, and what lies at a point.

Handlers are thin: validate the parameters, run one store statement, pass its JSON text through (PostgreSQL
built it, so nothing is parsed or re-serialised here). The response models document that JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from api.deps import get_pool
from api.errors import bad_parameter, not_found
from api.point_params import Lat, Lon, parcel_code, point_from_params, unit_or_building_code
from api.routers.answer_models import (
    ERROR_RESPONSES,
    FEATURE_COLLECTION_SCHEMA,
    GEOJSON_MEDIA_TYPE,
    BuildingProfile,
    LocateAnswer,
    ParcelContents,
    UnitSummary,
)
from cim.codes import LEVEL_LENGTHS
from cim.store.building_profile import building_profile_json
from cim.store.fragments import PointError
from cim.store.parcel_contents import parcel_contents_geojson, parcel_contents_json
from cim.store.point_chain import locate_point_json
from cim.store.unit_summary import UNIT_LEVELS, unit_summary_json

router = APIRouter(tags=["CIM answers"])

JSON = "application/json"
MAX_PAGE = 10_000


def _json(text: str, media_type: str = JSON) -> Response:
    return Response(content=text, media_type=media_type)


@router.get(
    "/parcels/{code}/contents",
    summary="What is on a parcel: buildings, FAR/coverage/height against its limits, pipes, devices, events",
    response_model=None,
    responses={
        200: {
            "model": ParcelContents,
            "description": "The contents (JSON), or with format=geojson the parcel and its features",
            "content": {GEOJSON_MEDIA_TYPE: {"schema": FEATURE_COLLECTION_SCHEMA}},
        },
        **ERROR_RESPONSES,
    },
)
def parcel_contents(
    code: Annotated[str, Path(description="Parcel code (宗地号), e.g. T107-0091")],
    format: Annotated[
        Literal["json", "geojson"],
        Query(description="json: the contents document; geojson: parcel + buildings + clipped pipes + devices"),
    ] = "json",
) -> Response:
    parcel_code(code)
    with get_pool().connection() as conn:
        text = parcel_contents_geojson(conn, code) if format == "geojson" else parcel_contents_json(conn, code)
    if text is None:
        raise not_found(f"parcel {code}")
    return _json(text, GEOJSON_MEDIA_TYPE if format == "geojson" else JSON)


@router.get(
    "/buildings/{code}",
    summary="A building: attributes, houses, BIM summary, devices, events and its parcel's compliance",
    response_model=None,
    responses={200: {"model": BuildingProfile}, **ERROR_RESPONSES},
)
def building(
    code: Annotated[str, Path(description="19-digit building code (楼栋编码)")],
    houses_limit: Annotated[int, Query(ge=0, le=MAX_PAGE, description="Houses listed per page")] = 100,
    houses_offset: Annotated[int, Query(ge=0, le=10_000_000, description="Houses skipped")] = 0,
) -> Response:
    unit_or_building_code(code, "building")
    with get_pool().connection() as conn:
        text = building_profile_json(conn, code, houses_limit, houses_offset)
    if text is None:
        raise not_found(f"building {code}")
    return _json(text)


@router.get(
    "/units/{code}",
    summary="A district, street, community or grid with its children and rolled-up figures",
    response_model=None,
    responses={200: {"model": UnitSummary}, **ERROR_RESPONSES},
)
def unit(
    code: Annotated[str, Path(description="Unit code: district 6, street 9, community 12 or grid 14 digits")],
    limit: Annotated[int, Query(ge=0, le=MAX_PAGE, description="A grid's buildings listed per page")] = 1000,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="A grid's buildings skipped")] = 0,
) -> Response:
    unit_or_building_code(code)
    if len(code) not in {LEVEL_LENGTHS[level] for level in UNIT_LEVELS}:
        raise bad_parameter(
            "code",
            f"{code} is a {'building' if len(code) == LEVEL_LENGTHS['building'] else 'house'} code, not a unit "
            "code (district 6, street 9, community 12, grid 14 digits); see /buildings/{code}",
        )
    with get_pool().connection() as conn:
        text = unit_summary_json(conn, code, limit, offset)
    if text is None:
        raise not_found(f"unit {code}")
    return _json(text)


@router.get(
    "/locate",
    summary="The chain district → street → community → grid → parcel → building at a point",
    response_model=None,
    responses={200: {"model": LocateAnswer}, **ERROR_RESPONSES},
)
def locate(
    lon: Lon | None = None,
    lat: Lat | None = None,
    x: Annotated[float | None, Query(allow_inf_nan=False, description="Easting/longitude in `crs`")] = None,
    y: Annotated[float | None, Query(allow_inf_nan=False, description="Northing/latitude in `crs`")] = None,
    crs: Annotated[
        str | None, Query(description="CRS of x/y: EPSG code, CRS84 or OGC URI (default: the storage CRS)")
    ] = None,
) -> Response:
    with get_pool().connection() as conn:
        point = point_from_params(conn, lon, lat, x, y, crs)
        try:
            text = locate_point_json(conn, point.x, point.y, point.srid)
        except PointError as exc:
            raise bad_parameter("lon" if lon is not None else "x", f"the point cannot be located: {exc}") from None
    return _json(text)
