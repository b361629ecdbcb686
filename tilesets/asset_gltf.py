"""glTF 2.0 binary (GLB) content for the asset layers: coloured points (point clouds) and textured or plainly
coloured triangle meshes (photogrammetry). Inputs are numpy arrays already in the glTF frame (y-up) and
relative to the tile's origin; how they got there lives in `tilesets.pointcloud` and `tilesets.mesh_tiles`.

Decisions recorded here:
- Materials are ``KHR_materials_unlit`` for points and textured meshes: a point cloud has no normals and the
  lighting of a photogrammetry texture is baked into it, so shading them again would darken them twice. A
  mesh part without a texture keeps a lit material and gets smooth vertex normals instead.
- Point colours are ``COLOR_0`` as normalized unsigned bytes, VEC4 (alpha 255): glTF requires vertex
  attributes to be 4-byte aligned, which RGB bytes are not.
- Every bufferView starts on an 8-byte boundary; the BIN chunk starts 8-byte aligned in the file (as in
  `tilesets.gltf`). Indices are UNSIGNED_SHORT below 65535 vertices, else UNSIGNED_INT.
- Images are embedded (bufferView + mimeType), PNG or JPEG only (glTF core); sampling is linear with
  mipmaps, clamped to the edge when the image was cropped to the tile's texture coordinates, repeated
  otherwise.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tilesets.gltf import (
    ARRAY_BUFFER,
    CHUNK_BIN,
    CHUNK_JSON,
    ELEMENT_ARRAY_BUFFER,
    FLOAT,
    GLB_MAGIC,
    TRIANGLES,
    UNSIGNED_INT,
    UNSIGNED_SHORT,
    BinChunk,
    GltfError,
    glb_container,
)

UNSIGNED_BYTE = 5121
POINTS = 0
LINEAR = 9729
LINEAR_MIPMAP_LINEAR = 9987
CLAMP_TO_EDGE = 33071
REPEAT = 10497
UNLIT = "KHR_materials_unlit"
Y_UP_FROM_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # z-up (x, y, z) → glTF (x, z, -y)


class AssetGltfError(GltfError):
    """Arrays handed to the writer do not form a valid glTF primitive."""


@dataclass
class Texture:
    """An encoded image (PNG or JPEG bytes) and whether texture coordinates stay inside it (clamp) or wrap."""

    data: bytes
    mime_type: str
    clamp: bool = True


@dataclass
class MeshPart:
    """One indexed triangle list (glTF frame, y-up): positions (n, 3), optional texture coordinates (n, 2)
    with a texture, or a base colour (linear RGBA) and normals (n, 3)."""

    positions: npt.NDArray[np.floating[Any]]
    indices: npt.NDArray[np.integer[Any]]
    uv: npt.NDArray[np.floating[Any]] | None = None
    texture: Texture | None = None
    normals: npt.NDArray[np.floating[Any]] | None = None
    rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 1.0)


def _float_accessor(binary: BinChunk, values: npt.ArrayLike, kind: str, bounds: bool = False) -> dict[str, Any]:
    arr = np.ascontiguousarray(values, dtype="<f4")
    width = {"VEC2": 2, "VEC3": 3}[kind]
    if arr.ndim != 2 or arr.shape[1] != width or len(arr) == 0 or not np.isfinite(arr).all():
        raise AssetGltfError(f"a {kind} attribute must be finite (n, {width}) values, got shape {arr.shape}")
    acc: dict[str, Any] = {
        "bufferView": binary.add(arr.tobytes(), ARRAY_BUFFER),
        "componentType": FLOAT,
        "count": len(arr),
        "type": kind,
    }
    if bounds:
        acc["min"], acc["max"] = arr.min(axis=0).tolist(), arr.max(axis=0).tolist()
    return acc


def _index_accessor(binary: BinChunk, indices: npt.ArrayLike, n_vertices: int) -> dict[str, Any]:
    idx = np.asarray(indices).reshape(-1)
    if len(idx) == 0 or len(idx) % 3 or int(idx.min()) < 0 or int(idx.max()) >= n_vertices:
        raise AssetGltfError(f"indices must be whole triangles over {n_vertices} vertices")
    dtype, kind = ("<u2", UNSIGNED_SHORT) if n_vertices < 65535 else ("<u4", UNSIGNED_INT)
    data = np.ascontiguousarray(idx, dtype=dtype)
    return {
        "bufferView": binary.add(data.tobytes(), ELEMENT_ARRAY_BUFFER),
        "componentType": kind,
        "count": len(data),
        "type": "SCALAR",
    }


def _glb(doc: dict[str, Any], binary: BinChunk) -> bytes:
    payload = binary.payload()
    doc["bufferViews"] = binary.views
    doc["buffers"] = [{"byteLength": len(payload)}]
    return glb_container(json.dumps(doc, separators=(",", ":")).encode("utf-8"), payload)


def points_glb(positions: npt.ArrayLike, colors: npt.ArrayLike | None, generator: str) -> bytes:
    """A GLB of one POINTS primitive: positions (n, 3) in the glTF frame, optional RGB bytes (n, 3)."""
    binary = BinChunk()
    accessors = [_float_accessor(binary, positions, "VEC3", bounds=True)]
    attributes = {"POSITION": 0}
    if colors is not None:
        rgb = np.asarray(colors)
        if rgb.shape != (accessors[0]["count"], 3):
            raise AssetGltfError(f"colours must be (n, 3) bytes for {accessors[0]['count']} points, got {rgb.shape}")
        rgba = np.full((len(rgb), 4), 255, dtype=np.uint8)
        rgba[:, :3] = np.clip(rgb, 0, 255)
        view = binary.add(rgba.tobytes(), ARRAY_BUFFER)
        accessors.append(
            {"bufferView": view, "componentType": UNSIGNED_BYTE, "normalized": True, "count": len(rgba), "type": "VEC4"}
        )
        attributes["COLOR_0"] = 1
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": generator},
        "extensionsUsed": [UNLIT],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes, "mode": POINTS, "material": 0}]}],
        "materials": [
            {
                "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0},
                "extensions": {UNLIT: {}},
            }
        ],
        "accessors": accessors,
    }
    return _glb(doc, binary)


def mesh_glb(parts: Sequence[MeshPart], generator: str) -> bytes:
    """A GLB of one mesh with one primitive per part (each with its own material)."""
    if not parts:
        raise AssetGltfError("a mesh tile needs at least one part")
    binary = BinChunk()
    accessors: list[dict[str, Any]] = []
    primitives: list[dict[str, Any]] = []
    materials: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    textures: list[dict[str, Any]] = []
    samplers: list[dict[str, Any]] = []
    unlit = False
    for part in parts:
        n = len(part.positions)
        attributes = {"POSITION": len(accessors)}
        accessors.append(_float_accessor(binary, part.positions, "VEC3", bounds=True))
        material: dict[str, Any]
        if part.texture is not None:
            if part.uv is None or len(part.uv) != n:
                raise AssetGltfError("a textured part needs one texture coordinate per vertex")
            attributes["TEXCOORD_0"] = len(accessors)
            accessors.append(_float_accessor(binary, part.uv, "VEC2"))
            if part.texture.mime_type not in ("image/png", "image/jpeg"):
                raise AssetGltfError(f"image type {part.texture.mime_type} is not PNG or JPEG")
            images.append({"bufferView": binary.add(part.texture.data), "mimeType": part.texture.mime_type})
            wrap = CLAMP_TO_EDGE if part.texture.clamp else REPEAT
            samplers.append({"magFilter": LINEAR, "minFilter": LINEAR_MIPMAP_LINEAR, "wrapS": wrap, "wrapT": wrap})
            textures.append({"sampler": len(samplers) - 1, "source": len(images) - 1})
            material = {
                "pbrMetallicRoughness": {"baseColorTexture": {"index": len(textures) - 1}, "metallicFactor": 0.0},
                "extensions": {UNLIT: {}},
            }
            unlit = True
        else:
            if part.normals is not None:
                if len(part.normals) != n:
                    raise AssetGltfError("normals and positions of a part differ in length")
                attributes["NORMAL"] = len(accessors)
                accessors.append(_float_accessor(binary, part.normals, "VEC3"))
            material = {
                "pbrMetallicRoughness": {
                    "baseColorFactor": [float(c) for c in part.rgba],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                }
            }
        indices = len(accessors)
        accessors.append(_index_accessor(binary, part.indices, n))
        materials.append(material)
        primitives.append(
            {"attributes": attributes, "indices": indices, "mode": TRIANGLES, "material": len(materials) - 1}
        )
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": primitives}],
        "materials": materials,
        "accessors": accessors,
    }
    if unlit:
        doc["extensionsUsed"] = [UNLIT]
    if images:
        doc["images"], doc["textures"], doc["samplers"] = images, textures, samplers
    return _glb(doc, binary)


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON document and BIN chunk of a GLB."""
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2 or total > len(data):
        raise AssetGltfError("not a glTF 2.0 binary (bad magic, version or length)")
    json_len, json_type = struct.unpack_from("<II", data, 12)
    if json_type != CHUNK_JSON:
        raise AssetGltfError("the first GLB chunk is not JSON")
    doc = json.loads(data[20 : 20 + json_len])
    offset = 20 + json_len
    if offset + 8 > total:
        return doc, b""
    bin_len, bin_type = struct.unpack_from("<II", data, offset)
    if bin_type != CHUNK_BIN:
        raise AssetGltfError("the second GLB chunk is not BIN")
    return doc, data[offset + 8 : offset + 8 + bin_len]


_COMPONENT = {5120: "<i1", 5121: "<u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def accessor_values(doc: dict[str, Any], binary: bytes, index: int) -> npt.NDArray[Any]:
    """The raw values of accessor ``index`` as a (count, width) array (strides honoured, not normalized)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_COMPONENT[acc["componentType"]])
    width = _WIDTH[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", width * dtype.itemsize)
    count = acc["count"]
    if count == 0:
        return np.zeros((0, width), dtype=dtype)
    raw = np.frombuffer(binary, dtype=np.uint8, count=(count - 1) * stride + width * dtype.itemsize, offset=start)
    rows = np.lib.stride_tricks.as_strided(raw, shape=(count, width * dtype.itemsize), strides=(stride, 1))
    return np.ascontiguousarray(rows).view(dtype).reshape(count, width)
