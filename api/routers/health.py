"""``GET /health``: is the database reachable, at which schema version, and how much data it holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import get_pool
from cim.store.health import database_health

router = APIRouter(tags=["service"])


@router.get("/health", summary="Service and database health with row counts per layer")
def health() -> JSONResponse:
    try:
        pool = get_pool()
        with pool.connection(timeout=5) as conn:
            body: dict[str, Any] = {"status": "ok", "database": database_health(conn)}
        return JSONResponse(body)
    except Exception as exc:  # the health probe must answer, whatever broke
        return JSONResponse(
            {"status": "error", "database": {"status": "unavailable", "error": str(exc).splitlines()[0]}},
            status_code=503,
        )
