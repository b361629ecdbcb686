"""OGC API – Features endpoints: ``/``, ``/conformance``, ``/collections[/{id}[/items[/{fid}]|/queryables]]``.

Thin handlers: parameters are parsed by `api.ogc_params`, features are written by PostGIS
(`cim.store.features`), documents and links come from `api.ogc_features`.

A page's GeoJSON text is read from the database as a stream and assembled without parsing; the database
connection goes back to the pool before the body is sent, so slow clients never hold connections. A page
stops early (fewer than ``limit`` features, with a ``next`` link, as Part 1 allows) once it passes
`PAGE_BYTES`, so a page of large geometries (BIM meshes) cannot exhaust memory.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
import psycopg.errors
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from psycopg_pool import ConnectionPool

from api import ogc_features as docs
from api import ogc_params as params
from api.deps import get_pool
from api.errors import WholeNumber, bad_parameter, not_found, single_valued
from api.ogc_schemas import errors, geojson_response, response
from cim.settings import get_settings
from cim.store.collections import COLLECTION_LIST, Collection
from cim.store.cql2_filter import FilterCompiler, FilterError, Params, parse_filter
from cim.store.feature_crs import (
    FeatureCrs,
    GeometryInputError,
    bbox_to_storage_wkb,
    geojson_to_storage_wkb,
    offered_crs,
)
from cim.store.features import (
    COUNT_EXACT_UP_TO,
    Extent,
    ItemsQuery,
    collection_extent,
    count_features,
    feature_by_id,
    stream_features,
)

router = APIRouter(tags=["OGC API – Features"], dependencies=[Depends(single_valued)])

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
PAGE_BYTES = 64 * 1024 * 1024
EXTENT_TTL_S = 60.0

# The ids as a schema-only enum: clients (and schemathesis) learn them; an unknown id stays a 404 (OGC API Part 1).
CollectionId = Annotated[
    str,
    Path(
        description="A collection id, as listed by /collections",
        examples=["buildings"],
        json_schema_extra={"enum": [c.id for c in COLLECTION_LIST]},
    ),
]
Format = Annotated[Literal["json"] | None, Query(description="Response format (JSON only)")]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _json(body: dict[str, Any], media_type: str = docs.JSON) -> JSONResponse:
    return JSONResponse(body, media_type=media_type)


def _srid() -> int:
    return get_settings().storage_srid


# ------------------------------------------------------------------------------------------------------
# Landing page, conformance, collections


@router.get(
    "/",
    summary="Landing page: links to the API definition, conformance and collections",
    operation_id="getLandingPage",
    response_class=JSONResponse,
    responses={200: response(docs.JSON, "LandingPage", "The landing page"), **errors(400)},
)
def landing(request: Request, f: Format = None) -> JSONResponse:
    params.check_known(request.query_params, {"f"})
    return _json(docs.landing_page(_base(request)))


@router.get(
    "/conformance",
    summary="The conformance classes this API implements",
    operation_id="getConformanceDeclaration",
    response_class=JSONResponse,
    responses={200: response(docs.JSON, "ConfClasses", "The conformance classes"), **errors(400)},
)
def conformance(request: Request, f: Format = None) -> JSONResponse:
    params.check_known(request.query_params, {"f"})
    return _json(docs.conformance(_base(request)))


_extents: dict[str, tuple[float, Extent]] = {}
_extents_lock = threading.Lock()


def _extent(pool: ConnectionPool, c: Collection) -> Extent:
    """A collection's extent, cached for `EXTENT_TTL_S` (an extent is a hint for clients, not a count)."""
    now = time.monotonic()
    with _extents_lock:
        hit = _extents.get(c.id)
    if hit and now - hit[0] < EXTENT_TTL_S:
        return hit[1]
    with pool.connection() as conn:
        extent = collection_extent(conn, c, _srid())
    with _extents_lock:
        _extents[c.id] = (now, extent)
    return extent


def _collection_doc(request: Request, pool: ConnectionPool, c: Collection) -> dict[str, Any]:
    crs_list = offered_crs(_srid())
    storage = next(x for x in crs_list if x.srid == _srid())
    return docs.collection_doc(_base(request), c, _extent(pool, c), crs_list, storage.uri)


@router.get(
    "/collections",
    summary="The feature collections: districts, streets, communities, grids, parcels, buildings, …",
    operation_id="getCollections",
    response_class=JSONResponse,
    responses={200: response(docs.JSON, "Collections", "The collections"), **errors(400, 503)},
)
def collections(request: Request, f: Format = None) -> JSONResponse:
    params.check_known(request.query_params, {"f"})
    pool = get_pool()
    body = [_collection_doc(request, pool, c) for c in COLLECTION_LIST]
    return _json(docs.collections_doc(_base(request), body, offered_crs(_srid())))


@router.get(
    "/collections/{collectionId}",
    summary="One collection: extent, CRSs, links to its items and queryables",
    operation_id="describeCollection",
    response_class=JSONResponse,
    responses={200: response(docs.JSON, "Collection", "The collection"), **errors(400, 404, 503)},
)
def collection(request: Request, collectionId: CollectionId, f: Format = None) -> JSONResponse:
    c = params.collection_or_404(collectionId)
    params.check_known(request.query_params, {"f"})
    return _json(_collection_doc(request, get_pool(), c))


@router.get(
    "/collections/{collectionId}/queryables",
    summary="The properties usable in filter, sortby and as query parameters (JSON Schema)",
    operation_id="getQueryables",
    response_class=JSONResponse,
    responses={200: response(docs.SCHEMA_JSON, "Queryables", "The queryables"), **errors(400, 404)},
)
def queryables(request: Request, collectionId: CollectionId, f: Format = None) -> JSONResponse:
    c = params.collection_or_404(collectionId)
    params.check_known(request.query_params, {"f"})
    return _json(docs.queryables_doc(_base(request), c), docs.SCHEMA_JSON)


# ------------------------------------------------------------------------------------------------------
# Items

_CRS_HELP = (
    "CRS of the output (Part 2): http://www.opengis.net/def/crs/OGC/1.3/CRS84 (default, lon/lat), "
    "http://www.opengis.net/def/crs/EPSG/0/4326 or …/4490 (lat/lon), …/4547 (northing/easting), …/3857; "
    "`EPSG:n` is accepted too. Coordinates follow the CRS's axis order."
)


@router.get(
    "/collections/{collectionId}/items",
    summary="Features of a collection, filtered and paged",
    description=(
        "GeoJSON features, ordered by `sortby` then by id, `limit` per page with `next`/`prev` links. "
        "Any queryable property (see /queryables) may also be given as a query parameter for equality, "
        "e.g. `?use=office`. `numberMatched` is exact up to 10,000 matches, then an estimate "
        "(`numberMatchedExact: false`)."
    ),
    operation_id="getFeatures",
    response_class=Response,
    responses={
        200: geojson_response("FeatureCollectionGeoJSON", "The features"),
        **errors(400, 404, 503),
    },
)
def items(
    request: Request,
    collectionId: CollectionId,
    bbox: Annotated[
        str | None,
        Query(
            description="minx,miny,maxx,maxy (or 6 numbers with heights, ignored) in `bbox-crs`, its axis order; "
            "features whose geometry intersects the box",
            examples=["113.93,22.50,113.94,22.51"],
        ),
    ] = None,
    bbox_crs: Annotated[str | None, Query(alias="bbox-crs", description="CRS of `bbox` (default CRS84)")] = None,
    crs: Annotated[str | None, Query(description=_CRS_HELP)] = None,
    datetime_: Annotated[
        str | None,
        Query(
            alias="datetime",
            description="An instant (RFC 3339; a date is midnight Asia/Shanghai) or an interval `start/end` "
            "with `..` for an open end. Buildings: the versions valid then; events: the cases open then.",
            examples=["2025-06-30T00:00:00+08:00"],
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Features per page (1–10,000)"), WholeNumber
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=2_000_000_000, description="Features to skip"), WholeNumber] = 0,
    properties: Annotated[str | None, Query(description="Comma-separated properties to return (empty: none)")] = None,
    sortby: Annotated[
        str | None, Query(description="Comma-separated sort keys, `-name` descending, `+name` ascending")
    ] = None,
    filter_: Annotated[
        str | None,
        Query(
            alias="filter",
            description="A CQL2 filter (Part 3) over the queryables, e.g. "
            "`height_m > 50 AND S_INTERSECTS(geometry, POINT(113.94 22.51))`",
        ),
    ] = None,
    filter_lang: Annotated[
        Literal["cql2-text", "cql2-json"] | None, Query(alias="filter-lang", description="Language of `filter`")
    ] = None,
    filter_crs: Annotated[
        str | None, Query(alias="filter-crs", description="CRS of geometries in `filter` (default CRS84)")
    ] = None,
    f: Annotated[Literal["geojson", "json"] | None, Query(description="geojson (default) or json")] = None,
) -> Response:
    c = params.collection_or_404(collectionId)
    equal = params.check_known(request.query_params, params.ITEMS_PARAMS, c)
    srid = _srid()
    out_crs = params.parse_crs("crs", crs, srid)
    bbox_ewkb = None
    if bbox is not None:
        values = params.parse_bbox(bbox)
        try:
            bbox_ewkb = bbox_to_storage_wkb(values, params.parse_crs("bbox-crs", bbox_crs, srid), srid)
        except GeometryInputError as exc:
            raise bad_parameter("bbox", str(exc)) from None
    elif bbox_crs is not None:
        params.parse_crs("bbox-crs", bbox_crs, srid)
    time_filter = params.parse_datetime(datetime_, c) if datetime_ is not None else None
    filter_sql, filter_values = _compile_filter(c, filter_, filter_lang, filter_crs, equal, srid)
    q = ItemsQuery(
        collection=c,
        crs=out_crs,
        storage_srid=srid,
        limit=limit,
        offset=offset,
        bbox_ewkb=bbox_ewkb,
        time=time_filter,
        filter_sql=filter_sql,
        filter_params=filter_values,
        properties=params.parse_properties(properties, c) if properties is not None else None,
        sortby=params.parse_sortby(sortby, c) if sortby else (),
    )
    return _items_page(request, q, media_type=docs.JSON if f == "json" else docs.GEOJSON)


def _compile_filter(
    c: Collection,
    text: str | None,
    lang: str | None,
    filter_crs: str | None,
    equal: dict[str, str],
    srid: int,
) -> tuple[sql.Composable | None, dict[str, Any]]:
    """SQL and parameters of ``filter`` AND the queryable query parameters (None when there is neither)."""
    fcrs: FeatureCrs = params.parse_crs("filter-crs", filter_crs, srid)
    if text is None and filter_crs is None and lang is None and not equal:
        return None, {}
    bound = Params("f")
    compiler = FilterCompiler(c, bound, lambda g: geojson_to_storage_wkb(g, fcrs, srid))
    parts: list[sql.Composable] = []
    for name, tree in params.equality_filter(equal, c):
        try:
            parts.append(compiler.compile(tree))
        except FilterError as exc:
            raise bad_parameter(name, str(exc)) from None
    if text is not None:
        try:
            parts.append(compiler.compile(parse_filter(text, lang or "cql2-text")))
        except (FilterError, GeometryInputError) as exc:
            raise bad_parameter("filter", str(exc)) from None
    if not parts:
        return None, {}
    return sql.SQL(" AND ").join(parts), bound.values


def _items_page(request: Request, q: ItemsQuery, media_type: str) -> Response:
    pool = get_pool()
    features: list[str] = []
    size = 0
    truncated = False
    with pool.connection() as conn:
        try:
            rows = stream_features(conn, q)
            try:
                for text in rows:
                    features.append(text)
                    size += len(text)
                    if size > PAGE_BYTES and len(features) < q.limit:
                        truncated = True
                        break
            finally:
                rows.close()  # ends the stream (psycopg cancels the rest) before the connection is used again
            matched, exact = _matched(conn, q, len(features), truncated)
        except (psycopg.errors.DataException, psycopg.errors.InternalError_) as exc:
            if q.filter_sql is None:
                raise
            raise bad_parameter("filter", f"cannot be evaluated: {str(exc).splitlines()[0]}") from None
    returned = len(features)
    more = truncated or (q.offset + returned < matched if exact else returned == q.limit)
    url = str(request.url.replace(query=""))
    links = docs.page_links(
        url.rstrip("?"),
        list(request.query_params.multi_items()),
        f"{_base(request)}/collections/{q.collection.id}",
        offset=q.offset,
        limit=q.limit,
        returned=returned,
        more=more,
        exact=exact,
    )
    body = docs.feature_collection(features, matched, exact, links, datetime.now(UTC))
    return Response(body, media_type=media_type, headers={"Content-Crs": f"<{q.crs.uri}>"})


def _matched(conn: psycopg.Connection, q: ItemsQuery, returned: int, truncated: bool) -> tuple[int, bool]:
    """numberMatched: known without counting when the page came back short of ``limit``."""
    if not truncated and returned < q.limit and (returned > 0 or q.offset == 0):
        return q.offset + returned, True
    return count_features(conn, q, COUNT_EXACT_UP_TO)


@router.get(
    "/collections/{collectionId}/items/{featureId}",
    summary="One feature by id",
    operation_id="getFeature",
    response_class=Response,
    responses={
        200: geojson_response("FeatureGeoJSON", "The feature"),
        **errors(400, 404, 503),
    },
)
def item(
    request: Request,
    collectionId: CollectionId,
    featureId: Annotated[str, Path(description="The feature's id (e.g. a building code)")],
    crs: Annotated[str | None, Query(description=_CRS_HELP)] = None,
    f: Annotated[Literal["geojson", "json"] | None, Query(description="geojson (default) or json")] = None,
) -> Response:
    c = params.collection_or_404(collectionId)
    params.check_known(request.query_params, {"crs", "f"})
    srid = _srid()
    out_crs = params.parse_crs("crs", crs, srid)
    fid = params.parse_fid(c, featureId)
    with get_pool().connection() as conn:
        text = feature_by_id(conn, c, fid, out_crs, srid)
    if text is None:
        raise not_found(f"feature {featureId!r} of {c.id}")
    base = _base(request)
    links = [
        {"href": str(request.url), "rel": "self", "type": docs.GEOJSON},
        {"href": f"{base}/collections/{c.id}", "rel": "collection", "type": docs.JSON},
    ]
    body = text[:-1] + ',"links":' + json.dumps(links, ensure_ascii=False) + "}"
    media = docs.JSON if f == "json" else docs.GEOJSON
    return Response(body.encode(), media_type=media, headers={"Content-Crs": f"<{out_crs.uri}>"})
