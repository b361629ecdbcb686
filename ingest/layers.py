"""One preparation per city layer, following the contract in ``docs/input-formats.md``.

Each ``prepare_<layer>`` takes the source frame (already in the storage CRS for vector layers) and returns a
``Prepared`` stage frame with the columns ``cim.store.staging.STAGE_COLUMNS`` names.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import shapely

from cim import codes
from cim.model import (
    BUILDING_USES,
    DEVICE_STATUSES,
    EVENT_STATUSES,
    HEIGHT_SOURCES,
    PIPE_NETWORKS,
    PIPE_NODE_KINDS,
    UNIT_LEVELS,
)
from cim.store.staging import STAGE_COLUMNS
from ingest.prepare import Checker, Prepared

NAME_PATTERN = r"[A-Z][A-Z0-9_-]{1,39}"
SLUG_PATTERN = r"[a-z][a-z0-9_]{1,63}"


def _codes(chk: Checker, name: str, level: str | None, required: bool, what: str | None = None) -> pd.Series:
    """A Shenzhen code column checked by ``cim.codes`` (message per bad code)."""
    col = chk.text(name, required=required, pattern=r"\d+", what=what)
    present = col.notna().to_numpy()
    values = col[present].tolist()
    if values:
        problems = codes.validate_many(values, level)
        bad = np.zeros(len(col), dtype=bool)
        idx = np.flatnonzero(present)
        messages = []
        for i, problem in zip(idx, problems, strict=True):
            if problem is not None:
                bad[i] = True
                messages.append(f"{what or name}: {problem}")
        chk.reject(bad, messages)
    return col


def _stage(chk: Checker, layer: str, geometry_columns: tuple[str, ...] = ("geom",)) -> Prepared:
    """The stage frame; source columns outside the layer's contract go into ``attributes``."""
    names = [n for n, _ in STAGE_COLUMNS[layer]]
    if "attributes" in names:
        chk.attributes([*names, "source_id"])
    return chk.stage(layer, names, geometry_columns)


def _source(chk: Checker, source_file: str) -> None:
    chk.constant("source_file", source_file)
    if chk.has("source_id"):
        chk.text("source_id")
    else:
        chk.columns["source_id"] = pd.Series([str(r) for r in chk.row_no], dtype=object)


# ---------------------------------------------------------------------------------------------------------
def prepare_admin(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["code", "name"])
    code = _codes(chk, "code", None, required=True)
    chk.text("name", required=True)
    derived = code.map(lambda c: _level_by_length(c))
    if chk.has("level"):
        level = chk.enum("level", UNIT_LEVELS)
        clash = (level.notna() & derived.notna() & (level != derived)).to_numpy(dtype=bool)
        chk.reject(
            clash,
            [
                f"code {c} is a {d} code but level says {lv}"
                for c, d, lv in zip(code[clash], derived[clash], level[clash], strict=True)
            ],
        )
    chk.columns["level"] = derived
    unknown = (code.notna() & derived.isna()).to_numpy(dtype=bool)
    chk.reject(unknown, [f"code {c} is not a district, street, community or grid code" for c in code[unknown]])
    chk.geometry("polygon", srid)
    chk.constant("source_file", source_file)
    return _stage(chk, "admin")


def _level_by_length(code: str | None) -> str | None:
    return {6: "district", 9: "street", 12: "community", 14: "grid"}.get(len(code)) if code else None


def prepare_parcels(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["code", "land_use"])
    chk.text("code", required=True, pattern=codes.PARCEL_CODE_RE.pattern.strip("^$"), what="parcel code")
    chk.text("name")
    chk.text("land_use", required=True, pattern=r"[A-Z][A-Z0-9+]{0,15}")
    chk.number("far_limit", minimum=0, maximum=100, exclusive_min=True)
    chk.number("height_limit_m", minimum=0, maximum=1000, exclusive_min=True)
    chk.number("coverage_limit", minimum=0, maximum=1, exclusive_min=True)
    chk.date("approved_at")
    chk.geometry("polygon", srid)
    _source(chk, source_file)
    return _stage(chk, "parcels")


def prepare_buildings(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["use", "height_m", "storeys"])
    _codes(chk, "building_code", "building", required=False, what="building_code")
    chk.text("name")
    chk.enum("use", BUILDING_USES)
    chk.number("height_m", required=True, minimum=0, maximum=1000, exclusive_min=True)
    chk.enum("height_source", HEIGHT_SOURCES, default="survey")
    chk.number("storeys", required=True, minimum=1, maximum=299, integer=True)
    ground = chk.number("ground_elevation_m", minimum=-500, maximum=9000)
    chk.columns["ground_elevation_m"] = ground.fillna(0.0)
    chk.timestamp("valid_from")
    chk.geometry("polygon", srid, column="footprint")
    _source(chk, source_file)
    return _stage(chk, "buildings", ("footprint",))


def prepare_houses(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["house_code", "storey", "area_m2"])
    _codes(chk, "house_code", "house", required=True, what="house_code")
    storey = chk.number("storey", required=True, minimum=-20, maximum=300, integer=True)
    zero = (storey == 0).fillna(False).to_numpy(dtype=bool)
    chk.reject(zero, "storey 0 does not exist (1 is the ground floor, -1 the first basement)")
    chk.number("area_m2", required=True, minimum=0, maximum=100000, exclusive_min=True)
    chk.text("use")
    chk.constant("source_file", source_file)
    return _stage(chk, "houses", ())


def prepare_pipe_nodes(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["code", "network", "kind", "ground_elevation_m", "invert_elevation_m"])
    chk.text("code", required=True, pattern=NAME_PATTERN, what="node code")
    chk.enum("network", PIPE_NETWORKS)
    chk.enum("kind", PIPE_NODE_KINDS)
    ground = chk.number("ground_elevation_m", required=True, minimum=-500, maximum=9000)
    invert = chk.number("invert_elevation_m", required=True, minimum=-1000, maximum=9000)
    above = (invert > ground).fillna(False).to_numpy(dtype=bool)
    chk.reject(
        above, [f"invert {i:g} m is above ground {g:g} m" for i, g in zip(invert[above], ground[above], strict=True)]
    )
    geoms = chk.geometry("point", srid)
    ok = np.array([g is not None for g in geoms])
    xy = shapely.get_coordinates(geoms[ok])
    z = ground.to_numpy(dtype=float)[ok]
    out = np.full(len(geoms), None, dtype=object)
    out[ok] = shapely.points(xy[:, 0], xy[:, 1], np.nan_to_num(z))
    chk.columns["geom"] = out
    _source(chk, source_file)
    return _stage(chk, "pipe_nodes")


def prepare_pipes(chk: Checker, srid: int, source_file: str) -> Prepared:
    """Pipes; rows without geometry (a CSV table) get the straight line between their nodes in the merge."""
    chk.require_columns(["code", "network", "from_node", "to_node", "diameter_mm", "start_invert_m", "end_invert_m"])
    chk.text("code", required=True, pattern=NAME_PATTERN, what="pipe code")
    chk.enum("network", PIPE_NETWORKS)
    chk.text("from_node", required=True, pattern=NAME_PATTERN)
    chk.text("to_node", required=True, pattern=NAME_PATTERN)
    chk.number("diameter_mm", required=True, minimum=0, maximum=10000, exclusive_min=True)
    chk.text("material")
    start = chk.number("start_invert_m", required=True, minimum=-1000, maximum=9000)
    end = chk.number("end_invert_m", required=True, minimum=-1000, maximum=9000)
    chk.number("built_year", minimum=1800, maximum=2200, integer=True)
    geoms = chk.geometry("line", srid, allow_missing=True)
    chk.columns["geom"] = lines_with_invert_z(geoms, start.to_numpy(dtype=float), end.to_numpy(dtype=float))
    _source(chk, source_file)
    return _stage(chk, "pipes")


def lines_with_invert_z(geoms: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """3D pipe lines: Z runs linearly with distance from ``start`` to ``end`` invert; 3D input keeps its Z.
    Vectorised over all lines: one coordinate array, cumulative lengths per line by index."""
    out = np.full(len(geoms), None, dtype=object)
    ok = np.array([g is not None for g in geoms])
    if not ok.any():
        return out
    sel = geoms[ok]
    has_z = shapely.has_z(sel)
    coords, index = shapely.get_coordinates(sel, include_z=False, return_index=True)
    seg = np.hypot(np.diff(coords[:, 0]), np.diff(coords[:, 1]))
    seg[index[1:] != index[:-1]] = 0.0  # no segment between two lines
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    first = np.searchsorted(index, np.arange(len(sel)))
    cum -= cum[first][index]
    last = np.concatenate([first[1:] - 1, [len(index) - 1]])
    total = cum[last]
    frac = cum / np.where(total[index] > 0, total[index], 1.0)
    z = start[ok][index] + (end[ok][index] - start[ok][index]) * frac
    if has_z.any():
        z_in = shapely.get_coordinates(sel, include_z=True)[:, 2]
        keep_z = has_z[index] & np.isfinite(z_in)
        z = np.where(keep_z, z_in, z)
    lines = shapely.linestrings(coords[:, 0], coords[:, 1], z, indices=index)
    out[ok] = lines
    return out


def prepare_devices(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["code", "kind"])
    chk.text("code", required=True, pattern=NAME_PATTERN, what="device code")
    chk.text("kind", required=True, pattern=SLUG_PATTERN)
    chk.text("name")
    chk.enum("status", DEVICE_STATUSES, default="online")
    chk.date("installed_at")
    chk.text("pipe_node_code", pattern=NAME_PATTERN)
    _codes(chk, "building_code", "building", required=False)
    geoms = chk.geometry("point", srid)
    chk.columns["geom"] = shapely.force_2d(geoms)
    _source(chk, source_file)
    return _stage(chk, "devices")


def prepare_observations(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["device_code", "observed_at", "property", "value"])
    chk.text("device_code", required=True, pattern=NAME_PATTERN)
    chk.text("property", required=True, pattern=r"[a-z][a-z0-9_]{0,62}")
    chk.timestamp("observed_at", required=True)
    chk.number("value", required=True)
    return _stage(chk, "observations", ())


def prepare_events(chk: Checker, srid: int, source_file: str) -> Prepared:
    chk.require_columns(["code", "category", "status", "reported_at", "description"])
    chk.text("code", required=True, pattern=codes.EVENT_CODE_RE.pattern.strip("^$"), what="event code")
    chk.text("category", required=True, pattern=SLUG_PATTERN)
    chk.text("subcategory")
    status = chk.enum("status", EVENT_STATUSES)
    reported = chk.timestamp("reported_at", required=True)
    updated = chk.timestamp("updated_at")
    chk.columns["updated_at"] = updated.where(updated.notna(), reported)
    chk.timestamp("due_at")
    closed = chk.timestamp("closed_at")
    mismatch = ((status == "closed") != closed.notna()).to_numpy(dtype=bool) & status.notna().to_numpy(dtype=bool)
    chk.reject(mismatch, "closed_at must be set exactly when the status is closed")
    chk.text("department")
    count = chk.number("reopen_count", minimum=0, maximum=1000, integer=True)
    chk.columns["reopen_count"] = count.fillna(0)
    chk.text("description", required=True)
    chk.text("reporter_contact")
    _codes(chk, "building_code", "building", required=False)
    geoms = chk.geometry("point", srid)
    chk.columns["geom"] = shapely.force_2d(geoms)
    _source(chk, source_file)
    return _stage(chk, "events")


PREPARERS: dict[str, Callable[[Checker, int, str], Prepared]] = {
    "admin": prepare_admin,
    "parcels": prepare_parcels,
    "buildings": prepare_buildings,
    "houses": prepare_houses,
    "pipe_nodes": prepare_pipe_nodes,
    "pipes": prepare_pipes,
    "devices": prepare_devices,
    "observations": prepare_observations,
    "events": prepare_events,
}
