"""Benchmark: vector tiles from the API against the raw ``ST_AsMVT`` query, and cached tile throughput.

1. **City**: the admin units, parcels and buildings of ``cim sample generate --scale N`` (10 ≈ 52k buildings),
   loaded once into a cluster under ``/tmp/cim-bench-api-tiles-N`` (the files are generated once into
   ``/tmp/cim-bench-sample-N``, shared with bench/tiles_buildings.py and bench/ingest_buildings.py).
2. **Uncached**: the server (uvicorn, one worker, no access log) runs with ``CIM_TILE_CACHE_MB=0``, so every
   request renders. For every tile of the chosen zooms that holds buildings, this process (the load
   generator, not the server) times ``--repeat`` requests one at a time (identity encoding, as the raw query
   is not compressed) and the same statement with the same parameters and settings (JIT off) through psycopg
   on one connection (`cim.store.vector_tiles.raw_tile_sql`), interleaved run by run; medians per tile are
   summed per zoom. Target: server ≤ 1.3× raw.
   The gzip figure (level 1, made on the miss path) is reported apart.
3. **Cached**: a second server with the cache on; the tiles are requested once to warm it; then ``wrk``
   (Debian package) cycles through all tile URLs from its own process: whole bodies, gzip bodies, and
   conditional requests answered 304. Target: ≥ 5,000 tiles/s.

Run: .venv/bin/python bench/api_tiles.py [--scale 10] [--zoom 14 --zoom 15 --zoom 16] [--repeat 3]
The figures depend on the machine's load: say how loaded it was when you quote them.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import morecantile

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from tiles_buildings import prepare  # noqa: E402  (bench/ sibling: the shared city loader)

from api.tile_grid import TMS, search_box  # noqa: E402
from cim.cluster import EmbeddedCluster, free_port  # noqa: E402
from cim.db import connect  # noqa: E402
from cim.settings import Settings  # noqa: E402
from cim.store.vector_tiles import (  # noqa: E402
    MVT_BUFFER,
    MVT_EXTENT,
    TILE_LAYERS,
    layer_extent,
    raw_tile_sql,
    storage_srid,
)

LAYER = TILE_LAYERS["buildings"]


def start_server(env: dict[str, str], extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [str(BIN / "python"), "-m", "uvicorn", "api.app:app", "--port", str(port), "--log-level", "warning",
           "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**env, **extra}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(base + "/health", timeout=5)
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                why = proc.stderr.read().decode() if proc.stderr else ""
                raise SystemExit(f"the server did not start: {why}") from None
            time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tiles_with_buildings(settings: Settings, zooms: list[int]) -> list[morecantile.Tile]:
    with connect(settings) as conn:
        extent = layer_extent(conn, LAYER, storage_srid(conn))
    assert extent.lonlat is not None, "no buildings"
    return list(TMS.tiles(*extent.lonlat, zooms=zooms))


Timings = dict[str, dict[morecantile.Tile, float]]


def time_uncached(settings: Settings, base: str, tiles: list[morecantile.Tile], repeat: int) -> Timings:
    """Per tile, the median seconds of: the tile statement through psycopg (``raw``), the API's tile in identity
    encoding (``api``) and gzipped (``gzip``). The three are interleaved run by run, so each sees the same
    machine load; the first round of each tile warms caches and plans and is not counted. Tiles without
    features are left out."""
    out: Timings = {"raw": {}, "api": {}, "gzip": {}}
    u = urlsplit(base)
    client = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=300)
    with connect(settings) as conn:
        srid = storage_srid(conn)
        extent = layer_extent(conn, LAYER, srid)
        query = raw_tile_sql(LAYER, LAYER.fields)
        conn.execute("SET jit = off")  # as the server runs tile statements (cim.store.vector_tiles.render_mvt)

        def raw(t: morecantile.Tile, box: tuple[float, float, float, float]) -> bytes:
            params = {"table": LAYER.table, "layer": LAYER.name, "z": t.z, "x": t.x, "y": t.y, "extent": MVT_EXTENT,
                      "buffer": MVT_BUFFER, "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
                      "step": max(box[2] - box[0], box[3] - box[1], 1.0) / 16, "srid": srid}  # fmt: skip
            row = conn.execute(query, params, prepare=True).fetchone()
            return bytes(row[1]) if row and row[1] is not None else b""

        def api(t: morecantile.Tile, encoding: str) -> bytes:
            client.request("GET", f"/tiles/buildings/{t.z}/{t.x}/{t.y}.mvt", headers={"Accept-Encoding": encoding})
            res = client.getresponse()
            data = res.read()
            if res.status != 200:
                raise SystemExit(f"tile {t}: HTTP {res.status} {data[:200]!r}")
            return data

        for t in tiles:
            box = search_box(t.z, t.x, t.y, extent.mercator, MVT_BUFFER / MVT_EXTENT)
            if box is None or not raw(t, box):
                continue
            runs: dict[str, list[float]] = {"raw": [], "api": [], "gzip": []}
            for i in range(repeat + 1):
                for kind in runs:
                    start = time.perf_counter()
                    if kind == "raw":
                        raw(t, box)
                    else:
                        api(t, "identity" if kind == "api" else "gzip")
                    if i:
                        runs[kind].append(time.perf_counter() - start)
            for kind, values in runs.items():
                out[kind][t] = statistics.median(values)
    client.close()
    return out


def wrk(base: str, paths: list[str], etags: list[str] | None, headers: dict[str, str], seconds: int) -> float:
    """Requests per second of ``wrk`` cycling through ``paths`` (with their ETags as If-None-Match if given)."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    lines = ["local paths = {" + ",".join(f'"{p}"' for p in paths) + "}"]
    lines.append("local etags = {" + ",".join("'" + e + "'" for e in (etags or [])) + "}")
    lines.append("local i = 0")
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    lines.append("request = function()")
    lines.append("  i = i % #paths + 1")
    if etags:
        lines.append('  wrk.headers["If-None-Match"] = etags[i]')
    lines.append('  return wrk.format("GET", paths[i])')
    lines.append("end")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("\n".join(lines))
        script = f.name
    try:
        res = subprocess.run([exe, "-t2", "-c32", f"-d{seconds}s", "-s", script, base], capture_output=True, text=True)
    finally:
        os.unlink(script)
    for line in res.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"wrk said:\n{res.stdout}\n{res.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--zoom", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    zooms = args.zoom or [14, 15, 16]

    home = Path(f"/tmp/cim-bench-api-tiles-{args.scale}")
    home.mkdir(exist_ok=True)
    home.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    try:
        run_benchmark(args, home, env, zooms)
    finally:
        EmbeddedCluster(Settings(home=home, pg_fast=True)).stop()  # the data stays for the next run


def run_benchmark(args: argparse.Namespace, home: Path, env: dict[str, str], zooms: list[int]) -> None:
    buildings = prepare(args.scale, env)
    settings = Settings(home=home, pg_fast=True)
    with connect(settings) as conn:
        conn.execute("ANALYZE buildings")
        conn.commit()
    tiles = tiles_with_buildings(settings, zooms)
    print(f"{buildings:,} buildings; {len(tiles)} tiles at zoom {', '.join(map(str, zooms))}; load {os.getloadavg()}")

    proc, base = start_server(env, {"CIM_TILE_CACHE_MB": "0"})
    try:
        timings = time_uncached(settings, base, tiles, args.repeat)
    finally:
        stop(proc)
    raw, served, served_gz = timings["raw"], timings["api"], timings["gzip"]
    tiles = [t for t in tiles if t in raw]
    print(f"\nuncached MVT (median of {args.repeat} per tile, summed per zoom), load {os.getloadavg()}")
    print(f"{'zoom':>5} {'tiles':>6} {'raw SQL s':>10} {'API s':>8} {'API/raw':>8} {'API gzip s':>11} {'gzip/raw':>9}")
    for z in [*zooms, None]:
        sel = [t for t in tiles if z is None or t.z == z]
        if not sel:
            continue
        r, s, g = (sum(d[t] for t in sel) for d in (raw, served, served_gz))
        label = "all" if z is None else str(z)
        print(f"{label:>5} {len(sel):>6} {r:>10.3f} {s:>8.3f} {s / r:>8.2f} {g:>11.3f} {g / r:>9.2f}")
    ratios = sorted(served[t] / raw[t] for t in tiles)
    print(f"per-tile API/raw: median {statistics.median(ratios):.2f}, p90 {ratios[int(0.9 * (len(ratios) - 1))]:.2f}")

    proc, base = start_server(env, {})
    try:
        paths = [f"/tiles/buildings/{t.z}/{t.x}/{t.y}.mvt" for t in tiles]
        etags = []
        with httpx.Client(base_url=base, timeout=120) as client:
            for p in paths:
                client.get(p, headers={"Accept-Encoding": "gzip"})
                etags.append(client.get(p, headers={"Accept-Encoding": "identity"}).headers["ETag"])
        print(f"\ncached tiles/s (wrk -t2 -c32, {args.seconds} s, {len(paths)} URLs in turn), load {os.getloadavg()}")
        print(f"  If-None-Match → 304:  {wrk(base, paths, etags, {}, args.seconds):>9,.0f}")
        print(f"  200, gzip bodies:     {wrk(base, paths, None, {'Accept-Encoding': 'gzip'}, args.seconds):>9,.0f}")
        print(f"  200, identity bodies: {wrk(base, paths, None, {}, args.seconds):>9,.0f}")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
