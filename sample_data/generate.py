"""The demo district generator: a Houhai-like part of Nanshan (440305) written as the ordinary input files.

``generate(out_dir)`` writes admin, parcels, buildings, houses, pipes, devices, observations and events in
the formats of ``docs/input-formats.md`` (EPSG:4547), plus ``summary.json`` with counts and sums that a
loaded database can be compared with. Same seed and scale give byte-identical files: all randomness comes
from one ``numpy.random.default_rng(seed)``, every float that came out of a transcendental function is
rounded before it is written, and the GeoPackage timestamp is pinned with ``OGR_CURRENT_DATE``.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

from sample_data.buildings import Buildings, Houses, ParcelControls, make_buildings, make_houses, violation_mask
from sample_data.events import Events, make_events
from sample_data.iot import (
    DAY_S,
    END_S,
    OBSERVATION_DAYS,
    Devices,
    local_iso,
    make_devices,
    make_observations,
    make_weather,
    observation_count,
    observation_lines,
)
from sample_data.layout import (
    MAX_SCALE,
    Admin,
    Lattice,
    Parcels,
    make_admin,
    make_lattice,
    make_parcels,
    make_terrain,
    unit_polygon,
)
from sample_data.networks import Network, make_networks

CRS = "EPSG:4547"
DEFAULT_SEED = 20261121
GPKG_TIMESTAMP = "2026-01-01T00:00:00.000Z"
"""Written into ``gpkg_contents.last_change`` instead of the wall-clock time."""
LAYER_FILES = {
    "admin": "admin.gpkg",
    "parcels": "parcels.gpkg",
    "buildings": "buildings.gpkg",
    "houses": "houses.csv",
    "pipes": "pipes.gpkg",
    "devices": "devices.geojson",
    "observations": "observations.csv",
    "events": "events.geojson",
}
"""Ingest layer name -> file name, in load order (parents before the rows that refer to them)."""
SUMMARY_FILE = "summary.json"


def generate(out_dir: Path, scale: int = 1, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Write the demo district into ``out_dir`` (created if missing) and return ingest layer -> file path.

    ``scale`` multiplies the district: about ``5000 * scale`` buildings, ``300 * scale`` parcels and
    ``40 * scale`` grids; networks, devices, observations and events grow in proportion. ``pipes.gpkg``
    holds the layers ``pipe_nodes`` and ``pipes``. ``summary.json`` (not in the returned mapping) records
    counts and sums. Each file is written under a temporary name and renamed into place.

    Raises ValueError when scale is outside 1..333 (street codes have three digits).
    """
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be between 1 and {MAX_SCALE}, got {scale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng_layout, rng_buildings, rng_networks, rng_devices, rng_events = np.random.default_rng(seed).spawn(5)

    lattice = make_lattice(scale, rng_layout)
    admin = make_admin(lattice, scale, rng_layout)
    terrain = make_terrain(lattice, scale, rng_layout)
    parcels = make_parcels(lattice, admin, rng_layout)
    buildings, controls = make_buildings(parcels, admin, terrain, rng_buildings)
    houses = make_houses(buildings, rng_buildings)
    network = make_networks(lattice, terrain, rng_networks)
    weather = make_weather(lattice, rng_devices)
    devices = make_devices(lattice, terrain, parcels, buildings, network, scale, rng_devices)
    observations = make_observations(devices, weather, rng_devices)
    events = make_events(lattice, terrain, buildings, weather, scale, rng_events)

    paths = {layer: out_dir / name for layer, name in LAYER_FILES.items()}
    admin_frame = _admin_frame(lattice, admin)
    with _pinned_gpkg_timestamp():
        _write_vector(paths["admin"], [("admin", admin_frame)], "GPKG")
        _write_vector(paths["parcels"], [("parcels", _parcel_frame(parcels, controls))], "GPKG")
        _write_vector(paths["buildings"], [("buildings", _building_frame(buildings))], "GPKG")
        _write_vector(paths["pipes"], _pipe_frames(network), "GPKG")
    _write_vector(paths["devices"], [("devices", _device_frame(devices))], "GeoJSON", COORDINATE_PRECISION=3)
    _write_vector(paths["events"], [("events", _event_frame(events))], "GeoJSON", COORDINATE_PRECISION=3)
    _write_text(paths["houses"], _house_lines(houses))
    _write_text(paths["observations"], _observation_csv(devices, observations))

    summary = _summary(
        scale,
        seed,
        admin,
        admin_frame,
        parcels,
        controls,
        buildings,
        houses,
        network,
        devices,
        observation_count(observations),
        events,
    )
    _write_text(out_dir / SUMMARY_FILE, [json.dumps(summary, ensure_ascii=False, indent=2, sort_keys=True), "\n"])
    return paths


# ---------------------------------------------------------------------------------------------------------
# frames


def _frame(columns: dict[str, Any], geometry: np.ndarray) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries(geometry, crs=CRS))


def _admin_frame(lattice: Lattice, admin: Admin) -> gpd.GeoDataFrame:
    units = admin.units
    return _frame(
        {"code": [u.code for u in units], "name": [u.name for u in units], "level": [u.level for u in units]},
        np.array([unit_polygon(lattice, u.rect) for u in units], dtype=object),
    )


def _parcel_frame(parcels: Parcels, controls: ParcelControls) -> gpd.GeoDataFrame:
    order = np.argsort(parcels.code.astype(str), kind="stable")
    return _frame(
        {
            "code": parcels.code[order],
            "name": parcels.name[order],
            "land_use": parcels.land_use[order],
            "far_limit": controls.far_limit[order],
            "height_limit_m": controls.height_limit_m[order],
            "coverage_limit": controls.coverage_limit[order],
            "approved_at": controls.approved_at[order],
        },
        parcels.geometry[order],
    )


def _building_frame(b: Buildings) -> gpd.GeoDataFrame:
    n = len(b.geometry)
    return _frame(
        {
            "building_code": b.code,
            "name": b.name,
            "use": b.use,
            "height_m": b.height_m,
            "storeys": b.storeys.astype(np.int64),
            "ground_elevation_m": b.ground_elevation_m,
            "height_source": np.full(n, "generated", dtype=object),
            "source_id": b.source_id,
            "valid_from": b.valid_from,
        },
        b.geometry,
    )


def _pipe_frames(net: Network) -> list[tuple[str, gpd.GeoDataFrame]]:
    nodes = _frame(
        {
            "code": net.node_code,
            "network": net.node_network,
            "kind": net.node_kind,
            "ground_elevation_m": net.node_ground,
            "invert_elevation_m": net.node_invert,
        },
        shapely.points(net.node_xy),
    )
    pipes = _frame(
        {
            "code": net.pipe_code,
            "network": net.pipe_network,
            "from_node": net.node_code[net.pipe_from],
            "to_node": net.node_code[net.pipe_to],
            "diameter_mm": net.diameter_mm,
            "material": net.material,
            "start_invert_m": net.start_invert,
            "end_invert_m": net.end_invert,
            "built_year": net.built_year.astype(np.int64),
        },
        net.pipe_geometry(),
    )
    return [("pipe_nodes", nodes), ("pipes", pipes)]


def _device_frame(dev: Devices) -> gpd.GeoDataFrame:
    return _frame(
        {
            "code": dev.code,
            "kind": dev.kind,
            "name": dev.name,
            "status": dev.status,
            "installed_at": dev.installed_at,
            "pipe_node_code": dev.pipe_node_code,
            "building_code": dev.building_code,
        },
        shapely.points(dev.xy),
    )


def _event_frame(ev: Events) -> gpd.GeoDataFrame:
    return _frame(
        {
            "code": ev.code,
            "category": ev.category,
            "subcategory": ev.subcategory,
            "status": ev.status,
            "reported_at": ev.reported_at,
            "updated_at": ev.updated_at,
            "closed_at": ev.closed_at,
            "due_at": ev.due_at,
            "department": ev.department,
            "reopen_count": ev.reopen_count.astype(np.int64),
            "description": ev.description,
            "reporter_contact": ev.reporter_contact,
            "building_code": ev.building_code,
        },
        shapely.points(ev.xy),
    )


def _house_lines(h: Houses) -> Iterator[str]:
    yield "house_code,storey,area_m2,use\n"
    for code, storey, area, use in zip(h.house_code, h.storey.tolist(), h.area_m2.tolist(), h.use, strict=True):
        yield f"{code},{storey},{area:.2f},{use}\n"


def _observation_csv(dev: Devices, blocks: list) -> Iterator[str]:
    yield "device_code,observed_at,property,value\n"
    yield from observation_lines(dev, blocks)


# ---------------------------------------------------------------------------------------------------------
# writing


@contextmanager
def _pinned_gpkg_timestamp() -> Iterator[None]:
    """Pin the time GDAL writes into GeoPackages (restoring the previous setting afterwards)."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_TIMESTAMP})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def _temp_path(path: Path) -> Path:
    # Keep the real extension: GDAL picks behaviour (and warnings) by it.
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _write_vector(path: Path, layers: list[tuple[str, gpd.GeoDataFrame]], driver: str, **options: Any) -> None:
    tmp = _temp_path(path)
    tmp.unlink(missing_ok=True)
    try:
        for layer, frame in layers:
            pyogrio.write_dataframe(frame, tmp, layer=layer, driver=driver, **options)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, lines: Iterable[str]) -> None:
    tmp = _temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            buffer: list[str] = []
            for line in lines:
                buffer.append(line)
                if len(buffer) >= 65536:
                    f.write("".join(buffer))
                    buffer.clear()
            f.write("".join(buffer))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------
# summary


def _sorted_counts(values: Iterable[Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(str(x) for x in values).items())}


def _summary(
    scale: int,
    seed: int,
    admin: Admin,
    admin_frame: gpd.GeoDataFrame,
    parcels: Parcels,
    controls: ParcelControls,
    b: Buildings,
    houses: Houses,
    net: Network,
    dev: Devices,
    n_observations: int,
    ev: Events,
) -> dict[str, Any]:
    """Counts and exactly summed (``math.fsum``) areas and lengths, rounded to the millimetre."""
    parcel_area = shapely.area(parcels.geometry)
    over_height = b.height_m > controls.height_limit_m[b.parcel]
    far = np.bincount(b.parcel, weights=shapely.area(b.geometry) * b.storeys, minlength=len(parcel_area)) / parcel_area
    pipe_length = shapely.length(net.pipe_geometry())
    district = admin_frame.geometry.iloc[0]
    return {
        "crs": CRS,
        "seed": seed,
        "scale": scale,
        "files": dict(LAYER_FILES),
        "counts": {
            "admin": len(admin.units),
            "admin_by_level": _sorted_counts(u.level for u in admin.units),
            "parcels": len(parcels.geometry),
            "buildings": len(b.geometry),
            "buildings_without_code": sum(c is None for c in b.code),
            "buildings_by_use": _sorted_counts(b.use),
            "houses": len(houses.house_code),
            "pipe_nodes": len(net.node_code),
            "pipe_nodes_by_kind": _sorted_counts(
                f"{n}/{k}" for n, k in zip(net.node_network, net.node_kind, strict=True)
            ),
            "pipes": len(net.pipe_code),
            "pipes_by_network": _sorted_counts(net.pipe_network),
            "devices": len(dev.code),
            "devices_by_kind": _sorted_counts(dev.kind),
            "observations": n_observations,
            "events": len(ev.code),
            "events_by_category": _sorted_counts(ev.category),
            "events_by_status": _sorted_counts(ev.status),
        },
        "district_area_m2": round(float(district.area), 3),
        "parcel_area_m2": round(math.fsum(parcel_area.tolist()), 3),
        "building_footprint_area_m2": round(math.fsum(shapely.area(b.geometry).tolist()), 3),
        "building_floor_area_m2": round(math.fsum((shapely.area(b.geometry) * b.storeys).tolist()), 3),
        "house_area_m2": round(math.fsum(houses.area_m2.tolist()), 3),
        "pipe_length_m": round(math.fsum(pipe_length.tolist()), 3),
        "pipe_length_by_network_m": {
            str(nw): round(math.fsum(pipe_length[net.pipe_network == nw].tolist()), 3)
            for nw in sorted(set(net.pipe_network.tolist()))
        },
        "planning": {
            "buildings_over_height_limit": int(over_height.sum()),
            "parcels_over_far_limit": int((far > controls.far_limit).sum()),
            "buildings_in_breach": int(violation_mask(parcel_area, b, controls).sum()),
        },
        "observations_window": {
            "start": str(local_iso(np.array([END_S - OBSERVATION_DAYS * DAY_S]))[0]),
            "end": str(local_iso(np.array([END_S]))[0]),
        },
    }
