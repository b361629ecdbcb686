"""Citizen complaints (民生诉求): create an event located into the unit chain, move it through the workflow
(`cim.event_workflow`), read it with its transition history.

Creation locates the point with the very statement of ``GET /locate`` (`cim.store.point_chain`), so an event's
district … building are what that answer says at its point; an event given by building code lies at a point
inside the footprint (``ST_PointOnSurface``) and keeps that building. The code's daily sequence is assigned
under a transaction-level advisory lock per day, so concurrent reports never collide.

A transition locks the event's row (``SELECT … FOR UPDATE``) and checks the workflow against the state it
finds there: of two concurrent transitions from the same state the second waits for the first to commit,
then sees the new state and is refused (`TransitionRefused`) unless the workflow allows it from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from cim.crs import storage_srid
from cim.event_workflow import AWAITING_WORK, CODE_TIME_ZONE, INITIAL, NEEDS_DEPARTMENT, check_transition
from cim.store.fragments import fetch_at_point
from cim.store.point_chain import LOCATE_SQL

UNIT_LEVELS = ("district", "street", "community", "grid")


class EventInputError(ValueError):
    """Input the database shows to be unusable; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class NewEvent:
    category: str
    description: str
    subcategory: str | None = None
    reporter_contact: str | None = None
    lon: float | None = None
    lat: float | None = None
    building_code: str | None = None


_WGS84 = 4326

_BUILDING_POINT_SQL = """
SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(footprint) AS p FROM buildings WHERE building_code = %s) b
"""

_DUE_HOURS_SQL = "SELECT due_hours FROM event_categories WHERE category = %s"
_CATEGORIES_SQL = "SELECT category FROM event_categories ORDER BY category"

_NEXT_CODE_SQL = """
WITH day AS (SELECT 'EV' || to_char(now() AT TIME ZONE %(tz)s, 'YYYYMMDD') AS prefix)
SELECT day.prefix || lpad((coalesce(max(right(e.code, 6)::int), 0) + 1)::text, 6, '0')
  FROM day LEFT JOIN events e ON e.code LIKE day.prefix || '%%'
 GROUP BY day.prefix
"""

_INSERT_SQL = """
INSERT INTO events (code, category, subcategory, status, reported_at, updated_at, due_at, description,
                    reporter_contact, geom, building_code, parcel_code, district_code, street_code,
                    community_code, grid_code)
VALUES (%(code)s, %(category)s, %(subcategory)s, %(status)s, now(), now(),
        now() + make_interval(hours => %(due_hours)s::int), %(description)s, %(reporter_contact)s,
        ST_SetSRID(ST_MakePoint(%(x)s::float8, %(y)s::float8), %(srid)s::int), %(building)s, %(parcel)s, %(district)s,
        %(street)s, %(community)s, %(grid)s)
"""

_EVENT_SQL = """
SELECT e.code, e.category, e.subcategory, e.status, e.reported_at, e.updated_at, e.due_at, e.closed_at,
       e.department, e.reopen_count, e.description, e.reporter_contact,
       (e.due_at IS NOT NULL AND e.due_at < now() AND e.status = ANY(%(awaiting)s)) AS overdue,
       ST_X(e.geom) AS x, ST_Y(e.geom) AS y, ST_SRID(e.geom) AS srid,
       ST_X(ST_Transform(e.geom, 4326)) AS lon, ST_Y(ST_Transform(e.geom, 4326)) AS lat,
       e.district_code, e.street_code, e.community_code, e.grid_code, e.parcel_code, e.building_code
  FROM events e WHERE e.code = %(code)s
"""

_HISTORY_SQL = """
SELECT from_status, to_status, actor, note, department, at FROM event_transitions
 WHERE event_code = %s ORDER BY id
"""

_LOCK_SQL = "SELECT status FROM events WHERE code = %s FOR UPDATE"

# updated_at never before reported_at (CHECK events_times_ordered), also for events reported "in the future"
# of this clock (demo data); closed_at is set exactly when the status is closed (CHECK events_closed_at).
_TRANSITION_SQL = """
WITH moved AS (
    UPDATE events
       SET status = %(to)s,
           updated_at = greatest(now(), reported_at),
           closed_at = CASE WHEN %(to)s = 'closed' THEN greatest(now(), reported_at) END,
           department = CASE WHEN %(to)s = %(needs_department)s THEN %(department)s ELSE department END,
           reopen_count = reopen_count + (%(to)s = 'reopened')::int
     WHERE code = %(code)s AND status = %(from)s
    RETURNING code
)
INSERT INTO event_transitions (event_code, from_status, to_status, actor, note, department)
SELECT code, %(from)s, %(to)s, %(actor)s, %(note)s, %(department)s FROM moved
"""


def known_categories(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(_CATEGORIES_SQL).fetchall()]


def _storage_point(conn: psycopg.Connection, new: NewEvent) -> tuple[float, float, int]:
    """The event's point: from lon/lat as given, or a point inside the building's footprint (storage CRS)."""
    if new.building_code is not None:
        row = conn.execute(_BUILDING_POINT_SQL, (new.building_code,)).fetchone()
        if row is None:
            raise EventInputError("building_code", f"no building {new.building_code}")
        return float(row[0]), float(row[1]), storage_srid()
    assert new.lon is not None and new.lat is not None
    return new.lon, new.lat, _WGS84


def create_event(conn: psycopg.Connection, new: NewEvent) -> str:
    """Insert a located event in state ``reported`` and return its code (commits). Raises `EventInputError`
    for an unknown category or building, or a point outside every grid; `PointError` for a point PostGIS
    cannot transform."""
    with conn.transaction():
        due = conn.execute(_DUE_HOURS_SQL, (new.category,)).fetchone()
        if due is None:
            raise EventInputError(
                "category", f"unknown category {new.category}; known: {', '.join(known_categories(conn))}"
            )
        x, y, in_srid = _storage_point(conn, new)
        srid = storage_srid()
        row = fetch_at_point(conn, LOCATE_SQL, {"x": x, "y": y, "in_srid": in_srid, "srid": srid})
        assert row is not None  # one row always: FROM pt
        chain: dict[str, Any] = json.loads(row[0])
        field = "building_code" if new.building_code is not None else "lon"
        for level in UNIT_LEVELS:
            if chain[level] is None:
                raise EventInputError(field, f"the point lies in no {level} of the city; events must lie in a grid")
        building = new.building_code or (chain["building"] or {}).get("code")
        # One reporter per day's sequence at a time: the lock is held until commit.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('cim.events.code'))")
        code_row = conn.execute(_NEXT_CODE_SQL, {"tz": CODE_TIME_ZONE}).fetchone()
        assert code_row is not None
        code = str(code_row[0])
        conn.execute(
            _INSERT_SQL,
            {
                "code": code,
                "category": new.category,
                "subcategory": new.subcategory,
                "status": INITIAL,
                "due_hours": int(due[0]),
                "description": new.description,
                "reporter_contact": new.reporter_contact,
                "x": chain["point"]["x"],
                "y": chain["point"]["y"],
                "srid": srid,
                "building": building,
                "parcel": (chain["parcel"] or {}).get("code"),
                **{level: chain[level]["code"] for level in UNIT_LEVELS},
            },
        )
    return code


def get_event(conn: psycopg.Connection, code: str) -> dict[str, Any] | None:
    """The event with its transition history (oldest first), or None when there is no such event."""
    with conn.cursor(row_factory=dict_row) as cur:
        event = cur.execute(_EVENT_SQL, {"code": code, "awaiting": list(AWAITING_WORK)}).fetchone()
        if event is None:
            return None
        event["transitions"] = cur.execute(_HISTORY_SQL, (code,)).fetchall()
    return event


def transition_event(
    conn: psycopg.Connection, code: str, to: str, actor: str, note: str | None, department: str | None
) -> bool:
    """Move event ``code`` to state ``to`` and record who, when and why (commits). False: no such event.
    Raises `TransitionRefused` when the workflow does not allow it from the event's current state."""
    with conn.transaction():
        row = conn.execute(_LOCK_SQL, (code,)).fetchone()
        if row is None:
            return False
        current = str(row[0])
        check_transition(current, to)
        params = {
            "code": code,
            "from": current,
            "to": to,
            "actor": actor,
            "note": note,
            "department": department,
            "needs_department": NEEDS_DEPARTMENT,
        }
        moved = conn.execute(_TRANSITION_SQL, params)
        assert moved.rowcount == 1  # the row is locked in the state just read
    return True
