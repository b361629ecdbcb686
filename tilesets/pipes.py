"""The pipes layer: underground networks as 3D Tiles, pipes as tubes at their true depth and nodes (manholes,
valves, …) as glyphs, one feature per pipe and per node.

Everything runs over all pipes and nodes of a tile at once with numpy: every feature is a polyline axis
swept by a regular polygon (`sweep`), pipes along their 3D line, node glyphs along a vertical axis.

Decisions recorded here:
- **Depth.** Stored pipe lines carry Z = invert elevation (the inside bottom); the tube's axis is the line
  raised by half the diameter (centre = invert + diameter / 2), its radius half the diameter. Axis points
  go storage CRS → ECEF through `cim.crs.storage_to_ecef` (height-datum offset applied) → the tile's
  east-north-up frame, and the rings are built there, in true metres: a 400 mm pipe is 400 mm wide whatever
  the projection's scale factor.
- **Tubes** have `TUBE_SIDES` sides with smooth normals and flat end caps (closed solids: looking into a
  pipe end shows a lid, not a hole). At a bend of a polyline the ring lies in the mitre plane (the
  bisector), so both segments keep their full radius; bends sharper than 120° get a clamped mitre.
- **Nodes** (`node_glyphs`, sizes in metres, d = diameter of the largest connected pipe, 0.3 m when none):
  manhole: 12-sided cylinder of radius max(0.5, d/2 + 0.2) from invert to ground; outfall: square box of
  side max(1.0, d + 0.4) from invert to ground; inlet (gully): 0.6 m square from invert to ground; pump
  station: 4 m square from invert to ground; hydrant: cylinder of radius 0.15 m from the pipe axis to 0.8 m
  above ground (it stands on the street); valve: cube of side max(0.3, 1.5 d), junction: max(0.2, 1.2 d),
  meter: max(0.4, 1.5 d), centred on the pipe axis (invert + d/2). Shafts are at least 0.1 m tall. Boxes
  have flat sides aligned with east and north; glyph axes follow the local vertical.
- **Colour by network**, after the pipeline map colours of CJJ 61 (water sky blue, drainage/rain/sewage
  browns, gas pink, heat orange, power red, telecom green); nodes use a lighter tint of their network's
  colour. One primitive per material present, so colour costs no per-vertex bytes.
- **Metadata**: one property table, class ``network_element``: pipes (feature ids 0 … P−1, by code) then
  nodes (P …, by code). ``element`` says pipe or the node kind; pipe-only and node-only properties carry
  their schema's ``noData`` on the other kind.
- **Compression**: meshopt, positions within 1 mm (tilesets/meshes.py), as for buildings.
- **Size estimate** used by the planner (raw, before compression): 20 bytes per vertex (float32 position,
  byte normal, float feature id), 6 per triangle, 150 per property row; a straight pipe is 42 vertices and
  40 triangles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import shapely

from cim.model import PIPE_NETWORKS, PIPE_NODE_KINDS
from cim.store.tile_layers import NodeRows, PipeRows, node_rows, pipe_network_index, pipe_rows
from tilesets.gltf import PropertyTable, column_min_max, glb_bytes
from tilesets.layer_build import (
    BuildOptions,
    FeatureIndex,
    IntArray,
    Layer,
    LeafContent,
    NothingToTileError,
    build_layer,
)
from tilesets.meshes import (
    NO_NUMBER,
    Mesh,
    compression_for,
    cross,
    material,
    material_primitives,
    no_data,
    number_property,
    snapped,
    storage_to_local,
    uint8_enum,
    unit,
    written_box,
)
from tilesets.tileset import LocalFrame

FloatArray = npt.NDArray[np.float64]

CONTENT_FORMAT = 1  # bump when the meshes or metadata written change: forces a full rebuild
TUBE_SIDES = 10
CYLINDER_SIDES = 12
MAX_MITRE = 2.0  # 1 / cos(60°): bends up to 120° keep the full radius
MIN_SHAFT_M = 0.1
DEFAULT_PIPE_DIAMETER_M = 0.3
BYTES_PER_VERTEX, BYTES_PER_TRIANGLE, BYTES_PER_ROW = 20, 6, 150

ELEMENTS = ("pipe", *PIPE_NODE_KINDS)
NETWORK_COLOURS: dict[str, tuple[str, str]] = {  # (pipes, nodes)
    "water": ("#00a0e9", "#8fd3f4"),
    "drainage": ("#8b5a2b", "#c49a6c"),
    "rain": ("#a0522d", "#d2967a"),
    "sewage": ("#5c3a1e", "#9c7a5e"),
    "gas": ("#ff69b4", "#ffb3da"),
    "heat": ("#ff8c00", "#ffc680"),
    "power": ("#e60012", "#f58088"),
    "telecom": ("#22ac38", "#90d69c"),
}
MATERIALS = [material(f"{n} pipes", NETWORK_COLOURS[n][0]) for n in PIPE_NETWORKS] + [
    material(f"{n} structures", NETWORK_COLOURS[n][1]) for n in PIPE_NETWORKS
]

PIPE_SCHEMA: dict[str, Any] = {
    "id": "cim_pipes",
    "name": "CIM underground pipe networks",
    "version": "1",
    "enums": {
        "network": uint8_enum(PIPE_NETWORKS),
        "element": uint8_enum(ELEMENTS),
    },
    "classes": {
        "network_element": {
            "name": "Pipe network element",
            "description": "A pipe or a node (manhole, valve, …) of an underground network. Elevations are "
            "orthometric (1985 National Height Datum), metres.",
            "properties": {
                "code": {"type": "STRING", "required": True},
                "element": {"type": "ENUM", "enumType": "element", "required": True},
                "network": {"type": "ENUM", "enumType": "network", "required": True},
                "grid_code": {"type": "STRING", "required": True, "description": "14-digit grid (网格) code"},
                "material": {"type": "STRING", "noData": "", "description": "pipes: e.g. PVC, RC, DI"},
                "diameter_mm": number_property(),
                "start_invert_m": number_property("pipes: invert at the from-node end; nodes: the node's invert"),
                "end_invert_m": number_property(),
                "ground_elevation_m": number_property(),
                "depth_m": number_property(
                    "nodes: ground − invert; pipes: mean over both ends of node ground − invert"
                ),
                "length_m": number_property(),
                "from_node": {"type": "STRING", "noData": ""},
                "to_node": {"type": "STRING", "noData": ""},
                "built_year": {"type": "SCALAR", "componentType": "UINT16", "noData": 0},
            },
        }
    },
}

_NETWORK_INDEX = {n: i for i, n in enumerate(PIPE_NETWORKS)}
_ELEMENT_INDEX = {k: i for i, k in enumerate(ELEMENTS)}


# --------------------------------------------------------------------------------------------------
# Sweeping a polygon along axes


def sweep(
    axis: FloatArray,
    starts: IntArray,
    radius: FloatArray,
    sides: int,
    phase: float = 0.0,
    smooth: bool = True,
    up: FloatArray | None = None,
) -> Mesh:
    """Closed prisms/tubes: a regular ``sides``-gon of circumradius ``radius[f]`` swept along the axis
    polyline of each feature f (points ``axis[starts[f]:starts[f + 1]]``, at least 2, no repeated
    consecutive points; east-north-up metres), with mitred joints, flat end caps, smooth or flat sides.

    The polygon's first corner is at angle ``phase`` from u = t × up (t the segment direction; north
    replaces ``up`` for near-vertical axes), turning towards w = u × t."""
    n_features = len(starts) - 1
    v = len(axis)
    if n_features == 0:
        return Mesh.concat([])
    k = sides
    up_ref = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    feature = np.repeat(np.arange(n_features), np.diff(starts))
    is_first = np.zeros(v, dtype=bool)
    is_first[starts[:-1]] = True
    is_last = np.zeros(v, dtype=bool)
    is_last[starts[1:] - 1] = True

    seg = unit(axis[1:] - axis[:-1])  # direction i → i+1 (meaningless across features)
    t_out = np.zeros((v, 3))
    t_out[:-1] = seg
    t_in = np.zeros((v, 3))
    t_in[1:] = seg
    t_in[is_first] = t_out[is_first]
    t_out[is_last] = t_in[is_last]

    vertical = np.abs(t_in @ up_ref) > 0.99
    ref = np.where(vertical[:, None], np.array([0.0, 1.0, 0.0]), up_ref)
    u = unit(cross(t_in, ref))
    w = cross(u, t_in)
    angles = phase + 2 * np.pi * np.arange(k) / k
    circle = np.cos(angles)[None, :, None] * u[:, None, :] + np.sin(angles)[None, :, None] * w[:, None, :]
    r = radius[feature]
    mitre = unit(t_in + t_out)
    along = np.maximum(np.einsum("ij,ij->i", t_in, mitre), 1.0 / MAX_MITRE)
    shift = -np.einsum("ikj,ij->ik", circle, mitre) / along[:, None]  # (v, k): along t_in, onto the mitre plane
    offset = r[:, None, None] * (circle + shift[:, :, None] * t_in[:, None, :])
    ring = axis[:, None, :] + offset  # (v, k, 3)

    a = np.arange(k)
    b = (a + 1) % k
    seg_start = np.flatnonzero(~is_last)  # a side segment from ring i to ring i+1
    if smooth:
        side_pos = ring.reshape(-1, 3)
        side_nrm = unit(offset).reshape(-1, 3)
        side_feat = np.repeat(feature, k)
        i0 = (seg_start[:, None] * k + a[None, :]).reshape(-1)
        i1 = (seg_start[:, None] * k + b[None, :]).reshape(-1)
        j0, j1 = i0 + k, i1 + k
        side_tris = np.stack([i0, j0, j1, i0, j1, i1], axis=1).reshape(-1, 3)
    else:
        q0, q1 = ring[seg_start][:, a], ring[seg_start][:, b]
        q2, q3 = ring[seg_start + 1][:, a], ring[seg_start + 1][:, b]
        quads = np.stack([q0, q2, q3, q1], axis=2).reshape(-1, 4, 3)  # (i,a) (i+1,a) (i+1,a+1) (i,a+1)
        face = unit(cross(quads[:, 1] - quads[:, 0], quads[:, 2] - quads[:, 0]))
        side_pos = quads.reshape(-1, 3)
        side_nrm = np.repeat(face, 4, axis=0)
        side_feat = np.repeat(np.repeat(feature[seg_start], k), 4)
        q = 4 * np.arange(len(quads))
        side_tris = np.stack([q, q + 1, q + 2, q, q + 2, q + 3], axis=1).reshape(-1, 3)
    sides_mesh = Mesh(side_pos, side_nrm, side_feat, side_tris)

    caps = []
    for ends, normal_sign, flip in ((starts[:-1], -1.0, False), (starts[1:] - 1, 1.0, True)):
        tangent = t_in[ends] if flip else t_out[ends]
        centre = axis[ends]
        pos = np.concatenate([centre[:, None, :], ring[ends]], axis=1).reshape(-1, 3)  # (f, k+1, 3)
        nrm = np.repeat(normal_sign * tangent, k + 1, axis=0)
        c = (k + 1) * np.arange(len(ends))[:, None]
        first, second = (c + 1 + b, c + 1 + a) if flip else (c + 1 + a, c + 1 + b)
        tris = np.stack([np.broadcast_to(c, first.shape), first, second], axis=2).reshape(-1, 3)
        caps.append(Mesh(pos, nrm, np.repeat(np.arange(n_features), k + 1), tris))
    return Mesh.concat([sides_mesh, *caps])


# --------------------------------------------------------------------------------------------------
# Node glyphs


@dataclass(frozen=True)
class Glyphs:
    """Per node: ``cylinder`` (else a square box), ``radius`` (circumradius, m), bottom and top heights
    (orthometric, m)."""

    cylinder: npt.NDArray[np.bool_]
    radius: FloatArray
    z0: FloatArray
    z1: FloatArray


def node_glyphs(kind: npt.ArrayLike, ground: FloatArray, invert: FloatArray, pipe_diameter: FloatArray) -> Glyphs:
    """The glyph of each node (sizes in the module docstring)."""
    kinds = np.asarray(kind, dtype=object)
    d = np.where(np.isfinite(pipe_diameter), pipe_diameter, DEFAULT_PIPE_DIAMETER_M)
    axis = invert + d / 2
    sqrt2 = math.sqrt(2.0)
    shape: dict[str, tuple[bool, FloatArray, FloatArray, FloatArray]] = {
        "manhole": (True, np.maximum(0.5, d / 2 + 0.2), invert, ground),
        "outfall": (False, np.maximum(1.0, d + 0.4) / sqrt2, invert, ground),
        "inlet": (False, np.full_like(d, 0.6 / sqrt2), invert, ground),
        "pump_station": (False, np.full_like(d, 4.0 / sqrt2), invert, ground),
        "hydrant": (True, np.full_like(d, 0.15), axis, ground + 0.8),
        "valve": (False, np.maximum(0.3, 1.5 * d) / sqrt2, axis - np.maximum(0.3, 1.5 * d) / 2,
                  axis + np.maximum(0.3, 1.5 * d) / 2),
        "junction": (False, np.maximum(0.2, 1.2 * d) / sqrt2, axis - np.maximum(0.2, 1.2 * d) / 2,
                     axis + np.maximum(0.2, 1.2 * d) / 2),
        "meter": (False, np.maximum(0.4, 1.5 * d) / sqrt2, axis - np.maximum(0.4, 1.5 * d) / 2,
                  axis + np.maximum(0.4, 1.5 * d) / 2),
    }  # fmt: skip
    n = len(kinds)
    cylinder, radius, z0, z1 = np.zeros(n, bool), np.zeros(n), np.zeros(n), np.zeros(n)
    for name, (is_cyl, rad, bottom, top) in shape.items():
        sel = kinds == name
        cylinder[sel], radius[sel], z0[sel], z1[sel] = is_cyl, rad[sel], bottom[sel], top[sel]
    unknown = ~np.isin(kinds, list(shape))
    if unknown.any():
        raise ValueError(f"unknown pipe node kinds: {sorted(set(kinds[unknown]))}")
    z1 = np.maximum(z1, z0 + MIN_SHAFT_M)
    return Glyphs(cylinder, radius, z0, z1)


def _glyph_counts(cylinder: npt.NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
    """Vertices and triangles of each glyph (cylinder: smooth sides; box: flat sides), both with caps."""
    cyl_v, cyl_t = 2 * CYLINDER_SIDES + 2 * (CYLINDER_SIDES + 1), 4 * CYLINDER_SIDES
    box_v, box_t = 4 * 4 + 2 * 5, 4 * 4
    return np.where(cylinder, cyl_v, box_v).astype(np.int64), np.where(cylinder, cyl_t, box_t).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# A tile of pipes and nodes → GLB


@dataclass(frozen=True)
class NetworkRows:
    pipes: PipeRows
    nodes: NodeRows

    def __len__(self) -> int:
        return len(self.pipes) + len(self.nodes)


def _pipe_axes(rows: PipeRows) -> tuple[FloatArray, IntArray]:
    """Axis points (storage x, y, orthometric centre height) of each pipe, repeated points dropped."""
    lines = shapely.from_wkb(np.asarray(rows.line_wkb, dtype=object))
    coords, index = shapely.get_coordinates(lines, include_z=True, return_index=True)
    keep = np.ones(len(coords), dtype=bool)
    keep[1:] = ~((coords[1:] == coords[:-1]).all(axis=1) & (index[1:] == index[:-1]))
    coords, index = coords[keep], index[keep]
    counts = np.bincount(index, minlength=len(rows))
    if (counts < 2).any():
        bad = [rows.code[i] for i in np.flatnonzero(counts < 2)]
        raise ValueError(f"pipes without length cannot be drawn: {bad[:3]}")
    coords[:, 2] += rows.diameter_mm[index] / 2000.0  # invert → centre
    starts = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return coords, starts


def _nodes_mesh(frame: LocalFrame, nodes: NodeRows, first_feature: int) -> Mesh:
    glyphs = node_glyphs(nodes.kind, nodes.ground_elevation_m, nodes.invert_elevation_m, nodes.pipe_diameter_m)
    bottom = storage_to_local(frame, nodes.x, nodes.y, glyphs.z0)
    top = storage_to_local(frame, nodes.x, nodes.y, glyphs.z1)
    parts = []
    for is_cyl in (True, False):
        sel = np.flatnonzero(glyphs.cylinder == is_cyl)
        if len(sel) == 0:
            continue
        axis = np.stack([bottom[sel], top[sel]], axis=1).reshape(-1, 3)
        starts = 2 * np.arange(len(sel) + 1, dtype=np.int64)
        up = unit(top[sel] - bottom[sel]).mean(axis=0)
        if is_cyl:
            mesh = sweep(axis, starts, glyphs.radius[sel], CYLINDER_SIDES, up=up)
        else:
            mesh = sweep(axis, starts, glyphs.radius[sel], 4, phase=math.pi / 4, smooth=False, up=up)
        parts.append(Mesh(mesh.positions, mesh.normals, sel[mesh.feature] + first_feature, mesh.triangles))
    return Mesh.concat(parts)


def network_tile(rows: NetworkRows, compress: bool = True) -> LeafContent:
    """The glTF tile of some pipes and nodes (a whole leaf: no detail children): feature ids are pipes by code,
    then nodes by code; meshopt-compressed with positions on a grid of at most 1 mm error unless ``compress``
    is off."""
    pipes, nodes = rows.pipes, rows.nodes
    if len(rows) == 0:
        raise ValueError("a pipes tile needs at least one pipe or node")
    axis_xyz, starts = _pipe_axes(pipes) if len(pipes) else (np.zeros((0, 3)), np.zeros(1, dtype=np.int64))
    xy = np.concatenate([axis_xyz[:, :2], np.stack([nodes.x, nodes.y], axis=1)])
    (xmin, ymin), (xmax, ymax) = column_min_max(xy)
    z = np.concatenate([axis_xyz[:, 2], nodes.invert_elevation_m])
    frame = LocalFrame.at_storage_point((xmin + xmax) / 2, (ymin + ymax) / 2, float(z.min()))
    parts = []
    if len(pipes):
        axis = storage_to_local(frame, axis_xyz[:, 0], axis_xyz[:, 1], axis_xyz[:, 2])
        parts.append(sweep(axis, starts, pipes.diameter_mm / 2000.0, TUBE_SIDES))
    if len(nodes):
        parts.append(_nodes_mesh(frame, nodes, len(pipes)))
    mesh = Mesh.concat(parts)
    compression = compression_for(mesh.positions) if compress else None
    if compression is not None:
        mesh = snapped(mesh, compression.position_step)

    network = np.array([_NETWORK_INDEX[n] for n in [*pipes.network, *nodes.network]], dtype=np.int64)
    group = network + np.r_[np.zeros(len(pipes), np.int64), np.full(len(nodes), len(PIPE_NETWORKS), np.int64)]
    prims, materials = material_primitives(mesh, group, MATERIALS)
    n_p, n_n = len(pipes), len(nodes)
    depth = nodes.ground_elevation_m - nodes.invert_elevation_m
    table = PropertyTable(
        class_name="network_element",
        count=len(rows),
        columns={
            "code": [*pipes.code, *nodes.code],
            "element": np.array([_ELEMENT_INDEX["pipe"]] * n_p + [_ELEMENT_INDEX[k] for k in nodes.kind], np.int64),
            "network": network,
            "grid_code": [*pipes.grid_code, *nodes.grid_code],
            "material": [*pipes.material, *([None] * n_n)],
            "diameter_mm": np.r_[pipes.diameter_mm, np.full(n_n, NO_NUMBER)],
            "start_invert_m": np.r_[pipes.start_invert_m, nodes.invert_elevation_m],
            "end_invert_m": np.r_[pipes.end_invert_m, np.full(n_n, NO_NUMBER)],
            "ground_elevation_m": np.r_[np.full(n_p, NO_NUMBER), nodes.ground_elevation_m],
            "depth_m": np.r_[no_data(pipes.depth_m), depth],
            "length_m": np.r_[pipes.length_m, np.full(n_n, NO_NUMBER)],
            "from_node": [*pipes.from_node, *([None] * n_n)],
            "to_node": [*pipes.to_node, *([None] * n_n)],
            "built_year": np.r_[pipes.built_year, np.zeros(n_n, np.int64)],
        },
    )
    return LeafContent(
        glb=glb_bytes(prims, materials, PIPE_SCHEMA, table, compression=compression),
        frame=frame,
        box=written_box(mesh.positions),
        bounds=(float(xmin), float(ymin), float(xmax), float(ymax)),
        feature_count=len(rows),
    )


# --------------------------------------------------------------------------------------------------
# The layer


def _index(conn: psycopg.Connection) -> FeatureIndex:
    idx = pipe_network_index(conn)
    if len(idx) == 0:
        raise NothingToTileError("there are no pipes or pipe nodes in the database: ingest pipes first")
    node = idx.is_node
    glyphs = node_glyphs(
        np.where(node, idx.kind, "manhole"), np.where(node, idx.depth_m, 1.0), np.zeros(len(idx)), idx.diameter_m
    )
    node_size = np.sqrt(2 * (2 * glyphs.radius) ** 2 + (glyphs.z1 - glyphs.z0) ** 2)
    pipe_size = np.sqrt((idx.extent**2).sum(axis=1)) + np.nan_to_num(idx.diameter_m)
    glyph_v, glyph_t = _glyph_counts(glyphs.cylinder)
    pipe_v = idx.points * TUBE_SIDES + 2 * (TUBE_SIDES + 1)
    pipe_t = (idx.points - 1) * 2 * TUBE_SIDES + 2 * TUBE_SIDES
    vertices, triangles = np.where(node, glyph_v, pipe_v), np.where(node, glyph_t, pipe_t)
    return FeatureIndex(
        key=idx.key,
        x=idx.x,
        y=idx.y,
        size=np.where(node, node_size, pipe_size),
        weight=(BYTES_PER_VERTEX * vertices + BYTES_PER_TRIANGLE * triangles + BYTES_PER_ROW).astype(np.float64),
        digest=idx.digest,
        payload=(idx.is_node, idx.code),
    )


def _fetch(conn: psycopg.Connection, index: FeatureIndex, members: IntArray) -> NetworkRows:
    is_node, code = index.payload
    sel_nodes = is_node[members]
    return NetworkRows(
        pipes=pipe_rows(conn, code[members[~sel_nodes]].tolist()),
        nodes=node_rows(conn, code[members[sel_nodes]].tolist()),
    )


def _make(rows: NetworkRows, _options: BuildOptions) -> LeafContent:
    return network_tile(rows)


PIPES = Layer[NetworkRows](
    name="pipes",
    content_format=CONTENT_FORMAT,
    index=_index,
    fetch=_fetch,
    found=len,
    make=_make,
    attributes={
        "format": "3D Tiles 1.1 glb: EXT_mesh_features, EXT_structural_metadata, KHR_mesh_quantization",
        "content": "pipes as tubes at invert + diameter/2, nodes as glyphs; one feature per pipe and node",
    },
)


build_pipes = partial(build_layer, PIPES)
"""Build (or update) the pipes tileset: ``build_pipes(settings, out, incremental, options, progress)`` → BuildReport."""
