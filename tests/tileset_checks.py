"""A structural checker for any 3D Tiles 1.1 tileset we write, for tests of every layer: ``check_tileset(path)``
returns the problems found (an empty list for a good tileset), each naming the file and the tile.

It shares no code with the writers in tilesets/: it reads files with `tile_reader` (and meshoptimizer's JS decoder
for compressed GLBs, as CesiumJS would) and checks what the 3D Tiles 1.1 specification and its validator ask for:

- **Schema-required fields.** ``asset.version`` "1.1", ``asset.tilesetVersion`` set (on the tileset passed in; we
  bump it on every build to bust caches), ``geometricError`` and ``root``; every tile's ``boundingVolume`` (box of
  12, sphere of 4 or region of 6 finite numbers) and ``geometricError`` ≥ 0; ``refine`` on the root and "ADD" or
  "REPLACE" wherever given; ``transform`` 16 finite numbers of an affine column-major matrix; ``children`` not
  empty when present; content URIs that resolve to files.
- **Geometric error order.** A child's (and an external tileset root's) geometric error never exceeds its
  parent's; the tileset's is at least its root's; leaves have at most ``max_leaf_error`` (0 by default: a
  layer with another rule passes its documented bound).
- **Extension lists.** In ``tileset.json`` and every GLB: every extension object used anywhere is listed in
  ``extensionsUsed``; ``extensionsRequired`` ⊆ ``extensionsUsed``; quantized (non-float) positions, normals or
  texture coordinates declare ``KHR_mesh_quantization`` as required; ``EXT_meshopt_compression`` without a
  fallback is required.
- **Features.** ``EXT_mesh_features`` feature ids given by attribute: ``featureCount`` is the number of distinct
  ids, and every id indexes a row of the property table it names.
- **Containment.** Every GLB's POSITION values, through its node matrices, glTF's y-up → z-up turn (3D Tiles
  rotates glTF content so glTF +y is up) and the chain of tile ``transform``s, lie inside the tile's bounding
  volume, inside its content bounding volume if given, and inside every ancestor's — across external tilesets
  too. Tolerance ``tolerance_m`` (1 mm by default: float32 positions in metres relative to a local origin).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
from pyproj import Transformer

from tile_reader import Y_UP_TO_Z_UP, Glb, decode_meshopt

MESHOPT = "EXT_meshopt_compression"
QUANTIZATION = "KHR_mesh_quantization"
FLOAT = 5126
_ECEF_TO_GEODETIC = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)


@dataclass(frozen=True)
class Volume:
    """A bounding volume as written and the matrix taking its frame to ECEF (regions ignore transforms)."""

    kind: str
    values: tuple[float, ...]
    world: np.ndarray
    where: str

    def outside(self, ecef: np.ndarray, tolerance: float) -> np.ndarray:
        """A mask of the ECEF points farther than ``tolerance`` metres outside this volume."""
        v = np.asarray(self.values, dtype=np.float64)
        if self.kind == "region":
            lon, lat, h = _ECEF_TO_GEODETIC.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], radians=True)
            angle = tolerance / 6.3e6  # metres on the ground as radians, about
            return np.asarray(
                (lon < v[0] - angle) | (lon > v[2] + angle) | (lat < v[1] - angle) | (lat > v[3] + angle)
                | (h < v[4] - tolerance) | (h > v[5] + tolerance)
            )  # fmt: skip
        local = (ecef - self.world[:3, 3]) @ np.linalg.inv(self.world[:3, :3]).T
        if self.kind == "sphere":
            return np.asarray(np.linalg.norm(local - v[:3], axis=1) > v[3] + tolerance)
        axes = v[3:].reshape(3, 3)  # rows: the half-axis vectors
        offset = local - v[:3]
        u = offset @ np.linalg.pinv(axes)  # offset = u @ axes; |u_i| ≤ 1 inside
        residual = np.linalg.norm(u @ axes - offset, axis=1)  # off a flat box's plane
        lengths = np.linalg.norm(axes, axis=1)
        slack = np.where(lengths > 0, tolerance / np.maximum(lengths, 1e-300), np.inf)
        return np.asarray((np.abs(u) > 1 + slack).any(axis=1) | (residual > tolerance))


def check_tileset(
    path: Path | str, *, max_leaf_error: float = 0.0, tolerance_m: float = 0.001, expected_version: str = "1.1"
) -> list[str]:
    """Every problem of the tileset at ``path`` (a tileset.json file or its folder) and the content below it."""
    path = Path(path)
    if path.is_dir():
        path = path / "tileset.json"
    checker = _Checker(path.parent, max_leaf_error, tolerance_m, expected_version)
    with tempfile.TemporaryDirectory(prefix="tileset-check-") as scratch:
        checker.decoded = Path(scratch)
        checker.tileset(path, np.eye(4), [], parent_error=None, top=True)
    return checker.problems


class _Checker:
    def __init__(self, folder: Path, max_leaf_error: float, tolerance: float, version: str) -> None:
        self.folder = folder
        self.max_leaf_error = max_leaf_error
        self.tolerance = tolerance
        self.version = version
        self.problems: list[str] = []
        self.decoded = folder
        self.seen: set[Path] = set()
        self.folder_decoded = False

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    # -- tileset.json ----------------------------------------------------------------------------------------

    def tileset(
        self, path: Path, world: np.ndarray, ancestors: list[Volume], parent_error: float | None, top: bool
    ) -> None:
        name = self.rel(path)
        if path in self.seen:
            self.problem(name, "external tileset referenced twice (or a cycle)")
            return
        self.seen.add(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            self.problem(name, f"unreadable tileset JSON: {e}")
            return
        asset = doc.get("asset")
        if not isinstance(asset, dict) or asset.get("version") != self.version:
            self.problem(name, f"asset.version must be {self.version!r}, is {asset and asset.get('version')!r}")
        elif top and not (isinstance(asset.get("tilesetVersion"), str) and asset["tilesetVersion"]):
            self.problem(name, "asset.tilesetVersion is missing (set it on every build)")
        self.extension_lists(name, doc, _extension_names(doc))
        root = doc.get("root")
        error = doc.get("geometricError")
        if not _number(error) or error < 0:
            self.problem(name, "geometricError must be a number ≥ 0")
        if not isinstance(root, dict):
            self.problem(name, "root tile missing")
            return
        if root.get("refine") not in ("ADD", "REPLACE"):
            self.problem(name, f"the root needs refine 'ADD' or 'REPLACE', has {root.get('refine')!r}")
        if _number(error) and _number(root.get("geometricError")) and root["geometricError"] > error:
            self.problem(name, f"root geometricError {root['geometricError']} exceeds the tileset's {error}")
        self.tile(root, path.parent, name, "root", world, ancestors, parent_error, "ADD")

    def tile(
        self,
        tile: dict[str, Any],
        base: Path,
        file: str,
        where: str,
        parent_world: np.ndarray,
        ancestors: list[Volume],
        parent_error: float | None,
        parent_refine: str,
    ) -> None:
        at = f"{file} {where}"
        world = parent_world
        if "transform" in tile:
            t = tile["transform"]
            if not (isinstance(t, list) and len(t) == 16 and all(_number(x) for x in t)):
                self.problem(at, "transform must be 16 finite numbers")
            elif (t[3], t[7], t[11], t[15]) != (0, 0, 0, 1):
                self.problem(at, "transform is not an affine column-major matrix (last row 0 0 0 1)")
            else:
                world = parent_world @ np.array(t, dtype=np.float64).reshape(4, 4, order="F")
        written = tile.get("geometricError")
        error = float(written) if _number(written) and written >= 0 else None
        if error is None:
            self.problem(at, "geometricError must be a number ≥ 0")
        elif parent_error is not None and error > parent_error:
            self.problem(at, f"geometricError {error} exceeds its parent's {parent_error}")
        refine = tile.get("refine", parent_refine)
        if refine not in ("ADD", "REPLACE"):
            self.problem(at, f"refine must be 'ADD' or 'REPLACE', not {refine!r}")
        volume = self.volume(tile.get("boundingVolume"), world, at)
        chain = [*ancestors, volume] if volume else ancestors
        contents = list(tile.get("contents", [])) + ([tile["content"]] if "content" in tile else [])
        children = tile.get("children")
        if children is not None and not (isinstance(children, list) and children):
            self.problem(at, "children must be a non-empty list when present")
        if "implicitTiling" in tile:
            self.problem(at, "implicit tiling is not checked by this checker")
        external = False
        for content in contents:
            uri = content.get("uri") if isinstance(content, dict) else None
            if not isinstance(uri, str) or not uri:
                self.problem(at, "content without a uri")
                continue
            target = (base / uri.split("?")[0]).resolve()
            if not target.is_file():
                self.problem(at, f"content {uri} does not exist")
                continue
            inner = chain
            if "boundingVolume" in content:
                content_volume = self.volume(content["boundingVolume"], world, f"{at} content")
                inner = [*chain, content_volume] if content_volume else chain
            if target.suffix == ".json":
                external = True
                self.tileset(target, world, inner, parent_error=error, top=False)
            elif target.suffix == ".glb":
                self.glb(target, world, inner)
            else:
                self.problem(at, f"content {uri}: not a .glb or .json (3D Tiles 1.1 content is glTF)")
        if not children and not external and error is not None and error > self.max_leaf_error:
            self.problem(at, f"leaf geometricError {error} > {self.max_leaf_error}")
        for i, child in enumerate(children or []):
            if isinstance(child, dict):
                self.tile(child, base, file, f"{where}/{i}", world, chain, error, refine)
            else:
                self.problem(f"{at}/{i}", "a child tile must be an object")

    def volume(self, bv: Any, world: np.ndarray, at: str) -> Volume | None:
        sizes = {"box": 12, "sphere": 4, "region": 6}
        kinds = [k for k in sizes if isinstance(bv, dict) and k in bv]
        if len(kinds) != 1:
            self.problem(at, "boundingVolume must hold exactly one of box, sphere, region")
            return None
        values = bv[kinds[0]]
        if not (isinstance(values, list) and len(values) == sizes[kinds[0]] and all(_number(x) for x in values)):
            self.problem(at, f"boundingVolume.{kinds[0]} must be {sizes[kinds[0]]} finite numbers")
            return None
        if kinds[0] == "region":
            w, s, e, n, lo, hi = values
            if not (-math.pi <= w <= math.pi and -math.pi <= e <= math.pi and -math.pi / 2 <= s <= n <= math.pi / 2):
                self.problem(at, "region angles must be radians (west/east in ±π, south ≤ north in ±π/2)")
            if lo > hi:
                self.problem(at, "region minimum height above its maximum")
            return Volume("region", tuple(values), np.eye(4), at)
        if kinds[0] == "sphere" and values[3] < 0:
            self.problem(at, "sphere radius is negative")
        return Volume(kinds[0], tuple(values), world, at)

    def extension_lists(self, where: str, doc: dict[str, Any], found: set[str]) -> None:
        used = set(doc.get("extensionsUsed", []))
        required = set(doc.get("extensionsRequired", []))
        if missing := sorted(found - used):
            self.problem(where, f"extensions used but not in extensionsUsed: {missing}")
        if stray := sorted(required - used):
            self.problem(where, f"extensionsRequired not in extensionsUsed: {stray}")
        for key in ("extensionsUsed", "extensionsRequired"):
            names = doc.get(key, [])
            if len(names) != len(set(names)):
                self.problem(where, f"{key} lists an extension twice")

    # -- GLB content -----------------------------------------------------------------------------------------

    def glb(self, path: Path, world: np.ndarray, volumes: list[Volume]) -> None:
        name = self.rel(path)
        try:
            glb = Glb(path)
        except (AssertionError, ValueError, OSError) as e:
            self.problem(name, f"not a valid GLB: {e}")
            return
        doc = glb.doc
        self.extension_lists(name, doc, _extension_names(doc))
        required = set(doc.get("extensionsRequired", []))
        quantized = [
            attr for mesh in doc.get("meshes", []) for prim in mesh.get("primitives", [])
            for attr, acc in prim.get("attributes", {}).items()
            if attr in ("POSITION", "NORMAL", "TANGENT") or attr.startswith("TEXCOORD_")
            if doc["accessors"][acc].get("componentType") != FLOAT
        ]  # fmt: skip
        if quantized and QUANTIZATION not in required:
            self.problem(name, f"quantized {sorted(set(quantized))} without {QUANTIZATION} in extensionsRequired")
        compressed = any(MESHOPT in v.get("extensions", {}) for v in doc.get("bufferViews", []))
        if compressed:
            fallback = any(b.get("extensions", {}).get(MESHOPT, {}).get("fallback") for b in doc.get("buffers", []))
            if not fallback and MESHOPT not in required:
                self.problem(name, f"{MESHOPT} without a fallback buffer must be required")
            try:
                glb = Glb(self.decoded_copy(path))
            except AssertionError as e:
                self.problem(name, f"meshopt decoding failed: {e}")
                return
        try:
            positions, ids = _positions_and_feature_ids(glb)
        except (AssertionError, KeyError, IndexError, ValueError) as e:
            self.problem(name, f"cannot read POSITION: {e!r}")
            return
        self.features(name, glb, ids)
        if len(positions) == 0:
            self.problem(name, "no vertices")
            return
        ecef = (positions @ Y_UP_TO_Z_UP.T) @ world[:3, :3].T + world[:3, 3]
        for volume in volumes:
            out = volume.outside(ecef, self.tolerance)
            if out.any():
                worst = ecef[out][0]
                self.problem(
                    name,
                    f"{int(out.sum())} of {len(ecef)} vertices outside the bounding volume of {volume.where} "
                    f"(e.g. ECEF {worst.round(3).tolist()})",
                )

    def features(self, name: str, glb: Glb, ids: list[tuple[dict[str, Any], np.ndarray]]) -> None:
        tables = glb.doc.get("extensions", {}).get("EXT_structural_metadata", {}).get("propertyTables", [])
        for spec, values in ids:
            null = spec.get("nullFeatureId")
            real = values[values != null] if null is not None else values
            distinct = len(np.unique(real))
            if spec.get("featureCount") != distinct:
                self.problem(name, f"featureCount {spec.get('featureCount')} but {distinct} distinct feature ids")
            table = spec.get("propertyTable")
            if table is not None:
                if not 0 <= table < len(tables):
                    self.problem(name, f"feature ids name property table {table}, which does not exist")
                elif len(real) and (real.min() < 0 or real.max() >= tables[table]["count"]):
                    self.problem(name, f"feature ids outside property table {table} (count {tables[table]['count']})")

    def decoded_copy(self, path: Path) -> Path:
        """``path`` as CesiumJS gets it after undoing meshopt. The first call decodes every readable compressed GLB
        of the folder in one node run (node starts once); a file it cannot handle is then decoded alone."""
        if not self.folder_decoded:
            self.folder_decoded = True
            source = self.decoded / "src"
            for glb in self.folder.rglob("*.glb"):
                try:
                    views = Glb(glb).doc.get("bufferViews", [])
                except (AssertionError, ValueError, OSError):
                    continue
                if any(MESHOPT in v.get("extensions", {}) for v in views):
                    link = source / glb.relative_to(self.folder)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(glb.resolve())
            if source.is_dir():
                with contextlib.suppress(AssertionError):  # then each file alone, below
                    decode_meshopt(source, self.decoded / "all")
        if path.is_relative_to(self.folder) and (self.decoded / "all" / path.relative_to(self.folder)).is_file():
            return self.decoded / "all" / path.relative_to(self.folder)
        alone = self.decoded / "alone" / f"{len(self.problems)}-{path.name}"
        decode_meshopt(path, alone)
        return alone

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.folder)) if path.is_relative_to(self.folder) else str(path)


def _positions_and_feature_ids(glb: Glb) -> tuple[np.ndarray, list[tuple[dict[str, Any], np.ndarray]]]:
    """Every drawn vertex in the glTF scene frame (node matrices applied) and each attribute feature id set."""
    doc = glb.doc
    positions: list[np.ndarray] = []
    ids: list[tuple[dict[str, Any], np.ndarray]] = []
    for mesh_index, matrix in _mesh_instances(doc):
        for prim in doc["meshes"][mesh_index]["primitives"]:
            local = glb.accessor(prim["attributes"]["POSITION"]).astype(np.float64)
            positions.append(local @ matrix[:3, :3].T + matrix[:3, 3])
            for spec in prim.get("extensions", {}).get("EXT_mesh_features", {}).get("featureIds", []):
                if "attribute" in spec:
                    ids.append((spec, glb.accessor(prim["attributes"][f"_FEATURE_ID_{spec['attribute']}"])))
    return (np.concatenate(positions) if positions else np.empty((0, 3))), ids


def _mesh_instances(doc: dict[str, Any]) -> Iterator[tuple[int, np.ndarray]]:
    """(mesh index, node-to-scene matrix) of every mesh node of the default scene (all root nodes if none)."""
    nodes = doc.get("nodes", [])
    scenes = doc.get("scenes", [])
    if scenes:
        roots = scenes[doc.get("scene", 0)].get("nodes", [])
    else:
        children = {c for n in nodes for c in n.get("children", [])}
        roots = [i for i in range(len(nodes)) if i not in children]

    def walk(index: int, parent: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        node = nodes[index]
        matrix = parent @ _node_matrix(node)
        if "mesh" in node:
            yield node["mesh"], matrix
        for child in node.get("children", []):
            yield from walk(child, matrix)

    for root in roots:
        yield from walk(root, np.eye(4))


def _node_matrix(node: dict[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4, order="F")
    x, y, z, w = node.get("rotation", [0.0, 0.0, 0.0, 1.0])
    rotation = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m = np.eye(4)
    m[:3, :3] = rotation * np.asarray(node.get("scale", [1.0, 1.0, 1.0]), dtype=np.float64)
    m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return m


def _extension_names(value: Any) -> set[str]:
    """The names of every extension object anywhere in a JSON document."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ext = item.get("extensions")
            if isinstance(ext, dict):
                found.update(ext)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
