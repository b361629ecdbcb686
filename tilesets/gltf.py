"""glTF 2.0 binary (GLB) writing for 3D Tiles 1.1 content: triangle meshes with per-vertex feature ids
(``EXT_mesh_features``) and a property table per tile (``EXT_structural_metadata``).

This module knows glTF, not cities: callers hand it primitives (numpy arrays in the glTF frame, which is
y-up) and a metadata schema with column arrays; how buildings or pipes become meshes lives elsewhere.

Decisions recorded here:
- Every bufferView starts on an 8-byte boundary (``EXT_structural_metadata`` asks for it so 64-bit
  property values could be read in place); uncompressed, each gets its own accessor.
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
- **Compression** (optional, `Meshopt`): ``EXT_meshopt_compression`` (required when used) over the vertex
  and index data, meshoptimizer's codecs through the ``meshopt`` binding; CesiumJS decodes it with the same
  library. All primitives share four compressed bufferViews (positions, normals, feature ids, indices; each
  accessor at an offset), so the JSON and the codecs' per-stream overhead do not grow with the primitive
  count. Each primitive's vertices are put in first-use order, which is what the index codec needs (their
  order carries no meaning; triangles already come building by building, and meshoptimizer's vertex-cache
  reordering gained under 0.1 %). Positions go through the EXPONENTIAL filter with one power-of-two step for
  the whole GLB: the caller snaps them to that grid first (`position_step`, `snap_to_step`), the writer stores
  each coordinate as the exact integer multiple of the step, and what a viewer decodes is exactly the snapped
  float32 value; the only error is the caller's rounding, at most half a step per axis. Normals and feature
  ids are compressed as they are (runs of equal values cost almost nothing). Property tables stay
  uncompressed, so metadata tools that do not decode meshopt still read them. The fallback buffer (buffer 1)
  has no data, as the extension allows for files that require it. The Khronos validator cannot decode
  meshopt, so it checks the JSON and the property tables but not the compressed arrays: tests decode the
  tiles with meshoptimizer's JS decoder (tests/js/decode_meshopt.mjs) and validate the result too.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import meshopt
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
MESHOPT = "EXT_meshopt_compression"
MAX_MANTISSA = 2**23 - 1  # the EXPONENTIAL filter's signed 24-bit mantissa

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


@dataclass(frozen=True)
class Meshopt:
    """Write vertex and index data with ``EXT_meshopt_compression``; ``position_step`` (a power of two) is the
    grid every position coordinate lies on (see `snap_to_step`)."""

    position_step: float

    def __post_init__(self) -> None:
        exponent = math.log2(self.position_step) if self.position_step > 0 else math.nan
        if not (exponent.is_integer() and -100 <= exponent <= 100):
            raise GltfError(f"position_step must be a power of two between 2^-100 and 2^100, got {self.position_step}")

    @property
    def exponent(self) -> int:
        return int(math.log2(self.position_step))


def position_step(positions: npt.ArrayLike, max_error: float) -> float:
    """The coarsest power-of-two grid on which no point of ``positions`` (n, 3) moves farther than ``max_error``
    when snapped (half a step along each axis: a distance of up to sqrt(3) / 2 steps), made coarser only if a
    coordinate would not fit the filter's 24-bit mantissa (beyond 2^23 steps from the origin: 8 km for a
    1/1024 m step, where float32 itself is no finer)."""
    if max_error <= 0:
        raise GltfError("max_error must be positive")
    exponent = math.floor(math.log2(2 * max_error / math.sqrt(3)))
    extent = float(np.abs(np.asarray(positions, dtype=np.float64)).max(initial=0.0))
    if not math.isfinite(extent):
        raise GltfError("positions must be finite")
    while extent / 2.0**exponent + 0.5 > MAX_MANTISSA:
        exponent += 1
    return 2.0**exponent


def snap_to_step(values: npt.ArrayLike, step: float) -> npt.NDArray[np.float64]:
    """Values rounded to the nearest multiple of ``step`` (what a `Meshopt` GLB stores and viewers decode)."""
    return np.asarray(np.round(np.asarray(values, dtype=np.float64) / step) * step, dtype=np.float64)


@dataclass
class PropertyTable:
    """One row per feature of ``class_name``; ``columns`` maps property ids of the schema class to values:
    a sequence of ``str | None`` for STRING, enum value integers for ENUM, numbers for SCALAR."""

    class_name: str
    count: int
    columns: Mapping[str, Sequence[Any] | npt.NDArray[Any]]


@dataclass
class BinChunk:
    """The BIN chunk being assembled: bufferViews appended at 8-byte boundaries."""

    parts: list[bytes] = field(default_factory=list)
    length: int = 0
    views: list[dict[str, Any]] = field(default_factory=list)
    fallback_length: int = 0  # bytes of the data-less fallback buffer the compressed views decode into

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

    def add_compressed(self, raw: npt.NDArray[Any], mode: str, target: int, filter_: str | None = None) -> int:
        """A bufferView of ``raw`` (one row per element) stored meshopt-compressed in the BIN chunk; its
        uncompressed place is in the data-less fallback buffer 1."""
        if raw.size == 0:
            raise GltfError("glTF bufferViews must not be empty")
        count = len(raw)
        byte_stride = raw.nbytes // count
        encoded = meshopt.encode_gltf_buffer(raw, mode)
        view = self.add(encoded)
        compressed = self.views[view]
        self.fallback_length += (-self.fallback_length) % 8
        ext: dict[str, Any] = {
            "buffer": 0,
            "byteOffset": compressed["byteOffset"],
            "byteLength": compressed["byteLength"],
            "byteStride": byte_stride,
            "mode": mode,
            "count": count,
        }
        if filter_ is not None:
            ext["filter"] = filter_
        self.views[view] = {
            "buffer": 1,
            "byteOffset": self.fallback_length,
            "byteLength": byte_stride * count,
            "target": target,
            "extensions": {MESHOPT: ext},
        }
        if target == ARRAY_BUFFER:
            self.views[view]["byteStride"] = byte_stride
        self.fallback_length += byte_stride * count
        return view

    def payload(self) -> bytes:
        pad = (-self.length) % 8
        return b"".join([*self.parts, b"\0" * pad])


def column_min_max(values: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Per-column minimum and maximum of an (n, k) array (numpy's axis-0 reductions of narrow arrays are
    ~20x slower than reducing the contiguous transposed copy)."""
    cols = np.ascontiguousarray(values.T)
    return cols.min(axis=1), cols.max(axis=1)


def _vec3_accessor(binary: BinChunk, values: npt.NDArray[Any], with_bounds: bool) -> dict[str, Any]:
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


def _packed_normals(normals: npt.NDArray[Any]) -> npt.NDArray[np.int8]:
    """Unit normals as normalized signed bytes (KHR_mesh_quantization), padded to 4 bytes per vertex."""
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim != 2 or n.shape[1] != 3 or not np.isfinite(n).all():
        raise GltfError(f"normals must be finite (n, 3) values, got shape {n.shape}")
    packed = np.zeros((len(n), 4), dtype=np.int8)
    packed[:, :3] = np.clip(np.round(n * 127.0), -127, 127)
    return packed


def _normal_accessor(binary: BinChunk, normals: npt.NDArray[Any]) -> dict[str, Any]:
    packed = _packed_normals(normals)
    view = binary.add(packed.tobytes(), ARRAY_BUFFER)
    binary.views[view]["byteStride"] = 4
    return {"bufferView": view, "componentType": BYTE, "normalized": True, "count": len(packed), "type": "VEC3"}


def _check_primitive(prim: Primitive) -> None:
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


def _distinct_count(ids: npt.ArrayLike) -> int:
    """How many different feature ids (non-negative integers) there are, without sorting them."""
    values = np.asarray(ids).astype(np.int64, copy=False)
    if values.size and int(values.min()) < 0:
        raise GltfError("feature ids must not be negative")
    return int(np.count_nonzero(np.bincount(values)))


def _primitive_dict(first_accessor: int, material: int, feature_ids: npt.ArrayLike) -> dict[str, Any]:
    """A primitive's JSON; its POSITION, NORMAL, _FEATURE_ID_0 and indices accessors are consecutive."""
    return {
        "attributes": {"POSITION": first_accessor, "NORMAL": first_accessor + 1, "_FEATURE_ID_0": first_accessor + 2},
        "indices": first_accessor + 3,
        "material": material,
        "mode": TRIANGLES,
        "extensions": {
            "EXT_mesh_features": {
                "featureIds": [{"featureCount": _distinct_count(feature_ids), "attribute": 0, "propertyTable": 0}]
            }
        },
    }


def _primitive_json(binary: BinChunk, accessors: list[dict[str, Any]], prim: Primitive) -> dict[str, Any]:
    """An uncompressed primitive: its own four bufferViews."""
    _check_primitive(prim)
    n = len(prim.positions)
    ids = np.ascontiguousarray(prim.feature_ids, dtype="<f4")
    index_dtype, index_type = ("<u2", UNSIGNED_SHORT) if n < 65535 else ("<u4", UNSIGNED_INT)
    indices = np.ascontiguousarray(prim.indices, dtype=index_dtype).reshape(-1)
    first = len(accessors)
    accessors.append(_vec3_accessor(binary, prim.positions, with_bounds=True))
    accessors.append(_normal_accessor(binary, prim.normals))
    id_view = binary.add(ids.tobytes(), ARRAY_BUFFER)
    accessors.append({"bufferView": id_view, "componentType": FLOAT, "count": n, "type": "SCALAR"})
    index_view = binary.add(indices.tobytes(), ELEMENT_ARRAY_BUFFER)
    accessors.append({"bufferView": index_view, "componentType": index_type, "count": len(indices), "type": "SCALAR"})
    return _primitive_dict(first, prim.material, prim.feature_ids)


def _exponential_words(positions: npt.NDArray[Any], compression: Meshopt) -> npt.NDArray[np.uint32]:
    """Positions on the ``position_step`` grid as EXPONENTIAL-filter words (exponent byte, 24-bit mantissa)."""
    arr = np.asarray(positions, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or not np.isfinite(arr).all():
        raise GltfError(f"positions must be finite (n, 3) values, got shape {arr.shape}")
    mantissa = arr / compression.position_step
    steps = np.round(mantissa)
    if not np.array_equal(steps, mantissa):
        raise GltfError("positions are not multiples of the position step: snap them with snap_to_step first")
    if np.abs(steps).max(initial=0.0) > MAX_MANTISSA:
        raise GltfError("positions are too far from the origin for the position step (use position_step)")
    words = (steps.astype(np.int64) & 0xFFFFFF) | ((compression.exponent & 0xFF) << 24)
    return np.ascontiguousarray(words, dtype="<u4")


def _compressed_primitives(
    binary: BinChunk, accessors: list[dict[str, Any]], primitives: Sequence[Primitive], compression: Meshopt
) -> list[dict[str, Any]]:
    """All primitives in four shared meshopt-compressed bufferViews (positions, normals, feature ids, indices;
    accessors at byte offsets into them): one stream per kind instead of four per primitive keeps the JSON and
    the codecs' per-stream overhead small. Indices stay local to each primitive's vertices."""
    for prim in primitives:
        _check_primitive(prim)
    # One renumbering for all primitives: vertices in first-use order (what the index codec needs), unused ones
    # dropped. Each primitive's indices only reach its own vertices, so its vertices stay one contiguous block.
    sizes = np.array([len(p.positions) for p in primitives], dtype=np.int64)
    first_vertex = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    index_counts = np.array([np.asarray(p.indices).size for p in primitives], dtype=np.int64)
    shifted = np.concatenate(
        [np.asarray(p.indices).reshape(-1) + v0 for p, v0 in zip(primitives, first_vertex, strict=True)]
    )
    new_indices, remap, unique = meshopt.reorder_mesh(shifted.astype(np.uint32), triangles=False, optsize=False)
    used = remap < unique
    order = np.empty(unique, dtype=np.int64)
    order[remap[used]] = np.flatnonzero(used)
    counts = np.add.reduceat(used.astype(np.int64), first_vertex)
    vstart = np.concatenate([[0], np.cumsum(counts)])
    istart = np.concatenate([[0], np.cumsum(index_counts)])
    feature_ids = np.concatenate([np.asarray(p.feature_ids) for p in primitives])[order]
    positions = np.concatenate([np.asarray(p.positions, dtype=np.float64) for p in primitives])[order]
    normals = np.concatenate([np.asarray(p.normals) for p in primitives])[order]
    wide = bool(counts.max() >= 65535)
    index_dtype, index_type = ("<u4", UNSIGNED_INT) if wide else ("<u2", UNSIGNED_SHORT)
    indices = (new_indices.astype(np.int64) - np.repeat(vstart[:-1], index_counts)).astype(index_dtype)
    pos_view = binary.add_compressed(
        _exponential_words(positions, compression), "ATTRIBUTES", ARRAY_BUFFER, "EXPONENTIAL"
    )
    normal_view = binary.add_compressed(_packed_normals(normals), "ATTRIBUTES", ARRAY_BUFFER)
    id_view = binary.add_compressed(feature_ids.astype("<f4").reshape(-1, 1), "ATTRIBUTES", ARRAY_BUFFER)
    index_view = binary.add_compressed(indices, "TRIANGLES", ELEMENT_ARRAY_BUFFER)
    out = []
    for k, prim in enumerate(primitives):
        first, v0, n = len(accessors), int(vstart[k]), int(counts[k])
        lo, hi = column_min_max(positions[v0 : v0 + n].astype(np.float32))  # exact: |mantissa| < 2^24
        accessors.append(
            {
                "bufferView": pos_view,
                "byteOffset": 12 * v0,
                "componentType": FLOAT,
                "count": n,
                "type": "VEC3",
                "min": lo.tolist(),
                "max": hi.tolist(),
            }
        )
        accessors.append(
            {
                "bufferView": normal_view,
                "byteOffset": 4 * v0,
                "componentType": BYTE,
                "normalized": True,
                "count": n,
                "type": "VEC3",
            }
        )
        accessors.append(
            {"bufferView": id_view, "byteOffset": 4 * v0, "componentType": FLOAT, "count": n, "type": "SCALAR"}
        )
        accessors.append(
            {
                "bufferView": index_view,
                "byteOffset": int(istart[k]) * indices.itemsize,
                "componentType": index_type,
                "count": int(index_counts[k]),
                "type": "SCALAR",
            }
        )
        out.append(_primitive_dict(first, prim.material, feature_ids[v0 : v0 + n]))
    return out


def _string_column(binary: BinChunk, values: Sequence[Any], no_data: str | None, name: str) -> dict[str, int]:
    texts = list(values)
    if None in texts:
        if no_data is None:
            raise GltfError(f"property {name!r} has a missing value but its schema declares no noData")
        texts = [no_data if v is None else v for v in texts]
    try:
        joined = "".join(texts)
    except TypeError:  # not all str: format them
        texts = [str(v) for v in texts]
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


def _property_table_json(binary: BinChunk, schema: Mapping[str, Any], table: PropertyTable) -> dict[str, Any]:
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
    compression: Meshopt | None = None,
) -> bytes:
    """A complete GLB: one node, one mesh of ``primitives``, the property table their feature ids index;
    vertex and index data meshopt-compressed when ``compression`` is given (module docstring).

    Raises GltfError when arrays are inconsistent (lengths, indices out of range, NaN, positions off the
    compression's grid)."""
    if not primitives:
        raise GltfError("a glTF tile needs at least one primitive")
    binary = BinChunk()
    accessors: list[dict[str, Any]] = []
    if compression is None:
        prims = [_primitive_json(binary, accessors, p) for p in primitives]
    else:
        prims = _compressed_primitives(binary, accessors, primitives, compression)
    metadata = {"schema": schema, "propertyTables": [_property_table_json(binary, schema, table)]}
    payload = binary.payload()
    used = ["EXT_mesh_features", "EXT_structural_metadata", "KHR_mesh_quantization"]
    required = ["KHR_mesh_quantization"]
    buffers: list[dict[str, Any]] = [{"byteLength": len(payload)}]
    if compression is not None:
        used.append(MESHOPT)
        required.append(MESHOPT)
        buffers.append({"byteLength": binary.fallback_length, "extensions": {MESHOPT: {"fallback": True}}})
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": generator},
        "extensionsUsed": used,
        "extensionsRequired": required,
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
        "buffers": buffers,
        "extensions": {"EXT_structural_metadata": metadata},
    }
    return glb_container(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), payload)


def glb_container(text: bytes, payload: bytes) -> bytes:
    """The GLB 2 file of a glTF JSON document (UTF-8) and its BIN payload."""
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
