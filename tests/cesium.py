"""CesiumJS in headless Chromium as a test oracle for our tilesets: the real viewer's loader, decoders and picking,
run by tests/js/cesium_load.mjs (playwright-core driving Debian's /usr/bin/chromium, no browser download, offline).

``load_tilesets_in_cesium([CesiumLoad(...), ...])`` loads several tilesets one after the other in one page (one
browser start; WebGL shaders compiled once, which is most of the cost on SwiftShader) and returns one report per
tileset; ``load_tileset_in_cesium(path_or_url, ...)`` is the one-tileset form. A report (see cesium_load.html):

- ``errors``: tile failures, console and page errors, failed requests, HTTP ≥ 400, requests to other origins;
- ``tilesLoaded`` / ``timedOut``; ``tilesWithContent``, ``contentUrls``, ``featuresLoaded``, ``commandsDrawn``;
- ``sample``: feature ``featuresLength // 2`` of the first loaded content (by URL): ``url``, ``featuresLength``,
  ``featureId``, ``properties`` (every property via ``getProperty``);
- ``pick``: the first feature found by ``scene.pick`` on a 9×9 grid over the canvas, with ``position`` (lon, lat,
  ellipsoidal height from the depth buffer: metres off at city-wide views);
- ``probes``: for each (lon, lat, height) asked for, the feature picked where that point is drawn and
  ``sampledHeight``, the height of the scene at that lon/lat (``scene.sampleHeight``: millimetres);
- ``root``: the root bounding sphere centre (lon, lat, height) and radius; ``seconds``; ``wallSeconds``.

The whole run also reports ``browserCpuSeconds`` (all of Chromium's processes) in ``CesiumRun``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "tests" / "js" / "cesium_load.mjs"
CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class CesiumLoad:
    """One tileset to load and how to look at it: ``sse`` is Cesium's maximumScreenSpaceError (lower loads finer
    tiles from farther away), the camera looks at the root bounding sphere from ``range`` × its radius at
    ``pitch`` degrees; ``globe=False`` hides the ellipsoid (for content below it, e.g. pipes)."""

    tileset: str
    sse: float = 16.0
    pitch: float = -60.0
    range: float = 2.0
    globe: bool = True
    probes: list[tuple[float, float, float]] = field(default_factory=list)
    timeout: float = 90.0
    screenshot: str | None = None


@dataclass
class CesiumRun:
    reports: list[dict[str, Any]]
    errors: list[str]
    wall_seconds: float
    browser_cpu_seconds: float
    chromium_flags: list[str]


def load_tilesets_in_cesium(loads: Sequence[CesiumLoad], size: tuple[int, int] = (480, 360)) -> CesiumRun:
    """Load each tileset (a tileset.json path, served from its folder, or an http URL) in one CesiumJS page."""
    missing = [p for p in ("cesium", "playwright-core") if not (REPO / "node_modules" / p).is_dir()]
    if missing:
        pytest.fail(f"node_modules/{', '.join(missing)} missing: run `make npm-deps` (npm ci) first")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    spec = {
        "tilesets": [{**asdict(load), "tileset": str(load.tileset)} for load in loads],
        "size": list(size),
        "chromium": str(CHROMIUM),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(spec, f)
        f.flush()
        budget = 120 + sum(load.timeout + 60 for load in loads)
        res = subprocess.run(
            ["node", str(HARNESS), "--spec", f.name], capture_output=True, text=True, timeout=budget, check=False
        )
    assert res.returncode == 0 and res.stdout.strip(), f"cesium_load.mjs failed ({res.returncode}):\n{res.stderr}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return CesiumRun(
        reports=out["tilesets"],
        errors=out["errors"],
        wall_seconds=out["wallSeconds"],
        browser_cpu_seconds=out["browserCpuSeconds"],
        chromium_flags=out["chromiumFlags"],
    )


def load_tileset_in_cesium(tileset: str | Path, **options: Any) -> dict[str, Any]:
    """One tileset's report (page start-up errors included in its ``errors``); options as for `CesiumLoad`."""
    run = load_tilesets_in_cesium([CesiumLoad(str(tileset), **options)])
    [report] = run.reports
    report["errors"] = [*run.errors, *report["errors"]]
    return report
