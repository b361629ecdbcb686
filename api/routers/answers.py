"""CIM answers no standard server gives in one call: what is on a parcel, everything about a building, a unit
of the block-data hierarchy with its figures, and what lies at a point.

Handlers are thin: validate the parameters, run one store statement, pass its JSON text through (PostgreSQL
built it, so nothing is parsed or re-serialised here). The response models document that JSON.

The parcel, building and unit answers are cached in memory while the tables they read are unchanged, with a
strong ETag and 304 (`api.answer_cache`, which records the staleness bound). Cache hits, and parcel contents
misses, are mostly answered before routing (`api.answer_front`) through the ``cached_*`` functions and
`parcel_contents_body` here (same validation, same key).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.answer_cache import CACHE_CONTROL, AnswerState, answer_state
from api.deps import get_pool
from api.errors import WholeNumber, bad_parameter, not_found, single_valued
from api.http_cache import Body, body_response, make_gzip, wants_gzip_work
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
from cim.store.parcel_contents import parcel_contents_async
from cim.store.point_chain import locate_point_json
from cim.store.unit_summary import UNIT_LEVELS, unit_summary_json

router = APIRouter(tags=["CIM answers"], dependencies=[Depends(single_valued)])

JSON = "application/json"
MAX_PAGE = 10_000
MAX_OFFSET = 10_000_000
HOUSES_LIMIT = 100
UNIT_LIMIT = 1000
CACHED_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the client's copy (If-None-Match) is current"},
    **ERROR_RESPONSES,
}


def _json(text: str, media_type: str = JSON) -> Response:
    return Response(content=text, media_type=media_type)


async def _reply(request: Request, body: Body) -> Response:
    """The cached answer as a response: 304 when the client's copy is current, gzipped when accepted."""
    if wants_gzip_work(request, body):
        await run_in_threadpool(make_gzip, body)
    return body_response(request, body, CACHE_CONTROL)


def cached_parcel_contents(state: AnswerState, code: str, format: str) -> Body | None:
    """The cached answer of ``/parcels/{code}/contents`` (no I/O), or None: the router answers."""
    return state.cached("parcel", (format, code))


async def parcel_contents_body(code: str, format: str) -> Body | None:
    """The answer of ``/parcels/{code}/contents`` (cached, or rendered on the event loop); None: no such
    parcel. Raises `ApiError` for a malformed code. Also called by the cache front for misses."""
    parcel_code(code)
    geojson = format == "geojson"
    return await answer_state().answer_async(
        "parcel", (format, code), lambda conn: parcel_contents_async(conn, code, geojson),
        GEOJSON_MEDIA_TYPE if geojson else JSON,
    )  # fmt: skip


def cached_building(state: AnswerState, code: str, houses_limit: int, houses_offset: int) -> Body | None:
    return state.cached("building", (code, houses_limit, houses_offset))


def cached_unit(state: AnswerState, code: str, limit: int, offset: int) -> Body | None:
    return state.cached("unit", (code, limit, offset))


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
        **CACHED_RESPONSES,
    },
)
async def parcel_contents(
    request: Request,
    code: Annotated[str, Path(description="Parcel code (宗地号), e.g. T107-0091")],
    format: Annotated[
        Literal["json", "geojson"],
        Query(description="json: the contents document; geojson: parcel + buildings + clipped pipes + devices"),
    ] = "json",
) -> Response:
    body = await parcel_contents_body(code, format)
    if body is None:
        raise not_found(f"parcel {code}")
    return await _reply(request, body)


@router.get(
    "/buildings/{code}",
    summary="A building: attributes, houses, BIM summary, devices, events and its parcel's compliance",
    response_model=None,
    responses={200: {"model": BuildingProfile}, **CACHED_RESPONSES},
)
async def building(
    request: Request,
    code: Annotated[
        str, Path(description="19-digit building code (楼栋编码)", json_schema_extra={"pattern": r"^\d{19}$"})
    ],
    houses_limit: Annotated[
        int, Query(ge=0, le=MAX_PAGE, description="Houses listed per page"), WholeNumber
    ] = HOUSES_LIMIT,
    houses_offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Houses skipped"), WholeNumber] = 0,
) -> Response:
    unit_or_building_code(code, "building")
    body = await answer_state().answer(
        "building",
        (code, houses_limit, houses_offset),
        lambda conn: building_profile_json(conn, code, houses_limit, houses_offset),
        JSON,
    )
    if body is None:
        raise not_found(f"building {code}")
    return await _reply(request, body)


@router.get(
    "/units/{code}",
    summary="A district, street, community or grid with its children and rolled-up figures",
    response_model=None,
    responses={200: {"model": UnitSummary}, **CACHED_RESPONSES},
)
async def unit(
    request: Request,
    code: Annotated[
        str,
        Path(
            description="Unit code: district 6, street 9, community 12 or grid 14 digits",
            json_schema_extra={"pattern": r"^(\d{6}|\d{9}|\d{12}|\d{14})$"},
        ),
    ],
    limit: Annotated[
        int, Query(ge=0, le=MAX_PAGE, description="A grid's buildings listed per page"), WholeNumber
    ] = UNIT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="A grid's buildings skipped"), WholeNumber] = 0,
) -> Response:
    unit_or_building_code(code)
    if len(code) not in {LEVEL_LENGTHS[level] for level in UNIT_LEVELS}:
        raise bad_parameter(
            "code",
            f"{code} is a {'building' if len(code) == LEVEL_LENGTHS['building'] else 'house'} code, not a unit "
            "code (district 6, street 9, community 12, grid 14 digits); see /buildings/{code}",
        )
    body = await answer_state().answer(
        "unit", (code, limit, offset), lambda conn: unit_summary_json(conn, code, limit, offset), JSON
    )
    if body is None:
        raise not_found(f"unit {code}")
    return await _reply(request, body)


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
