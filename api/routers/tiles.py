"""Vector tiles: ``GET /tiles/{collection}/{z}/{x}/{y}.mvt`` (WebMercatorQuad, PostGIS ``ST_AsMVT``) and
``GET /tiles/{collection}.json`` (TileJSON 3.0.0).

Decisions recorded here:
- **Empty tiles are 204 No Content** (with ETag and Cache-Control like any tile): MapLibre, OpenLayers and
  Leaflet.VectorGrid treat 204 as an empty tile, and it tells "nothing here" apart from an error without
  shipping an empty protobuf. Tiles outside the layer's extent are answered without a query.
- A tile address outside the grid or the layer's zoom levels is 404 (see `api.tile_grid`).
- ``?properties=a,b`` picks attributes from the layer's whitelist (`cim.store.vector_tiles`); an empty value
  gives geometries (and feature ids) only; an unknown name is 400 naming it and listing the allowed ones.
- Cache hits are mostly answered before routing (`api.tile_front`); here a hit or a 304 still costs no
  thread hop and no query, and concurrent misses of one tile render it once (`TileState.render_once`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import get_pool
from api.errors import ApiError, WholeNumber, bad_parameter, not_found, single_valued
from api.http_cache import Body, body_response, json_body, make_gzip, max_age, wants_gzip_work
from api.ogc_schemas import error
from api.tile_grid import center_zoom, check_tile, search_box
from api.tile_state import TileState, tile_state
from cim.store.vector_tiles import MAX_ZOOM, MVT_BUFFER, MVT_EXTENT, TILE_LAYERS, TileField, TileLayer, render_mvt

MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"

router = APIRouter(tags=["tiles"], dependencies=[Depends(single_valued)])

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the client's copy (If-None-Match) is current"},
    400: error("A malformed parameter; `parameter` names it"),
    404: error("Unknown collection, raster or tileset, or a tile outside the grid or the layer's zoom levels"),
    503: error("The database query took too long; retry after Retry-After seconds"),
}

# Schema-only bounds (json_schema_extra): the document tells clients the valid values, while the handler keeps
# answering an unknown collection or a tile outside the grid with 404, as tile clients expect.
Collection = Annotated[
    str,
    Path(
        description=f"One of: {', '.join(TILE_LAYERS)}",
        examples=["buildings"],
        json_schema_extra={"enum": list(TILE_LAYERS)},
    ),
]
Zoom = Annotated[
    int,
    Path(description="Zoom level (tile matrix)", json_schema_extra={"minimum": 0, "maximum": MAX_ZOOM}),
    WholeNumber,
]
Column = Annotated[int, Path(description="Column", json_schema_extra={"minimum": 0}), WholeNumber]
Row = Annotated[int, Path(description="Row (from the north)", json_schema_extra={"minimum": 0}), WholeNumber]
Properties = Annotated[
    str | None,
    Query(description="Comma-separated attributes to include (default: all the layer offers; empty: none)"),
]


def _layer(collection: str) -> TileLayer:
    layer = TILE_LAYERS.get(collection)
    if layer is None:
        raise not_found(f"vector tile collection {collection!r} (collections: {', '.join(TILE_LAYERS)})")
    return layer


def _fields(layer: TileLayer, properties: str | None) -> tuple[TileField, ...]:
    if properties is None:
        return layer.fields
    names = tuple(dict.fromkeys(p.strip() for p in properties.split(",") if p.strip()))
    try:
        return layer.select_fields(names)
    except KeyError as exc:
        raise bad_parameter(
            "properties", f"{layer.name} has no attribute {exc.args[0]!r}; allowed: {', '.join(layer.field_names)}"
        ) from None


def _render_tile(state: TileState, layer: TileLayer, z: int, x: int, y: int, fields: tuple[TileField, ...],
                 version: int) -> Body:  # fmt: skip
    """Render (blocking) and cache one tile; the key carries the version the tile was rendered at."""
    extent = state.layer_extent(layer, version)
    search = search_box(z, x, y, extent.mercator, MVT_BUFFER / MVT_EXTENT)
    if search is None:
        data, rendered_at = b"", extent.version
    else:
        with get_pool().connection() as conn:
            data, rendered_at = render_mvt(conn, layer, z, x, y, fields, search, state.srid())
    state.versions.observe(layer.table, rendered_at)
    body = Body(data, MVT_MEDIA_TYPE, True, status=200 if data else 204)
    state.cache.put(_tile_key(layer, rendered_at, z, x, y, fields), body)
    return body


def _tile_key(layer: TileLayer, version: int, z: int, x: int, y: int, fields: tuple[TileField, ...] | tuple[str, ...]
              ) -> tuple:  # fmt: skip
    """The cache key of a tile: (table, version, …) as `api.tile_state` expects, fields by name."""
    return (layer.table, version, "mvt", layer.name, z, x, y, tuple(getattr(f, "name", f) for f in fields))


def cached_vector_tile(
    state: TileState, collection: str, z: int, x: int, y: int, properties: str | None
) -> Body | None:
    """The cached tile, without I/O, when the data versions are fresh and the tile is in the cache; None
    otherwise (also for any invalid input: the full path answers that)."""
    layer = TILE_LAYERS.get(collection)
    versions = state.versions.fresh()
    if (
        layer is None
        or versions is None
        or not (layer.minzoom <= z <= MAX_ZOOM and 0 <= x < 1 << z and 0 <= y < 1 << z)
    ):
        return None
    names = _field_names_memo.get((collection, properties))
    if names is None:
        try:
            names = tuple(f.name for f in _fields(layer, properties))
        except ApiError:
            return None
        if len(_field_names_memo) < 4096:
            _field_names_memo[(collection, properties)] = names
    return state.cache.get(_tile_key(layer, versions.get(layer.table, 0), z, x, y, names))


_field_names_memo: dict[tuple[str, str | None], tuple[str, ...]] = {}


@router.get(
    "/tiles/{collection}/{z}/{x}/{y}.mvt",
    summary="A Mapbox Vector Tile of a collection (WebMercatorQuad)",
    response_class=Response,
    responses={
        200: {"content": {MVT_MEDIA_TYPE: {}}, "description": "The tile (one layer named after the collection)"},
        204: {"description": "No features in this tile"},
        **ERROR_RESPONSES,
    },
)
async def vector_tile(
    request: Request,
    collection: Collection,
    z: Zoom,
    x: Column,
    y: Row,
    properties: Properties = None,
) -> Response:
    layer = _layer(collection)
    check_tile(z, x, y, layer.minzoom, MAX_ZOOM)
    fields = _fields(layer, properties)
    state = tile_state()
    version = (await state.current_versions()).get(layer.table, 0)
    key = _tile_key(layer, version, z, x, y, fields)
    body = state.cache.get(key)
    if body is None:
        body = await state.render_once(key, lambda: _render_tile(state, layer, z, x, y, fields, version))
    if wants_gzip_work(request, body):
        await run_in_threadpool(make_gzip, body)
    return body_response(request, body, max_age(state.settings.tile_max_age_s))


def _tilejson(state: TileState, layer: TileLayer, fields: tuple[TileField, ...], properties: str | None,
              version: int, base: str) -> Body:  # fmt: skip
    extent = state.layer_extent(layer, version)
    query = "" if properties is None else "?properties=" + ",".join(f.name for f in fields)
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": layer.name,
        "description": layer.description,
        "version": f"1.0.{extent.version}",
        "scheme": "xyz",
        "tiles": [f"{base}/tiles/{layer.name}/{{z}}/{{x}}/{{y}}.mvt{query}"],
        "minzoom": layer.minzoom,
        "maxzoom": MAX_ZOOM,
        "bounds": list(extent.lonlat) if extent.lonlat else [-180.0, -85.0511287798066, 180.0, 85.0511287798066],
        "vector_layers": [
            {
                "id": layer.name,
                "description": layer.description,
                "minzoom": layer.minzoom,
                "maxzoom": MAX_ZOOM,
                "fields": {f.name: f.kind for f in fields},
            }
        ],
    }
    if extent.lonlat:
        w, s, e, n = extent.lonlat
        doc["center"] = [(w + e) / 2, (s + n) / 2, center_zoom(extent.lonlat, layer.minzoom, MAX_ZOOM)]
    body = json_body(doc)
    state.cache.put((layer.table, extent.version, "tilejson", layer.name, query, base), body)
    return body


@router.get(
    "/tiles/{collection}.json",
    summary="TileJSON 3.0.0 of a collection's vector tiles",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "TileJSON 3.0.0"}, **ERROR_RESPONSES},
)
async def vector_tilejson(request: Request, collection: Collection, properties: Properties = None) -> Response:
    layer = _layer(collection)
    fields = _fields(layer, properties)
    state = tile_state()
    version = (await state.current_versions()).get(layer.table, 0)
    base = str(request.base_url).rstrip("/")
    query = "" if properties is None else "?properties=" + ",".join(f.name for f in fields)
    body = state.cache.get((layer.table, version, "tilejson", layer.name, query, base))
    if body is None:
        body = await run_in_threadpool(_tilejson, state, layer, fields, properties, version, base)
    return body_response(request, body, max_age(state.settings.tile_max_age_s))
