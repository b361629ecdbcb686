"""Mesh pieces the BIM and pipes layers share: indexed triangle meshes in a tile's east-north-up frame,
their conversion to glTF primitives (one per material group), the box they fill, sRGB colours, and the
metadata conventions of their property tables (UINT8 enums, `NO_NUMBER` for missing numbers).

Decisions recorded here:
- Meshes are built in east-north-up metres of the tile's `LocalFrame` and turned y-up only when written
  (glTF x = east, y = up, z = -north), as the buildings layer does.
- A tile's ``box`` is computed from the float32 positions actually written, so rounding can never put a
  vertex outside it.
- Colours are given in sRGB hex and written linear (glTF base colours are linear).
- **Compression** as for buildings (tilesets/gltf.py): ``EXT_meshopt_compression`` with positions snapped
  to one power-of-two grid per GLB, fine enough that no vertex moves more than `MAX_POSITION_ERROR_M`
  (1 mm). Snapping happens here, before boxes are computed, and triangles it makes degenerate are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from cim.crs import storage_to_ecef
from tilesets.gltf import Material, Meshopt, Primitive, column_min_max, position_step, snap_to_step
from tilesets.tileset import LocalFrame, aligned_box

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_POSITION_ERROR_M = 0.001
MIN_DOUBLE_AREA_M2 = 1e-12
NO_NUMBER = -9999.0  # noData of the numeric metadata columns


def no_data(values: FloatArray) -> FloatArray:
    """Numbers with the missing ones (NaN) as `NO_NUMBER`."""
    return np.where(np.isfinite(values), values, NO_NUMBER)


def number_property(description: str | None = None) -> dict[str, Any]:
    """A FLOAT32 metadata property whose missing values are written as `NO_NUMBER`."""
    spec: dict[str, Any] = {"type": "SCALAR", "componentType": "FLOAT32", "noData": NO_NUMBER}
    return spec if description is None else {**spec, "description": description}


def uint8_enum(names: Sequence[str]) -> dict[str, Any]:
    """A metadata schema enum of ``names``, valued 0, 1, … in their order, stored as UINT8."""
    return {"valueType": "UINT8", "values": [{"name": n, "value": i} for i, n in enumerate(names)]}


def storage_to_local(frame: LocalFrame, x: FloatArray, y: FloatArray, h: FloatArray) -> FloatArray:
    """Storage-CRS points with orthometric heights in ``frame``'s east-north-up metres (datum offset applied)."""
    ex, ey, ez = storage_to_ecef(x, y, h)
    return frame.to_local(np.stack([ex, ey, ez], axis=1))


def linear_rgba(hex_rgb: str, alpha: float = 1.0) -> tuple[float, float, float, float]:
    """An sRGB colour ``#rrggbb`` as linear RGBA."""
    srgb = np.array([int(hex_rgb[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64) / 255
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return (round(float(lin[0]), 4), round(float(lin[1]), 4), round(float(lin[2]), 4), float(alpha))


def material(name: str, hex_rgb: str) -> Material:
    return Material(name, linear_rgba(hex_rgb))


def unit(v: FloatArray) -> FloatArray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norm = np.sqrt(np.einsum("...i,...i->...", v, v))[..., None]
    return np.asarray(v / np.where(norm > 0, norm, 1.0), dtype=np.float64)


def cross(a: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise cross product over the last axis (faster than np.cross on (n, 3) arrays)."""
    return np.stack(
        [
            a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0],
        ],
        axis=-1,
    )


def gltf_axes(enu: FloatArray) -> FloatArray:
    """East-north-up → glTF (x = east, y = up, z = -north)."""
    return np.stack([enu[:, 0], enu[:, 2], -enu[:, 1]], axis=1)


@dataclass(frozen=True)
class Mesh:
    """Vertices in east-north-up metres of a tile frame with unit normals and one feature index per vertex;
    ``triangles`` (T, 3) counter-clockwise seen from outside."""

    positions: FloatArray
    normals: FloatArray
    feature: IntArray
    triangles: IntArray

    @staticmethod
    def concat(parts: Sequence[Mesh]) -> Mesh:
        parts = [p for p in parts if len(p.positions)]
        if not parts:
            return Mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
        offsets = np.cumsum([0, *(len(p.positions) for p in parts[:-1])])
        return Mesh(
            positions=np.concatenate([p.positions for p in parts]),
            normals=np.concatenate([p.normals for p in parts]),
            feature=np.concatenate([p.feature for p in parts]),
            triangles=np.concatenate([p.triangles + o for p, o in zip(parts, offsets, strict=True)]),
        )


def primitives_by_group(mesh: Mesh, group_of_feature: IntArray, by_feature: bool = False) -> list[Primitive]:
    """One glTF primitive per group present (material index = group), each with its own contiguous vertices,
    in glTF axes. Feature ids are the mesh's feature indices. Vertices and triangles keep their order within
    a group, or with ``by_feature`` come feature by feature within it (each feature's vertices and triangles
    together, which compresses better)."""
    vertex_key = group_of_feature[mesh.feature]
    if by_feature:
        vertex_key = vertex_key * (int(mesh.feature.max(initial=0)) + 1) + mesh.feature
    order = np.argsort(vertex_key, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    vertex_group = group_of_feature[mesh.feature][order]
    tris = inverse[mesh.triangles]
    tri_group = vertex_group[tris[:, 0]]
    tri_order = np.argsort(vertex_key[order][tris[:, 0]] if by_feature else tri_group, kind="stable")
    tris, tri_group = tris[tri_order], tri_group[tri_order]
    positions, normals = gltf_axes(mesh.positions[order]), gltf_axes(mesh.normals[order])
    feature = mesh.feature[order]
    prims = []
    for group in np.unique(tri_group):
        v0, v1 = np.searchsorted(vertex_group, group, "left"), np.searchsorted(vertex_group, group, "right")
        t0, t1 = np.searchsorted(tri_group, group, "left"), np.searchsorted(tri_group, group, "right")
        prims.append(
            Primitive(
                positions=positions[v0:v1],
                normals=normals[v0:v1],
                feature_ids=feature[v0:v1],
                indices=(tris[t0:t1] - v0).reshape(-1),
                material=int(group),
            )
        )
    return prims


def material_primitives(
    mesh: Mesh, group_of_feature: IntArray, materials: Sequence[Material], by_feature: bool = False
) -> tuple[list[Primitive], list[Material]]:
    """One glTF primitive per material group present in ``mesh`` (`primitives_by_group`) and the materials
    they use, renumbered so that only those are written."""
    used = np.unique(group_of_feature[mesh.feature])
    compact = np.full(len(materials), -1, dtype=np.int64)
    compact[used] = np.arange(len(used))
    return primitives_by_group(mesh, compact[group_of_feature], by_feature), [materials[i] for i in used]


def written_box(enu: FloatArray) -> list[float]:
    """The ``box`` (tile frame) holding east-north-up positions as they are written (float32, y-up)."""
    p32 = gltf_axes(enu).astype(np.float32).astype(np.float64)
    lo, hi = column_min_max(np.stack([p32[:, 0], -p32[:, 2], p32[:, 1]], axis=1))
    return aligned_box(lo, hi)


def compression_for(positions: FloatArray) -> Meshopt:
    """The meshopt settings of a GLB holding ``positions`` (any frame axes: the grid is the same on all)."""
    return Meshopt(position_step(positions, MAX_POSITION_ERROR_M))


def snapped(mesh: Mesh, step: float) -> Mesh:
    """The mesh with positions on the grid ``step`` (what viewers decode) and the triangles that became
    degenerate on it dropped (normals are kept: they are within a degree for any triangle wider than a few
    grid steps)."""
    positions = snap_to_step(mesh.positions, step)
    tri = positions[mesh.triangles]
    face = cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    keep = np.einsum("ij,ij->i", face, face) > MIN_DOUBLE_AREA_M2**2
    return Mesh(positions, mesh.normals, mesh.feature, mesh.triangles[keep])
