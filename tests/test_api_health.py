"""``GET /health`` over real HTTP from ``cim serve``."""

from __future__ import annotations

import httpx

from cim.cluster import free_port
from cim.db import connect
from cim.settings import Settings
from cim.store.catalog import table_counts

from server import api_server


def test_health_reports_schema_and_counts(settings: Settings, demo_loaded: str) -> None:
    with connect(settings) as conn:
        expected = table_counts(conn)
    with api_server({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"}) as base:
        res = httpx.get(base + "/health", timeout=10)
    assert res.status_code == 200
    body = res.json()
    assert body["status"] == "ok"
    db = body["database"]
    assert db["schema_version"] >= 1 and db["storage_srid"] == 4547
    assert db["postgis_version"].startswith("3.")
    assert db["counts"] == expected
    assert 4000 <= db["counts"]["buildings"] <= 6000 and db["counts"]["grids"] == 40


def test_health_says_503_when_the_database_is_down(settings: Settings) -> None:
    dead = f"postgresql://cim@127.0.0.1:{free_port()}/cim?connect_timeout=2"
    with api_server({"CIM_HOME": str(settings.home), "CIM_DATABASE_URL": dead}, use_cli=False) as base:
        res = httpx.get(base + "/health", timeout=30)
    assert res.status_code == 503
    assert res.json()["database"]["status"] == "unavailable"
