"""Process-wide state of the tile endpoints: one cache for every tile kind, the data versions its keys carry,
and the small catalogue facts tiles need (layer extents, raster and tileset entries), each kept per version.

Decisions recorded here:
- **Data versions** are the per-table change counters of ``data_versions`` (migration 0009), bumped in the
  writing transaction. The server re-reads them at most every ``CIM_TILE_VERSION_TTL_S`` (default 1 s):
  one tiny query per second however many tiles are served, and a committed change shows in tiles within
  that time. A tile is rendered in the same statement that reads its table's counter, and filed under the
  counter it was rendered at, so a cached tile is never older than the version it is filed under; a newer
  counter seen by a render moves the known version on at once (`DataVersions.observe`).
- **Cache keys** are tuples ``(table, version, kind, …)``; when a table's version moves on, that table's
  older entries are dropped from the LRU (they could never be hit again).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from api.deps import get_pool
from api.http_cache import Body, TileCache
from cim.settings import Settings, get_settings
from cim.store.data_versions import data_versions
from cim.store.rasters import RasterRecord, get_raster
from cim.store.tiles import tileset_entry
from cim.store.vector_tiles import LayerExtent, TileLayer, layer_extent, storage_srid

T = TypeVar("T")


class DataVersions:
    """The per-table change counters, re-read from the database at most every ``ttl_s`` seconds."""

    def __init__(self, ttl_s: float, on_change: Callable[[str, int], None]) -> None:
        self.ttl_s = max(0.0, ttl_s)
        self._versions: dict[str, int] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()
        self._on_change = on_change

    def fresh(self) -> dict[str, int] | None:
        """The counters if read less than ``ttl_s`` ago, else None (no I/O)."""
        if time.monotonic() - self._read_at < self.ttl_s:
            return self._versions
        return None

    def refresh(self, read: Callable[[], dict[str, int]]) -> dict[str, int]:
        """Re-read the counters (blocking) unless another thread just did."""
        with self._lock:
            if time.monotonic() - self._read_at < self.ttl_s:
                return self._versions
            for table, version in read().items():
                self._advance(table, version)
            self._read_at = time.monotonic()
            return self._versions

    def observe(self, table: str, version: int) -> None:
        """A render saw ``table`` at ``version``: move on if that is newer than what is known."""
        if version > self._versions.get(table, -1):
            with self._lock:
                self._advance(table, version)

    def _advance(self, table: str, version: int) -> None:
        if version > self._versions.get(table, -1):
            versions = dict(self._versions)  # readers keep a consistent dict; replace, never mutate
            versions[table] = version
            self._versions = versions
            self._on_change(table, version)


class _PerVersion:
    """Values computed per (name, version), keeping only the newest version of each name."""

    MAX_NAMES = 1024

    def __init__(self) -> None:
        self._items: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()

    def peek(self, name: str, version: int) -> tuple[bool, Any]:
        """(True, value) when the value of ``name`` at ``version`` is known, else (False, None); no I/O."""
        hit = self._items.get(name)
        return (True, hit[1]) if hit is not None and hit[0] == version else (False, None)

    def get(self, name: str, version: int, compute: Callable[[], T]) -> T:
        with self._lock:
            hit = self._items.get(name)
        if hit is not None and hit[0] == version:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._items) >= self.MAX_NAMES:  # names come from URLs: bound what unknown ones can fill
                self._items.clear()
            current = self._items.get(name)
            if current is None or current[0] <= version:
                self._items[name] = (version, value)
        return value


class TileState:
    """What the tile routers share in one server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cache = TileCache(settings.tile_cache_mb * 1024 * 1024)
        self.versions = DataVersions(settings.tile_version_ttl_s, self._version_moved)
        self._srid: int | None = None
        self._extents = _PerVersion()
        self._rasters = _PerVersion()
        self._tilesets = _PerVersion()
        self._memos: dict[str, _PerVersion] = {}
        self._rendering: dict[Hashable, asyncio.Future[Body]] = {}

    def _version_moved(self, table: str, version: int) -> None:
        self.cache.drop(lambda key: isinstance(key, tuple) and key[0] == table and key[1] < version)

    # -- database reads (blocking: call from a worker thread) ------------------------------------------------
    def read_versions(self) -> dict[str, int]:
        with get_pool().connection() as conn:
            return data_versions(conn)

    def srid(self) -> int:
        if self._srid is None:
            with get_pool().connection() as conn:
                self._srid = storage_srid(conn)
        return self._srid

    def layer_extent(self, layer: TileLayer, version: int) -> LayerExtent:
        def compute() -> LayerExtent:
            with get_pool().connection() as conn:
                return layer_extent(conn, layer, self.srid())

        return self._extents.get(layer.name, version, compute)

    def raster(self, name: str, version: int) -> RasterRecord | None:
        def compute() -> RasterRecord | None:
            with get_pool().connection() as conn:
                return get_raster(conn, name)

        return self._rasters.get(name, version, compute)

    def tileset(self, layer: str, version: int) -> dict[str, Any] | None:
        def compute() -> dict[str, Any] | None:
            with get_pool().connection() as conn:
                return tileset_entry(conn, layer)

        return self._tilesets.get(layer, version, compute)

    def memo(self, kind: str, name: str, version: int, compute: Callable[[], T]) -> T:
        """Any value derived per (name, version), e.g. a raster's colour scale (blocking on a miss)."""
        return self._memos.setdefault(kind, _PerVersion()).get(name, version, compute)

    # -- for async handlers ------------------------------------------------------------------------------------
    async def render_once(self, key: Hashable, render: Callable[[], Body]) -> Body:
        """``render()`` in a worker thread, once for concurrent requests of the same key: the others wait for
        its result (and render themselves only if it failed), so a map opened by many clients at once costs
        one query per tile."""
        pending = self._rendering.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except Exception:
                pass  # the first render failed: try our own
        future: asyncio.Future[Body] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            body = await run_in_threadpool(render)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("render cancelled"))
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._rendering.pop(key, None)
        future.set_result(body)
        return body

    async def current_versions(self) -> dict[str, int]:
        """The counters, from memory when fresh, else re-read in a worker thread."""
        versions = self.versions.fresh()
        if versions is not None:
            return versions
        return await run_in_threadpool(self.versions.refresh, self.read_versions)

    def peek_raster(self, name: str, version: int) -> tuple[bool, RasterRecord | None]:
        """(True, record or None) when the catalogue row of ``name`` at ``version`` is known; no I/O."""
        return self._rasters.peek(name, version)

    async def raster_async(self, name: str, version: int) -> RasterRecord | None:
        known, record = self._rasters.peek(name, version)
        return record if known else await run_in_threadpool(self.raster, name, version)

    def current_versions_blocking(self) -> dict[str, int]:
        versions = self.versions.fresh()
        return versions if versions is not None else self.versions.refresh(self.read_versions)


_state: TileState | None = None
_state_lock = threading.Lock()


def tile_state() -> TileState:
    """The process's tile state, made on first use from the settings."""
    global _state
    if _state is None:
        with _state_lock:
            if _state is None:
                _state = TileState(get_settings())
    return _state
