"""Build a layer's 3D Tiles 1.1 tileset from PostGIS: plan the quadtree from a light index, fetch and mesh
one tile at a time, write into a staging folder, swap it in atomically, register it in the catalogue.

Decisions recorded here:
- **Where.** ``$CIM_HOME/tilesets/<layer>/`` (or ``--out DIR``): ``tileset.json``, ``content/L/x/y.glb``
  (quadtree cell addresses) and ``build-manifest.json``. The catalogue row's ``path`` is that folder.
- **Streaming.** Only the index (≈60 bytes per building) is held for the whole city; geometries are fetched
  per tile (``building_code = ANY(...)`` on the primary key) inside one read-only snapshot.
- **Tree.** Content lives in the leaves only, refinement ADD (buildings are disjoint). Geometric error:
  leaves 0; any other tile the largest 3D bounding-box diagonal of the buildings below it, i.e. the size of
  the biggest thing missing while the tile is drawn without its children (so a parent never has less
  error than a child); the tileset's error is the largest diagonal overall.
- **Incremental.** ``build-manifest.json`` stores the grid, and per leaf a digest of its buildings
  (order-free sum of mixed (code, content hash) pairs), its box, transform and largest diagonal. An
  incremental build places every building in the previous tree (`tilesets.quadtree.descend`), re-splits
  leaves that overflow, rewrites only leaves whose digest changed or that are new, hard-links the other
  .glb files into the new folder (same inode and mtime: nothing is rewritten) and drops empty leaves.
  ``tileset.json`` is always rewritten (tilesetVersion is bumped, parent boxes may change). A full build
  happens instead when there is no manifest, when the build parameters or content format changed, or
  when a building lies outside the previous grid.
- **tilesetVersion** is the catalogue's ``tileset_version`` (an integer, one more than the highest of the
  catalogue and the previous manifest), written as a string.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.tiles import (
    BuildingIndex,
    BuildingRows,
    building_index,
    building_rows,
    read_snapshot,
    register_tileset,
    tileset_entry,
)
from tilesets.buildings import building_tile, estimated_bytes
from tilesets.quadtree import Cell, QuadGrid, descend, group_by_cell, internal_cells, plan
from tilesets.tileset import (
    Tile,
    box_corners,
    build_lock,
    ecef_box_around,
    publish_directory,
    staging_directory,
    tileset_document,
    write_bytes,
    write_json,
)

CONTENT_FORMAT = 1  # bump when the meshes or metadata written change: forces a full rebuild
MANIFEST = "build-manifest.json"
MANIFEST_FORMAT = "cim-tiles-manifest/1"


class TilesBuildError(RuntimeError):
    """A tileset cannot be built (nothing to tile, the data changed under the build, …); says why."""


@dataclass(frozen=True)
class BuildOptions:
    """Tile size limits: a leaf holds at most ``max_features`` and about ``max_tile_bytes`` raw bytes."""

    max_features: int = 1000
    max_tile_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        if self.max_features < 1 or self.max_tile_bytes < 1:
            raise ValueError("tile limits must be positive")


@dataclass
class BuildReport:
    layer: str
    path: Path
    tileset_version: int
    feature_count: int
    tile_count: int
    written: int
    reused: int
    removed: int
    bytes: int
    seconds: float
    full: bool
    reason: str
    written_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kind = "full build" if self.full else "incremental"
        return (
            f"{self.layer}: {self.feature_count:,} features in {self.tile_count:,} tiles ({kind}: {self.written:,} "
            f"written, {self.reused:,} reused, {self.removed:,} removed; {self.reason}), "
            f"{self.bytes / 1e6:,.2f} MB, tilesetVersion {self.tileset_version}, {self.seconds:.1f} s "
            f"→ {self.path / 'tileset.json'}"
        )


# --------------------------------------------------------------------------------------------------
# Digests and the manifest


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: spreads every input bit over the output (wrapping uint64 arithmetic)."""
    z = values.copy()
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def tile_digest(code: npt.NDArray[np.int64], digest: npt.NDArray[np.int64]) -> str:
    """An order-free digest of a set of (code, content hash) pairs: equal iff the tile's content is equal
    (up to 64-bit collisions)."""
    with np.errstate(over="ignore"):
        mixed = _mix(_mix(code.astype(np.uint64)) ^ digest.astype(np.uint64))
        total = int(mixed.sum(dtype=np.uint64))
    return f"{total:016x}-{len(code)}"


def _params(options: BuildOptions) -> dict[str, Any]:
    settings = get_settings()
    return {
        "content_format": CONTENT_FORMAT,
        "max_features": options.max_features,
        "max_tile_bytes": options.max_tile_bytes,
        "storage_srid": settings.storage_srid,
        "height_offset_m": settings.height_offset_m,
    }


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT else None


def content_uri(cell: Cell) -> str:
    return f"content/{cell.level}/{cell.x}/{cell.y}.glb"


# --------------------------------------------------------------------------------------------------
# Planning


@dataclass
class _Plan:
    grid: QuadGrid
    leaves: dict[Cell, npt.NDArray[np.int64]]
    full: bool
    reason: str


def _plan(index: BuildingIndex, options: BuildOptions, previous: dict[str, Any] | None) -> _Plan:
    weight = estimated_bytes(index.vertices)
    if previous is not None:
        g = previous["grid"]
        grid = QuadGrid(float(g["x0"]), float(g["y0"]), float(g["size"]))
        if bool(grid.contains(index.x, index.y).all()):
            old_leaves = [Cell.from_key(k) for k in previous["tiles"]]
            level, cx, cy = descend(grid, old_leaves, index.x, index.y)
            leaves: dict[Cell, npt.NDArray[np.int64]] = {}
            for cell, members in group_by_cell(level, cx, cy).items():
                full_enough = len(members) > options.max_features or weight[members].sum() > options.max_tile_bytes
                if full_enough and len(members) > 1:
                    leaves.update(
                        plan(
                            grid, index.x, index.y, weight, options.max_features, options.max_tile_bytes, cell, members
                        )
                    )
                else:
                    leaves[cell] = members
            return _Plan(grid, leaves, full=False, reason="changes since the last build")
        reason = "a building lies outside the previous tile grid"
    else:
        reason = "no previous build to update"
    grid = QuadGrid.around(index.x, index.y)
    leaves = plan(grid, index.x, index.y, weight, options.max_features, options.max_tile_bytes)
    return _Plan(grid, leaves, full=True, reason=reason)


# --------------------------------------------------------------------------------------------------
# The tree


def _leaf_corners_ecef(record: dict[str, Any]) -> npt.NDArray[np.float64]:
    matrix = np.asarray(record["transform"], dtype=np.float64).reshape(4, 4, order="F")
    corners = box_corners(record["box"])
    return np.asarray(corners @ matrix[:3, :3].T + matrix[:3, 3], dtype=np.float64)


def tile_tree(records: dict[str, dict[str, Any]]) -> Tile:
    """The tile tree over leaf records (manifest form): leaves carry content, transform and local box;
    every ancestor gets an ECEF box around its children's corners and the largest diagonal below it."""
    leaves = {Cell.from_key(k): r for k, r in records.items()}
    tiles: dict[Cell, Tile] = {}
    corners: dict[Cell, npt.NDArray[np.float64]] = {}
    errors: dict[Cell, float] = {}
    for cell, r in leaves.items():
        tiles[cell] = Tile(box=r["box"], geometric_error=0.0, content_uri=content_uri(cell), transform=r["transform"])
        corners[cell] = _leaf_corners_ecef(r)
        errors[cell] = float(r["max_size"])
    inner = sorted(internal_cells(leaves), key=lambda c: (-c.level, c.x, c.y))
    children: dict[Cell, list[Cell]] = {}
    for cell in list(leaves) + inner:
        if cell.level > 0:
            children.setdefault(cell.parent(), []).append(cell)
    for cell in inner:  # deepest first, so children are done
        kids = sorted(children[cell])
        pts = np.concatenate([corners[k] for k in kids])
        error = max(errors[k] for k in kids)
        tiles[cell] = Tile(box=ecef_box_around(pts), geometric_error=error, children=[tiles[k] for k in kids])
        corners[cell] = box_corners(tiles[cell].box)
        errors[cell] = error
    root = min(tiles, key=lambda c: c.level)
    return tiles[root]


# --------------------------------------------------------------------------------------------------
# The build


def default_tileset_dir(layer: str, settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "tilesets" / layer


def build_buildings(
    settings: Settings | None = None,
    out: Path | None = None,
    incremental: bool = False,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build (or update) the LOD1 buildings tileset; returns what was done. Raises TilesBuildError."""
    settings = settings or get_settings()
    options = options or BuildOptions()
    target = (out or default_tileset_dir("buildings", settings)).absolute()
    _check_target(target, settings)
    started = time.perf_counter()
    with build_lock(target), read_snapshot(settings) as conn:
        index = building_index(conn)
        if len(index) == 0:
            raise TilesBuildError("there are no buildings in the database: ingest buildings first")
        previous = _read_manifest(target) if target.exists() else None
        entry = tileset_entry(conn, "buildings")
        version = 1 + max(int(previous["tileset_version"]) if previous else 0, entry["tileset_version"] if entry else 0)
        params = _params(options)
        if not incremental:
            previous_for_plan, why = None, "full build requested"
        elif previous is not None and previous.get("params") != params:
            previous_for_plan, why = None, "build parameters or content format changed"
        else:
            previous_for_plan, why = previous, ""
        planned = _plan(index, options, previous_for_plan)
        reason = why or planned.reason
        old_tiles: dict[str, Any] = previous["tiles"] if previous_for_plan is not None and previous else {}

        staging = staging_directory(target)
        try:
            records: dict[str, dict[str, Any]] = {}
            jobs: list[tuple[Cell, str, npt.NDArray[np.int64]]] = []
            reused = 0
            for cell, members in sorted(planned.leaves.items()):
                digest = tile_digest(index.code[members], index.digest[members])
                path = staging / content_uri(cell)
                path.parent.mkdir(parents=True, exist_ok=True)
                old = old_tiles.get(cell.key)
                if old is not None and old["digest"] == digest and _link_or_copy(target / content_uri(cell), path):
                    records[cell.key] = old
                    reused += 1
                else:
                    jobs.append((cell, digest, members))
            written: list[str] = []
            for (cell, digest, members), rows in _prefetched_rows(conn, index, jobs):
                if len(rows) != len(members):
                    raise TilesBuildError(
                        f"tile {cell.key}: {len(members) - len(rows)} buildings vanished during the build"
                    )
                tile = building_tile(rows)
                write_bytes(staging / content_uri(cell), tile.glb)
                records[cell.key] = {
                    "digest": digest,
                    "features": tile.feature_count,
                    "bytes": len(tile.glb),
                    "box": tile.box,
                    "transform": tile.frame.transform(),
                    "max_size": float(index.size[members].max()),
                    "bounds": [float(v) for v in tile.bounds],
                }
                written.append(cell.key)
                if progress is not None and len(written) % 500 == 0:
                    progress(f"{len(written):,} of {len(jobs):,} tiles written")
            root = tile_tree(records)
            max_size = max(float(r["max_size"]) for r in records.values())
            doc = tileset_document(root, geometric_error=max_size, tileset_version=str(version))
            write_json(staging / "tileset.json", doc)
            manifest = {
                "format": MANIFEST_FORMAT,
                "layer": "buildings",
                "tileset_version": version,
                "params": params,
                "grid": {"x0": planned.grid.x0, "y0": planned.grid.y0, "size": planned.grid.size},
                "tiles": records,
            }
            write_json(staging / MANIFEST, manifest)
            bounds = _union_bounds(records)
            total_bytes = sum(int(r["bytes"]) for r in records.values())
            removed = len(set(old_tiles) - set(records))
            with transaction(settings) as wconn:
                register_tileset(
                    wconn,
                    layer="buildings",
                    path=str(target),
                    tileset_version=version,
                    feature_count=len(index),
                    tile_count=len(records),
                    bounds=bounds,
                    attributes={
                        "format": "3D Tiles 1.1 glb: EXT_mesh_features, EXT_structural_metadata, KHR_mesh_quantization",
                        "content_bytes": total_bytes,
                        "geometric_error": max_size,
                        "max_features": options.max_features,
                        "max_tile_bytes": options.max_tile_bytes,
                        "incremental": not planned.full,
                        "tiles_written": len(written),
                    },
                )
                publish_directory(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if not planned.full:
        reason = "changes since the last build" if written or removed else "nothing changed since the last build"
    return BuildReport(
        layer="buildings",
        path=target,
        tileset_version=version,
        feature_count=len(index),
        tile_count=len(records),
        written=len(written),
        reused=reused,
        removed=removed,
        bytes=total_bytes,
        seconds=time.perf_counter() - started,
        full=planned.full,
        reason=reason,
        written_keys=written,
    )


Job = tuple[Cell, str, npt.NDArray[np.int64]]


def _prefetched_rows(
    conn: psycopg.Connection, index: BuildingIndex, jobs: list[Job], ahead: int = 2
) -> Iterator[tuple[Job, BuildingRows]]:
    """The rows of each job's buildings, in order, fetched by one background thread up to ``ahead`` tiles in
    advance: the database reads the next tiles while this process meshes the current one. At most
    ``ahead + 1`` tiles of rows are in memory; the connection is only used by that thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-tiles-fetch") as pool:
        pending: deque[tuple[Job, Future[BuildingRows]]] = deque()
        remaining = iter(jobs)
        for job in remaining:
            pending.append((job, pool.submit(building_rows, conn, index.code[job[2]].tolist())))
            if len(pending) > ahead:
                break
        while pending:
            job, future = pending.popleft()
            following = next(remaining, None)
            if following is not None:
                pending.append((following, pool.submit(building_rows, conn, index.code[following[2]].tolist())))
            yield job, future.result()


def _check_target(target: Path, settings: Settings) -> None:
    """Refuse to replace a folder that is not one of our tilesets, and settings the CRS code would not use."""
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file())):
        raise TilesBuildError(f"{target} exists and is not a tileset folder built by cim; refusing to replace it")
    process = get_settings()
    if (settings.storage_srid, settings.height_offset_m) != (process.storage_srid, process.height_offset_m):
        raise TilesBuildError(
            "the settings passed differ from the process settings in storage SRID or height offset; "
            "coordinates are transformed with the process settings (CIM_STORAGE_SRID, CIM_HEIGHT_OFFSET_M)"
        )


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Carry an unchanged tile into the new folder without rewriting it; False if the old file is gone."""
    try:
        os.link(src, dst)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        try:
            shutil.copy2(src, dst)
            return True
        except FileNotFoundError:
            return False


def _union_bounds(records: dict[str, dict[str, Any]]) -> tuple[float, float, float, float]:
    b = np.array([r["bounds"] for r in records.values()], dtype=np.float64)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


LAYERS: dict[str, Callable[..., BuildReport]] = {"buildings": build_buildings}
"""Tileset layers `cim tiles build --layer` knows, each a function (settings, out, incremental, options,
progress) → BuildReport."""
