"""Road lattice, coastline, terrain, administrative units and parcels of the demo district.

All coordinates are EPSG:4547 metres. The district is a lattice of road centre-lines: column ``c`` of cells
lies between vertical lines ``c`` and ``c + 1``, row ``r`` between horizontal lines ``r`` and ``r + 1``.
The west edge of column 0 is the Shenzhen Bay coastline instead of a straight line. Administrative units
are rectangles of cells whose rings contain every lattice vertex on their boundary, so a child's vertices
are always vertices (or points on axis-parallel edges) of its parent and ``ST_Covers`` holds exactly.
Blocks are cells shrunk by half the width of the surrounding roads; parcels tile the blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely
from pyproj import Transformer

from sample_data.names import (
    COMMUNITY_NAMES,
    COMPANY_WORDS,
    ESTATE_SUFFIXES,
    ESTATE_WORDS,
    EW_ROAD_NAMES,
    NS_ROAD_NAMES,
    STREET_NAMES,
    VILLAGE_NAMES,
    cycled_name,
)
from sample_data.names import road_name as numbered_road_name

HOUHAI_LONLAT = (113.945, 22.515)
DISTRICT_CODE = "440305"
DISTRICT_NAME = "南山区"
COASTAL_ROAD_M = 35.0
"""Width between the coastline and the first blocks (coastal avenue and sea wall promenade)."""

CELLS_PER_SCALE = 70
STREETS_PER_SCALE = 3
COMMUNITIES_PER_SCALE = 8
GRIDS_PER_SCALE = 40
MAX_SCALE = 999 // STREETS_PER_SCALE

Rect = tuple[int, int, int, int]
"""Cell index ranges ``(c0, c1, r0, r1)``, half-open."""


@lru_cache(maxsize=1)
def houhai_xy() -> tuple[float, float]:
    """Houhai centre in EPSG:4547, rounded to the metre so PROJ versions cannot change the output."""
    to_4547 = Transformer.from_crs("EPSG:4490", "EPSG:4547", always_xy=True)
    x, y = to_4547.transform(*HOUHAI_LONLAT)
    return float(round(x)), float(round(y))


@dataclass(frozen=True)
class Lattice:
    """Road centre-lines and the coastline."""

    xs: np.ndarray
    """x of vertical lines 0..C; ``xs[0]`` is nominal, the coast replaces it."""
    ys: np.ndarray
    """y of horizontal lines 0..R."""
    road_width_x: np.ndarray
    """Width (m) of vertical road j (index 0 unused: the coastal avenue)."""
    road_width_y: np.ndarray
    coast_x: np.ndarray
    coast_y: np.ndarray
    """Coastline vertices south to north; includes every ``ys[r]``."""
    coast_row_index: np.ndarray
    """Index into the coast arrays of the vertex at ``ys[r]``."""

    @property
    def n_cols(self) -> int:
        return len(self.xs) - 1

    @property
    def n_rows(self) -> int:
        return len(self.ys) - 1

    def vertex_x(self, c: int, r: int) -> float:
        return float(self.coast_x[self.coast_row_index[r]]) if c == 0 else float(self.xs[c])

    def coast_x_at(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, self.coast_y, self.coast_x)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return float(self.coast_x.min()), float(self.ys[0]), float(self.xs[-1]), float(self.ys[-1])


def _road_widths(n: int, rng: np.random.Generator) -> np.ndarray:
    widths = rng.choice(np.array([20.0, 24.0, 30.0]), size=n, p=[0.45, 0.3, 0.25])
    first_main = int(rng.integers(0, 3))
    widths[first_main::3] = rng.choice(np.array([40.0, 50.0]), size=len(widths[first_main::3]))
    return widths


def make_lattice(scale: int, rng: np.random.Generator) -> Lattice:
    """About ``70 * scale`` cells of 210-300 m x 190-280 m; scale 1 is centred on Houhai."""
    n_cols = max(2, round(10 * math.sqrt(scale)))
    n_rows = max(2, math.ceil(CELLS_PER_SCALE * scale / n_cols))
    widths = np.round(rng.uniform(210, 300, n_cols))
    heights = np.round(rng.uniform(190, 280, n_rows))
    cx, cy = houhai_xy()
    # Larger districts grow east and north from the scale-1 south-west corner (inland from the bay).
    x0, y0 = cx - 1250.0, cy - 820.0
    xs = x0 + np.concatenate([[0.0], np.cumsum(widths)])
    ys = y0 + np.concatenate([[0.0], np.cumsum(heights)])

    coast_y_parts: list[np.ndarray] = []
    row_index = np.zeros(n_rows + 1, dtype=np.int64)
    offset = 0
    for r in range(n_rows):
        m = max(2, math.ceil(heights[r] / 60.0))
        row_index[r] = offset
        coast_y_parts.append(np.round(ys[r] + heights[r] * np.arange(m) / m, 2))
        offset += m
    row_index[n_rows] = offset
    coast_y = np.concatenate([*coast_y_parts, ys[-1:]])
    phase = rng.uniform(0, 2 * np.pi, 2)
    t = coast_y - y0
    coast_x = np.round(
        xs[0]
        - 50.0
        - 40.0 * np.sin(2 * np.pi * t / 1900.0 + phase[0])
        - 15.0 * np.sin(2 * np.pi * t / 610.0 + phase[1]),
        2,
    )
    return Lattice(
        xs=xs,
        ys=ys,
        road_width_x=_road_widths(n_cols + 1, rng),
        road_width_y=_road_widths(n_rows + 1, rng),
        coast_x=coast_x,
        coast_y=coast_y,
        coast_row_index=row_index,
    )


@dataclass(frozen=True)
class Terrain:
    """Smooth ground elevation (1985 National Height Datum): 2 m at the sea wall rising to ~13-15 m inland,
    gentle long waves and a few low-lying hollows where the rain collects."""

    x_coast: float
    waves: np.ndarray
    """(k, 4): amplitude m, kx, ky rad/m, phase."""
    hollows: np.ndarray
    """(m, 4): x, y, sigma m, depth m."""

    def elevation(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground elevation in metres at points (x, y), rounded to the centimetre, within 2..15 m."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        inland = np.maximum(x - self.x_coast, 0.0)
        z = 2.2 + 10.5 * (1.0 - np.exp(-inland / 1800.0))
        for amp, kx, ky, ph in self.waves:
            z = z + amp * np.sin(kx * x + ky * y + ph)
        for hx, hy, sigma, depth in self.hollows:
            z = z - depth * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * sigma * sigma))
        return np.round(np.clip(z, 2.0, 15.0), 2)

    def wetness(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """How prone a point is to waterlogging, about 0..1.5: depth of the hollow it lies in, plus
        closeness of the ground to the 2 m sea wall level."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        hollow = np.zeros(np.broadcast(x, y).shape)
        for hx, hy, sigma, depth in self.hollows:
            hollow = hollow + depth * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * sigma * sigma))
        low = np.clip(1.0 - (self.elevation(x, y) - 2.0) / 2.0, 0.0, 1.0)
        return np.round(hollow + 0.8 * low, 3)


def make_terrain(lat: Lattice, scale: int, rng: np.random.Generator) -> Terrain:
    k = 3
    wavelength = rng.uniform(2500, 6000, k)
    angle = rng.uniform(0, np.pi, k)
    waves = np.column_stack(
        [
            rng.uniform(0.15, 0.35, k),
            2 * np.pi / wavelength * np.cos(angle),
            2 * np.pi / wavelength * np.sin(angle),
            rng.uniform(0, 2 * np.pi, k),
        ]
    )
    _, ymin, xmax, ymax = lat.bounds
    m = max(3, round(3 * scale))
    hollows = np.column_stack(
        [
            rng.uniform(float(lat.xs[1]), xmax, m),
            rng.uniform(ymin, ymax, m),
            rng.uniform(120, 260, m),
            rng.uniform(0.6, 1.3, m),
        ]
    )
    return Terrain(x_coast=float(np.median(lat.coast_x)), waves=waves, hollows=hollows)


# ---------------------------------------------------------------------------------------------------------
# administrative units


@dataclass(frozen=True)
class AdminUnit:
    code: str
    name: str
    level: str
    rect: Rect
    parent: int
    """Index of the parent unit in the unit list (-1 for the district)."""


def unit_polygon(lat: Lattice, rect: Rect) -> shapely.Polygon:
    """Counter-clockwise ring around a rectangle of cells through every lattice vertex on its boundary."""
    c0, c1, r0, r1 = rect
    pts: list[tuple[float, float]] = [(lat.vertex_x(c, r0), float(lat.ys[r0])) for c in range(c0, c1 + 1)]
    pts += [(float(lat.xs[c1]), float(lat.ys[r])) for r in range(r0 + 1, r1 + 1)]
    pts += [(lat.vertex_x(c, r1), float(lat.ys[r1])) for c in range(c1 - 1, c0 - 1, -1)]
    if c0 == 0:
        lo, hi = int(lat.coast_row_index[r0]), int(lat.coast_row_index[r1])
        pts += [(float(lat.coast_x[i]), float(lat.coast_y[i])) for i in range(hi - 1, lo, -1)]
    else:
        pts += [(float(lat.xs[c0]), float(lat.ys[r])) for r in range(r1 - 1, r0, -1)]
    return shapely.Polygon(pts)


def split_rect(rect: Rect, k: int, rng: np.random.Generator) -> list[Rect]:
    """Guillotine-split a rectangle of cells into k rectangles, each with at least one cell per part."""
    c0, c1, r0, r1 = rect
    w, h = c1 - c0, r1 - r0
    if k > w * h:
        raise ValueError(f"cannot split {w}x{h} cells into {k} units")
    if k == 1:
        return [rect]
    along_cols = w > h or (w == h and rng.random() < 0.5)
    n, m = (w, h) if along_cols else (h, w)
    t = int(np.clip(round(n * rng.uniform(0.4, 0.6)), 1, n - 1))
    k1 = int(np.clip(round(k * t / n), max(1, k - (n - t) * m), min(k - 1, t * m)))
    if along_cols:
        a, b = (c0, c0 + t, r0, r1), (c0 + t, c1, r0, r1)
    else:
        a, b = (c0, c1, r0, r0 + t), (c0, c1, r0 + t, r1)
    return split_rect(a, k1, rng) + split_rect(b, k - k1, rng)


def allocate(total: int, weights: list[int], caps: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to weights, each within 1..cap (largest remainder)."""
    quota = [total * w / sum(weights) for w in weights]
    alloc = [min(max(1, math.floor(q)), cap) for q, cap in zip(quota, caps, strict=True)]
    while sum(alloc) < total:
        open_ = [i for i in range(len(alloc)) if alloc[i] < caps[i]]
        if not open_:
            break
        i = max(open_, key=lambda j: (quota[j] - alloc[j], -j))
        alloc[i] += 1
    while sum(alloc) > total:
        open_ = [i for i in range(len(alloc)) if alloc[i] > 1]
        i = min(open_, key=lambda j: (quota[j] - alloc[j], j))
        alloc[i] -= 1
    return alloc


def _cells(rect: Rect) -> int:
    return (rect[1] - rect[0]) * (rect[3] - rect[2])


@dataclass(frozen=True)
class Admin:
    units: list[AdminUnit]
    """District, then streets, communities and grids, each level in code order."""
    cell_grid: np.ndarray
    """(R, C) index into ``units`` of the grid containing each cell."""


def make_admin(lat: Lattice, scale: int, rng: np.random.Generator) -> Admin:
    """District > streets > communities > grids as nested rectangles of cells, with valid codes."""
    full: Rect = (0, lat.n_cols, 0, lat.n_rows)
    units = [AdminUnit(DISTRICT_CODE, DISTRICT_NAME, "district", full, -1)]
    street_rects = split_rect(full, STREETS_PER_SCALE * scale, rng)
    street_comms = allocate(
        COMMUNITIES_PER_SCALE * scale, [_cells(r) for r in street_rects], [_cells(r) for r in street_rects]
    )
    community_rects: list[tuple[int, Rect]] = []
    for i, (srect, n_comm) in enumerate(zip(street_rects, street_comms, strict=True)):
        units.append(
            AdminUnit(f"{DISTRICT_CODE}{i + 1:03d}", cycled_name(STREET_NAMES, i) + "街道", "street", srect, 0)
        )
        community_rects += [(len(units) - 1, r) for r in split_rect(srect, n_comm, rng)]
    comm_grids = allocate(
        GRIDS_PER_SCALE * scale,
        [_cells(r) for _, r in community_rects],
        [min(99, _cells(r)) for _, r in community_rects],
    )
    per_street: dict[int, int] = {}
    grid_rects: list[tuple[int, Rect]] = []
    for g, ((street, crect), n_grid) in enumerate(zip(community_rects, comm_grids, strict=True)):
        per_street[street] = per_street.get(street, 0) + 1
        code = f"{units[street].code}{per_street[street]:03d}"
        units.append(AdminUnit(code, cycled_name(COMMUNITY_NAMES, g) + "社区", "community", crect, street))
        grid_rects += [(len(units) - 1, r) for r in split_rect(crect, n_grid, rng)]
    per_comm: dict[int, int] = {}
    cell_grid = np.full((lat.n_rows, lat.n_cols), -1, dtype=np.int64)
    for comm, grect in grid_rects:
        per_comm[comm] = per_comm.get(comm, 0) + 1
        n = per_comm[comm]
        units.append(AdminUnit(f"{units[comm].code}{n:02d}", f"{units[comm].name}第{n:02d}网格", "grid", grect, comm))
        c0, c1, r0, r1 = grect
        cell_grid[r0:r1, c0:c1] = len(units) - 1
    assert (cell_grid >= 0).all()
    return Admin(units=units, cell_grid=cell_grid)


# ---------------------------------------------------------------------------------------------------------
# blocks and parcels

ZONE_LAND_USE: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "coast": (("G1", "R1", "C1", "GIC2", "U1", "S1"), (0.42, 0.22, 0.16, 0.1, 0.05, 0.05)),
    "village": (("R3", "GIC4", "C1", "G1", "U1", "S1"), (0.84, 0.05, 0.05, 0.03, 0.015, 0.015)),
    "residential": (
        ("R2", "R1", "GIC4", "GIC3", "C1", "G1", "U1", "S1"),
        (0.66, 0.04, 0.1, 0.03, 0.07, 0.06, 0.02, 0.02),
    ),
    "cbd": (("C1", "R2", "GIC2", "G1", "S1", "U1"), (0.6, 0.12, 0.1, 0.1, 0.04, 0.04)),
    "industrial": (("M1", "M0", "U1", "G1", "C1", "S1"), (0.5, 0.3, 0.06, 0.06, 0.04, 0.04)),
}
ZONE_SHARE = {"village": 0.48, "residential": 0.27, "cbd": 0.1, "industrial": 0.15}
PARCEL_TARGET_M2 = 10_500.0


@dataclass(frozen=True)
class Parcels:
    geometry: np.ndarray
    code: np.ndarray
    name: np.ndarray
    land_use: np.ndarray
    zone: np.ndarray
    grid: np.ndarray
    """Index into ``Admin.units`` of the grid containing the parcel."""
    community: np.ndarray


def block_polygons(lat: Lattice) -> list[list[shapely.Polygon]]:
    """``[r][c]``: the buildable block of each cell (cell minus half of each surrounding road)."""
    hx, hy = lat.road_width_x / 2.0, lat.road_width_y / 2.0
    land_ring = np.column_stack([lat.coast_x + COASTAL_ROAD_M, lat.coast_y])
    east = float(lat.xs[-1]) + 1000.0
    land = shapely.Polygon(np.vstack([land_ring, [[east, float(lat.ys[-1])], [east, float(lat.ys[0])]]]))
    west = float(lat.coast_x.min()) - 10.0
    blocks = []
    for r in range(lat.n_rows):
        row = []
        for c in range(lat.n_cols):
            x0 = west if c == 0 else float(lat.xs[c] + hx[c])
            box = shapely.box(x0, lat.ys[r] + hy[r], lat.xs[c + 1] - hx[c + 1], lat.ys[r + 1] - hy[r + 1])
            row.append(_largest_part(box.intersection(land)) if c == 0 else box)
        blocks.append(row)
    return blocks


def _largest_part(geom: shapely.Geometry) -> shapely.Polygon:
    if isinstance(geom, shapely.Polygon):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, shapely.Polygon)]
    return max(parts, key=lambda g: g.area) if parts else shapely.Polygon()


def _split_box(box: tuple[float, float, float, float], k: int, rng: np.random.Generator) -> list[tuple]:
    """Guillotine-split a block's box into k parcels, cuts on a 0.5 m raster, parts at least 40 m wide."""
    if k == 1:
        return [box]
    x0, y0, x1, y1 = box
    k1 = k // 2
    vertical = (x1 - x0) >= (y1 - y0)
    lo, hi = (x0, x1) if vertical else (y0, y1)
    cut = lo + (hi - lo) * (k1 / k) * rng.uniform(0.85, 1.15)
    cut = min(max(cut, lo + 40.0), hi - 40.0) if hi - lo > 80.0 else (lo + hi) / 2
    cut = round(cut * 2.0) / 2.0
    a, b = ((x0, y0, cut, y1), (cut, y0, x1, y1)) if vertical else ((x0, y0, x1, cut), (x0, cut, x1, y1))
    return _split_box(a, k1, rng) + _split_box(b, k - k1, rng)


def _cell_zones(lat: Lattice, rng: np.random.Generator) -> np.ndarray:
    """Zone of each cell: column 0 is the coast; inland cells go to villages, industry and the business
    district in fixed shares, each zone taking the free cells nearest its own random seed cells (so zones
    form clusters), and the rest are residential."""
    n_rows, n_cols = lat.n_rows, lat.n_cols
    rr, cc = np.divmod(np.arange(n_rows * n_cols), n_cols)
    inland = cc > 0
    zones = np.where(inland, "residential", "coast").astype(object)
    free = inland.copy()
    n_inland = int(inland.sum())
    for zone in ("village", "industrial", "cbd"):
        quota = round(ZONE_SHARE[zone] * n_inland)
        n_seeds = max(1, round(quota / 6))
        seeds = rng.choice(np.flatnonzero(free), size=n_seeds, replace=False)
        d2 = ((rr[:, None] - rr[seeds]) ** 2 + (cc[:, None] - cc[seeds]) ** 2).min(axis=1)
        d2 = d2 + rng.uniform(0, 0.9, len(d2))
        candidates = np.flatnonzero(free)
        take = candidates[np.argsort(d2[candidates], kind="stable")[:quota]]
        zones[take] = zone
        free[take] = False
    return zones.reshape(n_rows, n_cols)


def _parcel_name(land_use: str, community: str, village: str, rng: np.random.Generator) -> str:
    word = ESTATE_WORDS[int(rng.integers(len(ESTATE_WORDS)))]
    base = community.removesuffix("社区")
    if land_use in ("R1", "R2"):
        return word + ESTATE_SUFFIXES[int(rng.integers(len(ESTATE_SUFFIXES)))]
    if land_use == "R3":
        return village
    if land_use == "C1":
        return word + ("中心", "广场", "国际", "大厦")[int(rng.integers(4))]
    if land_use == "M1":
        return COMPANY_WORDS[int(rng.integers(len(COMPANY_WORDS)))] + "工业园"
    if land_use == "M0":
        return COMPANY_WORDS[int(rng.integers(len(COMPANY_WORDS)))] + "科技园"
    return (
        base
        + {
            "GIC2": "文体中心",
            "GIC3": "医院",
            "GIC4": ("小学", "中学", "实验学校")[int(rng.integers(3))],
            "G1": "公园",
            "U1": ("变电站", "给水加压站", "环卫站")[int(rng.integers(3))],
            "S1": ("公交首末站", "公共停车场")[int(rng.integers(2))],
        }[land_use]
    )


def make_parcels(lat: Lattice, admin: Admin, rng: np.random.Generator) -> Parcels:
    """About 4-5 parcels per block with land uses clustered by zone; codes ``T<sheet>-<nnnn>`` by 1 km sheet."""
    blocks = block_polygons(lat)
    zones = _cell_zones(lat, rng)
    geoms: list[shapely.Polygon] = []
    land_use: list[str] = []
    zone: list[str] = []
    grid: list[int] = []
    for r in range(lat.n_rows):
        for c in range(lat.n_cols):
            block = blocks[r][c]
            if block.is_empty:
                continue
            k = int(np.clip(round(block.area / PARCEL_TARGET_M2 * rng.uniform(0.75, 1.25)), 1, 8))
            z = str(zones[r, c])
            uses, probs = ZONE_LAND_USE[z]
            for box in _split_box(block.bounds, k, rng):
                geom = shapely.box(*box)
                if c == 0:
                    geom = _largest_part(geom.intersection(block))
                    if geom.area < 1500.0:
                        continue
                geoms.append(geom)
                land_use.append(str(uses[int(rng.choice(len(uses), p=probs))]))
                zone.append(z)
                grid.append(int(admin.cell_grid[r, c]))
    geometry = np.array(geoms, dtype=object)
    grid_arr = np.array(grid, dtype=np.int64)
    community = np.array([admin.units[g].parent for g in grid_arr], dtype=np.int64)

    # Parcel numbers: 1 km map sheets from the south-west corner; within a sheet north to south, west to east.
    xmin, ymin, xmax, _ = lat.bounds
    centre = shapely.get_coordinates(shapely.centroid(geometry))
    sheet_cols = int((xmax - xmin) // 1000) + 1
    sheet = ((centre[:, 1] - ymin) // 1000).astype(np.int64) * sheet_cols + ((centre[:, 0] - xmin) // 1000).astype(
        np.int64
    )
    order = np.lexsort((np.round(centre[:, 0], 3), -np.round(centre[:, 1], 3), sheet))
    seq = np.zeros(len(sheet), dtype=np.int64)
    sorted_sheet = sheet[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_sheet)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    seq[order] = np.arange(len(order)) - run_start + 1
    letters = "TUVWXYZ"
    codes = [f"{letters[s // 899]}{101 + s % 899:03d}-{n:04d}" for s, n in zip(sheet, seq, strict=True)]

    villages: dict[str, str] = {}
    names = []
    for i in range(len(geometry)):
        comm = admin.units[int(community[i])]
        if comm.code not in villages:
            villages[comm.code] = VILLAGE_NAMES[len(villages) % len(VILLAGE_NAMES)]
        names.append(_parcel_name(land_use[i], comm.name, villages[comm.code], rng))
    return Parcels(
        geometry=geometry,
        code=np.array(codes, dtype=object),
        name=np.array(names, dtype=object),
        land_use=np.array(land_use, dtype=object),
        zone=np.array(zone, dtype=object),
        grid=grid_arr,
        community=community,
    )


# ---------------------------------------------------------------------------------------------------------
# roads


def road_name(lat: Lattice, vertical: bool, line: int) -> str:
    """Name of a lattice road (vertical roads count from line 1, the first inland one)."""
    if vertical:
        return numbered_road_name(NS_ROAD_NAMES, line - 1, "科技南")
    return numbered_road_name(EW_ROAD_NAMES, line, "海湾")


@dataclass(frozen=True)
class RoadPoints:
    xy: np.ndarray
    vertical: np.ndarray
    line: np.ndarray


def road_points(lat: Lattice, n: int, rng: np.random.Generator) -> RoadPoints:
    """n random points on the carriageways of the inland roads, at least 1 m off the centre-line (so off
    every administrative boundary) and always inside the district."""
    C, R = lat.n_cols, lat.n_rows
    v_len = float(lat.ys[-1] - lat.ys[0])
    h_len = float(lat.xs[-1] - lat.xs[1])
    lines_v = np.arange(1, C + 1)
    lines_h = np.arange(0, R + 1)
    weights = np.r_[np.full(C, v_len), np.full(R + 1, h_len)]
    pick = rng.choice(len(weights), size=n, p=weights / weights.sum())
    vertical = pick < C
    line = np.where(vertical, lines_v[np.minimum(pick, C - 1)], lines_h[np.maximum(pick - C, 0)])
    half = np.where(vertical, lat.road_width_x[np.minimum(line, C)], lat.road_width_y[np.minimum(line, R)]) / 2.0
    across = 1.0 + rng.random(n) * (half - 2.0)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    sign = np.where(vertical & (line == C), -1.0, sign)
    sign = np.where(~vertical & (line == 0), 1.0, sign)
    sign = np.where(~vertical & (line == R), -1.0, sign)
    along_v = lat.ys[0] + 1.0 + rng.random(n) * (v_len - 2.0)
    along_h = lat.xs[1] + rng.random(n) * (h_len - 1.0)
    x = np.where(vertical, lat.xs[np.minimum(line, C)] + sign * across, along_h)
    y = np.where(vertical, along_v, lat.ys[np.minimum(line, R)] + sign * across)
    return RoadPoints(xy=np.round(np.column_stack([x, y]), 3), vertical=vertical, line=line)
