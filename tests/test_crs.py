"""CRS handling, checked against pyproj transformers built independently from PROJ strings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pyproj import CRS, Geod, Transformer

from cim import crs
from cim.settings import get_settings

# Control points across Shenzhen: Houhai (Shenzhen Bay), Futian, Longgang, Guangming.
CONTROL_LONLAT = np.array(
    [
        [113.94, 22.52],
        [114.055, 22.54],
        [114.25, 22.72],
        [113.93, 22.75],
    ]
)
LON, LAT = CONTROL_LONLAT[:, 0], CONTROL_LONLAT[:, 1]

# EPSG:4547 and ECEF written out by hand, so the checks do not depend on how cim.crs picks operations.
TMERC_114 = "+proj=tmerc +lat_0=0 +lon_0=114 +k=1 +x_0=500000 +y_0=0 +ellps=GRS80 +units=m +type=crs"
GEOGRAPHIC = "+proj=longlat +ellps=GRS80 +no_defs +type=crs"
GEOCENTRIC = "+proj=geocent +ellps=WGS84 +units=m +type=crs"
MM = 1e-3


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("CIM_STORAGE_SRID", raising=False)
    monkeypatch.delenv("CIM_HEIGHT_OFFSET_M", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _set_height_offset(monkeypatch: pytest.MonkeyPatch, value: float) -> None:
    monkeypatch.setenv("CIM_HEIGHT_OFFSET_M", str(value))
    get_settings.cache_clear()


def _reference(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def _up(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def test_storage_crs_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert crs.storage_srid() == 4547
    assert crs.storage_crs().to_epsg() == 4547
    monkeypatch.setenv("CIM_STORAGE_SRID", "4526")
    get_settings.cache_clear()
    assert crs.storage_srid() == 4526


def test_lonlat_to_storage_matches_pyproj() -> None:
    x, y = crs.lonlat_to_storage(LON, LAT)
    ref_x, ref_y = _reference(GEOGRAPHIC, TMERC_114).transform(LON, LAT)
    np.testing.assert_allclose(x, ref_x, rtol=0, atol=MM)
    np.testing.assert_allclose(y, ref_y, rtol=0, atol=MM)
    # The guide's envelope of Shenzhen in EPSG:4547.
    assert np.all((x > 480_000) & (x < 560_000))
    assert np.all((y > 2_480_000) & (y < 2_530_000))
    assert x.dtype == np.float64 and x.shape == (4,)


def test_central_meridian_is_false_easting() -> None:
    x, _ = crs.lonlat_to_storage(114.0, np.array([22.4, 22.6, 22.8]))
    np.testing.assert_array_equal(x, 500_000.0)
    lon, _ = crs.storage_to_lonlat(500_000.0, 2_500_000.0)
    assert lon.shape == () and abs(float(lon) - 114.0) < 1e-12


def test_storage_to_lonlat_round_trip() -> None:
    x, y = crs.lonlat_to_storage(LON, LAT)
    lon, lat = crs.storage_to_lonlat(x, y)
    ref_lon, ref_lat = _reference(TMERC_114, GEOGRAPHIC).transform(x, y)
    np.testing.assert_allclose(lon, ref_lon, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lat, ref_lat, rtol=0, atol=1e-9)
    back_x, back_y = crs.lonlat_to_storage(lon, lat)
    assert np.max(np.hypot(back_x - x, back_y - y)) < MM


def test_to_and_from_storage_any_crs() -> None:
    x, y = crs.lonlat_to_storage(LON, LAT)
    for name in ("EPSG:4490", "OGC:CRS84", "http://www.opengis.net/def/crs/EPSG/0/4326", 4490):
        lon, lat = crs.from_storage(x, y, name)
        np.testing.assert_allclose(lon, LON, rtol=0, atol=1e-10)  # lon first despite EPSG:4490's axis order
        np.testing.assert_allclose(lat, LAT, rtol=0, atol=1e-10)
        sx, sy = crs.to_storage(lon, lat, name)
        assert np.max(np.hypot(sx - x, sy - y)) < MM
    mx, my = crs.from_storage(x, y, "EPSG:3857")
    ref_mx, ref_my = _reference(GEOGRAPHIC, "+proj=merc +a=6378137 +b=6378137 +type=crs").transform(LON, LAT)
    np.testing.assert_allclose(mx, ref_mx, rtol=0, atol=MM)
    np.testing.assert_allclose(my, ref_my, rtol=0, atol=MM)


def test_unrelated_datum_is_refused() -> None:
    # Beijing 1954 → CGCS2000 has no known transformation; a null shift would be ~100 m off.
    with pytest.raises(crs.CRSError, match="Beijing 1954"):
        crs.to_storage(500_000.0, 2_500_000.0, "EPSG:2436")


def test_storage_to_ecef_matches_pyproj() -> None:
    x, y = crs.lonlat_to_storage(LON, LAT)
    h = np.array([5.0, 30.0, 80.0, 120.0])
    big_x, big_y, big_z = crs.storage_to_ecef(x, y, h)
    ref = Transformer.from_pipeline(
        "+proj=pipeline +step +inv +proj=tmerc +lat_0=0 +lon_0=114 +k=1 +x_0=500000 +y_0=0 +ellps=GRS80 "
        "+step +proj=cart +ellps=WGS84"
    )
    ref_x, ref_y, ref_z = ref.transform(x, y, h)
    np.testing.assert_allclose(big_x, ref_x, rtol=0, atol=MM)
    np.testing.assert_allclose(big_y, ref_y, rtol=0, atol=MM)
    np.testing.assert_allclose(big_z, ref_z, rtol=0, atol=MM)
    wgs84 = "+proj=longlat +ellps=WGS84 +type=crs"
    geo_x, geo_y, geo_z = _reference(wgs84, GEOCENTRIC).transform(LON, LAT, h)
    np.testing.assert_allclose(np.stack([big_x, big_y, big_z]), np.stack([geo_x, geo_y, geo_z]), atol=MM)
    bx, by, bh = crs.ecef_to_storage(big_x, big_y, big_z)
    assert np.max(np.abs(np.stack([bx - x, by - y, bh - h]))) < MM


def test_height_offset_moves_along_the_normal(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = crs.lonlat_to_storage(LON, LAT)
    h = np.full(4, 12.5)
    without = np.stack(crs.storage_to_ecef(x, y, h), axis=-1)
    _set_height_offset(monkeypatch, -3.2)
    with_offset = np.stack(crs.storage_to_ecef(x, y, h), axis=-1)
    np.testing.assert_allclose(with_offset - without, -3.2 * _up(LON, LAT), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(with_offset - without, axis=-1), 3.2, rtol=0, atol=1e-6)
    # Back from ECEF the same offset is removed, so orthometric heights round-trip.
    _, _, back_h = crs.ecef_to_storage(*with_offset.T)
    np.testing.assert_allclose(back_h, h, rtol=0, atol=MM)


def test_vectorised_equals_scalar_on_100k_points() -> None:
    rng = np.random.default_rng(4547)
    x = rng.uniform(480_000, 560_000, 100_000)
    y = rng.uniform(2_480_000, 2_530_000, 100_000)
    h = rng.uniform(-5, 400, 100_000)
    lon, lat = crs.storage_to_lonlat(x, y)
    ex, ey, ez = crs.storage_to_ecef(x, y, h)
    ref_lon, ref_lat = _reference(TMERC_114, GEOGRAPHIC).transform(x, y)
    np.testing.assert_allclose(lon, ref_lon, rtol=0, atol=1e-9)
    np.testing.assert_allclose(lat, ref_lat, rtol=0, atol=1e-9)
    for i in range(0, 100_000, 50):  # 2000 scalar calls, spread over the whole array
        s_lon, s_lat = crs.storage_to_lonlat(float(x[i]), float(y[i]))
        assert (float(s_lon), float(s_lat)) == (lon[i], lat[i])
        s_ecef = crs.storage_to_ecef(float(x[i]), float(y[i]), float(h[i]))
        assert tuple(map(float, s_ecef)) == (ex[i], ey[i], ez[i])
    # Broadcasting: one height for all points, and 2-D input shapes are kept.
    grid_lon, _ = crs.storage_to_lonlat(x[:6].reshape(2, 3), y[:6].reshape(2, 3))
    assert grid_lon.shape == (2, 3)
    assert crs.storage_to_ecef(x[:6], y[:6], 10.0)[2].shape == (6,)


def test_enu_to_ecef_matrix() -> None:
    lon0, lat0, h0 = 113.94, 22.52, 15.0
    m = crs.enu_to_ecef_matrix(lon0, lat0, h0)
    assert m.shape == (4, 4)
    rot = m[:3, :3]
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(m[:3, 2], _up(np.array(lon0), np.array(lat0)), atol=1e-12)
    to_ecef = _reference("+proj=longlat +ellps=WGS84 +type=crs", GEOCENTRIC)
    np.testing.assert_allclose(m[:3, 3], to_ecef.transform(lon0, lat0, h0), rtol=0, atol=MM)
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])

    geod = Geod(ellps="WGS84")
    to_geodetic = _reference(GEOCENTRIC, "+proj=longlat +ellps=WGS84 +type=crs")
    for enu, azimuth in (((100.0, 0.0, 0.0), 90.0), ((0.0, 100.0, 0.0), 0.0)):
        p = m @ np.array([*enu, 1.0])
        lon, lat, h = to_geodetic.transform(*p[:3])
        az, _, dist = geod.inv(lon0, lat0, lon, lat)
        assert dist == pytest.approx(100.0, abs=MM)
        assert az == pytest.approx(azimuth, abs=1e-5)
        assert h - h0 == pytest.approx(100.0**2 / (2 * 6_378_000), abs=2e-4)  # the tangent plane rises
    up = m @ np.array([0.0, 0.0, 50.0, 1.0])
    lon, lat, h = to_geodetic.transform(*up[:3])
    assert (lon, lat, h) == pytest.approx((lon0, lat0, h0 + 50.0), abs=1e-8)


def test_3dtiles_transform_is_column_major() -> None:
    m = crs.enu_to_ecef_matrix(114.055, 22.54, 0.0)
    flat = crs.as_3dtiles_transform(m)
    assert len(flat) == 16 and all(isinstance(v, float) for v in flat)
    assert flat[12:15] == m[:3, 3].tolist()  # translation is the last column
    assert flat[15] == 1.0 and flat[3] == flat[7] == flat[11] == 0.0
    np.testing.assert_array_equal(np.array(flat).reshape(4, 4).T, m)
    with pytest.raises(ValueError, match="4x4"):
        crs.as_3dtiles_transform(np.eye(3))


def test_storage_enu_matrix_applies_height_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = crs.lonlat_to_storage(114.25, 22.72)
    _set_height_offset(monkeypatch, -2.5)
    m = crs.storage_enu_to_ecef_matrix(float(x), float(y), 40.0)
    np.testing.assert_allclose(m[:3, 3], np.ravel(crs.storage_to_ecef(x, y, 40.0)), atol=MM)
    np.testing.assert_allclose(m, crs.enu_to_ecef_matrix(114.25, 22.72, 37.5), atol=MM)


@pytest.mark.parametrize(
    "text",
    [
        "EPSG:4547",
        "epsg:4547",
        "4547",
        4547,
        " EPSG:4547 ",
        "http://www.opengis.net/def/crs/EPSG/0/4547",
        "urn:ogc:def:crs:EPSG::4547",
        CRS.from_epsg(4547),
    ],
)
def test_parse_epsg_forms(text: object) -> None:
    parsed = crs.parse_crs(text)  # type: ignore[arg-type]
    assert parsed.to_epsg() == 4547
    assert crs.crs_id(text) == "EPSG:4547"  # type: ignore[arg-type]
    assert crs.crs_uri(text) == "http://www.opengis.net/def/crs/EPSG/0/4547"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "CRS84",
        "OGC:CRS84",
        "crs84",
        "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
        "urn:ogc:def:crs:OGC:1.3:CRS84",
    ],
)
def test_parse_crs84_forms(text: str) -> None:
    parsed = crs.parse_crs(text)
    assert parsed.to_authority() == ("OGC", "CRS84")
    assert crs.crs_uri(text) == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    assert [a.abbrev.lower() for a in parsed.axis_info][:2] == ["lon", "lat"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("EPSG:99999999", "unknown CRS EPSG:99999999"),
        ("EPSG:", "unrecognised CRS 'EPSG:'"),
        ("WGS84", "unrecognised CRS 'WGS84'"),
        ("+proj=longlat +datum=WGS84", "unrecognised CRS"),
        ("http://www.opengis.net/def/crs/OGC/1.3/CRS85", "unrecognised CRS"),
        (0, "not a positive integer"),
        (True, "not a name"),
        (None, "not a name"),
        (4547.0, "not a name"),
    ],
)
def test_parse_errors(text: object, fragment: str) -> None:
    with pytest.raises(crs.CRSError, match=fragment.replace("+", r"\+")):
        crs.parse_crs(text)  # type: ignore[arg-type]
    assert issubclass(crs.CRSError, ValueError)


def test_crs_without_identifier_is_refused() -> None:
    with pytest.raises(crs.CRSError, match="no EPSG or OGC identifier"):
        crs.crs_id(CRS.from_proj4("+proj=tmerc +lon_0=114.3 +ellps=GRS80"))
    with pytest.raises(crs.CRSError):
        crs.crs_uri("EPSG:99999999")


def test_transformer_is_cached_and_always_xy() -> None:
    t = crs.transformer("EPSG:4490", "EPSG:4547")
    assert t is crs.transformer("4490", "http://www.opengis.net/def/crs/EPSG/0/4547")
    x, y = t.transform(114.0, 22.5)
    assert x == pytest.approx(500_000.0, abs=1e-6) and 2_480_000 < y < 2_530_000


# --- local "independent" systems -------------------------------------------------------------------


def test_four_parameter_hand_computed() -> None:
    params = crs.FourParameters(dx_m=1000.0, dy_m=-2000.0, rotation_arcsec=30.0, scale_ppm=12.0)
    t = crs.local_helmert(params)
    x, y = 35_000.0, 28_000.0
    theta, k = math.radians(30.0 / 3600.0), 1 + 12e-6
    expected = (
        1000.0 + k * (x * math.cos(theta) - y * math.sin(theta)),
        -2000.0 + k * (x * math.sin(theta) + y * math.cos(theta)),
    )
    assert t.transform(x, y) == pytest.approx(expected, abs=1e-6)
    # A quarter turn counter-clockwise takes east to north.
    quarter = crs.local_helmert([10.0, 0.0, 90 * 3600.0, 0.0])
    assert quarter.transform(1.0, 0.0) == pytest.approx((10.0, 1.0), abs=1e-9)
    # Heights pass through unchanged.
    assert t.transform(x, y, 7.5)[2] == 7.5


def test_four_parameter_survey_convention() -> None:
    # Survey report convention: X north, Y east, alpha from X towards Y.
    d_north, d_east, alpha_arcsec, ppm = 150.0, -80.0, 45.0, -6.0
    t = crs.local_helmert(crs.FourParameters.from_survey(d_north, d_east, alpha_arcsec, ppm))
    north, east = 2_500_123.0, 501_234.0
    a, k = math.radians(alpha_arcsec / 3600.0), 1 + ppm * 1e-6
    north2 = d_north + k * (north * math.cos(a) - east * math.sin(a))
    east2 = d_east + k * (north * math.sin(a) + east * math.cos(a))
    assert t.transform(east, north) == pytest.approx((east2, north2), abs=1e-6)


def test_four_parameter_round_trip() -> None:
    t = crs.local_helmert(crs.FourParameters(512.3, -77.1, -12.5, 3.3))
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-30_000, 30_000, 1000), rng.uniform(-30_000, 30_000, 1000)
    fx, fy = t.transform(x, y)
    bx, by = t.transform(fx, fy, direction="INVERSE")
    assert np.max(np.hypot(bx - x, by - y)) < MM


def test_seven_parameter_hand_computed() -> None:
    params = crs.SevenParameters(
        dx_m=-15.2,
        dy_m=31.7,
        dz_m=8.4,
        rx_arcsec=1.2,
        ry_arcsec=-0.8,
        rz_arcsec=2.1,
        scale_ppm=4.5,
        source_lon_0=114.0,
        source_x_0=500_000.0,
        source_ellps="krass",
    )
    t = crs.local_helmert(params)
    local_x, local_y, local_h = 505_000.0, 2_495_000.0, 20.0
    # By hand: local TM → local geodetic → local ECEF → Helmert (position vector) → CGCS2000 → EPSG:4547.
    local_tm = "+proj=tmerc +lat_0=0 +lon_0=114 +k=1 +x_0=500000 +y_0=0 +ellps=krass +type=crs"
    lon, lat = _reference(local_tm, "+proj=longlat +ellps=krass +type=crs").transform(local_x, local_y)
    cart = Transformer.from_pipeline("+proj=cart +ellps=krass")
    p = np.array(cart.transform(lon, lat, local_h))
    rx, ry, rz = (math.radians(v / 3600.0) for v in (1.2, -0.8, 2.1))
    rotation = np.array([[1.0, -rz, ry], [rz, 1.0, -rx], [-ry, rx, 1.0]])
    q = np.array([-15.2, 31.7, 8.4]) + (1 + 4.5e-6) * rotation @ p
    to_geodetic = Transformer.from_pipeline("+proj=cart +ellps=GRS80")
    g_lon, g_lat, g_h = to_geodetic.transform(q[0], q[1], q[2], direction="INVERSE")
    ex, ey = _reference(GEOGRAPHIC, TMERC_114).transform(g_lon, g_lat)
    x, y, h = t.transform(local_x, local_y, local_h)
    assert (x, y, h) == pytest.approx((ex, ey, g_h), abs=MM)
    # The test tells the conventions apart: coordinate-frame rotations (R transposed) land metres away.
    q_frame = np.array([-15.2, 31.7, 8.4]) + (1 + 4.5e-6) * rotation.T @ p
    f_lon, f_lat, _ = to_geodetic.transform(q_frame[0], q_frame[1], q_frame[2], direction="INVERSE")
    fx, fy = _reference(GEOGRAPHIC, TMERC_114).transform(f_lon, f_lat)
    assert math.hypot(fx - x, fy - y) > 10.0


def test_seven_parameter_round_trip_and_plain_sequence() -> None:
    values = [-15.2, 31.7, 8.4, 1.2, -0.8, 2.1, 4.5]
    t = crs.local_helmert(values)
    dx, dy, dz, rx, ry, rz, scale = values
    explicit = crs.local_helmert(crs.SevenParameters(dx, dy, dz, rx, ry, rz, scale))
    assert t.transform(505_000.0, 2_495_000.0) == pytest.approx(explicit.transform(505_000.0, 2_495_000.0))
    rng = np.random.default_rng(7)
    x, y = rng.uniform(480_000, 560_000, 1000), rng.uniform(2_480_000, 2_530_000, 1000)
    fx, fy = t.transform(x, y)
    bx, by = t.transform(fx, fy, direction="INVERSE")
    assert np.max(np.hypot(bx - x, by - y)) < MM


def test_zero_parameters_are_identity() -> None:
    x, y = np.array([505_000.0, 530_000.0]), np.array([2_495_000.0, 2_510_000.0])
    for params in ([0.0, 0.0, 0.0, 0.0], [0.0] * 7):
        fx, fy = crs.local_helmert(params).transform(x, y)
        assert np.max(np.hypot(fx - x, fy - y)) < MM


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ([1.0, 2.0, 3.0], "4 or 7 parameters, got 3"),
        ([1.0, float("nan"), 0.0, 0.0], "not a finite number"),
        ([1.0, "2 +proj=merc", 0.0, 0.0], "not a number"),
        ([0.0, 0.0, 0.0, -1e6], "non-positive"),
        ([0.0, 0.0, 0.0, 0.0, 0.0, float("inf"), 0.0], "not a finite number"),
    ],
)
def test_local_helmert_rejects_bad_parameters(params: list[object], fragment: str) -> None:
    with pytest.raises(crs.CRSError, match=fragment):
        crs.local_helmert(params)  # type: ignore[arg-type]


def test_seven_parameter_rejects_unknown_ellipsoid() -> None:
    with pytest.raises(crs.CRSError, match="source_ellps"):
        crs.SevenParameters(0, 0, 0, 0, 0, 0, 0, source_ellps="GRS80 +proj=merc")


def test_pipeline_contains_only_formatted_numbers() -> None:
    pipeline = crs.local_helmert_pipeline(crs.FourParameters(1, 2, 3, 4))
    assert pipeline == "+proj=helmert +x=1.0 +y=2.0 +theta=-3.0 +s=1.000004"


_ECEF_OF_A_POINT = (
    "from cim import crs; x, y, z = crs.storage_to_ecef([500000.0], [2500000.0], [10.0]); "
    "print(repr((float(x[0]), float(y[0]), float(z[0]))))"
)


def test_chosen_pipeline_is_kept_for_the_next_process(tmp_path: Path) -> None:
    """PROJ's operation search (1–2 s per pair) runs once per user cache folder; later processes, and ones finding an
    unreadable cache, compute the same coordinates."""
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path),
        "CIM_HOME": str(tmp_path / "home"),
        "CIM_STORAGE_SRID": "4547",
    }

    def ecef() -> str:
        done = subprocess.run([sys.executable, "-c", _ECEF_OF_A_POINT], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    searched = ecef()
    (cache,) = (tmp_path / "cim").glob("pipelines-*.json")
    kept = json.loads(cache.read_text())
    assert kept["EPSG:4547|EPSG:4978|3d"].startswith("proj=pipeline")
    assert ecef() == searched
    cache.write_text("{not json")
    assert ecef() == searched
    assert json.loads(cache.read_text()) == kept
