"""Benchmark: building footprints from a GeoPackage into PostGIS, with codes and unit links (goal ≥ 20k/s).

Side by side in one run, on the same file and the same PostGIS:
- ours, first load: ``cim ingest buildings`` into an empty buildings table (read, validate, repair, locate
  in grid/parcel, assign codes, load), as a child process,
- ours, reload: the same file again (every building unchanged, nothing written),
- peer: GDAL's ``ogr2ogr -f PostgreSQL`` (a plain copy: no validation, no codes, no spatial joins).
Each is repeated (``--repeat``; the buildings table is emptied before each first load); the best and the
median wall time are shown. Also shown: CPU seconds of the child (all its threads) and of its PostgreSQL
backends (sampled from /proc every 20 ms), and peak memory: the child's peak RSS, the backends' peak RSS
(which counts the shared buffers they touched) and their peak private (anonymous) memory. The machine is
shared: CPU seconds are steadier than wall time when it is busy; the load average is printed.

``--baseline DIR`` also runs the first load and the reload with the code of another checkout (DIR first on
PYTHONPATH), alternating with this one in every repeat: paired figures of a change on a busy machine.

Run: .venv/bin/python bench/ingest_buildings.py [--scale 20] [--repeat 3] [--baseline DIR]   (scale 20 ≈ 113k)
The cluster is a throwaway one in a temp folder with fsync off (as in the tests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyogrio

BIN = Path(sys.executable).parent
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One child run: wall seconds, CPU seconds and peak memory (MiB) of the child and its backends."""

    wall: float
    cpu: float
    rss: float
    backend_cpu: float
    backend_rss: float
    backend_private: float


@dataclass
class Backends:
    """Samples the PostgreSQL backends of user ``cim`` (not the postmaster's helpers) while a child runs."""

    postmaster: int
    cpu: dict[int, float] = field(default_factory=dict)
    rss: float = 0.0
    private: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        for pid in _children(self.postmaster):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if not cmdline.startswith(b"postgres: cim cim"):
                    continue
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = dict(
                    line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
                )
            except (FileNotFoundError, ProcessLookupError):
                continue
            self.cpu[pid] = (int(stat[11]) + int(stat[12])) / TICK
            self.rss = max(self.rss, int(status["VmHWM"].split()[0]) / 1024)
            self.private = max(self.private, int(status.get("RssAnon", "0 kB").split()[0]) / 1024)

    def watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.02)

    def __enter__(self) -> Backends:
        self._thread = threading.Thread(target=self.watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return found


def run(cmd: list[str], env: dict[str, str], postmaster: int | None = None) -> Run:
    """Run a child: its wall time, CPU and peak RSS (``wait4``: all its threads and processes), and those of
    its database backends when ``postmaster`` is given."""
    watch = Backends(postmaster) if postmaster else None
    if watch:
        watch.__enter__()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if watch:
        watch.__exit__()
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return Run(
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        sum(watch.cpu.values()) if watch else 0.0,
        watch.rss if watch else 0.0,
        watch.private if watch else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a checkout whose code to run alongside (paired runs)")
    args = parser.parse_args()
    sample = Path(tempfile.gettempdir()) / f"cim-bench-sample-{args.scale}"
    home = Path(tempfile.mkdtemp(prefix="cim-bench-", dir="/tmp"))
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    os.environ.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    cim = str(BIN / "cim")
    try:
        if not (sample / "buildings.gpkg").exists():
            print(f"generating scale {args.scale} into {sample} …", flush=True)
            run([cim, "sample", "generate", "--scale", str(args.scale), "--out", str(sample)], env)
        n = pyogrio.read_info(sample / "buildings.gpkg")["features"]
        run([cim, "db", "up"], env)
        run([cim, "ingest", "admin", str(sample / "admin.gpkg")], env)
        run([cim, "ingest", "parcels", str(sample / "parcels.gpkg")], env)

        import psycopg

        from cim.cluster import EmbeddedCluster
        from cim.settings import Settings

        cluster = EmbeddedCluster(Settings(home=home))
        info = cluster.info()
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        load_avg = os.getloadavg()[0]
        first: list[Run] = []
        again: list[Run] = []
        peer: list[Run] = []
        base_first: list[Run] = []
        base_again: list[Run] = []
        pg = f"PG:host={info.socket_dir} port={info.port} dbname=cim user=cim"
        variants = [(env, first, again)]
        if args.baseline:
            base_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
            variants.append((base_env, base_first, base_again))
        for repeat in range(args.repeat):
            for variant_env, firsts, agains in variants[:: 1 if repeat % 2 == 0 else -1]:
                with psycopg.connect(info.url, autocommit=True) as conn:
                    conn.execute("TRUNCATE buildings, building_history CASCADE")
                    conn.execute("VACUUM ANALYZE buildings")
                ingest = [cim, "ingest", "buildings", str(sample / "buildings.gpkg")]
                firsts.append(run(ingest, variant_env, postmaster))
                agains.append(run(ingest, variant_env, postmaster))
            ogr2ogr = ["ogr2ogr", "-f", "PostgreSQL", pg, str(sample / "buildings.gpkg"), "-nln", "peer_buildings"]
            ogr2ogr += ["-lco", "GEOMETRY_NAME=footprint", "-overwrite", "--config", "PG_USE_COPY", "YES"]
            peer.append(run(ogr2ogr, env, postmaster))
        print(
            f"\n{n:,} buildings from a GeoPackage (scale {args.scale}); {os.cpu_count()} CPUs; "
            f"best and median of {args.repeat}; load average {load_avg:.2f} at start, {os.getloadavg()[0]:.2f} at end"
        )
        print(
            f"{'':36}{'wall s':>8}{'median':>8}{'features/s':>12}{'CPU s':>7}{'PG CPU s':>9}"
            f"{'RSS MiB':>9}{'PG RSS':>8}{'PG own':>8}"
        )
        rows = [
            ("cim ingest buildings (first load)", first),
            ("cim ingest buildings (reload)", again),
            ("ogr2ogr -f PostgreSQL (plain copy)", peer),
        ]
        if args.baseline:
            rows[2:2] = [("baseline: first load", base_first), ("baseline: reload", base_again)]
        for label, runs in rows:
            best = min(runs, key=lambda r: r.wall)
            median = statistics.median(r.wall for r in runs)
            print(
                f"{label:<36}{best.wall:>8.2f}{median:>8.2f}{n / best.wall:>12,.0f}"
                f"{min(r.cpu for r in runs):>7.2f}{min(r.backend_cpu for r in runs):>9.2f}"
                f"{max(r.rss for r in runs):>9,.0f}{max(r.backend_rss for r in runs):>8,.0f}"
                f"{max(r.backend_private for r in runs):>8,.0f}"
            )
        print(
            "CPU s: the child (all threads); PG CPU s: its database backends; RSS: the child's peak; "
            "PG RSS: the backends' peak (shared buffers included); PG own: their peak private memory. "
            "Wall time on an idle machine is about CPU s + PG CPU s minus what overlaps."
        )
    finally:
        subprocess.run([cim, "db", "down"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
