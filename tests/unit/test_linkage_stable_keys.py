"""The key anchor rule of identity resolution (features.linkage.link), on hand-made records:
a key published for a round stays when a later delivery adds an ID to the same child, and a
warehouse too young to fit the matching model is linked without it instead of crashing."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from features.linkage.link import LinkConfig, _assign_keys, _run_splink, node_order_sql

SECRET = b"k" * 32
D = dt.date.fromisoformat

# (node_id, cluster_id, id_token, id_kind, known_at, record without ID: (delivery, file, line))
Record = tuple[str, str, str | None, str | None, str, tuple[str, str, int] | None]


def _keys(records: list[Record], published: dict[str, str] | None = None, keep: bool = True) -> dict[str, str]:
    """student_key per node for the given records and clusters; `published` holds the previous
    run's key per id token, or per row without one (its node id)."""
    con = duckdb.connect()
    if published is not None:
        con.execute("ATTACH ':memory:' AS wh")
        con.execute("CREATE TABLE wh.token_keys (id_token VARCHAR, student_key VARCHAR)")
        con.execute("""CREATE TABLE wh.record_keys (delivery_id VARCHAR, source_file VARCHAR,
                       source_line BIGINT, student_key VARCHAR)""")
        rows = {r[0]: r for r in records}
        for node_id, k in published.items():
            token, row = rows[node_id][2], rows[node_id][5]
            if token is not None:
                con.execute("INSERT INTO wh.token_keys VALUES (?, ?)", [token, k])
            else:
                con.execute("INSERT INTO wh.record_keys VALUES (?, ?, ?, ?)", [*row, k])  # type: ignore[misc]
    con.execute("""
        CREATE TEMP TABLE records_n (node_id VARCHAR, id_token VARCHAR, id_kind VARCHAR, known_at DATE,
            delivery_id VARCHAR, source_file VARCHAR, source_line BIGINT)
    """)
    con.execute("CREATE TEMP TABLE clusters (node_id VARCHAR, cluster_id VARCHAR, in_review BOOLEAN)")
    con.execute("CREATE TEMP TABLE nodes (node_id VARCHAR, id_token VARCHAR)")
    for node_id, cluster_id, token, kind, known_at, row in records:
        delivery, file, line = row or (None, None, None)
        con.execute("INSERT INTO records_n VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [node_id, token, kind, D(known_at), delivery, file, line])
    for node_id, cluster_id in {(r[0], r[1]) for r in records}:
        con.execute("INSERT INTO clusters VALUES (?, ?, false)", [node_id, cluster_id])
        con.execute("INSERT INTO nodes SELECT ?, max(id_token) FROM records_n WHERE node_id = ?", [node_id, node_id])
    # What the records-and-nodes step leaves for the keys: each node's earliest record, and the rows
    # without an ID with the node each joined.
    con.execute(f"CREATE TEMP TABLE node_order AS {node_order_sql('records_n')}")
    con.execute("CREATE TEMP TABLE loose AS SELECT * FROM records_n WHERE id_token IS NULL")
    _assign_keys(con, SECRET, keep)
    return dict(con.execute("SELECT node_id, student_key FROM node_keys").fetchall())


GCODE = ("T:g", "c", "g", "gcode", "2020-06-28", None)
LATER_ID = ("T:n", "c", "n", "non_thai", "2021-10-10", None)


def test_a_g_code_child_who_later_receives_an_id_keeps_the_key_published_before() -> None:
    before = _keys([GCODE])
    after = _keys([GCODE, LATER_ID])
    assert after["T:g"] == after["T:n"] == before["T:g"]


def test_the_later_id_wins_nothing_even_when_it_has_more_rows_and_a_better_kind() -> None:
    # An invalid (mistyped) ID known first anchors the child; a valid ID arriving later does not.
    typo = ("T:x", "c", "x", "invalid", "2020-06-28", None)
    valid_rows = [("T:v", "c", "v", "thai", f"2021-0{m}-10", None) for m in range(1, 10)]
    assert _keys([typo, *valid_rows])["T:v"] == _keys([typo])["T:x"]


def test_a_row_without_an_id_known_first_anchors_its_cluster() -> None:
    # A census row without an ID published on its own, later tied to the child's token.
    row = ("R:d1/f#7", "c", None, None, "2020-06-28", ("d1", "f", 7))
    before = _keys([row])
    after = _keys([row, ("T:g", "c", "g", "gcode", "2020-11-28", None)])
    assert after["T:g"] == after["R:d1/f#7"] == before["R:d1/f#7"]


def test_when_two_clusters_are_found_to_be_one_child_the_older_key_survives() -> None:
    older, younger = ("T:a", "a", "a", "thai", "2021-06-28", None), ("T:b", "b", "b", "thai", "2020-06-28", None)
    apart = _keys([older, younger])
    assert apart["T:a"] != apart["T:b"]
    merged = _keys([(*older[:1], "m", *older[2:]), (*younger[:1], "m", *younger[2:])])
    assert merged["T:a"] == merged["T:b"] == apart["T:b"]  # b was known first


def test_a_link_the_previous_run_made_is_kept_when_a_later_run_would_not_make_it() -> None:
    # A mistyped G-code linked to its child when it arrived; later deliveries move the matching
    # model and this run puts it in a cluster of its own. Its rows keep the child's key.
    child, typo = ("T:g", "c", "g", "gcode", "2020-06-28", None), ("T:x", "c", "x", "invalid", "2020-11-10", None)
    first = _keys([child, typo])
    later = _keys([child, (typo[0], "alone", *typo[2:])], published=first)
    assert later["T:x"] == later["T:g"] == first["T:g"]


def test_a_relink_re_decides_what_was_published() -> None:
    child, typo = ("T:g", "c", "g", "gcode", "2020-06-28", None), ("T:x", "c", "x", "invalid", "2020-11-10", None)
    first = _keys([child, typo])
    relinked = _keys([child, (typo[0], "alone", *typo[2:])], published=first, keep=False)
    assert relinked["T:x"] != relinked["T:g"] == first["T:g"]


def test_a_new_identity_joins_the_key_of_the_earliest_published_identity_in_its_cluster() -> None:
    a, b = ("T:a", "a", "a", "thai", "2021-06-28", None), ("T:b", "b", "b", "thai", "2020-06-28", None)
    first = _keys([a, b])
    # This run finds a and b to be one child, with a new row without an ID: a and b stay apart
    # (both keys were published), the new row joins b's key (b was known first).
    row = ("R:d/f#3", "m", None, None, "2022-01-10", ("d", "f", 3))
    later = _keys([(a[0], "m", *a[2:]), (b[0], "m", *b[2:]), row], published=first)
    assert later["T:a"] == first["T:a"] != later["T:b"] == first["T:b"] == later["R:d/f#3"]


@pytest.mark.parametrize("order", [1, -1])
def test_same_day_ties_prefer_a_valid_id_then_an_invalid_one_then_no_id_whatever_the_row_order(order: int) -> None:
    valid = ("T:v", "c", "v", "gcode", "2020-06-28", None)
    same_day = [
        ("R:d/f#1", "c", None, None, "2020-06-28", ("d", "f", 1)),
        ("T:x", "c", "x", "invalid", "2020-06-28", None),
        valid,
    ][::order]
    assert _keys(same_day)["R:d/f#1"] == _keys([valid])["T:v"]


def test_the_anchor_of_a_token_is_the_one_published_before_this_rule() -> None:
    # A child whose only identity is a valid ID keeps the key earlier runs gave it: HMAC(token).
    from features.pseudonym import student_keys

    assert _keys([GCODE])["T:g"] == student_keys(SECRET, ["g"])[0]
    assert _keys([("T:x", "c", "x", "invalid", "2020-06-28", None)])["T:x"] == student_keys(SECRET, ["node:T:x"])[0]


def test_a_warehouse_with_no_two_agreeing_records_is_linked_without_the_probabilistic_model() -> None:
    # The first census alone: every child once. Splink's EM would fail in log(0).
    con = duckdb.connect()
    con.execute("""
        CREATE TEMP TABLE nodes AS SELECT * FROM (VALUES
            ('T:a', '1103700012345', 'thai', 'somchai', 'jaidee', DATE '2012-05-01', 'M', '100101', 'S1'),
            ('T:b', 'G12345678', 'gcode', 'malee', 'sukjai', DATE '2013-01-02', 'F', '100101', 'S1'),
            ('T:c', '1103700054321', 'thai', 'somchai', 'jaidee', DATE '2011-03-04', 'M', '100102', 'S2'))
        AS t(node_id, raw_id, id_kind, first_name_norm, last_name_norm, birth_date, sex, tambon_code, school_code)
    """)
    n_pairs, model = _run_splink(con, LinkConfig())
    assert n_pairs == 0
    assert "agree on name and birth date" in str(model["skipped"])
    assert con.execute("SELECT count(*) FROM pairs").fetchone() == (0,)
