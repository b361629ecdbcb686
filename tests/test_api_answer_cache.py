"""The answer cache (api/answer_cache.py) over real HTTP: a repeated answer comes from memory, not the database;
a write through another connection shows in every server process within the documented bound
(``CIM_ANSWER_VERSION_TTL_S``), with a new ETag; ``If-None-Match`` gives 304 for the current copy only.

Two servers on one database of our own (the tiny city): one with a TTL of 10 minutes, which must keep
answering from its cache after the write (had it asked the database, the answer would have changed), and one
of two workers with a short TTL, which must answer the new state once the TTL has passed since the commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.city_layers import ingest_files

import tinycity
from conftest import new_database
from server import api_server

QUICK_TTL_S = 0.3


@pytest.fixture(scope="module")
def city(settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    out: Path = tmp_path_factory.mktemp("answer-cache")
    with new_database(settings, cluster_url) as s:
        ensure_database(s)
        files = tinycity.write_all(out)
        for kind in ("admin", "parcels", "buildings"):
            ingest_files(kind, [files[kind]], settings=s)
        yield s


def env(s: Settings, ttl_s: float) -> dict[str, str]:
    return {"CIM_HOME": str(s.home), "CIM_DATABASE_URL": str(s.database_url), "CIM_ANSWER_VERSION_TTL_S": str(ttl_s)}


def fresh_get(base: str, url: str, **headers: str) -> httpx.Response:
    """A GET on a new connection (so a server of several workers may answer it from any of them)."""
    return httpx.get(base + url, headers=headers, timeout=60)


def test_cached_answers_follow_writes_within_the_bound(city: Settings) -> None:
    building = tinycity.GRID_A + "00001"
    with connect(city) as conn:
        row = conn.execute("SELECT parcel_code FROM buildings WHERE building_code = %s", (building,)).fetchone()
    assert row is not None and row[0]
    parcel = row[0]
    urls = [
        f"/parcels/{parcel}/contents",
        f"/parcels/{parcel}/contents?format=geojson",
        f"/buildings/{building}",
        f"/buildings/{building}?houses_limit=5",
        f"/units/{tinycity.GRID_A}",
    ]
    with api_server(env(city, 600)) as slow, api_server(env(city, QUICK_TTL_S), workers=2) as quick:
        before: dict[str, httpx.Response] = {}
        for url in urls:
            first = fresh_get(slow, url)
            assert first.status_code == 200, (url, first.text[:300])
            etag = first.headers["etag"]
            assert etag.startswith('"') and not etag.startswith("W/")
            assert first.headers["cache-control"] == "public, no-cache"
            for _ in range(3):  # again: the same bytes and tag, from either worker of the quick server too
                for base in (slow, quick):
                    again = fresh_get(base, url)
                    assert (again.status_code, again.headers["etag"], again.content) == (200, etag, first.content)
            not_modified = fresh_get(slow, url, **{"If-None-Match": etag})
            assert (not_modified.status_code, not_modified.content, not_modified.headers["etag"]) == (304, b"", etag)
            before[url] = first
        assert before[urls[0]].json()["open_events"]["count"] == 0

        # One open event on the building, written by another process (this one) through its own connection.
        now = datetime.now(UTC)
        grid = tinycity.GRID_A
        with connect(city) as conn:
            conn.execute(
                """INSERT INTO events (code, category, status, reported_at, updated_at, description, geom,
                                       building_code, parcel_code, district_code, street_code, community_code,
                                       grid_code)
                   SELECT 'EV20261122000001', 'fire_safety', 'reported', %s, %s, 'test', ST_PointOnSurface(footprint),
                          building_code, parcel_code, %s, %s, %s, %s
                     FROM buildings WHERE building_code = %s""",
                (now, now, grid[:6], grid[:9], grid[:12], grid, building),
            )
            conn.commit()
        committed = time.monotonic()

        # The slow server read its counters moments ago and may keep them for 10 minutes: it answers from
        # memory, unchanged (the database would have given the event).
        for url in urls:
            res = fresh_get(slow, url)
            assert (res.status_code, res.headers["etag"], res.content) == (200, before[url].headers["etag"],
                                                                           before[url].content)  # fmt: skip
        assert time.monotonic() - committed < 600

        # The quick server: every answer served once the TTL has passed since the commit shows the event.
        time.sleep(max(0.0, QUICK_TTL_S + 0.05 - (time.monotonic() - committed)))
        for url in urls:
            for _ in range(3):
                res = fresh_get(quick, url)
                assert res.status_code == 200 and res.headers["etag"] != before[url].headers["etag"], url
        contents = fresh_get(quick, urls[0]).json()
        assert contents["open_events"] == {"count": 1, "by_category": {"fire_safety": 1}}
        profile = fresh_get(quick, urls[2]).json()
        assert profile["events"]["open"] == 1 and profile["events"]["open_items"][0]["code"] == "EV20261122000001"
        unit = fresh_get(quick, urls[4]).json()
        assert unit["stats"]["events"]["open"] == 1
        features = fresh_get(quick, urls[1]).json()["features"]
        assert [f["id"] for f in features if f["properties"]["layer"] == "event"] == ["EV20261122000001"]

        # Validators: the old tag no longer matches (200, the new answer), the new one does (304).
        new_tag = fresh_get(quick, urls[0]).headers["etag"]
        stale = fresh_get(quick, urls[0], **{"If-None-Match": before[urls[0]].headers["etag"]})
        assert stale.status_code == 200 and stale.json()["open_events"]["count"] == 1
        current = fresh_get(quick, urls[0], **{"If-None-Match": new_tag})
        assert (current.status_code, current.content) == (304, b"")

        # Unknown codes are still 404, malformed ones 400 (the cache front passes them on).
        assert fresh_get(quick, "/parcels/T999-9999/contents").status_code == 404
        assert fresh_get(quick, f"/buildings/{building}?houses_limit=-1").status_code == 400
        assert fresh_get(quick, "/parcels/T107-0001/contents?format=xml").status_code == 400
