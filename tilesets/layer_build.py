"""The layer-independent part of building a 3D Tiles 1.1 tileset from PostGIS: plan a quadtree from a light
index of the layer's features, fetch and mesh one leaf at a time inside one read-only snapshot, write into a
staging folder, swap it in atomically, register it in the catalogue. A layer (buildings, BIM, pipes) is a
`Layer`: how to read its index, how to fetch a leaf's rows, how to turn them into content.

Decisions recorded here:
- **Where.** ``$CIM_HOME/tilesets/<layer>/`` (or ``--out DIR``): ``tileset.json``, ``content/L/x/y.glb``
  (quadtree cell addresses; a leaf with detail children adds ``content/L/x/y-0.glb``, ``-1`` …) and
  ``build-manifest.json``. The catalogue row's ``path`` is that folder.
- **Streaming.** Only the index (one row of ~60 bytes per feature: key, representative point, size,
  estimated bytes, content hash) is held for the whole layer; rows are fetched per leaf inside one
  REPEATABLE READ snapshot, by a background thread that reads ahead while the leaves are meshed (at most
  a few leaves' rows per worker are held, plus up to `MAX_EARLY_LEAVES` read before the workers start).
- **Parallel meshing.** A layer whose ``make`` can run in another process (`Layer.parallel`: a module-level
  function of picklable rows) is meshed by a pool of forked worker processes (``BuildOptions.workers``,
  default: one per CPU, at most 4), a few leaves in flight per worker, results written in plan order. The
  output is byte for byte the serial one (``make`` is a pure function of the rows; tested). The pool is
  forked after the index is read and the storage → ECEF transformer is made (PROJ's operation search
  costs ~1.5 s per process; it runs in a thread while the database computes the index, and the workers
  inherit its result) and before the fetch thread starts (no thread but this one is running at the fork).
  The workers never touch the parent's database connection. Leaves stay serial when there are fewer than
  `MIN_PARALLEL_LEAVES` to write (an incremental build of a few changed leaves does not fork).
- **Tree.** Features live in the quadtree's leaves (`tilesets.quadtree`: a leaf holds at most
  ``max_features`` index features and about ``max_tile_bytes`` estimated raw bytes), refinement ADD (the
  layers' features are disjoint). A leaf may carry *detail children* in its own frame and refine them by
  REPLACE (the BIM layer: LOD1 blocks replaced by elements).
- **Geometric error.** A tile's geometric error is the size of the biggest thing missing while the tile is
  drawn without its children: tiles whose children are all content leaves 0; a leaf with detail children
  the error its layer gives (see tilesets/bim.py); any tile above ``max(error, size)`` over the leaves
  below it, where ``size`` is the largest 3D bounding-box diagonal of their features (the features drawn
  by nobody until the children load). A parent therefore never has less error than a child; the tileset's
  error is the largest of all.
- **Incremental.** ``build-manifest.json`` stores the grid and per leaf a digest of its features
  (order-free sum of mixed (key, content hash) pairs), its box, transform, errors and files. An incremental
  build places every feature in the previous tree (`tilesets.quadtree.descend`), re-splits leaves that
  overflow, rewrites only leaves whose digest changed or that are new, hard-links the other leaves' files
  into the new folder (same inode and mtime: nothing is rewritten) and drops empty leaves. ``tileset.json``
  is always rewritten (tilesetVersion is bumped, parent boxes may change). A full build happens instead
  when there is no manifest, when the build parameters or the layer's content format changed, or when a
  feature lies outside the previous grid.
- **tilesetVersion** is the catalogue's ``tileset_version`` (an integer, one more than the highest of the
  catalogue and the previous manifest), written as a string.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg

from cim.crs import storage_to_ecef
from cim.db import transaction
from cim.settings import Settings, get_settings
from cim.store.tiles import read_snapshot, register_tileset, tileset_entry
from tilesets.quadtree import Cell, QuadGrid, descend, group_by_cell, internal_cells, plan
from tilesets.tileset import (
    LocalFrame,
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

MANIFEST = "build-manifest.json"
MANIFEST_FORMAT = "cim-tiles-manifest/1"
MIN_PARALLEL_LEAVES = 4  # fewer leaves to write are meshed in this process (forking costs more than it saves)
MAX_DEFAULT_WORKERS = 4
MAX_EARLY_LEAVES = 64  # leaves whose rows are read while the CRS transformer is still being made

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
RowsT = TypeVar("RowsT")


class TilesBuildError(RuntimeError):
    """A tileset cannot be built (nothing to tile, the data changed under the build, …); says why."""


class NothingToTileError(TilesBuildError):
    """The layer has no features in the database (``cim tiles build --layer all`` skips such layers)."""


def default_workers() -> int:
    """Mesh worker processes when none are asked for: one per CPU this process may use, at most 4."""
    return max(1, min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0))))


@dataclass(frozen=True)
class BuildOptions:
    """Tile size limits: a leaf holds at most ``max_features`` and about ``max_tile_bytes`` raw bytes.
    ``workers``: processes meshing leaves of a `Layer.parallel` layer (1: this process only); it does not
    change the output."""

    max_features: int = 1000
    max_tile_bytes: int = 1_000_000
    workers: int = field(default_factory=default_workers)

    def __post_init__(self) -> None:
        if self.max_features < 1 or self.max_tile_bytes < 1:
            raise ValueError("tile limits must be positive")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")


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
# What a layer provides


@dataclass(frozen=True)
class FeatureIndex:
    """One entry per feature of a layer, as parallel arrays (the only whole-layer data a build holds).

    ``key``: a unique 64-bit key (digests mix it with the content hash); ``x``/``y``: representative point
    (bounding-box centre, storage CRS, m), which decides the feature's leaf; ``size``: diagonal of the
    feature's 3D bounding box (m); ``weight``: estimated raw bytes of its content; ``digest``: 64-bit hash
    of everything its tile shows of it; ``payload``: whatever the layer needs to fetch rows by index
    position (codes, kinds), indexed like the arrays."""

    key: IntArray
    x: FloatArray
    y: FloatArray
    size: FloatArray
    weight: FloatArray
    digest: IntArray
    payload: Any = None

    def __len__(self) -> int:
        return len(self.key)


@dataclass(frozen=True)
class DetailContent:
    """A child tile of a leaf, in the leaf's frame (no transform of its own): its GLB and ``box``."""

    glb: bytes
    box: list[float]


@dataclass(frozen=True)
class LeafContent:
    """What a layer made of one leaf: the GLB placed with ``frame``, its ``box`` in that frame (holding the
    details' boxes too), the features' bounds in the storage CRS (xmin, ymin, xmax, ymax), and optionally
    detail children that REPLACE this content, with the geometric error of drawing this content instead."""

    glb: bytes
    frame: LocalFrame
    box: list[float]
    bounds: tuple[float, float, float, float]
    feature_count: int
    details: Sequence[DetailContent] = ()
    geometric_error: float = 0.0


@dataclass(frozen=True)
class Layer(Generic[RowsT]):
    """A tileset layer: ``index`` reads the `FeatureIndex` (raises NothingToTileError when empty);
    ``fetch`` reads the rows of the features at the given index positions (it runs in a background thread
    on the snapshot connection); ``found`` counts the index features present in fetched rows (fewer than
    asked means they vanished); ``make`` meshes rows into a `LeafContent`. ``content_format`` is bumped
    whenever what ``make`` writes changes (forces a full rebuild); ``extras`` gives the tileset.json
    ``extras`` from the index (optional); ``attributes`` go into the catalogue row. ``parallel``: ``make`` is
    a module-level function whose rows and result pickle, so leaves may be meshed in worker processes."""

    name: str
    content_format: int
    index: Callable[[psycopg.Connection], FeatureIndex]
    fetch: Callable[[psycopg.Connection, FeatureIndex, IntArray], RowsT]
    found: Callable[[RowsT], int]
    make: Callable[[RowsT, BuildOptions], LeafContent]
    attributes: dict[str, Any] = field(default_factory=dict)
    extras: Callable[[FeatureIndex], dict[str, Any]] | None = None
    parallel: bool = False


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


def tile_digest(code: IntArray, digest: IntArray) -> str:
    """An order-free digest of a set of (key, content hash) pairs: equal iff the tile's content is equal
    (up to 64-bit collisions)."""
    with np.errstate(over="ignore"):
        mixed = _mix(_mix(code.astype(np.uint64)) ^ digest.astype(np.uint64))
        total = int(mixed.sum(dtype=np.uint64))
    return f"{total:016x}-{len(code)}"


def build_params(content_format: int, options: BuildOptions, settings: Settings) -> dict[str, Any]:
    """What a layer's output depends on besides its data; a manifest with other params forces a full build."""
    return {
        "content_format": content_format,
        "max_features": options.max_features,
        "max_tile_bytes": options.max_tile_bytes,
        "storage_srid": settings.storage_srid,
        "height_offset_m": settings.height_offset_m,
    }


def read_manifest(folder: Path, manifest_format: str = MANIFEST_FORMAT) -> dict[str, Any] | None:
    """The build manifest in ``folder`` if it has ``manifest_format``; None if missing, unreadable or other."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == manifest_format else None


def previous_to_update(
    previous: dict[str, Any] | None, params: dict[str, Any], incremental: bool
) -> tuple[dict[str, Any] | None, str]:
    """The previous manifest an incremental build updates and ``""``, or None and why the build is full."""
    if not incremental:
        return None, "full build requested"
    if previous is None:
        return None, "no previous build to update"
    if previous.get("params") != params:
        return None, "build parameters or content format changed"
    return previous, ""


def next_tileset_version(previous: dict[str, Any] | None, entry: dict[str, Any] | None) -> int:
    """One more than the highest tilesetVersion of the previous manifest and the catalogue row."""
    return 1 + max(int(previous["tileset_version"]) if previous else 0, entry["tileset_version"] if entry else 0)


def update_reason(changed: bool) -> str:
    """The report's reason for an incremental build that updated the previous one."""
    return "changes since the last build" if changed else "nothing changed since the last build"


def content_uri(cell: Cell) -> str:
    return f"content/{cell.level}/{cell.x}/{cell.y}.glb"


def detail_uri(cell: Cell, i: int) -> str:
    return f"content/{cell.level}/{cell.x}/{cell.y}-{i}.glb"


def _files(cell: Cell, record: dict[str, Any]) -> list[str]:
    """The files a leaf's manifest record stands for (content, then detail children)."""
    return [content_uri(cell), *(d["uri"] for d in record.get("details", []))]


# --------------------------------------------------------------------------------------------------
# Planning


@dataclass
class _Plan:
    grid: QuadGrid
    leaves: dict[Cell, IntArray]
    full: bool
    reason: str


def _plan(index: FeatureIndex, options: BuildOptions, previous: dict[str, Any] | None) -> _Plan:
    weight = index.weight
    if previous is not None:
        g = previous["grid"]
        grid = QuadGrid(float(g["x0"]), float(g["y0"]), float(g["size"]))
        if bool(grid.contains(index.x, index.y).all()):
            old_leaves = [Cell.from_key(k) for k in previous["tiles"]]
            level, cx, cy = descend(grid, old_leaves, index.x, index.y)
            leaves: dict[Cell, IntArray] = {}
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
        reason = "a feature lies outside the previous tile grid"
    else:
        reason = "no previous build to update"
    grid = QuadGrid.around(index.x, index.y)
    leaves = plan(grid, index.x, index.y, weight, options.max_features, options.max_tile_bytes)
    return _Plan(grid, leaves, full=True, reason=reason)


# --------------------------------------------------------------------------------------------------
# The tree


def _leaf_corners_ecef(record: dict[str, Any]) -> FloatArray:
    matrix = np.asarray(record["transform"], dtype=np.float64).reshape(4, 4, order="F")
    corners = box_corners(record["box"])
    return np.asarray(corners @ matrix[:3, :3].T + matrix[:3, 3], dtype=np.float64)


def _leaf_tile(cell: Cell, record: dict[str, Any]) -> Tile:
    details = [Tile(box=d["box"], geometric_error=0.0, content_uri=d["uri"]) for d in record.get("details", [])]
    return Tile(
        box=record["box"],
        geometric_error=float(record.get("error", 0.0)) if details else 0.0,
        content_uri=content_uri(cell),
        transform=record["transform"],
        children=details,
        refine="REPLACE" if details else None,
    )


def tile_tree(records: dict[str, dict[str, Any]]) -> Tile:
    """The tile tree over leaf records (manifest form): leaves carry content, transform, local box and detail
    children; every ancestor gets an ECEF box around its children's corners and the error of the module
    docstring."""
    leaves = {Cell.from_key(k): r for k, r in records.items()}
    tiles: dict[Cell, Tile] = {}
    corners: dict[Cell, FloatArray] = {}
    errors: dict[Cell, float] = {}
    for cell, r in leaves.items():
        tiles[cell] = _leaf_tile(cell, r)
        corners[cell] = _leaf_corners_ecef(r)
        errors[cell] = max(float(r["max_size"]), float(r.get("error", 0.0)))
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


def _write_leaf(staging: Path, cell: Cell, content: LeafContent, digest: str, max_size: float) -> dict[str, Any]:
    """Write a leaf's files into the staging folder; returns its manifest record."""
    write_bytes(staging / content_uri(cell), content.glb)
    details = []
    for i, detail in enumerate(content.details):
        write_bytes(staging / detail_uri(cell, i), detail.glb)
        details.append({"uri": detail_uri(cell, i), "box": detail.box, "bytes": len(detail.glb)})
    record: dict[str, Any] = {
        "digest": digest,
        "features": content.feature_count,
        "bytes": len(content.glb) + sum(len(d.glb) for d in content.details),
        "box": content.box,
        "transform": content.frame.transform(),
        "max_size": max_size,
        "bounds": [float(v) for v in content.bounds],
    }
    if details:
        record["details"] = details
        record["error"] = float(content.geometric_error)
    return record


def build_layer(
    layer: Layer[RowsT],
    settings: Settings | None = None,
    out: Path | None = None,
    incremental: bool = False,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build (or update) a layer's tileset; returns what was done. Raises TilesBuildError (NothingToTileError
    when the layer is empty) or TilesetBusyError."""
    settings = settings or get_settings()
    options = options or BuildOptions()
    target = (out or default_tileset_dir(layer.name, settings)).absolute()
    check_target(target, settings)
    started = time.perf_counter()
    with build_lock(target), read_snapshot(settings) as conn, _warm_transformer() as crs_ready:
        index = layer.index(conn)
        if len(index) == 0:
            raise NothingToTileError(f"there is nothing to tile for the {layer.name} layer")
        previous = read_manifest(target) if target.exists() else None
        version = next_tileset_version(previous, tileset_entry(conn, layer.name))
        params = build_params(layer.content_format, options, settings)
        base, why = previous_to_update(previous, params, incremental)
        planned = _plan(index, options, base)
        reason = why or planned.reason
        old_tiles: dict[str, Any] = base["tiles"] if base is not None else {}

        with staging_for(target) as staging:
            records: dict[str, dict[str, Any]] = {}
            jobs: list[Job] = []
            reused = 0
            for cell, members in sorted(planned.leaves.items()):
                digest = tile_digest(index.key[members], index.digest[members])
                (staging / content_uri(cell)).parent.mkdir(parents=True, exist_ok=True)
                old = old_tiles.get(cell.key)
                if old is not None and old["digest"] == digest and link_files(target, staging, _files(cell, old)):
                    records[cell.key] = old
                    reused += 1
                else:
                    jobs.append((cell, digest, members))
            written: list[str] = []
            for (cell, digest, members), content in _made_leaves(conn, layer, index, jobs, options, crs_ready):
                records[cell.key] = _write_leaf(staging, cell, content, digest, float(index.size[members].max()))
                written.append(cell.key)
                if progress is not None and len(written) % 500 == 0:
                    progress(f"{len(written):,} of {len(jobs):,} tiles written")
            max_error = max(max(float(r["max_size"]), float(r.get("error", 0.0))) for r in records.values())
            total_bytes = sum(int(r["bytes"]) for r in records.values())
            tile_count = sum(1 + len(r.get("details", [])) for r in records.values())
            feature_count = sum(int(r["features"]) for r in records.values())
            removed = len(set(old_tiles) - set(records))
            publish_layer(
                settings,
                staging,
                target,
                layer=layer.name,
                tileset_version=version,
                doc=tileset_document(
                    tile_tree(records),
                    geometric_error=max_error,
                    tileset_version=str(version),
                    extras=layer.extras(index) if layer.extras is not None else None,
                ),
                manifest={
                    "format": MANIFEST_FORMAT,
                    "layer": layer.name,
                    "tileset_version": version,
                    "params": params,
                    "grid": {"x0": planned.grid.x0, "y0": planned.grid.y0, "size": planned.grid.size},
                    "tiles": records,
                },
                feature_count=feature_count,
                tile_count=tile_count,
                bounds=union_bounds([r["bounds"] for r in records.values()]),
                attributes={
                    **layer.attributes,
                    "content_bytes": total_bytes,
                    "geometric_error": max_error,
                    "max_features": options.max_features,
                    "max_tile_bytes": options.max_tile_bytes,
                    "incremental": not planned.full,
                    "tiles_written": len(written),
                },
            )
    if not planned.full:
        reason = update_reason(bool(written or removed))
    return BuildReport(
        layer=layer.name,
        path=target,
        tileset_version=version,
        feature_count=feature_count,
        tile_count=tile_count,
        written=len(written),
        reused=reused,
        removed=removed,
        bytes=total_bytes,
        seconds=time.perf_counter() - started,
        full=planned.full,
        reason=reason,
        written_keys=written,
    )


Job = tuple[Cell, str, IntArray]


@contextmanager
def _warm_transformer() -> Iterator[threading.Thread]:
    """Make the storage → ECEF transformer in a thread (PROJ's search releases the GIL) while the database
    computes the index; an error is left for the first real use to raise. The thread is always joined before
    this context ends (a process leaving while PROJ still works in a thread can crash on the way out)."""

    def warm() -> None:
        with suppress(Exception):  # raised again, with its context, where the meshes need the transformer
            storage_to_ecef(np.zeros(2), np.zeros(2), np.zeros(2))

    thread = threading.Thread(target=warm, name="cim-tiles-crs")
    thread.start()
    try:
        yield thread
    finally:
        thread.join()


def _checked(layer: Layer[RowsT], job: Job, rows: RowsT) -> RowsT:
    missing = len(job[2]) - layer.found(rows)
    if missing:
        raise TilesBuildError(f"tile {job[0].key}: {missing} features vanished during the build")
    return rows


def _worker_ready() -> int:
    return os.getpid()


def _made_leaves(
    conn: psycopg.Connection,
    layer: Layer[RowsT],
    index: FeatureIndex,
    jobs: list[Job],
    options: BuildOptions,
    crs_ready: threading.Thread,
) -> Iterator[tuple[Job, LeafContent]]:
    """Each job's content, in job order: meshed here, or in forked worker processes (module docstring,
    Parallel meshing) with up to two leaves per worker in flight. While the transformer is still being made
    (`_warm_transformer`), the first leaves' rows are read here (at most `MAX_EARLY_LEAVES`), so the
    database works meanwhile and no fetch thread exists yet when the workers are forked."""
    if not jobs:
        return
    early: list[RowsT] = []
    while crs_ready.is_alive() and len(early) < min(len(jobs), MAX_EARLY_LEAVES):
        early.append(layer.fetch(conn, index, jobs[len(early)][2]))
    crs_ready.join()
    fetched = chain(zip(jobs, early, strict=False), _prefetched_rows(conn, layer, index, jobs[len(early) :]))
    workers = options.workers if layer.parallel and len(jobs) >= MIN_PARALLEL_LEAVES else 1
    if workers == 1:
        for job, rows in fetched:
            yield job, layer.make(_checked(layer, job, rows), options)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        pool.submit(_worker_ready).result()  # forks every worker now, before the fetch thread exists
        pending: deque[tuple[Job, Future[LeafContent]]] = deque()
        for job, rows in fetched:
            pending.append((job, pool.submit(layer.make, _checked(layer, job, rows), options)))
            if len(pending) >= 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _prefetched_rows(
    conn: psycopg.Connection, layer: Layer[RowsT], index: FeatureIndex, jobs: list[Job], ahead: int = 2
) -> Iterator[tuple[Job, RowsT]]:
    """The rows of each job's features, in order, fetched by one background thread up to ``ahead`` tiles in
    advance: the database reads the next tiles while this process meshes the current one. At most
    ``ahead + 1`` tiles of rows are in memory; the connection is only used by that thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cim-tiles-fetch") as pool:
        pending: deque[tuple[Job, Future[RowsT]]] = deque()
        remaining = iter(jobs)
        for job in remaining:
            pending.append((job, pool.submit(layer.fetch, conn, index, job[2])))
            if len(pending) > ahead:
                break
        while pending:
            job, future = pending.popleft()
            following = next(remaining, None)
            if following is not None:
                pending.append((following, pool.submit(layer.fetch, conn, index, following[2])))
            yield job, future.result()


def check_target(target: Path, settings: Settings) -> None:
    """Refuse to replace a folder that is not one of our tilesets, and settings the CRS code would not use."""
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).is_file())):
        raise TilesBuildError(f"{target} exists and is not a tileset folder built by cim; refusing to replace it")
    process = get_settings()
    if (settings.storage_srid, settings.height_offset_m) != (process.storage_srid, process.height_offset_m):
        raise TilesBuildError(
            "the settings passed differ from the process settings in storage SRID or height offset; "
            "coordinates are transformed with the process settings (CIM_STORAGE_SRID, CIM_HEIGHT_OFFSET_M)"
        )


@contextmanager
def staging_for(target: Path) -> Iterator[Path]:
    """A new staging folder beside ``target`` (`staging_directory`), deleted again if the build fails."""
    staging = staging_directory(target)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_layer(
    settings: Settings,
    staging: Path,
    target: Path,
    *,
    layer: str,
    tileset_version: int,
    doc: dict[str, Any],
    manifest: dict[str, Any],
    feature_count: int,
    tile_count: int,
    bounds: tuple[float, float, float, float],
    attributes: dict[str, Any],
) -> None:
    """Write the layer's ``tileset.json`` and manifest into ``staging``, then swap it in as ``target`` and
    register it in the catalogue in one transaction (no row is committed when the swap fails)."""
    write_json(staging / "tileset.json", doc)
    write_json(staging / MANIFEST, manifest)
    with transaction(settings) as conn:
        register_tileset(
            conn,
            layer=layer,
            path=str(target),
            tileset_version=tileset_version,
            feature_count=feature_count,
            tile_count=tile_count,
            bounds=bounds,
            attributes=attributes,
        )
        publish_directory(staging, target)


def link_files(old_root: Path, new_root: Path, uris: list[str]) -> bool:
    """Carry unchanged files into the new folder without rewriting them (hard link, else copy; same relative
    paths); False if one of them is gone."""
    return all(_link_or_copy(old_root / uri, new_root / uri) for uri in uris)


def _link_or_copy(src: Path, dst: Path) -> bool:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
        return True
    except FileExistsError:
        return True
    except FileNotFoundError:
        return False
    except OSError:
        try:
            shutil.copy2(src, dst)
            return True
        except FileNotFoundError:
            return False


def union_bounds(bounds: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """The (xmin, ymin, xmax, ymax) holding every one of ``bounds``."""
    b = np.array(bounds, dtype=np.float64)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())


def union_box(boxes: Sequence[Sequence[float]]) -> list[float]:
    """The smallest axis-aligned box (same frame) holding axis-aligned ``boxes`` (their margins included)."""
    b = np.asarray(boxes, dtype=np.float64)
    half = np.abs(b[:, 3:].reshape(-1, 3, 3)).sum(axis=1)
    lo, hi = (b[:, :3] - half).min(axis=0), (b[:, :3] + half).max(axis=0)
    centre, extent = (lo + hi) / 2, (hi - lo) / 2
    return [float(v) for v in (*centre, extent[0], 0.0, 0.0, 0.0, extent[1], 0.0, 0.0, 0.0, extent[2])]
