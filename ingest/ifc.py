"""``cim ingest ifc PATH``: an IFC model (IFC2X3, IFC4, IFC4X3) becomes a building with its BIM elements.

Flow: open the file and read what is cheap (schema, units, products, georeference) so a file that cannot be
placed fails at once; triangulate the elements (``ingest.ifc_geometry``) in worker processes while the
elements' properties are read here (``ingest.ifc_source``); place every vertex in the storage CRS with
one vectorised call (``ingest.ifc_georef``); derive the building (footprint, ground, height, storeys); then
ONE transaction: the building goes through the ordinary buildings stage and
``merge_buildings`` (grid and parcel links, code assignment, history), then the model, its storeys and its
elements (``cim.store.bim``) and an ``ingest_runs`` row.

Decisions recorded here (placement and geometry decisions are in those two modules' docstrings):

- **Elements** are the IfcProducts with a 'Body' shape representation, openings excepted (they are voids
  already cut out of their hosts). Property sets and quantity sets go to ``properties``/``quantities`` as
  ``{set name: {property: value}}``, type-inherited ones included, without IfcOpenShell's STEP ids (those
  change on every export). The element's storey is found through containment or aggregation.
- **A model** is identified by the GlobalId of its IfcBuilding (of its IfcProject when the file has none or
  several: a multi-building file is stored as one building). Re-ingesting it (the same file, or a renamed
  export with ``--building-code``) updates what changed, deletes its elements the file no longer has, and
  leaves unchanged rows untouched (the building keeps its version). If a new placement of the same file
  moves it to another grid without ``--building-code``, it gets a new code there and the building its
  earlier ingest made is deleted (kept in history as demolished). A *differently named* file with the same
  IfcBuilding GlobalId that would land in another building is refused: authoring templates reuse GlobalIds,
  and silently moving the other model away would lose it (``--building-code`` of the stored building
  replaces it deliberately).
- **The building**: footprint from the elements, ground elevation = lowest point, height = top − bottom
  (orthometric metres), ``height_source = 'bim'``, storeys = storeys at or above ±0.00 (at least 1), name from
  IfcBuilding (LongName, else Name), use from Pset_BuildingCommon.OccupancyType when it names one of the
  building uses, else the existing building's use, else 'other'. The code is ``--building-code`` (checked
  against the grid the footprint lies in), else the code an earlier ingest of the same file got if the model
  still lies in that grid, else the next free number of the grid.
- **Storey elevations** are the orthometric height of each storey's placement origin (the attribute
  Elevation when it has no placement). Floor numbers: 1 is the lowest storey at or above the model's ±0.00
  (0.5 m tolerance), then 2, 3 …; storeys below are −1, −2 … (as ``houses.storey``).
- Errors name the file (and element) on one line and leave the database unchanged.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ifcopenshell
import ifcopenshell.util.element
import ifcopenshell.util.placement
import ifcopenshell.util.unit
import numpy as np
import psycopg
import shapely

from cim import codes
from cim.db import transaction
from cim.model import BUILDING_USES
from cim.settings import Settings, get_settings
from cim.store import bim
from cim.store.catalog import record_ingest_run
from cim.store.merge import MergeOptions, merge_buildings
from cim.store.staging import copy_into_stage, create_stage
from ingest.errors import IngestError
from ingest.ifc_geometry import Mesh, footprint, is_physical, tin_wkb, triangle_records
from ingest.ifc_georef import Anchor, GeoreferenceError, Placement, resolve_placement
from ingest.ifc_source import IfcError, IfcSource, open_ifc
from ingest.progress import Progress, counter

GUID_RE = re.compile(r"^[0-9A-Za-z_$]{22}$")
GROUND_TOLERANCE_M = 0.5


# --------------------------------------------------------------------------------------------------------
# Report


@dataclass
class IfcReport:
    """What one IFC ingest did."""

    source: str
    building_code: str
    building: str
    georeference: str
    elements: int
    meshless: int
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    storeys: list[tuple[str | None, float]] = field(default_factory=list)
    footprint_area_m2: float = 0.0
    height_m: float = 0.0
    ground_elevation_m: float = 0.0
    seconds: float = 0.0
    dry_run: bool = False

    def summary(self) -> str:
        storeys = ", ".join(f"{n or '?'} {e:.2f} m" for n, e in self.storeys) or "none"
        return (
            f"ifc           {self.source}: building {self.building_code} ({self.building}), "
            f"placed by {self.georeference}; footprint {self.footprint_area_m2:.1f} m², height {self.height_m:.2f} m "
            f"from {self.ground_elevation_m:.2f} m; storeys: {storeys}\n"
            f"              elements {self.elements} (new {self.inserted}, changed {self.updated}, unchanged "
            f"{self.unchanged}, deleted {self.deleted}, without geometry {self.meshless}) in {self.seconds:.1f} s"
            + (" (dry run: nothing was written)" if self.dry_run else "")
        )


# --------------------------------------------------------------------------------------------------------
# Preparing


@dataclass
class _Storey:
    guid: str
    name: str | None
    model_z: float
    elevation_m: float
    ordinal: int = 0


@dataclass
class _Prepared:
    model_guid: str
    rows: list[tuple[Any, ...]]
    meshless: int
    storeys: list[_Storey]
    footprint_ewkb: bytes
    footprint_area_m2: float
    ground_m: float
    height_m: float
    building_name: str | None
    occupancy_use: str | None


def _model_guid(source: IfcSource) -> str:
    buildings = source.model.by_type("IfcBuilding")
    holder = buildings[0] if len(buildings) == 1 else next(iter(source.model.by_type("IfcProject")), None)
    if holder is None:
        raise IfcError(f"{source.name}: has no IfcProject")
    guid = str(holder.GlobalId or "")
    if not GUID_RE.fullmatch(guid):
        raise IfcError(f"{source.name}: {holder.is_a()} #{holder.id()} has an invalid GlobalId {guid!r}")
    return guid


def _check_guids(source: IfcSource) -> None:
    seen: dict[str, int] = {}
    for element in source.elements:
        guid = str(element.GlobalId or "")
        if not GUID_RE.fullmatch(guid):
            raise IfcError(f"{source.name}: {element.is_a()} #{element.id()} has an invalid GlobalId {guid!r}")
        if guid in seen:
            raise IfcError(f"{source.name}: GlobalId {guid} is used by #{seen[guid]} and #{element.id()}")
        seen[guid] = element.id()


def _storeys(source: IfcSource, placement: Placement) -> list[_Storey]:
    out = []
    for storey in source.model.by_type("IfcBuildingStorey"):
        guid = str(storey.GlobalId or "")
        if not GUID_RE.fullmatch(guid):
            raise IfcError(f"{source.name}: IfcBuildingStorey #{storey.id()} has an invalid GlobalId {guid!r}")
        if storey.ObjectPlacement is not None:
            z = float(ifcopenshell.util.placement.get_local_placement(storey.ObjectPlacement)[2, 3]) * source.unit_m
        else:
            z = float(storey.Elevation or 0.0) * source.unit_m
        h = placement.h0 + placement.k_z * (z - placement.origin_model[2])
        out.append(_Storey(guid, storey.Name or storey.LongName, z, float(h)))
    out.sort(key=lambda s: (s.model_z, s.guid))
    above = [i for i, s in enumerate(out) if s.model_z >= -GROUND_TOLERANCE_M]
    first = above[0] if above else len(out)
    for i, s in enumerate(out):
        s.ordinal = i - first + 1 if i >= first else i - first
    return out


def _storey_of(element: ifcopenshell.entity_instance) -> ifcopenshell.entity_instance | None:
    container = ifcopenshell.util.element.get_container(element)
    for _ in range(32):  # spaces and parts sit in a storey through aggregation
        if container is None or container.is_a("IfcBuildingStorey"):
            return container
        container = ifcopenshell.util.element.get_container(container) or ifcopenshell.util.element.get_aggregate(
            container
        )
    return None


def _json_safe(value: Any) -> Any:
    """Property values as JSON: no STEP ids, no NaN/infinity (jsonb refuses them), entities as text."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _occupancy_use(model: ifcopenshell.file) -> str | None:
    for building in model.by_type("IfcBuilding"):
        occupancy = ifcopenshell.util.element.get_pset(building, "Pset_BuildingCommon", "OccupancyType")
        if isinstance(occupancy, str):
            text = occupancy.lower()
            for use in BUILDING_USES:
                if use in text:
                    return use
    return None


def _building_name(model: ifcopenshell.file) -> str | None:
    buildings = model.by_type("IfcBuilding")
    if not buildings:
        return None
    return buildings[0].LongName or buildings[0].Name or None


@dataclass(frozen=True)
class _Properties:
    """What an element says of itself (read while the triangulation runs): storey, property and quantity
    sets as JSON."""

    storey_guid: str | None
    psets_json: str
    qtos_json: str


def _element_properties(source: IfcSource, on_element: Callable[[], None]) -> dict[int, _Properties]:
    out: dict[int, _Properties] = {}
    for element in source.elements:
        storey = _storey_of(element)
        psets = ifcopenshell.util.element.get_psets(element, psets_only=True)
        qtos = ifcopenshell.util.element.get_psets(element, qtos_only=True)
        out[element.id()] = _Properties(
            str(storey.GlobalId) if storey is not None else None,
            json.dumps(_json_safe(psets), ensure_ascii=False, sort_keys=True),
            json.dumps(_json_safe(qtos), ensure_ascii=False, sort_keys=True),
        )
        on_element()
    return out


def _prepare(
    source: IfcSource,
    placement: Placement,
    srid: int,
    meshes: dict[int, Mesh],
    properties: dict[int, _Properties],
    storeys: list[_Storey],
) -> _Prepared:
    meshed = [e for e in source.elements if e.id() in meshes]
    if not meshed:
        raise IfcError(
            f"{source.name}: IfcOpenShell could not triangulate any of the {len(source.elements)} element(s) "
            "with a Body representation"
        )
    # All vertices of all elements placed at once; triangles indexed into the concatenation.
    vert_counts = np.array([len(meshes[e.id()].verts) for e in meshed])
    tri_counts = np.array([len(meshes[e.id()].faces) for e in meshed])
    vert_offsets = np.concatenate([[0], np.cumsum(vert_counts)[:-1]])
    try:
        xyz = placement.to_storage(np.concatenate([meshes[e.id()].verts for e in meshed]), srid)
    except GeoreferenceError as exc:
        raise IfcError(f"{source.name}: {exc}") from None
    faces = np.concatenate([meshes[e.id()].faces for e in meshed]) + np.repeat(vert_offsets, tri_counts)[:, None]
    corners = xyz[faces]  # (triangles, 3, 3)
    records = triangle_records(corners)
    tri_ends = np.cumsum(tri_counts)

    element_of = np.repeat(np.arange(len(meshed)), tri_counts)
    physical = np.repeat(np.array([is_physical(e) for e in meshed]), tri_counts)
    if not physical.any():  # a model of spaces or terrain only: let those shape it
        physical[:] = True
    shaping = corners[physical]
    outline = footprint(shaping, element_of[physical])
    if outline is None:
        raise IfcError(f"{source.name}: the elements' projection on the ground has no area; no footprint")
    ground, top = float(shaping[:, :, 2].min()), float(shaping[:, :, 2].max())
    height = top - ground
    if not 0 < height < 1000:
        raise IfcError(f"{source.name}: building height {height:.3f} m (top − bottom) is not in 0..1000 m")

    storey_by_id = {s.guid: s for s in storeys}
    wkb_by_id: dict[int, bytes] = {}
    start = 0
    for element, end in zip(meshed, tri_ends.tolist(), strict=True):
        wkb_by_id[element.id()] = tin_wkb(records[start:end])
        start = end
    rows = []
    for element in source.elements:
        props = properties[element.id()]
        info = storey_by_id.get(props.storey_guid) if props.storey_guid is not None else None
        rows.append(
            (
                str(element.GlobalId),
                element.is_a(),
                element.Name,
                info.name if info else None,
                round(info.elevation_m, 3) if info else None,
                props.psets_json,
                props.qtos_json,
                wkb_by_id.get(element.id()),
            )
        )
    return _Prepared(
        model_guid=_model_guid(source),
        rows=rows,
        meshless=len(source.elements) - len(meshed),
        storeys=storeys,
        footprint_ewkb=shapely.to_wkb(shapely.set_srid(outline, srid), include_srid=True),
        footprint_area_m2=float(outline.area),
        ground_m=ground,
        height_m=height,
        building_name=_building_name(source.model),
        occupancy_use=_occupancy_use(source.model),
    )


def _building_frame(
    prepared: _Prepared, code: str | None, use: str, name: str | None, source_file: str, storeys: int
) -> dict[str, list[Any]]:
    """The one-row stage frame of ``cim.store.staging.STAGE_COLUMNS['buildings']`` (as lists: no pandas)."""
    return {
        "row_no": [1],
        "building_code": [code],
        "name": [name],
        "use": [use],
        "height_m": [round(prepared.height_m, 3)],
        "height_source": ["bim"],
        "storeys": [storeys],
        "ground_elevation_m": [round(prepared.ground_m, 3)],
        "footprint": [prepared.footprint_ewkb],
        "attributes": [json.dumps({"bim_model": prepared.model_guid})],
        "source_file": [source_file],
        "source_id": [prepared.model_guid],
        "valid_from": [None],
    }


# --------------------------------------------------------------------------------------------------------
# Ingest


class _DryRun(Exception):
    """Raised inside the transaction of a dry run to roll it back."""


def ingest_ifc(
    source: IfcSource | Path,
    building_code: str | None = None,
    anchor: Anchor | None = None,
    crs: str | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> IfcReport:
    """Ingest one IFC model as a building with its elements, in ONE transaction (see the module docstring).

    ``anchor`` places the model (overriding the file's georeference); ``crs`` names the CRS of an
    IfcMapConversion; ``dry_run`` does everything, then rolls back. Raises IfcError (an IngestError) with a
    one-line message; nothing is written then."""
    settings = settings or get_settings()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    step = progress or (lambda _step: None)
    if not isinstance(source, IfcSource):
        step(f"reading {Path(source).name}")
        source = open_ifc(Path(source))
    srid = settings.storage_srid
    if building_code is not None:
        try:
            with codes.city_scope(settings.city_code):
                codes.validate(building_code, "building")
        except codes.CodeError as exc:
            raise IfcError(f"{source.name}: --building-code: {exc}") from None
    try:
        placement = resolve_placement(source.model, srid, anchor=anchor, crs=crs)
    except IngestError as exc:
        raise IfcError(f"{source.name}: {exc}") from None
    _check_guids(source)
    # The triangulation runs in worker processes while the properties are read here.
    source.start_triangulation()
    try:
        reading = counter(progress, f"reading properties of {source.name}", len(source.elements), "elements")
        properties = _element_properties(source, reading.advance)
        reading.done()
        storeys = _storeys(source, placement)
        try:
            placement.transformer(srid)  # made now, while the workers triangulate
        except GeoreferenceError as exc:
            raise IfcError(f"{source.name}: {exc}") from None
        if source.triangulated:
            meshes = source.meshes()
        else:
            triangulating = counter(progress, f"triangulating {source.name}", len(source.elements), "elements")
            meshes = source.meshes(triangulating.advance)
            triangulating.done()
    finally:
        source.stop_triangulation()
    step("placing and deriving the building")
    prepared = _prepare(source, placement, srid, meshes, properties, storeys)
    step("loading")
    try:
        with transaction(settings) as conn:
            report = _load(conn, source, prepared, placement, building_code, srid, started)
            if dry_run:
                raise _DryRun
    except _DryRun:
        report.dry_run = True
    except psycopg.errors.IntegrityError as exc:
        raise IfcError(
            f"{source.name}: the database refused the model, nothing was loaded: {_pg_message(exc)}"
        ) from exc
    except psycopg.errors.DataException as exc:
        raise IfcError(
            f"{source.name}: a value was refused by the database, nothing was loaded: {_pg_message(exc)}"
        ) from exc
    report.seconds = time.perf_counter() - t0
    return report


def _load(
    conn: psycopg.Connection,
    source: IfcSource,
    prepared: _Prepared,
    placement: Placement,
    building_code: str | None,
    srid: int,
    started: datetime,
) -> IfcReport:
    model_guid = prepared.model_guid
    earlier = bim.model_building(conn, model_guid)
    previous = earlier[0] if earlier else None
    code = building_code
    if (
        code is None
        and earlier is not None
        and earlier[1] == source.name
        and bim.grid_containing(conn, prepared.footprint_ewkb) == earlier[0][:14]
    ):
        code = earlier[0]
    existing = bim.building_use_and_name(conn, code) if code else None
    use = prepared.occupancy_use or (existing[0] if existing else "other")
    name = prepared.building_name or (existing[1] if existing else None)
    storeys_above = max(1, sum(1 for s in prepared.storeys if s.ordinal > 0))

    create_stage(conn, "buildings")
    copy_into_stage(conn, "buildings", _building_frame(prepared, code, use, name, source.name, storeys_above))
    merged = merge_buildings(conn, MergeOptions())
    if merged.rejects:
        raise IfcError(f"{source.name}: building refused: {merged.rejects[0][1]}")
    code = bim.staged_building_code(conn)
    if earlier is not None and earlier[0] != code and earlier[1] != source.name:
        # Another file with this IfcBuilding GlobalId (templates reuse them) would take that model away.
        raise IfcError(
            f"{source.name}: its IfcBuilding GlobalId {model_guid} is that of {earlier[1]}, stored as building "
            f"{earlier[0]}, but this model lands in building {code}; pass --building-code {earlier[0]} to "
            "replace that model, or give the file's IfcBuilding a GlobalId of its own"
        )

    bim.upsert_model(
        conn,
        model_guid=model_guid,
        building_code=code,
        source_file=source.name,
        sha256=source.sha256,
        ifc_schema=source.schema,
        georeference=placement.params,
        element_count=len(prepared.rows),
        meshless_count=prepared.meshless,
        storey_count=len(prepared.storeys),
    )
    bim.stage_elements(conn, prepared.rows)
    foreign = bim.elements_of_other_models(conn, model_guid)
    if foreign:
        guid, other_building, other_model = foreign[0]
        raise IfcError(
            f"{source.name}: element {guid} already belongs to model {other_model} of building {other_building}; "
            "IFC GlobalIds must be unique across models"
        )
    counts = bim.merge_elements(conn, model_guid=model_guid, building_code=code, source_file=source.name, srid=srid)
    bim.merge_storeys(
        conn,
        model_guid=model_guid,
        building_code=code,
        storeys=[bim.StoreyRow(s.guid, s.name, round(s.elevation_m, 3), s.ordinal) for s in prepared.storeys],
    )
    if previous is not None and previous != code:
        bim.drop_building_made_by(conn, previous, model_guid)
    record_ingest_run(
        conn,
        layer="bim",
        source_file=str(source.path),
        sha256=source.sha256,
        started_at=started,
        counts={
            "read": len(prepared.rows),
            "inserted": counts.inserted,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "repaired": 0,
        },
        rejected=[],
    )
    return IfcReport(
        source=source.name,
        building_code=code,
        building=name or "unnamed",
        georeference=placement.method.replace("_", " "),
        elements=len(prepared.rows),
        meshless=prepared.meshless,
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        deleted=counts.deleted,
        storeys=[(s.name, round(s.elevation_m, 3)) for s in prepared.storeys],
        footprint_area_m2=prepared.footprint_area_m2,
        height_m=prepared.height_m,
        ground_elevation_m=prepared.ground_m,
    )


def _pg_message(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip().splitlines()[0]]
    if diag.constraint_name:
        parts.append(f"constraint {diag.constraint_name}")
    return "; ".join(parts)
