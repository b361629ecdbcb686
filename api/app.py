"""The FastAPI application (``api.app:app``). Routers for each capability are added by their own issues.

The database pool opens lazily on the first request that needs it, so the app imports and starts even when
the database is down; ``/health`` then answers 503 with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.answer_cache import close_answer_state
from api.answer_front import CachingFastAPI
from api.deps import close_pool
from api.errors import install_error_handlers
from api.openapi import install_openapi
from api.routers import answers, changes, events, features, health, proximity, raster, tiles, tiles3d


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await close_answer_state()
    close_pool()


app = CachingFastAPI(  # FastAPI answering cached answers and tiles before routing (api/answer_front.py)
    title="CIM digital-twin service",
    version="0.1.0",
    description="City Information Modeling: the city's buildings, parcels, networks, devices and events.",
    lifespan=lifespan,
)
app.include_router(health.router)
app.include_router(features.router)
app.include_router(answers.router)
app.include_router(proximity.router)
app.include_router(changes.router)
app.include_router(events.router)
app.include_router(tiles.router)
app.include_router(raster.router)
app.include_router(tiles3d.router)
install_error_handlers(app)
install_openapi(app)
# CORS for the whole API (read-only, no credentials): any origin may read, and read ETag/Range headers.
app.add_middleware(
    CORSMiddleware,
    allow_origins=["*"],
    allow_methods=["GET", "HEAD", "OPTIONS"],
    allow_headers=["*"],
    expose_headers=["ETag", "Content-Encoding", "Content-Length", "Content-Range", "Accept-Ranges", "Content-Crs"],
    max_age=86400,
)
