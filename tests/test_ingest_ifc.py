"""IFC ingest on the real sample models in ../shared/data/ifc: placement checked against pyproj computed here
from the raw IFC numbers, the building derived from the elements, re-ingest, and clean failures.

The expected coordinates are derived independently of ``ingest.ifc_georef``: FZK-Haus by a geodesic from
its IfcSite latitude/longitude (pyproj.Geod) along the azimuth its TrueNorth gives; the Gauss-Krüger sample
by the IfcMapConversion formula on the raw point list of the file, then pyproj EPSG:31467 → EPSG:25832.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import ifcopenshell
import numpy as np
import pyproj
import pytest
from shapely.geometry import box

from cim.db import connect, ensure_database
from cim.settings import Settings
from ingest.city_layers import ingest_files
from ingest.errors import IngestError
from ingest.ifc import IfcError, IfcSource, ingest_ifc, open_ifc
from ingest.ifc_georef import GeoreferenceError, _classify_scale, dms_to_degrees, parse_anchor, resolve_placement

import tinycity
from conftest import new_database
from dbcheck import fingerprint

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ifc"
FZK = DATA / "AC20-FZK-Haus.ifc"
GK = DATA / "geographic-referencing-gk.ifc"
SAMPLES = sorted(p.name for p in DATA.glob("*.ifc"))

DISTRICT, STREET, COMMUNITY = "440305", "440305007", "440305007001"
GRID, GRID_EAST = "44030500700101", "44030500700102"  # west and east halves; both samples lie in the west
PARCEL = "T107-0001"
UTM32 = 25832
# A 4 km square of UTM zone 32N around both Karlsruhe samples (FZK-Haus and the Gauss-Krüger model), in two
# grids split at x = X0 + 2000 (about 8.4383°E).
X0, Y0 = 457_000.0, 5_437_000.0


# --------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def fzk() -> IfcSource:
    """FZK-Haus opened and triangulated once for the module (the expensive part of its ingest)."""
    source = open_ifc(FZK)
    source.meshes()
    return source


@pytest.fixture(scope="module")
def karlsruhe(settings: Settings, cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A database stored in ETRS89 / UTM 32N with a hand-made unit hierarchy and a parcel around the samples."""
    with new_database(settings, cluster_url) as fresh:
        s = fresh.model_copy(update={"storage_srid": UTM32})
        yield from _karlsruhe(s, tmp_path_factory)


def _karlsruhe(s: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    ensure_database(s)
    out = tmp_path_factory.mktemp("karlsruhe")
    area = box(X0, Y0, X0 + 4000, Y0 + 4000)
    units = gpd.GeoDataFrame(
        {
            "code": [DISTRICT, STREET, COMMUNITY, GRID, GRID_EAST],
            "name": ["区", "街道", "社区", "第01网格", "第02网格"],
        },
        geometry=[area] * 3 + [box(X0, Y0, X0 + 2000, Y0 + 4000), box(X0 + 2000, Y0, X0 + 4000, Y0 + 4000)],
        crs=UTM32,
    )
    units.to_file(out / "admin.geojson")
    fx, fy = pyproj.Transformer.from_crs(4258, UTM32, always_xy=True).transform(8.4365, 49.1004)
    parcels = gpd.GeoDataFrame(
        {"code": [PARCEL], "land_use": ["R2"], "far_limit": [1.0], "height_limit_m": [12.0], "coverage_limit": [0.5]},
        geometry=[box(fx - 100, fy - 100, fx + 100, fy + 100)],
        crs=UTM32,
    )
    parcels.to_file(out / "parcels.geojson")
    ingest_files("admin", [out / "admin.geojson"], settings=s)
    ingest_files("parcels", [out / "parcels.geojson"], settings=s)
    yield s


@pytest.fixture(scope="module")
def fzk_loaded(karlsruhe: Settings, fzk: IfcSource) -> str:
    """FZK-Haus ingested at its IfcSite position; returns its building code."""
    return ingest_ifc(fzk, settings=karlsruhe).building_code


def query(s: Settings, q: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with connect(s) as conn:
        return conn.execute(q, params).fetchall()  # type: ignore[arg-type]


def everything(s: Settings) -> dict[str, str]:
    """Fingerprint of the city tables (BIM included) and of the ingest log."""
    return fingerprint(s, ("ingest_runs",))


def stored_vertices(s: Settings, guid: str) -> np.ndarray:
    """(triangles, 3, 3) corners of an element's stored TIN, in storage order."""
    rows = query(
        s,
        "SELECT ST_X(d.geom), ST_Y(d.geom), ST_Z(d.geom), d.path FROM bim_elements e, "
        "ST_DumpPoints(e.mesh) d WHERE e.ifc_guid = %s ORDER BY d.path",
        (guid,),
    )
    pts = np.array([r[:3] for r in rows], dtype=float).reshape(-1, 4, 3)
    return pts[:, :3]


@functools.cache
def products_with_body(path: Path) -> int:
    """Counted here straight from the file: IfcProducts with a 'Body' representation, openings excepted."""
    model = ifcopenshell.open(str(path))
    return sum(
        1
        for p in model.by_type("IfcProduct")
        if p.Representation is not None
        and any(r.RepresentationIdentifier == "Body" for r in p.Representation.Representations)
        and not p.is_a("IfcOpeningElement")
    )


# --------------------------------------------------------------------------------------------------------
# FZK-Haus at its IfcSite latitude/longitude


def _compound(value: tuple[int, ...]) -> float:
    d, m, s, *us = value
    return d + m / 60 + (s + (us[0] if us else 0) / 1e6) / 3600


def test_fzk_lands_at_its_site(karlsruhe: Settings, fzk: IfcSource, fzk_loaded: str) -> None:
    code = fzk_loaded
    assert code.startswith(GRID) and len(code) == 19
    (row,) = query(
        karlsruhe,
        "SELECT name, use, height_m, height_source, storeys, ground_elevation_m, footprint_area_m2, parcel_code, "
        "grid_code, ST_NumInteriorRings(ST_GeometryN(footprint, 1)), ST_IsValid(footprint) "
        "FROM buildings WHERE building_code = %s",
        (code,),
    )
    name, use, height, source, storeys, ground, area, parcel, grid, holes, valid = row
    assert (name, use, source, storeys, parcel, grid, valid) == (
        "FZK-Haus",
        "residential",
        "bim",
        2,
        PARCEL,
        GRID,
        True,
    )
    # A 12 m x 10 m house with a 0.5 m roof overhang all round: 13 m x 11 m, scaled by UTM's grid scale.
    assert 140 < area < 145 and holes == 0
    assert ground == pytest.approx(109.8, abs=0.01)  # the lowest slab's underside, 0.2 m below ±0.00 at 110 m
    assert 6 < height < 7
    assert query(
        karlsruhe,
        "SELECT name, elevation_m, ordinal FROM bim_storeys WHERE building_code = %s ORDER BY ordinal",
        (code,),
    ) == [("Erdgeschoss", 110.0, 1), ("Dachgeschoss", 112.7, 2)]

    n = products_with_body(FZK)
    assert n == 90  # 107 products with a body less 17 openings
    (counts,) = query(
        karlsruhe,
        "SELECT count(*), count(mesh), count(*) FILTER (WHERE ifc_class = 'IfcWallStandardCase'), "
        "count(*) FILTER (WHERE storey = 'Dachgeschoss' AND storey_elevation_m = 112.7) "
        "FROM bim_elements WHERE building_code = %s",
        (code,),
    )
    assert counts[0] == counts[1] == n and counts[2] == 13 and counts[3] > 0
    (model,) = query(
        karlsruhe,
        "SELECT element_count, ifc_schema, georeference->>'method' FROM bim_models WHERE building_code = %s",
        (code,),
    )
    assert model == (n, "IFC4", "site")
    (window,) = query(
        karlsruhe,
        "SELECT properties->'Pset_WindowCommon'->>'ThermalTransmittance', quantities->'BaseQuantities'->>'Area' "
        "FROM bim_elements WHERE ifc_guid = %s",
        (fzk.model.by_type("IfcWindow")[0].GlobalId,),
    )
    assert window == ("1.4", "2.4")  # the first window's Pset_WindowCommon and BaseQuantities in the file

    # Every vertex of a wall, from the raw IFC numbers: geodesic from the site along the TrueNorth azimuth.
    site = fzk.model.by_type("IfcSite")[0]
    lat0, lon0, h0 = _compound(site.RefLatitude), _compound(site.RefLongitude), float(site.RefElevation)
    assert (round(lat0, 6), round(lon0, 6), h0) == (49.100435, 8.436539, 110.0)
    context = next(c for c in fzk.model.by_type("IfcGeometricRepresentationContext") if c.ContextType == "Model")
    tx, ty = context.TrueNorth.DirectionRatios[:2]
    wall = next(e for e in fzk.elements if e.is_a("IfcWallStandardCase"))
    mesh = fzk.meshes()[wall.id()]
    model_xyz = mesh.verts[mesh.faces].reshape(-1, 3)
    east = model_xyz[:, 0] * ty - model_xyz[:, 1] * tx  # components along true east and north
    north = model_xyz[:, 0] * tx + model_xyz[:, 1] * ty
    azimuth = np.degrees(np.arctan2(east, north))
    lon, lat, _ = pyproj.Geod(ellps="GRS80").fwd(
        np.full(len(east), lon0), np.full(len(east), lat0), azimuth, np.hypot(east, north)
    )
    ex, ey = pyproj.Transformer.from_crs(4258, UTM32, always_xy=True).transform(lon, lat)
    expected = np.column_stack([ex, ey, h0 + model_xyz[:, 2]])
    got = stored_vertices(karlsruhe, wall.GlobalId).reshape(-1, 3)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 0.01


def test_reingesting_the_same_model_changes_nothing(karlsruhe: Settings, fzk: IfcSource, fzk_loaded: str) -> None:
    before = everything(karlsruhe)
    report = ingest_ifc(fzk, settings=karlsruhe)
    assert report.building_code == fzk_loaded
    assert (report.inserted, report.updated, report.deleted, report.unchanged) == (0, 0, 0, 90)
    after = everything(karlsruhe)
    assert after.pop("ingest_runs") != before.pop("ingest_runs")  # the audit row of this run
    assert after == before
    assert query(karlsruhe, "SELECT version FROM buildings WHERE building_code = %s", (fzk_loaded,)) == [(1,)]


# --------------------------------------------------------------------------------------------------------
# The Gauss-Krüger sample at its IfcMapConversion


def test_gk_lands_at_its_map_conversion(karlsruhe: Settings) -> None:
    report = ingest_ifc(GK, settings=karlsruhe)
    text = GK.read_text()
    conv = re.search(r"IFCMAPCONVERSION\(#\d+,#\d+,([^)]*)\)", text)
    points = re.search(r"IFCCARTESIANPOINTLIST3D\(\((.*)\),\$\)", text)
    assert conv and points
    e0, n0, h0, a, b, scale = (float(v) for v in conv.group(1).split(","))
    assert scale == 1000.0  # the sample states millimetres per metre; the project unit is the millimetre
    xyz = np.array(re.findall(r"\(([-0-9.]+),([-0-9.]+),([-0-9.]+)\)", points.group(1)), dtype=float) / 1000.0
    theta = math.atan2(b, a)
    e = e0 + xyz[:, 0] * math.cos(theta) - xyz[:, 1] * math.sin(theta)
    n = n0 + xyz[:, 0] * math.sin(theta) + xyz[:, 1] * math.cos(theta)
    ex, ey = pyproj.Transformer.from_crs(31467, UTM32, always_xy=True).transform(e, n)
    expected = np.column_stack([ex, ey, h0 + xyz[:, 2]])
    got = np.unique(stored_vertices(karlsruhe, "0rBru4syGxGOZb$M8kVJuS").reshape(-1, 3).round(6), axis=0)
    # The same 9 points, each within 1 cm of one computed here (the pyramid's apex sits at the map origin).
    distances = np.linalg.norm(got[:, None, :] - expected[None, :, :], axis=2)
    assert len(got) == len(expected) == 9
    assert distances.min(axis=1).max() < 0.01 and distances.min(axis=0).max() < 0.01
    (model,) = query(
        karlsruhe,
        "SELECT georeference->>'crs', georeference->>'scale_reading', element_count, storey_count "
        "FROM bim_models WHERE building_code = %s",
        (report.building_code,),
    )
    assert model[0] == "EPSG:31467" and model[1].startswith("inverted") and model[2:] == (1, 1)
    assert query(
        karlsruhe, "SELECT elevation_m FROM bim_storeys WHERE building_code = %s", (report.building_code,)
    ) == [(113.7,)]


def write_ifc2x3_wall(path: Path, conversion: dict[str, float], crs_name: str) -> None:
    """An IFC2X3 model in millimetres (one 5 m x 0.2 m x 3 m wall at the origin, in a storey), georeferenced
    the IFC2X3 way: ePSet_MapConversion and ePSet_ProjectedCRS on the IfcProject."""
    import ifcopenshell.api.aggregate
    import ifcopenshell.api.context
    import ifcopenshell.api.geometry
    import ifcopenshell.api.owner.settings as owner
    import ifcopenshell.api.project
    import ifcopenshell.api.pset
    import ifcopenshell.api.root
    import ifcopenshell.api.spatial
    import ifcopenshell.api.unit

    f = ifcopenshell.api.project.create_file(version="IFC2X3")
    org = f.createIfcOrganization(Name="cim tests")
    user = f.createIfcPersonAndOrganization(f.createIfcPerson(FamilyName="tester"), org)
    app = f.createIfcApplication(org, "1", "cim tests", "cim")
    saved = owner.get_user, owner.get_application
    owner.get_user, owner.get_application = (lambda _f: user), (lambda _f: app)  # IFC2X3 needs owner history
    try:
        project = ifcopenshell.api.root.create_entity(f, ifc_class="IfcProject", name="P")
        ifcopenshell.api.unit.assign_unit(f, units=[ifcopenshell.api.unit.add_si_unit(f, "LENGTHUNIT", "MILLI")])
        model = ifcopenshell.api.context.add_context(f, context_type="Model")
        body = ifcopenshell.api.context.add_context(
            f, context_type="Model", context_identifier="Body", target_view="MODEL_VIEW", parent=model
        )
        site, building, storey, wall = (
            ifcopenshell.api.root.create_entity(f, ifc_class=c, name=n)
            for c, n in (("IfcSite", "S"), ("IfcBuilding", "B"), ("IfcBuildingStorey", "EG"), ("IfcWall", "W"))
        )
        ifcopenshell.api.aggregate.assign_object(f, relating_object=project, products=[site])
        ifcopenshell.api.aggregate.assign_object(f, relating_object=site, products=[building])
        ifcopenshell.api.aggregate.assign_object(f, relating_object=building, products=[storey])
        ifcopenshell.api.geometry.edit_object_placement(f, product=wall, matrix=np.eye(4))
        rep = ifcopenshell.api.geometry.add_wall_representation(f, context=body, length=5, height=3, thickness=0.2)
        ifcopenshell.api.geometry.assign_representation(f, product=wall, representation=rep)
        ifcopenshell.api.spatial.assign_container(f, relating_structure=storey, products=[wall])
        for name, props in (("ePSet_MapConversion", conversion), ("ePSet_ProjectedCRS", {"Name": crs_name})):
            pset = ifcopenshell.api.pset.add_pset(f, product=project, name=name)
            ifcopenshell.api.pset.edit_pset(f, pset=pset, properties=props)
    finally:
        owner.get_user, owner.get_application = saved
    f.write(str(path))


def test_ifc2x3_map_conversion_property_sets(karlsruhe: Settings, tmp_path: Path) -> None:
    path = tmp_path / "wall-2x3.ifc"
    e0, n0, h0, a, b = 3458700.0, 5439950.0, 113.7, 0.8, 0.6
    conversion = {"Eastings": e0, "Northings": n0, "OrthogonalHeight": h0, "XAxisAbscissa": a, "XAxisOrdinate": b}
    write_ifc2x3_wall(path, {**conversion, "Scale": 0.001}, "EPSG:31467")  # the spec's reading: mm → m
    report = ingest_ifc(path, settings=karlsruhe)
    assert (report.georeference, report.elements, report.storeys) == ("map conversion", 1, [("EG", 113.7)])
    corners_mm = np.array([[0, 0, 0], [5000, 0, 0], [5000, 200, 0], [0, 200, 3000], [5000, 200, 3000]], dtype=float)
    e = e0 + 0.001 * (corners_mm[:, 0] * a - corners_mm[:, 1] * b)
    n = n0 + 0.001 * (corners_mm[:, 0] * b + corners_mm[:, 1] * a)
    ex, ey = pyproj.Transformer.from_crs(31467, UTM32, always_xy=True).transform(e, n)
    expected = np.column_stack([ex, ey, h0 + corners_mm[:, 2] / 1000])
    (guid,) = query(karlsruhe, "SELECT ifc_guid FROM bim_elements WHERE building_code = %s", (report.building_code,))
    got = stored_vertices(karlsruhe, guid[0]).reshape(-1, 3)
    assert np.linalg.norm(got[None, :, :] - expected[:, None, :], axis=2).min(axis=1).max() < 0.01
    assert report.footprint_area_m2 == pytest.approx(1.0, rel=0.01)  # 5 m x 0.2 m at UTM's grid scale


# --------------------------------------------------------------------------------------------------------
# Every sample: ingests or fails with a clear message and an unchanged database

OUTCOME_WITHOUT_ANCHOR = {
    "AC20-FZK-Haus.ifc": None,
    "geographic-referencing-gk.ifc": None,
    "grid-placement.ifc": "outside the area of use of the storage CRS EPSG:25832",  # its site is in Abu Dhabi
}


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_ingests_or_fails_cleanly(karlsruhe: Settings, fzk: IfcSource, fzk_loaded: str, name: str) -> None:
    source: IfcSource | Path = fzk if name == FZK.name else DATA / name
    expected_error = OUTCOME_WITHOUT_ANCHOR.get(name, "no georeference: the file has no IfcMapConversion")
    before = everything(karlsruhe)
    if expected_error is None:
        report = ingest_ifc(source, settings=karlsruhe)
        assert report.elements == products_with_body(DATA / name)
    else:
        with pytest.raises(IngestError) as err:
            ingest_ifc(source, settings=karlsruhe)
        message = str(err.value)
        assert message.startswith(f"{name}: ") and expected_error in message and "\n" not in message
        assert everything(karlsruhe) == before
    # Anchored inside the grid, every sample goes all the way through the load (rolled back: dry run).
    before = everything(karlsruhe)
    report = ingest_ifc(source, anchor=parse_anchor("8.45,49.09,100", 30.0), dry_run=True, settings=karlsruhe)
    assert report.dry_run and report.elements == products_with_body(DATA / name) and report.footprint_area_m2 > 0
    assert everything(karlsruhe) == before


CORRUPT = {
    "empty": (lambda: b"", "the file is empty"),
    "random bytes": (lambda: bytes(range(256)) * 8, "cannot be read as IFC"),
    "cut-off FZK-Haus": (lambda: FZK.read_bytes()[:1_500_000], "the file is cut off"),
    "unknown schema": (
        lambda: (DATA / "wall-extruded-solid.ifc").read_bytes().replace(b"IFC4X3_ADD2", b"IFC9"),
        "cannot be read as IFC",
    ),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_a_corrupt_file_fails_cleanly(karlsruhe: Settings, tmp_path: Path, case: str) -> None:
    content, problem = CORRUPT[case]
    path = tmp_path / "broken.ifc"
    path.write_bytes(content())
    before = everything(karlsruhe)
    with pytest.raises(IngestError) as err:
        ingest_ifc(path, anchor=parse_anchor("8.45,49.09,100"), settings=karlsruhe)
    assert str(err.value).startswith(f"broken.ifc: {problem}") and "\n" not in str(err.value)
    assert everything(karlsruhe) == before


def test_crs_names_a_map_conversion_without_a_usable_crs_name(karlsruhe: Settings, tmp_path: Path) -> None:
    path = tmp_path / GK.name  # the same model under its own name: a new export of it
    for name, problem in (("", "has no named IfcProjectedCRS; pass --crs"), ("DHDN GK 3", "pass --crs with its EPSG")):
        path.write_text(GK.read_text().replace("IFCPROJECTEDCRS('EPSG:31467'", f"IFCPROJECTEDCRS('{name}'"))
        with pytest.raises(IfcError, match=problem):
            ingest_ifc(path, settings=karlsruhe, dry_run=True)
        report = ingest_ifc(path, crs="EPSG:31467", settings=karlsruhe, dry_run=True)
        assert report.georeference == "map conversion" and report.footprint_area_m2 == pytest.approx(1.0, rel=0.01)


# --------------------------------------------------------------------------------------------------------
# Re-ingest: elements gone from the file are deleted; template GlobalIds do not steal another model


def test_reingest_replaces_elements_and_guards_template_guids(karlsruhe: Settings, tmp_path: Path) -> None:
    wall = tmp_path / "wall.ifc"
    shutil.copy(DATA / "wall-extruded-solid.ifc", wall)
    anchor = parse_anchor("8.46,49.11,100", 0.0)
    first = ingest_ifc(wall, anchor=anchor, settings=karlsruhe)
    assert (first.inserted, first.elements) == (1, 1)
    code = first.building_code
    # The wall's GUID changes in a new export: the old element goes, the new one comes, the building stays.
    wall.write_text(wall.read_text().replace("0DWgwt6o1FOx7466fPk$jl", "1DWgwt6o1FOx7466fPk$jl"))
    second = ingest_ifc(wall, anchor=anchor, settings=karlsruhe)
    assert (second.building_code, second.inserted, second.deleted, second.unchanged) == (code, 1, 1, 0)
    assert query(karlsruhe, "SELECT ifc_guid FROM bim_elements WHERE building_code = %s", (code,)) == [
        ("1DWgwt6o1FOx7466fPk$jl",)
    ]
    assert query(karlsruhe, "SELECT version FROM buildings WHERE building_code = %s", (code,)) == [(1,)]
    # Another sample made from the same template has the same IfcBuilding GlobalId: refused, not merged …
    before = everything(karlsruhe)
    column = DATA / "column-extruded-solid.ifc"
    with pytest.raises(IfcError, match=rf"^column-extruded-solid.ifc: its IfcBuilding GlobalId .* wall.ifc.*{code}"):
        ingest_ifc(column, anchor=parse_anchor("8.462,49.11,100", 0.0), settings=karlsruhe)
    assert everything(karlsruhe) == before
    # … unless it is meant to replace that model.
    third = ingest_ifc(column, anchor=anchor, building_code=code, settings=karlsruhe)
    assert (third.building_code, third.inserted, third.deleted) == (code, 1, 1)
    assert query(karlsruhe, "SELECT ifc_class FROM bim_elements WHERE building_code = %s", (code,)) == [("IfcColumn",)]
    # Placed again, now in the west grid: a new code there; the building its earlier ingest made is demolished.
    assert code.startswith(GRID_EAST)
    moved = ingest_ifc(column, anchor=parse_anchor("8.43,49.11,100", 0.0), settings=karlsruhe)
    assert moved.building_code.startswith(GRID) and (moved.inserted, moved.updated, moved.deleted) == (0, 1, 0)
    assert query(karlsruhe, "SELECT count(*) FROM buildings WHERE building_code = %s", (code,)) == [(0,)]
    assert query(karlsruhe, "SELECT change FROM building_history WHERE building_code = %s ORDER BY version", (code,))[
        -1
    ] == ("demolished",)
    assert query(karlsruhe, "SELECT building_code FROM bim_models WHERE source_file = %s", (column.name,)) == [
        (moved.building_code,)
    ]


# --------------------------------------------------------------------------------------------------------
# --anchor: FZK-Haus on a parcel of the tiny Shenzhen city (EPSG:4547)


def test_anchor_places_fzk_on_a_parcel_in_shenzhen(fresh_settings: Settings, fzk: IfcSource, tmp_path: Path) -> None:
    ensure_database(fresh_settings)
    ingest_files("admin", [tinycity.admin(tmp_path)], settings=fresh_settings)
    ingest_files("parcels", [tinycity.parcels(tmp_path)], settings=fresh_settings)
    before = everything(fresh_settings)
    with pytest.raises(IfcError, match=r"outside the area of use of the storage CRS EPSG:4547 .*--anchor"):
        ingest_ifc(fzk, settings=fresh_settings)
    x, y = tinycity.X0 + 250.0, tinycity.Y0 + 250.0  # inside parcel T107-0001 of grid A
    lon, lat = pyproj.Transformer.from_crs(4547, 4490, always_xy=True).transform(x, y)
    anchor = parse_anchor(f"{lon!r},{lat!r},5.0", 0.0)
    with pytest.raises(IfcError, match=r"coded into grid 44030500700102 but lies in grid 44030500700101"):
        ingest_ifc(fzk, anchor=anchor, building_code=tinycity.GRID_B + "00001", settings=fresh_settings)
    assert everything(fresh_settings) == before

    report = ingest_ifc(fzk, anchor=anchor, settings=fresh_settings)
    assert report.building_code == tinycity.GRID_A + "00001"
    (row,) = query(
        fresh_settings,
        "SELECT parcel_code, grid_code, ST_XMin(footprint), ST_YMin(footprint), ST_XMax(footprint), "
        "ST_YMax(footprint), ground_elevation_m, height_source FROM buildings",
    )
    assert row[:2] == ("T107-0001", tinycity.GRID_A) and row[7] == "bim"
    # Rotation 0: model +Y is north, so the model's -0.5..12.5 x -0.5..10.5 m box lands around the anchor.
    assert np.allclose(row[2:6], (x - 0.5, y - 0.5, x + 12.5, y + 10.5), atol=0.02)
    assert row[6] == pytest.approx(5.0 - 0.2, abs=0.001)
    assert query(fresh_settings, "SELECT count(*) FROM bim_elements WHERE grid_code = %s", (tinycity.GRID_A,)) == [
        (90,)
    ]


# --------------------------------------------------------------------------------------------------------
# CLI


def test_cli_refuses_a_model_without_georeference(fresh_settings: Settings, tmp_path: Path) -> None:
    stripped = tmp_path / "no-site-position.ifc"
    text = FZK.read_text()
    site = re.search(r"#389=IFCSITE\(.*\);", text)
    assert site
    stripped.write_text(
        text.replace(site.group(0), re.sub(r"\(49,6,1,566000\),\(8,26,11,540400\)", "$,$", site.group(0)))
    )
    ensure_database(fresh_settings)
    before = everything(fresh_settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIM_")}
    env.update({"CIM_HOME": str(fresh_settings.home), "CIM_DATABASE_URL": str(fresh_settings.database_url)})
    cim = str(Path(sys.executable).parent / "cim")
    res = subprocess.run([cim, "ingest", "ifc", str(stripped)], env=env, text=True, capture_output=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.startswith("error: no-site-position.ifc: no georeference: the file has no IfcMapConversion, ")
    assert "--anchor" in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert everything(fresh_settings) == before


# --------------------------------------------------------------------------------------------------------
# Conventions of the georeference module


def test_compound_angles_scale_readings_and_anchor_parsing() -> None:
    assert dms_to_degrees((49, 6, 1, 566000)) == pytest.approx(49.100435, abs=1e-9)
    assert dms_to_degrees((-33, -52, -7, -500000)) == pytest.approx(-(33 + 52 / 60 + 7.5 / 3600))
    assert dms_to_degrees(None) is None
    with pytest.raises(ValueError, match="mixes signs"):
        dms_to_degrees((10, -5, 0))
    mm = 0.001  # millimetre project, metre map
    assert _classify_scale(0.001, mm, "x") == (0.001, "project-to-map unit factor")
    assert _classify_scale(0.9996, mm, "x")[0] == pytest.approx(0.0009996)
    assert _classify_scale(1000.0, mm, "x")[0] == pytest.approx(0.001)
    assert _classify_scale(None, 1.0, "x")[0] == 1.0
    with pytest.raises(GeoreferenceError, match="Scale 37 fits neither"):
        _classify_scale(37.0, mm, "x")
    for bad in ("8.4,49.1", "east,49,3", "200,49,3", "8.4,49.1,nan"):
        with pytest.raises(GeoreferenceError, match="--anchor"):
            parse_anchor(bad)


def test_rotation_is_the_azimuth_of_model_y_clockwise_from_north() -> None:
    # On UTM 32N's central meridian grid north is true north, so the storage axes show the rotation directly.
    model = ifcopenshell.open(str(DATA / "wall-extruded-solid.ifc"))
    for degrees, direction in ((0.0, (0.0, 1.0)), (90.0, (1.0, 0.0)), (-90.0, (-1.0, 0.0)), (180.0, (0.0, -1.0))):
        placement = resolve_placement(model, UTM32, anchor=parse_anchor("9,49,0", degrees))
        origin, ahead = placement.to_storage([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0]], UTM32)
        step = (ahead - origin)[:2] / np.linalg.norm((ahead - origin)[:2])
        assert np.allclose(step, direction, atol=1e-9), degrees
