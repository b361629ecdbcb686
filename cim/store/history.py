"""The city model through time: when changes happen, and what changed between two dates.

Building versions live in ``buildings`` (current) and ``building_history`` (earlier versions and demolished
buildings), kept by triggers (migrations 0001 and 0006). A load may set the change time (a survey's date)
for its transaction; otherwise changes are stamped with the transaction's time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row


def set_change_time(conn: psycopg.Connection, when: str | datetime) -> None:
    """Stamp this transaction's building changes with ``when`` (ISO 8601; a date means midnight local)."""
    conn.execute("SELECT set_config('cim.change_time', %s::timestamptz::text, true)", (str(when),))


CHANGES_SQL = """
WITH v AS (
    SELECT building_code, version, change, name, use, height_m, storeys, valid_from, valid_to, footprint
      FROM building_versions
     WHERE %(unit)s::text IS NULL OR left(building_code, length(%(unit)s::text)) = %(unit)s::text
)
SELECT 'added' AS change_type, building_code, version, name, use, height_m, storeys, valid_from AS changed_at,
       footprint
  FROM v WHERE version = 1 AND valid_from >= %(start)s AND valid_from < %(end)s
UNION ALL
SELECT 'altered', building_code, version, name, use, height_m, storeys, valid_from, footprint
  FROM v WHERE version > 1 AND valid_from >= %(start)s AND valid_from < %(end)s
UNION ALL
SELECT 'demolished', building_code, version, name, use, height_m, storeys, valid_to, footprint
  FROM v WHERE change = 'demolished' AND valid_to >= %(start)s AND valid_to < %(end)s
ORDER BY changed_at, building_code, version
"""


def building_changes(
    conn: psycopg.Connection, start: datetime | str, end: datetime | str, unit_code: str | None = None
) -> list[dict[str, Any]]:
    """Buildings added, altered and demolished in [start, end), optionally within one unit (by code
    prefix). Footprints are returned as WKB in the storage CRS."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(CHANGES_SQL, {"start": start, "end": end, "unit": unit_code})
        return list(cur.fetchall())
