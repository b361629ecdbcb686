"""``cim ingest osm PATH.osm.pbf``: buildings, a walkable road network and service/device POIs from
OpenStreetMap, in ONE transaction.

The file is read once with pyosmium (multipolygons assembled by libosmium); pyosmium hands each object to
Python, and that reading loop is the only per-object work: tags become columns, and heights, topology,
lengths and reprojection are numpy/shapely over all features at once.

Decisions:

- **Where features go.** Every feature is placed in the grid containing it (a building's or an area's
  interior point, a road vertex, a road edge's midpoint), so the database needs grids first: the city's own,
  or a management grid from ``cim admin grid --from PATH.osm.pbf``. OSM extracts always spill over the area a
  city manages, so features outside every grid are **skipped and counted, not an error** (allow-rejects
  semantics). So are features an extract cuts (a building whose nodes or member ways are missing, a way that
  is not closed) and features the ordinary checks reject (a footprint too small or beyond repair): OSM is
  crowd-sourced, one odd polygon must not stop the load. The report lists every skipped feature with its OSM
  id and reason; a file that cannot be read, or a database without grids, is an error (nothing written).
- **Buildings** are ways and multipolygon relations with a ``building`` tag (not ``building=no``; building
  parts are not buildings). Each OSM object is one building: ``source_id`` is ``w123``/``r456`` and
  ``source_file`` the file's name, so loading the extract again keeps every code and changes nothing. They go
  through the ordinary building preparation and merge (code = next free number in the grid). All OSM tags are
  kept in ``attributes.osm``. OSM has no ground elevations: ``ground_elevation_m`` is 0.
- **Height**, in this order: ``height`` (metres; ``12``, ``12.5 m``, ``12,5``, ``40 ft``, ``40'6"`` are
  understood) → ``height_source='osm_height'``; else ``building:levels`` × ``CIM_STOREY_HEIGHT_M`` →
  ``osm_levels``; else the default below → ``default``. A height outside (0, 1000) m or a level count outside
  (0, 300) is ignored. Storeys: ``building:levels`` rounded up (2.5 levels = 3 storeys, the half is an attic),
  else height / storey height rounded (at least 1).
- **Use** from the ``building`` value (``USE_BY_BUILDING``); for ``yes`` and unknown values, from ``amenity``,
  ``shop``, ``office`` or ``tourism`` (``USE_BY_AMENITY``), else ``other``.
- **Default heights** (m) by use: residential 12, commercial 8, office 15, industrial 8, public 12,
  education 12, healthcare 15, mixed 12, other 6; small structures by their ``building`` value: kiosk, shed,
  garage, garages, carport, hut, toilets, service, bunker 3; roof 4 (a canopy), cabin, pavilion 4; house,
  detached, semidetached_house, bungalow 7; terrace 9.
- **Roads** are the ``highway`` ways usable on foot (``WALKABLE_HIGHWAYS``; motorways and trunk roads only with
  ``foot=yes``/``designated``/``permissive``; ``foot=no``/``private``/``use_sidepath``, or
  ``access=no``/``private`` without such a ``foot`` tag, exclude a way). The network splits every way at the
  nodes where ways meet (a node used twice) and at its ends; a way cut by the extract keeps its pieces between
  nodes the file has. Edges: ``length_m`` on the WGS84 ellipsoid (ground distance; the projection's grid
  metres differ by the scale factor), walking time ``cost`` = length / (5 km/h × a factor: steps 0.5, elevator
  and corridor 1, others 1), ``reverse_cost`` the same unless the way is one-way for pedestrians
  (``oneway:foot``, ``conveying``, or ``oneway`` on footways, paths, steps and other pedestrian ways; ``oneway``
  on carriageways binds vehicles only, recorded in ``oneway_car``); -1 marks the forbidden direction.
- **POIs**: nodes, closed ways and multipolygons whose tags name a device or public-service kind
  (``POI_KINDS``, first match wins): amenity=charging_station → charging_pile, man_made=surveillance →
  camera, emergency=fire_hydrant → hydrant, man_made=monitoring_station → water_level / rain_gauge /
  air_quality / monitoring_station (by its ``monitoring:*`` tags), amenity=townhall, office=government,
  any ``government=*`` → government_service, amenity=police → police, amenity=fire_station → fire_station,
  amenity=hospital → hospital, amenity=clinic/doctors → clinic, amenity=pharmacy → pharmacy,
  amenity=school → school, amenity=kindergarten → kindergarten, amenity=library → library,
  amenity=community_centre → community_centre, amenity=social_facility → social_facility,
  amenity=post_office → post_office, amenity=toilets → public_toilet, emergency=defibrillator →
  defibrillator. An area's point is a point on its surface.
"""

from __future__ import annotations

import contextlib
import json
import re
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import osmium
import pandas as pd
import psycopg
import shapely
from osmium.filter import KeyFilter
from pyproj import Geod

from cim import codes
from cim.crs import CRS84, transformer
from cim.db import transaction
from cim.model import BUILDING_USES
from cim.settings import Settings, get_settings
from cim.store import osm as store
from cim.store.catalog import record_ingest_run
from cim.store.merge import MergeOptions, merge_buildings
from cim.store.staging import copy_into_stage, create_stage
from ingest.errors import IngestError
from ingest.file_catalog import file_sha256
from ingest.layers import prepare_buildings
from ingest.prepare import Checker, Prepared

# ---- vocabularies (see the module docstring) ---------------------------------------------------------
USE_BY_BUILDING: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "apartments",
            "residential",
            "house",
            "detached",
            "semidetached_house",
            "terrace",
            "dormitory",
            "bungalow",
            "cabin",
            "farm",
            "houseboat",
            "static_caravan",
        ),
        "residential",
    ),
    **dict.fromkeys(("commercial", "retail", "kiosk", "supermarket", "hotel", "shop", "mall"), "commercial"),
    "office": "office",
    **dict.fromkeys(("industrial", "warehouse", "factory", "manufacture", "hangar", "storage_tank"), "industrial"),
    **dict.fromkeys(
        (
            "public",
            "civic",
            "government",
            "townhall",
            "church",
            "chapel",
            "cathedral",
            "mosque",
            "temple",
            "synagogue",
            "shrine",
            "monastery",
            "religious",
            "train_station",
            "transportation",
            "museum",
            "fire_station",
            "police",
            "library",
            "stadium",
            "sports_hall",
            "sports_centre",
        ),
        "public",
    ),
    **dict.fromkeys(("school", "university", "college", "kindergarten"), "education"),
    **dict.fromkeys(("hospital", "clinic"), "healthcare"),
}
USE_BY_AMENITY: Mapping[str, str] = {
    **dict.fromkeys(("school", "university", "college", "kindergarten"), "education"),
    **dict.fromkeys(("hospital", "clinic", "doctors"), "healthcare"),
    **dict.fromkeys(
        (
            "townhall",
            "courthouse",
            "police",
            "fire_station",
            "library",
            "place_of_worship",
            "community_centre",
            "theatre",
            "arts_centre",
        ),
        "public",
    ),
}
DEFAULT_HEIGHT_M: Mapping[str, float] = {
    "residential": 12.0,
    "commercial": 8.0,
    "office": 15.0,
    "industrial": 8.0,
    "public": 12.0,
    "education": 12.0,
    "healthcare": 15.0,
    "mixed": 12.0,
    "other": 6.0,
}
DEFAULT_HEIGHT_BY_BUILDING: Mapping[str, float] = {
    **dict.fromkeys(
        ("kiosk", "shed", "garage", "garages", "carport", "hut", "toilets", "service", "bunker"),
        3.0,
    ),
    **dict.fromkeys(("roof", "cabin", "pavilion"), 4.0),
    **dict.fromkeys(("house", "detached", "semidetached_house", "bungalow"), 7.0),
    "terrace": 9.0,
}

WALKABLE_HIGHWAYS = frozenset(
    {
        "footway",
        "pedestrian",
        "path",
        "trail",  # not a standard value, found in older extracts: a path
        "steps",
        "corridor",
        "platform",
        "elevator",
        "crossing",
        "living_street",
        "residential",
        "service",
        "unclassified",
        "road",
        "track",
        "bridleway",
        "cycleway",
        "tertiary",
        "tertiary_link",
        "secondary",
        "secondary_link",
        "primary",
        "primary_link",
    }
)
WALKABLE_IF_FOOT_ALLOWED = frozenset({"motorway", "motorway_link", "trunk", "trunk_link"})
PEDESTRIAN_HIGHWAYS = frozenset(
    {"footway", "pedestrian", "path", "trail", "steps", "corridor", "platform", "elevator", "crossing", "bridleway"}
)
FOOT_ALLOWED = frozenset({"yes", "designated", "permissive", "official"})
FOOT_FORBIDDEN = frozenset({"no", "private", "use_sidepath"})
WALK_SPEED_M_S = 5000.0 / 3600.0
SPEED_FACTOR: Mapping[str, float] = {"steps": 0.5}

POI_KEYS = ("amenity", "man_made", "emergency", "office", "government")
POI_KINDS: tuple[tuple[str, str, str], ...] = (
    ("amenity", "charging_station", "charging_pile"),
    ("man_made", "surveillance", "camera"),
    ("emergency", "fire_hydrant", "hydrant"),
    ("man_made", "monitoring_station", "monitoring_station"),
    ("amenity", "townhall", "government_service"),
    ("office", "government", "government_service"),
    ("government", "*", "government_service"),
    ("amenity", "police", "police"),
    ("amenity", "fire_station", "fire_station"),
    ("amenity", "hospital", "hospital"),
    ("amenity", "clinic", "clinic"),
    ("amenity", "doctors", "clinic"),
    ("amenity", "pharmacy", "pharmacy"),
    ("amenity", "school", "school"),
    ("amenity", "kindergarten", "kindergarten"),
    ("amenity", "library", "library"),
    ("amenity", "community_centre", "community_centre"),
    ("amenity", "social_facility", "social_facility"),
    ("amenity", "post_office", "post_office"),
    ("amenity", "toilets", "public_toilet"),
    ("emergency", "defibrillator", "defibrillator"),
)
MONITORING_KINDS = (
    ("monitoring:water_level", "water_level"),
    ("monitoring:precipitation", "rain_gauge"),
    ("monitoring:rain", "rain_gauge"),
    ("monitoring:air_quality", "air_quality"),
)

_UNDEFINED = 2**31 - 1  # libosmium's undefined coordinate (a node the extract does not have)
_MAX_PIECES = 10_000  # road edge id = way id * 10000 + piece number
_GEOD = Geod(ellps="WGS84")
_HEIGHT_RE = re.compile(
    r"^\s*(?P<num>[0-9]+(?:[.,][0-9]+)?)\s*(?P<unit>m|meters?|metres?|ft|feet|')?\s*$"
    r"|^\s*(?P<feet>[0-9]+)\s*'\s*(?P<inches>[0-9]+(?:\.[0-9]+)?)\s*\"\s*$",
    re.IGNORECASE,
)


class OsmError(IngestError):
    """The OSM file cannot be used (unreadable, no grids to place it in); nothing was written."""


# ---- reading -------------------------------------------------------------------------------------------
@dataclass
class OsmExtract:
    """What one pass over the file found, still in lon/lat (CRS84)."""

    building_ids: list[str] = field(default_factory=list)
    building_tags: list[dict[str, str]] = field(default_factory=list)
    building_wkb: list[bytes] = field(default_factory=list)
    building_found: dict[str, str] = field(default_factory=dict)
    """Every building way/relation → why it would not become a footprint (``""`` when it can)."""
    way_ids: list[int] = field(default_factory=list)
    way_tags: list[dict[str, str]] = field(default_factory=list)
    # Flat node lists of the walkable ways, as compact int64 arrays (8 bytes a node, numpy views them).
    way_node_count: array[int] = field(default_factory=lambda: array("q"))
    node_refs: array[int] = field(default_factory=lambda: array("q"))
    node_x: array[int] = field(default_factory=lambda: array("q"))
    node_y: array[int] = field(default_factory=lambda: array("q"))
    poi_ids: list[str] = field(default_factory=list)
    poi_kinds: list[str] = field(default_factory=list)
    poi_tags: list[dict[str, str]] = field(default_factory=list)
    poi_wkb: list[bytes] = field(default_factory=list)
    highway_ways: int = 0


def walkable(tags: Mapping[str, str]) -> bool:
    """Whether a ``highway`` way is usable on foot (the rule in the module docstring)."""
    highway = tags.get("highway", "")
    foot = tags.get("foot", "")
    if foot in FOOT_FORBIDDEN:
        return False
    if highway in WALKABLE_IF_FOOT_ALLOWED:
        return foot in FOOT_ALLOWED
    if highway not in WALKABLE_HIGHWAYS or (tags.get("area") == "yes" and highway not in PEDESTRIAN_HIGHWAYS):
        return False
    return not (tags.get("access") in ("no", "private") and foot not in FOOT_ALLOWED)


def _direction(value: str | None) -> int:
    return {"yes": 1, "true": 1, "1": 1, "forward": 1, "-1": -1, "reverse": -1, "backward": -1}.get(value or "", 0)


def foot_direction(tags: Mapping[str, str]) -> int:
    """1: walkable only along the drawing direction, -1: only against it, 0: both ways."""
    if "oneway:foot" in tags:
        return _direction(tags["oneway:foot"])
    if tags.get("conveying") in ("forward", "backward"):
        return _direction(tags["conveying"])
    if tags.get("highway") in PEDESTRIAN_HIGHWAYS:
        return _direction(tags.get("oneway"))
    return 0


def car_direction(tags: Mapping[str, str]) -> int:
    """The vehicles' one-way rule of the way (informational: the stored costs are walking times)."""
    if "oneway" in tags:
        return _direction(tags["oneway"])
    if tags.get("junction") in ("roundabout", "circular") or tags.get("highway") in ("motorway", "motorway_link"):
        return 1
    return 0


def poi_kind(tags: Mapping[str, str]) -> str | None:
    """The device or service kind an object's tags name (``POI_KINDS``, first match), or None."""
    for key, value, kind in POI_KINDS:
        tag = tags.get(key)
        if tag is None or (value != "*" and tag != value):
            continue
        if kind == "monitoring_station":
            for mkey, mkind in MONITORING_KINDS:
                if tags.get(mkey) == "yes":
                    return mkind
        return kind
    return None


def read_extract(path: Path) -> OsmExtract:
    """One pass over an OSM file (PBF, XML, …). Raises OsmError when it cannot be read."""
    if not path.exists():
        raise OsmError(f"{path}: no such file")
    if not path.is_file():
        raise OsmError(f"{path}: not a file")
    out = OsmExtract()
    wkb = osmium.geom.WKBFactory()
    # Areas of multipolygons may come before their relation: collect both, match them at the end.
    areas: dict[str, tuple[dict[str, str], bytes]] = {}
    try:
        processor = (
            osmium.FileProcessor(str(path)).with_areas().with_filter(KeyFilter("building", "highway", *POI_KEYS))
        )
        for obj in processor:
            tags = dict(obj.tags)
            building = tags.get("building", "no") != "no"
            if isinstance(obj, osmium.osm.Node):
                _read_poi(out, f"n{obj.id}", tags, partial(wkb.create_point, obj.location))
            elif isinstance(obj, osmium.osm.Way):
                if building:
                    nodes = obj.nodes
                    closed = len(nodes) >= 4 and nodes[0].ref == nodes[-1].ref
                    missing = any(not n.location.valid() for n in nodes)
                    out.building_found[f"w{obj.id}"] = (
                        "the way is not closed"
                        if not closed
                        else "nodes are missing from the extract (cut at its edge)"
                        if missing
                        else "its ring is not a valid area"
                    )
                if "highway" in tags:
                    out.highway_ways += 1
                    if walkable(tags):
                        _read_way(out, obj, tags)
            elif isinstance(obj, osmium.osm.Relation):
                if building:
                    out.building_found[f"r{obj.id}"] = (
                        "member ways are missing from the extract or do not close"
                        if tags.get("type") == "multipolygon"
                        else f"a relation of type {tags.get('type')!r} is not an area"
                    )
            elif isinstance(obj, osmium.osm.Area):
                osm_id = ("w" if obj.from_way() else "r") + str(obj.orig_id())
                if building:
                    with contextlib.suppress(RuntimeError):  # else it stays "not a valid area"
                        areas[osm_id] = (tags, bytes.fromhex(wkb.create_multipolygon(obj)))
                _read_poi(out, osm_id, tags, partial(wkb.create_multipolygon, obj))
    except RuntimeError as exc:
        raise OsmError(f"{path}: cannot be read as OpenStreetMap data ({exc})") from exc
    for osm_id in out.building_found:
        if osm_id in areas:
            out.building_found[osm_id] = ""
            out.building_ids.append(osm_id)
            out.building_tags.append(areas[osm_id][0])
            out.building_wkb.append(areas[osm_id][1])
    return out


def _read_poi(out: OsmExtract, osm_id: str, tags: dict[str, str], geometry: Callable[[], str]) -> None:
    """Keep the object as a POI when its tags name a kind; ``geometry`` makes its hex WKB (now, while the
    object is alive: pyosmium objects die when the loop moves on)."""
    if not any(k in tags for k in POI_KEYS):
        return
    kind = poi_kind(tags)
    if kind is None:
        return
    try:
        hex_wkb = geometry()
    except RuntimeError:
        return  # an area libosmium could not build: no point for it
    out.poi_ids.append(osm_id)
    out.poi_kinds.append(kind)
    out.poi_tags.append(tags)
    out.poi_wkb.append(bytes.fromhex(hex_wkb))


def _read_way(out: OsmExtract, way: osmium.osm.Way, tags: dict[str, str]) -> None:
    nodes = way.nodes
    out.way_ids.append(way.id)
    out.way_tags.append(tags)
    out.way_node_count.append(len(nodes))
    # The reader's per-node loop: pyosmium gives no array view of a way's node list.
    out.node_refs.extend(n.ref for n in nodes)
    out.node_x.extend(n.x for n in nodes)
    out.node_y.extend(n.y for n in nodes)


# ---- buildings -----------------------------------------------------------------------------------------
def parse_heights(values: pd.Series) -> pd.Series:
    """OSM ``height`` texts → metres (NaN when missing, unparsable, or outside (0, 1000))."""
    text = values.astype("string").str.strip()
    parts = text.str.extract(_HEIGHT_RE)
    number = pd.to_numeric(parts["num"].str.replace(",", ".", regex=False), errors="coerce")
    unit = parts["unit"].str.lower()
    in_feet = unit.isin(["ft", "feet", "'"]).fillna(False).astype(bool)
    metres = number.where(~in_feet, number * 0.3048)
    feet = (
        pd.to_numeric(parts["feet"], errors="coerce") * 0.3048
        + pd.to_numeric(parts["inches"], errors="coerce") * 0.0254
    )
    metres = metres.fillna(feet).astype(float)
    return metres.where((metres > 0) & (metres < 1000))


def building_attributes(tags: list[dict[str, str]], storey_height_m: float) -> pd.DataFrame:
    """Use, height, height source and storeys of each building from its tags (vectorised over buildings)."""
    frame = pd.DataFrame.from_records(
        [
            {k: t.get(k) for k in ("building", "height", "building:levels", "amenity", "shop", "office", "tourism")}
            for t in tags
        ],
        columns=["building", "height", "building:levels", "amenity", "shop", "office", "tourism"],
    )
    kind = frame["building"].fillna("yes").str.strip().str.lower()
    use = kind.map(USE_BY_BUILDING)
    by_amenity = frame["amenity"].map(USE_BY_AMENITY)
    by_amenity = by_amenity.fillna(frame["shop"].notna().map({True: "commercial"}))
    by_amenity = by_amenity.fillna(frame["office"].notna().map({True: "office"}))
    by_amenity = by_amenity.fillna((frame["tourism"] == "hotel").map({True: "commercial"}))
    use = use.fillna(by_amenity).fillna("other")
    assert set(use) <= set(BUILDING_USES)

    height = parse_heights(frame["height"])
    levels = pd.to_numeric(
        frame["building:levels"].astype("string").str.replace(",", ".", regex=False), errors="coerce"
    ).astype(float)
    levels = levels.where((levels > 0) & (levels < 300))
    default = kind.map(DEFAULT_HEIGHT_BY_BUILDING).fillna(use.map(DEFAULT_HEIGHT_M)).astype(float)

    source = np.where(height.notna(), "osm_height", np.where(levels.notna(), "osm_levels", "default"))
    height_m = height.fillna(levels * storey_height_m).fillna(default)
    level_count = levels.to_numpy(dtype=float)
    from_height = np.maximum(1.0, np.round(height_m.to_numpy(dtype=float) / storey_height_m))
    storeys = np.where(np.isnan(level_count), from_height, np.ceil(level_count)).clip(1, 299).astype(int)
    return pd.DataFrame(
        {"use": use, "height_m": height_m.round(3), "height_source": source, "storeys": storeys}, index=frame.index
    )


def _to_storage(geoms: npt.NDArray[np.object_], srid: int) -> npt.NDArray[np.object_]:
    """CRS84 shapely geometries → the storage CRS (one vectorised PROJ call over every coordinate)."""
    t = transformer(CRS84, f"EPSG:{srid}")

    def project(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geoms, project), dtype=object)


def prepare_osm_buildings(extract: OsmExtract, settings: Settings, source_file: str) -> Prepared:
    """The buildings stage frame through the ordinary building checks; row ``i`` is ``building_ids[i-1]``."""
    ids = extract.building_ids
    attrs = building_attributes(extract.building_tags, settings.storey_height_m)
    geoms = _to_storage(np.asarray(shapely.from_wkb(extract.building_wkb), dtype=object), settings.storage_srid)
    frame = gpd.GeoDataFrame(
        {
            "name": [t.get("name") for t in extract.building_tags],
            **{c: attrs[c].to_numpy() for c in attrs.columns},
            "source_id": ids,
            "osm": pd.Series(extract.building_tags, dtype=object),
        },
        geometry=geoms,
        crs=settings.storage_srid,
    )
    return prepare_buildings(Checker(frame, f"{source_file} buildings"), settings.storage_srid, source_file)


# ---- road network --------------------------------------------------------------------------------------
@dataclass
class Network:
    """Edges and vertices ready to stage, in the storage CRS."""

    edges: pd.DataFrame
    vertices: pd.DataFrame
    dropped_zero_length: int = 0


def build_network(extract: OsmExtract, srid: int, source_file: str) -> Network:
    """Split the walkable ways into edges between vertices (vectorised; see the module docstring)."""
    counts = np.frombuffer(extract.way_node_count, dtype=np.int64)
    way_of = np.repeat(np.arange(len(counts)), counts)
    refs = np.frombuffer(extract.node_refs, dtype=np.int64)
    xi = np.frombuffer(extract.node_x, dtype=np.int64)
    yi = np.frombuffer(extract.node_y, dtype=np.int64)
    empty = Network(
        pd.DataFrame(columns=[c for c, _ in store.STAGES[store.ROAD_STAGE]]),
        pd.DataFrame(columns=[c for c, _ in store.STAGES[store.VERTEX_STAGE]]),
    )
    if refs.size == 0:
        return empty

    # Runs: the pieces of each way made of nodes the extract has (a missing node breaks the way).
    valid = (xi != _UNDEFINED) & (yi != _UNDEFINED)
    new_way = np.r_[True, way_of[1:] != way_of[:-1]]
    run_start = (new_way | np.r_[False, ~valid[:-1]])[valid]
    way_of, refs, xi, yi = way_of[valid], refs[valid], xi[valid], yi[valid]
    run = np.cumsum(run_start) - 1
    repeat = np.r_[False, (refs[1:] == refs[:-1]) & (run[1:] == run[:-1])]  # a node drawn twice in a row
    keep = ~repeat
    way_of, refs, xi, yi, run = way_of[keep], refs[keep], xi[keep], yi[keep], run[keep]
    long_enough = np.bincount(run)[run] >= 2
    way_of, refs, xi, yi, run = (
        way_of[long_enough],
        refs[long_enough],
        xi[long_enough],
        yi[long_enough],
        run[long_enough],
    )
    if refs.size == 0:
        return empty

    # Vertices: run ends and nodes used more than once; an edge runs from one vertex to the next.
    first = np.r_[True, run[1:] != run[:-1]]
    last = np.r_[run[1:] != run[:-1], True]
    _, inverse, used = np.unique(refs, return_inverse=True, return_counts=True)
    vertex = first | last | (used[inverse] >= 2)
    starts = vertex & ~last
    edge_at = np.cumsum(starts) - 1
    inner_vertex = vertex & ~first & ~last
    pos = np.repeat(np.arange(refs.size), 1 + inner_vertex)  # inner vertices end one edge and start the next
    first_copy = np.r_[True, pos[1:] != pos[:-1]]
    edge = edge_at[pos] - (inner_vertex[pos] & first_copy)
    lon, lat = xi[pos] * 1e-7, yi[pos] * 1e-7
    n_edges = int(edge[-1]) + 1
    head = np.r_[True, edge[1:] != edge[:-1]]
    tail = np.r_[edge[1:] != edge[:-1], True]

    # Ground length of each edge (geodesic), zero-length edges dropped.
    _, _, seg = _GEOD.inv(lon[:-1], lat[:-1], lon[1:], lat[1:])
    same = edge[1:] == edge[:-1]
    length = np.bincount(edge[:-1][same], weights=np.asarray(seg)[same], minlength=n_edges)
    ok_edge = length > 0

    edge_way = way_of[pos][head]
    new_way_edge = np.r_[True, edge_way[1:] != edge_way[:-1]]
    seq = np.arange(n_edges) - np.maximum.accumulate(np.where(new_way_edge, np.arange(n_edges), 0))
    way_ids = np.asarray(extract.way_ids, dtype=np.int64)
    if seq.max() >= _MAX_PIECES:
        worst = int(way_ids[edge_way[int(np.argmax(seq))]])
        raise OsmError(f"{source_file}: way w{worst} has more than {_MAX_PIECES} pieces between junctions")

    t = transformer(CRS84, f"EPSG:{srid}")
    px, py = t.transform(lon, lat)
    lines = shapely.linestrings(np.asarray(px), np.asarray(py), indices=edge)
    lines = shapely.set_srid(lines, srid)

    tags = extract.way_tags
    highway = np.array([tg["highway"] for tg in tags], dtype=object)
    name = np.array([tg.get("name") for tg in tags], dtype=object)
    foot = np.array([foot_direction(tg) for tg in tags], dtype=np.int16)
    car = np.array([car_direction(tg) for tg in tags], dtype=np.int16)
    attributes = np.array([json.dumps(tg, ensure_ascii=False, sort_keys=True) for tg in tags], dtype=object)
    factor = np.array([SPEED_FACTOR.get(h, 1.0) for h in highway], dtype=np.float64)

    w = edge_way
    seconds = length / (WALK_SPEED_M_S * factor[w])
    edges = pd.DataFrame(
        {
            "id": way_ids[w] * _MAX_PIECES + seq,
            "osm_way_id": way_ids[w],
            "seq": seq,
            "source": refs[pos][head],
            "target": refs[pos][tail],
            "highway": highway[w],
            "name": name[w],
            "length_m": length,
            "cost": np.where(foot[w] >= 0, seconds, -1.0),
            "reverse_cost": np.where(foot[w] <= 0, seconds, -1.0),
            "oneway_car": car[w],
            "oneway_foot": foot[w],
            "geom": shapely.to_wkb(lines, hex=True, include_srid=True),
            "attributes": attributes[w],
            "source_file": source_file,
            "source_id": np.char.add("w", way_ids[w].astype(str)),
        }
    )[ok_edge]

    # Vertices of the kept edges, with their position.
    ends = np.r_[np.flatnonzero(head)[ok_edge], np.flatnonzero(tail)[ok_edge]]
    vid, at = np.unique(refs[pos][ends], return_index=True)
    points = shapely.set_srid(shapely.points(np.asarray(px)[ends][at], np.asarray(py)[ends][at]), srid)
    vertices = pd.DataFrame(
        {"id": vid, "geom": shapely.to_wkb(points, hex=True, include_srid=True), "source_file": source_file}
    )
    return Network(edges.reset_index(drop=True), vertices, int((~ok_edge).sum()))


# ---- POIs ----------------------------------------------------------------------------------------------
def prepare_pois(extract: OsmExtract, srid: int, source_file: str) -> pd.DataFrame:
    """The POI stage frame: one point (on the surface, for areas) per POI, in the storage CRS."""
    geoms = np.asarray(shapely.from_wkb(extract.poi_wkb), dtype=object) if extract.poi_wkb else np.empty(0, object)
    if geoms.size:
        geoms = np.where(shapely.get_type_id(geoms) == 0, geoms, shapely.point_on_surface(geoms))
        geoms = shapely.set_srid(_to_storage(geoms, srid), srid)
    return pd.DataFrame(
        {
            "row_no": np.arange(1, len(extract.poi_ids) + 1),
            "osm_id": extract.poi_ids,
            "kind": extract.poi_kinds,
            "name": [t.get("name") for t in extract.poi_tags],
            "geom": shapely.to_wkb(geoms, hex=True, include_srid=True) if geoms.size else [],
            "attributes": [json.dumps(t, ensure_ascii=False, sort_keys=True) for t in extract.poi_tags],
            "source_file": source_file,
        }
    )


# ---- the load ------------------------------------------------------------------------------------------
@dataclass
class OsmReport:
    """What one OSM load did. ``skipped_*`` list (OSM id, reason); ``found`` counts building ways and
    relations in the file, so found = loaded + skipped."""

    source: str
    buildings_found: int = 0
    buildings_inserted: int = 0
    buildings_updated: int = 0
    buildings_unchanged: int = 0
    buildings_repaired: int = 0
    height_sources: dict[str, int] = field(default_factory=dict)
    skipped_buildings: list[tuple[str, str]] = field(default_factory=list)
    highway_ways: int = 0
    walkable_ways: int = 0
    roads: store.NetworkResult = field(default_factory=store.NetworkResult)
    zero_length_edges: int = 0
    pois_found: int = 0
    pois: store.PoiResult = field(default_factory=store.PoiResult)
    network: dict[str, float] = field(default_factory=dict)

    @property
    def buildings_loaded(self) -> int:
        return self.buildings_inserted + self.buildings_updated + self.buildings_unchanged

    def to_dict(self) -> dict[str, object]:
        """The report as JSON-ready data (for ``--report``)."""
        e, v, p = self.roads.edges, self.roads.vertices, self.pois.counts
        return {
            "source": self.source,
            "buildings": {
                "found": self.buildings_found,
                "inserted": self.buildings_inserted,
                "updated": self.buildings_updated,
                "unchanged": self.buildings_unchanged,
                "repaired": self.buildings_repaired,
                "height_sources": self.height_sources,
                "skipped": [{"osm_id": i, "reason": r} for i, r in self.skipped_buildings],
            },
            "roads": {
                "highway_ways": self.highway_ways,
                "walkable_ways": self.walkable_ways,
                "edges": vars(e),
                "vertices": vars(v),
                "zero_length_edges": self.zero_length_edges,
                "skipped": [{"edge": i, "reason": r} for i, r in self.roads.skipped_edges],
            },
            "pois": {
                "found": self.pois_found,
                **vars(p),
                "skipped": [{"osm_id": i, "reason": r} for i, r in self.pois.skipped],
            },
            "network": self.network,
        }

    def skipped_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, reason in self.skipped_buildings:
            key = reason.split(" (")[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> str:
        e, v, p = self.roads.edges, self.roads.vertices, self.pois.counts
        lines = [
            f"buildings     {self.source}: found {self.buildings_found}, loaded {self.buildings_loaded} "
            f"(new {self.buildings_inserted}, changed {self.buildings_updated}, unchanged {self.buildings_unchanged}), "
            f"skipped {len(self.skipped_buildings)}",
            "    heights: " + ", ".join(f"{k} {n}" for k, n in sorted(self.height_sources.items())),
            *(f"    skipped {n}: {reason}" for reason, n in self.skipped_by_reason().items()),
            f"roads         {self.source}: {self.walkable_ways} walkable of {self.highway_ways} highway ways → "
            f"{e.inserted + e.updated + e.unchanged} edges (new {e.inserted}, changed {e.updated}, "
            f"unchanged {e.unchanged}, removed {e.deleted}), vertices new {v.inserted}, removed {v.deleted}; "
            f"skipped {len(self.roads.skipped_edges)} edges outside the grids",
            f"pois          {self.source}: found {self.pois_found}, loaded "
            f"{p.inserted + p.updated + p.unchanged} (new {p.inserted}, changed {p.updated}, removed {p.deleted}), "
            f"skipped {len(self.pois.skipped)} outside the grids",
        ]
        if self.network:
            lines.append(
                f"network now: {self.network['edges']:,.0f} edges, {self.network['vertices']:,.0f} vertices, "
                f"{self.network['length_m'] / 1000:,.2f} km; {self.network['pois']:,.0f} POIs"
            )
        return "\n".join(lines)


def ingest_osm(
    path: Path, settings: Settings | None = None, progress: Callable[[str], None] | None = None
) -> OsmReport:
    """Load buildings, the walkable network and POIs of an OSM file in one transaction (see the module
    docstring). Raises OsmError / IngestError, with nothing written, when the file or database is unusable.
    ``progress`` is told each step's name."""
    settings = settings or get_settings()
    step = progress or (lambda _name: None)
    step(f"reading {path.name}")
    started = datetime.now(UTC)
    source_file = path.name
    extract = read_extract(path)
    report = OsmReport(source=source_file, highway_ways=extract.highway_ways, walkable_ways=len(extract.way_ids))
    report.buildings_found = len(extract.building_found)
    report.skipped_buildings = [(i, f"not built: {why}") for i, why in extract.building_found.items() if why]
    report.pois_found = len(extract.poi_ids)

    ids = extract.building_ids
    step("preparing buildings, road network and POIs")
    with codes.city_scope(settings.city_code):
        prepared = prepare_osm_buildings(extract, settings, source_file)
    report.buildings_repaired = prepared.repaired
    report.skipped_buildings += [(ids[row - 1], f"rejected ({reason})") for row, reason in prepared.rejects.items()]
    network = build_network(extract, settings.storage_srid, source_file)
    report.zero_length_edges = network.dropped_zero_length
    pois = prepare_pois(extract, settings.storage_srid, source_file)
    try:
        with transaction(settings) as conn:
            if store.grid_count(conn) == 0:
                raise OsmError(
                    f"{source_file}: the database has no grids to place OSM features in; load the city's "
                    f"administrative units first, or make a management grid: cim admin grid --from {path}"
                )
            step("loading buildings")
            _load_buildings(conn, prepared.frame, ids, report)
            step("loading the road network and POIs")
            store.create_osm_stages(conn)
            store.copy_stage(conn, store.VERTEX_STAGE, network.vertices)
            store.copy_stage(conn, store.ROAD_STAGE, network.edges)
            report.roads = store.merge_road_network(conn, source_file)
            store.copy_stage(conn, store.POI_STAGE, pois)
            report.pois = store.merge_pois(conn, source_file)
            _record(conn, path, report, started, len(network.edges))
            report.network = store.network_summary(conn)
    except psycopg.errors.IntegrityError as exc:
        raise IngestError(f"{source_file}: the database refused the data, nothing was loaded: {exc}") from exc
    except psycopg.errors.DataException as exc:
        raise IngestError(f"{source_file}: a value was refused by the database, nothing was loaded: {exc}") from exc
    report.skipped_buildings.sort()
    return report


def _load_buildings(conn: psycopg.Connection, frame: pd.DataFrame, ids: list[str], report: OsmReport) -> None:
    create_stage(conn, "buildings")
    copy_into_stage(conn, "buildings", frame)
    outside = store.drop_outside_grids(conn, "buildings", "footprint")
    report.skipped_buildings += [(ids[row - 1], "lies outside every grid") for row in outside]
    result = merge_buildings(conn, MergeOptions())
    report.skipped_buildings += [(ids[row - 1], f"rejected ({reason})") for row, reason in result.rejects]
    report.buildings_inserted, report.buildings_updated = result.inserted, result.updated
    report.buildings_unchanged = result.unchanged
    row = conn.execute(
        "SELECT height_source, count(*) FROM buildings WHERE source_file = %s GROUP BY 1",
        (report.source,),
    ).fetchall()
    report.height_sources = {str(r[0]): int(r[1]) for r in row}


def _record(conn: psycopg.Connection, path: Path, report: OsmReport, started: datetime, edges: int) -> None:
    sha = file_sha256(path)
    runs = [
        (
            "buildings",
            report.buildings_found,
            report.buildings_inserted,
            report.buildings_updated,
            report.buildings_unchanged,
            report.skipped_buildings,
        ),
        (
            "roads",
            edges,
            report.roads.edges.inserted,
            report.roads.edges.updated,
            report.roads.edges.unchanged,
            [(f"e{i}", reason) for i, reason in report.roads.skipped_edges],
        ),
        (
            "pois",
            report.pois_found,
            report.pois.counts.inserted,
            report.pois.counts.updated,
            report.pois.counts.unchanged,
            report.pois.skipped,
        ),
    ]
    for layer, read, inserted, updated, unchanged, skipped in runs:
        record_ingest_run(
            conn,
            layer=layer,
            source_file=str(path),
            sha256=sha,
            started_at=started,
            counts={
                "read": read,
                "inserted": inserted,
                "updated": updated,
                "unchanged": unchanged,
                "repaired": report.buildings_repaired if layer == "buildings" else 0,
            },
            rejected=[(k + 1, f"{osm_id}: {reason}") for k, (osm_id, reason) in enumerate(skipped)],
        )
