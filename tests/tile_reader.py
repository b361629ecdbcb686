"""An independent reader of written 3D Tiles (tileset.json walking, uncompressed GLB accessors and property
tables) and the external checks tests run on them (Khronos glTF validator through node). It shares no code
with the writer in tilesets/."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / "tests" / "js" / "validate_gltf.mjs"
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # 3D Tiles: glTF (x, y, z) → (x, -z, y)

_COMPONENTS = {5120: "<i1", 5121: "<u1", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_META = {"UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "FLOAT32": "<f4", "FLOAT64": "<f8"}


class Glb:
    """A GLB file: its JSON, accessors as numpy arrays, its property table as Python lists."""

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()
        magic, version, length = struct.unpack_from("<4sII", data)
        assert (magic, version, length) == (b"glTF", 2, len(data)), path
        json_len, json_kind = struct.unpack_from("<I4s", data, 12)
        assert json_kind == b"JSON"
        self.doc: dict[str, Any] = json.loads(data[20 : 20 + json_len])
        bin_at = 20 + json_len
        assert bin_at % 8 == 0, "BIN chunk data must start 8-byte aligned"
        bin_len, bin_kind = struct.unpack_from("<I4s", data, bin_at)
        assert bin_kind == b"BIN\0"
        self.bin = data[bin_at + 8 : bin_at + 8 + bin_len]

    def view(self, index: int) -> bytes:
        v = self.doc["bufferViews"][index]
        assert "extensions" not in v, "a compressed bufferView: this reader reads plain GLBs only"
        return self.bin[v.get("byteOffset", 0) : v.get("byteOffset", 0) + v["byteLength"]]

    def accessor(self, index: int) -> np.ndarray:
        """An accessor's values (normalized integers scaled to -1..1 / 0..1), shape (count,) or (count, width)."""
        a = self.doc["accessors"][index]
        view = self.doc["bufferViews"][a["bufferView"]]
        dtype = np.dtype(_COMPONENTS[a["componentType"]])
        width = _WIDTH[a["type"]]
        stride = view.get("byteStride", width * dtype.itemsize) // dtype.itemsize
        raw = np.frombuffer(self.view(a["bufferView"]), dtype=dtype)[a.get("byteOffset", 0) // dtype.itemsize :]
        values = raw[: a["count"] * stride].reshape(a["count"], stride)[:, :width]
        if a.get("normalized"):
            values = np.maximum(values / float(np.iinfo(dtype).max), -1.0)
        return values[:, 0] if a["type"] == "SCALAR" else values

    def primitives(self) -> Iterator[dict[str, Any]]:
        for mesh in self.doc["meshes"]:
            yield from mesh["primitives"]

    def image(self, prim: dict[str, Any]) -> Any:
        """The base colour texture of a primitive's material, as a PIL image."""
        import io

        from PIL import Image

        material = self.doc["materials"][prim["material"]]
        texture = self.doc["textures"][material["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
        return Image.open(io.BytesIO(self.view(self.doc["images"][texture["source"]]["bufferView"])))

    def vertices(self) -> tuple[np.ndarray, np.ndarray]:
        """All positions (glTF frame) and their feature ids."""
        pos, ids = [], []
        for p in self.primitives():
            pos.append(self.accessor(p["attributes"]["POSITION"]).astype(np.float64))
            ids.append(self.accessor(p["attributes"]["_FEATURE_ID_0"]).astype(np.int64))
        return np.concatenate(pos), np.concatenate(ids)

    def triangles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Corners (T, 3, 3) in the glTF frame, the written normal at each corner (T, 3, 3), feature id (T,)."""
        corners, normals, ids = [], [], []
        for p in self.primitives():
            pos = self.accessor(p["attributes"]["POSITION"]).astype(np.float64)
            nrm = self.accessor(p["attributes"]["NORMAL"]).astype(np.float64)
            fid = self.accessor(p["attributes"]["_FEATURE_ID_0"]).astype(np.int64)
            tri = self.accessor(p["indices"]).astype(np.int64).reshape(-1, 3)
            corners.append(pos[tri])
            normals.append(nrm[tri])
            ids.append(fid[tri[:, 0]])
        return np.concatenate(corners), np.concatenate(normals), np.concatenate(ids)

    def property_table(self) -> dict[str, list[Any]]:
        meta = self.doc["extensions"]["EXT_structural_metadata"]
        schema, table = meta["schema"], meta["propertyTables"][0]
        props = schema["classes"][table["class"]]["properties"]
        out: dict[str, list[Any]] = {}
        for name, col in table["properties"].items():
            spec = props[name]
            if spec["type"] == "STRING":
                offsets = np.frombuffer(self.view(col["stringOffsets"]), dtype="<u4")
                raw = self.view(col["values"])
                out[name] = [raw[offsets[i] : offsets[i + 1]].decode() for i in range(table["count"])]
            elif spec["type"] == "ENUM":
                enum = schema["enums"][spec["enumType"]]
                names = {v["value"]: v["name"] for v in enum["values"]}
                values = np.frombuffer(self.view(col["values"]), dtype=_META[enum["valueType"]])
                out[name] = [names[int(v)] for v in values]
            else:
                out[name] = np.frombuffer(self.view(col["values"]), dtype=_META[spec["componentType"]]).tolist()
            assert len(out[name]) == table["count"], name
        return out


def tiles_with_world(tileset: dict[str, Any]) -> Iterator[tuple[dict[str, Any], np.ndarray, list[tuple[Any, ...]]]]:
    """Every tile with its world matrix and the (box, world matrix, geometric error) of its ancestors."""

    def walk(tile: dict[str, Any], parent: np.ndarray, chain: list[tuple[Any, ...]]) -> Iterator[Any]:
        world = parent
        if "transform" in tile:
            world = parent @ np.array(tile["transform"], dtype=np.float64).reshape(4, 4, order="F")
        yield tile, world, chain
        for child in tile.get("children", []):
            yield from walk(child, world, [*chain, (tile["boundingVolume"]["box"], world, tile["geometricError"])])

    yield from walk(tileset["root"], np.eye(4), [])


def inside_box(ecef: np.ndarray, box: list[float], world: np.ndarray) -> np.ndarray:
    """Points in ECEF inside a box given in the frame ``world`` maps to ECEF (orthogonal half-axes)."""
    local = (np.linalg.inv(world) @ np.c_[ecef, np.ones(len(ecef))].T).T[:, :3]
    b = np.asarray(box)
    axes = b[3:].reshape(3, 3)
    lengths = np.linalg.norm(axes, axis=1)
    proj = (local - b[:3]) @ (axes / lengths[:, None]).T
    return np.asarray((np.abs(proj) <= lengths + 1e-6).all(axis=1))


def to_ecef(positions: np.ndarray, world: np.ndarray) -> np.ndarray:
    """glTF positions (y-up) of a tile → ECEF through the tile's world matrix."""
    z_up = positions @ Y_UP_TO_Z_UP.T
    return np.asarray((world @ np.c_[z_up, np.ones(len(z_up))].T).T[:, :3])


def content_files(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every .glb under a tileset folder: relative path → (inode, mtime_ns, bytes)."""
    out = {}
    for p in sorted(folder.rglob("*.glb")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (st.st_ino, st.st_mtime_ns, p.read_bytes())
    return out


def validate_gltf(*paths: Path) -> list[dict[str, Any]]:
    """The Khronos glTF validator's report of every .glb under ``paths`` (one dict per file)."""
    if not (REPO / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("node_modules/gltf-validator is missing: run `make npm-deps` (npm ci) first")
    res = subprocess.run(
        ["node", str(VALIDATOR), *map(str, paths)], capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


MESHOPT_DECODER = REPO / "tests" / "js" / "decode_meshopt.mjs"


def decode_meshopt(source: Path, target: Path) -> Path:
    """Every .glb under ``source`` decoded by meshoptimizer's JavaScript decoder (the one CesiumJS uses) into a
    plain GLB at the same relative path under ``target``: what a viewer gets. Returns ``target``."""
    if not (REPO / "node_modules" / "meshoptimizer").is_dir():
        pytest.fail("node_modules/meshoptimizer is missing: run `make npm-deps` (npm ci) first")
    res = subprocess.run(
        ["node", str(MESHOPT_DECODER), str(source), str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return target
