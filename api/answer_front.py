"""The in-process cache front of the CIM answers: the app's class (`CachingFastAPI`) answers ``GET`` requests
for parcel contents, building profiles and unit summaries already in the answer cache (body or 304) before
FastAPI's own per-request work (middleware stack, routing, validation, a thread hop), then the cached tiles
(`api.tile_front`), then everything else.

Hits are looked up with the router's own functions (`api.routers.answers.cached_*`: the same key) and
answered with `api.http_cache.body_reply`, the function the router uses; a hit implies a valid request, as
only answers the router's functions rendered are ever in the cache. A parcel contents miss is rendered here
too, by the router's own `parcel_contents_body` (same validation, same key): on this hot path FastAPI's
per-request work (routing, dependency solving, middleware: ~1 ms of CPU) costs several times the statement's
client side (~0.3 ms). Anything else — a building or unit miss, a parameter not in its plain form (digits
only, each once), a malformed code, no such parcel, anything unknown — goes on to the app, which validates,
renders, caches and reports errors; an error of a render here gets the app's own exception handler.
"""

from __future__ import annotations

import inspect
import re

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from api.answer_cache import CACHE_CONTROL, answer_state
from api.errors import ApiError
from api.http_cache import Body
from api.routers.answers import (
    HOUSES_LIMIT,
    MAX_OFFSET,
    MAX_PAGE,
    UNIT_LIMIT,
    cached_building,
    cached_parcel_contents,
    cached_unit,
    parcel_contents_body,
)
from api.tile_front import TileCachingFastAPI, plain_query, send_body

_PARCEL_PATH = re.compile(r"/parcels/([^/]+)/contents")
_BUILDING_PATH = re.compile(r"/buildings/([^/]+)")
_UNIT_PATH = re.compile(r"/units/([^/]+)")
_PARCEL_PARAMS = frozenset({"format"})
_DIGITS = re.compile(r"[0-9]{1,9}")


def _int(params: dict[str, str], name: str, default: int, high: int) -> int | None:
    """The parameter as the router would read it, or None when it is not a plain in-range integer."""
    raw = params.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or int(raw) > high:
        return None
    return int(raw)


def _parcel_request(scope: Scope) -> tuple[str, str] | None:
    """(code, format) of a ``/parcels/{code}/contents`` request in its plain form, else None."""
    m = _PARCEL_PATH.fullmatch(scope["path"])
    params = plain_query(scope["query_string"], _PARCEL_PARAMS) if m else None
    if m is None or params is None:
        return None
    fmt = params.get("format", "json")
    return (m.group(1), fmt) if fmt in ("json", "geojson") else None


def _cached_body(scope: Scope) -> Body | None:
    path: str = scope["path"]
    state = answer_state()
    if path.startswith("/parcels/"):
        parcel = _parcel_request(scope)
        return None if parcel is None else cached_parcel_contents(state, *parcel)
    for prefix, pattern, (limit_name, offset_name), default_limit, lookup in _PAGED_ANSWERS:
        if path.startswith(prefix):
            m = pattern.fullmatch(path)
            params = plain_query(scope["query_string"], frozenset({limit_name, offset_name})) if m else None
            if m is None or params is None:
                return None
            limit = _int(params, limit_name, default_limit, MAX_PAGE)
            offset = _int(params, offset_name, 0, MAX_OFFSET)
            return None if limit is None or offset is None else lookup(state, m.group(1), limit, offset)
    return None


_PAGED_ANSWERS = (
    ("/buildings/", _BUILDING_PATH, ("houses_limit", "houses_offset"), HOUSES_LIMIT, cached_building),
    ("/units/", _UNIT_PATH, ("limit", "offset"), UNIT_LIMIT, cached_unit),
)
"""Answers cached per (code, page): path prefix, path pattern, its page parameters, default limit, lookup."""


async def _parcel_miss(scope: Scope) -> Body | None:
    """A parcel contents answer not in the cache, rendered here (the hot path of the parcel answer: FastAPI's
    own per-request work costs several times the statement's client side); None: the app answers (a
    malformed request, no such parcel). Errors of the render propagate (`CachingFastAPI` maps them)."""
    parcel = _parcel_request(scope) if scope["path"].startswith("/parcels/") else None
    if parcel is None:
        return None
    try:
        return await parcel_contents_body(*parcel)
    except ApiError:
        return None


async def answer_cached(scope: Scope, send: Send) -> bool:
    """Answer a ``GET`` for a cached answer (body or 304), or a parcel contents answer not cached yet, and
    return True; False: the app must answer."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    body = _cached_body(scope)
    if body is None:
        body = await _parcel_miss(scope)
    if body is None:
        return False
    return await send_body(scope, send, body, CACHE_CONTROL)


class CachingFastAPI(TileCachingFastAPI):
    """FastAPI answering cached CIM answers (`answer_cached`) and cached tiles first, before its own work."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if await answer_cached(scope, send):
                return
        except Exception as exc:  # the app's error contract (503 for a timeout or no database, …)
            handler = next(
                (self.exception_handlers[c] for c in type(exc).__mro__ if c in self.exception_handlers), None
            )
            if handler is None:
                raise
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
