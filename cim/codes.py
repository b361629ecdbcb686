"""Object codes: the 25-digit house code and the unit codes that are its prefixes (Shenzhen's rule, any city).

Shenzhen's unified address rule (社会管理要素统一地址规范, 2017) numbers every house as

    province 2 | city 2 | district 2 | street 3 | community 3 | grid 2 | building 5 | room 6

so a district code has 6 digits, street 9, community 12, grid 14, building 19 and house 25, and every
code starts with the code of each unit that contains it. That prefix rule is what links footprints,
3D tile features, BIM models, devices and complaints to the block-data hierarchy, so it is checked on
every load rather than trusted.

Codes are always ``str`` of ASCII digits, never integers: a 25-digit code does not fit an int64 column
or a JSON number, and the segment boundaries are positional.

The ``*_PATTERN`` constants are plain POSIX-compatible regular expressions so that SQL ``CHECK``
constraints (``code ~ BUILDING_CODE_PATTERN``) can mirror them; Python checks here are stricter
(e.g. no all-zero segments, real calendar dates in event codes).

Other cities. The hierarchy and lengths are the product's model for every city (a city without an address
grid of its own gets a management grid, as Chinese cities did with their 万米单元网格); only the first four
digits, province+city, belong to the deployment: ``settings.city_code`` (``CIM_CITY_CODE``, default
``4403``). Every check here is against that *active* city code. Only for Shenzhen is the district checked
against the list of its districts; elsewhere any district number but ``00`` is accepted. Code that works on
another city's codes than the process settings name (tests, a loader given explicit settings) wraps the work
in ``city_scope(code)``. ``BUILDING_CODE_PATTERN`` and ``HOUSE_CODE_PATTERN`` stay Shenzhen's;
``city_code_pattern`` gives the SQL pattern of any city's codes (the ``shenzhen_code`` domain uses it).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from datetime import date
from types import MappingProxyType
from typing import SupportsIndex

import numpy as np
import numpy.typing as npt

from cim.settings import CITY_CODE_RE, get_settings

__all__ = [
    "BUILDING_CODE_PATTERN",
    "BUILDING_CODE_RE",
    "DISTRICTS",
    "EVENT_CODE_PATTERN",
    "EVENT_CODE_RE",
    "HOUSE_CODE_PATTERN",
    "HOUSE_CODE_RE",
    "LEVELS",
    "LEVEL_LENGTHS",
    "PARCEL_CODE_PATTERN",
    "PARCEL_CODE_RE",
    "SEGMENTS",
    "SHENZHEN_PREFIX",
    "CodeError",
    "CodeParts",
    "ancestors",
    "building_code",
    "check_prefix",
    "city_code",
    "city_code_pattern",
    "city_scope",
    "format_code",
    "house_code",
    "is_within",
    "level_of",
    "next_free_number",
    "parent_code",
    "parse",
    "validate",
    "validate_event_code",
    "validate_many",
    "validate_parcel_code",
]


class CodeError(ValueError):
    """A code is malformed or inconsistent with its container; the message names the code and the fault."""

    def __init__(self, message: str, code: object = None) -> None:
        super().__init__(message)
        self.code = code


SEGMENTS: tuple[tuple[str, int], ...] = (
    ("province", 2),
    ("city", 2),
    ("district", 2),
    ("street", 3),
    ("community", 3),
    ("grid", 2),
    ("building", 5),
    ("room", 6),
)
"""Segment names and widths, in code order."""

LEVELS: tuple[str, ...] = ("district", "street", "community", "grid", "building", "house")
LEVEL_LENGTHS: Mapping[str, int] = MappingProxyType(
    {"district": 6, "street": 9, "community": 12, "grid": 14, "building": 19, "house": 25}
)
_LEVEL_BY_LENGTH: Mapping[int, str] = MappingProxyType({n: lvl for lvl, n in LEVEL_LENGTHS.items()})

SHENZHEN_PREFIX = "4403"
DISTRICTS: Mapping[str, str] = MappingProxyType(
    {
        "440303": "罗湖 Luohu",
        "440304": "福田 Futian",
        "440305": "南山 Nanshan",
        "440306": "宝安 Bao'an",
        "440307": "龙岗 Longgang",
        "440308": "盐田 Yantian",
        "440309": "龙华 Longhua",
        "440310": "坪山 Pingshan",
        "440311": "光明 Guangming",
    }
)
"""Shenzhen's districts (GB/T 2260 codes)."""

_SHENZHEN_DISTRICT_RE = "(0[3-9]|1[01])"
"""The SQL/POSIX alternation of Shenzhen's district numbers 03..11 (the keys of ``DISTRICTS``)."""
_ANY_DISTRICT_RE = "(0[1-9]|[1-9][0-9])"
"""Any district number but 00, for cities whose districts are not listed here."""

_CITY_OVERRIDE: ContextVar[str | None] = ContextVar("cim_city_code", default=None)


def city_code() -> str:
    """The active province+city prefix: the innermost `city_scope`, else ``settings.city_code``."""
    return _CITY_OVERRIDE.get() or get_settings().city_code


@contextmanager
def city_scope(code: str) -> Iterator[str]:
    """Check codes against city ``code`` (4 digits) inside the ``with`` block, whatever the settings say."""
    if not isinstance(code, str) or not CITY_CODE_RE.fullmatch(code):
        raise CodeError(f"city code {code!r} is not 4 digits (province 2, city 2), e.g. 4403", code)
    token = _CITY_OVERRIDE.set(code)
    try:
        yield code
    finally:
        _CITY_OVERRIDE.reset(token)


def city_code_pattern(code: str) -> str:
    """The POSIX regular expression every code of city ``code`` matches (the SQL domain's CHECK).

    Built only from the validated 4 digits and one of two fixed district alternations, never other text:
    ``^4403(0[3-9]|1[01])[0-9]*$`` for Shenzhen, ``^9901(0[1-9]|[1-9][0-9])[0-9]*$`` for city 9901.
    """
    if not isinstance(code, str) or not CITY_CODE_RE.fullmatch(code):
        raise CodeError(f"city code {code!r} is not 4 digits (province 2, city 2), e.g. 4403", code)
    district = _SHENZHEN_DISTRICT_RE if code == SHENZHEN_PREFIX else _ANY_DISTRICT_RE
    return f"^{code}{district}[0-9]*$"


# (name, start, end) of each segment within a code.
_SPANS: tuple[tuple[str, int, int], ...] = tuple(
    (name, sum(w for _, w in SEGMENTS[:i]), sum(w for _, w in SEGMENTS[: i + 1]))
    for i, (name, _) in enumerate(SEGMENTS)
)
# Segments that number things from 1, so an all-zero value is a placeholder, not a code.
_NONZERO_SEGMENTS: tuple[tuple[str, int, int], ...] = _SPANS[3:]

PARCEL_CODE_PATTERN = r"^[A-Z][0-9]{3}-[0-9]{4}$"
"""宗地号, e.g. ``T107-0091``."""
EVENT_CODE_PATTERN = r"^EV[0-9]{8}[0-9]{6}$"
"""``EV`` + YYYYMMDD + a 6-digit serial, e.g. ``EV20240315000042``."""
BUILDING_CODE_PATTERN = r"^4403(0[3-9]|1[01])[0-9]{13}$"
"""Shape of a 19-digit Shenzhen building code (SQL mirror; `validate` also rejects all-zero segments)."""
HOUSE_CODE_PATTERN = r"^4403(0[3-9]|1[01])[0-9]{19}$"
"""Shape of a 25-digit Shenzhen house code (SQL mirror; `validate` also rejects all-zero segments)."""

PARCEL_CODE_RE = re.compile(PARCEL_CODE_PATTERN)
EVENT_CODE_RE = re.compile(EVENT_CODE_PATTERN)
BUILDING_CODE_RE = re.compile(BUILDING_CODE_PATTERN)
HOUSE_CODE_RE = re.compile(HOUSE_CODE_PATTERN)

_DIGITS_RE = re.compile(r"[0-9]*")
_LENGTHS_TEXT = ", ".join(f"{n} ({lvl})" for lvl, n in LEVEL_LENGTHS.items())
_DISTRICTS_TEXT = ", ".join(f"{c} {n.split()[0]}" for c, n in DISTRICTS.items())


def _check_level_name(level: str) -> int:
    try:
        return LEVEL_LENGTHS[level]
    except KeyError:
        raise ValueError(f"unknown code level {level!r}; levels are {', '.join(LEVELS)}") from None


def _problem(code: object, level: str | None = None, city: str | None = None) -> str | None:
    """What is wrong with ``code`` (None when it is a valid code of ``level`` in ``city``, default the active one)."""
    city = city or city_code()
    expected = _check_level_name(level) if level is not None else None
    what = f"{level} code" if level else "code"
    if not isinstance(code, str):
        return f"{what} {code!r} is not a string of digits (got {type(code).__name__})"
    if not _DIGITS_RE.fullmatch(code):
        pos, ch = next((i, c) for i, c in enumerate(code) if not "0" <= c <= "9")
        return f"{what} {code!r} has a non-digit {ch!r} at position {pos + 1}; codes are digits only"
    n = len(code)
    if expected is not None and n != expected:
        return f"{what} {code!r} has {n} digits; a {level} code has {expected}"
    if n not in _LEVEL_BY_LENGTH:
        return f"code {code!r} has {n} digits; codes have {_LENGTHS_TEXT} digits"
    if city == SHENZHEN_PREFIX:
        if not code.startswith(SHENZHEN_PREFIX):
            return (
                f"{what} {code} is not a Shenzhen code: it starts with {code[:4]}, "
                f"Shenzhen codes start with {SHENZHEN_PREFIX} (province 44, city 03)"
            )
        if code[:6] not in DISTRICTS:
            return f"{what} {code} names district {code[:6]}, not a Shenzhen district ({_DISTRICTS_TEXT})"
    else:
        if not code.startswith(city):
            return (
                f"{what} {code} is not a code of this city: it starts with {code[:4]}, "
                f"this deployment's codes start with {city} (CIM_CITY_CODE)"
            )
        if code[4:6] == "00":
            return f"{what} {code} has an all-zero district segment (00); district numbers start at 01"
    for name, start, end in _NONZERO_SEGMENTS:
        if end <= n and code[start:end].count("0") == end - start:
            zeros = code[start:end]
            return f"{what} {code} has an all-zero {name} segment ({zeros}); {name} numbers start at 1"
    return None


def validate(code: str, level: str | None = None) -> str:
    """Return ``code`` unchanged if it is a valid code of the active city (of ``level``, when given).

    Raises CodeError naming the code and the fault: non-digits, a length that is no level's (or not
    ``level``'s), a prefix other than the city code (4403 for Shenzhen), an unknown Shenzhen district
    (district 00 elsewhere), or an all-zero street, community, grid, building or room segment (those are
    placeholders, never real numbers).
    """
    problem = _problem(code, level)
    if problem is not None:
        raise CodeError(problem, code)
    return code


def level_of(code: str) -> str:
    """The level (``district`` … ``house``) a code denotes, decided by its length.

    Only the shape is checked (digits, known length), so this also works on codes of other cities;
    raises CodeError otherwise.
    """
    if not isinstance(code, str) or not _DIGITS_RE.fullmatch(code):
        raise CodeError(f"code {code!r} is not a string of digits", code)
    try:
        return _LEVEL_BY_LENGTH[len(code)]
    except KeyError:
        message = f"code {code!r} has {len(code)} digits; codes have {_LENGTHS_TEXT} digits"
        raise CodeError(message, code) from None


def parent_code(code: str) -> str | None:
    """The code of the unit directly containing ``code`` (None for a district)."""
    i = LEVELS.index(level_of(validate(code)))
    return code[: LEVEL_LENGTHS[LEVELS[i - 1]]] if i > 0 else None


def ancestors(code: str) -> dict[str, str]:
    """Codes of every unit containing ``code``, outermost first (a building gives district … grid)."""
    level = level_of(validate(code))
    return {lvl: code[: LEVEL_LENGTHS[lvl]] for lvl in LEVELS[: LEVELS.index(level)]}


@dataclass(frozen=True, slots=True)
class CodeParts:
    """The digit segments of a code; segments below the code's level are None."""

    province: str
    city: str
    district: str
    street: str | None = None
    community: str | None = None
    grid: str | None = None
    building: str | None = None
    room: str | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        """The present segments, in code order."""
        values = (getattr(self, f.name) for f in fields(self))
        return tuple(v for v in values if v is not None)

    @property
    def level(self) -> str:
        """``district`` … ``house``: the level of the code these parts make."""
        return LEVELS[len(self.segments) - 3]

    @property
    def code(self) -> str:
        """The code itself (concatenated segments)."""
        return "".join(self.segments)


def parse(code: str) -> CodeParts:
    """Split a valid code into its segments (raises CodeError if ``code`` is not valid)."""
    validate(code)
    return CodeParts(*(code[start:end] for _, start, end in _SPANS if end <= len(code)))


def _pad_segment(name: str, width: int, value: SupportsIndex | str) -> str:
    if isinstance(value, str):
        if not _DIGITS_RE.fullmatch(value) or not value:
            raise CodeError(f"{name} segment {value!r} is not a string of digits", value)
        if len(value) > width:
            raise CodeError(f"{name} segment {value} does not fit {width} digits", value)
        return value.zfill(width)
    if isinstance(value, bool):
        raise CodeError(f"{name} segment {value!r} is not a number", value)
    try:
        number = operator.index(value)
    except TypeError:
        raise CodeError(f"{name} segment {value!r} is not an integer", value) from None
    if not 0 <= number < 10**width:
        raise CodeError(
            f"{name} number {number} does not fit the {width}-digit {name} segment (0..{10**width - 1})",
            value,
        )
    return f"{number:0{width}d}"


def format_code(first: CodeParts | SupportsIndex | str, *rest: SupportsIndex | str) -> str:
    """Build a validated code from segments, zero-padding each: ``format_code(44, 3, 5, 1)`` → ``440305001``.

    Takes a CodeParts, or 3 (district) to 8 (house) segments as ints or digit strings starting with
    the province. Raises CodeError when a segment overflows its width (e.g. building 100000) or the
    result is not a valid code of the active city.
    """
    if isinstance(first, CodeParts):
        if rest:
            raise TypeError("format_code takes either one CodeParts or segment values, not both")
        segments: tuple[SupportsIndex | str, ...] = first.segments
    else:
        segments = (first, *rest)
    if not 3 <= len(segments) <= len(SEGMENTS):
        raise CodeError(f"a code has 3 (district) to {len(SEGMENTS)} (house) segments, got {len(segments)}", segments)
    code = "".join(_pad_segment(name, width, v) for (name, width), v in zip(SEGMENTS, segments, strict=False))
    return validate(code)


def building_code(grid_code: str, number: int) -> str:
    """The 19-digit code of building ``number`` (1..99999) in grid ``grid_code``."""
    validate(grid_code, "grid")
    return validate(grid_code + _pad_segment("building", 5, number), "building")


def house_code(building_code: str, room_number: int) -> str:
    """The 25-digit code of room ``room_number`` (1..999999) in building ``building_code``."""
    validate(building_code, "building")
    return validate(building_code + _pad_segment("room", 6, room_number), "house")


def is_within(code: str, unit_code: str) -> bool:
    """True when ``code`` lies in (or is) the unit ``unit_code``: the prefix rule. Both must be valid."""
    validate(code)
    validate(unit_code)
    return code.startswith(unit_code)


def check_prefix(code: str, container_code: str, what: str = "building") -> None:
    """Raise CodeError unless ``code`` is coded into the unit that actually contains the object.

    ``container_code`` is the unit the object was found in (e.g. by a spatial join); ``what`` names the
    object in the message, which names both codes so a data clerk can fix either one.
    """
    validate(code)
    container_level = level_of(validate(container_code))
    if len(container_code) >= len(code):
        raise CodeError(
            f"{what} {code} ({level_of(code)} level) cannot lie in {container_level} {container_code}: "
            f"a container code must be shorter than the code it contains",
            code,
        )
    if not code.startswith(container_code):
        raise CodeError(
            f"{what} {code} is coded into {container_level} {code[: len(container_code)]} "
            f"but lies in {container_level} {container_code}",
            code,
        )


def next_free_number(used: Iterable[str], grid_code: str) -> int:
    """The building number to give the next new building in ``grid_code``: one above the highest in use.

    Gaps are deliberately not reused: a demolished building's code lives on in history, complaints and
    BIM links. ``used`` may hold building or house codes of any grid (others are ignored); codes that
    start with ``grid_code`` must be valid. Raises CodeError when 99999 is already taken.
    """
    validate(grid_code, "grid")
    arr = np.asarray(list(used), dtype=str)
    if arr.size == 0:
        return 1
    n = len(grid_code)
    candidates = arr[np.char.startswith(arr, grid_code) & (np.char.str_len(arr) > n)]
    if candidates.size == 0:
        return 1
    problems = [p for p in validate_many(candidates, None) if p is not None]
    if problems:
        raise CodeError(problems[0], grid_code)
    # Valid codes longer than a grid code are building (19) or house (25) codes.
    chars = _char_matrix(candidates)[:, n : n + 5].astype(np.int64) - ord("0")
    highest = int((chars @ np.array([10000, 1000, 100, 10, 1], dtype=np.int64)).max())
    if highest >= 99999:
        raise CodeError(f"grid {grid_code} has no free building number: 99999 is taken", grid_code)
    return highest + 1


def _char_matrix(arr: npt.NDArray[np.str_]) -> npt.NDArray[np.uint32]:
    """Unicode code points of a 1-D numpy string array as an (n, width) matrix (0 past each string's end)."""
    width = arr.dtype.itemsize // 4
    return np.ascontiguousarray(arr).view(np.uint32).reshape(len(arr), width)


_CHUNK = 100_000  # bounds the (chunk, 25) uint32 matrix to ~10 MB however many codes are loaded


def _valid_mask(arr: npt.NDArray[np.str_], level: str | None, city: str) -> npt.NDArray[np.bool_]:
    """Vectorised `_problem(..., city) is None` for a 1-D string array."""
    lengths = np.char.str_len(arr)
    ok = lengths == LEVEL_LENGTHS[level] if level is not None else np.isin(lengths, list(LEVEL_LENGTHS.values()))
    width = arr.dtype.itemsize // 4
    if width < LEVEL_LENGTHS["district"]:
        return np.zeros(len(arr), dtype=bool)
    width = min(width, LEVEL_LENGTHS["house"])  # longer strings already failed the length test
    chars = _char_matrix(arr)[:, :width]
    inside = np.arange(width)[None, :] < lengths[:, None]
    is_digit = (chars >= ord("0")) & (chars <= ord("9"))
    ok &= np.all(is_digit | ~inside, axis=1)
    d = chars.astype(np.int16) - ord("0")
    prefix = np.array([int(c) for c in city], dtype=np.int16)
    ok &= np.all(d[:, :4] == prefix[None, :], axis=1)
    district = d[:, 4] * 10 + d[:, 5]
    ok &= ((district >= 3) & (district <= 11)) if city == SHENZHEN_PREFIX else (district != 0)
    for _, start, end in _NONZERO_SEGMENTS:
        if end > width:
            break
        ok &= ~(np.all(d[:, start:end] == 0, axis=1) & (lengths >= end))
    return ok


def validate_many(codes: Sequence[str] | npt.NDArray[np.str_], level: str | None) -> list[str | None]:
    """For each code, the CodeError message `validate(code, level)` would raise, or None if it is valid.

    Meant for bulk loads (millions of house codes): the checks run as numpy operations over chunks, and
    only the invalid codes are re-examined one by one to word their message. (A numpy string array
    has already lost any trailing NUL characters; a list is checked as given.)
    """
    if level is not None:
        _check_level_name(level)
    city = city_code()
    n = len(codes)
    out: list[str | None] = [None] * n
    if n == 0:
        return out
    if isinstance(codes, np.ndarray) and codes.dtype.kind == "U":
        arr = codes.reshape(-1)
    else:
        strs: list[str] = list(codes)
        if set(map(type, strs)) != {str}:
            # Non-strings (None, ints) become "" so they fail here and get worded by _problem below.
            strs = [c if isinstance(c, str) else "" for c in strs]
        arr = np.array(strs, dtype=str)
        if sum(map(len, strs)) != int(np.char.str_len(arr).sum()):
            # numpy drops trailing NUL characters; such codes must not slip through as valid.
            return [_problem(c, level, city) for c in codes]
    ok = np.empty(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        ok[start : start + _CHUNK] = _valid_mask(arr[start : start + _CHUNK], level, city)
    for i in np.flatnonzero(~ok).tolist():
        code = codes[i]
        out[i] = _problem(str(code) if isinstance(code, str) else code, level, city)
    return out


def validate_parcel_code(code: str) -> str:
    """Return ``code`` if it is a parcel code (宗地号) like ``T107-0091``; raise CodeError otherwise."""
    if not isinstance(code, str) or not PARCEL_CODE_RE.fullmatch(code):
        raise CodeError(
            f"parcel code {code!r} does not match {PARCEL_CODE_PATTERN} (a capital letter, 3 digits, "
            f"'-', 4 digits, e.g. T107-0091)",
            code,
        )
    return code


def validate_event_code(code: str) -> str:
    """Return ``code`` if it is an event code ``EV`` + YYYYMMDD + 6 digits with a real date; else raise."""
    if not isinstance(code, str) or not EVENT_CODE_RE.fullmatch(code):
        raise CodeError(
            f"event code {code!r} does not match {EVENT_CODE_PATTERN} (EV, a YYYYMMDD date, a 6-digit "
            f"serial, e.g. EV20240315000042)",
            code,
        )
    try:
        date(int(code[2:6]), int(code[6:8]), int(code[8:10]))
    except ValueError:
        raise CodeError(f"event code {code} has an impossible date {code[2:10]} (YYYYMMDD)", code) from None
    return code
