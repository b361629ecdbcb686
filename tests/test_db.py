"""The embedded cluster through the real CLI (as root: the server runs as an unprivileged user; as a normal
user), CIM_DATABASE_URL mode, and migrations."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cim.cluster import EmbeddedCluster
from cim.db import ensure_database
from cim.migrate import MigrationError, apply_migrations, load_migrations, schema_version
from cim.settings import Settings

CIM = str(Path(sys.executable).parent / "cim")


@pytest.fixture()
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cim-cli-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    cluster = EmbeddedCluster(Settings(home=path))
    if cluster.is_running():
        cluster.stop()
    shutil.rmtree(path, ignore_errors=True)


def cim(home: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    if url:
        env["CIM_DATABASE_URL"] = url
    return subprocess.run([CIM, *args], env=env, text=True, capture_output=True, timeout=180)


def server_uid(home: Path) -> int:
    pid = int((home / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_db_up_status_down_reset(home: Path) -> None:
    up = cim(home, "db", "up")
    assert up.returncode == 0, up.stderr
    assert "schema version" in up.stdout and "postgis" in up.stdout.lower()
    if os.geteuid() == 0:
        # PostgreSQL refuses root: the server runs as the unprivileged system user.
        assert server_uid(home) == pwd.getpwnam("cim-pg").pw_uid
    status = cim(home, "db", "status")
    assert status.returncode == 0, status.stderr
    assert "running" in status.stdout and str(home / "pg" / "run") in status.stdout
    assert f"schema version: {load_migrations()[-1].version}" in status.stdout
    again = cim(home, "db", "up")  # idempotent
    assert again.returncode == 0, again.stderr

    # Data survives down/up; reset empties it.
    info = EmbeddedCluster(Settings(home=home)).info()
    with psycopg.connect(info.url, autocommit=True) as conn:
        conn.execute("INSERT INTO cim_settings VALUES ('marker', 'x')")
    down = cim(home, "db", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    stopped = cim(home, "db", "status")
    assert stopped.returncode == 3 and "stopped" in stopped.stdout
    assert cim(home, "db", "up").returncode == 0
    info = EmbeddedCluster(Settings(home=home)).info()
    with psycopg.connect(info.url) as conn:
        assert conn.execute("SELECT value FROM cim_settings WHERE key = 'marker'").fetchone() == ("x",)
    # TCP with the generated password works too.
    with psycopg.connect(info.tcp_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    reset = cim(home, "db", "reset", "--yes")
    assert reset.returncode == 0, reset.stderr
    info = EmbeddedCluster(Settings(home=home)).info()
    with psycopg.connect(info.url) as conn:
        assert conn.execute("SELECT count(*) FROM cim_settings WHERE key = 'marker'").fetchone() == (0,)
        assert schema_version(conn) == load_migrations()[-1].version
    assert cim(home, "db", "down").returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="already running as a normal user: covered by the test above")
def test_cluster_as_a_normal_user(home: Path) -> None:
    """Fork, drop to the unprivileged 'nobody', and run the cluster there: pg_ctl runs directly."""
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    pid = os.fork()
    if pid == 0:  # child: never returns to pytest
        code = 1
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            settings = Settings(home=home, pg_fast=True)
            status = ensure_database(settings)
            cluster = EmbeddedCluster(settings)
            ok = status.schema_version >= 1 and cluster.is_running() and server_uid(home) == nobody.pw_uid
            cluster.stop()
            code = 0 if ok and not cluster.is_running() else 2
        except BaseException as exc:
            sys.stderr.write(f"child failed: {exc!r}\n")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_database_url_starts_nothing(home: Path, fresh_settings: Settings) -> None:
    assert fresh_settings.database_url
    up = cim(home, "db", "up", url=fresh_settings.database_url)
    assert up.returncode == 0, up.stderr
    assert "CIM_DATABASE_URL" in up.stdout
    assert not (home / "pg").exists()
    with psycopg.connect(fresh_settings.database_url) as conn:
        assert schema_version(conn) == load_migrations()[-1].version
    down = cim(home, "db", "down", url=fresh_settings.database_url)
    assert "no embedded cluster" in down.stdout


def test_migrations_apply_once_and_guard_the_srid(fresh_settings: Settings) -> None:
    assert fresh_settings.database_url
    with psycopg.connect(fresh_settings.database_url) as conn:
        assert schema_version(conn) == 0
        first = apply_migrations(conn, 4547)
        assert first == [m.version for m in load_migrations()]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert apply_migrations(conn, 4547) == []
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == tables
        assert conn.execute("SELECT count(*) FROM cim_schema_migrations").fetchone() == (len(first),)
        with pytest.raises(MigrationError, match="EPSG:4547 but CIM_STORAGE_SRID is 3067"):
            apply_migrations(conn, 3067)
        # An applied migration that was edited afterwards is refused.
        conn.execute("UPDATE cim_schema_migrations SET checksum = 'x' WHERE version = 1")
        conn.commit()
        with pytest.raises(MigrationError, match="changed after it was applied"):
            apply_migrations(conn, 4547)


def test_geometry_columns_use_the_storage_srid(fresh_settings: Settings) -> None:
    ensure_database(fresh_settings)
    assert fresh_settings.database_url
    with psycopg.connect(fresh_settings.database_url) as conn:
        srids = conn.execute("SELECT DISTINCT srid FROM geometry_columns WHERE f_table_schema = 'public'").fetchall()
    assert srids == [(4547,)]


def test_migrations_guard_the_city_code(fresh_settings: Settings) -> None:
    assert fresh_settings.database_url
    with psycopg.connect(fresh_settings.database_url) as conn:
        assert apply_migrations(conn, 4547, "9901") == [m.version for m in load_migrations()]
        check = conn.execute(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_type t ON t.oid = c.contypid "
            "WHERE t.typname = 'shenzhen_code'"
        ).fetchall()
        assert len(check) == 1 and "^9901(0[1-9]|[1-9][0-9])[0-9]*$" in check[0][0]
        assert apply_migrations(conn, 4547, "9901") == []
        with pytest.raises(MigrationError, match="holds the codes of city 9901 but CIM_CITY_CODE is 4403"):
            apply_migrations(conn, 4547, "4403")
        with pytest.raises(MigrationError, match='CIM_CITY_CODE: city code "44\'3" is not 4 digits'):
            apply_migrations(conn, 4547, "44'3")
        # A database migrated before the city code was a setting holds Shenzhen codes.
        conn.execute("DELETE FROM cim_settings WHERE key = 'city_code'")
        conn.commit()
        with pytest.raises(MigrationError, match="holds the codes of city 4403 but CIM_CITY_CODE is 9901"):
            apply_migrations(conn, 4547, "9901")
        assert apply_migrations(conn, 4547, "4403") == []
