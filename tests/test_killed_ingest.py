"""A load killed with SIGKILL in the middle of its transaction leaves the database and $CIM_HOME as they
were: the transaction never commits and nothing is written outside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from cim.db import connect
from cim.settings import Settings

from dbcheck import fingerprint


def files_under(home: Path) -> set[str]:
    return {str(p.relative_to(home)) for p in home.rglob("*") if "pg" not in p.relative_to(home).parts[:1]}


def test_sigkill_during_a_load_changes_nothing(settings: Settings, demo_loaded: str, tmp_path: Path) -> None:
    # Every observation of the demo with another value: a load that would rewrite 200k rows.
    frame = pd.read_csv(settings.home / "sample" / "observations.csv", dtype=str)
    frame["value"] = (pd.to_numeric(frame["value"]) + 1.5).round(3).astype(str)
    changed = tmp_path / "observations_changed.csv"
    frame.to_csv(changed, index=False)
    before = fingerprint(settings)
    home_before = files_under(settings.home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(settings.home), "CIM_PG_FAST": "1"})
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cim"), "ingest", "observations", str(changed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Wait until the load is inside its transaction, writing to the database, then kill it.
    deadline = time.monotonic() + 120
    writing = False
    with connect(settings) as conn:
        conn.autocommit = True
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND backend_xid IS NOT NULL "
                "AND pid <> pg_backend_pid() AND (query ILIKE 'COPY%%' OR query ILIKE '%%observations%%')"
            ).fetchone()
            if row and row[0]:
                writing = True
                break
            time.sleep(0.05)
    assert writing, "the load never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The server notices the lost client and rolls back; wait for its backend to go away.
    with connect(settings) as conn:
        conn.autocommit = True
        for _ in range(200):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
            ).fetchone()
            if row and row[0] == 0:
                break
            time.sleep(0.1)
    assert fingerprint(settings) == before
    assert files_under(settings.home) == home_before
