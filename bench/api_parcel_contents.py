"""Benchmark: ``GET /parcels/{code}/contents`` under 32 concurrent clients vs the same SQL issued directly.

Side by side in one run, on the same city and the same PostGIS:
- raw SQL: ``cim.store.parcel_contents.parcel_contents_json`` through psycopg, from one connection (the
  query's own latency) and from 32 concurrent connections (the same load the server sees);
- HTTP: ``cim serve`` (uvicorn, 1 and 2 workers) loaded by wrk (Debian ``wrk``, a separate C process, with a
  Lua script rotating parcel codes) with 32 connections; without wrk, an asyncio httpx client in a child
  process does the same. For each worker count, on a fresh server:
  - **cold**: one pass over the parcels, each requested once (first request: not cached, one statement);
    the server's pools and plans are warmed first on 200 parcels left out of the pass;
  - **warm**: the steady state once answers are cached (served from memory while the data is unchanged);
  - **uncached**: the same rotation with the answer cache off (``CIM_ANSWER_CACHE_MB=0``): every request
    runs the statement, the figure to hold against raw SQL at the same concurrency.
Every request rotates over the city's parcels in a shuffled order (seeded), so no answer is asked twice in
a row. Reported: requests/s, p50, p90, p99 latency (ms), CPU per request (server, PostgreSQL), and HTTP p50 /
raw-SQL p50 at equal concurrency (32).

The city is the demo generator at ``--scale`` (10 ≈ 52k buildings, the issue's "50k-building city"), loaded
once by ``cim demo load`` into ``--home`` (default /tmp/cim-bench-answers-s<scale>) and reused by later runs.

Run: .venv/bin/python bench/api_parcel_contents.py [--scale 10] [--seconds 15] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 32

WRK_SCRIPT = """
local paths = {%(paths)s}
local once = %(once)s
local i = 0
local answered = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[((i - 1) %% #paths) + 1])
end
if once then
  -- One pass: when every path has been answered once, SIGINT wrk's main thread (tid = pid), which ends the
  -- run and reports (thread:stop() alone would leave main sleeping out -d).
  local ffi = require("ffi")
  ffi.cdef[[ int getpid(void); int tgkill(int tgid, int tid, int sig); ]]
  response = function(status, headers, body)
    answered = answered + 1
    if answered == #paths then
      local pid = ffi.C.getpid()
      wrk.thread:stop()
      ffi.C.tgkill(pid, pid, 2)  -- SIGINT
    end
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %%d, "seconds": %%f, "p50": %%d, "p90": %%d, "p99": %%d, "max": %%d, ' ..
    '"non2xx": %%d, "errors": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, and cutime, cstime: exited children (short-lived backends) count too.
            total += sum(int(f) for f in fields[11:15]) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def postmaster_pid(home: Path) -> int:
    from cim.cluster import EmbeddedCluster
    from cim.settings import Settings

    return int((EmbeddedCluster(Settings(home=home)).data_dir / "postmaster.pid").read_text().split()[0])


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1", **extra})
    return env


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": statistics.median(ms), "p90": q[89], "p99": q[98], "max": max(ms)}


def ensure_city(home: Path, scale: int) -> None:
    """Load the demo city at ``scale`` into ``home`` unless it is there already."""
    os.environ.update({"CIM_HOME": str(home), "CIM_PG_FAST": "1"})
    from cim.db import connect, ensure_database
    from cim.settings import get_settings

    get_settings.cache_clear()
    ensure_database()
    with connect() as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    if row and row[0] > 0:
        return
    print(f"loading the scale-{scale} demo city into {home} (once) …", flush=True)
    # A loaded 2-core machine can push the big merges past the default 30 s statement timeout.
    env = env_for(home, CIM_STATEMENT_TIMEOUT_MS="1800000")
    subprocess.run([str(BIN / "cim"), "demo", "load", "--scale", str(scale)], env=env, check=True)


def parcel_codes(seed: int) -> tuple[list[str], dict[str, int]]:
    from cim.db import connect

    with connect() as conn:
        codes = [r[0] for r in conn.execute("SELECT code FROM parcels ORDER BY code").fetchall()]
        counts = {
            "parcels": len(codes),
            "buildings": conn.execute("SELECT count(*) FROM buildings").fetchone()[0],  # type: ignore[index]
            "devices": conn.execute("SELECT count(*) FROM devices").fetchone()[0],  # type: ignore[index]
            "events": conn.execute("SELECT count(*) FROM events").fetchone()[0],  # type: ignore[index]
        }
    random.Random(seed).shuffle(codes)
    return codes, counts


def raw_sequential(codes: list[str], n: int) -> tuple[dict[str, float], float]:
    """Latency of the contents statement from one psycopg connection (after a warm-up pass)."""
    from cim.db import connect
    from cim.store.parcel_contents import parcel_contents_json

    with connect() as conn:
        for code in codes[:50]:
            parcel_contents_json(conn, code)
        ms = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            assert parcel_contents_json(conn, codes[i % len(codes)]) is not None
            ms.append((time.perf_counter() - t) * 1000)
        wall = time.perf_counter() - start
    return percentiles(ms), n / wall


async def _raw_concurrent(url: str, codes: list[str], seconds: float) -> tuple[list[float], float]:
    import psycopg

    from cim.store.parcel_contents import CONTENTS_SQL

    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(k: int) -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            i = k * 9973
            while time.perf_counter() < deadline:
                i += 1
                t = time.perf_counter()
                cur = await conn.execute(CONTENTS_SQL, {"code": codes[i % len(codes)]})
                await cur.fetchone()
                latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(CONCURRENCY)))
    return latencies, time.perf_counter() - start


def raw_concurrent(codes: list[str], seconds: float) -> tuple[dict[str, float], float]:
    from cim.db import database_url

    ms, wall = asyncio.run(_raw_concurrent(database_url(), codes, seconds))
    return percentiles(ms), len(ms) / wall


def start_server(home: Path, port: int, workers: int, **env: str) -> subprocess.Popen[str]:
    import httpx

    cmd = [str(BIN / "cim"), "serve", "--port", str(port), "--workers", str(workers), "--no-access-log"]
    proc = subprocess.Popen(
        cmd, env=env_for(home, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.3)


Load = tuple[dict[str, float], float, int]
"""Latency percentiles (ms), requests/s, failed requests."""


def run_wrk(base: str, codes: list[str], seconds: float, once: bool = False) -> Load:
    """wrk with 32 connections over ``codes`` in turn, for ``seconds`` or (``once``) one pass."""
    paths = ", ".join(f'"/parcels/{c}/contents"' for c in codes)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"paths": paths, "once": "true" if once else "false"})
        script = f.name
    try:
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(CONCURRENCY), "-d", f"{seconds:.0f}s", "--timeout", "10s", "-s", script, base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    r = json.loads(line[4:])
    stats = {k: r[k] / 1000 for k in ("p50", "p90", "p99", "max")}
    return stats, r["requests"] / r["seconds"], r["non2xx"] + r["errors"]


async def _httpx_load(base: str, codes: list[str], seconds: float, once: bool) -> tuple[list[float], float, int]:
    import httpx

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    turn = iter(range(len(codes) if once else 1 << 62))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal failures
        for i in turn:
            if time.perf_counter() > deadline:
                break
            t = time.perf_counter()
            res = await http.get(f"/parcels/{codes[i % len(codes)]}/contents")
            latencies.append((time.perf_counter() - t) * 1000)
            failures += res.status_code != 200

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))
    return latencies, time.perf_counter() - start, failures


def httpx_child(base: str, codes_file: str, seconds: float, once: bool) -> None:
    """Entry point of the load-generator child process (used when wrk is not installed)."""
    codes = json.loads(Path(codes_file).read_text())
    ms, wall, failures = asyncio.run(_httpx_load(base, codes, seconds, once))
    print("HTTPX " + json.dumps({"stats": percentiles(ms), "rps": len(ms) / wall, "failures": failures}))


def run_httpx(base: str, codes: list[str], seconds: float, once: bool = False) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(codes, f)
        codes_file = f.name
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--httpx-child", base, codes_file, str(seconds), "1" if once else "0"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(codes_file)
    r = json.loads(next(ln for ln in out.splitlines() if ln.startswith("HTTPX "))[6:])
    return r["stats"], r["rps"], r["failures"]


def row(label: str, stats: dict[str, float], rps: float) -> str:
    return f"{label:<46}{rps:>9,.0f}{stats['p50']:>9.2f}{stats['p90']:>9.2f}{stats['p99']:>9.2f}"


WARMUP_CODES = 200


def http_runs(home: Path, pg: int, workers: int, codes: list[str], seconds: float, client: str, raw_p50: float) -> None:
    """Cold pass, warm steady state (answer cache on) and uncached steady state (cache off) on fresh servers."""
    from cim.cluster import free_port

    load = run_wrk if client == "wrk" else run_httpx
    label = f"{workers} worker{'s' if workers > 1 else ''}"

    def measured(name: str, proc: subprocess.Popen[str], base: str, paths: list[str], secs: float, once: bool) -> None:
        cpu0 = tree_cpu_seconds(proc.pid), tree_cpu_seconds(pg)
        t0 = time.perf_counter()
        stats, rps, failures = load(base, paths, secs, once)
        n = max(1.0, rps * (time.perf_counter() - t0))
        cpu1 = tree_cpu_seconds(proc.pid), tree_cpu_seconds(pg)
        print(row(f"HTTP {client}, {label}, {name}", stats, rps) + f"{stats['p50'] / raw_p50:>8.2f}")
        print(
            f"  CPU per request: server {1000 * (cpu1[0] - cpu0[0]) / n:.2f} ms, "
            f"PostgreSQL {1000 * (cpu1[1] - cpu0[1]) / n:.2f} ms" + (f"   !! {failures} failed" if failures else ""),
            flush=True,
        )

    for cache_mb in ("64", "0"):
        port = free_port()
        proc = start_server(home, port, workers, CIM_ANSWER_CACHE_MB=cache_mb)
        base = f"http://127.0.0.1:{port}"
        try:
            if cache_mb != "0":
                # Pools, plans and imports warmed on parcels the cold pass leaves out.
                load(base, codes[:WARMUP_CODES], 3.0, False)
                cold = codes[WARMUP_CODES:]
                measured(f"cold ({len(cold):,} once)", proc, base, cold, 300.0, True)
                load(base, codes, min(5.0, seconds), False)  # every worker sees every parcel at least once
                measured("warm (cached)", proc, base, codes, seconds, False)
            else:
                load(base, codes, min(5.0, seconds), False)
                measured("uncached (cache off)", proc, base, codes, seconds, False)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--httpx-child":
        httpx_child(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--home", type=Path, default=None, help="CIM_HOME of the city (reused between runs)")
    parser.add_argument("--seconds", type=float, default=15.0, help="Duration of each loaded run")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts to try, comma-separated")
    parser.add_argument("--client", choices=("wrk", "httpx"), default="wrk" if shutil.which("wrk") else "httpx")
    parser.add_argument("--keep-running", action="store_true", help="Leave the embedded cluster running")
    args = parser.parse_args()
    home = args.home or Path(f"/tmp/cim-bench-answers-s{args.scale}")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)

    ensure_city(home, args.scale)
    try:
        codes, counts = parcel_codes(seed=20261121)
        print(
            f"\nGET /parcels/{{code}}/contents on the city in {home}: {counts['buildings']:,} buildings, "
            f"{counts['parcels']:,} parcels, {counts['devices']:,} devices, {counts['events']:,} events; "
            f"{CONCURRENCY} concurrent clients, {args.seconds:.0f} s per run, {os.cpu_count()} CPUs"
        )
        print(f"{'':46}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'p50/raw':>8}")
        seq, seq_rps = raw_sequential(codes, min(2000, 4 * len(codes)))
        print(row("raw SQL, psycopg, 1 connection", seq, seq_rps), flush=True)
        pg = postmaster_pid(home)
        pg0 = tree_cpu_seconds(pg)
        raw, raw_rps = raw_concurrent(codes, args.seconds)
        pg_ms = 1000 * (tree_cpu_seconds(pg) - pg0) / (raw_rps * args.seconds)
        print(row(f"raw SQL, psycopg async, {CONCURRENCY} connections", raw, raw_rps), flush=True)
        print(f"  CPU per request: PostgreSQL {pg_ms:.2f} ms")
        for workers in (int(w) for w in args.workers.split(",")):
            http_runs(home, pg, workers, codes, args.seconds, args.client, raw["p50"])
    finally:
        if not args.keep_running:
            subprocess.run([str(BIN / "cim"), "db", "down"], env=env_for(home), capture_output=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
