"""Shared request dependencies: the process-wide connection pool."""

from __future__ import annotations

import threading

from psycopg_pool import ConnectionPool

from cim.db import make_pool

_pool: ConnectionPool | None = None
_lock = threading.Lock()


def get_pool() -> ConnectionPool:
    """The pool, opened on first use (raises if the database cannot be reached)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = make_pool()
        return _pool


def close_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.close()
            _pool = None
