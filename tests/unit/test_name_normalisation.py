"""Thai name normalisation for linkage: Python and SQL forms agree."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from features.linkage.normalise import normalise_name, sql_normalise_name

THAI = "".join(chr(c) for c in range(0x0E01, 0x0E5C))


def test_spelling_variants_a_teacher_reads_as_one_name_normalise_to_one_form() -> None:
    assert normalise_name("สมศักดิ์") == normalise_name("สมสักดิ")
    assert normalise_name("ณัฐธิดา") == normalise_name("นัฐทิดา")
    assert normalise_name("เด็กหญิงกุลณัฐ") == normalise_name("กุรนัฐ")
    assert normalise_name("สม ชาย") == normalise_name("สมชาย")


def test_different_names_stay_different() -> None:
    assert normalise_name("สมชาย") != normalise_name("สมหญิง")


def test_a_name_that_is_only_a_prefix_is_kept_and_empty_is_none() -> None:
    assert normalise_name("นาย") == "นาย"
    assert normalise_name("  ") is None and normalise_name(None) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=THAI + " abcXYZ.", max_size=14), min_size=1, max_size=30))
def test_the_sql_form_normalises_exactly_as_the_python_form(names: list[str]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE n (i INTEGER, v VARCHAR)")
    con.executemany("INSERT INTO n VALUES (?, ?)", list(enumerate(names)))
    got = dict(con.execute(f"SELECT i, {sql_normalise_name('v')} FROM n").fetchall())
    assert got == {i: normalise_name(v) for i, v in enumerate(names)}
