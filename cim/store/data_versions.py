"""Per-table change counters (``data_versions``, migration 0009): what caches of derived products key on.

A counter is bumped by a statement trigger in the transaction that changes the table, so it becomes visible
together with the change. A table without a row (a database migrated before the table existed) reads as 0.
"""

from __future__ import annotations

import psycopg

VERSIONS_SQL = "SELECT table_name, version FROM data_versions"


def data_versions(conn: psycopg.Connection) -> dict[str, int]:
    """Every table's change counter, by table name."""
    rows = conn.execute(VERSIONS_SQL).fetchall()
    return {str(name): int(version) for name, version in rows}


async def data_versions_async(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """`data_versions` on an asyncio connection."""
    cur = await conn.execute(VERSIONS_SQL)
    return {str(name): int(version) for name, version in await cur.fetchall()}
