"""Benchmark: OGC API – Features ``/collections/buildings/items?bbox=…`` — ``cim serve`` vs pygeoapi.

Side by side in one run, on the same city, the same PostGIS and the same ``buildings`` table:
- ours: ``cim serve`` (uvicorn, one process);
- peer: pygeoapi (its PostgreSQL provider, Flask under gunicorn, one process with 8 threads), installed in
  its own virtual environment (``--pygeoapi-venv``, created with pip on first use).
Load comes from wrk (Debian ``wrk``, a separate C process) with a Lua script rotating over the same
bounding boxes for both servers, ``--connections`` at once. Before loading, every box is fetched from both
servers and from PostGIS directly: the feature ids must be the same.

Scenarios (same boxes, same ``limit``; every box matches fewer features than ``limit``, so whole answers
are compared):
- ``storage``: bbox and output in the storage CRS EPSG:4547 on both servers. pygeoapi cannot serve CRS84
  from this table correctly: it transforms with EPSG:4547's authority axis order (northing first) applied to
  PostGIS's x/y, so its CRS84 bboxes select nothing; in the storage CRS it needs no transform at all.
- ``crs84``: ours in the default CRS84 (PostGIS transforms every geometry), against pygeoapi's storage-CRS
  figure (its best case).

The city is the demo generator at ``--scale`` (10 ≈ 52k buildings), admin units, parcels and buildings
loaded once into ``--home`` and reused by later runs.

Run: .venv/bin/python bench/api_ogc_items.py [--scale 10] [--seconds 20] [--connections 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
GK = "http://www.opengis.net/def/crs/EPSG/0/4547"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

WRK_SCRIPT = """
local paths = {%(paths)s}
local i = math.random(#paths)
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %%d, "seconds": %%f, "p50": %%d, "p99": %%d, "non2xx": %%d, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""

PYGEOAPI_CONFIG = """
server:
  bind: {host: 127.0.0.1, port: %(port)d}
  url: http://127.0.0.1:%(port)d
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  language: en-US
  limits: {default_items: 100, max_items: 10000}
  map: {url: 'https://tile.openstreetmap.org/{z}/{x}/{y}.png', attribution: OSM}
logging: {level: ERROR}
metadata:
  identification: {title: bench, description: bench, keywords: [bench], url: 'http://example.org',
                   terms_of_service: 'http://example.org/tos'}
  license: {name: CC-BY 4.0, url: 'https://creativecommons.org/licenses/by/4.0/'}
  provider: {name: bench, url: 'http://example.org'}
  contact: {name: bench, url: 'http://example.org'}
resources:
  buildings:
    type: collection
    title: Buildings
    description: the same table cim serves
    keywords: [buildings]
    extents:
      spatial: {bbox: [%(bbox)s], crs: '%(crs84)s'}
    providers:
      - type: feature
        name: PostgreSQL
        data: {host: 127.0.0.1, port: %(db_port)d, dbname: cim, user: cim, password: '%(password)s',
               search_path: [public]}
        id_field: building_code
        table: buildings
        geom_field: footprint
        storage_crs: '%(gk)s'
        crs: ['%(crs84)s', '%(gk)s']
"""


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1", **extra})
    return env


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def ensure_city(home: Path, scale: int) -> None:
    """Admin units, parcels and buildings of the demo city at ``scale`` in ``home`` (loaded once)."""
    os.environ.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    from cim.db import connect, ensure_database
    from cim.settings import get_settings

    get_settings.cache_clear()
    ensure_database()
    with connect() as conn:
        row = conn.execute("SELECT count(*) FROM buildings").fetchone()
    if row and row[0] > 0:
        return
    sample = home / f"sample-scale-{scale}"
    env = env_for(home, CIM_STATEMENT_TIMEOUT_MS="600000")
    if not (sample / "buildings.gpkg").exists():
        print(f"generating the scale-{scale} city into {sample} …", flush=True)
        run([str(BIN / "cim"), "sample", "generate", "--scale", str(scale), "--out", str(sample)], env)
    for layer, name in (("admin", "admin.gpkg"), ("parcels", "parcels.gpkg"), ("buildings", "buildings.gpkg")):
        print(f"loading {name} …", flush=True)
        run([str(BIN / "cim"), "ingest", layer, str(sample / name)], env)


def pick_boxes(count: int, size_m: float, limit: int, seed: int) -> list[dict[str, Any]]:
    """Square boxes (storage CRS) holding 20..limit-1 buildings, with their ids and a CRS84 version."""
    from cim.crs import storage_to_lonlat
    from cim.db import connect

    with connect() as conn:
        ext = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                           "(SELECT ST_Extent(footprint) e FROM buildings) s").fetchone()  # fmt: skip
        assert ext is not None
        x0, y0, x1, y1 = (float(v) for v in ext)
        rng = random.Random(seed)
        boxes: list[dict[str, Any]] = []
        for _ in range(count * 20):
            bx, by = rng.uniform(x0, x1 - size_m), rng.uniform(y0, y1 - size_m)
            box = (round(bx, 1), round(by, 1), round(bx + size_m, 1), round(by + size_m, 1))
            ids = [r[0] for r in conn.execute(
                "SELECT building_code FROM buildings WHERE ST_Intersects(footprint, ST_MakeEnvelope(%s, %s, %s, %s, "
                "4547)) ORDER BY 1", box).fetchall()]  # fmt: skip
            if not 20 <= len(ids) < limit:
                continue
            lon, lat = storage_to_lonlat([box[0], box[2]], [box[1], box[3]])
            ll = (round(float(lon[0]), 6), round(float(lat[0]), 6), round(float(lon[1]), 6), round(float(lat[1]), 6))
            ids84 = [r[0] for r in conn.execute(
                "SELECT building_code FROM buildings WHERE ST_Intersects(footprint, ST_Transform(ST_Segmentize("
                "ST_MakeEnvelope(%s, %s, %s, %s, 4326), %s), 4547)) ORDER BY 1",
                (*ll, (ll[2] - ll[0]) / 16)).fetchall()]  # fmt: skip
            boxes.append({"gk": box, "ids": ids, "lonlat": ll, "ids84": ids84})
            if len(boxes) == count:
                break
    return boxes


def ensure_pygeoapi(venv: Path) -> Path:
    """pygeoapi and gunicorn in their own virtual environment (pip, first use only)."""
    gunicorn = venv / "bin" / "gunicorn"
    if not (venv / "bin" / "pygeoapi").exists() or not gunicorn.exists():
        print(f"installing pygeoapi into {venv} …", flush=True)
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", "pygeoapi", "GeoAlchemy2", "psycopg2-binary", "gunicorn"])
    return venv


def free_port() -> int:
    from cim.cluster import free_port as fp

    return fp()


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"no answer from {url}")
        time.sleep(0.3)


@contextmanager
def serving(cmd: list[str], env: dict[str, str], probe: str, cwd: Path | None = None) -> Iterator[None]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        wait_http(probe, proc)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ours_path(box: dict[str, Any], scenario: str, limit: int) -> str:
    if scenario == "storage":  # EPSG:4547 is northing first
        x0, y0, x1, y1 = box["gk"]
        return f"/collections/buildings/items?bbox={y0},{x0},{y1},{x1}&bbox-crs=EPSG:4547&crs=EPSG:4547&limit={limit}"
    lon0, lat0, lon1, lat1 = box["lonlat"]
    return f"/collections/buildings/items?bbox={lon0},{lat0},{lon1},{lat1}&limit={limit}"


def pygeoapi_path(box: dict[str, Any], limit: int) -> str:
    x0, y0, x1, y1 = box["gk"]  # pygeoapi hands the numbers to ST_MakeEnvelope as they are (x, y)
    return f"/collections/buildings/items?bbox={x0},{y0},{x1},{y1}&bbox-crs={GK}&crs={GK}&limit={limit}&f=json"


def check_same(base: str, paths: list[str], expected: list[list[str]], label: str) -> int:
    """Every box answers exactly the expected ids; returns the number of features compared."""
    total = 0
    with httpx.Client(base_url=base, timeout=120) as client:
        for path, ids in zip(paths, expected, strict=True):
            res = client.get(path)
            if res.status_code != 200:
                raise SystemExit(f"{label}: {path} → {res.status_code} {res.text[:300]}")
            got = sorted(str(f["id"]) for f in res.json()["features"])
            if got != ids:
                raise SystemExit(f"{label}: {path} returned {len(got)} features, PostGIS says {len(ids)}")
            total += len(got)
    return total


def load(base: str, paths: list[str], seconds: int, connections: int) -> dict[str, Any]:
    script = WRK_SCRIPT % {"paths": ", ".join(json.dumps(p) for p in paths)}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        with httpx.Client(base_url=base, timeout=120) as client:  # warm-up: caches, CRS transformers, connections
            for path in paths:
                client.get(path).raise_for_status()
        run(["wrk", "-t2", f"-c{connections}", "-d3s", "--timeout", "30s", "-s", fh.name, base + "/"])
        out = run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", fh.name, base + "/"])
    finally:
        os.unlink(fh.name)
    match = re.search(r"^WRK (\{.*\})$", out, re.MULTILINE)
    if not match:
        raise SystemExit(f"wrk printed no summary:\n{out}")
    stats = json.loads(match.group(1))
    stats["rps"] = stats["requests"] / stats["seconds"]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument(
        "--home", type=Path, default=None, help="CIM_HOME of the city (default /tmp/cim-bench-ogc-s<scale>)"
    )
    parser.add_argument("--pygeoapi-venv", type=Path, default=Path("/tmp/pygeoapi-venv"))
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating load rounds per server")
    parser.add_argument("--boxes", type=int, default=24)
    parser.add_argument("--box-m", type=float, default=500.0)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    home = args.home or Path(f"/tmp/cim-bench-ogc-s{args.scale}")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    ensure_city(home, args.scale)

    from cim.cluster import EmbeddedCluster
    from cim.db import connect
    from cim.settings import get_settings

    with connect() as conn:
        n_buildings = int(conn.execute("SELECT count(*) FROM buildings").fetchone()[0])  # type: ignore[index]
        bbox84 = conn.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
                              "ST_Extent(ST_Transform(footprint, 4326)) e FROM buildings) s").fetchone()  # fmt: skip
    boxes = pick_boxes(args.boxes, args.box_m, args.limit, seed=7)
    per_box = [len(b["ids"]) for b in boxes]
    mean_features = sum(per_box) / len(per_box)
    print(f"city: {n_buildings:,} buildings; {len(boxes)} boxes of {args.box_m:.0f} m, "
          f"{min(per_box)}–{max(per_box)} buildings each (mean {mean_features:.0f}), limit {args.limit}")  # fmt: skip

    venv = ensure_pygeoapi(args.pygeoapi_venv)
    info = EmbeddedCluster(get_settings()).info()
    password = json.loads((get_settings().home / "pg" / "cluster.json").read_text())["password"]
    work = Path(tempfile.mkdtemp(prefix="pygeoapi-bench-"))
    py_port, our_port = free_port(), free_port()
    (work / "config.yml").write_text(PYGEOAPI_CONFIG % {
        "port": py_port, "db_port": info.port, "password": password, "gk": GK, "crs84": CRS84,
        "bbox": ", ".join(str(v) for v in bbox84 or (0, 0, 0, 0)),
    })  # fmt: skip
    py_env = {**os.environ, "PYGEOAPI_CONFIG": str(work / "config.yml"), "PYGEOAPI_OPENAPI": str(work / "openapi.yml")}
    run([str(venv / "bin" / "pygeoapi"), "openapi", "generate", str(work / "config.yml"), "--output-file",
         str(work / "openapi.yml")], py_env)  # fmt: skip
    py_cmd = [str(venv / "bin" / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "8", "-b",
              f"127.0.0.1:{py_port}", "pygeoapi.flask_app:APP"]  # fmt: skip
    our_cmd = [str(BIN / "cim"), "serve", "--port", str(our_port), "--workers", "1"]
    py_base, our_base = f"http://127.0.0.1:{py_port}", f"http://127.0.0.1:{our_port}"

    paths = {
        "ours storage": [ours_path(b, "storage", args.limit) for b in boxes],
        "ours crs84": [ours_path(b, "crs84", args.limit) for b in boxes],
        "pygeoapi storage": [pygeoapi_path(b, args.limit) for b in boxes],
    }
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in paths}
    try:
        with serving(our_cmd, env_for(home), our_base + "/conformance"):
            n = check_same(our_base, paths["ours storage"], [b["ids"] for b in boxes], "ours storage")
            check_same(our_base, paths["ours crs84"], [b["ids84"] for b in boxes], "ours crs84")
        with serving(py_cmd, py_env, py_base + "/conformance", cwd=work):
            check_same(py_base, paths["pygeoapi storage"], [b["ids"] for b in boxes], "pygeoapi storage")
        print(f"same features: {n:,} features over {len(boxes)} boxes, identical ids from both servers and PostGIS")
        for r in range(args.rounds):
            with serving(our_cmd, env_for(home), our_base + "/conformance"):
                for key in ("ours storage", "ours crs84"):
                    results[key].append(load(our_base, paths[key], args.seconds, args.connections))
                    print(f"round {r + 1} {key:<17} {results[key][-1]['rps']:8.1f} req/s", flush=True)
            with serving(py_cmd, py_env, py_base + "/conformance", cwd=work):
                key = "pygeoapi storage"
                results[key].append(load(py_base, paths[key], args.seconds, args.connections))
                print(f"round {r + 1} {key:<17} {results[key][-1]['rps']:8.1f} req/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(key: str) -> dict[str, Any]:
        return max(results[key], key=lambda s: s["rps"])

    print()
    print(f"{'server':<18}{'req/s':>9}{'features/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for key in paths:
        s = best(key)
        print(f"{key:<18}{s['rps']:9.1f}{s['rps'] * mean_features:12,.0f}{s['p50'] / 1000:9.1f}{s['p99'] / 1000:9.1f}"
              f"{s['non2xx'] + s['errors']:8d}")  # fmt: skip
    peer = best("pygeoapi storage")["rps"]
    for key in ("ours storage", "ours crs84"):
        print(f"{key} / pygeoapi storage: {best(key)['rps'] / peer:.1f}×")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "buildings": n_buildings,
                                        "features_per_box": per_box, "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
