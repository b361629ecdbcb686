"""Response models of the CIM answers, proximity and change endpoints: they document the JSON that PostgreSQL
builds (the handlers pass that JSON through unparsed), so the OpenAPI document says exactly what comes back.
``tests/test_api_answers.py`` validates real answers against these models."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.ogc_schemas import error

# ---- shared -----------------------------------------------------------------------------------------------


# The error contract's schema ("Exception", api.ogc_schemas) is shared with the OGC endpoints. Errors are
# application/json also on routes whose answers are GeoJSON.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error("A parameter is malformed or out of range; `parameter` names it"),
    404: error("No such object (parcel, building or unit)"),
    503: error("The query exceeded the statement timeout; retry after Retry-After seconds"),
}

GEOJSON_MEDIA_TYPE = "application/geo+json"


class GeoJSONResponse(JSONResponse):
    """JSON served as GeoJSON; as a route's response_class it files the documented schema under that type."""

    media_type = GEOJSON_MEDIA_TYPE


class Geometry(BaseModel):
    """A GeoJSON geometry in CRS84 (lon, lat[, z])."""

    type: str
    coordinates: list[Any]


class Feature(BaseModel):
    type: Literal["Feature"]
    id: str
    geometry: Geometry
    properties: dict[str, Any]


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"]
    features: list[Feature]


# The parcel GeoJSON is a second media type of GET /parcels/{code}/contents. FastAPI only puts a route's own
# models into components, so this schema is written inline (no $ref) to stay self-contained.
FEATURE_COLLECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "id", "geometry", "properties"],
                "properties": {
                    "type": {"type": "string", "enum": ["Feature"]},
                    "id": {"type": "string"},
                    "geometry": {
                        "type": "object",
                        "required": ["type", "coordinates"],
                        "properties": {"type": {"type": "string"}, "coordinates": {"type": "array"}},
                    },
                    "properties": {
                        "type": "object",
                        "required": ["layer"],
                        "properties": {
                            "layer": {"type": "string", "enum": ["parcel", "building", "pipe", "device", "event"]}
                        },
                    },
                },
            },
        },
    },
}


class CodeName(BaseModel):
    code: str
    name: str | None


# ---- parcel contents and compliance --------------------------------------------------------------------


class LimitCheck(BaseModel):
    limit: float | None = Field(description="The parcel's planning limit (null: the parcel sets none)")
    achieved: float | None = Field(description="What is built (null for height when nothing is built)")
    exceeded: bool


class Violation(BaseModel):
    limit: Literal["far", "coverage", "height_m"]
    limit_value: float
    achieved: float
    excess: float = Field(description="achieved − limit, in the limit's unit")
    excess_ratio: float = Field(description="excess / limit")
    buildings: list[str] = Field(description="For height: the buildings above the limit, tallest first")


class Compliance(BaseModel):
    """Land post-approval supervision: what is built on the parcel against its planning controls."""

    parcel_code: str
    parcel_area_m2: float
    building_count: int
    floor_area_m2: float
    footprint_area_m2: float
    far: LimitCheck = Field(description="Floor-area ratio (容积率): floor area / parcel area")
    coverage: LimitCheck = Field(description="Building coverage: footprint area / parcel area")
    height_m: LimitCheck = Field(description="Height limit (限高) against the tallest building")
    violations: list[Violation]


class ParcelLimits(BaseModel):
    far: float | None
    height_m: float | None
    coverage: float | None


class ParcelInfo(BaseModel):
    code: str
    name: str | None
    land_use: str
    area_m2: float
    approved_at: date | None
    district_code: str
    street_code: str
    community_code: str
    grid_code: str
    limits: ParcelLimits


class ParcelBuilding(BaseModel):
    code: str
    name: str | None
    use: str
    height_m: float
    storeys: int
    footprint_area_m2: float
    floor_area_m2: float
    over_height_limit: bool


class ParcelBuildings(BaseModel):
    count: int
    floor_area_m2: float
    footprint_area_m2: float
    items: list[ParcelBuilding]


class NetworkLength(BaseModel):
    count: int
    length_m: float


class ParcelPipes(BaseModel):
    count: int = Field(description="Pipes with some length inside the parcel")
    length_m: float = Field(description="2D length inside the parcel (clipped), metres")
    by_network: dict[str, NetworkLength]


class KindCounts(BaseModel):
    count: int
    by_kind: dict[str, int]


class CategoryCounts(BaseModel):
    count: int
    by_category: dict[str, int]


class ParcelContents(BaseModel):
    parcel: ParcelInfo
    buildings: ParcelBuildings
    compliance: Compliance
    pipes: ParcelPipes
    devices: KindCounts
    open_events: CategoryCounts = Field(description="Events not yet closed or rejected, by category")


# ---- units ------------------------------------------------------------------------------------------------


class OpenClosed(BaseModel):
    open: int
    closed: int = Field(description="Finished: closed or rejected")


class EventStats(BaseModel):
    open: int
    closed: int
    by_category: dict[str, OpenClosed]


class UnitStats(BaseModel):
    buildings: int
    floor_area_m2: float
    houses: int
    devices: KindCounts
    events: EventStats


class UnitChild(BaseModel):
    code: str
    name: str
    stats: UnitStats


class GridBuilding(BaseModel):
    code: str
    name: str | None
    use: str
    storeys: int
    floor_area_m2: float
    houses: int


class GridBuildingPage(BaseModel):
    count: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page (null on the last page)")
    items: list[GridBuilding]


UnitLevel = Literal["district", "street", "community", "grid"]


class UnitSummary(BaseModel):
    code: str
    level: UnitLevel
    name: str
    area_m2: float
    parent: CodeName | None
    stats: UnitStats = Field(description="Rolled up over everything in the unit")
    children_level: Literal["street", "community", "grid", "building"]
    children: list[UnitChild] = Field(description="Child units with their figures (empty for a grid)")
    buildings: GridBuildingPage | None = Field(description="A grid's buildings, paged (null for other levels)")


# ---- buildings --------------------------------------------------------------------------------------------


class House(BaseModel):
    code: str
    storey: int
    area_m2: float
    use: str | None


class HousePage(BaseModel):
    count: int
    area_m2: float
    limit: int
    offset: int
    next_offset: int | None = Field(description="houses_offset of the next page (null on the last page)")
    items: list[House]


class BimModel(BaseModel):
    model_guid: str
    source_file: str
    ifc_schema: str
    element_count: int
    storey_count: int
    updated_at: datetime


class BimStorey(BaseModel):
    model_guid: str
    ifc_guid: str
    name: str | None
    elevation_m: float
    ordinal: int


class BimSummary(BaseModel):
    models: list[BimModel]
    element_count: int
    elements_by_class: dict[str, int]
    storeys: list[BimStorey]


class BuildingDevice(BaseModel):
    code: str
    kind: str
    name: str | None
    status: str


class BuildingDevices(BaseModel):
    count: int
    by_kind: dict[str, int]
    items: list[BuildingDevice]


class EventItem(BaseModel):
    code: str
    category: str
    subcategory: str | None
    status: str
    reported_at: datetime


class BuildingEvents(BaseModel):
    open: int
    closed: int
    by_category: dict[str, OpenClosed]
    open_items: list[EventItem] = Field(description="Open events, newest first (at most 100)")


class BuildingProfile(BaseModel):
    code: str
    name: str | None
    use: str
    height_m: float
    height_source: str
    storeys: int
    ground_elevation_m: float
    footprint_area_m2: float
    floor_area_m2: float
    district_code: str
    street_code: str
    community_code: str
    grid_code: str
    parcel_code: str | None
    attributes: dict[str, Any]
    version: int
    valid_from: datetime
    geometry: Geometry
    houses: HousePage
    bim: BimSummary
    devices: BuildingDevices
    events: BuildingEvents
    over_height_limit: bool = Field(description="Taller than its parcel's height limit")
    compliance: Compliance | None = Field(description="Its parcel's compliance (null when on no parcel)")


# ---- locate -----------------------------------------------------------------------------------------------


class StoragePoint(BaseModel):
    x: float
    y: float
    srid: int


class ParcelRef(BaseModel):
    code: str
    name: str | None
    land_use: str


class BuildingRef(BaseModel):
    code: str
    name: str | None
    use: str
    height_m: float


class LocateAnswer(BaseModel):
    point: StoragePoint = Field(description="The point in the storage CRS")
    district: CodeName | None
    street: CodeName | None
    community: CodeName | None
    grid: CodeName | None
    parcel: ParcelRef | None
    building: BuildingRef | None


# ---- proximity and changes ------------------------------------------------------------------------------


class ProximityCollection(FeatureCollection):
    numberMatched: int = Field(description="All features matching (within: inside the radius)")
    numberReturned: int


class ChangeCounts(BaseModel):
    added: int
    altered: int
    demolished: int


class ChangeCollection(FeatureCollection):
    start: date = Field(alias="from")
    end: date = Field(alias="to")
    unit: str | None
    counts: ChangeCounts
