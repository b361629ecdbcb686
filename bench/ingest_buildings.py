"""Benchmark: building footprints from a GeoPackage into PostGIS, with codes and unit links.

Side by side in one run, on the same file and the same PostGIS:
- ours: ``cim ingest buildings`` (read, validate, repair, locate in grid/parcel, assign codes, COPY, upsert)
- peer: GDAL's ``ogr2ogr -f PostgreSQL`` (a plain copy: no validation, no codes, no spatial joins)
Both run as child processes; wall time and the child's peak RSS are reported.

Run: .venv/bin/python bench/ingest_buildings.py [--scale 20]   (scale 20 ≈ 100k buildings)
The cluster is a throwaway one in a temp folder with fsync off (as in the tests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyogrio

BIN = Path(sys.executable).parent


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a child; return (wall seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20)
    args = parser.parse_args()
    sample = Path(tempfile.gettempdir()) / f"cim-bench-sample-{args.scale}"
    home = Path(tempfile.mkdtemp(prefix="cim-bench-", dir="/tmp"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    cim = str(BIN / "cim")
    try:
        if not (sample / "buildings.gpkg").exists():
            print(f"generating scale {args.scale} into {sample} …", flush=True)
            run([cim, "sample", "generate", "--scale", str(args.scale), "--out", str(sample)], env)
        n = pyogrio.read_info(sample / "buildings.gpkg")["features"]
        run([cim, "db", "up"], env)
        run([cim, "ingest", "admin", str(sample / "admin.gpkg")], env)
        run([cim, "ingest", "parcels", str(sample / "parcels.gpkg")], env)
        ours, ours_rss = run([cim, "ingest", "buildings", str(sample / "buildings.gpkg")], env)
        again, again_rss = run([cim, "ingest", "buildings", str(sample / "buildings.gpkg")], env)
        from cim.cluster import EmbeddedCluster
        from cim.settings import Settings

        info = EmbeddedCluster(Settings(home=home)).info()
        pg = f"PG:host={info.socket_dir} port={info.port} dbname=cim user=cim"
        peer, peer_rss = run(
            ["ogr2ogr", "-f", "PostgreSQL", pg, str(sample / "buildings.gpkg"), "-nln", "peer_buildings",
             "-lco", "GEOMETRY_NAME=footprint", "-overwrite", "--config", "PG_USE_COPY", "YES"],
            env,
        )
        print(f"\n{n:,} buildings from a GeoPackage (scale {args.scale})")
        print(f"{'':34}{'wall s':>9}{'features/s':>13}{'peak RSS MiB':>14}")
        rows = [
            ("cim ingest buildings (first load)", ours, ours_rss),
            ("cim ingest buildings (reload)", again, again_rss),
            ("ogr2ogr -f PostgreSQL (plain copy)", peer, peer_rss),
        ]
        for label, wall, rss in rows:
            print(f"{label:<34}{wall:>9.2f}{n / wall:>13,.0f}{rss:>14,.0f}")
    finally:
        subprocess.run([cim, "db", "down"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
