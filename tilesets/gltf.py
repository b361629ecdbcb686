"""glTF 2.0 binary (GLB) writing for 3D Tiles 1.1 content: triangle meshes with per-vertex feature ids
(``EXT_mesh_features``) and a property table per tile (``EXT_structural_metadata``).

This module knows glTF, not cities: callers hand it primitives (numpy arrays in the glTF frame, which is
y-up) and a metadata schema with column arrays; how buildings or pipes become meshes lives elsewhere.

Decisions recorded here:
- Every bufferView starts on an 8-byte boundary (``EXT_structural_metadata`` asks for it so 64-bit
  property values could be read in place) and gets its own accessor, so no ``byteStride`` is needed.
- The GLB's BIN chunk *data* starts at an 8-byte offset in the file (the JSON chunk is padded with spaces
  accordingly) and ``buffer.byteLength`` is the padded BIN length, so chunk and buffer agree exactly.
- Normals are normalized signed bytes (``KHR_mesh_quantization``, required; 4 bytes per vertex instead of
  12, within half a degree); positions stay float32, because 16-bit positions over a tile of a few hundred
  metres would cost the centimetre placement promises.
- Feature ids are written as FLOAT vertex attributes: glTF forbids UNSIGNED_INT for application-specific
  attributes, and unsigned shorts would need a 4-byte stride anyway, so FLOAT costs nothing more and
  holds ids exactly up to 2^24.
- Indices are UNSIGNED_SHORT when a primitive has fewer than 65535 vertices (the maximum value is reserved),
  else UNSIGNED_INT.
- Strings in property tables are UTF-8 with UINT32 offsets; ``None`` is written as the property's
  ``noData`` value, which the schema must declare. An optional string property without any value in a
  table is left out of that table (allowed for non-required properties; readers get noData).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
FLOAT = 5126
BYTE = 5120
UNSIGNED_SHORT = 5123
UNSIGNED_INT = 5125
TRIANGLES = 4

_METADATA_DTYPES: dict[str, str] = {
    "INT8": "<i1",
    "UINT8": "<u1",
    "INT16": "<i2",
    "UINT16": "<u2",
    "INT32": "<i4",
    "UINT32": "<u4",
    "INT64": "<i8",
    "UINT64": "<u8",
    "FLOAT32": "<f4",
    "FLOAT64": "<f8",
}


class GltfError(ValueError):
    """Arrays handed to the writer do not form a valid glTF primitive or property table."""


@dataclass(frozen=True)
class Material:
    """A plain PBR material: base colour (linear RGBA, 0..1), not metallic, fully rough."""

    name: str
    rgba: tuple[float, float, float, float]


@dataclass
class Primitive:
    """One indexed triangle list in the glTF frame (y-up), with one feature id per vertex.

    ``positions`` and ``normals`` are (n, 3) and become float32; ``feature_ids`` (n,) are rows of the
    property table; ``indices`` index into this primitive's own vertices, three per triangle.
    """

    positions: npt.NDArray[np.floating[Any]]
    normals: npt.NDArray[np.floating[Any]]
    feature_ids: npt.NDArray[np.integer[Any]]
    indices: npt.NDArray[np.integer[Any]]
    material: int


@dataclass
class PropertyTable:
    """One row per feature of ``class_name``; ``columns`` maps property ids of the schema class to values:
    a sequence of ``str | None`` for STRING, enum value integers for ENUM, numbers for SCALAR."""

    class_name: str
    count: int
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]]


@dataclass
class _Binary:
    """The BIN chunk being assembled: bufferViews appended at 8-byte boundaries."""

    parts: list[bytes] = field(default_factory=list)
    length: int = 0
    views: list[dict[str, Any]] = field(default_factory=list)

    def add(self, data: bytes, target: int | None = None) -> int:
        if not data:
            raise GltfError("glTF bufferViews must not be empty")
        pad = (-self.length) % 8
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.parts.append(data)
        self.length += len(data)
        self.views.append(view)
        return len(self.views) - 1

    def payload(self) -> bytes:
        pad = (-self.length) % 8
        return b"".join([*self.parts, b"\0" * pad])


def column_min_max(values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Per-column minimum and maximum of an (n, k) array (numpy's axis-0 reductions of narrow arrays are
    ~20x slower than reducing the contiguous transposed copy)."""
    cols = np.ascontiguousarray(values.T)
    return cols.min(axis=1), cols.max(axis=1)


def _vec3_accessor(binary: _Binary, values: npt.NDArray[Any], with_bounds: bool) -> dict[str, Any]:
    arr = np.ascontiguousarray(values, dtype="<f4")
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.isfinite(arr).all():
        raise GltfError(f"a VEC3 attribute must be finite (n, 3) values, got shape {arr.shape}")
    acc: dict[str, Any] = {
        "bufferView": binary.add(arr.tobytes(), ARRAY_BUFFER),
        "componentType": FLOAT,
        "count": len(arr),
        "type": "VEC3",
    }
    if with_bounds:
        lo, hi = column_min_max(arr)
        acc["min"], acc["max"] = lo.tolist(), hi.tolist()
    return acc


def _normal_accessor(binary: _Binary, normals: npt.NDArray[Any]) -> dict[str, Any]:
    """Unit normals as normalized signed bytes (KHR_mesh_quantization), padded to 4 bytes per vertex."""
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim != 2 or n.shape[1] != 3 or not np.isfinite(n).all():
        raise GltfError(f"normals must be finite (n, 3) values, got shape {n.shape}")
    packed = np.zeros((len(n), 4), dtype=np.int8)
    packed[:, :3] = np.clip(np.round(n * 127.0), -127, 127)
    view = binary.add(packed.tobytes(), ARRAY_BUFFER)
    binary.views[view]["byteStride"] = 4
    return {"bufferView": view, "componentType": BYTE, "normalized": True, "count": len(n), "type": "VEC3"}


def _primitive_json(binary: _Binary, accessors: list[dict[str, Any]], prim: Primitive) -> dict[str, Any]:
    n = len(prim.positions)
    if n == 0 or len(prim.indices) == 0 or len(prim.indices) % 3:
        raise GltfError(
            f"a primitive needs vertices and whole triangles, got {n} vertices, {len(prim.indices)} indices"
        )
    if len(prim.normals) != n or len(prim.feature_ids) != n:
        raise GltfError("positions, normals and feature ids of a primitive differ in length")
    index_max = int(prim.indices.max())
    if index_max >= n or int(prim.indices.min()) < 0:
        raise GltfError(f"index {index_max} is outside the primitive's {n} vertices")
    ids = np.ascontiguousarray(prim.feature_ids, dtype="<f4")
    index_dtype, index_type = ("<u2", UNSIGNED_SHORT) if n < 65535 else ("<u4", UNSIGNED_INT)
    indices = np.ascontiguousarray(prim.indices, dtype=index_dtype)
    first = len(accessors)
    accessors.append(_vec3_accessor(binary, prim.positions, with_bounds=True))
    accessors.append(_normal_accessor(binary, prim.normals))
    accessors.append(
        {
            "bufferView": binary.add(ids.tobytes(), ARRAY_BUFFER),
            "componentType": FLOAT,
            "count": n,
            "type": "SCALAR",
        }
    )
    accessors.append(
        {
            "bufferView": binary.add(indices.tobytes(), ELEMENT_ARRAY_BUFFER),
            "componentType": index_type,
            "count": len(indices),
            "type": "SCALAR",
        }
    )
    return {
        "attributes": {"POSITION": first, "NORMAL": first + 1, "_FEATURE_ID_0": first + 2},
        "indices": first + 3,
        "material": prim.material,
        "mode": TRIANGLES,
        "extensions": {
            "EXT_mesh_features": {
                "featureIds": [{"featureCount": len(np.unique(prim.feature_ids)), "attribute": 0, "propertyTable": 0}]
            }
        },
    }


def _string_column(binary: _Binary, values: Sequence[Any], no_data: str | None, name: str) -> dict[str, int]:
    if no_data is not None:
        texts = [no_data if v is None else str(v) for v in values]
    elif any(v is None for v in values):
        raise GltfError(f"property {name!r} has a missing value but its schema declares no noData")
    else:
        texts = [str(v) for v in values]
    joined = "".join(texts)
    if joined.isascii():  # codes: one encode, lengths in characters are lengths in bytes
        data, lengths = joined.encode("ascii"), np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    else:
        encoded = [t.encode("utf-8") for t in texts]
        data, lengths = b"".join(encoded), np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(texts) + 1, dtype="<u4")
    np.cumsum(lengths, out=offsets[1:])
    # All strings empty: glTF forbids empty bufferViews; one padding byte, every offset stays 0.
    return {"values": binary.add(data or b"\0"), "stringOffsets": binary.add(offsets.tobytes())}


def _property_table_json(binary: _Binary, schema: Mapping[str, Any], table: PropertyTable) -> dict[str, Any]:
    cls = schema["classes"][table.class_name]["properties"]
    enums = schema.get("enums", {})
    props: dict[str, Any] = {}
    for name, values in table.columns.items():
        if name not in cls:
            raise GltfError(f"property {name!r} is not in class {table.class_name!r}")
        if len(values) != table.count:
            raise GltfError(f"property {name!r} has {len(values)} values for {table.count} features")
        spec = cls[name]
        kind = spec["type"]
        if kind == "STRING":
            texts = list(values)
            no_data = spec.get("noData")
            if not spec.get("required") and all(v is None or v == no_data for v in texts):
                continue  # an optional property with no value anywhere is left out (readers see noData)
            props[name] = _string_column(binary, texts, no_data, name)
        elif kind == "ENUM":
            dtype = _METADATA_DTYPES[enums[spec["enumType"]].get("valueType", "UINT16")]
            props[name] = {"values": binary.add(np.asarray(values).astype(dtype).tobytes())}
        elif kind == "SCALAR":
            arr = np.asarray(values).astype(_METADATA_DTYPES[spec["componentType"]])
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise GltfError(f"property {name!r} has NaN or infinite values")
            props[name] = {"values": binary.add(arr.tobytes())}
        else:
            raise GltfError(f"property type {kind} of {name!r} is not supported by this writer")
    return {"class": table.class_name, "count": table.count, "properties": props}


def glb_bytes(
    primitives: Sequence[Primitive],
    materials: Sequence[Material],
    schema: Mapping[str, Any],
    table: PropertyTable,
    generator: str = "cim-twin tilesets",
) -> bytes:
    """A complete GLB: one node, one mesh of ``primitives``, the property table their feature ids index.

    Raises GltfError when arrays are inconsistent (lengths, indices out of range, NaN)."""
    if not primitives:
        raise GltfError("a glTF tile needs at least one primitive")
    binary = _Binary()
    accessors: list[dict[str, Any]] = []
    prims = [_primitive_json(binary, accessors, p) for p in primitives]
    metadata = {"schema": schema, "propertyTables": [_property_table_json(binary, schema, table)]}
    payload = binary.payload()
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": generator},
        "extensionsUsed": ["EXT_mesh_features", "EXT_structural_metadata", "KHR_mesh_quantization"],
        "extensionsRequired": ["KHR_mesh_quantization"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": prims}],
        "materials": [
            {
                "name": m.name,
                "pbrMetallicRoughness": {
                    "baseColorFactor": [float(c) for c in m.rgba],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
            }
            for m in materials
        ],
        "accessors": accessors,
        "bufferViews": binary.views,
        "buffers": [{"byteLength": len(payload)}],
        "extensions": {"EXT_structural_metadata": metadata},
    }
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # BIN data starts at 12 (header) + 8 + len(json) + 8: pad the JSON so that offset is a multiple of 8.
    text += b" " * ((4 - len(text)) % 8)
    total = 12 + 8 + len(text) + 8 + len(payload)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(text), CHUNK_JSON),
            text,
            struct.pack("<II", len(payload), CHUNK_BIN),
            payload,
        ]
    )


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON document and BIN chunk of a GLB (for tools and tests that inspect written tiles)."""
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2 or total != len(data):
        raise GltfError("not a glTF 2.0 binary (bad magic, version or length)")
    json_len, json_type = struct.unpack_from("<II", data, 12)
    if json_type != CHUNK_JSON:
        raise GltfError("the first GLB chunk is not JSON")
    doc = json.loads(data[20 : 20 + json_len])
    offset = 20 + json_len
    if offset >= len(data):
        return doc, b""
    bin_len, bin_type = struct.unpack_from("<II", data, offset)
    if bin_type != CHUNK_BIN:
        raise GltfError("the second GLB chunk is not BIN")
    return doc, data[offset + 8 : offset + 8 + bin_len]
