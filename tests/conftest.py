"""Test fixtures: a throwaway PostGIS cluster the tests start themselves, the demo district, and the tiny city
with FZK-Haus (``tiny_fzk``).

The cluster lives in a fresh folder under /tmp (world-searchable, so the unprivileged server user can reach
it when tests run as root), runs with fsync off, and is stopped and deleted at the end of the session.
Tests that need an empty database get their own database in that cluster (``fresh_settings``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cim.cluster import EmbeddedCluster
from cim.db import ensure_database
from cim.settings import Settings, get_settings


@pytest.fixture(scope="session")
def cim_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="cim-test-", dir="/tmp"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(cim_home: Path) -> Iterator[Settings]:
    """Settings of the test cluster; also exported to the environment for code that reads it there."""
    saved = {k: os.environ.get(k) for k in ("CIM_HOME", "CIM_PG_FAST", "CIM_DATABASE_URL")}
    os.environ["CIM_HOME"] = str(cim_home)
    os.environ["CIM_PG_FAST"] = "1"
    os.environ.pop("CIM_DATABASE_URL", None)
    get_settings.cache_clear()
    s = get_settings()
    ensure_database(s)
    yield s
    EmbeddedCluster(s).stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def cluster_url(settings: Settings) -> str:
    return EmbeddedCluster(settings).info().url


@contextmanager
def new_database(settings: Settings, cluster_url: str) -> Iterator[Settings]:
    """Settings pointing at a brand-new empty database in the test cluster (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = cluster_url.replace("/cim?", "/postgres?")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = cluster_url.replace("/cim?", f"/{name}?")
    try:
        yield settings.model_copy(update={"database_url": url})
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture()
def fresh_settings(settings: Settings, cluster_url: str) -> Iterator[Settings]:
    """A brand-new empty database for one test."""
    with new_database(settings, cluster_url) as fresh:
        yield fresh


@pytest.fixture(scope="session")
def demo_dir(cim_home: Path) -> Path:
    """The demo district generated once for the session (scale 1, default seed)."""
    from sample_data.generate import generate

    out = cim_home / "sample"
    generate(out, scale=1)
    return out


@pytest.fixture(scope="session")
def demo_loaded(settings: Settings, demo_dir: Path) -> str:
    """The demo district loaded into the session database by the real ``cim demo load``; returns its output."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"})
    cim = str(Path(sys.executable).parent / "cim")
    res = subprocess.run([cim, "demo", "load"], env=env, text=True, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


FZK_HAUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ifc" / "AC20-FZK-Haus.ifc"


@pytest.fixture(scope="session")
def tiny_fzk(settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The tiny city (admin, parcels, buildings, pipes) with FZK-Haus placed by ``cim ingest ifc --anchor`` on the
    empty parcel of grid B, in a database of its own, made once per session (the IFC ingest is the slow part).
    Shared by several modules: tests may build tilesets from it but must leave its rows as they found them."""
    from pyproj import Transformer

    from ingest.city_layers import ingest_files

    import tinycity
    from cliharness import run_cli

    with new_database(settings, cluster_url) as fresh:
        ensure_database(fresh)
        files = tinycity.write_all(tmp_path_factory.mktemp("tiny"))
        for kind in ("admin", "parcels", "buildings", "pipes"):
            ingest_files(kind, [files[kind]], settings=fresh)
        lon, lat = Transformer.from_crs(4547, 4326, always_xy=True).transform(tinycity.X0 + 760, tinycity.Y0 + 300)
        with pytest.MonkeyPatch.context() as mp:
            res = run_cli(fresh, mp, "ingest", "ifc", str(FZK_HAUS), "--anchor", f"{lon},{lat},6.0")
        assert res.exit_code == 0, res.output
        yield fresh
