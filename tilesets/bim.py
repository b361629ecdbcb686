"""The BIM layer: IFC elements as 3D Tiles, one feature per element, shown close up in place of their
building's LOD1 block.

**How viewers get BIM close up and the LOD1 block far away: REPLACE refinement inside this tileset.**
Every leaf of the BIM quadtree holds the LOD1 blocks of its buildings (the same meshes and ``building``
property table as the buildings layer, made by `tilesets.buildings.building_tile`) and has ``refine:
"REPLACE"`` with detail children holding the buildings' elements. A viewer draws the blocks until the
leaf's screen-space error exceeds its limit, then loads the elements and drops the blocks: no viewer code
decides when to switch, any 3D Tiles 1.1 client does it. The alternative, separate layers with distance
display conditions, needs viewer code per client and cannot hide the block in the buildings layer by
itself either. What the viewer must do once: the buildings layer still draws every building, so a viewer
that loads both layers hides, in the buildings layer, the buildings this tileset draws. Their codes are
in this tileset.json's ``extras.cim.buildings_with_bim`` (CesiumJS: ``show`` with a ``building_code``
condition; buildings made by ``cim ingest ifc`` also have ``height_source === 'bim'``). See docs/3dtiles.md.

Decisions recorded here:
- **Index features are buildings** (all drawn elements of a building in one leaf, so a block is never
  half-replaced); the quadtree limits are counted in buildings and estimated bytes of their elements.
  An incremental build rewrites a building's leaf when the building row or any of its elements changed.
- **Switch distance.** The leaf's geometric error is the largest storey height (height / storeys) of its
  buildings: the size of what an LOD1 block misses (floors, openings, roof shape within a storey). With
  CesiumJS defaults (maximum screen-space error 16, 60° field of view, 1080 px) a 3 m storey switches at
  about 3 m x 1080 / (2 tan 30° x 16) ≈ 175 m.
- **Detail tiles** (children of the leaf, leaf error 0, same frame as the blocks): the leaf's elements split
  by a k-d tree on element centres (longest axis, median) until each part holds at most ``max_features``
  elements and ``max_tile_bytes`` estimated bytes.
- **Meshes**: stored TINs (storage CRS, Z orthometric) go through `cim.crs.storage_to_ecef` (datum offset
  applied) into the leaf's east-north-up frame; flat shading (normal from the triangle's winding, which
  IfcOpenShell makes outward), identical (element, position, normal) vertices welded; degenerate
  triangles dropped. Spaces and zones are not drawn (cim.store.tile_layers.HIDDEN_IFC_CLASSES).
- **Colour by IFC class**: one material per class category (`CATEGORY_OF_CLASS`: walls, slabs, roofs,
  windows, doors, stairs, railings, structure, coverings, furnishing, building services, site, other).
- **Metadata**: class ``bim_element``: IFC GUID, class, category, name, storey and its elevation, building
  code, model GUID, and flattened properties: IsExternal, LoadBearing, FireRating, Reference,
  ThermalTransmittance from ``Pset_*Common``; volume and area from the base quantities (which ones: see
  cim/store/tile_layers.py).
- **Compression**: meshopt with positions within 1 mm, as for buildings (positions are snapped before
  normals are computed, so triangles the grid makes degenerate are dropped).
- **Size estimate** used by the planner (raw, before compression): 45 bytes per triangle (after welding
  about 1.5 vertices of 20 bytes and 3 16-bit indices) and 200 bytes per element row.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from cim.store.tile_layers import BimElementRows, bim_element_rows, bim_index
from cim.store.tiles import BuildingRows, building_rows
from tilesets.buildings import building_tile
from tilesets.gltf import Meshopt, PropertyTable, glb_bytes, snap_to_step
from tilesets.layer_build import (
    BuildOptions,
    DetailContent,
    FeatureIndex,
    IntArray,
    Layer,
    LeafContent,
    NothingToTileError,
    build_layer,
    union_box,
)
from tilesets.meshes import (
    MIN_DOUBLE_AREA_M2,
    Mesh,
    compression_for,
    cross,
    material,
    material_primitives,
    no_data,
    number_property,
    storage_to_local,
    uint8_enum,
    unit,
    written_box,
)
from tilesets.tileset import LocalFrame

FloatArray = npt.NDArray[np.float64]

CONTENT_FORMAT = 1  # bump when the meshes or metadata written change: forces a full rebuild
BYTES_PER_TRIANGLE, BYTES_PER_ELEMENT, BYTES_PER_BLOCK = 45, 200, 2000
MIN_TRIANGLE_AREA_M2 = 1e-8

CATEGORIES: dict[str, str] = {  # category → sRGB colour
    "wall": "#d9d4c7",
    "slab": "#a6a6a6",
    "roof": "#b5523b",
    "window": "#7fb8d8",
    "door": "#8c6239",
    "stair": "#c8b99a",
    "railing": "#505a64",
    "structure": "#bf9b6f",
    "covering": "#e6e0d0",
    "furnishing": "#9a7b5b",
    "services": "#3d85c6",
    "site": "#8fbc6f",
    "other": "#cccccc",
}
CATEGORY_NAMES = tuple(CATEGORIES)
MATERIALS = [material(name, colour) for name, colour in CATEGORIES.items()]
CATEGORY_OF_CLASS: dict[str, str] = {
    **dict.fromkeys(("IfcWall", "IfcWallStandardCase", "IfcWallElementedCase", "IfcCurtainWall"), "wall"),
    **dict.fromkeys(("IfcSlab", "IfcSlabStandardCase", "IfcSlabElementedCase"), "slab"),
    "IfcRoof": "roof",
    **dict.fromkeys(("IfcWindow", "IfcWindowStandardCase"), "window"),
    **dict.fromkeys(("IfcDoor", "IfcDoorStandardCase"), "door"),
    **dict.fromkeys(("IfcStair", "IfcStairFlight", "IfcRamp", "IfcRampFlight"), "stair"),
    "IfcRailing": "railing",
    **dict.fromkeys(
        (
            "IfcBeam",
            "IfcBeamStandardCase",
            "IfcColumn",
            "IfcColumnStandardCase",
            "IfcMember",
            "IfcMemberStandardCase",
            "IfcPlate",
            "IfcPlateStandardCase",
            "IfcFooting",
            "IfcPile",
            "IfcBuildingElementProxy",
        ),
        "structure",
    ),
    "IfcCovering": "covering",
    **dict.fromkeys(("IfcFurnishingElement", "IfcFurniture", "IfcSystemFurnitureElement"), "furnishing"),
    **dict.fromkeys(("IfcSite", "IfcGeographicElement"), "site"),
}
SERVICES_PREFIXES = (
    "IfcFlow", "IfcDistribution", "IfcPipe", "IfcDuct", "IfcCable", "IfcEnergyConversion", "IfcSanitary",
    "IfcLight", "IfcAirTerminal", "IfcValve", "IfcPump", "IfcFan", "IfcBoiler", "IfcTank", "IfcOutlet",
)  # fmt: skip
FLAGS = ("unknown", "false", "true")

BIM_SCHEMA: dict[str, Any] = {
    "id": "cim_bim",
    "name": "CIM BIM elements",
    "version": "1",
    "enums": {
        "category": uint8_enum(CATEGORY_NAMES),
        "flag": uint8_enum(FLAGS),
    },
    "classes": {
        "bim_element": {
            "name": "BIM element",
            "description": "An IFC element (IfcProduct with a body) of a building's model. Elevations are "
            "orthometric (1985 National Height Datum), metres.",
            "properties": {
                "ifc_guid": {"type": "STRING", "required": True, "description": "IFC GlobalId (22 characters)"},
                "ifc_class": {"type": "STRING", "required": True},
                "category": {"type": "ENUM", "enumType": "category", "required": True},
                "name": {"type": "STRING", "noData": ""},
                "storey": {"type": "STRING", "noData": ""},
                "storey_elevation_m": number_property(),
                "building_code": {"type": "STRING", "required": True, "description": "19-digit building code"},
                "model_guid": {"type": "STRING", "noData": ""},
                "is_external": {
                    "type": "ENUM",
                    "enumType": "flag",
                    "required": True,
                    "description": "Pset_*Common.IsExternal",
                },
                "load_bearing": {
                    "type": "ENUM",
                    "enumType": "flag",
                    "required": True,
                    "description": "Pset_*Common.LoadBearing",
                },
                "fire_rating": {"type": "STRING", "noData": "", "description": "Pset_*Common.FireRating"},
                "reference": {"type": "STRING", "noData": "", "description": "Pset_*Common.Reference"},
                "thermal_transmittance": number_property("Pset_*Common.ThermalTransmittance, W/(m²·K)"),
                "volume_m3": number_property("base quantities: NetVolume, else GrossVolume"),
                "area_m2": number_property("base quantities: NetArea, NetSideArea, NetFloorArea, else gross"),
            },
        }
    },
}
_CATEGORY_INDEX = {c: i for i, c in enumerate(CATEGORY_NAMES)}


def category_of(ifc_class: str) -> str:
    """The colour category of an IFC class (module docstring)."""
    found = CATEGORY_OF_CLASS.get(ifc_class)
    if found is not None:
        return found
    return "services" if ifc_class.startswith(SERVICES_PREFIXES) else "other"


# --------------------------------------------------------------------------------------------------
# Stored TINs → triangles

_TIN_Z, _TRIANGLE_Z = 1016, 1017
_TRIANGLE_WKB = np.dtype(
    [("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("points", "<u4"), ("xyz", "<f8", (4, 3))]
)


def tin_triangles(wkb: list[bytes]) -> tuple[FloatArray, IntArray]:
    """Corners (T, 3, 3) of little-endian ISO WKB ``TIN Z`` geometries and the geometry index of each
    triangle (T,). Raises ValueError for anything else (another type, byte order or ring layout)."""
    if not wkb:
        return np.zeros((0, 3, 3)), np.zeros(0, dtype=np.int64)
    head = np.frombuffer(b"".join(w[:9] for w in wkb), dtype=[("order", "u1"), ("type", "<u4"), ("n", "<u4")])
    n = head["n"].astype(np.int64)
    lengths = np.fromiter((len(w) for w in wkb), dtype=np.int64, count=len(wkb))
    if (head["order"] != 1).any() or (head["type"] != _TIN_Z).any() or (lengths != 9 + n * 109).any():
        raise ValueError("a mesh is not a little-endian ISO WKB TIN Z of single-ring triangles")
    records = np.frombuffer(b"".join(w[9:] for w in wkb), dtype=_TRIANGLE_WKB)
    ok = (records["order"] == 1) & (records["type"] == _TRIANGLE_Z) & (records["rings"] == 1)
    if not (ok & (records["points"] == 4)).all():
        raise ValueError("a mesh triangle is not a closed single-ring TRIANGLE Z")
    return np.ascontiguousarray(records["xyz"][:, :3]), np.repeat(np.arange(len(wkb)), n)


def element_mesh(
    corners: FloatArray, element: IntArray, frame: LocalFrame, compress: bool = True
) -> tuple[Mesh, Meshopt | None]:
    """Flat-shaded triangles of the elements in ``frame`` (east-north-up), identical vertices welded, and the
    compression settings their GLBs are written with. Compressed, positions are snapped to its grid first,
    so normals and the dropping of degenerate triangles see the positions viewers decode."""
    flat = corners.reshape(-1, 3)
    local = storage_to_local(frame, flat[:, 0], flat[:, 1], flat[:, 2])
    compression = compression_for(local) if compress and len(local) else None
    if compression is not None:
        local = snap_to_step(local, compression.position_step)
    local = local.reshape(-1, 3, 3)
    normal = cross(local[:, 1] - local[:, 0], local[:, 2] - local[:, 0])
    area2 = np.sqrt(np.einsum("ij,ij->i", normal, normal))
    keep = area2 > max(2 * MIN_TRIANGLE_AREA_M2, MIN_DOUBLE_AREA_M2)
    local, normal, element = local[keep], unit(normal[keep]), element[keep]
    positions = local.reshape(-1, 3)
    normals = np.repeat(normal, 3, axis=0)
    feature = np.repeat(element, 3)
    # Weld on what is written: float32 positions, byte normals, the feature id.
    key = np.zeros(len(positions), dtype=[("f", "<i8"), ("p", "<f4", 3), ("n", "i1", 3)])
    key["f"], key["p"], key["n"] = feature, positions, np.round(normals * 127)
    _, first, inverse = np.unique(key.view(np.void(key.dtype.itemsize)), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    mesh = Mesh(positions[first], normals[first], feature[first], inverse.reshape(-1, 3).astype(np.int64))
    return mesh, compression


# --------------------------------------------------------------------------------------------------
# Splitting a leaf's elements into detail tiles


def split_elements(centres: FloatArray, weight: FloatArray, max_count: int, max_bytes: float) -> list[IntArray]:
    """Parts of the elements (index arrays), each at most ``max_count`` elements and ``max_bytes``
    (or a single element): a k-d tree on the centres, splitting at the median of the longest axis."""
    parts: list[IntArray] = []
    stack = [np.arange(len(centres), dtype=np.int64)]
    while stack:
        members = stack.pop()
        if len(members) <= 1 or (len(members) <= max_count and float(weight[members].sum()) <= max_bytes):
            parts.append(members)
            continue
        pts = centres[members]
        axis = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))
        order = members[np.argsort(pts[:, axis], kind="stable")]
        half = len(order) // 2
        stack += [order[half:], order[:half]]
    return [np.sort(p) for p in parts]


# --------------------------------------------------------------------------------------------------
# A leaf: LOD1 blocks replaced by element tiles


@dataclass(frozen=True)
class BimRows:
    buildings: BuildingRows
    elements: BimElementRows

    def buildings_found(self) -> int:
        return len(set(self.buildings.building_code) & set(self.elements.building_code))


def _flag(values: list[bool | None]) -> IntArray:
    return np.array([0 if v is None else 2 if v else 1 for v in values], dtype=np.int64)


def elements_glb(rows: BimElementRows, sel: IntArray, mesh: Mesh, compression: Meshopt | None = None) -> bytes:
    """The GLB of elements ``sel`` (feature id i = i-th of ``sel``); ``mesh`` features index ``sel``."""
    category = np.array([_CATEGORY_INDEX[category_of(rows.ifc_class[i])] for i in sel], dtype=np.int64)
    prims, materials = material_primitives(mesh, category, MATERIALS)

    def pick(values: list[Any]) -> list[Any]:
        return [values[i] for i in sel]

    table = PropertyTable(
        class_name="bim_element",
        count=len(sel),
        columns={
            "ifc_guid": pick(rows.ifc_guid),
            "ifc_class": pick(rows.ifc_class),
            "category": category,
            "name": pick(rows.name),
            "storey": pick(rows.storey),
            "storey_elevation_m": no_data(rows.storey_elevation_m[sel]),
            "building_code": pick(rows.building_code),
            "model_guid": pick(rows.model_guid),
            "is_external": _flag(pick(rows.is_external)),
            "load_bearing": _flag(pick(rows.load_bearing)),
            "fire_rating": pick(rows.fire_rating),
            "reference": pick(rows.reference),
            "thermal_transmittance": no_data(rows.thermal_transmittance[sel]),
            "volume_m3": no_data(rows.volume_m3[sel]),
            "area_m2": no_data(rows.area_m2[sel]),
        },
    )
    return glb_bytes(prims, materials, BIM_SCHEMA, table, compression=compression)


def bim_leaf(rows: BimRows, options: BuildOptions, compress: bool = True) -> LeafContent:
    """LOD1 blocks of the buildings, REPLACEd by detail tiles of their elements (module docstring)."""
    blocks = building_tile(rows.buildings, compress=compress)
    frame = blocks.frame
    corners, element = tin_triangles(rows.elements.mesh_wkb)
    mesh, compression = element_mesh(corners, element, frame, compress)
    n = len(rows.elements)
    drawn = np.bincount(mesh.feature, minlength=n) > 0
    triangles = np.bincount(element, minlength=n)
    mid = corners.mean(axis=1)
    sums = np.stack([np.bincount(element, weights=mid[:, i], minlength=n) for i in range(3)], axis=1)
    centres: FloatArray = sums / np.maximum(triangles, 1)[:, None]
    weight = (BYTES_PER_TRIANGLE * triangles + BYTES_PER_ELEMENT).astype(np.float64)
    candidates = np.flatnonzero(drawn)
    details = []
    tri_element = mesh.feature[mesh.triangles[:, 0]]
    for part in split_elements(centres[candidates], weight[candidates], options.max_features, options.max_tile_bytes):
        sel = candidates[part]
        local_id = np.full(n, -1, dtype=np.int64)
        local_id[sel] = np.arange(len(sel))
        tris = mesh.triangles[local_id[tri_element] >= 0]
        used_vertices, tris_compact = np.unique(tris, return_inverse=True)
        sub = Mesh(
            positions=mesh.positions[used_vertices],
            normals=mesh.normals[used_vertices],
            feature=local_id[mesh.feature[used_vertices]],
            triangles=tris_compact.reshape(-1, 3).astype(np.int64),
        )
        glb = elements_glb(rows.elements, sel, sub, compression)
        details.append(DetailContent(glb=glb, box=written_box(sub.positions)))
    storey_height = rows.buildings.height_m / np.maximum(rows.buildings.storeys, 1)
    return LeafContent(
        glb=blocks.glb,
        frame=frame,
        box=union_box([blocks.box, *(d.box for d in details)]),
        bounds=blocks.bounds,
        feature_count=int(drawn.sum()),
        details=details,
        geometric_error=float(storey_height.max()),
    )


# --------------------------------------------------------------------------------------------------
# The layer


def _index(conn: psycopg.Connection) -> FeatureIndex:
    idx = bim_index(conn)
    if len(idx) == 0:
        raise NothingToTileError("there are no BIM elements with meshes in the database: ingest an IFC model first")
    weight = BYTES_PER_TRIANGLE * idx.triangles + BYTES_PER_ELEMENT * idx.elements + BYTES_PER_BLOCK
    return FeatureIndex(
        key=idx.code, x=idx.x, y=idx.y, size=idx.size, weight=weight.astype(np.float64), digest=idx.digest
    )


def _fetch(conn: psycopg.Connection, index: FeatureIndex, members: IntArray) -> BimRows:
    codes = index.key[members].tolist()
    return BimRows(buildings=building_rows(conn, codes), elements=bim_element_rows(conn, codes))


def _extras(index: FeatureIndex) -> dict[str, Any]:
    return {
        "cim": {
            "layer": "bim",
            "refinement": "each leaf draws its buildings' LOD1 blocks and REPLACEs them by the BIM elements",
            "buildings_with_bim": sorted(str(c) for c in index.key.tolist()),
        }
    }


BIM = Layer[BimRows](
    name="bim",
    content_format=CONTENT_FORMAT,
    index=_index,
    fetch=_fetch,
    found=BimRows.buildings_found,
    make=bim_leaf,
    attributes={
        "format": "3D Tiles 1.1 glb: EXT_mesh_features, EXT_structural_metadata, KHR_mesh_quantization",
        "content": "LOD1 blocks refined (REPLACE) by IFC elements; index features are buildings",
    },
    extras=_extras,
)


build_bim = partial(build_layer, BIM)
"""Build (or update) the BIM tileset: ``build_bim(settings, out, incremental, options, progress)`` → BuildReport."""
