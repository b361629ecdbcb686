"""Layers made of catalogued 3D assets (point clouds, photogrammetry meshes; ``assets`` table, migration 0003):
one tileset per asset, all of them under one layer ``tileset.json`` that references each as an external
tileset. Shared by `tilesets.pointcloud` and `tilesets.mesh_tiles`, which only say how one asset becomes a
tileset folder.

Decisions recorded here:
- **Layout.** ``$CIM_HOME/tilesets/<layer>/`` (or ``--out DIR``) holds ``tileset.json`` (root tile without
  content, refinement ADD, one child per asset whose content is ``<name>/tileset.json``),
  ``build-manifest.json`` and one folder ``<name>/`` per asset with that asset's own complete tileset.
  External tilesets rather than one merged tree: each asset is tiled on its own (its own octree or quadtree,
  frames and levels of detail), so changing one asset rewrites only its folder, and a client can also load
  one asset's tileset alone.
- **The referencing tile** of an asset has no ``transform`` (each asset's root carries its own absolute
  transform to ECEF); its ``box`` is an ECEF box, oriented east/north/up, around the eight world corners
  of the asset's root box, so the asset's content lies inside it by convexity. Its geometric error is the
  asset tileset's own ``geometricError`` (never less than the asset's root tile's); the layer root takes
  the largest of them.
- **Incremental** is per asset: the manifest keeps per asset a fingerprint of everything the tiles depend
  on (the catalogue's SHA-256 of the file, the sizes and modification times of every file of the asset
  folder, CRS, origin, up axis, the layer's content format and the build parameters incl. storage SRID and
  height offset) and the list of files written. ``--incremental`` rebuilds only assets whose fingerprint
  changed or that are new, hard-links the files of the others into the new folder (same inode and mtime:
  nothing rewritten) and drops removed assets. The layer ``tileset.json`` and the manifest are always
  rewritten (tilesetVersion is bumped); an asset's own ``tileset.json`` keeps the tilesetVersion of the
  build that made it. ``written``/``reused``/``removed`` in the report count assets.
- **tilesetVersion** as for the other layers: one more than the highest of the catalogue row and the
  previous manifest.
- **Publishing** through a staging folder swapped in atomically (`tilesets.tileset.publish_directory`),
  under the layer's build lock; no database connection is held while assets are converted (point cloud
  conversion forks worker processes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyproj
import shapely

from cim.settings import Settings, get_settings
from cim.store.assets import AssetRecord, assets_of_kind
from cim.store.tiles import read_snapshot, tileset_entry
from tilesets.layer_build import (
    MANIFEST,
    BuildOptions,
    BuildReport,
    NothingToTileError,
    TilesBuildError,
    build_params,
    check_target,
    default_tileset_dir,
    link_files,
    next_tileset_version,
    previous_to_update,
    publish_layer,
    read_manifest,
    staging_for,
    union_bounds,
    update_reason,
)
from tilesets.tileset import Tile, build_lock, ecef_box_around, tileset_document

MANIFEST_FORMAT = "cim-asset-tiles-manifest/1"
FloatArray = npt.NDArray[np.float64]


@dataclass
class AssetTileset:
    """What tiling one asset produced in its folder: files (relative to the folder), the eight ECEF corners of
    its root bounding box, its tileset's geometric error, tile count, bytes written and feature count
    (points or triangles)."""

    files: list[str]
    corners_ecef: list[list[float]]
    geometric_error: float
    tile_count: int
    bytes: int
    features: int
    info: dict[str, Any] = field(default_factory=dict)


TileOne = Callable[[AssetRecord, Path, BuildOptions, int, Callable[[str], None]], AssetTileset]


@dataclass(frozen=True)
class AssetLayer:
    """A layer of assets of one catalogue ``kind``, tiled one asset at a time by ``tile_one(asset, folder,
    options, tileset_version, progress)``; ``content_format`` is bumped when the output changes."""

    name: str
    kind: str
    tile_one: TileOne
    content_format: int
    attributes: dict[str, Any]


def horizontal(crs: pyproj.CRS) -> pyproj.CRS:
    """The horizontal part of a compound CRS (the CRS itself otherwise): assets' heights are handled apart."""
    return crs.sub_crs_list[0] if crs.is_compound and crs.sub_crs_list else crs


def asset_fingerprint(asset: AssetRecord, params: dict[str, Any]) -> str:
    """A digest of everything an asset's tiles depend on (see the module docstring)."""
    folder = Path(asset.path).parent
    files = []
    for name in sorted(asset.files):
        try:
            st = (folder / name).stat()
            files.append([name, st.st_size, st.st_mtime_ns])
        except OSError:
            files.append([name, None, None])
    doc = {
        "sha256": asset.sha256,
        "path": asset.path,
        "format": asset.format,
        "crs": asset.crs,
        "origin": asset.origin,
        "up_axis": asset.up_axis,
        "files": files,
        "params": params,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def layer_root(records: dict[str, dict[str, Any]]) -> tuple[Tile, float]:
    """The layer's root tile (one child per asset, content = the asset's external tileset) and its error."""
    children = []
    corners = []
    for name in sorted(records):
        r = records[name]
        pts = np.asarray(r["corners_ecef"], dtype=np.float64)
        corners.append(pts)
        children.append(Tile(box=ecef_box_around(pts), geometric_error=float(r["geometric_error"]),
                             content_uri=f"{name}/tileset.json"))  # fmt: skip
    error = max(float(r["geometric_error"]) for r in records.values())
    return Tile(box=ecef_box_around(np.concatenate(corners)), geometric_error=error, children=children), error


def build_asset_layer(
    layer: AssetLayer,
    settings: Settings | None = None,
    out: Path | None = None,
    incremental: bool = False,
    options: BuildOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build (or update) the tileset of every catalogued asset of ``layer.kind``; raises TilesBuildError
    (NothingToTileError when no asset of that kind is registered)."""
    settings = settings or get_settings()
    options = options or BuildOptions()
    step = progress or (lambda _text: None)
    target = (out or default_tileset_dir(layer.name, settings)).absolute()
    check_target(target, settings)
    started = time.perf_counter()
    with build_lock(target):
        with read_snapshot(settings) as conn:
            assets = assets_of_kind(conn, layer.kind)
            entry = tileset_entry(conn, layer.name)
        if not assets:
            raise NothingToTileError(f"no {layer.kind} is registered: run `cim ingest {layer.kind}` first")
        clash = [a.name for a in assets if a.name in ("tileset.json", MANIFEST)]
        if clash:
            raise TilesBuildError(f"asset name {clash[0]!r} clashes with a file of the layer folder; rename it")
        previous = read_manifest(target, MANIFEST_FORMAT) if target.exists() else None
        version = next_tileset_version(previous, entry)
        params = build_params(layer.content_format, options, settings)
        base, reason = previous_to_update(previous, params, incremental)
        old: dict[str, Any] = dict(base["assets"]) if base is not None else {}
        with staging_for(target) as staging:
            records: dict[str, dict[str, Any]] = {}
            written: list[str] = []
            reused = 0
            for asset in assets:
                fingerprint = asset_fingerprint(asset, params)
                before = old.get(asset.name)
                folder = staging / asset.name
                if (
                    before is not None
                    and before["fingerprint"] == fingerprint
                    and link_files(target / asset.name, folder, list(before["files"]))
                ):
                    records[asset.name] = before
                    reused += 1
                    continue
                shutil.rmtree(folder, ignore_errors=True)  # a partial link of a vanished old folder
                folder.mkdir()
                step(f"{layer.name}: tiling {asset.name} ({asset.format})")
                made = layer.tile_one(asset, folder, options, version, step)
                records[asset.name] = {
                    "fingerprint": fingerprint,
                    "tileset_version": version,
                    "files": sorted(made.files),
                    "corners_ecef": made.corners_ecef,
                    "geometric_error": made.geometric_error,
                    "tile_count": made.tile_count,
                    "bytes": made.bytes,
                    "features": made.features,
                    "info": made.info,
                }
                written.append(asset.name)
            removed = len(set(old) - set(records))
            root, error = layer_root(records)
            tile_count = sum(int(r["tile_count"]) for r in records.values())
            total_bytes = sum(int(r["bytes"]) for r in records.values())
            publish_layer(
                settings,
                staging,
                target,
                layer=layer.name,
                tileset_version=version,
                doc=tileset_document(root, geometric_error=error, tileset_version=str(version)),
                manifest={
                    "format": MANIFEST_FORMAT,
                    "layer": layer.name,
                    "tileset_version": version,
                    "params": params,
                    "assets": records,
                },
                feature_count=len(records),
                tile_count=tile_count,
                bounds=union_bounds([shapely.from_wkb(a.footprint_wkb).bounds for a in assets]),
                attributes={
                    **layer.attributes,
                    "assets": {n: {"features": r["features"], "tiles": r["tile_count"]} for n, r in records.items()},
                    "content_bytes": total_bytes,
                    "geometric_error": error,
                    "max_tile_bytes": options.max_tile_bytes,
                    "incremental": bool(old),
                    "assets_written": written,
                },
            )
    if base is not None:
        reason = update_reason(bool(written or removed))
    return BuildReport(
        layer=layer.name,
        path=target,
        tileset_version=version,
        feature_count=len(records),
        tile_count=tile_count,
        written=len(written),
        reused=reused,
        removed=removed,
        bytes=total_bytes,
        seconds=time.perf_counter() - started,
        full=not old,
        reason=reason,
        written_keys=written,
    )
