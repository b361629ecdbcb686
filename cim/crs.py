"""Coordinate reference systems: storage CRS, lon/lat, ECEF for 3D Tiles, and local survey systems.

Decisions recorded here:

- **Storage CRS** is ``EPSG:<settings.storage_srid>``, by default EPSG:4547 (CGCS2000 / 3-degree
  Gauss-Krüger CM 114E: metres, false easting 500000; Shenzhen lies at about x 480k–560k,
  y 2.48M–2.53M).
- **Axis order**: every transformer here is built with ``always_xy=True``, so x / easting / longitude
  always comes first. The official EPSG axis order of EPSG:4490 and EPSG:4326 is latitude first, and
  of EPSG:4547 northing first; we never use those orders, in any API.
- **Geographic CRS**: CRS84 (``OGC:CRS84``, WGS84 lon/lat) for the web and GeoJSON; EPSG:4490 is
  CGCS2000 geographic. ECEF is EPSG:4978 (WGS84 geocentric), the frame of 3D Tiles.
- **Datum**: CGCS2000 and WGS84 differ by a few centimetres, far below what a city model resolves, so
  we treat them as one datum. PROJ has no CGCS2000→WGS84 transformation and uses a "ballpark" null
  shift for 4490→4326/4978 anyway; we allow that ballpark only between these two datums. Any other
  datum pair without a known transformation (e.g. Beijing 1954 → CGCS2000, off by ~100 m) raises
  CRSError instead of being silently ignored.
- **Heights**: stored heights are orthometric (1985 National Height Datum, H). ECEF needs ellipsoidal
  heights: h = H + N with N = ``settings.height_offset_m`` (the geoid undulation, a survey fact of the
  deployment, default 0; around Shenzhen it is about -3 m). The code never guesses N.
- **Local "independent" systems** (Shenzhen's local grid; parameters not public) are reached through a
  user-supplied 4-parameter (2D similarity) or 7-parameter (Helmert) transform, see `local_helmert`.

All coordinate functions take scalars or array-likes (broadcast together) and return float64 numpy
arrays of the broadcast shape (0-d for scalars); they run as one vectorised PROJ call. Points PROJ
cannot transform come back as ``inf``. Transformers are cached per (source, target); pyproj ≥ 3.1
transformers are thread-safe, so the cached ones are shared by all request handlers.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyproj
from pyproj.exceptions import CRSError as _ProjCRSError
from pyproj.exceptions import ProjError

from cim.settings import get_settings

__all__ = [
    "CGCS2000_GEOGRAPHIC",
    "CRS84",
    "ECEF",
    "CRSError",
    "FourParameters",
    "SevenParameters",
    "as_3dtiles_transform",
    "crs_id",
    "crs_uri",
    "ecef_to_storage",
    "enu_to_ecef_matrix",
    "from_storage",
    "local_helmert",
    "local_helmert_pipeline",
    "lonlat_to_storage",
    "parse_crs",
    "storage_crs",
    "storage_enu_to_ecef_matrix",
    "storage_srid",
    "storage_to_ecef",
    "storage_to_lonlat",
    "to_storage",
    "transformer",
]

CRS84 = "OGC:CRS84"
CGCS2000_GEOGRAPHIC = "EPSG:4490"
ECEF = "EPSG:4978"
_WGS84_3D = "EPSG:4979"

FloatArray = npt.NDArray[np.float64]
CRSLike = str | int | pyproj.CRS


class CRSError(ValueError):
    """A CRS a user named is unknown, malformed, or cannot be transformed to/from without guessing."""


# --------------------------------------------------------------------------------------------------
# Naming CRSs


_EPSG_FORMS = (
    re.compile(r"(?:EPSG:)?([0-9]+)", re.IGNORECASE),
    re.compile(r"https?://www\.opengis\.net/def/crs/EPSG/[0-9.]+/([0-9]+)", re.IGNORECASE),
    re.compile(r"urn:ogc:def:crs:EPSG:[0-9.]*:([0-9]+)", re.IGNORECASE),
)
_OGC_FORMS = (
    re.compile(r"(?:OGC:)?(CRS84h?)", re.IGNORECASE),
    re.compile(r"https?://www\.opengis\.net/def/crs/OGC/[0-9.]+/(CRS84h?)", re.IGNORECASE),
    re.compile(r"urn:ogc:def:crs:OGC:[0-9.]*:(CRS84h?)", re.IGNORECASE),
)
_HOW_TO_NAME = (
    "use an EPSG code ('EPSG:4547' or '4547'), 'CRS84', or an OGC URI such as "
    "'http://www.opengis.net/def/crs/EPSG/0/4547'"
)


def crs_id(crs: CRSLike) -> str:
    """The canonical ``AUTH:CODE`` name (``EPSG:4547``, ``OGC:CRS84``) of a CRS given in any accepted form.

    Accepted: ``EPSG:4547``, ``4547`` (str or int), ``CRS84``/``OGC:CRS84``, OGC URIs
    (``http://www.opengis.net/def/crs/EPSG/0/4547``, ``http://www.opengis.net/def/crs/OGC/1.3/CRS84``),
    OGC URNs, or a pyproj CRS with an EPSG/OGC identifier. Raises CRSError otherwise; arbitrary PROJ
    strings and WKT are refused so every CRS the service uses has a name clients can resolve.
    """
    if isinstance(crs, pyproj.CRS):
        authority = crs.to_authority()
        if authority is None or authority[0] not in ("EPSG", "OGC"):
            raise CRSError(f"CRS {crs.name!r} has no EPSG or OGC identifier; {_HOW_TO_NAME}")
        return f"{authority[0]}:{authority[1]}"
    if isinstance(crs, int) and not isinstance(crs, bool):
        if crs <= 0:
            raise CRSError(f"EPSG code {crs} is not a positive integer")
        return f"EPSG:{crs}"
    if not isinstance(crs, str):
        raise CRSError(f"CRS {crs!r} is not a name; {_HOW_TO_NAME}")
    text = crs.strip()
    for form in _EPSG_FORMS:
        match = form.fullmatch(text)
        if match:
            return f"EPSG:{int(match.group(1))}"
    for form in _OGC_FORMS:
        match = form.fullmatch(text)
        if match:
            return "OGC:CRS84h" if match.group(1).lower().endswith("h") else CRS84
    raise CRSError(f"unrecognised CRS {crs!r}; {_HOW_TO_NAME}")


@lru_cache(maxsize=64)
def _crs_from_id(name: str) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(name)
    except _ProjCRSError:
        raise CRSError(f"unknown CRS {name}: not in the EPSG/OGC registry of PROJ") from None


def parse_crs(text: CRSLike) -> pyproj.CRS:
    """The pyproj CRS named by ``text`` (forms as in `crs_id`); raises CRSError for unknown ones."""
    return _crs_from_id(crs_id(text))


def crs_uri(crs: CRSLike) -> str:
    """The OGC URI of a CRS, e.g. ``http://www.opengis.net/def/crs/EPSG/0/4547`` (as OGC APIs expect)."""
    name = crs_id(crs)
    _crs_from_id(name)  # unknown codes fail here, not in a client
    authority, code = name.split(":")
    if authority == "EPSG":
        return f"http://www.opengis.net/def/crs/EPSG/0/{code}"
    version = "1.3" if code == "CRS84" else "0"
    return f"http://www.opengis.net/def/crs/OGC/{version}/{code}"


def storage_srid() -> int:
    """The EPSG code every geometry is stored in (``settings.storage_srid``, default 4547)."""
    return get_settings().storage_srid


def storage_crs() -> pyproj.CRS:
    """The storage CRS as a pyproj CRS."""
    return _crs_from_id(f"EPSG:{storage_srid()}")


# --------------------------------------------------------------------------------------------------
# Transformers


_SAME_DATUM = frozenset({"China 2000", "World Geodetic System 1984"})


def _datum_family(crs: pyproj.CRS) -> str | None:
    datum = crs.datum
    if datum is None:
        return None
    # WGS84 appears as the ensemble or as one of its realisations, e.g. "World Geodetic System 1984 (G1762)".
    return "World Geodetic System 1984" if datum.name.startswith("World Geodetic System 1984") else datum.name


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str, three_d: bool) -> pyproj.Transformer:
    """The chosen operation, rebuilt from its PROJ pipeline text.

    pyproj makes transformers thread-safe by re-creating them in each new thread; for one made with
    ``from_crs`` that repeats the whole operation search (about a second for CRS84, far more under load), so
    every fresh request thread would stall. One made from the pipeline text re-creates in well under a
    millisecond and computes the same numbers.
    """
    key = f"{src}|{dst}|{'3d' if three_d else '2d'}"
    known = _known_pipelines().get(key)
    if known is not None:
        return pyproj.Transformer.from_pipeline(known)
    chosen = _search_transformer(src, dst, three_d)
    definition = chosen.definition
    if definition.startswith("proj=") and "unavailable" not in definition:
        _remember_pipeline(key, definition)
        return pyproj.Transformer.from_pipeline(definition)
    return chosen  # several candidate operations chosen per point: keep PROJ's own choice


def _pipeline_cache_path() -> Path:
    """Where chosen pipelines are kept between processes: the user's cache folder (``$XDG_CACHE_HOME/cim``,
    else ``~/.cache/cim``), not ``$CIM_HOME``, whose contents ingests promise to leave as they were. One file
    per PROJ/pyproj version: a new PROJ may choose differently, so its choices start afresh."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    tag = f"proj-{pyproj.proj_version_str}-pyproj-{pyproj.__version__}"
    return Path(base) / "cim" / f"pipelines-{tag}.json"


@lru_cache(maxsize=1)
def _known_pipelines() -> dict[str, str]:
    """Pipelines chosen by earlier processes: PROJ's operation search costs 1–2 s per CRS pair and process
    (e.g. EPSG:4547 → 4978 first fails without a ballpark, then searches again), which dominated short
    commands such as a 10k-building tile build. Only single-operation pipelines are stored; an unreadable
    cache is ignored and rewritten."""
    try:
        data = json.loads(_pipeline_cache_path().read_text())
    except (OSError, ValueError, RuntimeError):  # RuntimeError: no home folder to find a cache in
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _remember_pipeline(key: str, definition: str) -> None:
    known = _known_pipelines()
    known[key] = definition
    try:
        path = _pipeline_cache_path()
    except RuntimeError:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, path)  # atomic: concurrent writers each leave a whole file
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only home only costs the search next time


def _search_transformer(src: str, dst: str, three_d: bool) -> pyproj.Transformer:
    src_crs, dst_crs = _crs_from_id(src), _crs_from_id(dst)
    if three_d:
        src_crs, dst_crs = src_crs.to_3d(), dst_crs.to_3d()
    try:
        return pyproj.Transformer.from_crs(src_crs, dst_crs, always_xy=True, allow_ballpark=False)
    except ProjError:
        pass
    families = {_datum_family(src_crs), _datum_family(dst_crs)}
    if not families <= _SAME_DATUM:
        raise CRSError(
            f"PROJ knows no datum transformation from {src} ({src_crs.datum.name if src_crs.datum else '?'}) "
            f"to {dst} ({dst_crs.datum.name if dst_crs.datum else '?'}); refusing to assume they coincide"
        )
    # CGCS2000 ↔ WGS84: the centimetre-level null shift documented in the module docstring.
    return pyproj.Transformer.from_crs(src_crs, dst_crs, always_xy=True, allow_ballpark=True)


def transformer(src: CRSLike, dst: CRSLike) -> pyproj.Transformer:
    """A cached, thread-safe, x/y-ordered (``always_xy``) transformer from ``src`` to ``dst``."""
    return _transformer(crs_id(src), crs_id(dst), False)


def _storage_id() -> str:
    return f"EPSG:{storage_srid()}"


def _arrays(*values: npt.ArrayLike) -> tuple[list[FloatArray], tuple[int, ...]]:
    """Broadcast inputs to float64, flattened for PROJ, with the shape to restore afterwards."""
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values))
    shape = arrays[0].shape
    return [np.ascontiguousarray(a).reshape(-1) for a in arrays], shape


def _shaped(values: npt.ArrayLike, shape: tuple[int, ...]) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(shape)


def _run2(t: pyproj.Transformer, a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    (fa, fb), shape = _arrays(a, b)
    if fa.size == 1:  # pyproj's point path; a 1-element array there is a numpy DeprecationWarning
        oa, ob = t.transform(float(fa[0]), float(fb[0]))
    else:
        oa, ob = t.transform(fa, fb)
    return _shaped(oa, shape), _shaped(ob, shape)


def _run3(
    t: pyproj.Transformer, a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    (fa, fb, fc), shape = _arrays(a, b, c)
    if fa.size == 1:
        oa, ob, oc = t.transform(float(fa[0]), float(fb[0]), float(fc[0]))
    else:
        oa, ob, oc = t.transform(fa, fb, fc)
    return _shaped(oa, shape), _shaped(ob, shape), _shaped(oc, shape)


def storage_to_lonlat(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Storage-CRS metres → CRS84 longitude, latitude in degrees."""
    return _run2(_transformer(_storage_id(), CRS84, False), x, y)


def lonlat_to_storage(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """CRS84 (or CGCS2000) longitude, latitude in degrees → storage-CRS x, y in metres."""
    return _run2(_transformer(CRS84, _storage_id(), False), lon, lat)


def to_storage(x: npt.ArrayLike, y: npt.ArrayLike, src_crs: CRSLike) -> tuple[FloatArray, FloatArray]:
    """Coordinates in ``src_crs`` (x/lon first) → storage-CRS x, y in metres."""
    return _run2(transformer(src_crs, _storage_id()), x, y)


def from_storage(x: npt.ArrayLike, y: npt.ArrayLike, dst_crs: CRSLike) -> tuple[FloatArray, FloatArray]:
    """Storage-CRS x, y in metres → coordinates in ``dst_crs`` (x/lon first)."""
    return _run2(transformer(_storage_id(), dst_crs), x, y)


def storage_to_ecef(
    x: npt.ArrayLike, y: npt.ArrayLike, h_orthometric: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Storage-CRS x, y and orthometric height H (m) → ECEF X, Y, Z (EPSG:4978, m).

    The ellipsoidal height used is h = H + ``settings.height_offset_m``.
    """
    h = np.asarray(h_orthometric, dtype=np.float64) + get_settings().height_offset_m
    return _run3(_transformer(_storage_id(), ECEF, True), x, y, h)


def ecef_to_storage(
    big_x: npt.ArrayLike, big_y: npt.ArrayLike, big_z: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ECEF X, Y, Z (EPSG:4978, m) → storage-CRS x, y and orthometric height H = h - height offset."""
    x, y, h = _run3(_transformer(ECEF, _storage_id(), True), big_x, big_y, big_z)
    return x, y, np.asarray(h - get_settings().height_offset_m, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# 3D Tiles placement


def enu_to_ecef_matrix(lon_deg: float, lat_deg: float, h: float) -> FloatArray:
    """The 4x4 matrix taking local east-north-up metres at an origin to ECEF (EPSG:4978) metres.

    ``lon_deg``/``lat_deg`` are geodetic (WGS84 = CGCS2000 here) and ``h`` is the *ellipsoidal* height
    of the origin (use `storage_enu_to_ecef_matrix` for a storage-CRS origin with an orthometric
    height). Columns are the unit east, north and up vectors and the origin's ECEF position, the
    transform 3D Tiles puts on a root tile (flatten with `as_3dtiles_transform`).
    """
    lon, lat = math.radians(float(lon_deg)), math.radians(float(lat_deg))
    sin_lon, cos_lon, sin_lat, cos_lat = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
    ox, oy, oz = _transformer(_WGS84_3D, ECEF, True).transform(float(lon_deg), float(lat_deg), float(h))
    return np.array(
        [
            [-sin_lon, -sin_lat * cos_lon, cos_lat * cos_lon, ox],
            [cos_lon, -sin_lat * sin_lon, cos_lat * sin_lon, oy],
            [0.0, cos_lat, sin_lat, oz],
            [0.0, 0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    )


def storage_enu_to_ecef_matrix(x: float, y: float, h_orthometric: float) -> FloatArray:
    """`enu_to_ecef_matrix` at an origin given in the storage CRS with an orthometric height."""
    lon, lat = storage_to_lonlat(x, y)
    return enu_to_ecef_matrix(float(lon), float(lat), float(h_orthometric) + get_settings().height_offset_m)


def as_3dtiles_transform(m: npt.ArrayLike) -> list[float]:
    """A 4x4 matrix as the 16 column-major floats of a 3D Tiles ``tile.transform``."""
    arr = np.asarray(m, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"a 3D Tiles transform is a 4x4 matrix, got shape {arr.shape}")
    return [float(v) for v in arr.flatten(order="F")]


# --------------------------------------------------------------------------------------------------
# Local "independent" coordinate systems


def _finite(name: str, value: float) -> float:
    """``value`` as a finite float: only numbers that passed this reach a PROJ pipeline string."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CRSError(f"transform parameter {name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise CRSError(f"transform parameter {name}={value!r} is not a finite number")
    return number


@dataclass(frozen=True)
class FourParameters:
    """2D similarity from local plane coordinates to the storage CRS (rotation about the local origin).

    In easting/northing terms: x' = dx + k (x cos θ - y sin θ), y' = dy + k (x sin θ + y cos θ) with
    θ = ``rotation_arcsec`` (counter-clockwise positive) and k = 1 + ``scale_ppm`` · 1e-6. Parameters
    from a Chinese survey report (X north, Y east) are converted by `from_survey`. Heights pass through.
    """

    dx_m: float
    dy_m: float
    rotation_arcsec: float
    scale_ppm: float

    def __post_init__(self) -> None:
        for f in fields(self):  # store plain floats: only these reach the PROJ pipeline text
            object.__setattr__(self, f.name, _finite(f.name, getattr(self, f.name)))
        if 1.0 + float(self.scale_ppm) * 1e-6 <= 0.0:
            raise CRSError(f"scale_ppm={self.scale_ppm} makes the scale factor non-positive")

    @classmethod
    def from_survey(cls, d_north_m: float, d_east_m: float, rotation_arcsec: float, scale_ppm: float) -> FourParameters:
        """Parameters in the survey convention X = north, Y = east, rotation from X towards Y.

        There X' = ΔX + k (X cos α - Y sin α), Y' = ΔY + k (X sin α + Y cos α); swapping the axes turns
        the clockwise-positive α into a counter-clockwise -α in the easting/northing frame.
        """
        return cls(dx_m=d_east_m, dy_m=d_north_m, rotation_arcsec=-rotation_arcsec, scale_ppm=scale_ppm)


_ELLIPSOIDS = frozenset({"GRS80", "WGS84", "krass", "IAU76"})
"""Ellipsoids a local system may use: GRS80 (CGCS2000), WGS84, krass (Beijing 1954), IAU76 (Xian 1980)."""


@dataclass(frozen=True)
class SevenParameters:
    """3D Helmert (position-vector convention) from a local geodetic system to the storage CRS's datum.

    The local plane coordinates are first un-projected with the local Transverse Mercator (``source_*``,
    on ``source_ellps``), taken to geocentric, moved by the Helmert transform (translations in m,
    rotations in arc-seconds, scale in ppm; position-vector rotation sign, EPSG method 1033), and
    projected into the storage CRS. A ``z`` given to the transformer is the ellipsoidal height in the
    local system; omit it for plane data.
    """

    dx_m: float
    dy_m: float
    dz_m: float
    rx_arcsec: float
    ry_arcsec: float
    rz_arcsec: float
    scale_ppm: float
    source_lon_0: float = 114.0
    source_lat_0: float = 0.0
    source_k: float = 1.0
    source_x_0: float = 500000.0
    source_y_0: float = 0.0
    source_ellps: str = "GRS80"

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "source_ellps":
                object.__setattr__(self, f.name, _finite(f.name, getattr(self, f.name)))
        if self.source_ellps not in _ELLIPSOIDS:
            raise CRSError(f"source_ellps={self.source_ellps!r} is not one of {', '.join(sorted(_ELLIPSOIDS))}")
        if float(self.source_k) <= 0.0:
            raise CRSError(f"source_k={self.source_k} must be positive")


HelmertParams = FourParameters | SevenParameters | Sequence[float]


def _as_params(params: HelmertParams) -> FourParameters | SevenParameters:
    if isinstance(params, FourParameters | SevenParameters):
        return params
    values = [_finite(f"parameter {i + 1}", v) for i, v in enumerate(params)]
    if len(values) == 4:
        return FourParameters(*values)
    if len(values) == 7:
        dx, dy, dz, rx, ry, rz, scale = values
        return SevenParameters(dx, dy, dz, rx, ry, rz, scale)
    raise CRSError(f"a local transform has 4 or 7 parameters, got {len(values)}")


def _num(value: float) -> str:
    return repr(float(value))  # shortest exact round-trip form; finite by construction


def local_helmert_pipeline(params: HelmertParams) -> str:
    """The PROJ pipeline (local system → storage CRS) for 4 or 7 parameters; see `local_helmert`."""
    p = _as_params(params)
    if isinstance(p, FourParameters):
        # PROJ's 2D Helmert rotates clockwise for positive theta and takes s as a factor, not ppm.
        return (
            f"+proj=helmert +x={_num(p.dx_m)} +y={_num(p.dy_m)} +theta={_num(-p.rotation_arcsec)} "
            f"+s={_num(1.0 + p.scale_ppm * 1e-6)}"
        )
    target = storage_crs()
    ellipsoid = target.ellipsoid
    if ellipsoid is None or target.geodetic_crs is None:
        raise CRSError(f"storage CRS {_storage_id()} has no ellipsoid to apply a 7-parameter transform on")
    to_storage_crs = pyproj.Transformer.from_crs(target.geodetic_crs, target, always_xy=True)
    geographic_to_storage = to_storage_crs.to_proj4()
    if geographic_to_storage is None or not geographic_to_storage.startswith("+proj=pipeline"):
        raise CRSError(f"storage CRS {_storage_id()} cannot be written as a PROJ pipeline")
    a, rf = _num(ellipsoid.semi_major_metre), _num(ellipsoid.inverse_flattening)
    return " ".join(
        [
            "+proj=pipeline",
            f"+step +inv +proj=tmerc +lat_0={_num(p.source_lat_0)} +lon_0={_num(p.source_lon_0)}",
            f"+k={_num(p.source_k)} +x_0={_num(p.source_x_0)} +y_0={_num(p.source_y_0)}",
            f"+ellps={p.source_ellps}",
            f"+step +proj=cart +ellps={p.source_ellps}",
            f"+step +proj=helmert +x={_num(p.dx_m)} +y={_num(p.dy_m)} +z={_num(p.dz_m)}",
            f"+rx={_num(p.rx_arcsec)} +ry={_num(p.ry_arcsec)} +rz={_num(p.rz_arcsec)} +s={_num(p.scale_ppm)}",
            "+convention=position_vector",
            f"+step +inv +proj=cart +a={a} +rf={rf}",
            "+step +proj=unitconvert +xy_in=rad +xy_out=deg",
            geographic_to_storage.removeprefix("+proj=pipeline").strip(),
        ]
    )


def local_helmert(params: HelmertParams) -> pyproj.Transformer:
    """A transformer from a local "independent" system into the storage CRS (x/easting first).

    ``params`` is a `FourParameters`, a `SevenParameters`, or a plain sequence of 4 numbers
    (dx, dy, rotation arcsec, scale ppm) or 7 numbers (dx, dy, dz, rx, ry, rz arcsec, scale ppm; the
    local projection then defaults to that of EPSG:4547 on GRS80). Use ``.transform(x, y)`` for local →
    storage and ``.transform(x, y, direction="INVERSE")`` back. Raises CRSError for bad parameters.
    The 7-parameter rotation uses the EPSG small-angle matrix, whose inverse (its transpose) is exact
    only to first order: round trips stay below 0.1 mm for rotations of a few arc-seconds.
    """
    pipeline = local_helmert_pipeline(params)
    try:
        return pyproj.Transformer.from_pipeline(pipeline)
    except ProjError as exc:
        raise CRSError(f"PROJ rejected the local transform {astuple(_as_params(params))}: {exc}") from None
