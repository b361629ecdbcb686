"""SQL for the BIM and pipes 3D Tiles layers: a light index per layer and the rows of one tile (the
buildings layer's SQL is in cim/store/tiles.py, whose `read_snapshot` all builds share).

Decisions recorded here:
- **Content hashes** are 64-bit ``hash_record_extended`` of every column a tile shows of a feature (plus the
  columns of other rows it shows: a pipe shows the ground level of its end nodes as its depth; a node's
  glyph is sized by the largest pipe connected to it), so a changed hash means exactly that the feature's
  tile must be rewritten.
- **Keys**: pipes and nodes share one layer, so their 64-bit index keys are ``hashtextextended`` of
  ``'pipe:' || code`` and ``'node:' || code`` (distinct even where a pipe and a node share a code).
- **BIM index rows are buildings** (key: the building code as an integer): a building's elements are tiled
  together under its LOD1 block (tilesets/bim.py); its hash combines the building row and, in GUID order,
  every drawn element.
- **Drawn elements**: those with a mesh whose class is not in `HIDDEN_IFC_CLASSES` (spaces and zones are
  volumes that would hide the interior; viewers show them on demand, not by default).
- **Selected BIM properties** are flattened from the property sets ``Pset_*Common`` (IsExternal,
  LoadBearing, FireRating, Reference, ThermalTransmittance) and the quantity sets ``Qto_*BaseQuantities`` /
  ``BaseQuantities`` (NetVolume else GrossVolume; NetArea, NetSideArea, NetFloorArea, else the gross ones);
  non-numeric quantities and non-boolean flags read as missing.
- Meshes leave the database as little-endian ISO WKB (``ST_AsBinary(.., 'NDR')``), decoded with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from cim.store.tiles import fetch_columns

HIDDEN_IFC_CLASSES = ("IfcSpace", "IfcSpatialZone", "IfcZone", "IfcOpeningElement", "IfcVirtualElement")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _floats(values: Sequence[Any]) -> FloatArray:
    """Numbers with None as NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Pipes


_PIPE_INDEX_SQL = """
SELECT code, hashtextextended('pipe:' || code, 0),
       (ST_XMin(b) + ST_XMax(b)) / 2, (ST_YMin(b) + ST_YMax(b)) / 2,
       ST_XMax(b) - ST_XMin(b), ST_YMax(b) - ST_YMin(b), ST_ZMax(b) - ST_ZMin(b), diameter_mm / 1000.0,
       n_points, digest
  FROM (SELECT p.code, Box3D(p.geom) AS b, p.diameter_mm, ST_NPoints(p.geom) AS n_points,
               hash_record_extended(ROW(p.code, p.network, p.material, p.diameter_mm, p.start_invert_m,
                                        p.end_invert_m, p.from_node, p.to_node, p.built_year, p.grid_code,
                                        ST_AsEWKB(p.geom), f.ground_elevation_m, t.ground_elevation_m), 0) AS digest
          FROM pipes p
          LEFT JOIN pipe_nodes f ON f.code = p.from_node
          LEFT JOIN pipe_nodes t ON t.code = p.to_node
        OFFSET 0) s
"""

_NODE_INDEX_SQL = """
WITH ends AS (
    SELECT node, max(diameter_mm) / 1000.0 AS d
      FROM (SELECT from_node AS node, diameter_mm FROM pipes UNION ALL SELECT to_node, diameter_mm FROM pipes) e
     GROUP BY node
)
SELECT n.code, hashtextextended('node:' || n.code, 0), ST_X(n.geom), ST_Y(n.geom), n.kind,
       n.ground_elevation_m - n.invert_elevation_m, ends.d,
       hash_record_extended(ROW(n.code, n.network, n.kind, n.ground_elevation_m, n.invert_elevation_m, n.grid_code,
                                ST_AsEWKB(n.geom), ends.d), 0)
  FROM pipe_nodes n LEFT JOIN ends ON ends.node = n.code
"""


@dataclass(frozen=True)
class PipeNetworkIndex:
    """Pipes then nodes, as parallel arrays (storage CRS metres).

    Pipes: ``extent`` (dx, dy, dz) of the line's 3D box, ``diameter_m``, ``points`` (line vertices).
    Nodes: ``kind``, ``depth_m`` (ground − invert), ``diameter_m`` = largest connected pipe (NaN if none).
    ``digest``: 64-bit content hash."""

    is_node: npt.NDArray[np.bool_]
    code: npt.NDArray[np.object_]
    key: IntArray
    x: FloatArray
    y: FloatArray
    extent: FloatArray
    diameter_m: FloatArray
    points: IntArray
    kind: npt.NDArray[np.object_]
    depth_m: FloatArray
    digest: IntArray

    def __len__(self) -> int:
        return len(self.code)


def pipe_network_index(conn: psycopg.Connection) -> PipeNetworkIndex:
    """The index of every pipe and node (the pipes layer's features)."""
    p, n = fetch_columns(conn, _PIPE_INDEX_SQL, None, 10), fetch_columns(conn, _NODE_INDEX_SQL, None, 8)
    n_p, n_n = len(p[0]), len(n[0])
    return PipeNetworkIndex(
        is_node=np.r_[np.zeros(n_p, dtype=bool), np.ones(n_n, dtype=bool)],
        code=np.array([*p[0], *n[0]], dtype=object),
        key=np.array([*p[1], *n[1]], dtype=np.int64),
        x=np.array([*p[2], *n[2]], dtype=np.float64),
        y=np.array([*p[3], *n[3]], dtype=np.float64),
        extent=np.r_[np.array([p[4], p[5], p[6]], dtype=np.float64).T.reshape(n_p, 3), np.zeros((n_n, 3))],
        diameter_m=np.r_[np.array(p[7], dtype=np.float64), _floats(n[6])],
        points=np.r_[np.array(p[8], dtype=np.int64), np.zeros(n_n, dtype=np.int64)],
        kind=np.array([*(["pipe"] * n_p), *n[4]], dtype=object),
        depth_m=np.r_[np.zeros(n_p), np.array(n[5], dtype=np.float64)],
        digest=np.array([*p[9], *n[7]], dtype=np.int64),
    )


@dataclass(frozen=True)
class PipeRows:
    """Pipes of one tile, ordered by code; ``line_wkb``: the 3D line (Z = invert) as WKB, storage CRS.
    ``depth_m``: mean over both ends of end-node ground − pipe invert (NaN where a node is missing)."""

    code: list[str]
    network: list[str]
    material: list[str | None]
    diameter_mm: FloatArray
    start_invert_m: FloatArray
    end_invert_m: FloatArray
    from_node: list[str]
    to_node: list[str]
    built_year: IntArray
    length_m: FloatArray
    depth_m: FloatArray
    grid_code: list[str]
    line_wkb: list[bytes]

    def __len__(self) -> int:
        return len(self.code)


@dataclass(frozen=True)
class NodeRows:
    """Nodes of one tile, ordered by code; ``x``/``y`` storage CRS; ``pipe_diameter_m``: largest connected
    pipe (NaN when none is connected)."""

    code: list[str]
    network: list[str]
    kind: list[str]
    ground_elevation_m: FloatArray
    invert_elevation_m: FloatArray
    grid_code: list[str]
    x: FloatArray
    y: FloatArray
    pipe_diameter_m: FloatArray

    def __len__(self) -> int:
        return len(self.code)


def pipe_rows(conn: psycopg.Connection, codes: Sequence[str]) -> PipeRows:
    """Full rows of the given pipes (missing ones are left out), ordered by code."""
    c = fetch_columns(
        conn,
        """
        SELECT p.code, p.network, p.material, p.diameter_mm, p.start_invert_m, p.end_invert_m, p.from_node,
               p.to_node, coalesce(p.built_year, 0), p.length_m,
               ((f.ground_elevation_m - p.start_invert_m) + (t.ground_elevation_m - p.end_invert_m)) / 2,
               p.grid_code, ST_AsBinary(p.geom, 'NDR')
          FROM pipes p
          LEFT JOIN pipe_nodes f ON f.code = p.from_node
          LEFT JOIN pipe_nodes t ON t.code = p.to_node
         WHERE p.code = ANY(%s::text[]) ORDER BY p.code
        """,
        (list(codes),),
        13,
    )
    return PipeRows(
        code=list(c[0]),
        network=list(c[1]),
        material=list(c[2]),
        diameter_mm=np.array(c[3], dtype=np.float64),
        start_invert_m=np.array(c[4], dtype=np.float64),
        end_invert_m=np.array(c[5], dtype=np.float64),
        from_node=list(c[6]),
        to_node=list(c[7]),
        built_year=np.array(c[8], dtype=np.int64),
        length_m=np.array(c[9], dtype=np.float64),
        depth_m=_floats(c[10]),
        grid_code=list(c[11]),
        line_wkb=[bytes(b) for b in c[12]],
    )


def node_rows(conn: psycopg.Connection, codes: Sequence[str]) -> NodeRows:
    """Full rows of the given pipe nodes (missing ones are left out), ordered by code."""
    c = fetch_columns(
        conn,
        """
        SELECT n.code, n.network, n.kind, n.ground_elevation_m, n.invert_elevation_m, n.grid_code,
               ST_X(n.geom), ST_Y(n.geom),
               (SELECT max(p.diameter_mm) / 1000.0 FROM pipes p WHERE p.from_node = n.code OR p.to_node = n.code)
          FROM pipe_nodes n WHERE n.code = ANY(%s::text[]) ORDER BY n.code
        """,
        (list(codes),),
        9,
    )
    return NodeRows(
        code=list(c[0]),
        network=list(c[1]),
        kind=list(c[2]),
        ground_elevation_m=np.array(c[3], dtype=np.float64),
        invert_elevation_m=np.array(c[4], dtype=np.float64),
        grid_code=list(c[5]),
        x=np.array(c[6], dtype=np.float64),
        y=np.array(c[7], dtype=np.float64),
        pipe_diameter_m=_floats(c[8]),
    )


# --------------------------------------------------------------------------------------------------
# BIM


_BIM_INDEX_SQL = """
SELECT b.building_code::bigint, (ST_XMin(e.box) + ST_XMax(e.box)) / 2, (ST_YMin(e.box) + ST_YMax(e.box)) / 2,
       sqrt(power(ST_XMax(e.box) - ST_XMin(e.box), 2) + power(ST_YMax(e.box) - ST_YMin(e.box), 2)
            + power(ST_ZMax(e.box) - ST_ZMin(e.box), 2)),
       e.triangles, e.elements, b.height_m / greatest(b.storeys, 1),
       hash_record_extended(ROW(e.digest,
           hash_record_extended(ROW(b.building_code, b.version, b.name, b.use, b.height_m, b.storeys,
                                    b.ground_elevation_m, b.grid_code, b.parcel_code, b.height_source,
                                    ST_AsEWKB(b.footprint)), 0)), 0)
  FROM (SELECT building_code, ST_3DExtent(mesh) AS box, sum(ST_NPoints(mesh) / 4) AS triangles, count(*) AS elements,
               hash_array_extended(array_agg(
                   hash_record_extended(ROW(ifc_guid, model_guid, ifc_class, name, storey, storey_elevation_m,
                                            properties, quantities, ST_AsEWKB(mesh)), 0) ORDER BY ifc_guid), 0)
                   AS digest
          FROM bim_elements
         WHERE mesh IS NOT NULL AND ifc_class <> ALL(%(hidden)s::text[])
         GROUP BY building_code) e
  JOIN buildings b ON b.building_code = e.building_code
"""


@dataclass(frozen=True)
class BimIndex:
    """One entry per building with drawn BIM elements: ``code`` (building code as integer), centre and 3D
    diagonal of its elements' box, ``triangles`` and ``elements`` drawn, ``storey_height_m`` (building height
    / storeys), ``digest`` over the building row and all its drawn elements."""

    code: IntArray
    x: FloatArray
    y: FloatArray
    size: FloatArray
    triangles: IntArray
    elements: IntArray
    storey_height_m: FloatArray
    digest: IntArray

    def __len__(self) -> int:
        return len(self.code)


def bim_index(conn: psycopg.Connection) -> BimIndex:
    """The index of every building with drawn BIM elements."""
    c = fetch_columns(conn, _BIM_INDEX_SQL, {"hidden": list(HIDDEN_IFC_CLASSES)}, 8)
    return BimIndex(
        code=np.array(c[0], dtype=np.int64),
        x=np.array(c[1], dtype=np.float64),
        y=np.array(c[2], dtype=np.float64),
        size=np.array(c[3], dtype=np.float64),
        triangles=np.array(c[4], dtype=np.int64),
        elements=np.array(c[5], dtype=np.int64),
        storey_height_m=np.array(c[6], dtype=np.float64),
        digest=np.array(c[7], dtype=np.int64),
    )


# A jsonb value as float8 when it is a number, else NULL.
_NUM = "CASE WHEN jsonb_typeof({v}) = 'number' THEN ({v})::float8 END"
_BOOL = "CASE WHEN jsonb_typeof({v}) = 'boolean' THEN ({v})::boolean END"
_TEXT = "CASE WHEN jsonb_typeof({v}) IN ('string', 'number') THEN {v} #>> '{{}}' END"


def _first(kind: str, source: str, names: Sequence[str]) -> str:
    return "coalesce(" + ", ".join(kind.format(v=f"{source} -> '{n}'") for n in names) + ")"


_AREAS = ("NetArea", "NetSideArea", "NetFloorArea", "GrossArea", "GrossSideArea", "GrossFloorArea")
_BIM_ROWS_SQL = f"""
SELECT e.ifc_guid, e.building_code, e.model_guid, e.ifc_class, e.name, e.storey, e.storey_elevation_m,
       {_first(_BOOL, "c.p", ["IsExternal"])}, {_first(_BOOL, "c.p", ["LoadBearing"])},
       {_first(_TEXT, "c.p", ["FireRating"])}, {_first(_TEXT, "c.p", ["Reference"])},
       {_first(_NUM, "c.p", ["ThermalTransmittance"])},
       {_first(_NUM, "q.p", ["NetVolume", "GrossVolume"])},
       {_first(_NUM, "q.p", _AREAS)},
       ST_AsBinary(e.mesh, 'NDR')
  FROM bim_elements e
  CROSS JOIN LATERAL (
      SELECT coalesce(jsonb_object_agg(p.key, p.value), '{{}}') AS p
        FROM jsonb_each(e.properties) s, jsonb_each(CASE WHEN jsonb_typeof(s.value) = 'object' THEN s.value END) p
       WHERE s.key LIKE 'Pset\\_%%Common') c
  CROSS JOIN LATERAL (
      SELECT coalesce(jsonb_object_agg(p.key, p.value), '{{}}') AS p
        FROM jsonb_each(e.quantities) s, jsonb_each(CASE WHEN jsonb_typeof(s.value) = 'object' THEN s.value END) p
       WHERE s.key LIKE 'Qto\\_%%BaseQuantities' OR s.key = 'BaseQuantities') q
 WHERE e.building_code = ANY(%(codes)s::bigint[]::text[]) AND e.mesh IS NOT NULL
   AND e.ifc_class <> ALL(%(hidden)s::text[])
 ORDER BY e.building_code, e.ifc_guid
"""


@dataclass(frozen=True)
class BimElementRows:
    """Drawn elements of some buildings, ordered by building code then GUID; ``mesh_wkb``: TIN Z as
    little-endian ISO WKB in the storage CRS (Z orthometric). Flags are True/False/None (not stated)."""

    ifc_guid: list[str]
    building_code: list[str]
    model_guid: list[str | None]
    ifc_class: list[str]
    name: list[str | None]
    storey: list[str | None]
    storey_elevation_m: FloatArray
    is_external: list[bool | None]
    load_bearing: list[bool | None]
    fire_rating: list[str | None]
    reference: list[str | None]
    thermal_transmittance: FloatArray
    volume_m3: FloatArray
    area_m2: FloatArray
    mesh_wkb: list[bytes]

    def __len__(self) -> int:
        return len(self.ifc_guid)


def bim_element_rows(conn: psycopg.Connection, building_codes: Sequence[int]) -> BimElementRows:
    """The drawn elements of the given buildings (codes as integers, as in the index)."""
    c = fetch_columns(
        conn, _BIM_ROWS_SQL, {"codes": [int(c) for c in building_codes], "hidden": list(HIDDEN_IFC_CLASSES)}, 15
    )
    return BimElementRows(
        ifc_guid=list(c[0]),
        building_code=list(c[1]),
        model_guid=list(c[2]),
        ifc_class=list(c[3]),
        name=list(c[4]),
        storey=list(c[5]),
        storey_elevation_m=_floats(c[6]),
        is_external=list(c[7]),
        load_bearing=list(c[8]),
        fire_rating=list(c[9]),
        reference=list(c[10]),
        thermal_transmittance=_floats(c[11]),
        volume_m3=_floats(c[12]),
        area_m2=_floats(c[13]),
        mesh_wkb=[bytes(b) for b in c[14]],
    )
