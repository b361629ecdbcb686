"""OpenStreetMap ingest into a city that is not Shenzhen: Helsinki (the central extract in ../shared/data/osm)
stored in EPSG:3067 (ETRS-TM35FIN) with the city code 9901 (an unassigned province number: GB/T 2260 uses
11–82, so it cannot collide with a Chinese city), over a management grid made by ``cim admin grid``.

Every expected number is computed here independently from the file with plain osmium reading and Python loops
(no code of ``ingest.osm`` but its tag rules ``walkable``/``foot_direction``): which buildings the extract has
complete, their heights and levels, the walkable network's junctions, ground length and a shortest path.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import re
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import osmium
import pandas as pd
import psycopg
import pytest
from pyproj import Geod

from cim.db import connect, ensure_database
from cim.migrate import MigrationError
from cim.settings import Settings
from ingest.admin_grid import AdminGridError, build_admin_grid
from ingest.errors import IngestError
from ingest.osm import (
    OsmError,
    building_attributes,
    car_direction,
    foot_direction,
    ingest_osm,
    parse_heights,
    poi_kind,
    walkable,
)

from dbcheck import fingerprint

PBF = Path(__file__).parents[2] / "shared" / "data" / "osm" / "helsinki_center.osm.pbf"
CITY = "9901"
DISTRICT = "990101"
CIM = str(Path(sys.executable).parent / "cim")
GEOD = Geod(ellps="WGS84")


# ---- what the file holds, computed independently ------------------------------------------------------
@cache
def osm_facts() -> dict[str, object]:
    nodes: dict[int, tuple[float, float]] = {}
    ways: dict[int, tuple[list[int], dict[str, str]]] = {}
    relations: dict[int, tuple[list[int], dict[str, str]]] = {}
    charging = 0
    for obj in osmium.FileProcessor(str(PBF)):
        if isinstance(obj, osmium.osm.Node):
            nodes[obj.id] = (obj.location.lon, obj.location.lat)
            charging += obj.tags.get("amenity") == "charging_station"
        elif isinstance(obj, osmium.osm.Way):
            ways[obj.id] = ([n.ref for n in obj.nodes], dict(obj.tags))
        elif isinstance(obj, osmium.osm.Relation):
            relations[obj.id] = ([m.ref for m in obj.members if m.type == "w"], dict(obj.tags))

    def way_complete(refs: list[int]) -> bool:
        return all(r in nodes for r in refs)

    buildings: dict[str, dict[str, str]] = {}
    complete: set[str] = set()
    for wid, (refs, tags) in ways.items():
        if tags.get("building", "no") != "no":
            buildings[f"w{wid}"] = tags
            if refs[0] == refs[-1] and way_complete(refs):
                complete.add(f"w{wid}")
    for rid, (members, tags) in relations.items():
        if tags.get("building", "no") != "no":
            buildings[f"r{rid}"] = tags
            if tags.get("type") == "multipolygon" and all(m in ways and way_complete(ways[m][0]) for m in members):
                complete.add(f"r{rid}")

    # The walkable network: runs of consecutive nodes the file has; junctions are nodes used twice.
    runs: list[tuple[int, list[int]]] = []
    for wid, (refs, tags) in ways.items():
        if "highway" not in tags or not walkable(tags):
            continue
        run: list[int] = []
        for ref in [*refs, None]:
            if ref is not None and ref in nodes:
                if not run or run[-1] != ref:
                    run.append(ref)
                continue
            if len(run) >= 2:
                runs.append((wid, run))
            run = []
    used = Counter(ref for _, run in runs for ref in run)
    vertices = {run[0] for _, run in runs} | {run[-1] for _, run in runs} | {r for r, n in used.items() if n >= 2}
    edges = sum(sum(1 for ref in run if ref in vertices) - 1 for _, run in runs)
    arcs: dict[int, list[tuple[int, float]]] = {}
    total = 0.0
    for wid, run in runs:
        direction = foot_direction(ways[wid][1])
        for a, b in itertools.pairwise(run):
            _, _, d = GEOD.inv(*nodes[a], *nodes[b])
            total += d
            if direction >= 0:
                arcs.setdefault(a, []).append((b, d))
            if direction <= 0:
                arcs.setdefault(b, []).append((a, d))
    return {
        "buildings": buildings,
        "complete": complete,
        "vertices": vertices,
        "edges": edges,
        "length_m": total,
        "arcs": arcs,
        "charging": charging,
    }


def dijkstra(arcs: dict[int, list[tuple[int, float]]], start: int) -> dict[int, float]:
    dist = {start: 0.0}
    heap = [(0.0, start)]
    while heap:
        d, node = heapq.heappop(heap)
        if d > dist[node]:
            continue
        for nxt, w in arcs.get(node, []):
            if d + w < dist.get(nxt, math.inf):
                dist[nxt] = d + w
                heapq.heappush(heap, (d + w, nxt))
    return dist


def parse_height(text: str) -> float:
    match = re.match(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(m)?\s*$", text)
    assert match, text
    return float(match.group(1))


# ---- helpers -------------------------------------------------------------------------------------------
@pytest.fixture()
def helsinki(fresh_settings: Settings) -> Settings:
    s = fresh_settings.model_copy(update={"storage_srid": 3067, "city_code": CITY})
    ensure_database(s)
    return s


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    assert settings.database_url
    env.update(
        {
            "CIM_HOME": str(settings.home),
            "CIM_DATABASE_URL": settings.database_url,
            "CIM_STORAGE_SRID": str(settings.storage_srid),
            "CIM_CITY_CODE": settings.city_code,
        }
    )
    return subprocess.run([CIM, *args], env=env, text=True, capture_output=True, timeout=300)


def rows(settings: Settings, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with connect(settings) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


# ---- the load ------------------------------------------------------------------------------------------
def test_helsinki_grid_and_osm_through_the_cli(helsinki: Settings) -> None:
    facts = osm_facts()
    buildings: dict[str, dict[str, str]] = facts["buildings"]  # type: ignore[assignment]
    complete: set[str] = facts["complete"]  # type: ignore[assignment]
    assert len(buildings) == 500 and len(complete) == 446  # the README's "~486" counts differently
    assert sum("height" in t for t in buildings.values()) == 17  # as the README says

    grid = cli(helsinki, "admin", "grid", "--district-code", DISTRICT, "--name", "Helsinki", "--cell-m", "150",
               "--from", str(PBF))  # fmt: skip
    assert grid.returncode == 0, grid.stderr
    assert "2 communities, 96 grids of 150 m" in grid.stdout
    assert rows(helsinki, "SELECT level, count(*) FROM admin_units GROUP BY 1 ORDER BY 1") == [
        ("community", 2),
        ("district", 1),
        ("grid", 96),
        ("street", 1),
    ]
    assert (helsinki.home / "admin" / f"grid_{DISTRICT}.gpkg").exists()
    assert not list((helsinki.home / "admin").glob(".*"))  # no temp file left behind

    load = cli(helsinki, "ingest", "osm", str(PBF))
    assert load.returncode == 0, load.stderr
    assert "found 500, loaded 446 (new 446" in load.stdout
    assert "skipped 48: not built: nodes are missing from the extract" in load.stdout

    # Buildings: every complete one is loaded, coded into the grid containing it.
    got = dict(rows(helsinki, "SELECT source_id, building_code FROM buildings"))
    assert set(got) == complete
    assert all(re.fullmatch(rf"{DISTRICT}001\d{{10}}", str(c)) for c in got.values())
    misplaced = rows(
        helsinki,
        "SELECT count(*) FROM buildings b JOIN admin_units a ON a.code = b.grid_code "
        "WHERE NOT ST_Intersects(a.geom, ST_PointOnSurface(b.footprint))",
    )
    assert misplaced == [(0,)]
    assert rows(helsinki, "SELECT DISTINCT source_file FROM buildings") == [(PBF.name,)]

    # Heights: the height tag, else levels × storey height, else the default.
    loaded = {
        str(r[0]): (r[1], float(r[2]), int(r[3]))  # type: ignore[arg-type]
        for r in rows(helsinki, "SELECT source_id, height_source, height_m, storeys FROM buildings")
    }
    with_height = {i for i in complete if "height" in buildings[i]}
    with_levels = {i for i in complete if "building:levels" in buildings[i]} - with_height
    assert (len(with_height), len(with_levels)) == (16, 138)
    assert Counter(v[0] for v in loaded.values()) == {
        "osm_height": len(with_height),
        "osm_levels": len(with_levels),
        "default": len(complete) - len(with_height) - len(with_levels),
    }
    for i in with_height:
        assert loaded[i][1] == pytest.approx(parse_height(buildings[i]["height"]))
    assert any(buildings[i]["height"] == "12.13 m" and loaded[i][1] == 12.13 for i in with_height)
    for i in with_levels:
        levels = float(buildings[i]["building:levels"])
        assert loaded[i][1] == pytest.approx(levels * helsinki.storey_height_m)
        assert loaded[i][2] == math.ceil(levels)

    # Roads: the network's junctions, edges and ground length match the independent computation.
    vertices: set[int] = facts["vertices"]  # type: ignore[assignment]
    n_edges, n_vertices, length, grid_length = rows(
        helsinki,
        "SELECT (SELECT count(*) FROM roads), (SELECT count(*) FROM road_vertices), "
        "(SELECT sum(length_m) FROM roads), (SELECT sum(ST_Length(geom)) FROM roads)",
    )[0]
    assert n_vertices == len(vertices) == 3745
    assert n_edges == facts["edges"]
    assert float(length) == pytest.approx(facts["length_m"], rel=1e-9)  # type: ignore[arg-type]
    assert float(grid_length) == pytest.approx(float(length), rel=1e-3)  # type: ignore[arg-type]
    assert rows(helsinki, "SELECT count(*) FROM road_vertices WHERE id <> ALL(%s)", (sorted(vertices),)) == [(0,)]
    dangling = rows(
        helsinki,
        "SELECT count(*) FROM roads r JOIN road_vertices s ON s.id = r.source JOIN road_vertices t ON t.id = r.target "
        "WHERE ST_Distance(ST_StartPoint(r.geom), s.geom) > 1e-6 OR ST_Distance(ST_EndPoint(r.geom), t.geom) > 1e-6",
    )
    assert dangling == [(0,)]
    # Routable with pgRouting: the shortest walk to the farthest reachable junction equals Dijkstra over the
    # node-level graph read straight from the file.
    arcs: dict[int, list[tuple[int, float]]] = facts["arcs"]  # type: ignore[assignment]
    start = min(vertices)
    dist = dijkstra(arcs, start)
    goal = max((v for v in vertices if v in dist), key=lambda v: dist[v])
    (pgr,) = rows(
        helsinki,
        "SELECT agg_cost FROM pgr_dijkstraCost('SELECT id, source, target, "
        "CASE WHEN cost < 0 THEN -1 ELSE length_m END AS cost, "
        "CASE WHEN reverse_cost < 0 THEN -1 ELSE length_m END AS reverse_cost FROM roads', %s::bigint, %s::bigint)",
        (start, goal),
    )
    assert dist[goal] > 1000
    assert float(pgr[0]) == pytest.approx(dist[goal], rel=1e-9)  # type: ignore[arg-type]
    speeds = rows(helsinki, "SELECT DISTINCT round((length_m / cost)::numeric, 3) FROM roads WHERE cost > 0")
    assert {float(r[0]) for r in speeds} == {round(5 / 3.6, 3), round(5 / 3.6 / 2, 3)}  # type: ignore[arg-type]

    # POIs of device and service kinds, placed in grids (and in buildings where they are inside one).
    kinds = dict(rows(helsinki, "SELECT kind, count(*) FROM pois GROUP BY kind"))
    assert kinds["charging_pile"] == facts["charging"] == 4
    assert kinds["camera"] >= 221 and kinds["hydrant"] == 37 and kinds["government_service"] >= 1
    assert rows(helsinki, "SELECT count(*) FROM pois WHERE left(grid_code, 6) <> %s", (DISTRICT,)) == [(0,)]
    assert rows(helsinki, "SELECT count(*) > 0 FROM pois WHERE building_code IS NOT NULL") == [(True,)]

    # Loading the same extract again changes nothing, and says so.
    before = fingerprint(helsinki)
    again = ingest_osm(PBF, settings=helsinki)
    assert (again.buildings_inserted, again.buildings_updated, again.buildings_unchanged) == (0, 0, 446)
    assert (again.roads.edges.inserted, again.roads.edges.updated, again.roads.edges.deleted) == (0, 0, 0)
    assert (again.pois.counts.inserted, again.pois.counts.updated, again.pois.counts.deleted) == (0, 0, 0)
    assert fingerprint(helsinki) == before
    regrid = build_admin_grid(DISTRICT, "Helsinki", 150, source=PBF, settings=helsinki)
    assert [(r.inserted, r.updated) for r in regrid.reports] == [(0, 0)]
    assert fingerprint(helsinki) == before


def test_features_outside_the_grid_are_skipped_and_counted(helsinki: Settings) -> None:
    facts = osm_facts()
    # A grid over the western half of the extract only.
    build_admin_grid(DISTRICT, "Helsinki west", 200, bbox=(24.9351762, 60.164155, 24.944, 60.179113), settings=helsinki)
    report = ingest_osm(PBF, settings=helsinki)
    outside = [i for i, reason in report.skipped_buildings if reason == "lies outside every grid"]
    assert outside and report.buildings_loaded > 0
    assert report.buildings_found == len(facts["buildings"])  # type: ignore[arg-type]
    assert report.buildings_loaded + len(report.skipped_buildings) == report.buildings_found
    assert rows(helsinki, "SELECT count(*) FROM buildings") == [(report.buildings_loaded,)]
    assert report.roads.skipped_edges and report.pois.skipped
    outside_grid = rows(
        helsinki,
        "SELECT (SELECT count(*) FROM road_vertices v WHERE NOT EXISTS (SELECT 1 FROM admin_units a "
        "        WHERE a.level = 'grid' AND ST_Intersects(a.geom, v.geom))), "
        "       (SELECT count(*) FROM roads r WHERE NOT EXISTS (SELECT 1 FROM road_vertices v WHERE v.id = r.source))",
    )
    assert outside_grid == [(0, 0)]
    (n_edges,) = rows(helsinki, "SELECT count(*) FROM roads")[0]
    assert 0 < n_edges < facts["edges"]  # type: ignore[operator]
    runs = rows(helsinki, "SELECT layer, rejected_count FROM ingest_runs ORDER BY id")
    assert [r[0] for r in runs][-3:] == ["buildings", "roads", "pois"]


def test_bad_osm_input_changes_nothing(helsinki: Settings, tmp_path: Path) -> None:
    before = fingerprint(helsinki)
    with pytest.raises(OsmError, match=r"no grids to place OSM features in; .*cim admin grid --from"):
        ingest_osm(PBF, settings=helsinki)
    fake = tmp_path / "broken.osm.pbf"
    fake.write_bytes(b"this is not a protobuf file" * 10)
    with pytest.raises(OsmError, match=r"broken\.osm\.pbf: cannot be read as OpenStreetMap data"):
        ingest_osm(fake, settings=helsinki)
    with pytest.raises(OsmError, match="no such file"):
        ingest_osm(tmp_path / "missing.osm.pbf", settings=helsinki)
    res = cli(helsinki, "ingest", "osm", str(fake))
    assert res.returncode == 1 and "cannot be read as OpenStreetMap data" in res.stderr
    assert "Traceback" not in res.stderr
    assert fingerprint(helsinki) == before


# ---- one database, one city -----------------------------------------------------------------------------
def test_a_helsinki_database_refuses_shenzhen(helsinki: Settings) -> None:
    # Opening the Helsinki database as Shenzhen (or with another SRID) is refused before anything happens.
    with pytest.raises(MigrationError, match="holds the codes of city 9901 but CIM_CITY_CODE is 4403"):
        ensure_database(helsinki.model_copy(update={"city_code": "4403"}))
    # Shenzhen codes are refused by the checks, and by the database itself.
    with pytest.raises(AdminGridError, match="440305 is not a code of this city: it starts with 4403"):
        build_admin_grid("440305", "Nanshan", 500, bbox=(24.93, 60.16, 24.95, 60.17), settings=helsinki)
    with pytest.raises(AdminGridError, match="all-zero district segment"):
        build_admin_grid("990100", "Helsinki", 500, bbox=(24.93, 60.16, 24.95, 60.17), settings=helsinki)
    with connect(helsinki) as conn, pytest.raises(psycopg.errors.CheckViolation, match="city_code_check"):
        conn.execute(
            "INSERT INTO admin_units (code, level, name, geom) VALUES "
            "('440305', 'district', 'x', ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 3067)))"
        )
    res = cli(
        helsinki, "admin", "grid", "--district-code", "440305", "--name", "x", "--bbox", "24.93,60.16,24.95,60.17"
    )
    assert res.returncode == 1 and "not a code of this city" in res.stderr


def test_a_shenzhen_database_refuses_helsinki(fresh_settings: Settings) -> None:
    shenzhen = fresh_settings  # default settings: city 4403, EPSG:4547
    ensure_database(shenzhen)
    with pytest.raises(MigrationError, match="holds the codes of city 4403 but CIM_CITY_CODE is 9901"):
        ensure_database(shenzhen.model_copy(update={"city_code": CITY}))
    with pytest.raises(AdminGridError, match="990101 is not a Shenzhen code"):
        build_admin_grid(DISTRICT, "Helsinki", 500, bbox=(113.9, 22.5, 113.95, 22.55), settings=shenzhen)
    with connect(shenzhen) as conn, pytest.raises(psycopg.errors.CheckViolation, match="city_code_check"):
        conn.execute(
            "INSERT INTO admin_units (code, level, name, geom) VALUES "
            "('990101', 'district', 'x', ST_Multi(ST_MakeEnvelope(0, 0, 1, 1, 4547)))"
        )
    with pytest.raises(IngestError, match="give exactly one of --bbox and --from"):
        build_admin_grid("440305", "Nanshan", 500, settings=shenzhen)


def test_tag_rules() -> None:
    heights = parse_heights(
        pd.Series(["12", "12.5 m", "12,5", "40 ft", "40'6\"", "7 metres", "abc", "0", "1200", None])
    )
    assert heights.tolist()[:6] == pytest.approx([12.0, 12.5, 12.5, 12.192, 12.3444, 7.0])
    assert heights.isna().tolist()[6:] == [True] * 4
    assert poi_kind({"man_made": "monitoring_station", "monitoring:water_level": "yes"}) == "water_level"
    assert poi_kind({"amenity": "townhall"}) == poi_kind({"government": "tax"}) == "government_service"
    assert poi_kind({"amenity": "restaurant"}) is None
    assert walkable({"highway": "footway"}) and not walkable({"highway": "footway", "foot": "no"})
    assert not walkable({"highway": "motorway"}) and walkable({"highway": "trunk", "foot": "yes"})
    assert (
        foot_direction({"highway": "primary", "oneway": "yes"}),
        car_direction({"highway": "primary", "oneway": "yes"}),
    ) == (0, 1)
    assert foot_direction({"highway": "steps", "conveying": "backward"}) == -1
    uses = building_attributes([{"building": "yes", "amenity": "school"}, {"building": "kiosk"}], 3.0)
    assert uses[["use", "height_m", "height_source", "storeys"]].values.tolist() == [
        ["education", 12.0, "default", 4],
        ["commercial", 3.0, "default", 1],
    ]
