"""Schema migrations: numbered SQL files in ``cim/migrations`` applied in order, each in its own transaction.

- A file is named ``NNNN_what.sql``; ``NNNN`` is its version. Applied versions are recorded in
  ``cim_schema_migrations`` with a checksum; re-running applies nothing, and an applied file that was later
  edited is an error (write a new migration instead).
- Template values: ``{{SRID}}``, the storage SRID, substituted as a validated integer; ``{{CITY_CODE_RE}}``,
  the POSIX pattern of the deployment's codes (``cim.codes.city_code_pattern``: the validated 4-digit city code
  and a fixed district alternation, never other text). Both are fixed at the first migration and kept in
  ``cim_settings``; connecting with another storage SRID or city code is an error. A database migrated before
  the city code was a setting holds Shenzhen codes, so it is recorded as ``4403``.
- Concurrent migrators are serialised by a transaction-level advisory lock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from cim.codes import SHENZHEN_PREFIX, CodeError, city_code_pattern

MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_KEY = 4_403_050_001  # arbitrary, constant: the advisory-lock id of "migrating the CIM schema"
# The only shapes a rendered {{CITY_CODE_RE}} may take (defence in depth: it is pasted into SQL text).
_CITY_PATTERN_SHAPE = re.compile(r"\^[0-9]{4}\((0\[3-9\]\|1\[01\]|0\[1-9\]\|\[1-9\]\[0-9\])\)\[0-9\]\*\$")


class MigrationError(RuntimeError):
    """A migration cannot be applied; the message says which one and why."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, srid: int, city_code: str = SHENZHEN_PREFIX) -> str:
        return self.text.replace("{{SRID}}", str(int(srid))).replace("{{CITY_CODE_RE}}", city_code_re(city_code))


def city_code_re(city_code: str) -> str:
    """The ``{{CITY_CODE_RE}}`` value for ``city_code``; raises MigrationError for anything but 4 digits."""
    try:
        pattern = city_code_pattern(city_code)
    except CodeError as exc:
        raise MigrationError(f"CIM_CITY_CODE: {exc}") from None
    if not _CITY_PATTERN_SHAPE.fullmatch(pattern):
        raise MigrationError(f"CIM_CITY_CODE {city_code!r} gives an unexpected code pattern {pattern!r}")
    return pattern


def load_migrations() -> list[Migration]:
    """All migration files shipped with the package, ordered by version."""
    found = []
    for entry in resources.files("cim.migrations").iterdir():
        m = MIGRATION_NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS cim_schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS cim_settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
"""


def schema_version(conn: psycopg.Connection) -> int:
    """Highest applied migration, 0 for an empty database."""
    exists = conn.execute("SELECT to_regclass('cim_schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM cim_schema_migrations").fetchone()
    return int(row[0]) if row else 0


def apply_migrations(conn: psycopg.Connection, srid: int, city_code: str = SHENZHEN_PREFIX) -> list[int]:
    """Apply every pending migration; returns the versions applied (empty when up to date)."""
    city_code_re(city_code)  # refuse a malformed city code before touching the database
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(_BOOTSTRAP)
        row = conn.execute("SELECT value FROM cim_settings WHERE key = 'storage_srid'").fetchone()
        if row is None:
            conn.execute("INSERT INTO cim_settings VALUES ('storage_srid', %s)", (str(int(srid)),))
        elif int(row[0]) != int(srid):
            raise MigrationError(
                f"the database stores geometries in EPSG:{row[0]} but CIM_STORAGE_SRID is {srid}; "
                "use the same storage SRID or a new database"
            )
        row = conn.execute("SELECT value FROM cim_settings WHERE key = 'city_code'").fetchone()
        if row is None:
            legacy = conn.execute("SELECT count(*) > 0 FROM cim_schema_migrations").fetchone()
            recorded = SHENZHEN_PREFIX if legacy and legacy[0] else city_code
            conn.execute("INSERT INTO cim_settings VALUES ('city_code', %s)", (recorded,))
        else:
            recorded = str(row[0])
        if recorded != city_code:
            raise MigrationError(
                f"the database holds the codes of city {recorded} but CIM_CITY_CODE is {city_code}; "
                "use the same city code or a new database"
            )
    for mig in load_migrations():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            done = conn.execute(
                "SELECT checksum FROM cim_schema_migrations WHERE version = %s", (mig.version,)
            ).fetchone()
            if done:
                if done[0] != mig.checksum:
                    raise MigrationError(f"migration {mig.version:04d}_{mig.name} was changed after it was applied")
                continue
            try:
                conn.execute(mig.render(srid, city_code).encode())
            except psycopg.Error as exc:
                raise MigrationError(f"migration {mig.version:04d}_{mig.name} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO cim_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.checksum),
            )
            applied_now.append(mig.version)
    return applied_now
