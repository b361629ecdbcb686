"""The feature collections the OGC API – Features serves, declared once: table, id, geometry, properties.

Everything SQL about a collection (table, columns, the fixed row filter, joins) comes from this whitelist;
request parameters only ever pick entries of it by name (``cim/store/features.py`` builds the SQL).

Decisions recorded here:
- **Admin units** are one table, served as four collections (districts, streets, communities, grids) by a
  fixed ``level`` filter.
- **Houses** have no geometry of their own: a house is served with the footprint of its building (a join on
  ``building_code``), so bbox and spatial filters find the houses of the buildings in an area.
- **Buildings through time**: without ``datetime`` the current buildings are served; with it, the versions
  valid at that instant (or overlapping that interval) come from the ``building_versions`` view (current
  table ∪ history, migration 0001). The feature id stays the building code; ``version``, ``valid_from`` and
  ``valid_to`` tell versions apart. Derived areas are computed from the footprint so both sources agree.
- **Events** live from ``reported_at`` until ``closed_at`` (open while unset), so ``datetime`` selects the
  cases open at that time. Collections without a temporal extent refuse ``datetime``.
- **Private data is not offered**: the complainant's contact (``events.reporter_contact``) is never served;
  provenance columns (source files) are left out too.
- ``attributes`` (free JSON) is served but not queryable or sortable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cim.model import (
    BUILDING_USES,
    DEVICE_STATUSES,
    EVENT_STATUSES,
    HEIGHT_SOURCES,
    PIPE_NETWORKS,
    PIPE_NODE_KINDS,
)

PropType = Literal["string", "number", "integer", "boolean", "date", "date-time", "object"]


@dataclass(frozen=True)
class Prop:
    """One property of a collection: its name, type, title and SQL (a column of ``t`` unless ``expr``)."""

    name: str
    type: PropType
    title: str
    expr: str | None = None
    """A fixed SQL expression over the row alias ``t`` (written here, never user text)."""
    enum: tuple[str, ...] = ()

    @property
    def sql(self) -> str:
        return self.expr or f"t.{self.name}"

    @property
    def queryable(self) -> bool:
        """Usable in filters and sortby (free JSON is not)."""
        return self.type != "object"


@dataclass(frozen=True)
class GeometryJoin:
    """The geometry of a collection whose rows have none: ``JOIN table g ON g.key = t.key``, ``g.column``."""

    table: str
    key: str
    column: str


@dataclass(frozen=True)
class Temporal:
    """A feature lives from ``start`` until ``end`` (exclusive; open while NULL or when there is no end)."""

    start: str
    end: str | None
    history_table: str | None = None
    """A relation with the same columns holding every version, used when ``datetime`` is given."""


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    description: str
    table: str
    id_column: str
    id_type: Literal["string", "integer"]
    geometry_column: str
    geometry_type: str
    """The GeoJSON geometry type of the features (for documentation and the queryables schema)."""
    properties: tuple[Prop, ...]
    level: str | None = None
    """For admin_units: the level this collection serves."""
    geometry_join: GeometryJoin | None = None
    temporal: Temporal | None = None
    nd_index: bool = False
    """The geometry's GiST index is n-dimensional (``&&&``), as for BIM meshes."""
    by_name: dict[str, Prop] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.properties})

    @property
    def geometry_sql(self) -> str:
        """SQL of the stored geometry (storage CRS)."""
        if self.geometry_join is not None:
            return f"g.{self.geometry_join.column}"
        return f"t.{self.geometry_column}"

    @property
    def id_sql(self) -> str:
        return f"t.{self.id_column}"

    def prop(self, name: str) -> Prop | None:
        return self.by_name.get(name)


def _s(name: str, title: str, enum: tuple[str, ...] = ()) -> Prop:
    return Prop(name, "string", title, enum=enum)


def _n(name: str, title: str, expr: str | None = None) -> Prop:
    return Prop(name, "number", title, expr)


def _i(name: str, title: str) -> Prop:
    return Prop(name, "integer", title)


def _t(name: str, title: str) -> Prop:
    return Prop(name, "date-time", title)


ATTRIBUTES = Prop("attributes", "object", "Further attributes from the source data (JSON)")
DISTRICT = _s("district_code", "District code (6 digits)")
STREET = _s("street_code", "Street code (9 digits)")
COMMUNITY = _s("community_code", "Community code (12 digits)")
GRID = _s("grid_code", "Grid code (14 digits)")
UNIT_CODES = (DISTRICT, STREET, COMMUNITY, GRID)
UPDATED = _t("updated_at", "When the row last changed")


def _admin(level: str, cid: str, title: str, description: str) -> Collection:
    props = (
        _s("code", "Unit code"),
        _s("name", "Name"),
        _s("parent_code", "Code of the containing unit"),
        *UNIT_CODES[: {"district": 1, "street": 2, "community": 3, "grid": 3}[level]],
        _n("area_m2", "Area (m²)"),
        ATTRIBUTES,
        UPDATED,
    )
    return Collection(
        id=cid,
        title=title,
        description=description,
        table="admin_units",
        id_column="code",
        id_type="string",
        geometry_column="geom",
        geometry_type="MultiPolygon",
        properties=props,
        level=level,
    )


COLLECTION_LIST: tuple[Collection, ...] = (
    _admin("district", "districts", "Districts (区)", "Administrative districts; code: 6 digits (GB/T 2260)."),
    _admin("street", "streets", "Streets (街道)", "Sub-district streets; code: 9 digits."),
    _admin("community", "communities", "Communities (社区)", "Communities; code: 12 digits."),
    _admin("grid", "grids", "Grids (网格)", "Management grids; code: 14 digits."),
    Collection(
        id="parcels",
        title="Land parcels (宗地)",
        description="Land parcels with their planning controls (FAR, height and coverage limits).",
        table="parcels",
        id_column="code",
        id_type="string",
        geometry_column="geom",
        geometry_type="MultiPolygon",
        properties=(
            _s("code", "Parcel code"),
            _s("name", "Name"),
            _s("land_use", "Land-use class"),
            _n("far_limit", "Floor-area ratio limit (容积率)"),
            _n("height_limit_m", "Height limit (m)"),
            _n("coverage_limit", "Building coverage limit (0–1)"),
            Prop("approved_at", "date", "Approval date"),
            _n("area_m2", "Area (m²)"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
    Collection(
        id="buildings",
        title="Buildings (楼栋)",
        description=(
            "Building footprints with heights; id: the 19-digit building code. Without datetime the current "
            "buildings; with datetime the versions valid then (demolished buildings included)."
        ),
        table="buildings",
        id_column="building_code",
        id_type="string",
        geometry_column="footprint",
        geometry_type="MultiPolygon",
        properties=(
            _s("building_code", "Building code (19 digits)"),
            _s("name", "Name"),
            _s("use", "Use", BUILDING_USES),
            _n("height_m", "Height above ground (m)"),
            _s("height_source", "Where the height comes from", HEIGHT_SOURCES),
            _i("storeys", "Number of storeys"),
            _n("ground_elevation_m", "Ground elevation (m, 1985 height datum)"),
            _n("footprint_area_m2", "Footprint area (m²)", "ST_Area(t.footprint)"),
            _n("floor_area_m2", "Floor area (m²): footprint × storeys", "ST_Area(t.footprint) * t.storeys"),
            *UNIT_CODES,
            _s("parcel_code", "Parcel the building stands on"),
            _i("version", "Version number (1 = as first loaded)"),
            _t("valid_from", "Start of this version's validity"),
            _t("valid_to", "End of this version's validity (null: current)"),
            ATTRIBUTES,
        ),
        temporal=Temporal("valid_from", "valid_to", history_table="building_versions"),
    ),
    Collection(
        id="houses",
        title="Houses (房屋)",
        description="Houses and rooms with their 25-digit codes; geometry: the footprint of their building.",
        table="houses",
        id_column="house_code",
        id_type="string",
        geometry_column="footprint",
        geometry_type="MultiPolygon",
        geometry_join=GeometryJoin("buildings", "building_code", "footprint"),
        properties=(
            _s("house_code", "House code (25 digits)"),
            _s("building_code", "Building code (19 digits)"),
            _i("storey", "Storey (negative: below ground)"),
            _n("area_m2", "Floor area (m²)"),
            _s("use", "Use"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
    Collection(
        id="bim_elements",
        title="BIM elements",
        description="Elements of imported IFC models; geometry: the element's triangles (a TIN) as polygons.",
        table="bim_elements",
        id_column="ifc_guid",
        id_type="string",
        geometry_column="mesh",
        geometry_type="GeometryCollection",
        nd_index=True,
        properties=(
            _s("ifc_guid", "IFC GlobalId"),
            _s("building_code", "Building code"),
            _s("model_guid", "GlobalId of the model"),
            _s("ifc_class", "IFC class"),
            _s("name", "Name"),
            _s("storey", "Storey name"),
            _n("storey_elevation_m", "Storey elevation (m)"),
            Prop("properties", "object", "IFC property sets (JSON)"),
            Prop("quantities", "object", "IFC quantity sets (JSON)"),
            DISTRICT,
            GRID,
            UPDATED,
        ),
    ),
    Collection(
        id="pipe_nodes",
        title="Pipe nodes",
        description="Manholes, valves, outfalls … of the underground networks; Z: ground (cover) elevation.",
        table="pipe_nodes",
        id_column="code",
        id_type="string",
        geometry_column="geom",
        geometry_type="Point",
        properties=(
            _s("code", "Node code"),
            _s("network", "Network", PIPE_NETWORKS),
            _s("kind", "Kind", PIPE_NODE_KINDS),
            _n("ground_elevation_m", "Ground elevation (m)"),
            _n("invert_elevation_m", "Invert elevation (m)"),
            _n("depth_m", "Depth (m)"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
    Collection(
        id="pipes",
        title="Pipes",
        description="Pipe segments of the underground networks; Z: invert elevation.",
        table="pipes",
        id_column="code",
        id_type="string",
        geometry_column="geom",
        geometry_type="LineString",
        properties=(
            _s("code", "Pipe code"),
            _s("network", "Network", PIPE_NETWORKS),
            _s("from_node", "Upstream node code"),
            _s("to_node", "Downstream node code"),
            _n("diameter_mm", "Diameter (mm)"),
            _s("material", "Material"),
            _n("start_invert_m", "Invert elevation at the start (m)"),
            _n("end_invert_m", "Invert elevation at the end (m)"),
            _i("built_year", "Year built"),
            _n("length_m", "Length (m)"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
    Collection(
        id="devices",
        title="IoT devices",
        description="Sensors and smart devices (manhole covers, water-level gauges, cameras …).",
        table="devices",
        id_column="code",
        id_type="string",
        geometry_column="geom",
        geometry_type="Point",
        properties=(
            _s("code", "Device code"),
            _s("kind", "Kind"),
            _s("name", "Name"),
            _s("status", "Status", DEVICE_STATUSES),
            Prop("installed_at", "date", "Installation date"),
            _s("pipe_node_code", "Pipe node it sits on"),
            _s("building_code", "Building it belongs to"),
            _s("parcel_code", "Parcel it lies on"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
    Collection(
        id="events",
        title="Events (民生诉求)",
        description=(
            "Citizen complaints and incidents; datetime selects the cases open at that time "
            "(reported_at until closed_at). The reporter's contact is never served."
        ),
        table="events",
        id_column="code",
        id_type="string",
        geometry_column="geom",
        geometry_type="Point",
        properties=(
            _s("code", "Event code"),
            _s("category", "Category"),
            _s("subcategory", "Subcategory"),
            _s("status", "Status", EVENT_STATUSES),
            _t("reported_at", "Reported"),
            _t("updated_at", "Last update"),
            _t("due_at", "Due"),
            _t("closed_at", "Closed"),
            _s("department", "Department handling it"),
            _i("reopen_count", "Times reopened"),
            _s("description", "Description"),
            _s("building_code", "Building concerned"),
            _s("parcel_code", "Parcel concerned"),
            *UNIT_CODES,
            ATTRIBUTES,
        ),
        temporal=Temporal("reported_at", "closed_at"),
    ),
    Collection(
        id="roads",
        title="Roads",
        description="Walkable road network (from OpenStreetMap): one edge per way piece between two vertices.",
        table="roads",
        id_column="id",
        id_type="integer",
        geometry_column="geom",
        geometry_type="LineString",
        properties=(
            _i("id", "Edge id (OSM way id × 10000 + piece)"),
            _i("osm_way_id", "OSM way id"),
            _i("source", "Start vertex"),
            _i("target", "End vertex"),
            _s("highway", "OSM highway class"),
            _s("name", "Name"),
            _n("length_m", "Length (m)"),
            _n("cost", "Walking seconds along (-1: not walkable)"),
            _n("reverse_cost", "Walking seconds against (-1: not walkable)"),
            _i("oneway_car", "One-way for cars (-1, 0, 1)"),
            _i("oneway_foot", "One-way on foot (-1, 0, 1)"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
    Collection(
        id="pois",
        title="Points of interest",
        description="Services and devices from OpenStreetMap (charging piles, service halls, clinics, …).",
        table="pois",
        id_column="osm_id",
        id_type="string",
        geometry_column="geom",
        geometry_type="Point",
        properties=(
            _s("osm_id", "OSM id (n/w/r + number)"),
            _s("kind", "Kind"),
            _s("name", "Name"),
            _s("building_code", "Building containing it"),
            *UNIT_CODES,
            ATTRIBUTES,
            UPDATED,
        ),
    ),
)

COLLECTIONS: dict[str, Collection] = {c.id: c for c in COLLECTION_LIST}
