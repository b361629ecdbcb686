"""Building footprints inside parcels, planning controls of the parcels, and the housing units.

Footprints are laid out in slots on a per-parcel raster: a slot's footprint stays ``gap / 2`` inside the
slot and every slot stays ``setback`` inside the parcel, so footprints never overlap or touch each other
or the parcel boundary. Everything is computed over all slots at once with numpy and shapely 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from sample_data.layout import Admin, Parcels, Terrain


@dataclass(frozen=True)
class Style:
    """How one kind of development fills its parcel (metres, storeys, years)."""

    use: str
    setback: float
    pitch_x: tuple[float, float]
    pitch_y: tuple[float, float]
    size: tuple[float, float]
    """Footprint width (x) range."""
    aspect: tuple[float, float]
    """Footprint depth (y) / width (x)."""
    gap: float
    occupancy: float
    storeys: tuple[int, int]
    storey_height: tuple[float, float]
    years: tuple[int, int]
    p_l: float = 0.0
    p_courtyard: float = 0.0
    p_multi: float = 0.0
    p_chamfer: float = 0.0


STYLES: dict[str, Style] = {
    # 城中村 hand-shake buildings: small footprints, 2-3 m lanes, 5-9 storeys.
    "village": Style(
        "residential",
        3,
        (12.5, 14.5),
        (12.5, 14.5),
        (8.5, 12),
        (0.8, 1.25),
        1.8,
        0.92,
        (5, 9),
        (3.0, 3.2),
        (1992, 2012),
        p_l=0.01,
    ),
    "villa": Style(
        "residential", 5, (22, 28), (22, 28), (11, 15), (0.8, 1.2), 8, 0.9, (2, 4), (3.0, 3.3), (1998, 2015), p_l=0.15
    ),
    "tower": Style(
        "residential",
        8,
        (58, 75),
        (62, 80),
        (25, 40),
        (0.85, 1.15),
        15,
        0.92,
        (18, 42),
        (3.0, 3.15),
        (2003, 2022),
        p_l=0.03,
        p_chamfer=0.1,
    ),
    "slab": Style(
        "residential",
        8,
        (60, 80),
        (35, 45),
        (40, 60),
        (0.22, 0.35),
        12,
        0.92,
        (8, 18),
        (3.0, 3.15),
        (1996, 2015),
        p_l=0.12,
    ),
    "office": Style(
        "office",
        10,
        (80, 110),
        (80, 110),
        (32, 50),
        (0.8, 1.25),
        20,
        0.95,
        (25, 60),
        (3.9, 4.3),
        (2006, 2024),
        p_courtyard=0.02,
        p_multi=0.02,
        p_chamfer=0.25,
    ),
    "mall": Style(
        "commercial",
        8,
        (110, 180),
        (110, 180),
        (70, 140),
        (0.6, 1.0),
        15,
        1.0,
        (3, 6),
        (4.2, 4.5),
        (2004, 2022),
        p_courtyard=0.1,
        p_chamfer=0.6,
    ),
    "mixed": Style(
        "mixed",
        8,
        (60, 80),
        (60, 80),
        (30, 42),
        (0.85, 1.15),
        15,
        0.92,
        (20, 45),
        (3.2, 3.5),
        (2008, 2023),
        p_chamfer=0.2,
    ),
    "factory": Style(
        "industrial",
        8,
        (70, 100),
        (40, 55),
        (50, 80),
        (0.35, 0.55),
        12,
        0.9,
        (3, 8),
        (4.2, 4.5),
        (1988, 2008),
        p_l=0.05,
        p_multi=0.08,
    ),
    "rnd": Style(
        "office",
        8,
        (55, 75),
        (55, 75),
        (30, 42),
        (0.8, 1.2),
        15,
        0.9,
        (10, 28),
        (4.0, 4.4),
        (2010, 2024),
        p_chamfer=0.15,
    ),
    "school": Style(
        "education",
        10,
        (70, 95),
        (45, 60),
        (40, 65),
        (0.3, 0.45),
        12,
        0.9,
        (4, 6),
        (3.6, 4.0),
        (1995, 2020),
        p_l=0.5,
        p_courtyard=0.1,
    ),
    "hospital": Style(
        "healthcare",
        10,
        (60, 90),
        (60, 90),
        (40, 60),
        (0.4, 0.8),
        15,
        0.9,
        (6, 20),
        (3.8, 4.2),
        (1998, 2020),
        p_l=0.2,
        p_courtyard=0.25,
    ),
    "culture": Style(
        "public",
        10,
        (90, 130),
        (90, 130),
        (50, 90),
        (0.6, 1.0),
        15,
        0.95,
        (2, 5),
        (4.2, 4.5),
        (2005, 2022),
        p_courtyard=0.35,
        p_multi=0.25,
        p_chamfer=0.2,
    ),
    "park": Style("public", 10, (80, 140), (80, 140), (8, 16), (0.7, 1.3), 10, 0.25, (1, 2), (3.5, 4.5), (2000, 2022)),
    "ancillary": Style(
        "other", 0, (15, 22), (14, 14), (6, 11), (0.7, 1.2), 2.5, 0.55, (1, 3), (3.5, 4.5), (1995, 2022)
    ),
    "utility": Style("other", 5, (50, 80), (50, 80), (12, 25), (0.6, 1.4), 8, 0.7, (1, 3), (4.0, 4.5), (1995, 2020)),
}
STYLE_NAMES = tuple(STYLES)
LAND_USE_STYLES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "R1": (("villa",), (1.0,)),
    "R2": (("tower", "slab"), (0.7, 0.3)),
    "R3": (("village",), (1.0,)),
    "C1": (("office", "mall", "mixed"), (0.4, 0.35, 0.25)),
    "M1": (("factory",), (1.0,)),
    "M0": (("rnd",), (1.0,)),
    "GIC2": (("culture",), (1.0,)),
    "GIC3": (("hospital",), (1.0,)),
    "GIC4": (("school",), (1.0,)),
    "G1": (("park",), (1.0,)),
    "U1": (("utility",), (1.0,)),
    "S1": ((), ()),
}

ANCILLARY_HOSTS = ("tower", "slab", "office", "mixed", "factory", "rnd", "school", "hospital", "culture")
ANCILLARY_DEPTH_M = 14.0
MIN_SPECIAL_SHAPES = 4
HEIGHT_STEPS = np.array([12, 15, 18, 24, 30, 36, 45, 50, 60, 80, 100, 120, 150, 180, 200, 250, 300, 350], float)
HEIGHT_VIOLATION_SHARE = 0.022
FAR_VIOLATION_SHARE = 0.025
BLANK_CODE_SHARE = 0.02
RESIDENTIAL_USES = ("residential", "mixed")


@dataclass
class Buildings:
    geometry: np.ndarray
    code: np.ndarray
    """19-digit building code, or None for the ~2% the loader must assign."""
    name: np.ndarray
    use: np.ndarray
    style: np.ndarray
    height_m: np.ndarray
    storeys: np.ndarray
    ground_elevation_m: np.ndarray
    source_id: np.ndarray
    valid_from: np.ndarray
    parcel: np.ndarray
    grid: np.ndarray


@dataclass
class ParcelControls:
    far_limit: np.ndarray
    height_limit_m: np.ndarray
    coverage_limit: np.ndarray
    approved_at: np.ndarray


def _style_params(field: str) -> np.ndarray:
    return np.array([getattr(STYLES[s], field) for s in STYLE_NAMES], dtype=float)


def _uniform(rng: np.random.Generator, bounds: np.ndarray) -> np.ndarray:
    """One draw per row of an (n, 2) array of [low, high] bounds."""
    return bounds[:, 0] + rng.random(len(bounds)) * (bounds[:, 1] - bounds[:, 0])


def _footprints(
    x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray, shape: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Footprint polygons for boxes (x0, y0, w, h); ``shape`` 0 box, 1 L, 2 courtyard, 3 two parts, 4 chamfered."""
    n = len(x0)
    out = np.empty(n, dtype=object)
    box = shape == 0
    out[box] = shapely.box(x0[box], y0[box], x0[box] + w[box], y0[box] + h[box])

    sel = np.flatnonzero(shape == 1)
    if len(sel):
        ww, hh = w[sel], h[sel]
        cw, ch = ww * rng.uniform(0.4, 0.6, len(sel)), hh * rng.uniform(0.4, 0.6, len(sel))
        z = np.zeros(len(sel))
        rel = np.stack(
            [np.stack(p, axis=1) for p in [(z, z), (ww, z), (ww, hh - ch), (ww - cw, hh - ch), (ww - cw, hh), (z, hh)]],
            axis=1,
        )
        # Cut a random corner: mirror the north-east cut inside the box.
        flip = rng.integers(0, 2, (len(sel), 2)).astype(bool)
        rel[:, :, 0] = np.where(flip[:, :1], ww[:, None] - rel[:, :, 0], rel[:, :, 0])
        rel[:, :, 1] = np.where(flip[:, 1:], hh[:, None] - rel[:, :, 1], rel[:, :, 1])
        rel += np.stack([x0[sel], y0[sel]], axis=1)[:, None, :]
        out[sel] = shapely.polygons(rel)

    sel = np.flatnonzero(shape == 2)
    if len(sel):
        ww, hh = w[sel], h[sel]
        depth = np.minimum(rng.uniform(10, 14, len(sel)), (np.minimum(ww, hh) - 8.0) / 2.0)
        shells = shapely.linearrings(_ring(x0[sel], y0[sel], x0[sel] + ww, y0[sel] + hh))
        holes = shapely.linearrings(_ring(x0[sel] + depth, y0[sel] + depth, x0[sel] + ww - depth, y0[sel] + hh - depth))
        out[sel] = shapely.polygons(shells, holes=holes[:, None])

    sel = np.flatnonzero(shape == 3)
    if len(sel):
        ww, hh = w[sel], h[sel]
        along_x = ww >= hh
        length = np.where(along_x, ww, hh)
        a = (length - 6.0) * rng.uniform(0.4, 0.6, len(sel))
        ax1 = np.where(along_x, x0[sel] + a, x0[sel] + ww)
        ay1 = np.where(along_x, y0[sel] + hh, y0[sel] + a)
        bx0 = np.where(along_x, ax1 + 6.0, x0[sel])
        by0 = np.where(along_x, y0[sel], ay1 + 6.0)
        part_a = shapely.box(x0[sel], y0[sel], ax1, ay1)
        part_b = shapely.box(bx0, by0, x0[sel] + ww, y0[sel] + hh)
        out[sel] = shapely.multipolygons(np.stack([part_a, part_b], axis=1))

    sel = np.flatnonzero(shape == 4)
    if len(sel):
        ww, hh = w[sel], h[sel]
        c = np.minimum(ww, hh) * rng.uniform(0.1, 0.2, len(sel))
        z = np.zeros(len(sel))
        pts = [(c, z), (ww - c, z), (ww, c), (ww, hh - c), (ww - c, hh), (c, hh), (z, hh - c), (z, c)]
        rel = np.stack([np.stack(p, axis=1) for p in pts], axis=1) + np.stack([x0[sel], y0[sel]], axis=1)[:, None, :]
        out[sel] = shapely.polygons(rel)
    return out


def _ring(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
    return np.stack(
        [np.stack(p, axis=1) for p in [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]],
        axis=1,
    )


def make_buildings(
    parcels: Parcels, admin: Admin, terrain: Terrain, rng: np.random.Generator
) -> tuple[Buildings, ParcelControls]:
    """Footprints for every parcel, their codes, heights and dates, and planning controls such that
    most parcels comply and a few per cent of buildings break a height or FAR limit."""
    n_parcels = len(parcels.geometry)
    style_of_parcel = np.full(n_parcels, -1, dtype=np.int64)
    for i, lu in enumerate(parcels.land_use):
        styles, probs = LAND_USE_STYLES[str(lu)]
        if styles:
            style_of_parcel[i] = STYLE_NAMES.index(styles[int(rng.choice(len(styles), p=probs))])
    built = np.flatnonzero(style_of_parcel >= 0)
    bounds = shapely.bounds(parcels.geometry[built])
    setback = _style_params("setback")[style_of_parcel[built]]
    lx0, ly0 = bounds[:, 0] + setback, bounds[:, 1] + setback
    lw, lh = bounds[:, 2] - setback - lx0, bounds[:, 3] - setback - ly0
    # Estates, campuses and factories keep a strip along their south edge for low ancillary buildings
    # (guard houses, shops, substations, kindergartens): a second lot on the same parcel.
    host = np.isin(np.array(STYLE_NAMES)[style_of_parcel[built]], ANCILLARY_HOSTS) & (lh >= 60.0)
    strip = ANCILLARY_DEPTH_M
    lot_parcel = np.concatenate([built, built[host]])
    st = np.concatenate([style_of_parcel[built], np.full(int(host.sum()), STYLE_NAMES.index("ancillary"))])
    ix0 = np.concatenate([lx0, lx0[host]])
    iy0 = np.concatenate([ly0 + np.where(host, strip, 0.0), ly0[host]])
    inner_w = np.concatenate([lw, lw[host]])
    inner_h = np.concatenate([lh - np.where(host, strip, 0.0), np.full(int(host.sum()), strip)])
    size_lo = _style_params("size")[st, 0]
    pitch_x = _uniform(rng, _style_params("pitch_x")[st])
    pitch_y = _uniform(rng, _style_params("pitch_y")[st])
    aspect = _uniform(rng, _style_params("aspect")[st])
    nx = np.where(inner_w >= size_lo, np.maximum(np.floor(inner_w / pitch_x), 1), 0).astype(np.int64)
    ny = np.where(inner_h >= size_lo * aspect, np.maximum(np.floor(inner_h / pitch_y), 1), 0).astype(np.int64)
    slot_w = inner_w / np.maximum(nx, 1)
    slot_h = inner_h / np.maximum(ny, 1)
    base_size = _uniform(rng, _style_params("size")[st])
    storey_bounds = _style_params("storeys")[st]
    base_storeys = rng.integers(storey_bounds[:, 0], storey_bounds[:, 1] + 1)
    year_bounds = _style_params("years")[st]
    base_year = rng.integers(year_bounds[:, 0], year_bounds[:, 1] + 1)

    # One row per slot.
    n_slots = nx * ny
    slot_parcel = np.repeat(np.arange(len(lot_parcel)), n_slots)
    local = np.arange(len(slot_parcel)) - np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
    col, row = local % nx[slot_parcel], local // nx[slot_parcel]
    sp = slot_parcel
    sst = st[sp]
    gap = _style_params("gap")[sst]
    w = np.minimum(base_size[sp] * rng.uniform(0.9, 1.1, len(sp)), slot_w[sp] - gap)
    h = np.minimum(w * aspect[sp] * rng.uniform(0.92, 1.08, len(sp)), slot_h[sp] - gap)
    keep = (rng.random(len(sp)) < _style_params("occupancy")[sst]) & (w >= 0.7 * size_lo[sp]) & (h >= 6.0)
    x0 = ix0[sp] + col * slot_w[sp] + gap / 2 + rng.random(len(sp)) * (slot_w[sp] - gap - w)
    y0 = iy0[sp] + row * slot_h[sp] + gap / 2 + rng.random(len(sp)) * (slot_h[sp] - gap - h)
    # Round to the centimetre inside the slot (floor the origin, floor the size) so nothing grows.
    x0, y0 = np.ceil(x0 * 100) / 100, np.ceil(y0 * 100) / 100
    w, h = np.floor(w * 100) / 100 - 0.01, np.floor(h * 100) / 100 - 0.01

    u = rng.random(len(sp))
    p = np.stack([_style_params(f)[sst] for f in ("p_l", "p_courtyard", "p_multi", "p_chamfer")], axis=1)
    edges = np.cumsum(p, axis=1)
    shape = np.select([u < edges[:, 0], u < edges[:, 1], u < edges[:, 2], u < edges[:, 3]], [1, 2, 3, 4], 0)
    small = np.minimum(w, h)
    shape = np.where((shape == 1) & (small < 16), 0, shape)
    shape = np.where((shape == 2) & (small < 32), 0, shape)
    shape = np.where((shape == 3) & (np.maximum(w, h) < 26), 0, shape)
    # Make sure even a small district shows each special shape a few times.
    for kind, fits in ((1, small >= 16), (2, small >= 32), (3, np.maximum(w, h) >= 26)):
        missing = MIN_SPECIAL_SHAPES - int((keep & (shape == kind)).sum())
        pool = np.flatnonzero(keep & fits & (shape == 0) & (sst != STYLE_NAMES.index("village")))
        if missing > 0 and len(pool):
            shape[rng.choice(pool, size=min(missing, len(pool)), replace=False)] = kind

    sel = np.flatnonzero(keep)
    geoms = _footprints(x0[sel], y0[sel], w[sel], h[sel], shape[sel], rng)
    parcel_idx = lot_parcel[sp[sel]]
    inside = shapely.contains_properly(parcels.geometry[parcel_idx], geoms)
    sel, geoms, parcel_idx = sel[inside], geoms[inside], parcel_idx[inside]
    n = len(sel)
    bst = sst[sel]

    style_lo, style_hi = storey_bounds[sp[sel], 0], storey_bounds[sp[sel], 1]
    storeys = np.clip(base_storeys[sp[sel]] + rng.integers(-2, 3, n), style_lo, style_hi).astype(np.int64)
    storey_h = _uniform(rng, _style_params("storey_height")[bst])
    height = np.round(storeys * storey_h, 1)
    uses = np.array([STYLES[s].use for s in STYLE_NAMES], dtype=object)[bst]
    uses = np.where((bst == STYLE_NAMES.index("village")) & (rng.random(n) < 0.2), "mixed", uses)
    ancillary = bst == STYLE_NAMES.index("ancillary")
    uses = np.where(
        ancillary, rng.choice(np.array(["other", "commercial", "public"], dtype=object), n, p=[0.5, 0.3, 0.2]), uses
    )

    centroid = shapely.get_coordinates(shapely.centroid(geoms))
    ground = terrain.elevation(centroid[:, 0], centroid[:, 1])
    year = np.minimum(base_year[sp[sel]] + rng.integers(0, 3, n), 2025)
    valid_from = np.array(
        [
            f"{y:04d}-{m:02d}-{d:02d}"
            for y, m, d in zip(year, rng.integers(1, 13, n), rng.integers(1, 29, n), strict=True)
        ],
        dtype=object,
    )
    grid = parcels.grid[parcel_idx]

    # Building numbers: per grid, north to south then west to east; ~2% left for the loader to assign.
    order = np.lexsort((np.round(centroid[:, 0], 2), -np.round(centroid[:, 1], 2), grid))
    blank = rng.random(n) < BLANK_CODE_SHARE
    code = np.full(n, None, dtype=object)
    coded = order[~blank[order]]
    g_sorted = grid[coded]
    starts = np.r_[0, np.flatnonzero(np.diff(g_sorted)) + 1]
    number = np.arange(len(coded)) - np.repeat(starts, np.diff(np.r_[starts, len(coded)])) + 1
    if len(number) and number.max() > 99999:
        raise ValueError("a grid holds more than 99999 buildings; the layout needs more grids")
    grid_codes = np.array([u.code for u in admin.units], dtype=object)
    code[coded] = [f"{gc}{k:05d}" for gc, k in zip(grid_codes[g_sorted], number, strict=True)]

    # Names: the parcel's project name and a number in slot order.
    seq = _rank_within(parcel_idx, sel)
    per_parcel = np.bincount(parcel_idx, minlength=n_parcels)
    names = np.array(
        [
            _building_name(str(parcels.name[pi]), STYLE_NAMES[s], int(k), int(per_parcel[pi]))
            for pi, s, k in zip(parcel_idx, bst, seq, strict=True)
        ],
        dtype=object,
    )
    buildings = Buildings(
        geometry=geoms,
        code=code,
        name=names,
        use=uses,
        style=np.array(STYLE_NAMES, dtype=object)[bst],
        height_m=height,
        storeys=storeys,
        ground_elevation_m=ground,
        source_id=np.array([f"GEN-{i + 1:07d}" for i in range(n)], dtype=object),
        valid_from=valid_from,
        parcel=parcel_idx,
        grid=grid,
    )
    controls = _planning_controls(parcels, buildings, storey_h, year, rng)
    return buildings, controls


def _rank_within(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """1-based rank of each row by ``key`` within its group."""
    order = np.lexsort((key, group))
    g = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    rank = np.empty(len(group), dtype=np.int64)
    rank[order] = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)])) + 1
    return rank


def _building_name(project: str, style: str, k: int, count: int) -> str:
    if style in ("village",):
        return f"{project}{k}号"
    if style in ("tower", "slab", "villa", "mixed", "factory", "rnd"):
        return f"{project}{k}栋"
    if style in ("office", "mall", "utility") and count == 1:
        return project
    if style == "office" and count <= 8:
        return f"{project}{'ABCDEFGH'[k - 1]}座"
    if style == "park":
        return f"{project}{k}号亭"
    return f"{project}{k}号楼"


def _planning_controls(
    parcels: Parcels, b: Buildings, storey_h: np.ndarray, year: np.ndarray, rng: np.random.Generator
) -> ParcelControls:
    """Limits a little above what was built, then a few deliberate breaches: storeys added above the
    height limit on ~2% of buildings, and FAR limits set below what ~2.5% of small built parcels carry."""
    n_parcels = len(parcels.geometry)
    parcel_area = shapely.area(parcels.geometry)
    fp_area = shapely.area(b.geometry)
    built_area = np.bincount(b.parcel, weights=fp_area, minlength=n_parcels)
    hmax = np.zeros(n_parcels)
    np.maximum.at(hmax, b.parcel, b.height_m)
    far = np.bincount(b.parcel, weights=fp_area * b.storeys, minlength=n_parcels) / parcel_area
    coverage = built_area / parcel_area

    empty = hmax == 0
    want_h = np.where(empty, 15.0, hmax * rng.uniform(1.05, 1.25, n_parcels))
    height_limit = HEIGHT_STEPS[np.minimum(np.searchsorted(HEIGHT_STEPS, want_h), len(HEIGHT_STEPS) - 1)]
    height_limit = np.maximum(height_limit, np.ceil(want_h / 50) * 50 * (want_h > HEIGHT_STEPS[-1]))
    far_limit = np.where(empty, 0.1, np.ceil(far * rng.uniform(1.08, 1.3, n_parcels) * 10) / 10)
    coverage_limit = np.minimum(np.ceil((coverage + rng.uniform(0.03, 0.1, n_parcels)) * 20) / 20, 0.95)

    # Height breaches: extra storeys (加建) on a random ~2% of buildings.
    n = len(b.geometry)
    eligible = np.flatnonzero(~np.isin(b.style, ("park", "utility", "ancillary")))
    breach = np.sort(rng.choice(eligible, size=max(1, round(HEIGHT_VIOLATION_SHARE * n)), replace=False))
    limit = height_limit[b.parcel[breach]]
    new_storeys = np.floor(limit / storey_h[breach]).astype(np.int64) + rng.integers(1, 4, len(breach))
    b.storeys[breach] = new_storeys
    b.height_m[breach] = np.round(new_storeys * storey_h[breach], 1)
    low = b.height_m[breach] <= limit
    b.storeys[breach[low]] += 1
    b.height_m[breach[low]] = np.round(b.storeys[breach[low]] * storey_h[breach[low]], 1)

    # FAR breaches: a few small built parcels whose limit is below what stands on them.
    far = np.bincount(b.parcel, weights=fp_area * b.storeys, minlength=n_parcels) / parcel_area
    count = np.bincount(b.parcel, minlength=n_parcels)
    candidates = np.flatnonzero((count >= 1) & (count <= 12) & (far > 0.3))
    k = min(len(candidates), max(1, round(FAR_VIOLATION_SHARE * n_parcels)))
    over = rng.choice(candidates, size=k, replace=False)
    far_limit[over] = np.maximum(np.floor(far[over] * rng.uniform(0.7, 0.9, k) * 10) / 10, 0.1)

    first_year = np.full(n_parcels, 2026)
    np.minimum.at(first_year, b.parcel, year)
    approved_year = np.where(
        first_year == 2026, rng.integers(2008, 2025, n_parcels), first_year - rng.integers(1, 4, n_parcels)
    )
    approved_at = np.array(
        [
            f"{y:04d}-{m:02d}-{d:02d}"
            for y, m, d in zip(
                approved_year, rng.integers(1, 13, n_parcels), rng.integers(1, 29, n_parcels), strict=True
            )
        ],
        dtype=object,
    )
    return ParcelControls(
        far_limit=np.round(far_limit, 1),
        height_limit_m=height_limit.astype(float),
        coverage_limit=np.round(coverage_limit, 2),
        approved_at=approved_at,
    )


def violation_mask(parcels_area: np.ndarray, b: Buildings, controls: ParcelControls) -> np.ndarray:
    """True for buildings above their parcel's height limit or standing on a parcel above its FAR limit."""
    n_parcels = len(parcels_area)
    far = np.bincount(b.parcel, weights=shapely.area(b.geometry) * b.storeys, minlength=n_parcels) / parcels_area
    over_far = far > controls.far_limit
    return (b.height_m > controls.height_limit_m[b.parcel]) | over_far[b.parcel]


# ---------------------------------------------------------------------------------------------------------
# housing units


@dataclass(frozen=True)
class Houses:
    house_code: list[str]
    storey: np.ndarray
    area_m2: np.ndarray
    use: np.ndarray


def make_houses(b: Buildings, rng: np.random.Generator) -> Houses:
    """Housing units of the coded residential and mixed buildings; room number = storey * 100 + unit."""
    has_code = np.array([c is not None for c in b.code], dtype=bool)
    idx = np.flatnonzero(np.isin(b.use, RESIDENTIAL_USES) & has_code)
    idx = idx[np.argsort(b.code[idx].astype(str), kind="stable")]
    area = shapely.area(b.geometry[idx])
    style = b.style[idx]
    storeys = b.storeys[idx]
    per_floor = np.select(
        [style == "village", style == "villa", style == "tower", style == "slab", style == "mixed"],
        [
            np.clip(np.round(area / 45), 2, 4),
            np.ones(len(idx)),
            np.clip(np.round(area / 140), 4, 8),
            np.clip(np.round(area / 110), 4, 12),
            np.clip(np.round(area / 150), 4, 8),
        ],
        1,
    ).astype(np.int64)
    # Villas are one house each; towers start above the lobby; mixed towers above a 4-storey podium.
    first = np.select([style == "tower", style == "mixed"], [2, 5], 1)
    last = np.where(style == "villa", 1, storeys)
    floors = np.maximum(last - first + 1, 0)
    rows_per_building = floors * per_floor
    bi = np.repeat(np.arange(len(idx)), rows_per_building)
    k = np.arange(len(bi)) - np.repeat(np.cumsum(rows_per_building) - rows_per_building, rows_per_building)
    storey = first[bi] + k // per_floor[bi]
    unit = k % per_floor[bi] + 1
    usable = np.where(style[bi] == "villa", area[bi] * storeys[bi] * 0.85, area[bi] * 0.78 / per_floor[bi])
    unit_area = np.round(usable * rng.uniform(0.88, 1.12, len(bi)), 2)
    use = np.where((style[bi] == "village") & (b.use[idx][bi] == "mixed") & (storey == 1), "commercial", "residential")
    codes = b.code[idx]
    house_code = [f"{codes[i]}{s * 100 + u:06d}" for i, s, u in zip(bi, storey, unit, strict=True)]
    if len(storey) and int(storey.max()) * 100 + int(per_floor.max()) > 999_999:
        raise ValueError("room number does not fit in 6 digits")
    return Houses(house_code=house_code, storey=storey, area_m2=unit_area, use=use.astype(object))
