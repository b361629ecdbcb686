"""Shenzhen object codes: parsing, validation per level, prefix rule, formatting, bulk validation."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from cim import codes
from cim.codes import CodeError

EXAMPLE = "4403070030030400042000003"  # the guide's house code: 44/03/07/003/003/04/00042/000003
BUILDING = EXAMPLE[:19]
GRID = EXAMPLE[:14]


def test_parse_guide_example() -> None:
    parts = codes.parse(EXAMPLE)
    assert (parts.province, parts.city, parts.district) == ("44", "03", "07")
    assert (parts.street, parts.community, parts.grid) == ("003", "003", "04")
    assert (parts.building, parts.room) == ("00042", "000003")
    assert parts.level == "house"
    assert parts.code == EXAMPLE
    building = codes.parse(BUILDING)
    assert building.level == "building" and building.room is None and building.building == "00042"


def test_levels_and_lengths() -> None:
    assert codes.LEVELS == ("district", "street", "community", "grid", "building", "house")
    assert [codes.LEVEL_LENGTHS[lvl] for lvl in codes.LEVELS] == [6, 9, 12, 14, 19, 25]
    assert sum(width for _, width in codes.SEGMENTS) == 25
    for level, n in codes.LEVEL_LENGTHS.items():
        assert codes.level_of(EXAMPLE[:n]) == level
        assert codes.validate(EXAMPLE[:n], level) == EXAMPLE[:n]
        assert codes.validate(EXAMPLE[:n]) == EXAMPLE[:n]


def test_hierarchy() -> None:
    assert codes.parent_code(EXAMPLE) == BUILDING
    assert codes.parent_code(BUILDING) == GRID
    assert codes.parent_code("440307003") == "440307"
    assert codes.parent_code("440307") is None
    assert codes.ancestors(BUILDING) == {
        "district": "440307",
        "street": "440307003",
        "community": "440307003003",
        "grid": GRID,
    }
    assert codes.ancestors("440305") == {}
    assert list(codes.ancestors(EXAMPLE)) == ["district", "street", "community", "grid", "building"]


@pytest.mark.parametrize(
    ("code", "level", "fragment"),
    [
        ("44030700300304000A2", None, "non-digit 'A' at position 18"),
        ("4403070030030400042 ", None, "non-digit ' ' at position 20"),
        ("4403070030030400042", "house", "has 19 digits; a house code has 25"),
        ("440307003003040004", None, "has 18 digits; codes have 6 (district), 9 (street)"),
        ("", "district", "has 0 digits"),
        ("4401070030030400042", None, "not a Shenzhen code: it starts with 4401"),
        ("4503070030030400042", "building", "not a Shenzhen code"),
        ("440302", None, "district 440302, not a Shenzhen district"),
        ("440312003", None, "district 440312"),
        ("440307000", "street", "all-zero street segment (000)"),
        ("440307003000", None, "all-zero community segment"),
        ("44030700300300", None, "all-zero grid segment (00)"),
        ("4403070030030400000", None, "all-zero building segment (00000)"),
        ("4403070030030400042000000", None, "all-zero room segment (000000)"),
        ("４４０３０７", None, "non-digit"),  # full-width digits are not ASCII digits
    ],
)
def test_validate_rejects_with_clear_message(code: str, level: str | None, fragment: str) -> None:
    with pytest.raises(CodeError) as info:
        codes.validate(code, level)
    message = str(info.value)
    assert fragment in message
    assert code.strip() in message or repr(code) in message
    assert info.value.code == code


def test_validate_rejects_non_strings_and_bad_levels() -> None:
    with pytest.raises(CodeError, match="not a string of digits"):
        codes.validate(4403070030030400042)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown code level 'block'"):
        codes.validate(BUILDING, "block")
    with pytest.raises(CodeError, match="has 7 digits"):
        codes.level_of("4403070")
    with pytest.raises(CodeError, match="not a string of digits"):
        codes.level_of("44030x")


def test_every_shenzhen_district_is_accepted() -> None:
    assert sorted(codes.DISTRICTS) == [f"4403{n:02d}" for n in range(3, 12)]
    for district in codes.DISTRICTS:
        assert codes.validate(district, "district") == district


def test_is_within_and_check_prefix() -> None:
    assert codes.is_within(EXAMPLE, GRID)
    assert codes.is_within(BUILDING, "440307")
    assert codes.is_within(GRID, GRID)
    assert not codes.is_within(GRID, BUILDING)
    assert not codes.is_within(BUILDING, "44030700300305")
    codes.check_prefix(BUILDING, GRID)
    codes.check_prefix(EXAMPLE, BUILDING, what="house")

    with pytest.raises(CodeError) as info:
        codes.check_prefix("4403050010020300001", "44030500100207")
    assert str(info.value) == (
        "building 4403050010020300001 is coded into grid 44030500100203 but lies in grid 44030500100207"
    )
    with pytest.raises(CodeError) as info:
        codes.check_prefix(EXAMPLE, "440305001", what="house")
    assert "house 4403070030030400042000003 is coded into street 440307003" in str(info.value)
    assert "lies in street 440305001" in str(info.value)
    with pytest.raises(CodeError, match="must be shorter"):
        codes.check_prefix(GRID, BUILDING, what="grid")
    with pytest.raises(CodeError, match="all-zero grid"):
        codes.check_prefix(BUILDING, "44030700300300")


def test_format_round_trips() -> None:
    assert codes.format_code(44, 3, 7, 3, 3, 4, 42, 3) == EXAMPLE
    assert codes.format_code("44", "03", "07", "3", "003", "4", "42", "3") == EXAMPLE
    assert codes.format_code(np.int64(44), 3, 5) == "440305"
    assert codes.format_code(codes.parse(EXAMPLE)) == EXAMPLE
    for n in codes.LEVEL_LENGTHS.values():
        assert codes.format_code(codes.parse(EXAMPLE[:n])) == EXAMPLE[:n]
    assert codes.building_code(GRID, 42) == BUILDING
    assert codes.house_code(BUILDING, 3) == EXAMPLE
    assert codes.building_code(GRID, 99999) == GRID + "99999"


def test_format_rejects_overflow_and_nonsense() -> None:
    with pytest.raises(CodeError, match="building number 100000 does not fit the 5-digit building segment"):
        codes.building_code(GRID, 100000)
    with pytest.raises(CodeError, match="room number 1000000 does not fit"):
        codes.house_code(BUILDING, 1_000_000)
    with pytest.raises(CodeError, match="all-zero building segment"):
        codes.building_code(GRID, 0)
    with pytest.raises(CodeError, match="building number -1"):
        codes.building_code(GRID, -1)
    with pytest.raises(CodeError, match="grid code"):
        codes.building_code(BUILDING, 1)
    with pytest.raises(CodeError, match="street segment 1234 does not fit 3 digits"):
        codes.format_code(44, 3, 7, "1234")
    with pytest.raises(CodeError, match=r"3 \(district\) to 8 \(house\) segments, got 2"):
        codes.format_code(44, 3)
    with pytest.raises(CodeError, match="not an integer"):
        codes.format_code(44, 3, 7.0)  # type: ignore[arg-type]
    with pytest.raises(CodeError, match="not a Shenzhen code"):
        codes.format_code(44, 1, 7)


def test_next_free_number() -> None:
    assert codes.next_free_number([], GRID) == 1
    used = [
        BUILDING,  # 42
        GRID + "00007",
        EXAMPLE,  # a house in building 42
        GRID + "00100" + "000001",  # a house in building 100 whose building row may be missing
        "4403070030030500999",  # another grid: ignored
        "44030700300305",
    ]
    assert codes.next_free_number(used, GRID) == 101
    assert codes.next_free_number(iter(used), "44030700300306") == 1
    with pytest.raises(CodeError, match="no free building number"):
        codes.next_free_number([GRID + "99999"], GRID)
    with pytest.raises(CodeError, match="all-zero building segment"):
        codes.next_free_number([GRID + "00000"], GRID)
    with pytest.raises(CodeError, match="'44030700300304001' has 17 digits"):
        codes.next_free_number([GRID + "001"], GRID)


def test_validate_many_matches_validate() -> None:
    rng = random.Random(20240315)
    samples: list[object] = [EXAMPLE[:n] for n in codes.LEVEL_LENGTHS.values()]
    samples += [None, 42, "", "x", EXAMPLE + "\x00", "\x00" + EXAMPLE, "4403070030030400042000003 "]
    alphabet = "0000000001234567894403 A"
    for _ in range(5000):
        n = rng.choice([5, 6, 9, 12, 14, 18, 19, 25, 26])
        prefix = rng.choice(["4403", "4403", "4401", ""]) + rng.choice(["07", "03", "11", "12", "02", "0"])
        samples.append((prefix + "".join(rng.choice(alphabet) for _ in range(n)))[:n])
    for _ in range(5000):  # well-formed shapes whose segments are often all zero
        count = rng.randint(3, 8)
        values = [44, rng.choice([3, 3, 1]), rng.randint(1, 13)]
        values += [rng.choice([0, 1, 10 ** (w - 1), 10**w - 1]) for _, w in codes.SEGMENTS[3:count]]
        samples.append("".join(f"{v:0{w}d}" for v, (_, w) in zip(values, codes.SEGMENTS, strict=False)))
    for level in (None, *codes.LEVELS):
        expected: list[str | None] = []
        for code in samples:
            try:
                codes.validate(code, level)  # type: ignore[arg-type]
                expected.append(None)
            except CodeError as exc:
                expected.append(str(exc))
        assert codes.validate_many(samples, level) == expected  # type: ignore[arg-type]
    strings = [s for s in samples if isinstance(s, str) and not s.endswith("\x00")]
    assert codes.validate_many(np.array(strings), None) == codes.validate_many(strings, None)
    assert any(m is None for m in codes.validate_many(samples, None))  # type: ignore[arg-type]


def test_validate_many_bulk() -> None:
    n = 300_000  # spans several chunks
    numbers = np.arange(1, n + 1)
    buildings = [f"{GRID}{b % 99999 + 1:05d}" for b in numbers.tolist()]
    buildings[123_456] = GRID + "00000"
    result = codes.validate_many(buildings, "building")
    assert [i for i, m in enumerate(result) if m is not None] == [123_456]
    assert codes.validate_many([], "house") == []


def test_parcel_and_event_codes() -> None:
    assert codes.validate_parcel_code("T107-0091") == "T107-0091"
    for bad in ["t107-0091", "T1070091", "T107-091", "TT07-0091", "T107-0091\n", " T107-0091"]:
        with pytest.raises(CodeError, match="parcel code"):
            codes.validate_parcel_code(bad)
    assert codes.validate_event_code("EV20240315000042") == "EV20240315000042"
    for bad in ["EV2024031500004", "ev20240315000042", "EV20240315000042\n", "EV2024-315000042"]:
        with pytest.raises(CodeError, match="does not match"):
            codes.validate_event_code(bad)
    with pytest.raises(CodeError, match="impossible date 20240230"):
        codes.validate_event_code("EV20240230000001")
    # The exported patterns are SQL-mirrorable and agree with the Python checks on valid codes.
    assert codes.PARCEL_CODE_RE.pattern == codes.PARCEL_CODE_PATTERN == r"^[A-Z][0-9]{3}-[0-9]{4}$"
    assert codes.EVENT_CODE_PATTERN == r"^EV[0-9]{8}[0-9]{6}$"
    assert codes.BUILDING_CODE_RE.fullmatch(BUILDING)
    assert codes.HOUSE_CODE_RE.fullmatch(EXAMPLE)
    assert not codes.BUILDING_CODE_RE.fullmatch("4403120030030400042")
    assert not codes.HOUSE_CODE_RE.fullmatch(BUILDING)


# ---- another city ------------------------------------------------------------------------------------------
# 9901: an unassigned province number (GB/T 2260 uses 11–82), the code tests/test_ingest_osm.py gives Helsinki.
OTHER = "9901010020030400042000003"


def test_another_city_validates_against_its_own_prefix() -> None:
    assert codes.city_code() == "4403"  # the default deployment is Shenzhen
    with codes.city_scope("9901"):
        assert codes.city_code() == "9901"
        for n in codes.LEVEL_LENGTHS.values():
            assert codes.validate(OTHER[:n]) == OTHER[:n]
        assert codes.parse(OTHER).district == "01"
        assert codes.format_code(99, 1, 1, 2, 3, 4, 42, 3) == OTHER
        assert codes.building_code(OTHER[:14], 42) == OTHER[:19]
        assert codes.next_free_number([OTHER], OTHER[:14]) == 43
        assert codes.validate("990199") == "990199"  # no district list outside Shenzhen …
        with pytest.raises(CodeError, match="all-zero district segment"):  # … but 00 is no district
            codes.validate("990100")
        with pytest.raises(CodeError) as info:
            codes.validate(BUILDING)
        assert str(info.value) == (
            f"code {BUILDING} is not a code of this city: it starts with 4403, "
            "this deployment's codes start with 9901 (CIM_CITY_CODE)"
        )
        with pytest.raises(CodeError, match="all-zero street segment"):
            codes.validate("990101000")
        with codes.city_scope("4403"):  # scopes nest
            assert codes.validate(BUILDING) == BUILDING
        assert codes.city_code() == "9901"
    assert codes.city_code() == "4403"
    with pytest.raises(CodeError, match="990101 is not a Shenzhen code"):
        codes.validate("990101")


def test_another_city_bulk_validation_matches_validate() -> None:
    rng = random.Random(9901)
    samples: list[object] = [OTHER[:n] for n in codes.LEVEL_LENGTHS.values()] + [EXAMPLE, "990100", None, ""]
    for _ in range(3000):
        n = rng.choice([6, 9, 12, 14, 19, 25])
        prefix = rng.choice(["9901", "9901", "4403", "9902"]) + rng.choice(["01", "00", "07", "99"])
        samples.append((prefix + "".join(rng.choice("0000012349") for _ in range(n)))[:n])
    with codes.city_scope("9901"):
        for level in (None, "district", "building", "house"):
            expected: list[str | None] = []
            for code in samples:
                try:
                    codes.validate(code, level)  # type: ignore[arg-type]
                    expected.append(None)
                except CodeError as exc:
                    expected.append(str(exc))
            assert codes.validate_many(samples, level) == expected  # type: ignore[arg-type]
            assert any(m is None for m in expected) and any(m is not None for m in expected)


def test_city_code_patterns_and_settings() -> None:
    from pydantic import ValidationError

    from cim.settings import Settings

    assert codes.city_code_pattern("4403") == r"^4403(0[3-9]|1[01])[0-9]*$"  # 0001's domain, unchanged
    assert codes.city_code_pattern("9901") == r"^9901(0[1-9]|[1-9][0-9])[0-9]*$"
    pattern = re.compile(codes.city_code_pattern("9901"))
    assert pattern.fullmatch(OTHER) and not pattern.fullmatch(EXAMPLE) and not pattern.fullmatch("990100")
    for bad in ["440", "44033", "44a3", "0403", "4403\n", "'; --"]:
        with pytest.raises(CodeError, match="is not 4 digits"):
            codes.city_code_pattern(bad)
        with pytest.raises(CodeError, match="is not 4 digits"), codes.city_scope(bad):
            pass
        with pytest.raises(ValidationError, match="CIM_CITY_CODE must be 4 digits"):
            Settings(city_code=bad)
    assert Settings().city_code == "4403"
    assert Settings(city_code="9901").city_code == "9901"
