"""The bad-input corpus (tests/data/bad, made by tests/data/make_bad_inputs.py): every file is refused by
the real ``cim ingest`` command with exit code 1 and a one-line message naming the file and the problem,
and the database is unchanged — or, where a repair is safe, it loads and the report counts the repair."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cim.db import ensure_database
from cim.settings import Settings
from ingest.city_layers import ingest_files

import tinycity
from cliharness import run_cli
from conftest import new_database
from dbcheck import fingerprint

BAD = Path(__file__).parent / "data" / "bad"
CASES: list[dict[str, Any]] = json.loads((BAD / "cases.json").read_text())


@pytest.fixture(scope="module")
def base(settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One database with the tiny city (units, parcels, buildings, houses, pipes, a device) for all cases."""
    with new_database(settings, cluster_url) as s:
        ensure_database(s)
        files = tinycity.write_all(tmp_path_factory.mktemp("city"))
        files["devices"] = tinycity.devices(tmp_path_factory.mktemp("dev"))
        for kind in ("admin", "parcels", "buildings", "houses", "pipes", "devices"):
            ingest_files(kind, [files[kind]], settings=s)
        yield s


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert all((BAD / c["file"]).exists() for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_bad_input(base: Settings, monkeypatch: pytest.MonkeyPatch, case: dict[str, Any]) -> None:
    before = fingerprint(base)
    path = BAD / case["file"]
    result = run_cli(base, monkeypatch, "ingest", case["kind"], str(path), *case["args"])
    if case["outcome"] in ("repair", "loads"):
        assert result.exit_code == 0, result.stderr
        for needle in case["expect"]:
            assert needle in result.stdout, result.stdout
        return
    assert result.exit_code == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    assert case["file"] in line, line
    for needle in case["expect"]:
        assert needle in line, line
    assert fingerprint(base) == before
