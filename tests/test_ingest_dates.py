"""Bare dates (YYYY-MM-DD, the usual ``valid_from``) take a fast path in ``Checker.timestamp``: numpy parses
the whole column at once. It must give what the general path (pandas' ISO 8601 parsing of every value,
bare dates at midnight +08:00) gives, value for value and reject for reject."""

from __future__ import annotations

import pandas as pd
import pytest

from ingest.prepare import Checker

DATES = ["2003-01-26", None, "1999-12-31", "", "2024-02-29", "0001-01-01", "9999-12-31", " 2010-06-30 "]
TIME = "2003-01-26T10:00:00+02:00"  # one value with a time and an offset: the whole column takes the general path


def checked(values: list[str | None], required: bool) -> tuple[list[object], dict[int, str]]:
    chk = Checker(pd.DataFrame({"t": pd.Series(values, dtype="str")}), "test")
    return chk.timestamp("t", required=required).tolist(), chk.rejects


@pytest.mark.parametrize("required", [False, True])
def test_bare_dates_give_what_the_general_path_gives(required: bool) -> None:
    fast, fast_rejects = checked(DATES, required)
    general, general_rejects = checked([*DATES, TIME], required)
    assert fast == general[:-1] and fast_rejects == general_rejects
    assert fast[0] == "2003-01-25T16:00:00.000000+00:00"  # midnight in Shenzhen is 16:00 UTC the day before
    assert fast[1] is None and fast[3] is None


@pytest.mark.parametrize("bad", ["2003-02-29", "１２３４-01-01"])
def test_a_bad_date_is_rejected_by_name(bad: str) -> None:
    values, rejects = checked(["2003-01-26", bad], required=False)
    assert values == ["2003-01-25T16:00:00.000000+00:00", None]
    assert rejects == {2: f"t {bad!r} is not an ISO 8601 date/time"}


@pytest.mark.parametrize("odd", ["0000-01-01", "2003-1-26", "2003-02-29"])
def test_odd_dates_read_as_the_general_path_reads_them(odd: str) -> None:
    values, rejects = checked(["2003-01-26", odd], required=False)
    general, general_rejects = checked(["2003-01-26", odd, TIME], required=False)
    assert values == general[:-1] and rejects == general_rejects
