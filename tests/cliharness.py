"""Run the real ``cim`` command in the test process (no interpreter start-up) against a test database."""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from cim.settings import Settings, get_settings
from cimctl.main import main


def run_cli(s: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """``cim ARGS`` with the environment of settings ``s`` (database, home, storage SRID, city code)."""
    monkeypatch.setenv("CIM_DATABASE_URL", str(s.database_url))
    monkeypatch.setenv("CIM_HOME", str(s.home))
    monkeypatch.setenv("CIM_STORAGE_SRID", str(s.storage_srid))
    monkeypatch.setenv("CIM_CITY_CODE", str(s.city_code))
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        get_settings.cache_clear()
