"""The nameless-typo rule of identity resolution, on hand-made nodes (features.linkage.link)."""

from __future__ import annotations

import duckdb
import pytest

from features.linkage.link import _nameless_typo_edges

NAMED_ID = "1103700012345"


def _edges(orphans: list[tuple[str, str, str | None]], named: list[tuple[str, str, str | None]]) -> set[tuple[str, str]]:
    con = duckdb.connect()
    con.execute("""
        CREATE TEMP TABLE nodes (node_id VARCHAR, raw_id VARCHAR, school_code VARCHAR,
            first_name_norm VARCHAR, last_name_norm VARCHAR, birth_date DATE, n_records BIGINT)
    """)
    for node_id, raw_id, school in named:
        con.execute("INSERT INTO nodes VALUES (?, ?, ?, 'สมชาย', 'ใจดี', DATE '2012-05-01', 20)", [node_id, raw_id, school])
    for node_id, raw_id, school in orphans:
        con.execute("INSERT INTO nodes VALUES (?, ?, ?, NULL, NULL, NULL, 1)", [node_id, raw_id, school])
    _nameless_typo_edges(con)
    return set(con.execute("SELECT a, b FROM typo_edges").fetchall())


@pytest.mark.parametrize("typo, kind", [
    ("1103700012346", "a changed digit"),
    ("1103700021345", "two swapped digits"),
    ("110370012345", "a dropped digit"),
    ("11037000123455", "an added digit"),
])
def test_an_orphan_id_one_edit_from_a_named_id_at_the_same_school_joins_it(typo: str, kind: str) -> None:
    assert _edges([("o", typo, "S1")], [("n", NAMED_ID, "S1")]) == {("o", "n")}, kind


def test_an_orphan_id_one_edit_away_at_another_school_does_not_join() -> None:
    assert _edges([("o", "1103700012346", "S2")], [("n", NAMED_ID, "S1")]) == set()


def test_an_orphan_without_a_school_joins_the_one_named_id_anywhere() -> None:
    assert _edges([("o", "1103700012346", None)], [("n", NAMED_ID, "S9")]) == {("o", "n")}


def test_an_orphan_two_edits_away_does_not_join() -> None:
    assert _edges([("o", "1103700012366", "S1")], [("n", NAMED_ID, "S1")]) == set()


def test_an_orphan_with_two_candidates_joins_neither() -> None:
    named = [("n1", NAMED_ID, "S1"), ("n2", "1103700012347", "S1")]
    assert _edges([("o", "1103700012346", "S1")], named) == set()
