"""Query parameters of OGC API – Features, parsed and checked in one place.

Every function returns typed values or raises the shared 400 (`api.errors.bad_parameter`) naming the
parameter and saying what is accepted. Query parameters an endpoint does not define are refused (OGC API
Features Part 1, /req/core/query-param-unknown), except, on items, the names of the collection's queryables,
which filter by equality (Part 3, queryables as query parameters).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime, time
from typing import Any

from starlette.datastructures import QueryParams

from api.errors import ApiError, bad_parameter, not_found
from cim.crs import CRSError
from cim.store.collections import COLLECTIONS, Collection, Prop
from cim.store.cql2_filter import LOCAL_TZ
from cim.store.feature_crs import FeatureCrs, resolve_crs
from cim.store.features import TimeFilter

ITEMS_PARAMS = frozenset(
    {"bbox", "bbox-crs", "crs", "datetime", "limit", "offset", "properties", "sortby", "filter", "filter-lang",
     "filter-crs", "f"}
)  # fmt: skip


def collection_or_404(collection_id: str) -> Collection:
    c = COLLECTIONS.get(collection_id)
    if c is None:
        raise not_found(f"collection {collection_id!r}")
    return c


def check_known(params: QueryParams, allowed: Iterable[str], collection: Collection | None = None) -> dict[str, str]:
    """Refuse unknown query parameters; returns those naming a queryable of ``collection`` (equality filters)."""
    allowed = set(allowed)
    equal: dict[str, str] = {}
    for name in params:
        if name in allowed:
            continue
        prop = collection.prop(name) if collection else None
        if prop is not None and prop.queryable:
            equal[name] = params[name]
            continue
        known = ", ".join(sorted(allowed))
        extra = " or a queryable property name" if collection else ""
        raise bad_parameter(name, f"unknown query parameter; this endpoint takes {known}{extra}")
    return equal


def check_format(f: str | None, allowed: tuple[str, ...]) -> None:
    if f is not None and f not in allowed:
        raise bad_parameter("f", f"unsupported format {f!r}; use one of {', '.join(allowed)}")


def parse_crs(name: str, text: str | None, storage_srid: int) -> FeatureCrs:
    """The offered CRS a ``crs``/``bbox-crs``/``filter-crs`` parameter names (default CRS84)."""
    try:
        return resolve_crs(text if text else "OGC:CRS84", storage_srid)
    except CRSError as exc:
        raise bad_parameter(name, str(exc)) from None


def parse_bbox(text: str) -> tuple[float, ...]:
    """4 or 6 comma-separated finite numbers, lower corner first (axis order of ``bbox-crs``)."""
    parts = text.split(",")
    if len(parts) not in (4, 6):
        raise bad_parameter("bbox", f"expected 4 or 6 comma-separated numbers, got {len(parts)} values")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise bad_parameter("bbox", f"not a list of numbers: {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise bad_parameter("bbox", "numbers must be finite")
    half = len(values) // 2
    if any(values[i] > values[i + half] for i in range(half)):
        raise bad_parameter("bbox", "the lower corner must come first: minimum values, then maximum values")
    return values


def _instant(text: str) -> datetime:
    """An RFC 3339 date-time (no offset: Asia/Shanghai) or a date (midnight Asia/Shanghai)."""
    s = text.strip()
    if len(s) == 10:
        return datetime.combine(date.fromisoformat(s), time(), LOCAL_TZ)
    value = datetime.fromisoformat(s.replace("z", "Z"))
    return value if value.tzinfo else value.replace(tzinfo=LOCAL_TZ)


def parse_datetime(text: str, collection: Collection) -> TimeFilter:
    """An instant or an interval ``start/end`` with ``..`` (or nothing) for an open end."""
    if collection.temporal is None:
        raise bad_parameter("datetime", f"collection {collection.id} has no time extent to select by")
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            start = None if a in ("", "..") else _instant(a)
            end = None if b in ("", "..") else _instant(b)
            if start is None and end is None:
                raise ValueError("both ends open")
            if start and end and start > end:
                raise bad_parameter("datetime", "the interval ends before it starts")
            return TimeFilter(start, end)
        t = _instant(text)
        return TimeFilter(t, t)
    except ValueError:
        raise bad_parameter(
            "datetime",
            f"{text!r} is not an RFC 3339 date-time (2025-06-30T00:00:00Z), a date, or an interval "
            "start/end with '..' for an open end",
        ) from None


def parse_properties(text: str, c: Collection) -> tuple[Prop, ...]:
    """The properties to return, in the collection's order; an empty value returns none."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if c.prop(n) is None:
            raise bad_parameter("properties", f"unknown property {n!r}; {c.id} has {_names(c.properties)}")
    wanted = set(names)
    return tuple(p for p in c.properties if p.name in wanted)


def parse_sortby(text: str, c: Collection) -> tuple[tuple[Prop, bool], ...]:
    """``[+|-]name`` keys, comma-separated (a ``+`` may arrive as a space); ``-`` sorts descending."""
    keys: list[tuple[Prop, bool]] = []
    for raw in text.split(","):
        item = raw.strip()
        desc = item.startswith("-")
        name = item.lstrip("+-").strip()
        prop = c.prop(name)
        if prop is None or not prop.queryable:
            raise bad_parameter("sortby", f"cannot sort by {name!r}; sortable: {_names(c.properties, True)}")
        keys.append((prop, desc))
    return tuple(keys)


def parse_fid(c: Collection, fid: str) -> str | int:
    if c.id_type == "integer":
        try:
            return int(fid)
        except ValueError:
            raise not_found(f"feature {fid!r} of {c.id}") from None
    return fid


def equality_filter(equal: dict[str, str], c: Collection) -> list[tuple[str, Any]]:
    """CQL2-JSON ``=`` conditions for queryable query parameters, each with the parameter's name."""
    out: list[tuple[str, Any]] = []
    for name, value in equal.items():
        prop = c.by_name[name]
        literal: Any
        if prop.type in ("number", "integer"):
            try:
                literal = float(value)
            except ValueError:
                raise bad_parameter(name, f"{name} is a number; got {value!r}") from None
        elif prop.type == "boolean":
            if value.lower() not in ("true", "false"):
                raise bad_parameter(name, f"{name} is true or false; got {value!r}")
            literal = value.lower() == "true"
        elif prop.type == "date-time":
            literal = {"timestamp": value}
        elif prop.type == "date":
            literal = {"date": value}
        else:
            literal = value
        out.append((name, {"op": "=", "args": [{"property": name}, literal]}))
    return out


def _names(props: tuple[Prop, ...], queryable_only: bool = False) -> str:
    return ", ".join(p.name for p in props if p.queryable or not queryable_only)


__all__ = [
    "ITEMS_PARAMS",
    "ApiError",
    "check_format",
    "check_known",
    "collection_or_404",
    "equality_filter",
    "parse_bbox",
    "parse_crs",
    "parse_datetime",
    "parse_fid",
    "parse_properties",
    "parse_sortby",
]
