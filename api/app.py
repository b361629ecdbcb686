"""The FastAPI application (``api.app:app``). Routers for each capability are added by their own issues.

The database pool opens lazily on the first request that needs it, so the app imports and starts even when
the database is down; ``/health`` then answers 503 with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import close_pool
from api.errors import install_error_handlers
from api.routers import health


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    close_pool()


app = FastAPI(
    title="CIM digital-twin service",
    version="0.1.0",
    description="City Information Modeling: the city's buildings, parcels, networks, devices and events.",
    lifespan=lifespan,
)
app.include_router(health.router)
install_error_handlers(app)
