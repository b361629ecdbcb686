"""IFC element geometry: triangulation with IfcOpenShell, TIN Z as WKB, and the building's footprint.

Decisions recorded here:

- **Triangulation** runs ``ifcopenshell.geom.iterator`` with world coordinates (metres, whatever the project
  unit) and the ``hybrid-cgal-simple-opencascade`` kernel: on FZK-Haus it gives the same triangles as plain
  OpenCASCADE (same counts and volumes, openings subtracted) about twice as fast, where ``cgal-simple`` alone
  drops walls. Threads: one per CPU (at most 8); the iterator runs the elements in parallel in C++.
- **Openings** (IfcFeatureElementSubtraction) are not elements of the building: they are voids IfcOpenShell
  has already cut out of their hosts, so they are neither triangulated on their own nor stored.
- An element whose geometry IfcOpenShell cannot build keeps its row with no mesh (counted in the report);
  a model where no element can be triangulated is refused.
- **Footprint**: union of the XY projections of the triangles of the *physical* elements (IfcElement, less
  virtual, geographic/terrain and opening elements; site terrain and spaces do not shape the building),
  vertical triangles (projected area < 1 mm²) left out, vectorised with shapely 2. It is snapped to a 1 mm
  grid (float noise between adjacent triangles would otherwise leave hair-line holes), made valid, holes under
  0.05 m² filled and parts under 0.05 m² dropped (unless 1 % or more of the whole); real courtyards are kept.
- Stored meshes are ISO WKB ``TIN Z`` built with numpy for all triangles at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

import ifcopenshell
import ifcopenshell.geom
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

GEOMETRY_LIBRARY: Final = "hybrid-cgal-simple-opencascade"
MIN_TRIANGLE_AREA_M2 = 1e-6
FOOTPRINT_GRID_M = 0.001
MIN_FOOTPRINT_PART_M2 = 0.05

NON_PHYSICAL = ("IfcVirtualElement", "IfcGeographicElement", "IfcFeatureElement")

FloatArray = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Mesh:
    """One element's triangles: ``verts`` (n, 3) model world metres, ``faces`` (m, 3) vertex indices."""

    verts: FloatArray
    faces: IndexArray


def iterator_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def triangulate(
    model: ifcopenshell.file, products: list[ifcopenshell.entity_instance], threads: int | None = None
) -> dict[int, Mesh]:
    """Meshes by STEP id of ``products`` in model world metres; elements IfcOpenShell cannot build are absent."""
    if not products:
        return {}
    settings = ifcopenshell.geom.settings()
    settings.set("use-world-coords", True)
    settings.set("weld-vertices", True)
    settings.set("no-normals", True)
    iterator = ifcopenshell.geom.iterator(
        settings, model, threads or iterator_threads(), include=products, geometry_library=GEOMETRY_LIBRARY
    )
    meshes: dict[int, Mesh] = {}
    if not iterator.initialize():
        return meshes
    while True:
        shape = iterator.get()
        geometry = shape.geometry
        verts = np.asarray(geometry.verts, dtype=np.float64).reshape(-1, 3)
        faces = np.asarray(geometry.faces, dtype=np.int64).reshape(-1, 3)
        # Triangles repeating a vertex have no area and no use.
        keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
        faces = faces[keep]
        if len(faces) and np.isfinite(verts).all():
            meshes[int(shape.id)] = Mesh(verts, faces)
        if not iterator.next():
            break
    return meshes


def is_physical(product: ifcopenshell.entity_instance) -> bool:
    """Whether an element shapes the building's footprint and height (see the module docstring)."""
    if not product.is_a("IfcElement"):
        return False
    return not any(_is_a(product, cls) for cls in NON_PHYSICAL)


def _is_a(product: ifcopenshell.entity_instance, cls: str) -> bool:
    try:
        return bool(product.is_a(cls))
    except RuntimeError:  # a class the file's schema does not have (IfcGeographicElement in IFC2X3)
        return False


# --------------------------------------------------------------------------------------------------------
# WKB

_TRIANGLE_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xyz", "<f8", (4, 3))]
)  # packed: 109 bytes per triangle
_TIN_Z = 1016
_TRIANGLE_Z = 1017


def triangle_records(corners: FloatArray) -> npt.NDArray[np.void]:
    """ISO WKB ``TRIANGLE Z`` records for (m, 3, 3) triangle corners (closed rings), all at once."""
    records = np.empty(len(corners), dtype=_TRIANGLE_WKB)
    records["order"] = 1
    records["type"] = _TRIANGLE_Z
    records["rings"] = 1
    records["points"] = 4
    records["xyz"][:, :3] = corners
    records["xyz"][:, 3] = corners[:, 0]
    return records


def tin_wkb(records: npt.NDArray[np.void]) -> bytes:
    """ISO WKB ``TIN Z`` of triangle records (see `triangle_records`)."""
    header = np.array([(1, _TIN_Z, len(records))], dtype=[("order", "u1"), ("type", "<u4"), ("n", "<u4")])
    return header.tobytes() + records.tobytes()


# --------------------------------------------------------------------------------------------------------
# Footprint


def footprint(corners: FloatArray, element_of: IndexArray) -> MultiPolygon | None:
    """The union of the XY projections of (m, 3, ≥2) triangle corners, cleaned (module docstring).

    ``element_of`` gives each triangle's element (sorted). The projection of a closed, consistently oriented
    mesh is covered by its upward-facing triangles alone (their signed projected areas sum to that of the
    downward ones), so such elements contribute only those: half the work. Others contribute all their
    non-vertical triangles. Each element is unioned on its own first (small unions are cheap), then all
    elements together on the 1 mm grid. Returns None when nothing of area is left."""
    xy = np.ascontiguousarray(corners[:, :, :2])
    a, b, c = xy[:, 0], xy[:, 1], xy[:, 2]
    signed = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))
    up, down = signed >= MIN_TRIANGLE_AREA_M2, signed <= -MIN_TRIANGLE_AREA_M2
    n_elements = int(element_of.max()) + 1 if len(element_of) else 0
    up_area = np.bincount(element_of, weights=np.where(up, signed, 0.0), minlength=n_elements)
    down_area = np.bincount(element_of, weights=np.where(down, -signed, 0.0), minlength=n_elements)
    closed = np.isclose(up_area, down_area, rtol=1e-6, atol=1e-6) & (up_area > 0)
    keep = np.where(closed[element_of], up, up | down)
    if not keep.any():
        return None
    flat = xy[keep]
    rings = np.concatenate([flat, flat[:, :1]], axis=1)
    triangles = shapely.polygons(rings)
    owner = element_of[keep]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    parts = [shapely.union_all(group) for group in np.split(triangles, starts[1:])]
    merged = shapely.union_all(parts, grid_size=FOOTPRINT_GRID_M)
    return clean_polygons(merged)


def clean_polygons(geom: BaseGeometry) -> MultiPolygon | None:
    """A valid MultiPolygon of ``geom``'s polygons: holes under 0.05 m² filled, parts under 0.05 m² dropped
    unless they are 1 % or more of the whole (a model of one column is a small but real footprint).
    None when nothing of area is left."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon)]
    if not parts:
        parts = [q for p in shapely.get_parts(geom) if hasattr(p, "geoms") for q in p.geoms if isinstance(q, Polygon)]
    total = sum(p.area for p in parts)
    kept = []
    for part in parts:
        holes = [r for r in part.interiors if Polygon(r).area >= MIN_FOOTPRINT_PART_M2]
        polygon = Polygon(part.exterior, holes)
        if polygon.area >= min(MIN_FOOTPRINT_PART_M2, 0.01 * total) and polygon.area > 0:
            kept.append(polygon)
    if not kept:
        return None
    out = MultiPolygon(kept)
    if not out.is_valid:
        fixed = shapely.make_valid(out)
        polygons = [p for p in shapely.get_parts(fixed) if isinstance(p, Polygon) and p.area > 0]
        if not polygons:
            return None
        out = MultiPolygon(polygons)
    return out
