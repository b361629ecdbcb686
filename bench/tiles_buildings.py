"""Benchmark: LOD1 building tiles from PostGIS — ``cim tiles build`` against ``py3dtiles export``, same data.

For each ``--scale`` (1 ≈ 4.8k buildings, 2 ≈ 10k, 10 ≈ 52k, 20 ≈ 113k, 185 ≈ 1.008M) in one run:
- the demo district's admin units, parcels and buildings are loaded once into a cluster kept under
  ``/tmp/cim-bench-tiles-<scale>`` (fsync off, as in the tests); only those three files of ``cim sample
  generate --scale`` are generated, once, into ``/tmp/cim-bench-sample-<scale>`` (shared with
  bench/ingest_buildings.py); at scale 185 that is ~1.5 GB of memory and a few minutes, the load ~10 min;
- ours: ``cim tiles build --layer buildings`` as a child process (wall time including start-up, peak RSS
  of the child), then ``--incremental`` with nothing changed and after one building changed;
- peer: ``py3dtiles export`` (Oslandia's py3dtiles, installed into its own venv ``/tmp/py3dtiles-venv`` on
  first use) reading a table of the same LOD1 faces (roof and walls) in EPSG:4978, which it needs as
  MultiPolygonZ; the time to make that table is reported apart and not charged to py3dtiles;
- both outputs go through the Khronos glTF validator (py3dtiles writes b3dm: the embedded glTF is
  validated); errors and warnings are counted. Ours are meshopt-compressed, which the validator cannot
  decode: they are also decoded with meshoptimizer's JS decoder (tests/js/decode_meshopt.mjs) and the
  decoded tiles validated ("decoded" in the column), so accessor data is checked as well.
- ``--million``: scale 185 (1,007,683 buildings) without py3dtiles (which needs ~350 s per 113k buildings),
  for the issue's target of a million buildings in under two minutes with under 2 GB of peak RSS.

Run: .venv/bin/python bench/tiles_buildings.py [--scale 1 --scale 20] [--no-py3dtiles] [--million]
Needs node_modules (``make npm-deps``) for the validator columns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
PY3DTILES_VENV = Path("/tmp/py3dtiles-venv")
PY3DTILES = "py3dtiles[postgres]==12.1.1"
SOLIDS_TABLE = "bench_lod1_solids_ecef"
MILLION_SCALE = 185  # 1,007,683 buildings with the default seed


def run(cmd: list[str], env: dict[str, str], timeout: float | None = None) -> tuple[float, float, str, float]:
    """Run a child; return (wall seconds, peak RSS in MiB, stdout, CPU seconds of the child: user + system).
    Fails loudly on a non-zero exit. The CPU time is the child's own work whatever else runs on the machine
    (the database server's work is not in it)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise TimeoutError(f"{' '.join(cmd[:3])} … did not finish in {timeout:.0f} s")
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return wall, usage.ru_maxrss / 1024, stdout, usage.ru_utime + usage.ru_stime


def postgres_cpu(home: Path) -> float:
    """CPU seconds (user + system) used so far by the cluster under ``home``: the postmaster with its exited
    children, plus its running backends and parallel workers. Differences of two readings give the database's
    share of a build."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((home / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster:
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def folder_bytes(folder: Path, suffixes: tuple[str, ...]) -> tuple[int, int]:
    """Total bytes of the tile files (and tileset JSON) under a folder, and the number of tile files."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    tiles = [p for p in files if p.suffix in suffixes]
    return sum(p.stat().st_size for p in tiles) + sum(p.stat().st_size for p in files if p.name == "tileset.json"), len(
        tiles
    )


def _validator_counts(targets: list[str]) -> str:
    res = subprocess.run(
        ["node", str(REPO / "tests" / "js" / "validate_gltf.mjs"), *targets], capture_output=True, text=True
    )
    reports = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    errors = sum(r["errors"] for r in reports)
    warnings = sum(r["warnings"] for r in reports)
    codes = sorted({m["code"] for r in reports for m in r["messages"] if m["severity"] <= 1})
    return f"{errors} errors / {warnings} warnings" + (f" ({', '.join(codes[:4])})" if codes else "")


def validate(folder: Path) -> str:
    """Khronos glTF validator over every .glb (and the glTF inside every .b3dm): 'E errors / W warnings'; for
    meshopt-compressed .glb files also over their decoded copies."""
    if not (REPO / "node_modules" / "gltf-validator").is_dir():
        return "n/a (run make npm-deps)"
    with tempfile.TemporaryDirectory() as tmp:
        for i, b3dm in enumerate(sorted(folder.rglob("*.b3dm"))):
            data = b3dm.read_bytes()
            lengths = struct.unpack_from("<4I", data, 12)
            (Path(tmp) / f"{i}.glb").write_bytes(data[28 + sum(lengths) :])
        result = _validator_counts([str(folder), tmp])
        if any(folder.rglob("*.glb")):
            decoded = Path(tmp) / "decoded"
            res = subprocess.run(
                ["node", str(REPO / "tests" / "js" / "decode_meshopt.mjs"), str(folder), str(decoded)],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                return f"{result}; meshopt decoding failed: {res.stderr.strip()[:200]}"
            if any(json.loads(line)["decodedViews"] for line in res.stdout.splitlines() if line.strip()):
                result += f"; decoded: {_validator_counts([str(decoded)])}"
    return result


def ensure_py3dtiles() -> Path:
    exe = PY3DTILES_VENV / "bin" / "py3dtiles"
    if not exe.exists():
        print(f"installing {PY3DTILES} into {PY3DTILES_VENV} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PY3DTILES_VENV)], check=True)
        subprocess.run([str(PY3DTILES_VENV / "bin" / "pip"), "install", "-q", PY3DTILES], check=True)
    return exe


def generate_building_layers(out: Path, scale: int, seed: int | None = None) -> None:
    """Only the admin, parcels and buildings files of ``cim sample generate --scale`` (the same files, byte for
    byte: the generator draws each part from its own random stream), without houses, networks, devices,
    observations and events, which at scale 177 would take many minutes and several GB for nothing here."""
    import numpy as np

    from sample_data import generate as g

    out.mkdir(parents=True, exist_ok=True)
    rng_layout, rng_buildings, *_ = np.random.default_rng(g.DEFAULT_SEED if seed is None else seed).spawn(5)
    lattice = g.make_lattice(scale, rng_layout)
    admin = g.make_admin(lattice, scale, rng_layout)
    terrain = g.make_terrain(lattice, scale, rng_layout)
    parcels = g.make_parcels(lattice, admin, rng_layout)
    buildings, controls = g.make_buildings(parcels, admin, terrain, rng_buildings)
    with g._pinned_gpkg_timestamp():
        g._write_vector(out / "admin.gpkg", [("admin", g._admin_frame(lattice, admin))], "GPKG")
        g._write_vector(out / "parcels.gpkg", [("parcels", g._parcel_frame(parcels, controls))], "GPKG")
        g._write_vector(out / "buildings.gpkg", [("buildings", g._building_frame(buildings))], "GPKG")


def prepare(scale: int, env: dict[str, str]) -> int:
    """Generate (once) and load (once) the district's admin units, parcels and buildings; the building count."""
    from cim.db import connect
    from cim.settings import Settings

    cim = str(BIN / "cim")
    sample = Path(tempfile.gettempdir()) / f"cim-bench-sample-{scale}"
    if not (sample / "buildings.gpkg").exists():
        print(f"generating the admin, parcels and buildings of scale {scale} into {sample} …", flush=True)
        generate_building_layers(sample, scale)
    run([cim, "db", "up"], env)
    settings = Settings(home=Path(env["CIM_HOME"]), pg_fast=True)
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM buildings").fetchone()
    if not row or row[0] == 0:
        print(f"loading scale {scale} buildings …", flush=True)
        # A million-building COPY outlasts the default 30 s statement timeout on a loaded machine.
        load_env = {**env, "CIM_STATEMENT_TIMEOUT_MS": "0"}
        for layer in ("admin", "parcels", "buildings"):
            run([cim, "ingest", layer, str(sample / f"{layer}.gpkg")], load_env)
        with connect(settings) as conn:
            row = conn.execute("SELECT count(*) FROM buildings").fetchone()
    return int(row[0]) if row else 0


def _summary_seconds(text: str) -> float | None:
    """The build's own time from ``cim tiles build``'s summary line (without interpreter and CRS start-up)."""
    match = re.search(r"([0-9.]+) s →", text)
    return float(match.group(1)) if match else None


def bench_scale(scale: int, with_peer: bool, peer_timeout: float) -> list[dict[str, str]]:
    """One scale: ours (full build, two incremental ones) and, if asked, py3dtiles; rows of the printed table."""
    from cim.cluster import EmbeddedCluster
    from cim.db import connect, transaction
    from cim.settings import Settings
    from cim.store.tiles import create_lod1_solids_table, drop_table

    home = Path(f"/tmp/cim-bench-tiles-{scale}")
    home.mkdir(exist_ok=True)
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    cim = str(BIN / "cim")
    rows: list[dict[str, str]] = []
    try:
        n = prepare(scale, env)
        # This process's own statements (py3dtiles' input table: every building's faces) may outlast the default
        # statement timeout on a loaded machine; the timed builds run as children with the default settings.
        settings = Settings(home=home, pg_fast=True, statement_timeout_ms=0)
        out = Path(tempfile.mkdtemp(prefix="cim-bench-tiles-out-", dir="/tmp"))
        build = [cim, "tiles", "build", "--layer", "buildings", "--out", str(out)]
        pg_before = postgres_cpu(home)
        wall, rss, text, cpu = run(build, env)
        pg_cpu = postgres_cpu(home) - pg_before
        own = _summary_seconds(text) or wall
        size, tiles = folder_bytes(out / "buildings", (".glb",))
        rows.append(
            {
                "tool": "cim tiles build",
                "buildings": f"{n:,}",
                "tiles": f"{tiles:,}",
                "command s": f"{wall:.1f}",
                "build s": f"{own:.1f}",
                "buildings/s": f"{n / own:,.0f}",
                "B/building": f"{size / n:,.0f}",
                "CPU s": f"{cpu:.1f}",
                "pg CPU s": f"{pg_cpu:.1f}",
                "peak RSS MiB": f"{rss:,.0f}",
                "glTF validator": validate(out / "buildings"),
            }
        )
        for label, change in (("nothing changed", False), ("one building changed", True)):
            if change:
                with connect(settings) as conn:
                    conn.execute(
                        "UPDATE buildings SET height_m = height_m + 1 WHERE building_code = "
                        "(SELECT min(building_code) FROM buildings)"
                    )
            pg_before = postgres_cpu(home)
            wall, rss, text, cpu = run([*build, "--incremental"], env)
            pg_cpu = postgres_cpu(home) - pg_before
            own = _summary_seconds(text) or wall
            done = text.split("(", 1)[1].split(";")[0] if "(" in text else ""
            rows.append(
                {
                    "tool": f"  --incremental, {label}",
                    "command s": f"{wall:.1f}",
                    "build s": f"{own:.1f}",
                    "CPU s": f"{cpu:.1f}",
                    "pg CPU s": f"{pg_cpu:.1f}",
                    "peak RSS MiB": f"{rss:,.0f}",
                    "note": done,
                }
            )
        shutil.rmtree(out, ignore_errors=True)

        if with_peer:
            exe = ensure_py3dtiles()
            started = time.perf_counter()
            with transaction(settings) as conn:
                create_lod1_solids_table(conn, SOLIDS_TABLE, settings.height_offset_m)
            prep = time.perf_counter() - started
            info = EmbeddedCluster(settings).info()
            dsn = f"host={info.socket_dir} port={info.port} dbname=cim user=cim"
            peer_out = Path(tempfile.mkdtemp(prefix="cim-bench-py3dtiles-", dir="/tmp"))
            peer = [str(exe), "export", "-D", dsn, "-t", SOLIDS_TABLE, "-c", "geom", "-i", "id", "-s", str(peer_out)]
            try:
                wall, rss, _, cpu = run(peer, env, timeout=peer_timeout)
                size, tiles = folder_bytes(peer_out, (".b3dm", ".glb"))
                rows.append(
                    {
                        "tool": "py3dtiles export",
                        "buildings": f"{n:,}",
                        "tiles": f"{tiles:,}",
                        "command s": f"{wall:.1f}",
                        "build s": f"{wall:.1f}",
                        "buildings/s": f"{n / wall:,.0f}",
                        "B/building": f"{size / n:,.0f}",
                        "CPU s": f"{cpu:.1f}",
                        "peak RSS MiB": f"{rss:,.0f}",
                        "glTF validator": validate(peer_out),
                        "note": f"+ {prep:.1f} s to make its input table",
                    }
                )
            except TimeoutError as exc:
                rows.append(
                    {
                        "tool": "py3dtiles export",
                        "buildings": f"{n:,}",
                        "command s": f"> {peer_timeout:.0f}",
                        "note": str(exc),
                    }
                )
            finally:
                shutil.rmtree(peer_out, ignore_errors=True)
                with transaction(settings) as conn:
                    drop_table(conn, SOLIDS_TABLE)
    finally:
        subprocess.run([cim, "db", "down"], env=env, capture_output=True)
    return rows


COLUMNS = (
    ("tool", 38),
    ("buildings", 10),
    ("tiles", 7),
    ("command s", 10),
    ("build s", 9),
    ("buildings/s", 12),
    ("B/building", 11),
    ("CPU s", 7),
    ("pg CPU s", 9),
    ("peak RSS MiB", 13),
    ("glTF validator", 0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=int, action="append", help="demo scale (repeatable; default 1)")
    parser.add_argument("--no-py3dtiles", action="store_true", help="skip the py3dtiles export comparison")
    parser.add_argument("--py3dtiles-timeout", type=float, default=1800.0, help="seconds before giving up on it")
    parser.add_argument(
        "--million",
        action="store_true",
        help=f"add scale {MILLION_SCALE} (1,007,683 buildings), always without py3dtiles",
    )
    args = parser.parse_args()
    scales = list(args.scale or ([] if args.million else [1]))
    if args.million:
        scales.append(MILLION_SCALE)
    for scale in scales:
        with_peer = not args.no_py3dtiles and scale != MILLION_SCALE
        rows = bench_scale(scale, with_peer, args.py3dtiles_timeout)
        print(f"\nLOD1 buildings → 3D Tiles, demo district scale {scale}  (command s: whole CLI run incl. start-up;")
        print(
            "build s: the build's own time; buildings/s from build s; CPU s and RSS: the child process with its mesh "
            "workers, user + system; pg CPU s: the database's)"
        )
        print("  ".join(f"{name:<{w}}" if i == 0 else f"{name:>{w}}" for i, (name, w) in enumerate(COLUMNS)))
        for row in rows:
            cells = [
                f"{row.get(name, ''):<{w}}" if i == 0 else f"{row.get(name, ''):>{w}}"
                for i, (name, w) in enumerate(COLUMNS)
            ]
            print("  ".join(cells) + (f"  {row['note']}" if row.get("note") else ""))
        ours, peer = rows[0], next((r for r in rows if r["tool"] == "py3dtiles export" and "B/building" in r), None)
        if peer is not None:
            speed = float(peer["build s"]) / float(ours["build s"])
            size = float(ours["B/building"].replace(",", "")) / float(peer["B/building"].replace(",", ""))
            print(f"ours vs py3dtiles: {speed:,.0f}x faster (build s), {size:.2f}x its bytes per building")


if __name__ == "__main__":
    main()
