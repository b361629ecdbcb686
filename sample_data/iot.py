"""IoT devices and 30 days of their observations, driven by one rain-storm model of the district.

Times are integer Unix seconds; files show them in Asia/Shanghai (+08:00).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import shapely

from sample_data.buildings import Buildings
from sample_data.layout import Lattice, Parcels, Terrain, road_name, road_points
from sample_data.networks import Network

END_S = int(np.datetime64("2026-10-31T16:00:00", "s").astype(np.int64))
"""2026-11-01T00:00:00+08:00: observations end here and events stop before it."""
DAY_S = 86_400
OBSERVATION_DAYS = 30
EVENT_DAYS = 90
LOCAL_OFFSET_S = 8 * 3600

DEVICES_PER_SCALE = {"water_level": 50, "rain_gauge": 10, "air_quality": 15, "charging_pile": 150, "camera": 275}
DEVICE_PREFIX = {"water_level": "WL", "rain_gauge": "RG", "air_quality": "AQ", "charging_pile": "CP", "camera": "CAM"}
STATUSES = ("online", "offline", "fault", "retired")
STATUS_P = (0.9, 0.05, 0.03, 0.02)
LEVEL_STEP_S = 1800
AIR_STEP_S = 3600
CHARGING_STEP_S = 7200


def local_iso(t: np.ndarray) -> np.ndarray:
    """ISO 8601 strings with the +08:00 offset for Unix seconds."""
    local = (np.asarray(t, dtype=np.int64) + LOCAL_OFFSET_S).astype("datetime64[s]")
    return np.char.add(np.datetime_as_string(local, unit="s"), "+08:00")


@dataclass(frozen=True)
class Weather:
    """Gaussian rain storms: peak time (s), sigma (h), peak intensity (mm/h), centre and radius (m)."""

    peak_s: np.ndarray
    sigma_h: np.ndarray
    peak_mm_h: np.ndarray
    x: np.ndarray
    y: np.ndarray
    radius_m: np.ndarray

    def rain_rate(self, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Rain intensity (mm/h), shape (len(x), len(t))."""
        out = np.zeros((len(x), len(t)))
        for i in range(len(self.peak_s)):
            d2 = (x - self.x[i]) ** 2 + (y - self.y[i]) ** 2
            space = 0.35 + 0.65 * np.exp(-d2 / (2 * self.radius_m[i] ** 2))
            hours = (t - self.peak_s[i]) / 3600.0
            time = np.exp(-(hours**2) / (2 * self.sigma_h[i] ** 2))
            out += self.peak_mm_h[i] * space[:, None] * time[None, :]
        return out


def make_weather(lat: Lattice, rng: np.random.Generator) -> Weather:
    """Three downpours and two showers in the observed 30 days, as many again in the 60 days before."""
    xmin, ymin, xmax, ymax = lat.bounds
    recent = END_S - OBSERVATION_DAYS * DAY_S
    earlier = END_S - EVENT_DAYS * DAY_S
    # Storm days spread over each window (one storm per slice) so storms never merge.
    peaks = []
    for start, days, n in ((recent, OBSERVATION_DAYS, 5), (earlier, EVENT_DAYS - OBSERVATION_DAYS, 5)):
        slice_s = days * DAY_S // n
        offsets = np.arange(n) * slice_s + rng.integers(DAY_S // 2, slice_s - DAY_S // 2, n)
        peaks.append(start + offsets)
    peak_s = np.concatenate(peaks)
    downpour = np.zeros(10, dtype=bool)
    downpour[rng.choice(5, 3, replace=False)] = True
    downpour[5 + rng.choice(5, 3, replace=False)] = True
    peak_mm_h = np.where(downpour, rng.uniform(25, 55, 10), rng.uniform(2, 6, 10))
    peak_mm_h[np.flatnonzero(downpour[:5])[0]] = rng.uniform(65, 80)  # the storm of the month
    return Weather(
        peak_s=peak_s,
        sigma_h=np.where(downpour, rng.uniform(1.0, 2.5, 10), rng.uniform(2.0, 5.0, 10)),
        peak_mm_h=peak_mm_h,
        x=rng.uniform(xmin, xmax, 10),
        y=rng.uniform(ymin, ymax, 10),
        radius_m=rng.uniform(3000, 6000, 10),
    )


@dataclass
class Devices:
    code: np.ndarray
    kind: np.ndarray
    name: np.ndarray
    status: np.ndarray
    installed_at: np.ndarray
    pipe_node_code: np.ndarray
    building_code: np.ndarray
    xy: np.ndarray
    wetness: np.ndarray
    """``Terrain.wetness`` at water-level sensors, else NaN."""


def _spread(xy: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k points spread out over the set (greedy farthest-point sampling from a random start)."""
    k = min(k, len(xy))
    chosen = [int(rng.integers(len(xy)))]
    d = np.hypot(*(xy - xy[chosen[0]]).T)
    for _ in range(k - 1):
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, np.hypot(*(xy - xy[nxt]).T))
    return np.array(chosen, dtype=np.int64)


def _dates(rng: np.random.Generator, n: int, first_year: int, last_year: int) -> np.ndarray:
    start = np.datetime64(f"{first_year}-01-01", "D").astype(np.int64)
    stop = np.datetime64(f"{last_year}-12-31", "D").astype(np.int64)
    return np.datetime_as_string(rng.integers(start, stop + 1, n).astype("datetime64[D]"), unit="D").astype(object)


def make_devices(
    lat: Lattice,
    terrain: Terrain,
    parcels: Parcels,
    b: Buildings,
    net: Network,
    scale: int,
    rng: np.random.Generator,
) -> Devices:
    """Water-level sensors in low-lying rain manholes, rain gauges and air-quality stations spread over
    public land, charging piles beside commercial and office buildings, cameras along the roads."""
    count = {k: v * scale for k, v in DEVICES_PER_SCALE.items()}
    rows: list[dict[str, np.ndarray]] = []

    # Water level: rain-network manholes, the wetter the spot the likelier.
    manholes = np.flatnonzero((net.node_network == "rain") & (net.node_kind == "manhole"))
    wet = terrain.wetness(net.node_xy[manholes, 0], net.node_xy[manholes, 1])
    w = np.exp(3.0 * wet)
    pick = np.sort(rng.choice(manholes, size=min(count["water_level"], len(manholes)), replace=False, p=w / w.sum()))
    n = len(pick)
    rows.append(
        {
            "kind": np.full(n, "water_level", dtype=object),
            "name": np.array([f"{c}井水位计" for c in net.node_code[pick]], dtype=object),
            "pipe_node_code": net.node_code[pick],
            "building_code": np.full(n, None, dtype=object),
            "xy": net.node_xy[pick],
            "wetness": terrain.wetness(net.node_xy[pick, 0], net.node_xy[pick, 1]),
            "installed_at": _dates(rng, n, 2021, 2025),
        }
    )

    # Rain gauges and air-quality stations: spread over parks and public land.
    public = np.flatnonzero(np.isin(parcels.land_use, ("G1", "GIC2", "GIC3", "GIC4", "U1")))
    if len(public) < count["rain_gauge"] + count["air_quality"]:
        public = np.arange(len(parcels.geometry))
    spot = shapely.get_coordinates(shapely.point_on_surface(parcels.geometry[public]))
    order = _spread(spot, count["rain_gauge"] + count["air_quality"], rng)
    for kind, sel, label, first in (
        ("rain_gauge", order[: count["rain_gauge"]], "雨量站", 2019),
        ("air_quality", order[count["rain_gauge"] :], "空气质量微站", 2020),
    ):
        sel = np.sort(sel)
        n = len(sel)
        rows.append(
            {
                "kind": np.full(n, kind, dtype=object),
                "name": np.array([f"{nm}{label}" for nm in parcels.name[public[sel]]], dtype=object),
                "pipe_node_code": np.full(n, None, dtype=object),
                "building_code": np.full(n, None, dtype=object),
                "xy": np.round(spot[sel], 3),
                "wetness": np.full(n, np.nan),
                "installed_at": _dates(rng, n, first, 2025),
            }
        )

    # Charging piles: in a row 2.5 m south of commercial and office buildings (their forecourt).
    has_code = np.array([c is not None for c in b.code], dtype=bool)
    cand = np.flatnonzero(has_code & np.isin(b.style, ("office", "mall", "mixed", "rnd")))
    bounds = shapely.bounds(b.geometry[cand])
    room = np.floor((bounds[:, 2] - bounds[:, 0] - 4.0) / 3.5).astype(np.int64)
    cand, bounds, room = cand[room >= 1], bounds[room >= 1], room[room >= 1]
    area = shapely.area(b.geometry[cand])
    visit = rng.choice(len(cand), size=len(cand), replace=False, p=area / area.sum()) if len(cand) else cand
    pile_xy: list[np.ndarray] = []
    pile_building: list[str] = []
    pile_name: list[str] = []
    used = np.zeros(len(cand), dtype=np.int64)
    left = count["charging_pile"]
    while left > 0:
        placed = left
        for i in visit:
            k = int(min(room[i] - used[i], rng.integers(2, 9), left))
            if k <= 0:
                continue
            slots = np.arange(used[i], used[i] + k)
            pile_xy.append(np.column_stack([bounds[i, 0] + 3.75 + 3.5 * slots, np.full(k, bounds[i, 1] - 2.5)]))
            pile_building += [str(b.code[cand[i]])] * k
            pile_name += [f"{b.name[cand[i]]}充电桩{j + 1:02d}" for j in slots]
            used[i] += k
            left -= k
            if left <= 0:
                break
        if left == placed:
            break  # every forecourt is full
    n = len(pile_building)
    rows.append(
        {
            "kind": np.full(n, "charging_pile", dtype=object),
            "name": np.array(pile_name, dtype=object),
            "pipe_node_code": np.full(n, None, dtype=object),
            "building_code": np.array(pile_building, dtype=object),
            "xy": np.round(np.concatenate(pile_xy), 3) if pile_xy else np.zeros((0, 2)),
            "wetness": np.full(n, np.nan),
            "installed_at": _dates(rng, n, 2020, 2025),
        }
    )

    # Cameras along the roads.
    pts = road_points(lat, count["camera"], rng)
    n = count["camera"]
    rows.append(
        {
            "kind": np.full(n, "camera", dtype=object),
            "name": np.array(
                [
                    f"{road_name(lat, bool(v), int(li))}视频监控{i + 1:03d}"
                    for i, (v, li) in enumerate(zip(pts.vertical, pts.line, strict=True))
                ],
                dtype=object,
            ),
            "pipe_node_code": np.full(n, None, dtype=object),
            "building_code": np.full(n, None, dtype=object),
            "xy": pts.xy,
            "wetness": np.full(n, np.nan),
            "installed_at": _dates(rng, n, 2018, 2025),
        }
    )

    merged = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
    kinds = merged["kind"]
    code = np.empty(len(kinds), dtype=object)
    for kind, prefix in DEVICE_PREFIX.items():
        sel = np.flatnonzero(kinds == kind)
        code[sel] = [f"{prefix}-{i + 1:05d}" for i in range(len(sel))]
    status = np.array(STATUSES, dtype=object)[rng.choice(len(STATUSES), size=len(kinds), p=STATUS_P)]
    order = np.argsort(code.astype(str), kind="stable")
    return Devices(
        code=code[order],
        kind=kinds[order],
        name=merged["name"][order],
        status=status[order],
        installed_at=merged["installed_at"][order],
        pipe_node_code=merged["pipe_node_code"][order],
        building_code=merged["building_code"][order],
        xy=merged["xy"][order],
        wetness=merged["wetness"][order],
    )


# ---------------------------------------------------------------------------------------------------------
# observations


@dataclass(frozen=True)
class ObservationBlock:
    """Observations of one device kind: ``values[d, t, p]`` for device d, time t and property p;
    NaN where the device was not reporting."""

    devices: np.ndarray
    """Indices into Devices."""
    times: np.ndarray
    properties: tuple[str, ...]
    decimals: tuple[int, ...]
    values: np.ndarray


def _reporting_mask(status: np.ndarray, n_t: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(reporting, stuck): offline devices stop in the last 10 days, faulty ones repeat one value from
    some time on, retired ones send nothing."""
    t = np.arange(n_t)[None, :]
    stop = np.where(status == "offline", n_t - rng.integers(1, n_t // 3, len(status)), n_t)
    reporting = (t < stop[:, None]) & (status != "retired")[:, None]
    stuck_from = np.where(status == "fault", rng.integers(n_t // 3, n_t, len(status)), n_t)
    return reporting, t >= stuck_from[:, None]


def _apply_faults(
    values: np.ndarray, reporting: np.ndarray, stuck: np.ndarray, flat: np.ndarray | None = None
) -> np.ndarray:
    """Blank what was not reported; from the fault on, repeat the value of that moment, or ``flat[d]``
    (a clogged rain gauge reads 0, a fouled level probe its dry-weather level)."""
    first_stuck = np.argmax(stuck, axis=1)
    for d in np.flatnonzero(stuck.any(axis=1)):
        values[d, first_stuck[d] :] = values[d, first_stuck[d]] if flat is None else flat[d]
    values[~reporting] = np.nan
    return values


def make_observations(dev: Devices, weather: Weather, rng: np.random.Generator) -> list[ObservationBlock]:
    """Rainfall per half hour, water level per half hour (rain-driven, low manholes rise above 0.3 m in
    the big storm), PM2.5/PM10 hourly, charging-pile occupancy and power every two hours."""
    start = END_S - OBSERVATION_DAYS * DAY_S
    blocks = []

    t = start + LEVEL_STEP_S * np.arange(1, OBSERVATION_DAYS * DAY_S // LEVEL_STEP_S + 1)
    mid = t - LEVEL_STEP_S // 2
    gauges = np.flatnonzero(dev.kind == "rain_gauge")
    rain = weather.rain_rate(dev.xy[gauges, 0], dev.xy[gauges, 1], mid) * (LEVEL_STEP_S / 3600.0)
    rain = rain * rng.uniform(0.85, 1.15, (len(gauges), 1))
    rain = np.where(rain < 0.05, 0.0, rain)
    reporting, stuck = _reporting_mask(dev.status[gauges], len(t), rng)
    blocks.append(
        ObservationBlock(
            gauges, t, ("rainfall_mm",), (1,), _apply_faults(rain, reporting, stuck, np.zeros(len(gauges)))[:, :, None]
        )
    )

    sensors = np.flatnonzero(dev.kind == "water_level")
    rate = weather.rain_rate(dev.xy[sensors, 0], dev.xy[sensors, 1], mid)
    response = np.zeros_like(rate)
    keep = math.exp(-LEVEL_STEP_S / 3600.0 / 1.5)
    level = np.zeros(len(sensors))
    for i in range(len(t)):
        level = keep * level + (1 - keep) * rate[:, i]
        response[:, i] = level
    wet = dev.wetness[sensors]
    prone = wet >= np.quantile(wet, 0.85) if len(wet) else np.zeros(0, dtype=bool)
    target = np.where(prone, rng.uniform(0.36, 0.6, len(sensors)), rng.uniform(0.06, 0.22, len(sensors)))
    gain = target / np.maximum(response.max(axis=1), 1e-9)
    base = rng.uniform(0.02, 0.08, len(sensors))
    wl = base[:, None] + gain[:, None] * response + rng.normal(0, 0.004, response.shape)
    wl = np.maximum(wl, 0.0)
    reporting, stuck = _reporting_mask(dev.status[sensors], len(t), rng)
    blocks.append(
        ObservationBlock(sensors, t, ("water_level_m",), (3,), _apply_faults(wl, reporting, stuck, base)[:, :, None])
    )

    t = start + AIR_STEP_S * np.arange(1, OBSERVATION_DAYS * DAY_S // AIR_STEP_S + 1)
    stations = np.flatnonzero(dev.kind == "air_quality")
    hour = ((t + LOCAL_OFFSET_S) // 3600) % 24
    synoptic = np.zeros(len(t))
    for i in range(1, len(t)):
        synoptic[i] = 0.97 * synoptic[i - 1] + rng.normal(0, 1.6)
    regional = 26 + 8 * np.sin(2 * np.pi * (hour - 3) / 24) + synoptic
    washout = 1.0 / (1.0 + weather.rain_rate(dev.xy[stations, 0], dev.xy[stations, 1], t) / 4.0)
    pm25 = regional[None, :] * rng.uniform(0.8, 1.25, (len(stations), 1)) * washout
    pm25 = np.maximum(pm25 + rng.normal(0, 2.0, pm25.shape), 3.0)
    pm10 = np.maximum(pm25 * rng.uniform(1.45, 1.9, (len(stations), 1)) + rng.normal(0, 3.0, pm25.shape), pm25)
    reporting, stuck = _reporting_mask(dev.status[stations], len(t), rng)
    values = np.stack([_apply_faults(pm10, reporting, stuck), _apply_faults(pm25, reporting, stuck)], axis=2)
    blocks.append(ObservationBlock(stations, t, ("pm10_ugm3", "pm25_ugm3"), (1, 1), values))

    t = start + CHARGING_STEP_S * np.arange(1, OBSERVATION_DAYS * DAY_S // CHARGING_STEP_S + 1)
    piles = np.flatnonzero(dev.kind == "charging_pile")
    hour = ((t + LOCAL_OFFSET_S) // 3600) % 24
    busy = 0.15 + 0.55 * np.exp(-((hour - 14) ** 2) / 18.0) + 0.25 * np.exp(-((hour - 20) ** 2) / 6.0)
    occupied = (rng.random((len(piles), len(t))) < busy[None, :] * rng.uniform(0.7, 1.2, (len(piles), 1))).astype(float)
    rated = rng.choice(np.array([7.0, 60.0, 120.0]), size=len(piles), p=[0.35, 0.45, 0.2])
    power = occupied * rated[:, None] * rng.uniform(0.45, 0.98, occupied.shape)
    reporting, stuck = _reporting_mask(dev.status[piles], len(t), rng)
    values = np.stack([_apply_faults(occupied, reporting, stuck), _apply_faults(power, reporting, stuck)], axis=2)
    blocks.append(ObservationBlock(piles, t, ("occupied", "power_kw"), (0, 2), values))
    return blocks


def observation_lines(dev: Devices, blocks: list[ObservationBlock]) -> Iterator[str]:
    """CSV lines (with newline) ordered by device code, time and property; fixed decimals per property."""
    per_device: list[tuple[str, ObservationBlock, int]] = []
    for block in blocks:
        per_device += [(str(dev.code[d]), block, i) for i, d in enumerate(block.devices)]
    per_device.sort(key=lambda item: item[0])
    time_text = {}
    for block in blocks:
        key = (int(block.times[0]), len(block.times))
        if key not in time_text:
            time_text[key] = local_iso(block.times).tolist()
    for code, block, i in per_device:
        stamps = time_text[(int(block.times[0]), len(block.times))]
        vals = block.values[i]
        fmts = [f"{{:.{d}f}}" for d in block.decimals]
        for ti, stamp in enumerate(stamps):
            for pi, prop in enumerate(block.properties):
                v = vals[ti, pi]
                if v == v:  # not NaN
                    yield f"{code},{stamp},{prop},{fmts[pi].format(v)}\n"


def observation_count(blocks: list[ObservationBlock]) -> int:
    return int(sum(np.count_nonzero(~np.isnan(b.values)) for b in blocks))
