"""CQL2 filters (OGC API – Features Part 3) compiled to parameterised SQL over a collection's whitelist.

The text (or JSON) is parsed by the ``cql2`` package (developmentseed's cql2-rs, a maintained CQL2 parser
that validates against the standard's grammar) into the CQL2-JSON tree; this module walks that tree and
writes SQL in which every identifier comes from `cim.store.collections` and every literal is a bound
parameter. No user text ever reaches the SQL string.

Supported (anything else is a `FilterError`, i.e. a 400 naming ``filter``):
- basic CQL2: ``AND OR NOT``, ``= <> < <= > >=``, ``IS [NOT] NULL``, boolean literals;
- advanced comparison: ``[NOT] LIKE`` (``%`` and ``_``, ``\\`` escapes), ``[NOT] BETWEEN``, ``[NOT] IN``;
- ``CASEI`` (case-insensitive comparison); arithmetic ``+ - * / %`` and ``div`` on numbers (a division by
  zero gives NULL, so the row does not match, rather than an error);
- spatial functions ``S_INTERSECTS S_EQUALS S_DISJOINT S_TOUCHES S_WITHIN S_OVERLAPS S_CROSSES
  S_CONTAINS`` and ``S_DWITHIN(a, b, distance, meters)``; literals (WKT or GeoJSON, ``BBOX(…)``) are in
  ``filter-crs`` (CRS84 by default; authority axis order) and the geometry property is ``geometry`` (or the
  stored column's name);
- temporal functions ``T_AFTER T_BEFORE T_EQUALS T_INTERSECTS T_DISJOINT T_DURING`` on instant properties
  against ``TIMESTAMP(…)``, ``DATE(…)`` or ``INTERVAL(…, …)`` (``..`` open ends). Times without an offset are
  Asia/Shanghai and a date is midnight there (the project's convention for input times).
Semantic errors (unknown property, type mismatch) name the property or operator; syntax errors give the
line and column the parser stopped at.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import cql2
from psycopg import sql

from cim.store.collections import Collection, Prop

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
"""Input times without an offset are local (the same rule as ingest, ``ingest/prepare.py``)."""


class FilterError(ValueError):
    """A filter that cannot be parsed or does not fit the collection; the message says what and where."""


# ------------------------------------------------------------------------------------------------------
# Parsing

_PEST_POSITION = re.compile(r"-->\s*(\d+):(\d+)")
_PEST_EXPECTED = re.compile(r"=\s*(expected .*)$", re.MULTILINE)


def parse_filter(text: str, lang: str = "cql2-text") -> Any:
    """The CQL2-JSON tree of ``text`` in ``lang`` (``cql2-text`` or ``cql2-json``); raises FilterError."""
    if not text.strip():
        raise FilterError("the filter is empty")
    try:
        expr = cql2.parse_json(text) if lang == "cql2-json" else cql2.parse_text(text)
        return expr.to_json()
    except Exception as exc:  # cql2.ParseError, ValueError from the JSON reader
        raise FilterError(_syntax_message(str(exc), lang)) from None


def _syntax_message(raw: str, lang: str) -> str:
    pos = _PEST_POSITION.search(raw)
    expected = _PEST_EXPECTED.search(raw)
    if pos:
        line, col = int(pos.group(1)), int(pos.group(2))
        what = expected.group(1) if expected else "syntax error"
        return f"{lang} syntax error at line {line}, column {col} (position {col}): {what}"
    return f"{lang} syntax error: {raw.splitlines()[0] if raw else 'unparseable'}"


# ------------------------------------------------------------------------------------------------------
# Compiling


class Params:
    """Bound parameters of one statement, each with a unique name (``%(p3)s``)."""

    def __init__(self, prefix: str = "p") -> None:
        self.values: dict[str, Any] = {}
        self._prefix = prefix

    def add(self, value: Any, cast: str | None = None) -> sql.Composable:
        name = f"{self._prefix}{len(self.values)}"
        self.values[name] = value
        ph: sql.Composable = sql.Placeholder(name)
        return ph + sql.SQL("::" + cast) if cast else ph


_CASTS = {
    "string": "text",
    "number": "float8",
    "integer": "bigint",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "date": "date",
}
_KIND_OF_PROP = {
    "string": "string",
    "number": "number",
    "integer": "integer",
    "boolean": "boolean",
    "date": "date",
    "date-time": "timestamp",
    "object": "object",
}


@dataclass
class Operand:
    """A compiled sub-expression: its kind and SQL, or a literal's Python value (bound when its peer's kind
    is known, so ``storeys = 3`` binds a bigint and ``reported_at > DATE('2025-01-01')`` a timestamp)."""

    kind: str
    sql: sql.Composable | None = None
    value: Any = None
    label: str = "literal"

    @property
    def literal(self) -> bool:
        return self.sql is None


@dataclass
class FilterCompiler:
    """Compiles CQL2-JSON for one collection. ``geometry_wkb`` turns a GeoJSON literal (in filter-crs) into
    storage-CRS EWKB and raises ValueError with a message for unusable ones."""

    collection: Collection
    params: Params
    geometry_wkb: Callable[[dict[str, Any]], bytes]
    parameter: str = "filter"
    _geometry_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self._geometry_names = frozenset({"geometry", self.collection.geometry_column})

    def compile(self, tree: Any) -> sql.Composable:
        """SQL of a boolean condition; raises FilterError."""
        out = self._expr(tree)
        if out.kind != "boolean":
            raise FilterError(f"the filter must be a condition, not a {out.kind} ({out.label})")
        return self._render(out, "boolean")

    # ---- operands ---------------------------------------------------------------------------------------
    def _expr(self, node: Any) -> Operand:
        if isinstance(node, bool):
            return Operand("boolean", sql.SQL("TRUE" if node else "FALSE"), label=str(node).upper())
        if isinstance(node, int | float):
            return Operand("number", value=float(node), label=repr(node))
        if isinstance(node, str):
            return Operand("string", value=node, label=repr(node))
        if node is None:
            raise FilterError("NULL is not a value to compare with; use IS NULL / IS NOT NULL")
        if isinstance(node, list):
            return Operand("array", value=node, label="a list")
        if not isinstance(node, dict):
            raise FilterError(f"unexpected filter element {node!r}")
        if "property" in node:
            return self._property(str(node["property"]))
        if "op" in node:
            return self._operation(str(node["op"]).lower(), list(node.get("args") or []))
        if "timestamp" in node:
            return Operand("timestamp", value=_timestamp(node["timestamp"]), label=f"TIMESTAMP({node['timestamp']})")
        if "date" in node:
            return Operand("date", value=_date(node["date"]), label=f"DATE({node['date']})")
        if "interval" in node:
            ends = node["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                raise FilterError("INTERVAL takes two instants")
            return Operand("interval", value=tuple(_instant_or_open(e) for e in ends), label="INTERVAL(…)")
        if "bbox" in node:
            return Operand("geometry", value=_bbox_geojson(node["bbox"]), label="BBOX(…)")
        if "type" in node and ("coordinates" in node or "geometries" in node):
            return Operand("geometry", value=node, label=str(node["type"]).upper())
        raise FilterError(f"unexpected filter element {node!r}")

    def _property(self, name: str) -> Operand:
        if name in self._geometry_names:
            return Operand("geometry", sql.SQL(self.collection.geometry_sql), label=name)
        prop: Prop | None = self.collection.prop(name)
        if prop is None:
            names = ", ".join(["geometry", *(p.name for p in self.collection.properties if p.queryable)])
            raise FilterError(f"unknown property {name!r} of {self.collection.id}; queryables: {names}")
        return Operand(_KIND_OF_PROP[prop.type], sql.SQL(prop.sql), label=name)

    def _render(self, op: Operand, as_kind: str | None = None) -> sql.Composable:
        """SQL of an operand; a literal is bound as ``as_kind`` (default: its own kind)."""
        if op.sql is not None:
            return op.sql
        kind = as_kind or op.kind
        value = op.value
        if kind == "geometry":
            try:
                wkb = self.geometry_wkb(value)
            except ValueError as exc:
                raise FilterError(f"geometry {op.label}: {exc}") from None
            return sql.SQL("ST_GeomFromEWKB({})").format(self.params.add(wkb, "bytea"))
        if kind == "integer":
            if float(value).is_integer() and abs(value) < 2**63:
                return self.params.add(int(value), "bigint")
            kind = "number"
        if kind == "timestamp" and isinstance(value, date) and not isinstance(value, datetime):
            value = datetime.combine(value, time(), LOCAL_TZ)
        return self.params.add(value, _CASTS[kind])

    # ---- operators --------------------------------------------------------------------------------------
    def _operation(self, op: str, args: list[Any]) -> Operand:
        if op in ("and", "or"):
            if len(args) < 2:
                raise FilterError(f"{op.upper()} needs two or more conditions")
            parts = [self._condition(a, op.upper()) for a in args]
            joined = sql.SQL(f" {op.upper()} ").join(parts)
            return Operand("boolean", sql.SQL("({})").format(joined), label=op.upper())
        if op == "not":
            _arity(op, args, 1)
            return Operand("boolean", sql.SQL("(NOT {})").format(self._condition(args[0], "NOT")), label="NOT")
        if op in _COMPARISONS:
            _arity(op, args, 2)
            return self._comparison(op, self._expr(args[0]), self._expr(args[1]))
        if op == "like":
            _arity(op, args, 2)
            a, b = self._expr(args[0]), self._expr(args[1])
            for x in (a, b):
                _require(x, ("string",), "LIKE")
            return Operand("boolean", sql.SQL("({} LIKE {})").format(self._render(a), self._render(b)), label="LIKE")
        if op == "between":
            _arity(op, args, 3)
            a, lo, hi = (self._expr(x) for x in args)
            kind = self._common_kind(a, lo, "BETWEEN")
            self._common_kind(a, hi, "BETWEEN")
            if kind not in ("number", "integer", "timestamp", "date", "string"):
                raise FilterError(f"BETWEEN needs numbers, strings or times, not {kind}s ({a.label})")
            body = sql.SQL("({} BETWEEN {} AND {})").format(
                self._render(a, kind), self._render(lo, kind), self._render(hi, kind)
            )
            return Operand("boolean", body, label="BETWEEN")
        if op == "in":
            _arity(op, args, 2)
            return self._in(self._expr(args[0]), args[1])
        if op == "isnull":
            _arity(op, args, 1)
            inner = self._render(self._expr(args[0]))
            return Operand("boolean", sql.SQL("({} IS NULL)").format(inner), label="IS NULL")
        if op == "casei":
            _arity(op, args, 1)
            a = self._expr(args[0])
            _require(a, ("string",), "CASEI")
            return Operand("string", sql.SQL("lower({})").format(self._render(a)), label="CASEI(…)")
        if op in _ARITHMETIC:
            _arity(op, args, 2)
            a, b = self._expr(args[0]), self._expr(args[1])
            for x in (a, b):
                _require(x, ("number", "integer"), op)
            ra, rb = self._render(a, "number"), self._render(b, "number")
            return Operand("number", sql.SQL(_ARITHMETIC[op]).format(ra, rb), label=op)
        if op in _SPATIAL:
            _arity(op, args, 2)
            a, b = self._expr(args[0]), self._expr(args[1])
            for x in (a, b):
                _require(x, ("geometry",), op.upper())
            body = sql.SQL(_SPATIAL[op]).format(self._render(a), self._render(b))
            return Operand("boolean", body, label=op.upper())
        if op == "s_dwithin":
            return self._dwithin(args)
        if op in _TEMPORAL:
            _arity(op, args, 2)
            return self._temporal(op, self._expr(args[0]), self._expr(args[1]))
        raise FilterError(f"unsupported operator or function {op.upper()!r}")

    def _condition(self, node: Any, context: str) -> sql.Composable:
        out = self._expr(node)
        if out.kind != "boolean":
            raise FilterError(f"{context} needs conditions, got a {out.kind} ({out.label})")
        return self._render(out)

    def _common_kind(self, a: Operand, b: Operand, op: str) -> str:
        """The kind two operands are compared as; raises FilterError when they do not compare."""
        ka, kb = a.kind, b.kind
        numeric = ("number", "integer")
        if ka in numeric and kb in numeric:  # bind a literal as its peer's kind (bigint for integer columns)
            if a.literal != b.literal:
                return kb if a.literal else ka
            return "number"
        if ka == kb and ka in ("string", "boolean", "timestamp", "date"):
            return ka
        # A DATE(...) literal compares with a timestamp as midnight local time.
        if {ka, kb} == {"timestamp", "date"} and (a.literal if ka == "date" else b.literal):
            return "timestamp"
        raise FilterError(f"{op} cannot compare {a.label} (a {ka}) with {b.label} (a {kb})")

    def _comparison(self, op: str, a: Operand, b: Operand) -> Operand:
        kind = self._common_kind(a, b, op)
        if kind == "boolean" and op not in ("=", "<>"):
            raise FilterError(f"booleans compare only with = and <> ({a.label} {op} {b.label})")
        body = sql.SQL("({} " + op + " {})").format(self._render(a, kind), self._render(b, kind))
        return Operand("boolean", body, label=op)

    def _in(self, a: Operand, items: Any) -> Operand:
        if not isinstance(items, list) or not items:
            raise FilterError(f"IN needs a non-empty list of values after {a.label}")
        ops = [self._expr(x) for x in items]
        kind = a.kind
        for x in ops:
            if not x.literal:
                raise FilterError("IN lists hold literal values only")
            kind = self._common_kind(a, x, "IN")
        if kind not in _CASTS:
            raise FilterError(f"IN cannot compare {a.label} (a {a.kind})")
        values = [x.value for x in ops]
        if kind == "integer":
            if all(float(v).is_integer() for v in values):
                values = [int(v) for v in values]
            else:
                kind = "number"
        if kind == "timestamp":
            values = [datetime.combine(v, time(), LOCAL_TZ) if type(v) is date else v for v in values]
        arr = self.params.add(values, _CASTS[kind] + "[]")
        return Operand("boolean", sql.SQL("({} = ANY({}))").format(self._render(a, kind), arr), label="IN")

    def _dwithin(self, args: list[Any]) -> Operand:
        _arity("s_dwithin", args, 4)
        a, b, dist = self._expr(args[0]), self._expr(args[1]), self._expr(args[2])
        for x in (a, b):
            _require(x, ("geometry",), "S_DWITHIN")
        if not dist.literal or dist.kind != "number" or dist.value < 0:
            raise FilterError("S_DWITHIN's distance must be a number ≥ 0")
        unit = args[3].get("property") if isinstance(args[3], dict) else args[3]
        factor = _METRES.get(str(unit).lower())
        if factor is None:
            raise FilterError(f"S_DWITHIN's unit must be one of {', '.join(_METRES)}; got {unit!r}")
        body = sql.SQL("ST_DWithin({}, {}, {})").format(
            self._render(a), self._render(b), self.params.add(dist.value * factor, "float8")
        )
        return Operand("boolean", body, label="S_DWITHIN")

    def _temporal(self, op: str, a: Operand, b: Operand) -> Operand:
        if a.kind not in ("timestamp", "date") or a.literal:
            raise FilterError(f"{op.upper()} needs a time property first, got {a.label}")
        if b.kind == "interval":
            start, end = b.value
            x = self._render(a)

            def bound(v: datetime | date) -> sql.Composable:
                return self._render(Operand(_instant_kind(v), value=v), _kind_for(a.kind, v, op))

            parts: list[sql.Composable]
            if op == "t_after":
                parts = [sql.SQL("({} > {})").format(x, bound(end))] if end else [sql.SQL("FALSE")]
            elif op == "t_before":
                parts = [sql.SQL("({} < {})").format(x, bound(start))] if start else [sql.SQL("FALSE")]
            elif op in ("t_intersects", "t_disjoint"):
                parts = [sql.SQL("({} >= {})").format(x, bound(start))] if start else []
                parts += [sql.SQL("({} <= {})").format(x, bound(end))] if end else []
                parts = parts or [sql.SQL("({} IS NOT NULL)").format(x)]
            elif op == "t_during":
                parts = [sql.SQL("({} > {})").format(x, bound(start))] if start else []
                parts += [sql.SQL("({} < {})").format(x, bound(end))] if end else []
                parts = parts or [sql.SQL("({} IS NOT NULL)").format(x)]
            else:
                raise FilterError(f"{op.upper()} of an instant and an interval is not supported")
            body = sql.SQL("({})").format(sql.SQL(" AND ").join(parts))
            if op == "t_disjoint":
                body = sql.SQL("(NOT {})").format(body)
            return Operand("boolean", body, label=op.upper())
        if b.kind not in ("timestamp", "date"):
            raise FilterError(f"{op.upper()} compares times, not {b.label}")
        symbol = {"t_after": ">", "t_before": "<", "t_equals": "=", "t_intersects": "=", "t_disjoint": "<>"}
        if op not in symbol:
            raise FilterError(f"{op.upper()} of two instants is not supported")
        return self._comparison(symbol[op], a, b)


_COMPARISONS = ("=", "<>", "<", "<=", ">", ">=")
_ARITHMETIC = {
    "+": "({} + {})",
    "-": "({} - {})",
    "*": "({} * {})",
    "/": "({} / NULLIF({}, 0))",
    "%": "mod({}::numeric, NULLIF({}, 0)::numeric)::float8",
    "div": "trunc({} / NULLIF({}, 0))",
}
_SPATIAL = {
    "s_intersects": "ST_Intersects({}, {})",
    "s_equals": "ST_Equals({}, {})",
    "s_disjoint": "(NOT ST_Intersects({}, {}))",
    "s_touches": "ST_Touches({}, {})",
    "s_within": "ST_Within({}, {})",
    "s_overlaps": "ST_Overlaps({}, {})",
    "s_crosses": "ST_Crosses({}, {})",
    "s_contains": "ST_Contains({}, {})",
}
_TEMPORAL = ("t_after", "t_before", "t_equals", "t_intersects", "t_disjoint", "t_during")
_METRES = {"meters": 1.0, "meter": 1.0, "metres": 1.0, "metre": 1.0, "m": 1.0, "kilometers": 1000.0, "km": 1000.0}


def _arity(op: str, args: list[Any], n: int) -> None:
    if len(args) != n:
        raise FilterError(f"{op.upper()} takes {n} argument{'s' if n != 1 else ''}, got {len(args)}")


def _require(op: Operand, kinds: tuple[str, ...], where: str) -> None:
    if op.kind not in kinds:
        raise FilterError(f"{where} needs {' or '.join(k + 's' for k in kinds)}, not {op.label} (a {op.kind})")


def _timestamp(text: Any) -> datetime:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        raise FilterError(f"TIMESTAMP({text!r}) is not an RFC 3339 date-time") from None
    return value if value.tzinfo else value.replace(tzinfo=LOCAL_TZ)


def _date(text: Any) -> date:
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        raise FilterError(f"DATE({text!r}) is not a date (YYYY-MM-DD)") from None


def _instant_or_open(text: Any) -> datetime | date | None:
    s = str(text)
    if s in ("..", ""):
        return None
    return _date(s) if len(s) == 10 else _timestamp(s)


def _instant_kind(v: datetime | date) -> str:
    return "timestamp" if isinstance(v, datetime) else "date"


def _kind_for(prop_kind: str, v: datetime | date, op: str) -> str:
    if prop_kind == "date" and isinstance(v, datetime):
        raise FilterError(f"{op.upper()}: compare a date property with DATE(…) bounds, not timestamps")
    return prop_kind


def _bbox_geojson(values: Any) -> dict[str, Any]:
    if not isinstance(values, list) or len(values) not in (4, 6):
        raise FilterError("BBOX takes 4 (or 6) numbers")
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    a0, b0, a1, b1 = (float(v) for v in values)
    if a0 > a1 or b0 > b1:
        raise FilterError("BBOX: the lower corner must come first")
    # Densified like the bbox parameter (cim.store.feature_crs), so both select the same area once projected.
    steps = [i / 16 for i in range(16)]
    ring = (
        [[a0 + (a1 - a0) * t, b0] for t in steps]
        + [[a1, b0 + (b1 - b0) * t] for t in steps]
        + [[a1 - (a1 - a0) * t, b1] for t in steps]
        + [[a0, b1 - (b1 - b0) * t] for t in steps]
        + [[a0, b0]]
    )
    return {"type": "Polygon", "coordinates": [ring]}
