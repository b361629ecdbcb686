"""Underground pipe networks along the road lattice: rain and sewage (gravity trees) and water supply (mesh).

Pipes run a few metres off the road centre-lines (which are also the administrative boundaries), so every
node lies strictly inside one grid. Gravity networks drain west along the east-west roads to outfalls on
the coast; on large districts every tenth north-south road carries a culverted river that takes the flow
of the trunks east of it. North-south roads drain each half-block to the nearer crossing. Where a trunk
would get deeper than 5 m a lift station (``pump_station``) brings it back to normal cover.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import shapely

from sample_data.layout import Lattice, Terrain

MANHOLE_SPACING_M = 40.0
"""Manholes at most this far apart (and at least 30 m, given blocks of 190 m and more)."""
RIVER_EVERY = 10
MIN_COVER_M = 1.5
"""Least ground-to-invert depth of a node."""
MAX_SLOPE = 0.01
LIFT_DEPTH_M = 5.0
"""A gravity node deeper than this gets a lift station (pipes leave it at normal cover)."""
VALVE_OFFSET_M = 8.0
HYDRANT_SPACING_M = 100.0


@dataclass(frozen=True)
class GravitySpec:
    network: str
    node_prefix: str
    pipe_prefix: str
    offset_m: float
    interior_sign: float
    terminal_kind: str
    terminal_inset_m: float
    diameters_mm: tuple[int, ...]
    catchment_m: tuple[float, ...]
    """Upstream pipe length (m) up to which each diameter suffices."""
    big_material: str
    big_from_mm: int
    small_material: str


RAIN = GravitySpec(
    "rain",
    "YSJ",
    "YS",
    4.0,
    -1.0,
    "outfall",
    5.0,
    (300, 400, 500, 600, 800, 1000, 1200, 1350, 1500),
    (150, 400, 800, 1400, 2400, 3600, 5000, 6500),
    "RC",
    800,
    "HDPE",
)
SEWAGE = GravitySpec(
    "sewage",
    "WSJ",
    "WS",
    7.0,
    1.0,
    "pump_station",
    9.0,
    (300, 400, 500, 600, 800, 1000),
    (400, 1200, 2500, 4000, 6000),
    "RC",
    600,
    "HDPE",
)


@dataclass
class Network:
    """Nodes and pipes of one or more networks; pipes refer to nodes by index."""

    node_code: np.ndarray
    node_network: np.ndarray
    node_kind: np.ndarray
    node_xy: np.ndarray
    node_ground: np.ndarray
    node_invert: np.ndarray
    pipe_code: np.ndarray
    pipe_network: np.ndarray
    pipe_from: np.ndarray
    pipe_to: np.ndarray
    diameter_mm: np.ndarray
    material: np.ndarray
    start_invert: np.ndarray
    end_invert: np.ndarray
    built_year: np.ndarray

    def pipe_geometry(self) -> np.ndarray:
        """Straight LineStrings whose end points are exactly the node points."""
        coords = np.stack([self.node_xy[self.pipe_from], self.node_xy[self.pipe_to]], axis=1)
        return shapely.linestrings(coords)

    @staticmethod
    def concat(parts: list[Network]) -> Network:
        offsets = np.cumsum([0] + [len(p.node_code) for p in parts[:-1]])
        fields = {}
        for name in Network.__dataclass_fields__:
            arrays = [getattr(p, name) for p in parts]
            if name in ("pipe_from", "pipe_to"):
                arrays = [a + off for a, off in zip(arrays, offsets, strict=True)]
            fields[name] = np.concatenate(arrays)
        return Network(**fields)


class _Builder:
    """Collects node points in construction order (which is also their code order)."""

    def __init__(self) -> None:
        self.xy: list[np.ndarray] = []
        self.kind: list[np.ndarray] = []
        self.n = 0

    def add_nodes(self, xy: np.ndarray, kind: str) -> np.ndarray:
        ids = np.arange(self.n, self.n + len(xy))
        self.xy.append(np.round(np.asarray(xy, dtype=float).reshape(-1, 2), 3))
        self.kind.append(np.full(len(xy), kind, dtype=object))
        self.n += len(xy)
        return ids

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.xy), np.concatenate(self.kind)


def _line_offsets(lat: Lattice, offset: float, interior_sign: float) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of a network from the vertical / horizontal centre-lines; boundary roads use their inner side."""
    ox = np.full(lat.n_cols + 1, interior_sign * offset)
    ox[-1] = -offset
    oy = np.full(lat.n_rows + 1, interior_sign * offset)
    oy[0], oy[-1] = offset, -offset
    return ox, oy


def _between(a: np.ndarray, b: np.ndarray, spacing: float) -> np.ndarray:
    """Points strictly between a and b, evenly spaced at most ``spacing`` apart."""
    m = max(1, math.ceil(float(np.hypot(*(b - a))) / spacing))
    t = np.arange(1, m)[:, None] / m
    return a[None, :] + t * (b - a)[None, :]


def gravity_network(lat: Lattice, terrain: Terrain, spec: GravitySpec, rng: np.random.Generator) -> Network:
    """A forest of gravity trees draining to terminals on the coast (and culverted rivers); inverts fall
    downstream at 0.1-1 %, diameters never shrink downstream, node inverts 1.5-6 m below ground."""
    C, R = lat.n_cols, lat.n_rows
    ox, oy = _line_offsets(lat, spec.offset_m, spec.interior_sign)
    bld = _Builder()
    cross = np.zeros((C + 1, R + 1), dtype=np.int64)
    is_river = np.zeros(C + 1, dtype=bool)
    is_river[np.arange(RIVER_EVERY, C, RIVER_EVERY)] = True
    for j in range(1, C + 1):
        xy = np.column_stack([np.full(R + 1, lat.xs[j] + ox[j]), lat.ys + oy])
        cross[j] = bld.add_nodes(xy, spec.terminal_kind if is_river[j] else "manhole")
    down: dict[int, int] = {}

    def chain(ids: list[int]) -> None:
        for a, b in itertools.pairwise(ids):
            down[a] = b

    for k in range(R + 1):
        for j in range(C, 0, -1):
            a = cross[j, k]
            if j > 1:
                b_id = int(cross[j - 1, k])
                b = np.array([lat.xs[j - 1] + ox[j - 1], lat.ys[k] + oy[k]])
            else:
                y = float(lat.ys[k] + oy[k])
                b = np.array([float(lat.coast_x_at(np.array([y]))[0]) + spec.terminal_inset_m, y])
                b_id = int(bld.add_nodes(b[None, :], spec.terminal_kind)[0])
            a_xy = np.array([lat.xs[j] + ox[j], lat.ys[k] + oy[k]])
            mid = [int(i) for i in bld.add_nodes(_between(a_xy, b, MANHOLE_SPACING_M), "manhole")]
            ids = [int(a), *mid, b_id]
            if is_river[j]:
                ids = ids[1:]  # the river outfall takes nothing from the west; the next manhole is a head
            chain(ids)
    for j in range(1, C + 1):
        for k in range(R):
            a_xy = np.array([lat.xs[j] + ox[j], lat.ys[k] + oy[k]])
            b_xy = np.array([lat.xs[j] + ox[j], lat.ys[k + 1] + oy[k + 1]])
            mid = [int(i) for i in bld.add_nodes(_between(a_xy, b_xy, MANHOLE_SPACING_M), "manhole")]
            half = len(mid) // 2
            chain([*mid[:half][::-1], int(cross[j, k])])
            chain([*mid[half:], int(cross[j, k + 1])])

    xy, kind = bld.arrays()
    n = len(xy)
    down_arr = np.full(n, -1, dtype=np.int64)
    src = np.array(sorted(down), dtype=np.int64)
    down_arr[src] = [down[int(i)] for i in src]
    ground = terrain.elevation(xy[:, 0], xy[:, 1])

    # Hops to the terminal: a node's upstream nodes all have more hops, so levels can be processed at once.
    hops = np.where(down_arr < 0, 0, -1)
    while (hops < 0).any():
        todo = np.flatnonzero((hops < 0) & (hops[np.maximum(down_arr, 0)] >= 0) & (down_arr >= 0))
        if not len(todo):
            raise RuntimeError("drainage network has a cycle")
        hops[todo] = hops[down_arr[todo]] + 1
    pipes = np.flatnonzero(down_arr >= 0)
    length = np.zeros(n)
    length[pipes] = np.hypot(*(xy[down_arr[pipes]] - xy[pipes]).T)
    upstream = length.copy()
    for level in range(int(hops.max()), 0, -1):
        at = np.flatnonzero(hops == level)
        np.add.at(upstream, down_arr[at], upstream[at])
    diam = np.array(spec.diameters_mm, dtype=float)[np.searchsorted(np.array(spec.catchment_m), upstream)]
    out_diam = np.where(down_arr >= 0, diam, 0.0)
    np.maximum.at(out_diam, down_arr[pipes], diam[pipes])

    cover = MIN_COVER_M + rng.uniform(0.1, 0.4, n) + out_diam / 2000.0
    invert = np.round(ground - cover, 3)
    end = np.zeros(n)
    start = np.zeros(n)
    min_slope = np.where(diam <= 300, 0.003, np.where(diam <= 400, 0.0015, np.where(diam <= 500, 0.0012, 0.001)))
    for level in range(int(hops.max()), 0, -1):
        at = np.flatnonzero(hops == level)
        to = down_arr[at]
        # Where a trunk has got too deep, a lift station pumps it back up to the normal cover.
        deep = ground[at] - invert[at] > LIFT_DEPTH_M
        kind[at[deep]] = "pump_station"
        start[at] = np.where(deep, np.round(ground[at] - cover[at], 3), invert[at])
        wanted = (start[at] - (ground[to] - MIN_COVER_M - 0.1 - diam[at] / 2000.0)) / length[at]
        slope = np.clip(wanted, min_slope[at], MAX_SLOPE)
        # Round down to the millimetre so rounding never flattens a pipe below its minimum slope.
        end[at] = np.floor((start[at] - slope * length[at]) * 1000.0) / 1000.0
        np.minimum.at(invert, to, end[at])

    order = pipes  # pipes are numbered in node construction order
    line_year = rng.integers(1995, 2025, n)
    return Network(
        node_code=np.array([f"{spec.node_prefix}-{i + 1:06d}" for i in range(n)], dtype=object),
        node_network=np.full(n, spec.network, dtype=object),
        node_kind=kind,
        node_xy=xy,
        node_ground=ground,
        node_invert=invert,
        pipe_code=np.array([f"{spec.pipe_prefix}-{i + 1:06d}" for i in range(len(order))], dtype=object),
        pipe_network=np.full(len(order), spec.network, dtype=object),
        pipe_from=order,
        pipe_to=down_arr[order],
        diameter_mm=diam[order],
        material=np.where(diam[order] >= spec.big_from_mm, spec.big_material, spec.small_material).astype(object),
        start_invert=start[order],
        end_invert=end[order],
        built_year=line_year[order],
    )


def _water_diameter(road_width: float, rng: np.random.Generator) -> float:
    if road_width >= 40:
        return float(rng.choice([500, 600]))
    if road_width >= 30:
        return float(rng.choice([300, 400]))
    return 200.0 if road_width >= 24 else 150.0


def water_network(lat: Lattice, terrain: Terrain, rng: np.random.Generator) -> Network:
    """Looped water mains (DN150-DN600) with junctions at crossings, isolation valves 8 m from every
    crossing, and tees every <=120 m feeding a hydrant (DN100 lateral, 3 m to the side); depth 1-1.5 m."""
    C, R = lat.n_cols, lat.n_rows
    ox, oy = _line_offsets(lat, 2.0, 1.0)
    bld = _Builder()
    cross = np.zeros((C + 1, R + 1), dtype=np.int64)
    for j in range(1, C + 1):
        cross[j] = bld.add_nodes(np.column_stack([np.full(R + 1, lat.xs[j] + ox[j]), lat.ys + oy]), "junction")
    mains: list[tuple[int, int, float]] = []
    segments = [(j, k, 1, 0, lat.road_width_y[k]) for k in range(R + 1) for j in range(1, C)]
    segments += [(j, k, 0, 1, lat.road_width_x[j]) for j in range(1, C + 1) for k in range(R)]
    line_dn: dict[tuple[int, int], float] = {}
    for j, k, dj, dk, width in segments:
        key = (dj, k if dj else j)
        if key not in line_dn:
            line_dn[key] = _water_diameter(float(width), rng)
        dn = line_dn[key]
        a, b = int(cross[j, k]), int(cross[j + dj, k + dk])
        a_xy = np.array([lat.xs[j] + ox[j], lat.ys[k] + oy[k]])
        b_xy = np.array([lat.xs[j + dj] + ox[j + dj], lat.ys[k + dk] + oy[k + dk]])
        unit = (b_xy - a_xy) / np.hypot(*(b_xy - a_xy))
        va, vb = bld.add_nodes(np.stack([a_xy + unit * VALVE_OFFSET_M, b_xy - unit * VALVE_OFFSET_M]), "valve")
        tees = bld.add_nodes(
            _between(a_xy + unit * VALVE_OFFSET_M, b_xy - unit * VALVE_OFFSET_M, HYDRANT_SPACING_M), "junction"
        )
        run = [a, int(va), *[int(t) for t in tees], int(vb), b]
        mains += [(p, q, dn) for p, q in itertools.pairwise(run)]
        if len(tees):
            # Hydrants stand away from the centre-line, on the side the main is offset to.
            side = np.array([ox[j], 0.0]) if dj == 0 else np.array([0.0, oy[k]])
            side = side / np.hypot(*side) * 3.0
            tee_xy = np.round(bld.xy[-1], 3)
            hyd = bld.add_nodes(tee_xy + side, "hydrant")
            mains += [(int(t), int(h), 100.0) for t, h in zip(tees, hyd, strict=True)]
    xy, kind = bld.arrays()
    n = len(xy)
    ground = terrain.elevation(xy[:, 0], xy[:, 1])
    invert = np.round(ground - rng.uniform(1.0, 1.5, n), 3)
    p_from = np.array([m[0] for m in mains], dtype=np.int64)
    p_to = np.array([m[1] for m in mains], dtype=np.int64)
    dn_arr = np.array([m[2] for m in mains], dtype=float)
    hydrant_code = np.cumsum(kind == "hydrant")
    other_code = np.cumsum(kind != "hydrant")
    codes = np.where(
        kind == "hydrant",
        np.array([f"XHS-{i:06d}" for i in hydrant_code], dtype=object),
        np.array([f"JSJ-{i:06d}" for i in other_code], dtype=object),
    )
    return Network(
        node_code=codes.astype(object),
        node_network=np.full(n, "water", dtype=object),
        node_kind=kind,
        node_xy=xy,
        node_ground=ground,
        node_invert=invert,
        pipe_code=np.array([f"JS-{i + 1:06d}" for i in range(len(mains))], dtype=object),
        pipe_network=np.full(len(mains), "water", dtype=object),
        pipe_from=p_from,
        pipe_to=p_to,
        diameter_mm=dn_arr,
        material=np.where(dn_arr >= 300, "DI", np.where(dn_arr <= 100, "DI", "PE")).astype(object),
        start_invert=invert[p_from],
        end_invert=invert[p_to],
        built_year=rng.integers(1998, 2025, len(mains)),
    )


def make_networks(lat: Lattice, terrain: Terrain, rng: np.random.Generator) -> Network:
    """Rain, sewage and water networks in one set of node and pipe arrays."""
    return Network.concat(
        [
            gravity_network(lat, terrain, RAIN, rng),
            gravity_network(lat, terrain, SEWAGE, rng),
            water_network(lat, terrain, rng),
        ]
    )
