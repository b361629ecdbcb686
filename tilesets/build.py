"""The tileset layers ``cim tiles build --layer`` knows, and the LOD1 buildings layer itself.

Every layer runs through the same pipeline (`tilesets.layer_build`: quadtree plan from a light index,
per-leaf fetch in one read-only snapshot, manifest for ``--incremental``, atomic publish, catalogue row);
a layer only says how to read its index, fetch a leaf's rows and mesh them:

- ``buildings``: LOD1 blocks, one feature per building (this module; meshes in tilesets/buildings.py).
- ``bim``: IFC elements, one feature per element, replacing their building's LOD1 block close up
  (tilesets/bim.py).
- ``pipes``: pipes as tubes at their true depth, manholes, valves and other nodes as glyphs
  (tilesets/pipes.py).
- ``pointcloud``, ``mesh``: catalogued 3D assets, one external tileset per asset (tilesets/asset_layer.py with
  tilesets/pointcloud.py and tilesets/mesh_tiles.py); they share the manifest, publishing and catalogue steps.

For buildings the index row is the building (key: the 19-digit code as an integer); the content hash
covers everything a tile shows of it (cim/store/tiles.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import psycopg

from cim.store.tiles import BuildingRows, building_index, building_rows
from tilesets.bim import build_bim
from tilesets.buildings import building_tile, estimated_bytes
from tilesets.layer_build import (
    BuildOptions,
    BuildReport,
    FeatureIndex,
    IntArray,
    Layer,
    LeafContent,
    NothingToTileError,
    TilesBuildError,
    build_layer,
    content_uri,
    default_tileset_dir,
    tile_digest,
    tile_tree,
)
from tilesets.mesh_tiles import build_mesh
from tilesets.pipes import build_pipes
from tilesets.pointcloud import build_pointcloud

__all__ = [
    "CONTENT_FORMAT",
    "LAYERS",
    "BuildOptions",
    "BuildReport",
    "NothingToTileError",
    "TilesBuildError",
    "build_buildings",
    "content_uri",
    "default_tileset_dir",
    "tile_digest",
    "tile_tree",
]

CONTENT_FORMAT = 2  # bump when the building meshes or metadata written change: forces a full rebuild (2: meshopt)


def _buildings_index(conn: psycopg.Connection) -> FeatureIndex:
    index = building_index(conn)
    if len(index) == 0:
        raise NothingToTileError("there are no buildings in the database: ingest buildings first")
    return FeatureIndex(
        key=index.code,
        x=index.x,
        y=index.y,
        size=index.size,
        weight=np.asarray(estimated_bytes(index.vertices), dtype=np.float64),
        digest=index.digest,
    )


def _buildings_fetch(conn: psycopg.Connection, index: FeatureIndex, members: IntArray) -> BuildingRows:
    return building_rows(conn, index.key[members].tolist())


def _buildings_make(rows: BuildingRows, _options: BuildOptions) -> LeafContent:
    return building_tile(rows)


BUILDINGS = Layer[BuildingRows](
    name="buildings",
    content_format=CONTENT_FORMAT,
    index=_buildings_index,
    fetch=_buildings_fetch,
    found=len,
    make=_buildings_make,
    parallel=True,
    attributes={
        "format": "3D Tiles 1.1 glb: EXT_mesh_features, EXT_structural_metadata, KHR_mesh_quantization, "
        "EXT_meshopt_compression"
    },
)


build_buildings = partial(build_layer, BUILDINGS)
"""Build (or update) the LOD1 buildings tileset: ``build_buildings(settings, out, incremental, options, progress)``
→ BuildReport; raises TilesBuildError."""


LAYERS: dict[str, Callable[..., BuildReport]] = {
    "buildings": build_buildings,
    "bim": build_bim,
    "pipes": build_pipes,
    "pointcloud": build_pointcloud,
    "mesh": build_mesh,
}
"""Tileset layers `cim tiles build --layer` knows, each a function (settings, out, incremental, options,
progress) → BuildReport."""
