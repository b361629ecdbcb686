"""Where an IFC model stands on Earth: from its georeference (or ``--anchor``) to storage-CRS coordinates.

The model's world coordinates (what ``ifcopenshell.geom`` returns with world coordinates on, always in
metres whatever the project's length unit) go through one plane similarity (rotation, scale, offset) into a
*plane CRS*, then through one vectorised pyproj call into the storage CRS. Heights never go through PROJ:
Z in the storage CRS is orthometric metres, ``H = H0 + k_z · (z − z0)``.

Decisions recorded here (the issue leaves them open):

- **Order** (first one found wins): IfcMapConversion (IFC4/IFC4X3; in IFC2X3 the ``ePSet_MapConversion`` /
  ``ePSet_ProjectedCRS`` property sets on IfcProject or IfcSite); else IfcSite RefLatitude/RefLongitude with
  the project's TrueNorth; else ``--anchor``; else an error naming all three. ``--anchor`` overrides any
  georeference of the file.
- **IfcMapConversion**: ``E = E0 + k (x cosθ − y sinθ)``, ``N = N0 + k (x sinθ + y cosθ)``,
  ``H = OrthogonalHeight + k_z z`` with θ = atan2(XAxisOrdinate, XAxisAbscissa) and x, y, z in project
  length units (IFC4X3's IfcMapConversionScaled multiplies by FactorX = FactorY and FactorZ on top). The
  map CRS is the IfcProjectedCRS name (``EPSG:31467``); ``--crs`` overrides it and is
  required when the name is missing or not an EPSG/OGC code.
- **Scale** has been read three ways by exporters, so it is classified against the unit ratio
  ``u = project length unit / map unit`` (0.001 for millimetres on a metre map), with 1 % tolerance:
  Scale ≈ u is the full project→map factor (the IFC 4.3 clarification) and is used as is; Scale ≈ 1 is a
  geodetic combined scale factor and is applied on top of u; Scale ≈ 1/u states the ratio inverted (the
  buildingSMART sample ``geographic-referencing-gk.ifc`` writes 1000 for millimetres) and 1/Scale is used.
  Anything else is refused: a wrong scale would move the model by kilometres.
- **IfcSite** RefLatitude/RefLongitude (compound plane angles, all parts carrying the sign) locate the origin
  of the site's own placement; RefElevation (project length units, spec-strict) is the orthometric height of
  that origin (0 when absent). A latitude and longitude both exactly 0 are treated as missing: exporters
  write that placeholder, and no building stands at 0°N 0°E. TrueNorth of the 3D 'Model' context gives
  the rotation (model +Y is north when absent). Lat/lon are WGS84 by the IFC spec and are read in the storage
  CRS's own geodetic datum (ETRS89, CGCS2000): these differ from WGS84 by a metre at most (ETRS89 drifts
  2.5 cm a year), within what a site's reference point is known to, and it keeps the transformation a pure
  projection.
- **Local plane for site/anchor**: a transverse Mercator centred at the reference point (k = 1, on the
  storage CRS's ellipsoid). Its scale error at 1 km from the centre is 1e-8, so it matches a tangent plane
  (ENU) to well under a millimetre at building scale; unlike ENU it keeps heights orthometric and level
  floors level (ENU heights rise by d²/2R away from the origin: 8 cm at 1 km).
- **``--anchor LON,LAT,H``** puts the model's origin (world 0,0,0) at that longitude/latitude with
  orthometric height H for model z = 0. **``--rotation DEG``** is the azimuth of the model's +Y axis in
  degrees clockwise from true north (90 turns +Y east); without it the file's TrueNorth is kept (0 if none).
- **Area of use**: a model whose reference point lies outside the storage CRS's area of use (e.g. FZK-Haus in
  Germany against EPSG:4547, China 112.5°E–115.5°E) is refused unless ``--anchor`` puts it inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import ifcopenshell
import ifcopenshell.util.element
import ifcopenshell.util.placement
import ifcopenshell.util.unit
import numpy as np
import numpy.typing as npt
import pyproj
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import TransverseMercatorConversion

from cim.crs import CRSError, crs_id, parse_crs, transformer
from ingest.errors import IngestError

FloatArray = npt.NDArray[np.float64]

SCALE_TOLERANCE = 0.01
"""Relative tolerance when classifying IfcMapConversion.Scale (see the module docstring)."""


class GeoreferenceError(IngestError):
    """The model cannot be placed: no georeference, an unusable one, or outside the storage CRS's area."""


@dataclass(frozen=True)
class Anchor:
    """``--anchor LON,LAT,H`` and ``--rotation DEG`` (None: keep the file's TrueNorth)."""

    lon: float
    lat: float
    height_m: float
    rotation_deg: float | None = None


def parse_anchor(text: str, rotation_deg: float | None = None) -> Anchor:
    """``"LON,LAT,H"`` in degrees and metres → Anchor; raises GeoreferenceError naming what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise GeoreferenceError(
            f"--anchor {text!r}: expected LON,LAT,H (degrees, degrees, metres), e.g. 113.93,22.52,5"
        )
    try:
        lon, lat, h = (float(p) for p in parts)
    except ValueError:
        raise GeoreferenceError(f"--anchor {text!r}: LON, LAT and H must be numbers") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and math.isfinite(h)):
        raise GeoreferenceError(f"--anchor {text!r}: LON, LAT and H must be finite")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise GeoreferenceError(f"--anchor {text!r}: longitude must be in -180..180 and latitude in -90..90")
    if not -500 <= h <= 9000:
        raise GeoreferenceError(f"--anchor {text!r}: height {h:g} m is not a plausible orthometric height")
    if rotation_deg is not None and not math.isfinite(rotation_deg):
        raise GeoreferenceError(f"--rotation {rotation_deg}: must be a finite number of degrees")
    return Anchor(lon, lat, h, rotation_deg)


@dataclass(frozen=True)
class Placement:
    """Model world metres → storage CRS: plane similarity into ``plane_crs``, then PROJ; heights apart.

    ``E = e0 + k_xy (cos·(x−x0) − sin·(y−y0))``, ``N = n0 + k_xy (sin·(x−x0) + cos·(y−y0))`` in
    ``plane_crs`` units; ``H = h0 + k_z (z − z0)`` orthometric metres.
    """

    method: str
    plane_crs: pyproj.CRS
    plane_crs_id: str | None
    """``AUTH:CODE`` of ``plane_crs`` (None for the local plane of a site or anchor)."""
    origin_model: tuple[float, float, float]
    e0: float
    n0: float
    h0: float
    cos: float
    sin: float
    k_xy: float
    k_z: float
    lonlat: tuple[float, float]
    """Longitude/latitude of the reference point (for the area-of-use check and the record)."""
    params: dict[str, Any] = field(default_factory=dict)
    """What was read and decided, stored with the model (``bim_models.georeference``)."""
    _transformers: dict[int, pyproj.Transformer] = field(default_factory=dict, init=False, compare=False, repr=False)

    def transformer(self, storage_srid: int) -> pyproj.Transformer:
        """The plane → storage transformer, made once: making one reads PROJ's database (~0.1 s), which the
        ingest does while the model is triangulated rather than after."""
        made = self._transformers.get(storage_srid)
        if made is None:
            made = plane_transformer(self.plane_crs, self.plane_crs_id, storage_srid)
            self._transformers[storage_srid] = made
        return made

    def to_storage(self, xyz: npt.ArrayLike, storage_srid: int) -> FloatArray:
        """(n, 3) model world metres → (n, 3) storage x, y (m) and orthometric H (m); one PROJ call."""
        p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        x = p[:, 0] - self.origin_model[0]
        y = p[:, 1] - self.origin_model[1]
        e = self.e0 + self.k_xy * (self.cos * x - self.sin * y)
        n = self.n0 + self.k_xy * (self.sin * x + self.cos * y)
        h = self.h0 + self.k_z * (p[:, 2] - self.origin_model[2])
        sx, sy = self.transformer(storage_srid).transform(e, n)
        out = np.column_stack([np.asarray(sx, dtype=np.float64), np.asarray(sy, dtype=np.float64), h])
        if not np.isfinite(out).all():
            raise GeoreferenceError(
                f"the model's coordinates cannot be transformed to EPSG:{storage_srid} (outside the CRS's area?)"
            )
        return out


def plane_transformer(plane_crs: pyproj.CRS, plane_crs_id: str | None, storage_srid: int) -> pyproj.Transformer:
    """The x/y-ordered transformer from a placement's plane CRS to the storage CRS."""
    storage = f"EPSG:{storage_srid}"
    if plane_crs_id is not None:
        try:
            return transformer(plane_crs_id, storage)
        except CRSError as exc:
            raise GeoreferenceError(str(exc)) from None
    # A local transverse Mercator on the storage CRS's own geodetic CRS: a pure projection change.
    return pyproj.Transformer.from_crs(plane_crs, parse_crs(storage), always_xy=True)


# --------------------------------------------------------------------------------------------------------
# Reading the file


def dms_to_degrees(value: Any) -> float | None:
    """An IfcCompoundPlaneAngleMeasure (degrees, minutes, seconds[, millionths]) → decimal degrees.

    All parts carry the same sign (IFC rule); None when the value is absent. Raises ValueError when the parts
    are out of range."""
    if value is None:
        return None
    parts = [int(v) for v in value]
    if not 3 <= len(parts) <= 4:
        raise ValueError(f"{tuple(parts)} is not (degrees, minutes, seconds[, millionths of a second])")
    parts += [0] * (4 - len(parts))
    d, m, s, us = parts
    signs = {(-1 if v < 0 else 1) for v in parts if v != 0}
    if len(signs) > 1:
        raise ValueError(f"{tuple(parts)} mixes signs; every part of a compound angle carries the same sign")
    if abs(m) >= 60 or abs(s) >= 60 or abs(us) >= 1_000_000:
        raise ValueError(f"{tuple(parts)} has minutes or seconds out of range")
    sign = signs.pop() if signs else 1
    return sign * (abs(d) + abs(m) / 60 + (abs(s) + abs(us) / 1e6) / 3600)


def model_context(model: ifcopenshell.file) -> ifcopenshell.entity_instance | None:
    """The project's 3D model context (not a sub-context): TrueNorth and IfcMapConversion hang on it."""
    contexts = [
        c
        for c in model.by_type("IfcGeometricRepresentationContext")
        if not c.is_a("IfcGeometricRepresentationSubContext")
    ]
    for c in contexts:
        if (c.ContextType or "").lower() == "model" and (c.CoordinateSpaceDimension or 3) == 3:
            return c
    return contexts[0] if contexts else None


def true_north(model: ifcopenshell.file) -> tuple[float, float] | None:
    """Unit vector of true north in model XY from the model context's TrueNorth (None when absent)."""
    context = model_context(model)
    direction = getattr(context, "TrueNorth", None) if context is not None else None
    if direction is None:
        return None
    ratios = [float(v) for v in direction.DirectionRatios[:2]]
    norm = math.hypot(*ratios)
    if norm < 1e-12 or not math.isfinite(norm):
        raise GeoreferenceError(f"TrueNorth {tuple(direction.DirectionRatios)} has no horizontal direction")
    return ratios[0] / norm, ratios[1] / norm


def _north_azimuth_deg(north: tuple[float, float]) -> float:
    """Azimuth of model +Y (degrees clockwise from north) when true north points along ``north``."""
    return math.degrees(math.atan2(-north[0], north[1])) % 360.0


@dataclass(frozen=True)
class MapConversion:
    eastings: float
    northings: float
    orthogonal_height: float
    x_axis_abscissa: float | None
    x_axis_ordinate: float | None
    scale: float | None
    factors: tuple[float, float, float]
    """IfcMapConversionScaled FactorX/Y/Z (IFC4X3), applied on top of Scale; 1 elsewhere."""
    crs_name: str | None
    map_unit_m: float | None
    where: str


def _number(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    if not math.isfinite(out):
        raise GeoreferenceError(f"IfcMapConversion value {value!r} is not finite")
    return out


def read_map_conversion(model: ifcopenshell.file) -> MapConversion | None:
    """IfcMapConversion (or IFC2X3's ePSet_MapConversion) of the model context, None when there is none."""
    if model.schema != "IFC2X3":
        conversions = list(model.by_type("IfcMapConversion"))
        if not conversions:
            return None
        context = model_context(model)
        chosen = next((c for c in conversions if c.SourceCRS == context), conversions[0])
        target = chosen.TargetCRS
        unit = getattr(target, "MapUnit", None) if target is not None else None
        return MapConversion(
            eastings=_number(chosen.Eastings) or 0.0,
            northings=_number(chosen.Northings) or 0.0,
            orthogonal_height=_number(chosen.OrthogonalHeight) or 0.0,
            x_axis_abscissa=_number(chosen.XAxisAbscissa),
            x_axis_ordinate=_number(chosen.XAxisOrdinate),
            scale=_number(chosen.Scale),
            factors=(
                _number(getattr(chosen, "FactorX", None)) or 1.0,
                _number(getattr(chosen, "FactorY", None)) or 1.0,
                _number(getattr(chosen, "FactorZ", None)) or 1.0,
            ),
            crs_name=(target.Name or None) if target is not None else None,
            map_unit_m=ifcopenshell.util.unit.get_named_unit_scale(unit) if unit is not None else None,
            where=f"IfcMapConversion #{chosen.id()}",
        )
    for holder in (*model.by_type("IfcProject"), *model.by_type("IfcSite")):
        psets = ifcopenshell.util.element.get_psets(holder)
        conv = psets.get("ePSet_MapConversion")
        if conv:
            crs = psets.get("ePSet_ProjectedCRS") or {}
            return MapConversion(
                eastings=_number(conv.get("Eastings")) or 0.0,
                northings=_number(conv.get("Northings")) or 0.0,
                orthogonal_height=_number(conv.get("OrthogonalHeight")) or 0.0,
                x_axis_abscissa=_number(conv.get("XAxisAbscissa")),
                x_axis_ordinate=_number(conv.get("XAxisOrdinate")),
                scale=_number(conv.get("Scale")),
                factors=(1.0, 1.0, 1.0),
                crs_name=crs.get("Name") or None,
                map_unit_m=None,
                where=f"ePSet_MapConversion of {holder.is_a()} #{holder.id()}",
            )
    return None


@dataclass(frozen=True)
class SiteReference:
    lat: float
    lon: float
    elevation: float | None
    """RefElevation in project length units (None when absent)."""
    origin_model: tuple[float, float, float]
    """The site placement's origin in model world metres."""
    where: str


def read_site_reference(model: ifcopenshell.file, unit_m: float) -> SiteReference | None:
    """RefLatitude/RefLongitude of the first IfcSite having both (0,0 counts as absent), else None."""
    for site in model.by_type("IfcSite"):
        try:
            lat = dms_to_degrees(site.RefLatitude)
            lon = dms_to_degrees(site.RefLongitude)
        except ValueError as exc:
            raise GeoreferenceError(f"IfcSite #{site.id()} RefLatitude/RefLongitude: {exc}") from None
        if lat is None or lon is None or (lat == 0 and lon == 0):
            continue
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise GeoreferenceError(f"IfcSite #{site.id()}: latitude {lat} / longitude {lon} out of range")
        origin = (0.0, 0.0, 0.0)
        if site.ObjectPlacement is not None:
            matrix = ifcopenshell.util.placement.get_local_placement(site.ObjectPlacement)
            ox, oy, oz = (float(v) * unit_m for v in matrix[:3, 3])
            origin = (ox, oy, oz)
        elevation = float(site.RefElevation) if site.RefElevation is not None else None
        return SiteReference(lat, lon, elevation, origin, f"IfcSite #{site.id()}")
    return None


# --------------------------------------------------------------------------------------------------------
# Resolving the placement


def _classify_scale(scale: float | None, ratio: float, where: str) -> tuple[float, str]:
    """(project units → map units factor, how Scale was read); see the module docstring."""
    if scale is None:
        return ratio, "absent: unit conversion only"
    if scale <= 0:
        raise GeoreferenceError(f"{where}: Scale {scale:g} must be positive")
    if abs(scale / ratio - 1) <= SCALE_TOLERANCE:
        return scale, "project-to-map unit factor"
    if abs(scale - 1) <= SCALE_TOLERANCE:
        return ratio * scale, "combined scale factor on top of the unit conversion"
    if abs(scale * ratio - 1) <= SCALE_TOLERANCE:
        return 1.0 / scale, "inverted unit factor (map-to-project), used as 1/Scale"
    raise GeoreferenceError(
        f"{where}: Scale {scale:g} fits neither the unit conversion from project to map units ({ratio:g}), "
        f"its inverse, nor a combined scale factor near 1"
    )


def _map_placement(conv: MapConversion, crs_override: str | None, unit_m: float) -> Placement:
    name = crs_override or conv.crs_name
    if not name:
        raise GeoreferenceError(f"{conv.where} has no named IfcProjectedCRS; pass --crs (e.g. --crs EPSG:31467)")
    try:
        map_crs = parse_crs(name)
    except CRSError as exc:
        hint = "" if crs_override else "; pass --crs with its EPSG code"
        raise GeoreferenceError(f"{conv.where}: map CRS {name!r}: {exc}{hint}") from None
    if not map_crs.is_projected:
        raise GeoreferenceError(f"{conv.where}: map CRS {crs_id(name)} is not a projected CRS")
    axis_unit_m = float(map_crs.axis_info[0].unit_conversion_factor) if map_crs.axis_info else 1.0
    map_unit_m = conv.map_unit_m or axis_unit_m
    ratio = unit_m / map_unit_m
    factor, reading = _classify_scale(conv.scale, ratio, conv.where)
    fx, fy, fz = conv.factors
    if min(fx, fy, fz) <= 0 or abs(fy / fx - 1) > 1e-9:
        raise GeoreferenceError(
            f"{conv.where}: FactorX/FactorY {fx:g}/{fy:g} must be equal and positive (no anisotropic map scales)"
        )
    factor_z = factor * fz
    factor *= fx
    a = 1.0 if conv.x_axis_abscissa is None else conv.x_axis_abscissa
    b = 0.0 if conv.x_axis_ordinate is None else conv.x_axis_ordinate
    norm = math.hypot(a, b)
    if norm < 1e-12:
        raise GeoreferenceError(f"{conv.where}: XAxisAbscissa and XAxisOrdinate are both 0")
    geodetic = map_crs.geodetic_crs
    if geodetic is None:
        raise GeoreferenceError(f"{conv.where}: map CRS {crs_id(name)} has no geodetic CRS")
    lon, lat = pyproj.Transformer.from_crs(map_crs, geodetic, always_xy=True).transform(conv.eastings, conv.northings)
    return Placement(
        method="map_conversion",
        plane_crs=map_crs,
        plane_crs_id=crs_id(name),
        origin_model=(0.0, 0.0, 0.0),
        e0=conv.eastings,
        n0=conv.northings,
        h0=conv.orthogonal_height * map_unit_m,
        cos=a / norm,
        sin=b / norm,
        k_xy=factor / unit_m,
        k_z=factor_z * map_unit_m / unit_m,
        lonlat=(float(lon), float(lat)),
        params={
            "method": "map_conversion",
            "source": conv.where,
            "crs": crs_id(name),
            "crs_from": "--crs" if crs_override else "IfcProjectedCRS",
            "eastings": conv.eastings,
            "northings": conv.northings,
            "orthogonal_height": conv.orthogonal_height,
            "x_axis_abscissa": conv.x_axis_abscissa,
            "x_axis_ordinate": conv.x_axis_ordinate,
            "rotation_deg": math.degrees(math.atan2(b, a)),
            "scale_in_file": conv.scale,
            "scale_applied": factor,
            "scale_reading": reading,
            "project_unit_m": unit_m,
            "map_unit_m": map_unit_m,
        },
    )


def local_plane(lon: float, lat: float, storage_srid: int) -> pyproj.CRS:
    """Transverse Mercator centred at (lon, lat), k = 1, on the storage CRS's geodetic CRS."""
    geodetic = parse_crs(f"EPSG:{storage_srid}").geodetic_crs
    if geodetic is None:
        raise GeoreferenceError(f"storage CRS EPSG:{storage_srid} has no geodetic CRS")
    conversion = TransverseMercatorConversion(
        latitude_natural_origin=lat,
        longitude_natural_origin=lon,
        false_easting=0.0,
        false_northing=0.0,
        scale_factor_natural_origin=1.0,
    )
    return ProjectedCRS(conversion=conversion, geodetic_crs=geodetic, name=f"local TM at {lon:.7f} {lat:.7f}")


def _rotation(north: tuple[float, float]) -> tuple[float, float]:
    """(cos, sin) of the model-x → east rotation when true north points along unit ``north`` in model XY."""
    return north[1], north[0]


def _site_placement(site: SiteReference, north: tuple[float, float] | None, unit_m: float, srid: int) -> Placement:
    north = north or (0.0, 1.0)
    cos, sin = _rotation(north)
    elevation_m = (site.elevation or 0.0) * unit_m
    return Placement(
        method="site",
        plane_crs=local_plane(site.lon, site.lat, srid),
        plane_crs_id=None,
        origin_model=site.origin_model,
        e0=0.0,
        n0=0.0,
        h0=elevation_m,
        cos=cos,
        sin=sin,
        k_xy=1.0,
        k_z=1.0,
        lonlat=(site.lon, site.lat),
        params={
            "method": "site",
            "source": site.where,
            "latitude": site.lat,
            "longitude": site.lon,
            "ref_elevation_m": elevation_m if site.elevation is not None else None,
            "true_north": list(north),
            "y_axis_azimuth_deg": _north_azimuth_deg(north),
            "site_origin_m": list(site.origin_model),
            "plane": "transverse Mercator centred at the site, k=1, storage CRS's geodetic datum",
        },
    )


def _anchor_placement(anchor: Anchor, north_in_file: tuple[float, float] | None, srid: int) -> Placement:
    if anchor.rotation_deg is not None:
        theta = math.radians(anchor.rotation_deg)
        north = (-math.sin(theta), math.cos(theta))
        rotation_from = "--rotation"
    else:
        north = north_in_file or (0.0, 1.0)
        rotation_from = "TrueNorth" if north_in_file else "none (+Y is north)"
    cos, sin = _rotation(north)
    return Placement(
        method="anchor",
        plane_crs=local_plane(anchor.lon, anchor.lat, srid),
        plane_crs_id=None,
        origin_model=(0.0, 0.0, 0.0),
        e0=0.0,
        n0=0.0,
        h0=anchor.height_m,
        cos=cos,
        sin=sin,
        k_xy=1.0,
        k_z=1.0,
        lonlat=(anchor.lon, anchor.lat),
        params={
            "method": "anchor",
            "longitude": anchor.lon,
            "latitude": anchor.lat,
            "height_m": anchor.height_m,
            "y_axis_azimuth_deg": _north_azimuth_deg(north),
            "rotation_from": rotation_from,
            "plane": "transverse Mercator centred at the anchor, k=1, storage CRS's geodetic datum",
        },
    )


def check_area_of_use(placement: Placement, storage_srid: int) -> None:
    """Refuse a model whose reference point lies outside the storage CRS's area of use."""
    area = parse_crs(f"EPSG:{storage_srid}").area_of_use
    if area is None:
        return
    lon, lat = placement.lonlat
    # An area whose west bound exceeds its east bound crosses the antimeridian.
    inside_lon = area.west <= lon <= area.east if area.west <= area.east else lon >= area.west or lon <= area.east
    if inside_lon and area.south <= lat <= area.north:
        return
    hint = "" if placement.method == "anchor" else "; use --anchor LON,LAT,H to place it inside, or another database"
    raise GeoreferenceError(
        f"the model's {placement.method.replace('_', ' ')} puts it at {lon:.6f}°E {lat:.6f}°N, outside the area of "
        f"use of the storage CRS EPSG:{storage_srid} ({area.name}: {area.west:g}..{area.east:g}°E, "
        f"{area.south:g}..{area.north:g}°N){hint}"
    )


def resolve_placement(
    model: ifcopenshell.file,
    storage_srid: int,
    anchor: Anchor | None = None,
    crs: str | None = None,
) -> Placement:
    """The model's placement in the storage CRS, in the order of the module docstring.

    Raises GeoreferenceError when none is found (naming what is missing), when the georeference is unusable,
    or when the model would land outside the storage CRS's area of use."""
    unit_m = float(ifcopenshell.util.unit.calculate_unit_scale(model))
    if anchor is not None:
        north = true_north(model) if anchor.rotation_deg is None else None
        placement = _anchor_placement(anchor, north, storage_srid)
    elif (conv := read_map_conversion(model)) is not None:
        placement = _map_placement(conv, crs, unit_m)
    elif (site := read_site_reference(model, unit_m)) is not None:
        placement = _site_placement(site, true_north(model), unit_m, storage_srid)
    else:
        raise GeoreferenceError(
            "no georeference: the file has no IfcMapConversion, no IfcSite with RefLatitude/RefLongitude, "
            "and no --anchor LON,LAT,H was given"
        )
    check_area_of_use(placement, storage_srid)
    return placement
