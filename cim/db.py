"""Connections to the city database: the embedded cluster by default, any PostGIS by ``CIM_DATABASE_URL``.

``ensure_database`` is what every command calls first: it starts the embedded cluster when no URL is set,
creates the database and its extensions, and applies pending migrations. It is cheap when all is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from cim.cluster import DATABASE, EmbeddedCluster
from cim.migrate import apply_migrations, schema_version
from cim.settings import Settings, get_settings

REQUIRED_EXTENSIONS = ("postgis",)
OPTIONAL_EXTENSIONS = ("postgis_sfcgal", "pgrouting")
MIN_POSTGIS = (3, 3)


class DatabaseError(RuntimeError):
    """The database is unreachable or unsuitable; the message says why."""


@dataclass(frozen=True)
class DatabaseStatus:
    url: str
    embedded: bool
    schema_version: int
    postgis_version: str
    extensions: list[str]


def database_url(settings: Settings | None = None) -> str:
    """The URL to connect to: ``CIM_DATABASE_URL`` or the embedded cluster (which must be initialised)."""
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    return EmbeddedCluster(settings).info().url


def connect(settings: Settings | None = None, **kw: object) -> psycopg.Connection:
    """One connection with the per-statement timeout from settings."""
    settings = settings or get_settings()
    conn = psycopg.connect(database_url(settings), **kw)  # type: ignore[arg-type]
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(settings.statement_timeout_ms)))
    conn.commit()
    return conn


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[psycopg.Connection]:
    """A connection inside one transaction: committed on success, rolled back on any exception."""
    with connect(settings) as conn, conn.transaction():
        yield conn


def make_pool(settings: Settings | None = None, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    """A connection pool for the API (tuple rows; handlers pick a row factory per cursor)."""
    settings = settings or get_settings()
    timeout = settings.statement_timeout_ms

    def configure(conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout)))
        conn.commit()

    return ConnectionPool(
        database_url(settings),
        min_size=min_size,
        max_size=max_size,
        configure=configure,
        open=True,
    )


def make_async_pool(settings: Settings | None = None, min_size: int = 2, max_size: int = 8) -> AsyncConnectionPool:
    """An asyncio pool (not opened: ``await pool.open()`` in the event loop that uses it) of autocommit
    connections, for single-statement reads served without a thread hop (a read needs no COMMIT round trip)."""
    settings = settings or get_settings()
    timeout = settings.statement_timeout_ms

    async def configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout)))

    return AsyncConnectionPool(
        database_url(settings),
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=configure,
        open=False,
    )


def _create_database_if_missing(cluster: EmbeddedCluster) -> None:
    info = cluster.info()
    admin_url = info.url.replace(f"/{DATABASE}?", "/postgres?")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))


def _ensure_extensions(conn: psycopg.Connection) -> list[str]:
    available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
    for ext in REQUIRED_EXTENSIONS:
        if ext not in available:
            hint = " (Debian package postgresql-15-postgis-3)" if ext == "postgis" else ""
            raise DatabaseError(f"PostgreSQL extension {ext!r} is not installed on the server{hint}")
    for ext in (*REQUIRED_EXTENSIONS, *OPTIONAL_EXTENSIONS):
        if ext in available:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
    conn.commit()
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'postgis'").fetchone()
    parts = tuple(int(p) for p in str(version[0]).split(".")[:2]) if version else (0, 0)
    if parts < MIN_POSTGIS:
        raise DatabaseError(f"PostGIS {version[0] if version else '?'} is too old; 3.3 or newer is needed")
    return sorted(r[0] for r in conn.execute("SELECT extname FROM pg_extension").fetchall())


def ensure_database(settings: Settings | None = None) -> DatabaseStatus:
    """Make the database ready: start the embedded cluster if no URL is set, extensions, migrations."""
    settings = settings or get_settings()
    embedded = not settings.database_url
    if embedded:
        cluster = EmbeddedCluster(settings)
        cluster.start()
        _create_database_if_missing(cluster)
    url = database_url(settings)
    try:
        conn = psycopg.connect(url)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to the database: {exc}".strip()) from exc
    with conn:
        extensions = _ensure_extensions(conn)
        apply_migrations(conn, settings.storage_srid, settings.city_code)
        version = schema_version(conn)
        postgis = conn.execute("SELECT postgis_lib_version()").fetchone()
    return DatabaseStatus(
        url=_redact(url),
        embedded=embedded,
        schema_version=version,
        postgis_version=str(postgis[0]) if postgis else "?",
        extensions=extensions,
    )


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.split("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url
