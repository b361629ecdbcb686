"""The event workflow through the real server on the demo district: reporting locates the event like
``GET /locate``, the full transition table (every from × to pair), stored history, and concurrent transitions.

Events made here are deleted at the end of the module, so the demo district is as it was for later tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from cim.db import database_url
from cim.event_workflow import STATUSES, TRANSITIONS
from cim.settings import Settings

from server import api_server

# The workflow of issue 6, written out independently of cim.event_workflow (which must agree).
EXPECTED = {
    "reported": {"dispatched", "rejected"},
    "dispatched": {"in_progress", "rejected"},
    "in_progress": {"resolved"},
    "resolved": {"closed", "reopened"},
    "reopened": {"in_progress"},
    "closed": set(),
    "rejected": set(),
}
PATHS = {
    "reported": [],
    "dispatched": ["dispatched"],
    "in_progress": ["dispatched", "in_progress"],
    "resolved": ["dispatched", "in_progress", "resolved"],
    "reopened": ["dispatched", "in_progress", "resolved", "reopened"],
    "closed": ["dispatched", "in_progress", "resolved", "closed"],
    "rejected": ["rejected"],
}


@pytest.fixture(scope="module")
def db(settings: Settings, demo_loaded: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        before = [r[0] for r in conn.execute("SELECT code FROM events").fetchall()]
        yield conn
        conn.execute("DELETE FROM events WHERE NOT (code = ANY(%s))", (before,))
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (len(before),)


@pytest.fixture(scope="module")
def base(settings: Settings, db: psycopg.Connection) -> Iterator[str]:
    with api_server({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"}) as url:
        yield url


@pytest.fixture(scope="module")
def place(db: psycopg.Connection) -> dict[str, Any]:
    """A building of the demo district, and a point inside it in CRS84."""
    row = db.execute(
        "SELECT building_code, ST_X(p), ST_Y(p) FROM (SELECT building_code, "
        "ST_Transform(ST_PointOnSurface(footprint), 4326) AS p FROM buildings ORDER BY building_code "
        "OFFSET 100 LIMIT 1) b"
    ).fetchone()
    assert row is not None
    return {"building_code": row[0], "lon": row[1], "lat": row[2]}


def report(base: str, place: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {"category": "noise", "description": "楼上夜间装修噪音", "lon": place["lon"], "lat": place["lat"]}
    return httpx.post(f"{base}/events", json={**body, **extra}, timeout=60)


def step(base: str, code: str, to: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"to": to, "actor": "测试员", "note": f"to {to}", **extra}
    if to == "dispatched":
        body.setdefault("department", "南山区住房和建设局")
    return httpx.post(f"{base}/events/{code}/transitions", json=body, timeout=60)


def event_in(base: str, place: dict[str, Any], state: str) -> str:
    res = report(base, place)
    assert res.status_code == 201, res.text
    code = str(res.json()["code"])
    for to in PATHS[state]:
        assert step(base, code, to).status_code == 200
    return code


def _chain(answer: dict[str, Any]) -> dict[str, Any]:
    return {f"{level}_code": (answer[level] or {}).get("code") for level in ("district", "street", "community", "grid")}


def test_the_workflow_is_the_issue_s() -> None:
    assert set(STATUSES) == set(EXPECTED)
    assert {s: set(t) for s, t in TRANSITIONS.items()} == EXPECTED


def test_report_by_lon_lat_is_located_like_locate(base: str, place: dict[str, Any], db: psycopg.Connection) -> None:
    version = db.execute("SELECT version FROM data_versions WHERE table_name = 'events'").fetchone()
    res = report(base, place, reporter_contact="138****1234")
    assert res.status_code == 201, res.text
    event = res.json()
    assert res.headers["location"] == f"/events/{event['code']}"
    assert event["code"].startswith("EV") and len(event["code"]) == 16
    assert event["status"] == "reported" and event["transitions"] == [] and event["overdue"] is False
    assert event["allowed_transitions"] == ["dispatched", "rejected"]
    located = httpx.get(f"{base}/locate", params={"lon": place["lon"], "lat": place["lat"]}, timeout=60).json()
    assert {k: event[k] for k in _chain(located)} == _chain(located)
    assert event["parcel_code"] == (located["parcel"] or {}).get("code")
    assert event["building_code"] == located["building"]["code"] == place["building_code"]
    # Due 48 h after reporting (noise, event_categories).
    due = db.execute("SELECT due_at - reported_at FROM events WHERE code = %s", (event["code"],)).fetchone()
    assert due is not None and due[0].total_seconds() == 48 * 3600
    assert db.execute("SELECT version FROM data_versions WHERE table_name = 'events'").fetchone() > version
    again = httpx.get(f"{base}{res.headers['location']}", timeout=60)
    assert again.status_code == 200 and again.json() == event


def test_report_by_building_code(base: str, place: dict[str, Any]) -> None:
    res = httpx.post(
        f"{base}/events",
        json={"category": "fire_safety", "description": "楼道堆放杂物", "building_code": place["building_code"]},
        timeout=60,
    )
    assert res.status_code == 201, res.text
    event = res.json()
    assert event["building_code"] == place["building_code"]
    where = event["location"]
    located = httpx.get(f"{base}/locate", params={"lon": where["lon"], "lat": where["lat"]}, timeout=60).json()
    assert {k: event[k] for k in _chain(located)} == _chain(located)
    assert event["parcel_code"] == (located["parcel"] or {}).get("code")
    assert event["grid_code"] == place["building_code"][:14]


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"description": "x", "lon": 0, "lat": 0}, "category", 400),
        ({"category": "no_such_category", "description": "x"}, "category", 400),
        ({"category": "noise", "description": "x"}, "lon", 400),
        ({"category": "noise", "description": "x", "lon": 113.9}, "lat", 400),
        ({"category": "noise", "description": "x", "lon": 0.0, "lat": 0.0}, "lon", 400),
        ({"category": "noise", "description": "", "lon": 0.0, "lat": 0.0}, "description", 400),
        ({"category": "noise", "description": "x", "building_code": "4403050010010010199"}, "building_code", 400),
        ({"category": "noise", "description": "x", "building_code": "12"}, "building_code", 400),
        ({"category": "noise", "description": "x", "lon": 1, "lat": 1, "building_code": "440305001001001019"},
         "building_code", 400),
    ],
)  # fmt: skip
def test_bad_reports_name_the_field(base: str, place: dict[str, Any], body: dict[str, Any], field: str,
                                    status: int) -> None:  # fmt: skip
    if body.get("category") == "no_such_category":
        body = {**body, "lon": place["lon"], "lat": place["lat"]}
    res = httpx.post(f"{base}/events", json=body, timeout=60)
    assert res.status_code == status, res.text
    assert res.json()["parameter"] == field, res.text


def test_full_transition_table(base: str, place: dict[str, Any]) -> None:
    for current, allowed in EXPECTED.items():
        code = event_in(base, place, current)
        for target in STATUSES:
            if target in allowed:
                continue
            res = step(base, code, target)
            assert res.status_code == 409, (current, target, res.text)
            message = res.json()["description"]
            assert f"in state {current} cannot go to {target}" in message
            named = message.rsplit(":", 1)[1]
            for other in STATUSES:
                assert (other in named) == (other in allowed), (current, target, message)
        assert httpx.get(f"{base}/events/{code}", timeout=60).json()["status"] == current
        for target in sorted(allowed):
            fresh = event_in(base, place, current)
            res = step(base, fresh, target)
            assert res.status_code == 200, (current, target, res.text)
            event = res.json()
            assert event["status"] == target
            assert [t["to_status"] for t in event["transitions"]] == [*PATHS[current], target]


def test_history_and_side_effects(base: str, place: dict[str, Any], db: psycopg.Connection) -> None:
    code = event_in(base, place, "reported")
    assert step(base, code, "dispatched", department=None).status_code == 400  # department is required
    assert step(base, code, "rejected", department="某局").json()["parameter"] == "department"
    for to in PATHS["reopened"]:
        assert step(base, code, to).status_code == 200
    assert step(base, code, "in_progress").status_code == 200
    assert step(base, code, "resolved").status_code == 200
    event = step(base, code, "closed").json()
    history = event["transitions"]
    assert [(t["from_status"], t["to_status"]) for t in history] == [
        ("reported", "dispatched"), ("dispatched", "in_progress"), ("in_progress", "resolved"),
        ("resolved", "reopened"), ("reopened", "in_progress"), ("in_progress", "resolved"), ("resolved", "closed"),
    ]  # fmt: skip
    assert all(t["actor"] == "测试员" and t["note"] == f"to {t['to_status']}" for t in history)
    assert [t["at"] for t in history] == sorted(t["at"] for t in history)
    assert history[0]["department"] == event["department"] == "南山区住房和建设局"
    assert event["reopen_count"] == 1 and event["closed_at"] is not None and event["allowed_transitions"] == []
    stored = db.execute("SELECT count(*) FROM event_transitions WHERE event_code = %s", (code,)).fetchone()
    assert stored == (7,)
    assert httpx.get(f"{base}/events/EV20000101000001", timeout=60).status_code == 404
    assert step(base, "EV20000101000001", "rejected").status_code == 404
    assert httpx.get(f"{base}/events/nonsense", timeout=60).status_code == 400


def test_overdue_is_derived(base: str, place: dict[str, Any], db: psycopg.Connection) -> None:
    code = event_in(base, place, "in_progress")
    db.execute("UPDATE events SET reported_at = reported_at - interval '3 days', "
               "due_at = due_at - interval '3 days' WHERE code = %s", (code,))  # fmt: skip
    assert httpx.get(f"{base}/events/{code}", timeout=60).json()["overdue"] is True
    assert step(base, code, "resolved").json()["overdue"] is False


@pytest.mark.parametrize(("state", "targets"), [("reported", ("dispatched", "dispatched")),
                                                ("resolved", ("closed", "reopened"))])  # fmt: skip
def test_concurrent_transitions_one_wins(base: str, place: dict[str, Any], state: str,
                                         targets: tuple[str, str]) -> None:  # fmt: skip
    for _ in range(3):
        code = event_in(base, place, state)
        barrier = threading.Barrier(2)
        results: list[httpx.Response] = []

        def go(to: str, code: str = code, barrier: threading.Barrier = barrier, out: list = results) -> None:
            barrier.wait()
            out.append(step(base, code, to))

        threads = [threading.Thread(target=go, args=(to,)) for to in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in results) == [200, 409], [r.text for r in results]
        event = httpx.get(f"{base}/events/{code}", timeout=60).json()
        winner = next(r for r in results if r.status_code == 200).json()["status"]
        assert event["status"] == winner
        assert len(event["transitions"]) == len(PATHS[state]) + 1


def test_demo_events_are_valid_workflow_states(base: str, db: psycopg.Connection) -> None:
    rows = db.execute("SELECT DISTINCT ON (status) status, code FROM events ORDER BY status, code").fetchall()
    assert {r[0] for r in rows} <= set(STATUSES) and len(rows) >= 5
    for status, code in rows:
        res = httpx.get(f"{base}/events/{code}", timeout=60)
        assert res.status_code == 200, res.text
        event = res.json()
        assert event["status"] == status and event["transitions"] == []
        assert event["allowed_transitions"] == list(TRANSITIONS[status])
