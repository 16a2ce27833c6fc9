"""The SQL forms of the ID rules (used by ingestion) give the same answers as the Python forms."""

from __future__ import annotations

import functools

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import ids
from simulator.samples import citizen_id


@functools.cache
def _con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def _sql_kinds(values: list[str | None]) -> list[str]:
    tbl = pa.table({"i": pa.array(range(len(values)), pa.int64()), "x": pa.array(values, pa.string())})
    rel = _con().from_arrow(tbl)
    sql = f"SELECT {ids.sql_id_kind(ids.sql_normalise_id('x'))} FROM rel ORDER BY i"
    return [r[0] for r in _con().sql(sql).fetchall()]


def _py_kind(v: str | None) -> str:
    return ids.id_kind(ids.normalise_id(v))


def test_check_digit_in_sql_equals_python_on_every_last_digit_of_many_ids() -> None:
    values = []
    for n in range(0, 10**11, 10**11 // 997):
        first12 = f"{(n % 9) + 1}{n:011d}"[:12]
        values += [first12 + str(d) for d in range(10)]
    assert _sql_kinds(values) == [_py_kind(v) for v in values]
    assert sum(k != "invalid" for k in _sql_kinds(values)) == len(values) // 10  # one valid digit each


def test_gcodes_dashes_spaces_and_missing_are_classified_alike() -> None:
    values = [None, "", "  ", "G123456789012", "g123456789012", "G12345678901", citizen_id(42),
              "1-1037-02071-81-1", " 0123456789012 ", "7" + citizen_id(3)[1:], "ABC", "123"]
    assert _sql_kinds(values) == [_py_kind(v) for v in values]


def test_a_no_break_space_or_other_unicode_space_inside_an_id_is_normalised_alike() -> None:
    values = ["1103702071811\u00a0", "\x0b", "\u2003G123456789012\u200b", "\ufeff1103702071811", "\x1c"]
    assert _sql_kinds(values) == [_py_kind(v) for v in values]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.none(),
    st.text(alphabet="0123456789G- ", max_size=16),
    st.from_regex(r"\A[0-9]{13}\Z"),
    st.from_regex(r"\AG[0-9]{12}\Z"),
    st.text(max_size=15),
), min_size=1, max_size=30))
def test_sql_and_python_id_kinds_agree_on_arbitrary_strings(values: list[str | None]) -> None:
    assert _sql_kinds(values) == [_py_kind(v) for v in values]


@pytest.mark.parametrize("code", ["500101", "100000", "501001", "5001", "05010a", "109999", "990101"])
def test_tambon_code_regex_of_ingestion_matches_python(code: str) -> None:
    from features.ingest.validate import _TAMBON_RE

    con = duckdb.connect()
    got = con.execute(f"SELECT regexp_full_match(?, '{_TAMBON_RE}')", [code]).fetchall()[0][0]
    assert got == ids.is_valid_tambon_code(code)
