"""Citizen complaints (民生诉求) of the last 90 days: where, when, and how far each got in its handling.

Complaints cluster where their causes are: waterlogging on low-lying roads during storms, noise around
shopping streets at night, illegal building and fire hazards in the villages, property disputes in estates.
The fake reporter phone numbers already look masked (``138****1234``); they are not real data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from sample_data.buildings import Buildings
from sample_data.iot import DAY_S, END_S, EVENT_DAYS, LOCAL_OFFSET_S, Weather, local_iso
from sample_data.layout import Lattice, Terrain, road_name, road_points

EVENTS_PER_SCALE = 2000


@dataclass(frozen=True)
class Subcategory:
    name: str
    department: str
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    weight: float
    due_hours: int
    building_share: float
    """Share of complaints about a building (the rest are on a road)."""
    building_styles: tuple[str, ...]
    night: bool
    subcategories: tuple[Subcategory, ...]


CATEGORIES: dict[str, Category] = {
    "property_management": Category(
        0.17,
        120,
        1.0,
        ("tower", "slab", "villa", "mixed"),
        False,
        (
            Subcategory(
                "电梯故障",
                "南山区住房和建设局",
                ("{place}电梯经常故障停运，物业维修不及时", "{place}电梯困人多次，要求物业彻底检修"),
            ),
            Subcategory(
                "停车收费",
                "南山区住房和建设局",
                ("{place}物业擅自上调停车费，业主不认可", "{place}地下车库收费标准未公示"),
            ),
            Subcategory("二次供水", "南山区水务局", ("{place}二次供水水质浑浊，有异味", "{place}高层供水水压不足")),
        ),
    ),
    "noise": Category(
        0.15,
        48,
        0.5,
        ("mall", "mixed", "office"),
        True,
        (
            Subcategory(
                "夜间施工噪声",
                "南山区城市管理和综合执法局",
                ("{place}工地夜间施工，晚上十一点后仍在作业", "{place}附近夜间打桩噪音扰民"),
            ),
            Subcategory(
                "商业噪声",
                "南山公安分局",
                ("{place}附近酒吧音响声音过大，影响居民休息", "{place}商铺门口高音喇叭招揽顾客"),
            ),
            Subcategory("社会生活噪声", "南山公安分局", ("{place}广场舞音响音量过大", "{place}楼上夜间装修噪音")),
        ),
    ),
    "environment": Category(
        0.12,
        120,
        0.45,
        ("factory", "village", "mall"),
        False,
        (
            Subcategory("餐饮油烟", "南山区生态环境分局", ("{place}餐饮店油烟直排，气味严重", "{place}烧烤摊油烟扰民")),
            Subcategory(
                "垃圾清运",
                "南山区城市管理和综合执法局",
                ("{place}垃圾清运不及时，堆放发臭", "{place}垃圾桶满溢无人处理"),
            ),
            Subcategory("废气排放", "南山区生态环境分局", ("{place}厂房排放刺激性气味", "{place}附近夜间有异味废气")),
        ),
    ),
    "traffic": Category(
        0.12,
        24,
        0.0,
        (),
        False,
        (
            Subcategory(
                "违章停车", "南山交警大队", ("{place}路边车辆长期违停，占用消防通道", "{place}人行道被机动车占用")
            ),
            Subcategory(
                "信号灯故障", "南山交警大队", ("{place}路口信号灯故障，车辆通行混乱", "{place}行人信号灯时间过短")
            ),
            Subcategory("交通拥堵", "南山交警大队", ("{place}早晚高峰严重拥堵", "{place}学校门口接送车辆拥堵")),
        ),
    ),
    "road_facility": Category(
        0.11,
        72,
        0.0,
        (),
        False,
        (
            Subcategory(
                "路面破损", "南山区城市管理和综合执法局", ("{place}路面坑洼破损，存在安全隐患", "{place}人行道地砖松动")
            ),
            Subcategory("井盖缺失", "南山区水务局", ("{place}井盖缺失，夜间行人易跌落", "{place}井盖破损下沉")),
            Subcategory(
                "路灯不亮", "南山区城市管理和综合执法局", ("{place}路灯不亮，夜间通行不安全", "{place}一排路灯白天常亮")
            ),
        ),
    ),
    "public_order": Category(
        0.09,
        24,
        0.5,
        ("mall", "mixed", "village"),
        True,
        (
            Subcategory(
                "占道经营", "南山区城市管理和综合执法局", ("{place}流动摊贩占道经营", "{place}商铺占用人行道摆卖")
            ),
            Subcategory("群租隐患", "南山公安分局", ("{place}存在群租现象，人员复杂", "{place}出租屋隔断群租")),
            Subcategory("聚众喧哗", "南山公安分局", ("{place}夜间聚众喧哗", "{place}深夜有人酗酒闹事")),
        ),
    ),
    "illegal_construction": Category(
        0.09,
        360,
        1.0,
        ("village",),
        False,
        (
            Subcategory("违法加建", "南山区规划土地监察局", ("{place}楼顶违规加建一层", "{place}正在违法加盖楼层")),
            Subcategory(
                "私搭乱建", "南山区规划土地监察局", ("{place}一楼违规搭建铁皮房", "{place}占用消防通道搭建棚架")
            ),
        ),
    ),
    "fire_safety": Category(
        0.07,
        24,
        0.85,
        ("village", "mixed", "mall"),
        False,
        (
            Subcategory(
                "消防通道堵塞", "南山消防救援大队", ("{place}消防通道被杂物堵塞", "{place}消防车通道被车辆占用")
            ),
            Subcategory(
                "电动车违规充电", "南山消防救援大队", ("{place}楼道内电动车飞线充电", "{place}电动车停放在楼梯间充电")
            ),
            Subcategory("消防设施损坏", "南山消防救援大队", ("{place}灭火器过期未更换", "{place}消火栓无水")),
        ),
    ),
    "waterlogging": Category(
        0.08,
        6,
        0.0,
        (),
        False,
        (
            Subcategory(
                "道路积水",
                "南山区水务局",
                ("{place}路段积水约{depth}厘米深，车辆无法通行", "{place}下雨后严重积水，行人无法通过"),
            ),
            Subcategory("井盖冒水", "南山区水务局", ("{place}雨水井冒水", "{place}排水口堵塞，路面积水")),
        ),
    ),
}
CATEGORY_NAMES = tuple(CATEGORIES)
PHONE_PREFIXES = (
    "130",
    "131",
    "132",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "158",
    "159",
    "177",
    "186",
    "188",
    "189",
)
DAY_HOURS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 3, 6, 8, 8, 7, 5, 6, 7, 7, 7, 6, 5, 5, 4, 3, 2, 1.5])
NIGHT_HOURS = np.array([8, 6, 4, 2, 1, 0.5, 0.5, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 4, 5, 7, 9, 9])
STATUS_STEPS = ("reported", "dispatched", "in_progress", "resolved", "closed") + (
    "reopened",
    "in_progress",
    "resolved",
    "closed",
) * 3


@dataclass
class Events:
    code: np.ndarray
    category: np.ndarray
    subcategory: np.ndarray
    status: np.ndarray
    reported_at: np.ndarray
    updated_at: np.ndarray
    closed_at: np.ndarray
    due_at: np.ndarray
    department: np.ndarray
    reopen_count: np.ndarray
    description: np.ndarray
    reporter_contact: np.ndarray
    building_code: np.ndarray
    xy: np.ndarray


def _weighted_with_hotspots(n_items: int, n: int, base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n picks (with replacement) of items weighted by ``base``, plus a few hot spots (themselves picked
    by ``base``) drawing a quarter of all picks."""
    w = base.astype(float) / base.sum()
    hot = rng.choice(n_items, size=min(n_items, max(3, n // 60)), replace=False, p=w)
    w[hot] += (1.0 / 3.0) / len(hot)
    return rng.choice(n_items, size=n, p=w / w.sum())


def make_events(
    lat: Lattice, terrain: Terrain, b: Buildings, weather: Weather, scale: int, rng: np.random.Generator
) -> Events:
    """``2000 * scale`` complaints reported in the 90 days before 2026-11-01 (Asia/Shanghai)."""
    n = EVENTS_PER_SCALE * scale
    weights = np.array([c.weight for c in CATEGORIES.values()])
    cat = rng.choice(len(CATEGORY_NAMES), size=n, p=weights / weights.sum())
    cat = np.sort(cat)  # group by category; rows are ordered by time at the end
    xy = np.zeros((n, 2))
    place = np.empty(n, dtype=object)
    bcode = np.full(n, None, dtype=object)
    window_start = END_S - EVENT_DAYS * DAY_S
    reported = np.zeros(n, dtype=np.int64)
    sub = np.empty(n, dtype=object)
    dept = np.empty(n, dtype=object)
    desc_template = np.empty(n, dtype=object)
    inside = shapely.get_coordinates(shapely.point_on_surface(b.geometry))

    for ci, name in enumerate(CATEGORY_NAMES):
        spec = CATEGORIES[name]
        rows = np.flatnonzero(cat == ci)
        if not len(rows):
            continue
        on_building = rng.random(len(rows)) < spec.building_share
        cand = np.flatnonzero(np.isin(b.style, spec.building_styles))
        if not len(cand):
            on_building[:] = False
        br = rows[on_building]
        if len(br):
            pick = cand[_weighted_with_hotspots(len(cand), len(br), np.ones(len(cand)), rng)]
            xy[br] = inside[pick]
            place[br] = b.name[pick]
            bcode[br] = b.code[pick]
        rr = rows[~on_building]
        if len(rr):
            m = len(rr) * (20 if name == "waterlogging" else 3)
            pts = road_points(lat, m, rng)
            wet = name == "waterlogging"
            base = np.exp(4.0 * terrain.wetness(pts.xy[:, 0], pts.xy[:, 1])) if wet else np.ones(m)
            pick = _weighted_with_hotspots(m, len(rr), base, rng)
            xy[rr] = pts.xy[pick]
            place[rr] = [
                road_name(lat, bool(v), int(li)) for v, li in zip(pts.vertical[pick], pts.line[pick], strict=True)
            ]

        hours = NIGHT_HOURS if spec.night else DAY_HOURS
        if name == "waterlogging":
            storm = rng.choice(
                len(weather.peak_s), size=len(rows), p=weather.peak_mm_h**2 / (weather.peak_mm_h**2).sum()
            )
            t = weather.peak_s[storm] + rng.normal(0.3, 1.0, len(rows)) * weather.sigma_h[storm] * 3600
            reported[rows] = np.clip(t.astype(np.int64), window_start, END_S - 60)
        else:
            day = rng.integers(0, EVENT_DAYS, len(rows))
            hour = rng.choice(24, size=len(rows), p=hours / hours.sum())
            reported[rows] = window_start + day * DAY_S + hour * 3600 + rng.integers(0, 3600, len(rows))
        si = rng.integers(0, len(spec.subcategories), len(rows))
        sub[rows] = [spec.subcategories[i].name for i in si]
        dept[rows] = [spec.subcategories[i].department for i in si]
        desc_template[rows] = [
            spec.subcategories[i].templates[k] for i, k in zip(si, rng.integers(0, 2, len(rows)), strict=True)
        ]

    status, updated, closed, reopens = _lifecycle(cat, reported, rng)
    due = reported + np.array([c.due_hours for c in CATEGORIES.values()])[cat] * 3600
    depth = rng.integers(10, 60, n)
    description = np.array(
        [str(tpl).format(place=p, depth=d) for tpl, p, d in zip(desc_template, place, depth, strict=True)], dtype=object
    )
    has_contact = rng.random(n) < 0.9
    prefix = np.array(PHONE_PREFIXES, dtype=object)[rng.integers(0, len(PHONE_PREFIXES), n)]
    tail = rng.integers(0, 10000, n)
    contact = np.array(
        [f"{p}****{t:04d}" if h else None for p, t, h in zip(prefix, tail, has_contact, strict=True)], dtype=object
    )
    department = dept.copy()
    department[np.isin(status, ("reported", "rejected"))] = None

    order = np.lexsort((np.arange(n), reported))
    local_day = np.datetime_as_string(((reported[order] + LOCAL_OFFSET_S) // DAY_S).astype("datetime64[D]"), unit="D")
    day_key = np.char.replace(local_day, "-", "")
    starts = np.r_[0, np.flatnonzero(day_key[1:] != day_key[:-1]) + 1]
    seq = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n])) + 1
    codes = np.array([f"EV{d}{s:06d}" for d, s in zip(day_key, seq, strict=True)], dtype=object)

    def iso_or_none(t: np.ndarray) -> np.ndarray:
        text = local_iso(np.where(t < 0, 0, t)).astype(object)
        text[t < 0] = None
        return text

    return Events(
        code=codes,
        category=np.array(CATEGORY_NAMES, dtype=object)[cat[order]],
        subcategory=sub[order],
        status=status[order],
        reported_at=local_iso(reported[order]).astype(object),
        updated_at=local_iso(updated[order]).astype(object),
        closed_at=iso_or_none(closed[order]),
        due_at=local_iso(due[order]).astype(object),
        department=department[order],
        reopen_count=reopens[order],
        description=description[order],
        reporter_contact=contact[order],
        building_code=bcode[order],
        xy=np.round(xy[order], 3),
    )


def _lifecycle(
    cat: np.ndarray, reported: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Status, last update, closing time (-1 if not closed) and reopen count at END_S, from simulated
    dispatch -> handling -> resolution -> review/closure cycles; ~4% are rejected at dispatch."""
    n = len(cat)
    due_h = np.array([c.due_hours for c in CATEGORIES.values()])[cat].astype(float)
    cycles = rng.choice(4, size=n, p=[0.88, 0.085, 0.025, 0.01])
    # A few cases drag on (waiting for other departments, disputes): everything takes ten times longer.
    slow = np.where(rng.random(n) < 0.06, 10.0, 1.0)
    steps = len(STATUS_STEPS)
    hours = np.empty((n, steps))
    hours[:, 0] = 0.0
    hours[:, 1] = 0.08 + rng.exponential(2.0, n) * slow
    hours[:, 2] = rng.exponential(8.0, n) * slow
    hours[:, 3] = np.exp(rng.normal(np.log(0.45 * due_h), 0.7)) * slow
    hours[:, 4] = rng.uniform(24, 240, n)  # review and the return visit (回访) before closing
    for c in range(3):
        base = 5 + 4 * c
        hours[:, base] = rng.uniform(24, 240, n)
        hours[:, base + 1] = rng.exponential(48.0, n)
        hours[:, base + 2] = np.exp(rng.normal(np.log(0.3 * due_h), 0.6)) * slow
        hours[:, base + 3] = rng.uniform(24, 240, n)
        hours[:, base : base + 4] = np.where((cycles > c)[:, None], hours[:, base : base + 4], np.inf)
    at = reported[:, None] + np.round(np.cumsum(hours, axis=1) * 3600)
    done = np.sum(at <= END_S, axis=1)  # >= 1: reported_at is before END_S
    last = np.take_along_axis(at, (done - 1)[:, None], axis=1)[:, 0].astype(np.int64)
    status = np.array(STATUS_STEPS, dtype=object)[done - 1]
    reopens = np.sum(
        (np.arange(steps)[None, :] < done[:, None]) & (np.array(STATUS_STEPS) == "reopened")[None, :], axis=1
    )
    rejected = (rng.random(n) < 0.04) & (done >= 2)
    status[rejected] = "rejected"
    last[rejected] = at[rejected, 1].astype(np.int64)
    reopens[rejected] = 0
    closed = np.where(status == "closed", last, -1)
    return status, last, closed, reopens.astype(np.int64)
