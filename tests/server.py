"""Run the API as a real server process on a free loopback port, for tests that speak real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cim.cluster import free_port


@contextmanager
def api_server(env_overrides: dict[str, str], use_cli: bool = True, workers: int = 1) -> Iterator[str]:
    """Start ``cim serve`` (or bare uvicorn) with ``workers`` processes and yield its base URL; the process is
    stopped afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update(env_overrides)
    bindir = Path(sys.executable).parent
    if use_cli:
        cmd = [str(bindir / "cim"), "serve", "--port", str(port), "--workers", str(workers)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(port), "--workers", str(workers)]
    # The output goes to a file, not a pipe: a pipe nobody reads fills up (64 KB of access log, ~1,000
    # requests) and then blocks the server.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                out = log.read()
                raise RuntimeError(f"server exited with {proc.returncode}:\n{out}")
            try:
                httpx.get(base + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
