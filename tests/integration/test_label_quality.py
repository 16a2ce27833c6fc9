"""Labels a ministry can trust, against the simulator's truth: precision and recall of the dropout
label overall and per group, on three seeds (`seeded_world`), and what a refused census file does.
Tests that write work on a copy of the session's world."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from features.calendar import SchoolCalendar, parse_round
from features.evaluation import MIN_GROUP_DROPOUT_STUDENTS, LabelQuality
from features.home import EwsHome
from features.pointintime.labels import EVIDENCE, labels_sql
from features.pointintime.pipeline import connect_warehouse
from simulator.evaluate import evaluate_labels
from tests.conftest import SmallWorld, copy_world

pytestmark = pytest.mark.integration

PRECISION, GROUP_PRECISION, RECALL = 0.97, 0.95, 0.99


@pytest.fixture(scope="module")
def label_quality(seeded_world: SmallWorld) -> LabelQuality:
    """The seeded world's labels against its truth (read-only; evaluated once per seed for this module)."""
    con = connect_warehouse(EwsHome(root=seeded_world.home))
    try:
        return evaluate_labels(con, seeded_world.truth)
    finally:
        con.close()


def test_labelled_dropouts_are_true_dropouts_overall_and_in_every_group_with_enough_students(
        label_quality: LabelQuality) -> None:
    q = label_quality
    tp = q.confusion["tp"]
    assert tp >= 50  # enough dropouts that one false one moves precision by at most 0.02
    assert q.precision is not None and q.precision >= PRECISION
    assert q.precision_lo is not None and q.precision_lo <= q.precision <= q.precision_hi  # the student-level interval
    assert q.recall is not None and q.recall >= RECALL
    judged = [(dim, g, x) for dim, groups in q.per_group.items() for g, x in groups.items() if x.judged]
    # groups big enough to judge exist even on the smallest seed (Thai children, the province, the poor);
    # on 1,000-student worlds a grade band may fall short of the minimum: reported, not judged
    assert {"nationality", "province", "poverty"} <= {dim for dim, _, _ in judged}
    assert all(x.labelled_dropout_students >= MIN_GROUP_DROPOUT_STUDENTS for _, _, x in judged)
    bad = [(dim, g, round(x.precision or 0, 3)) for dim, g, x in judged if (x.precision or 0) < GROUP_PRECISION]
    assert bad == []
    assert q.rows == sum(q.states.values()) and q.unknown_rows == q.states.get("unknown", 0)


# Traceable false dropouts (a path some delivered record shows: another school, EWE, completion)
# may cost a judged group at most this much precision; the rest is what no record can show.
TRACEABLE_LOSS = 0.03


def test_false_dropouts_are_mostly_children_no_record_shows_and_the_rest_costs_little_precision(
        label_quality: LabelQuality) -> None:
    q = label_quality
    # a move abroad or a death with no exits row: the simulator files none for some of them, and
    # nothing else records either path
    assert q.false_untraceable <= q.confusion["fp"]
    assert q.attainable_precision is not None and q.precision is not None
    assert q.attainable_precision - q.precision <= TRACEABLE_LOSS
    for dim, groups in q.per_group.items():
        for g, x in groups.items():
            if not x.judged:
                continue
            assert x.false_untraceable <= x.false_dropouts, (dim, g)
            assert x.attainable_precision is not None and x.precision is not None
            assert x.attainable_precision - x.precision <= TRACEABLE_LOSS, (dim, g, x.precision, x.attainable_precision)


def test_without_tzd_follow_ups_moves_abroad_read_as_dropouts_and_precision_falls(seeded_world: SmallWorld) -> None:
    # The evidence rule is what holds precision up: drop one source and the same tolerance fails.
    con = connect_warehouse(EwsHome(root=seeded_world.home))
    try:
        full = evaluate_labels(con, seeded_world.truth)
        blind = evaluate_labels(con, seeded_world.truth, evidence=tuple(e for e in EVIDENCE if e.source != "tzd_cases"))
    finally:
        con.close()
    assert blind.confusion["fp"] > full.confusion["fp"]
    assert blind.confusion["tp"] >= full.confusion["tp"]  # less evidence can only add dropout labels
    assert blind.precision is not None and blind.precision < PRECISION


def test_a_refused_school_census_leaves_its_pupils_unknown_never_dropouts(small_world: SmallWorld, tmp_path: Path) -> None:
    world = copy_world(small_world, tmp_path)
    cal, r = SchoolCalendar(), parse_round("2564-T2-mid")
    horizon = cal.next_census(r.academic_year, r.term)[2]
    home = EwsHome(root=world.home)
    con = connect_warehouse(home)
    try:
        cutoff = con.execute("SELECT max(delivered_on) FROM wh.deliveries").fetchone()[0]
        census = cal.census_date(r.academic_year, r.term).isoformat()
        sql = f"SELECT l.*, p.school_code FROM ({labels_sql(cal, r, cutoff)}) l JOIN wh.linked_dmc_census p " \
              f"ON p.student_key = l.student_key AND p.census_date = '{census}'::DATE"
        before = con.execute(sql).df().drop_duplicates("student_key").set_index("student_key")
        school = before["school_code"].value_counts().index[0]  # the biggest school refuses its file
    finally:
        con.close()
    con = connect_warehouse(home, read_only=False)
    try:
        con.execute("DELETE FROM wh.src_dmc_census WHERE census_date = ? AND school_code = ?", [horizon, school])
        after = con.execute(sql).df().drop_duplicates("student_key").set_index("student_key")
    finally:
        con.close()
    assert "unknown" not in set(before["label_state"])
    mine = after[after["school_code"] == school]
    assert len(mine) > 50
    assert (mine["label_state"] == "unknown").all()  # stayers and leavers alike: no biased subset
    assert mine["label_evidence"].str.contains(f"census of {horizon} from school {school} not received").all()
    # Pupils of other schools keep their label unless their own continuing row was at that school, or
    # they finish P6 or M3 at this year end in a tambon whose pupils that school took in (a move
    # there cannot be seen): those are unknown, and say why.
    others = after.index[after["school_code"] != school]
    moved_there = before.loc[others, "label_evidence"].str.contains(f"enrolled at school {school}")
    catchment = after.loc[others, "label_evidence"].fillna("").str.contains(
        f"not received from school {school}, where pupils from this tambon moved up after")
    changed = (before.loc[others, "label_state"] != after.loc[others, "label_state"]) & ~moved_there & ~catchment
    assert not changed.any()
    assert (after.loc[others][catchment]["label_state"] == "unknown").all()
    assert isinstance(cutoff, dt.date)


def test_labels_agree_with_the_row_by_row_reference_when_a_secondary_schools_year_end_census_is_missing(
        small_world: SmallWorld, tmp_path: Path) -> None:
    # 2564-T2-mid's horizon is the June census of the next school year, when P6 pupils enter M1: the
    # secondary school that took the most M1 entrants refuses its June file. Its catchment's P6
    # pupils cannot be told from dropouts, and the compiled labels must say so for exactly the
    # pupils the plain-Python reference (tests/support/pointintime_oracle.py) does.
    from tests.support.pointintime_oracle import Warehouse, label

    world = copy_world(small_world, tmp_path)
    cal, r = SchoolCalendar(), parse_round("2564-T2-mid")
    horizon = cal.next_census(r.academic_year, r.term)[2]
    con = connect_warehouse(EwsHome(root=world.home), read_only=False)
    try:
        cutoff = con.execute("SELECT max(delivered_on) FROM wh.deliveries").fetchone()[0]
        school = con.execute("SELECT school_code FROM wh.src_dmc_census WHERE grade = 'M1' AND census_date = ? "
                             "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1", [cal.census_date(r.academic_year, r.term)]
                             ).fetchone()[0]
        con.execute("DELETE FROM wh.src_dmc_census WHERE census_date = ? AND school_code = ?", [horizon, school])
        got = dict(con.execute(f"SELECT student_key, dropout FROM ({labels_sql(cal, r, cutoff)})").fetchall())
        evidence = [e for (e,) in con.execute(f"SELECT label_evidence FROM ({labels_sql(cal, r, cutoff)}) "
                                              "WHERE label_evidence LIKE '%moved up after%'").fetchall()]
        wh = Warehouse(con)
    finally:
        con.close()
    assert len(evidence) >= 10, "the catchment rule must act on pupils of other schools"
    assert {e.split("moved up after ")[1][:2] for e in evidence} <= {"P6", "M3"}
    want = {key: label(wh, cal, r, key, cutoff) for key in got}
    assert [k for k in got if got[k] != want[k]] == []


def test_the_label_error_benchmark_accounts_for_every_false_and_missed_dropout(
        small_world: SmallWorld, tmp_path: Path) -> None:
    import json

    from benchmarks.label_errors import main

    main(["--home", str(small_world.home), "--truth", str(small_world.truth), "--out-dir", str(tmp_path)])
    out = json.loads((tmp_path / "label_errors.json").read_text())
    fp, fn = out["overall"]["confusion"]["fp"], out["overall"]["confusion"]["fn"]
    assert fp > 0, "the ladder's world has false dropouts (untraceable moves abroad) to account for"
    assert sum(r["false_dropouts"] for r in out["per_round"]) == fp
    assert sum(r["missed_dropouts"] for r in out["per_round"]) == fn
    for key in ("exit_type", "omission", "grade"):
        assert sum(out["false_dropouts"][key].values()) == fp
        assert sum(sum(r[f"false_dropouts_by_{key}"].values()) for r in out["per_round"]) == fp
    assert "dropout" not in out["false_dropouts"]["exit_type"]  # a false dropout truly did something else
