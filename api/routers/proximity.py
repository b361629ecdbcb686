"""``GET /nearest`` (KNN on the GiST index) and ``GET /within`` (ST_DWithin) around a CRS84 point, for the
collections in ``cim.store.proximity.PROXIMITY_COLLECTIONS``. Distances are metres in the storage CRS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.deps import get_pool
from api.errors import WholeNumber, bad_parameter, single_valued
from api.point_params import Lat, Lon
from api.routers.answer_models import ERROR_RESPONSES, GEOJSON_MEDIA_TYPE, GeoJSONResponse, ProximityCollection
from cim.store.fragments import PointError
from cim.store.proximity import PROXIMITY_COLLECTIONS, nearest_geojson, within_geojson

router = APIRouter(tags=["CIM answers"], dependencies=[Depends(single_valued)])

Collection = Annotated[
    Literal["buildings", "devices", "pipe_nodes", "pois", "events", "parcels"],
    Query(description="The collection searched (the keys of cim.store.proximity.PROXIMITY_COLLECTIONS)"),
]
Kind = Annotated[
    str | None,
    Query(
        pattern=r"^[a-z][a-z0-9_]{1,39}$",
        description="Only features of this kind (devices, pois, pipe_nodes), e.g. charging_pile",
    ),
]
MAX_K = 1000
MAX_RADIUS_M = 50_000.0
MAX_WITHIN = 10_000

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ProximityCollection, "description": "Features, nearest first"},
    400: ERROR_RESPONSES[400],
    503: ERROR_RESPONSES[503],
}


def _check_kind(collection: str, kind: str | None) -> None:
    if kind is not None and PROXIMITY_COLLECTIONS[collection].kind is None:
        with_kinds = ", ".join(n for n, c in PROXIMITY_COLLECTIONS.items() if c.kind)
        raise bad_parameter("kind", f"collection {collection} has no kinds; kind applies to {with_kinds}")


def _search(collection: str, kind: str | None, query: Callable[[psycopg.Connection], str]) -> Response:
    """Run a proximity query for ``collection`` (kind checked first) and answer its GeoJSON text as is."""
    _check_kind(collection, kind)
    with get_pool().connection() as conn:
        try:
            return Response(content=query(conn), media_type=GEOJSON_MEDIA_TYPE)
        except PointError as exc:
            raise bad_parameter("lon", f"the point cannot be used: {exc}") from None


@router.get(
    "/nearest",
    summary="The k features of a collection nearest to a point (KNN index), with distances in metres",
    response_model=None,
    response_class=GeoJSONResponse,
    responses=_RESPONSES,
)
def nearest(
    collection: Collection,
    lon: Lon,
    lat: Lat,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many features"), WholeNumber] = 10,
    kind: Kind = None,
) -> Response:
    name = str(collection)
    return _search(name, kind, lambda conn: nearest_geojson(conn, name, lon, lat, 4326, k, kind))


@router.get(
    "/within",
    summary="Features of a collection within a radius of a point, nearest first",
    response_model=None,
    response_class=GeoJSONResponse,
    responses=_RESPONSES,
)
def within(
    collection: Collection,
    lon: Lon,
    lat: Lat,
    radius_m: Annotated[float, Query(gt=0, le=MAX_RADIUS_M, description="Radius, metres")],
    limit: Annotated[int, Query(ge=1, le=MAX_WITHIN, description="At most this many features"), WholeNumber] = 1000,
    kind: Kind = None,
) -> Response:
    name = str(collection)
    return _search(name, kind, lambda conn: within_geojson(conn, name, lon, lat, 4326, radius_m, limit, kind))
