"""Column and geometry checks shared by every layer: they turn a source frame into typed stage columns and
collect per-feature rejects (``row_no -> reason``) instead of failing on the first bad value.

Geometry work is vectorised with shapely 2 over the whole layer; only invalid geometries (few) are repaired
one by one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from ingest.errors import IngestError

LOCAL_TZ = "Asia/Shanghai"
_HAS_OFFSET = re.compile(r"(?:Z|[+-]\d{2}(?::?\d{2})?)$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# shapely's geometry type ids + 1 (-1, a missing geometry, becomes 0) → the names GEOS gives them.
_TYPE_NAMES = np.array(
    [
        *("Missing", "Point", "LineString", "LinearRing", "Polygon"),
        *("MultiPoint", "MultiLineString", "MultiPolygon", "GeometryCollection"),
    ],
    dtype=object,
)

_NONE = np.array(None, dtype=object)  # "no value" for np.where over object arrays

GEOMETRY_FAMILIES = {
    "polygon": ("Polygon", "MultiPolygon"),
    "point": ("Point",),
    "line": ("LineString",),
}


@dataclass
class Prepared:
    """What one layer's preparation produced: the stage frame (only good rows), rejects and repairs."""

    layer: str
    frame: pd.DataFrame
    read: int
    rejects: dict[int, str] = field(default_factory=dict)
    repaired: int = 0
    unit: str = "feature"
    """What a row number counts: features of a vector file, lines of a CSV."""
    points: npt.NDArray[np.float64] | None = None
    """An interior point (x, y) of each kept row's geometry (NaN where it has none), storage CRS: what the
    load step locates the rows by (``cim.locate``). Points, not the geometries: a chunk checked in the
    reading process crosses to the loading one as plain numbers (shapely geometries would be written out
    and parsed again on the way, which cost more than the checks)."""


@dataclass
class PreparedStream:
    """One layer of one source, prepared chunk by chunk as ``chunks`` is consumed (so that loading one
    chunk overlaps reading and checking the next). ``total``: rows expected (for progress). After the
    last chunk, ``finish`` runs the checks that need the whole layer (raises IngestError)."""

    layer: str
    total: int
    chunks: Iterator[Prepared]
    unit: str = "feature"
    finish: Callable[[], None] = lambda: None

    @classmethod
    def of(cls, prepared: Prepared) -> PreparedStream:
        """A layer prepared whole, as a stream of one chunk."""
        return cls(prepared.layer, prepared.read, iter([prepared]), prepared.unit)

    def whole(self) -> Prepared:
        """Every chunk, prepared now, as one ``Prepared`` (rows in order)."""
        parts = list(self.chunks)
        self.finish()
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        points = None
        if any(p.points is not None for p in parts):
            points = np.concatenate([p.points for p in parts if p.points is not None])
        return Prepared(
            first.layer,
            pd.concat([p.frame for p in parts], ignore_index=True),
            read=sum(p.read for p in parts),
            rejects={k: v for p in parts for k, v in p.rejects.items()},
            repaired=sum(p.repaired for p in parts),
            unit=first.unit,
            points=points,
        )


@dataclass
class GeometryTypes:
    """The geometry types a layer has, gathered over its chunks: a layer none of whose geometries has an
    allowed type is refused as a whole (one message), not feature by feature."""

    deferred: bool = False
    """True: ``verify`` is left to the caller, after the last chunk."""
    where: str = ""
    allowed: tuple[str, ...] = ()
    found: set[str] = field(default_factory=set)
    any_allowed: bool = False

    def add(self, where: str, allowed: Sequence[str], present_names: Iterable[str], any_allowed: bool) -> None:
        self.where, self.allowed = where, tuple(allowed)
        self.found.update(str(n) for n in set(present_names))  # a few names, however many rows
        self.any_allowed = self.any_allowed or any_allowed

    def verify(self) -> None:
        """Raise IngestError if geometries were seen and none had an allowed type."""
        if self.found and not self.any_allowed:
            raise IngestError(
                f"{self.where}: wrong geometry type: this layer needs {' or '.join(self.allowed)} geometries, "
                f"the file has {', '.join(sorted(self.found))}"
            )


class Checker:
    """Accumulates typed columns and rejects for one source frame; row numbers are 1-based positions."""

    def __init__(
        self,
        source: pd.DataFrame,
        where: str,
        first_row: int = 1,
        unit: str = "feature",
        geometry_types: GeometryTypes | None = None,
    ) -> None:
        """``source`` may be one chunk of a layer (its first row being ``first_row``); the chunks' checkers
        then share one ``GeometryTypes`` (deferred) that the caller verifies after the last chunk."""
        self.source = source.reset_index(drop=True)
        self.where = where
        self.row_no = np.arange(first_row, first_row + len(self.source))
        self.unit = unit
        self.geometry_types = geometry_types or GeometryTypes()
        self.columns: dict[str, object] = {}
        self.rejects: dict[int, str] = {}
        # Problems found while reading (malformed geometries): rejected or counted as repaired.
        for i, reason in source.attrs.get("geometry_problems", {}).items():
            self.rejects[int(self.row_no[i])] = reason
        self.repaired = len(source.attrs.get("geometry_repairs", {}))

    # ---- bookkeeping ---------------------------------------------------------------------------------
    def reject(self, mask: npt.ArrayLike, reasons: str | Sequence[str]) -> None:
        """Reject rows where ``mask`` holds (first reason per row wins)."""
        m = np.asarray(mask, dtype=bool)
        idx = np.flatnonzero(m)
        for k, i in enumerate(idx):
            reason = reasons if isinstance(reasons, str) else reasons[k]
            self.rejects.setdefault(int(self.row_no[i]), reason)

    def require_columns(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.source.columns]
        if missing:
            raise IngestError(
                f"{self.where}: missing column(s) {', '.join(missing)} "
                f"(has {', '.join(c for c in self.source.columns if c != 'geometry')})"
            )

    def has(self, name: str) -> bool:
        return name in self.source.columns

    # ---- typed columns -------------------------------------------------------------------------------
    def text(
        self,
        name: str,
        required: bool = False,
        pattern: str | None = None,
        what: str | None = None,
        default: str | None = None,
    ) -> pd.Series:
        """A text column: stripped, empty → missing. Numeric source columns are refused for codes."""
        if not self.has(name):
            if required:
                self.require_columns([name])
            col = pd.Series([default] * len(self.source), dtype=object)
            self.columns[name] = col
            return col
        raw = self.source[name]
        if pattern is not None and pd.api.types.is_float_dtype(raw):
            raise IngestError(
                f"{self.where}: column {name} is numeric; codes must be stored as text (they keep leading "
                "zeros and exceed floating-point precision)"
            )
        col = _text_series(raw)
        if default is not None:
            col = pd.Series([default if v is None else v for v in col], dtype=object)
        label = what or name
        if required:
            self.reject(col.isna().to_numpy(), f"{label} is missing")
        if pattern is not None:
            present, values = _present(col)
            bad = np.zeros(len(col), dtype=bool)
            bad[present] = [m is None for m in map(re.compile(pattern).fullmatch, values)]
            self.reject(bad, [f"{label} {v!r} is not valid" for v in col[bad]])
        self.columns[name] = col
        return col

    def enum(self, name: str, allowed: Sequence[str], required: bool = True, default: str | None = None) -> pd.Series:
        present, values = _present(self.text(name, required=required and default is None, default=default))
        lowered = np.full(len(present), None, dtype=object)
        lowered[present] = np.fromiter(map(str.lower, values), dtype=object, count=len(values))
        col = pd.Series(lowered, dtype=object)
        bad = present & ~col.isin(list(allowed)).to_numpy()
        self.reject(bad, [f"{name} {v!r} is not one of {', '.join(allowed)}" for v in col[bad]])
        self.columns[name] = col
        return col

    def number(
        self,
        name: str,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        integer: bool = False,
        exclusive_min: bool = False,
    ) -> pd.Series:
        if not self.has(name):
            if required:
                self.require_columns([name])
            empty = pd.Series([np.nan] * len(self.source), dtype=float)
            self.columns[name] = empty
            return empty
        raw = self.source[name]
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        if pd.api.types.is_numeric_dtype(raw):
            given = raw.notna()
        else:  # text: blank counts as missing
            values = _objects(raw)
            given = pd.Series(
                np.fromiter((v is not None and str(v).strip() != "" for v in values), dtype=bool, count=len(values)),
                index=raw.index,
            )
        self.reject((given & num.isna()).to_numpy(), [f"{name} {v!r} is not a number" for v in raw[given & num.isna()]])
        if required:
            self.reject((~given).to_numpy(), f"{name} is missing")
        finite = num.notna()
        if integer:
            frac = finite & (num != np.round(num))
            self.reject(frac.to_numpy(), [f"{name} {v} is not a whole number" for v in num[frac]])
        if minimum is not None:
            low = finite & ((num <= minimum) if exclusive_min else (num < minimum))
            op = ">" if exclusive_min else ">="
            self.reject(low.to_numpy(), [f"{name} {v:g} must be {op} {minimum:g}" for v in num[low]])
        if maximum is not None:
            high = finite & (num > maximum)
            self.reject(high.to_numpy(), [f"{name} {v:g} must be <= {maximum:g}" for v in num[high]])
        col: pd.Series = num.round().astype("Int64") if integer else num
        self.columns[name] = col
        return col

    def timestamp(self, name: str, required: bool = False) -> pd.Series:
        """ISO 8601 times; without an offset they are Asia/Shanghai. Output: UTC ISO text."""
        if not self.has(name):
            if required:
                self.require_columns([name])
            col = pd.Series([None] * len(self.source), dtype=object)
            self.columns[name] = col
            return col
        raw = self.source[name]
        if pd.api.types.is_datetime64_any_dtype(raw):
            ts = raw if getattr(raw.dt, "tz", None) is not None else raw.dt.tz_localize(LOCAL_TZ)
            parsed = ts.dt.tz_convert("UTC")
            text = raw.astype(object)
        else:
            text = _text_series(raw)
            dates = _local_dates_utc(text)
            if dates is not None:  # the usual case, dates alone: the same values, parsed by numpy at once
                if required:
                    self.reject(text.isna().to_numpy(), f"{name} is missing")
                iso = np.char.add(np.datetime_as_string(dates, unit="us"), "+00:00").astype(object)
                col = pd.Series(np.where(np.isnat(dates), _NONE, iso), dtype=object)
                self.columns[name] = col
                return col
            fixed = _with_offsets(text)
            parsed = pd.to_datetime(fixed, errors="coerce", utc=True, format="ISO8601")
        given = text.notna()
        bad = given & parsed.isna()
        self.reject(bad.to_numpy(), [f"{name} {v!r} is not an ISO 8601 date/time" for v in text[bad]])
        if required:
            self.reject((~given).to_numpy(), f"{name} is missing")
        # ISO 8601 in UTC with microseconds, as numpy writes it (strftime per value is ten times slower).
        utc = parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        iso = np.char.add(np.datetime_as_string(utc, unit="us"), "+00:00").astype(object)
        col = pd.Series(np.where(parsed.isna().to_numpy(), _NONE, iso), dtype=object)
        self.columns[name] = col
        return col

    def date(self, name: str) -> pd.Series:
        col = self.timestamp(name)
        col = pd.Series(
            [None if v is None else pd.Timestamp(v).tz_convert(LOCAL_TZ).date().isoformat() for v in col],
            dtype=object,
        )
        self.columns[name] = col
        return col

    def attributes(self, known: Iterable[str]) -> pd.Series:
        """Columns outside the contract, as one JSON object per row (missing values left out)."""
        extra = [c for c in self.source.columns if c not in set(known) and c != "geometry"]
        if not extra:
            col = pd.Series(["{}"] * len(self.source), dtype=object)
        else:
            records = self.source[extra].astype(object).to_dict("records")
            col = pd.Series([_json({str(k): v for k, v in rec.items()}) for rec in records], dtype=object)
        self.columns["attributes"] = col
        return col

    def constant(self, name: str, value: object) -> None:
        self.columns[name] = pd.Series([value] * len(self.source), dtype=object)

    # ---- geometry ------------------------------------------------------------------------------------
    def geometry(
        self, family: str, srid: int, column: str = "geom", min_area_m2: float = 0.5, allow_missing: bool = False
    ) -> npt.NDArray[np.object_]:
        """Check and normalise geometries: right type (else rejected), valid (repaired where possible),
        polygons as 2D MultiPolygons. Returns the shapely array (None where rejected)."""
        geoms: Any = np.asarray(self.source.geometry.array, dtype=object)
        allowed = GEOMETRY_FAMILIES[family]
        names = _TYPE_NAMES[shapely.get_type_id(geoms) + 1]
        missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        if not allow_missing:
            self.reject(missing, "has no geometry")
        ok_type = np.isin(names, allowed)
        if family == "point":
            # A MultiPoint of one point is a point written by a tool that only writes multi types.
            single = (names == "MultiPoint") & (shapely.get_num_geometries(geoms) == 1)
            geoms = np.where(single, shapely.get_geometry(geoms, 0), geoms)
            ok_type |= single
        if family == "line":
            merged = np.array(
                [shapely.line_merge(g) if n == "MultiLineString" else g for g, n in zip(geoms, names, strict=True)],
                dtype=object,
            )
            single = (names == "MultiLineString") & (shapely.get_type_id(merged) == 1)
            geoms = np.where(single, merged, geoms)
            ok_type |= single
        present = ~missing
        self.geometry_types.add(self.where, allowed, names[present], bool((ok_type & present).any()))
        if not self.geometry_types.deferred:
            self.geometry_types.verify()
        wrong = present & ~ok_type
        self.reject(wrong, [f"geometry is {n}, expected {' or '.join(allowed)}" for n in names[wrong]])
        good = present & ok_type
        if family == "polygon":
            # force_2d copies every geometry: only worth it when some have Z.
            flat = shapely.force_2d(geoms) if shapely.has_z(geoms).any() else geoms
            geoms = np.where(good, flat, _NONE)
            invalid = good & ~shapely.is_valid(geoms)
            for i in np.flatnonzero(invalid):
                reason = shapely.is_valid_reason(geoms[i])
                fixed = _polygonal(shapely.make_valid(geoms[i]))
                if fixed is None:
                    self.reject(_one(len(geoms), int(i)), f"invalid geometry that cannot be repaired ({reason})")
                    good[i] = False
                else:
                    geoms[i] = fixed
                    self.repaired += 1
            area = np.where(good, shapely.area(np.where(good, geoms, _NONE)), 0.0)
            tiny = good & (area < min_area_m2)
            self.reject(tiny, [f"area {a:.2f} m² is too small" for a in area[tiny]])
            good &= ~tiny
            single = good & (shapely.get_type_id(geoms) == 3)
            if single.any():
                geoms[single] = shapely.multipolygons(geoms[single], indices=np.arange(int(single.sum())))
        else:
            sel = np.where(good, geoms, _NONE)
            coords, index = shapely.get_coordinates(sel, return_index=True)
            bad_coord = np.zeros(len(geoms), dtype=bool)
            bad_coord[np.unique(index[~np.isfinite(coords).all(axis=1)])] = True
            self.reject(bad_coord, "geometry has non-finite coordinates")
            good &= ~bad_coord
            geoms = np.where(good, geoms, _NONE)
            if family == "line":
                length = np.where(good, shapely.length(geoms), 0.0)
                short = good & (length <= 0)
                self.reject(short, "line has zero length")
                good &= ~short
        geoms = np.where(good, geoms, _NONE)
        self.columns[column] = geoms
        self._srid = srid
        return geoms

    # ---- output --------------------------------------------------------------------------------------
    def stage(self, layer: str, names: Sequence[str], geometry_columns: Sequence[str] = ("geom",)) -> Prepared:
        """The stage frame (rows without rejects), geometries as hex EWKB in the storage SRID."""
        keep = ~np.isin(self.row_no, np.fromiter(self.rejects.keys(), dtype=int, count=len(self.rejects)))
        data: dict[str, object] = {"row_no": self.row_no[keep]}
        located = None
        for name in names:
            col = self.columns[name]
            if name in geometry_columns:
                arr = np.asarray(col, dtype=object)[keep]
                located = arr if located is None else located
                arr = shapely.set_srid(arr, self._srid)
                data[name] = shapely.to_wkb(arr, include_srid=True)
            else:
                data[name] = pd.Series(col).reset_index(drop=True)[keep].to_numpy()
        frame = pd.DataFrame(data)
        return Prepared(
            layer,
            frame,
            read=len(self.source),
            rejects=dict(self.rejects),
            repaired=self.repaired,
            unit=self.unit,
            points=None if located is None else interior_points(located),
        )


def interior_points(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.float64]:
    """(x, y) of an interior point of each geometry (shapely's ``point_on_surface``, the point the load step
    locates a feature by), NaN where there is no geometry."""
    points = shapely.point_on_surface(geoms)
    return np.column_stack([shapely.get_x(points), shapely.get_y(points)])


def _text_series(raw: pd.Series) -> pd.Series:
    """Stripped text, with missing values (None, NaN, NaT, empty) as None. Whole floats lose their ``.0``
    (a numeric column of storey numbers read from a Shapefile stays readable). Text columns take a plain
    loop over the values: pandas' string methods cost ten times as much per value."""
    if pd.api.types.is_float_dtype(raw):
        whole = raw.notna() & (raw == raw.round())
        text = raw.astype("string").where(~whole, raw.where(whole).astype("Int64").astype("string"))
    elif raw.dtype == object or isinstance(raw.dtype, pd.StringDtype):
        values = _objects(raw)
        present = pd.notna(values)
        try:  # all text: str.strip mapped in C, then empty → None in one comparison
            stripped = np.fromiter(map(str.strip, values[present]), dtype=object, count=int(present.sum()))
        except TypeError:  # numbers, dates, … among the text
            return pd.Series([(v.strip() or None) if type(v) is str else _stripped(v) for v in values], dtype=object)
        out = np.full(len(values), None, dtype=object)
        out[present] = stripped
        out[out == ""] = None
        return pd.Series(out, dtype=object)
    else:
        text = raw.astype("string")
    text = text.str.strip()
    text = text.mask(text == "")
    return text.astype(object).where(text.notna(), None)


def _objects(raw: pd.Series) -> npt.NDArray[np.object_]:
    """The values as Python objects, missing ones (NaN, NA, NaT) as None."""
    return np.asarray(raw.to_numpy(dtype=object, na_value=None), dtype=np.object_)  # type: ignore[call-overload]


def _stripped(value: object) -> str | None:
    if type(value) is str:
        return value.strip() or None
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip() or None


def _with_offsets(text: pd.Series) -> pd.Series:
    """Times without an offset are Asia/Shanghai (+08:00); bare dates are midnight there."""
    present, values = _present(text)
    date_only = np.array([m is not None for m in map(_DATE_ONLY.fullmatch, values)], dtype=bool)
    has_offset = np.zeros(len(values), dtype=bool)
    times = values[~date_only]
    # An offset is at most 6 characters at the end: searching those alone spares a scan of every position.
    has_offset[~date_only] = [m is not None for m in map(_HAS_OFFSET.search, (t[-6:] for t in times))]
    out = np.full(len(present), None, dtype=object)
    out[present] = np.where(date_only, values + "T00:00:00+08:00", np.where(has_offset, values, values + "+08:00"))
    return pd.Series(out, dtype=object)


_FIRST_DAY = np.datetime64("0001-01-01", "D")
_LOCAL_MIDNIGHT_UTC = np.timedelta64(-8, "h")  # a bare date is midnight at +08:00 (``_with_offsets``)


def _local_dates_utc(text: pd.Series) -> npt.NDArray[np.datetime64] | None:
    """When every value of a text column (str or None) is a valid bare date (YYYY-MM-DD, year 1 or later):
    the UTC times of their local midnights (NaT where missing), as ``_with_offsets`` and pandas' ISO 8601
    parsing give them. None otherwise (times, offsets, invalid dates): the general path parses them."""
    present, values = _present(text)
    if not len(values) or not all(map(_DATE_ONLY.fullmatch, values)):
        return None
    try:
        days = values.astype("datetime64[D]")
    except ValueError:  # an invalid date (2003-02-29): the general path rejects it with its message
        return None
    if (days < _FIRST_DAY).any():
        return None
    out = np.full(len(present), np.datetime64("NaT"), dtype="datetime64[us]")
    out[present] = days.astype("datetime64[us]") + _LOCAL_MIDNIGHT_UTC
    return out


def _present(col: pd.Series) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.object_]]:
    """Where a text column (str or None) has a value, and those values (for functions mapped over them)."""
    values = col.to_numpy(dtype=object)
    present = np.asarray(pd.notna(values), dtype=bool)
    return present, values[present]


def _one(n: int, i: int) -> npt.NDArray[np.bool_]:
    m = np.zeros(n, dtype=bool)
    m[i] = True
    return m


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of a repaired geometry, or None if nothing of area is left."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
    if not parts:
        return None
    merged = shapely.union_all(parts)
    return merged if merged.geom_type in ("Polygon", "MultiPolygon") and not merged.is_empty else None


def _json(record: dict[str, object]) -> str:
    clean: dict[str, object] = {}
    for k, v in record.items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, pd.Timestamp):
            v = v.isoformat()
        clean[str(k)] = v
    return json.dumps(clean, ensure_ascii=False, sort_keys=True, default=str)
