"""How buildings become LOD1 meshes: each footprint (polygons with holes, multipolygons) is extruded from
its ground elevation to ground + height, and a tile's buildings become one glTF with a feature per building.

Everything runs over all buildings of a tile at once with numpy (flat vertex arrays with ring, polygon
and building offsets); the only per-polygon Python step is the call into mapbox_earcut for the roof.

Decisions recorded here:
- **Faces.** A roof (triangulated by mapbox_earcut, holes included) and one quad per footprint edge. No
  floor: it is never seen from above ground and would cost ~15% more bytes. Flat shading: roof vertices
  are not shared with walls and every wall quad has its own four vertices.
- **Orientation.** Exterior rings are made counter-clockwise and holes clockwise (seen from above), so
  every wall normal (edge direction × up) points out of the solid, into courtyards for holes; triangles are
  wound counter-clockwise seen from outside (glTF front faces).
- **Placement.** Footprint vertices go through `cim.crs.storage_to_ecef` at ground level (height-datum
  offset applied there); the roof vertex is that point moved ``height_m`` along the ellipsoid normal, which
  is exactly what a geodetic height means. Positions are then expressed in the tile's east-north-up frame
  and written y-up (glTF x = east, y = up, z = -north): 3D Tiles turns glTF y-up into z-up at run time.
- **Roof normal.** The mean ellipsoid "up" over the polygon's vertices, in the tile frame (one normal per
  roof: flat, and true to the local vertical even far from the tile origin).
- **Cleaning.** Closing vertices, repeated consecutive vertices and zero-area roof triangles are dropped;
  a ring left with fewer than 3 vertices is dropped (with its holes, if it was an exterior ring).
- **Colour by use.** One material per building use (one primitive per use present in the tile), so colour
  costs no per-vertex bytes; viewers can restyle by the ``use`` property.
- **Compression.** Tiles are written with ``EXT_meshopt_compression`` (`tilesets.gltf.Meshopt`): positions
  snapped to a power-of-two grid of at most 2^-10 m (0.98 mm) per tile, so a drawn vertex is at most 0.85 mm
  (half a step along each axis) from the exact one, and the budget for placement stays at 1 cm; the grid
  only gets coarser beyond 8 km from the tile origin (2 mm at 16 km), farther than any leaf reaches. Normals
  stay flat per face: CesiumJS does not compute normals when they are absent, it draws such models unlit.
  Measured on the demo district at scale 20 (113k buildings): 574 → ~250 bytes per building (py3dtiles'
  b3dm: 635). ``compress=False`` writes the previous uncompressed form. Codes stay STRING properties
  (building 19 digits, grid 14, parcel): as UINT64 they would save ~25 bytes per building, but CesiumJS hands
  64-bit integers to styles and pickers as BigInt or, without it, as a lossy Number, and codes are looked up
  and shown as text.
- **Size estimate** used by the planner: ``118 * vertices + 100`` bytes per building: 5 glTF vertices of 20
  bytes per footprint vertex (roof + 4 wall corners; float32 position, byte normal, float feature id), ~3
  triangles per footprint vertex with 16-bit indices (18 bytes), ~100 bytes of property table. That is the
  decoded size, what a viewer holds in memory, which is what a tile budget is for; compressed files are
  about 45 % of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import mapbox_earcut
import numpy as np
import numpy.typing as npt
import shapely

from cim.crs import storage_to_ecef
from cim.model import BUILDING_USES, HEIGHT_SOURCES
from cim.store.tiles import BuildingRows
from tilesets.gltf import PropertyTable, column_min_max, glb_bytes, snap_to_step
from tilesets.layer_build import LeafContent
from tilesets.meshes import Mesh, compression_for, cross, material, material_primitives, unit, written_box
from tilesets.tileset import LocalFrame, ellipsoid_up

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

BYTES_PER_FOOTPRINT_VERTEX = 118
BYTES_PER_BUILDING = 100


USE_COLOURS: dict[str, str] = {
    "residential": "#e8d5b5",
    "commercial": "#f2a65a",
    "office": "#6fa8dc",
    "industrial": "#a08c7d",
    "public": "#93c47d",
    "education": "#ffd966",
    "healthcare": "#e06666",
    "mixed": "#b4a7d6",
    "other": "#cccccc",
}
USE_MATERIALS = [material(use, USE_COLOURS[use]) for use in BUILDING_USES]

BUILDING_SCHEMA: dict[str, Any] = {
    "id": "cim_buildings",
    "name": "CIM buildings (LOD1)",
    "version": "1",
    "enums": {
        "building_use": {
            "valueType": "UINT8",
            "values": [{"name": use, "value": i} for i, use in enumerate(BUILDING_USES)],
        },
        "height_source": {
            "valueType": "UINT8",
            "values": [{"name": src, "value": i} for i, src in enumerate(HEIGHT_SOURCES)],
        },
    },
    "classes": {
        "building": {
            "name": "Building",
            "description": "A building (楼栋) of the city model; its code links it to houses, devices and events.",
            "properties": {
                "building_code": {"type": "STRING", "required": True, "description": "19-digit building code"},
                "name": {"type": "STRING", "noData": ""},
                "use": {"type": "ENUM", "enumType": "building_use", "required": True},
                "height_m": {"type": "SCALAR", "componentType": "FLOAT32", "required": True},
                "storeys": {"type": "SCALAR", "componentType": "UINT16", "required": True},
                "ground_elevation_m": {
                    "type": "SCALAR",
                    "componentType": "FLOAT32",
                    "required": True,
                    "description": "orthometric (1985 National Height Datum)",
                },
                "grid_code": {"type": "STRING", "required": True, "description": "14-digit grid (网格) code"},
                "parcel_code": {"type": "STRING", "noData": ""},
                "height_source": {"type": "ENUM", "enumType": "height_source", "required": True},
                "version": {"type": "SCALAR", "componentType": "UINT32", "required": True},
            },
        }
    },
}

_USE_INDEX = {use: i for i, use in enumerate(BUILDING_USES)}
_SOURCE_INDEX = {src: i for i, src in enumerate(HEIGHT_SOURCES)}


def estimated_bytes(vertices: npt.ArrayLike) -> FloatArray:
    """Estimated raw glTF bytes of each building from its footprint vertex count (module docstring)."""
    return np.asarray(BYTES_PER_FOOTPRINT_VERTEX * np.asarray(vertices, np.float64) + BYTES_PER_BUILDING)


# --------------------------------------------------------------------------------------------------
# Footprints → flat ring arrays


@dataclass(frozen=True)
class Footprints:
    """Cleaned, oriented footprint vertices of a set of buildings, as flat arrays.

    ``xy`` (V, 2) storage CRS; ``building`` (V,) building index per vertex; ``nxt`` (V,) next vertex of the
    same ring; ``ring_start`` (R+1,) and ``poly_start`` (P+1,) vertex offsets; ``poly_rings`` (P+1,) ring
    offsets per polygon; ``poly_building`` (P,)."""

    xy: FloatArray
    building: IntArray
    nxt: IntArray
    ring_start: IntArray
    poly_start: IntArray
    poly_rings: IntArray
    poly_building: IntArray


def _offsets(counts: IntArray) -> IntArray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def parse_footprints(wkb: Sequence[bytes]) -> Footprints:
    """Decode WKB (Multi)Polygons and return their cleaned, oriented rings (see module docstring)."""
    geoms = shapely.from_wkb(np.asarray(wkb, dtype=object))
    polys, poly_building = shapely.get_parts(geoms, return_index=True)
    rings, ring_poly = shapely.get_rings(polys, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    n_rings = len(rings)
    counts = np.bincount(coord_ring, minlength=n_rings)
    first = _offsets(counts)[:-1]

    keep = np.ones(len(coords), dtype=bool)
    keep[(first + counts - 1)[counts > 0]] = False  # ring closure
    same_ring = coord_ring[1:] == coord_ring[:-1]
    keep[1:] &= ~((coords[1:] == coords[:-1]).all(axis=1) & same_ring)
    # After dropping, the last kept vertex of a ring may equal its first: drop it too.
    kept = np.flatnonzero(keep)
    kept_ring = coord_ring[kept]
    kcounts = np.bincount(kept_ring, minlength=n_rings)
    kfirst = _offsets(kcounts)[:-1]
    has = kcounts >= 2
    last_pos, first_pos = kept[(kfirst + kcounts - 1)[has]], kept[kfirst[has]]
    wrap = (coords[last_pos] == coords[first_pos]).all(axis=1)
    keep[last_pos[wrap]] = False

    ring_count = np.bincount(coord_ring[keep], minlength=n_rings)
    is_exterior = np.ones(n_rings, dtype=bool)
    is_exterior[1:] = ring_poly[1:] != ring_poly[:-1]
    n_polys = len(polys)
    poly_ok = np.zeros(n_polys, dtype=bool)
    poly_ok[ring_poly[is_exterior]] = ring_count[is_exterior] >= 3
    ring_ok = (ring_count >= 3) & poly_ok[ring_poly]
    keep &= ring_ok[coord_ring]

    xy = coords[keep]
    ring_ids = np.flatnonzero(ring_ok)
    ring_count = ring_count[ring_ids]
    ring_start = _offsets(ring_count)
    ring_poly = ring_poly[ring_ids]
    is_exterior = is_exterior[ring_ids]
    kept_polys, ring_poly = np.unique(ring_poly, return_inverse=True)
    ring_poly = ring_poly.reshape(-1)
    poly_rings = _offsets(np.bincount(ring_poly, minlength=len(kept_polys)))
    poly_start = ring_start[poly_rings]

    # Orientation: exteriors counter-clockwise, holes clockwise (shoelace on ring-local coordinates).
    v = len(xy)
    vertex_ring = np.repeat(np.arange(len(ring_count)), ring_count)
    pos = np.arange(v, dtype=np.int64)
    nxt = pos + 1
    ends = ring_start[1:] - 1
    nxt[ends] = ring_start[:-1]
    rel = xy - xy[ring_start[:-1]][vertex_ring] if v else xy
    cross = rel[:, 0] * rel[nxt, 1] - rel[nxt, 0] * rel[:, 1]
    area2 = np.add.reduceat(cross, ring_start[:-1]) if v else np.zeros(0)
    flip = np.where(is_exterior, area2 < 0, area2 > 0)
    vflip = flip[vertex_ring]
    start_v, end_v = ring_start[:-1][vertex_ring], ends[vertex_ring]
    order = np.where(vflip, start_v + end_v - pos, pos)
    xy = xy[order]

    building = np.repeat(poly_building[kept_polys], np.diff(poly_start))
    return Footprints(
        xy=np.ascontiguousarray(xy, dtype=np.float64),
        building=building.astype(np.int64),
        nxt=nxt,
        ring_start=ring_start,
        poly_start=poly_start,
        poly_rings=poly_rings,
        poly_building=poly_building[kept_polys].astype(np.int64),
    )


def triangulate_roofs(fp: Footprints, origin: tuple[float, float]) -> IntArray:
    """Roof triangles (T, 3) as vertex indices, counter-clockwise seen from above; zero-area ones dropped."""
    xy = fp.xy - np.asarray(origin)
    n_polys = len(fp.poly_building)
    if n_polys == 0:
        return np.zeros((0, 3), dtype=np.int64)
    # Ring ends relative to their polygon's first vertex, as earcut wants them; Python ints for the loop.
    ring_poly = np.repeat(np.arange(n_polys), np.diff(fp.poly_rings))
    ring_end = (fp.ring_start[1:] - fp.poly_start[ring_poly]).astype(np.uint32)
    vstart, rstart = fp.poly_start.tolist(), fp.poly_rings.tolist()
    earcut = mapbox_earcut.triangulate_float64
    parts = [
        earcut(xy[v0:v1], ring_end[r0:r1])
        for v0, v1, r0, r1 in zip(vstart, vstart[1:], rstart, rstart[1:], strict=False)
    ]
    counts = np.fromiter(map(len, parts), dtype=np.int64, count=n_polys)
    tris = (np.concatenate(parts).astype(np.int64) + np.repeat(fp.poly_start[:-1], counts)).reshape(-1, 3)
    a, b, c = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    solid = np.abs(area2) > 1e-9
    tris, cw = tris[solid], area2[solid] < 0
    tris[cw] = tris[cw][:, [0, 2, 1]]
    return tris


# --------------------------------------------------------------------------------------------------
# Extrusion


def extrude(fp: Footprints, ground: FloatArray, height: FloatArray, frame: LocalFrame) -> Mesh:
    """LOD1 solids of the footprints: roof at ground + height, walls down to ground, in ``frame``'s east-north-up
    metres; one feature per building (the footprints' building index)."""
    v = len(fp.xy)
    base_h = ground[fp.building]
    lift = height[fp.building]
    bx, by, bz = storage_to_ecef(fp.xy[:, 0], fp.xy[:, 1], base_h)
    base_ecef = np.stack([bx, by, bz], axis=1)
    up = ellipsoid_up(base_ecef)
    top_ecef = base_ecef + lift[:, None] * up
    base = frame.to_local(base_ecef)
    top = frame.to_local(top_ecef)
    up_local = up @ frame.rotation

    # Roof: shares the top positions, one normal per polygon.
    poly_of_vertex = np.repeat(np.arange(len(fp.poly_building)), np.diff(fp.poly_start))
    roof_normal = unit(np.add.reduceat(up_local, fp.poly_start[:-1], axis=0))[poly_of_vertex] if v else up_local
    roof_tris = triangulate_roofs(fp, (float(fp.xy[:, 0].mean()), float(fp.xy[:, 1].mean())) if v else (0.0, 0.0))

    # Walls: one quad per edge i → nxt[i]: base_i, base_next, top_next, top_i.
    b0, b1, t1, t0 = base, base[fp.nxt], top[fp.nxt], top
    wall_pos = np.stack([b0, b1, t1, t0], axis=1).reshape(-1, 3)
    wall_normal = np.repeat(unit(cross(b1 - b0, t0 - b0)), 4, axis=0)
    w = v + 4 * np.arange(v, dtype=np.int64)
    # Both triangles of a quad together: (b0, b1, t1) and (b0, t1, t0).
    wall_tris = np.stack([w, w + 1, w + 2, w, w + 2, w + 3], axis=1).reshape(-1, 3)

    return Mesh(
        positions=np.concatenate([top, wall_pos]),
        normals=np.concatenate([roof_normal, wall_normal]),
        feature=np.concatenate([fp.building, np.repeat(fp.building, 4)]),
        triangles=np.concatenate([roof_tris, wall_tris]),
    )


# --------------------------------------------------------------------------------------------------
# A tile of buildings → GLB


def building_tile(rows: BuildingRows, compress: bool = True) -> LeafContent:
    """The glTF tile of ``rows``: feature id i is the i-th building after sorting by (use, code); meshopt-
    compressed with positions snapped to a grid of at most 1 mm (module docstring) unless ``compress`` is off.
    Its ``box`` comes from the float32 positions actually written."""
    if len(rows) == 0:
        raise ValueError("a building tile needs at least one building")
    use_idx = np.array([_USE_INDEX[u] for u in rows.use], dtype=np.int64)
    order = np.lexsort((np.arange(len(rows)), use_idx))  # rows come ordered by code
    fp = parse_footprints([rows.footprint_wkb[i] for i in order])
    ground = rows.ground_elevation_m[order]
    height = rows.height_m[order]
    (xmin, ymin), (xmax, ymax) = column_min_max(fp.xy)
    frame = LocalFrame.at_storage_point((xmin + xmax) / 2, (ymin + ymax) / 2, float(ground.min()))
    mesh = extrude(fp, ground, height, frame)
    compression = None
    if compress:
        compression = compression_for(mesh.positions)
        mesh = replace(mesh, positions=snap_to_step(mesh.positions, compression.position_step))
    # Buildings are sorted by use: vertices and triangles stay building by building inside each use.
    prims, materials = material_primitives(mesh, use_idx[order], USE_MATERIALS, by_feature=True)
    table = PropertyTable(
        class_name="building",
        count=len(rows),
        columns={
            "building_code": [rows.building_code[i] for i in order],
            "name": [rows.name[i] for i in order],
            "use": use_idx[order],
            "height_m": height,
            "storeys": rows.storeys[order],
            "ground_elevation_m": ground,
            "grid_code": [rows.grid_code[i] for i in order],
            "parcel_code": [rows.parcel_code[i] for i in order],
            "height_source": np.array([_SOURCE_INDEX[rows.height_source[i]] for i in order], dtype=np.int64),
            "version": rows.version[order],
        },
    )
    return LeafContent(
        glb=glb_bytes(prims, materials, BUILDING_SCHEMA, table, compression=compression),
        frame=frame,
        box=written_box(mesh.positions),
        bounds=(float(xmin), float(ymin), float(xmax), float(ymax)),
        feature_count=len(rows),
    )
