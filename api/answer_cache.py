"""The in-process cache of CIM answers (``/parcels/{code}/contents``, ``/buildings/{code}``, ``/units/{code}``):
a repeated answer is served from memory, without the database, while no table it reads has changed.

Decisions recorded here:
- **What an answer depends on** is listed per kind in `ANSWER_TABLES` (the tables its statement reads). Each
  answer is a pure function of those tables' rows (no ``now()``), so it can be reused until one of them
  changes. The key of an entry is ``(kind, (version of each table it reads), *arguments)``; a change to any
  of those tables gives new keys, and the entries under the old ones are dropped.
- **Versions** are the per-table change counters of ``data_versions`` (migration 0009), bumped by a trigger
  in the writing transaction, whoever writes: an ingest, another server worker, psql. Each server process
  re-reads them at most every ``CIM_ANSWER_VERSION_TTL_S`` (default 0.25 s), on demand: one tiny query per
  TTL per process while requests come, none when idle. **Staleness bound**: the age of the counters counts
  from when their read started, so an answer served at time t reflects every write committed before
  t − TTL, in every worker and process; answers not in the cache always read the database. LISTEN/NOTIFY
  would shorten the bound but needs the counter trigger to notify (a migration); the poll is cheap enough
  that the bound is a setting.
- **Filing**: an answer is filed under the versions read *before* its statement ran, so it is never older
  than its key says (a write landing in between only makes the entry newer than its key; the next counter
  read moves the key on and the entry is dropped). bim_models and bim_storeys have no counter; they are
  written only by the IFC ingest, in the transaction that also writes bim_elements, whose counter moves
  with every such ingest (statement triggers fire even when no row changed).
- **HTTP**: a strong ETag (BLAKE2b of the bytes), ``If-None-Match`` → 304, gzip on request, and
  ``Cache-Control: no-cache`` (clients and proxies may keep a copy but revalidate it each time: answers have
  no lifetime, they change with the data). The same `api.http_cache` layer as the tiles.
- Cache hits, and parcel contents misses, are answered before routing (`api.answer_front`); parcel
  statements run on the event loop (`answer_async`), building and unit ones in a worker thread (`answer`);
  concurrent misses of one answer run its statement once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.concurrency import run_in_threadpool

from api.deps import get_pool
from api.http_cache import Body, TileCache
from api.tile_state import DataVersions
from cim.db import make_async_pool
from cim.settings import Settings, get_settings
from cim.store.data_versions import data_versions_async

ANSWER_TABLES: dict[str, tuple[str, ...]] = {
    "parcel": ("parcels", "buildings", "pipes", "devices", "events"),
    "building": ("buildings", "houses", "bim_elements", "parcels", "devices", "events"),
    "unit": ("admin_units", "buildings", "houses", "devices", "events"),
}
"""The tables each kind of answer reads (see the store statements), whose counters key its entries."""

CACHE_CONTROL = "public, no-cache"

ANSWER_POOL_SIZE = max(4, 2 * (os.cpu_count() or 2))
"""Connections of the answers' asyncio pool per process: the statements are CPU-bound in PostgreSQL, so more
running at once than about twice the cores only queue inside it (and lengthen the tail: on 2 cores, 4 gave
a lower p99 than 8 at the same throughput); further requests wait in the pool's queue."""

Render = Callable[[psycopg.Connection], str | None]
"""A blocking store call, run in a worker thread on a connection of the shared pool."""
AsyncRender = Callable[[psycopg.AsyncConnection], Awaitable[str | None]]
"""An asyncio store call, run on the event loop on an autocommit connection of the answers' own pool."""


def answer_key(kind: str, versions: dict[str, int], args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (kind, tuple(versions.get(t, 0) for t in ANSWER_TABLES[kind]), *args)


def _older_than(key: Hashable, table: str, version: int) -> bool:
    """Whether ``key`` was filed under a version of ``table`` older than ``version``."""
    if not isinstance(key, tuple):
        return False
    tables = ANSWER_TABLES.get(key[0], ())
    return table in tables and key[1][tables.index(table)] < version


class _Counters(DataVersions):
    """`DataVersions` read on the event loop, whose age counts from when the read *started*: a read that began
    before a commit and ended after it must not make the pre-commit counters look newer than they are."""

    def apply(self, versions: dict[str, int], started: float) -> dict[str, int]:
        with self._lock:
            for table, version in versions.items():
                self._advance(table, version)
            self._read_at = max(self._read_at, started)
            return self._versions


class AnswerState:
    """The answer cache of one server process, the change counters its keys carry, and the asyncio pool
    of the answers rendered on the event loop."""

    def __init__(self, settings: Settings) -> None:
        self.cache = TileCache(settings.answer_cache_mb * 1024 * 1024)
        self.versions = _Counters(settings.answer_version_ttl_s, self._version_moved)
        self._rendering: dict[Hashable, asyncio.Future[Body | None]] = {}
        self._refreshing: asyncio.Future[dict[str, int]] | None = None
        self._pools: dict[str, asyncio.Future[AsyncConnectionPool]] = {}

    def _version_moved(self, table: str, version: int) -> None:
        self.cache.drop(lambda key: _older_than(key, table, version))

    def cached(self, kind: str, args: tuple[Any, ...]) -> Body | None:
        """The cached answer, without I/O, when the counters are fresh and it is in the cache; else None."""
        versions = self.versions.fresh()
        return None if versions is None else self.cache.get(answer_key(kind, versions, args))

    # -- the asyncio pool and the counters ----------------------------------------------------------------
    async def pool(self, name: str = "answers") -> AsyncConnectionPool:
        """An asyncio pool opened on first use in this process's event loop: ``answers`` for the statements,
        ``counters`` (one connection) for the counter reads, which must not queue behind busy statements:
        every request waits for a due counter read."""
        future = self._pools.get(name)
        if future is None:
            sizes = (1, 1) if name == "counters" else (2, ANSWER_POOL_SIZE)
            future = self._pools[name] = asyncio.ensure_future(self._open_pool(*sizes))
        try:
            return await asyncio.shield(future)
        except Exception:
            self._pools.pop(name, None)  # e.g. no database yet: the next request tries again
            raise

    async def _open_pool(self, min_size: int, max_size: int) -> AsyncConnectionPool:
        pool = make_async_pool(min_size=min_size, max_size=max_size)
        await pool.open()
        return pool

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for future in pools.values():
            if future.done() and not future.cancelled() and future.exception() is None:
                await future.result().close()

    async def current_versions(self) -> dict[str, int]:
        """The counters from memory when fresh, else re-read (one read for all requests waiting on it)."""
        versions = self.versions.fresh()
        if versions is not None:
            return versions
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> dict[str, int]:
        try:
            started = time.monotonic()
            async with (await self.pool("counters")).connection() as conn:
                versions = await data_versions_async(conn)
            return self.versions.apply(versions, started)
        finally:
            self._refreshing = None

    # -- answers -----------------------------------------------------------------------------------------------
    async def answer(self, kind: str, args: tuple[Any, ...], render: Render, media_type: str) -> Body | None:
        """The answer from the cache, or rendered by blocking ``render`` in a worker thread and cached; None
        when there is no such object (not cached: it costs one lookup)."""

        def blocking() -> str | None:
            with get_pool().connection() as conn:
                conn.autocommit = True  # one read: no transaction to commit when the connection goes back
                try:
                    return render(conn)
                finally:
                    conn.autocommit = False

        return await self._answer(kind, args, media_type, lambda: run_in_threadpool(blocking))

    async def answer_async(self, kind: str, args: tuple[Any, ...], render: AsyncRender, media_type: str) -> Body | None:
        """`answer` with an asyncio ``render`` run on the event loop: no thread hop, no transaction."""

        async def on_loop() -> str | None:
            async with (await self.pool()).connection() as conn:
                return await render(conn)

        return await self._answer(kind, args, media_type, on_loop)

    async def _answer(
        self, kind: str, args: tuple[Any, ...], media_type: str, run: Callable[[], Awaitable[str | None]]
    ) -> Body | None:
        """Cache lookup, else ``run`` once for concurrent requests of the same key (the others wait for its
        result), filed under the counters read before it ran."""
        key = answer_key(kind, await self.current_versions(), args)
        body = self.cache.get(key)
        if body is not None:
            return body
        pending = self._rendering.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except Exception:
                pass  # the first render failed: try our own (and report its error)
        future: asyncio.Future[Body | None] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            text = await run()
            body = None if text is None else Body(text.encode(), media_type, True)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("render cancelled"))
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._rendering.pop(key, None)
        if body is not None:
            self.cache.put(key, body)
        future.set_result(body)
        return body


_state: AnswerState | None = None
_state_lock = threading.Lock()


def answer_state() -> AnswerState:
    """The process's answer cache, made on first use from the settings."""
    global _state
    if _state is None:
        with _state_lock:
            if _state is None:
                _state = AnswerState(get_settings())
    return _state


async def close_answer_state() -> None:
    """Close the answers' asyncio pools (app shutdown)."""
    if _state is not None:
        await _state.close()
