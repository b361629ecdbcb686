"""Schema migrations: numbered SQL files in ``cim/migrations`` applied in order, each in its own transaction.

- A file is named ``NNNN_what.sql``; ``NNNN`` is its version. Applied versions are recorded in
  ``cim_schema_migrations`` with a checksum; re-running applies nothing, and an applied file that was later
  edited is an error (write a new migration instead).
- The only template value is ``{{SRID}}``, the storage SRID, substituted as a validated integer. It is fixed
  at the first migration and kept in ``cim_settings``; connecting with another storage SRID is an error.
- Concurrent migrators are serialised by a transaction-level advisory lock.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
LOCK_KEY = 4_403_050_001  # arbitrary, constant: the advisory-lock id of "migrating the CIM schema"


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

    def render(self, srid: int) -> str:
        return self.text.replace("{{SRID}}", str(int(srid)))


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


def apply_migrations(conn: psycopg.Connection, srid: int) -> list[int]:
    """Apply every pending migration; returns the versions applied (empty when up to date)."""
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
                conn.execute(mig.render(srid).encode())
            except psycopg.Error as exc:
                raise MigrationError(f"migration {mig.version:04d}_{mig.name} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO cim_schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.checksum),
            )
            applied_now.append(mig.version)
    return applied_now
