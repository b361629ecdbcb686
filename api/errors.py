"""One error contract for every endpoint.

- Bad user input → 400 ``{"code": "InvalidParameterValue", "parameter": NAME, "description": MSG}`` (the OGC API
  exception shape plus the parameter's name), unknown ids → 404 ``{"code": "NotFound", ...}``.
- A statement cancelled by the per-request ``statement_timeout`` (psycopg ``QueryCanceled``) → 503 with
  ``Retry-After``: the server is busy, the request was fine.
- No database connection (server down, pool exhausted) → 503 with ``Retry-After``.
- FastAPI's own validation errors (wrong type in a query parameter) are mapped to the same 400 shape, naming
  the parameter, so clients see one format; so are Starlette's (a path no route matches → 404 NotFound).
  Anything else is a genuine bug and stays a 500.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import psycopg.errors
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException

from cim.cluster import ClusterError
from cim.db import DatabaseError

RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error whose status and message the client should see as they are."""

    def __init__(self, status: int, code: str, description: str, parameter: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description
        self.parameter = parameter

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "description": self.description}
        if self.parameter is not None:
            out["parameter"] = self.parameter
        return out


_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


def _integer_text(value: object) -> object:
    """Refuse text pydantic's lax mode would read as an integer although it is not one ("1.0", " 1", "1_000")."""
    if isinstance(value, str) and not _INTEGER_TEXT.fullmatch(value):
        raise ValueError("must be an integer written in decimal digits, e.g. 10")
    return value


WholeNumber = BeforeValidator(_integer_text)
"""Metadata for ``Annotated[int, Query(...), WholeNumber]`` (after ``Query``/``Path``, or FastAPI writes their bounds
into the document as ``ge``/``le``): only what the document's ``type: integer`` allows."""


def bad_parameter(name: str, message: str) -> ApiError:
    """400 for query parameter ``name``; the message says what is wrong and what is accepted."""
    return ApiError(400, "InvalidParameterValue", f"{name}: {message}", parameter=name)


def single_valued(request: Request) -> None:
    """A router dependency: each query parameter at most once (FastAPI would keep the last of repeated
    values of a single-valued parameter without a word; the document declares none as an array)."""
    params = request.query_params
    if len(params.multi_items()) > len(params):
        repeated = next(key for key in params if len(params.getlist(key)) > 1)
        raise bad_parameter(repeated, "given more than once; give it once")


def not_found(what: str) -> ApiError:
    return ApiError(404, "NotFound", f"{what} not found")


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
    name = ".".join(loc) or "request"
    err = bad_parameter(name, str(first.get("msg", "invalid value")).removeprefix("Value error, "))
    return JSONResponse(err.body(), status_code=400)


_HTTP_CODES = {404: "NotFound", 405: "MethodNotAllowed"}


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (no route matched the path, method not allowed) in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    body = {"code": _HTTP_CODES.get(exc.status_code, "HttpError"), "description": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _query_canceled(_: Request, exc: Exception) -> JSONResponse:
    body = {"code": "ServiceUnavailable", "description": "query exceeded the statement timeout; retry later"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    body = {"code": "ServiceUnavailable", "description": f"database unavailable: {first}"}
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.errors.QueryCanceled, _query_canceled)
    # No connection (server down, pool exhausted or closed): the request was fine, the service is not.
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(psycopg_pool.PoolTimeout, _database_unavailable)
    app.add_exception_handler(psycopg_pool.PoolClosed, _database_unavailable)
    app.add_exception_handler(ClusterError, _database_unavailable)
    app.add_exception_handler(DatabaseError, _database_unavailable)
