"""Run the API as a real server process on a free loopback port, for tests that speak real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from cim.cluster import free_port


@contextmanager
def api_server(env_overrides: dict[str, str], use_cli: bool = True) -> Iterator[str]:
    """Start ``cim serve`` (or bare uvicorn) and yield its base URL; the process is stopped afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update(env_overrides)
    bindir = Path(sys.executable).parent
    if use_cli:
        cmd = [str(bindir / "cim"), "serve", "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
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
