"""Label states and their evidence, on a warehouse of nine pupils built in the test.

Round 2565-T1-mid: census 10 June 2022, horizon census 10 November 2022. School A delivers its
horizon census; school B's file never arrives (refused). Each pupil has one kind of evidence.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from features.calendar import SchoolCalendar, parse_round
from features.contract import ACTION_SOURCES, DELIVERY_SCHEDULE, SOURCES, contract_markdown, delivery_due
from features.pointintime.labels import (
    EVIDENCE, LABEL_STATES, M6_REMEDIABLE, label_mature_on, labels_known_on, labels_sql, paths_sql,
)

CAL = SchoolCalendar()
ROUND = parse_round("2565-T1-mid")
A, B, C = "1000000001", "1000000002", "2000000001"
D = dt.date

DELIVERIES = {  # delivery id -> (source, delivered on)
    "dmc_june": ("dmc_census", D(2022, 6, 28)),
    "dmc_nov": ("dmc_census", D(2022, 11, 28)),
    "exits_t1": ("exits", D(2022, 10, 28)),
    "ewe_sep": ("ewe_training", D(2022, 10, 20)),
    "other_nov": ("other_enrolment", D(2022, 12, 15)),
    "tzd_q4": ("tzd_cases", D(2023, 1, 15)),
    "grades_t1": ("grades", D(2022, 10, 25)),
}


def _warehouse(skip: tuple[str, ...] = ()) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA wh")
    con.execute("""CREATE TABLE wh.linked_dmc_census (
        student_key VARCHAR, sid BIGINT, delivery_id VARCHAR, source_file VARCHAR, source_line BIGINT,
        known_at DATE, census_date DATE, academic_year INT, term INT, school_code VARCHAR, id_token VARCHAR,
        id_kind VARCHAR, student_no VARCHAR, sex VARCHAR, birth_month DATE, grade VARCHAR, room INT,
        nationality VARCHAR, disability VARCHAR, tambon_code VARCHAR)""")
    june = [(f"s{i}", i, school) for i, school in
            ((1, A), (2, A), (3, A), (4, A), (5, A), (6, A), (7, B), (8, B), (9, A))]
    nov = [("s1", 1, A), ("s8", 8, A)]  # s8 moved from B to A
    for rows, census, delivery, known in ((june, D(2022, 6, 10), "dmc_june", D(2022, 6, 28)),
                                          (nov, D(2022, 11, 10), "dmc_nov", D(2022, 11, 28))):
        if delivery in skip:
            continue
        for i, (key, sid, school) in enumerate(rows):
            con.execute("INSERT INTO wh.linked_dmc_census VALUES (?, ?, ?, 'dmc_census.csv', ?, ?, ?, 2565, ?, ?, "
                        "NULL, NULL, NULL, 'F', DATE '2010-01-01', 'M1', 1, 'TH', 'none', '100101')",
                        [key, sid, delivery, i + 2, known, census, 1 if census.month == 6 else 2, school])
    con.execute("CREATE VIEW wh.src_dmc_census AS SELECT census_date, school_code, known_at, grade, tambon_code "
                "FROM wh.linked_dmc_census")
    con.execute("""CREATE TABLE wh.linked_exits AS SELECT * FROM (VALUES
        ('s3', DATE '2022-10-05', 'to_vocational', NULL, DATE '2022-10-28'),
        ('s6', DATE '2022-09-01', 'death', NULL, DATE '2022-10-28'),
        ('s2', DATE '2022-09-15', 'transfer_out', NULL, DATE '2022-10-28'))
        t(student_key, exit_date, exit_type, destination_school_code, known_at)""")
    con.execute(f"""CREATE TABLE wh.linked_other_enrolment AS SELECT * FROM (VALUES
        ('s4', DATE '2022-11-10', 'OVEC', '{C}', DATE '2022-12-15')) t(student_key, record_date, system, school_code, known_at)""")
    con.execute("""CREATE TABLE wh.linked_ewe_training AS SELECT * FROM (VALUES
        ('s9', DATE '2022-09-30', 'in_training', DATE '2022-10-20')) t(student_key, record_date, status, known_at)""")
    con.execute("""CREATE TABLE wh.linked_tzd_cases AS SELECT * FROM (VALUES
        ('s5', DATE '2022-11-20', 'moved_abroad', 'TZD58-A1', DATE '2023-01-15'),
        ('s2', DATE '2022-12-01', NULL, 'TZD58-000001', DATE '2023-01-15'))
        t(student_key, updated_on, outcome, case_id, known_at)""")
    # final marks of term 1 (not M6 term 2: no pupil here is in the year-end completion case)
    con.execute("""CREATE TABLE wh.linked_grades AS SELECT * FROM (VALUES
        ('s7', DATE '2022-10-06', 'final', 1, 0, DATE '2022-10-25')) t(student_key, assessed_on, assessment, term, n_mark_ms, known_at)""")
    for name in ("linked_exits", "linked_other_enrolment", "linked_ewe_training", "linked_tzd_cases", "linked_grades"):
        gone = [d for d in skip if DELIVERIES[d][0] == name.removeprefix("linked_")]
        for d in gone:
            con.execute(f"DELETE FROM wh.{name} WHERE known_at = ?", [DELIVERIES[d][1]])
    con.execute("CREATE TABLE wh.deliveries (delivery_id VARCHAR, delivered_on DATE)")
    con.execute("CREATE TABLE wh.ingested_files (delivery_id VARCHAR, source VARCHAR)")
    for d, (source, on) in DELIVERIES.items():
        if d not in skip:
            con.execute("INSERT INTO wh.deliveries VALUES (?, ?)", [d, on])
            con.execute("INSERT INTO wh.ingested_files VALUES (?, ?)", [d, source])
    return con


def _labels(con: duckdb.DuckDBPyConnection, cutoff: dt.date) -> dict[str, tuple[str, int | None, str]]:
    rows = con.execute(f"SELECT student_key, label_state, dropout, label_evidence FROM ({labels_sql(CAL, ROUND, cutoff)})"
                       ).fetchall()
    return {k: (s, d, e) for k, s, d, e in rows}


def test_each_kind_of_evidence_gives_its_state_once_every_source_has_arrived() -> None:
    labels = _labels(_warehouse(), D(2023, 1, 20))
    assert {k: v[0] for k, v in labels.items()} == {
        "s1": "continuing", "s2": "dropout", "s3": "moved", "s4": "moved", "s5": "moved", "s6": "died",
        "s7": "unknown", "s8": "unknown", "s9": "moved",
    }
    # the trainer's column: 1 dropout, 0 any other known path, NULL unknown
    assert {k: v[1] for k, v in labels.items()} == {
        "s1": 0, "s2": 1, "s3": 0, "s4": 0, "s5": 0, "s6": 0, "s7": None, "s8": None, "s9": 0}
    assert set(v[0] for v in labels.values()) <= set(LABEL_STATES)


def test_labels_read_only_the_census_columns_that_decide_them() -> None:
    # Every census column the population carried cost an arg_max field per pupil: at 8M pupils the
    # whole census row ran DuckDB out of 3 GB. A census without the pupil's details labels the same.
    whole = _labels(_warehouse(), D(2023, 1, 20))
    con = _warehouse()
    # (the home tambon is read: a P6 or M3 pupil may have moved into a school of its catchment whose
    # census is missing, test_a_year_end_move_into_a_school_whose_census_is_missing_...)
    details = ("source_file", "id_token", "id_kind", "student_no", "sex", "birth_month", "room", "nationality",
               "disability")
    con.execute("CREATE TABLE wh.census_bare AS SELECT * EXCLUDE (" + ", ".join(details) + ") FROM wh.linked_dmc_census")
    con.execute("DROP VIEW wh.src_dmc_census")
    con.execute("DROP TABLE wh.linked_dmc_census")
    con.execute("ALTER TABLE wh.census_bare RENAME TO linked_dmc_census")
    con.execute("CREATE VIEW wh.src_dmc_census AS SELECT census_date, school_code, known_at, grade, tambon_code "
                "FROM wh.linked_dmc_census")
    assert _labels(con, D(2023, 1, 20)) == whole


def test_each_label_names_the_rows_that_decided_it() -> None:
    labels = _labels(_warehouse(), D(2023, 1, 20))
    assert labels["s4"][2] == f"other_enrolment: enrolled in OVEC school {C} on 2022-11-10 (known 2022-12-15)"
    assert labels["s5"][2].startswith("tzd_cases: TZD case TZD58-A1 closed: moved abroad on 2022-11-20")
    assert labels["s6"][2].startswith("exits: exit row: death")
    # a dropout lists every source searched and when it arrived; an unknown says what is missing
    for source in ("dmc_census", "exits", "other_enrolment (delivered 2022-12-15)", "ewe_training", "tzd_cases"):
        assert source in labels["s2"][2]
    assert labels["s7"][2] == f"census of 2022-11-10 from school {B} not received"
    # s8 left school B for A: unknown like every pupil of B (B's stayers cannot be told from dropouts,
    # so labelling only its leavers would make B look dropout-free); the row it has is still shown
    assert labels["s8"][2].startswith(f"census of 2022-11-10 from school {B} not received; seen meanwhile: dmc_census")


def test_a_source_not_yet_delivered_leaves_every_pupil_of_the_round_unknown() -> None:
    # 1 December: other systems (due 15 December) and TZD (due 15 January) have not delivered.
    labels = _labels(_warehouse(), D(2022, 12, 1))
    assert labels["s2"][0] == "unknown" and labels["s2"][1] is None
    assert "other_enrolment (not delivered; overdue from 2022-12-22)" in labels["s2"][2]
    # pupils a known row shows moved or continuing wait too: labels of the round come all at once
    assert {v[0] for v in labels.values()} == {"unknown"}
    assert "seen meanwhile: exits: exit row: to_vocational" in labels["s3"][2]


def test_an_overdue_source_stops_holding_labels_back() -> None:
    # TZD's quarter never arrives; from 30 January (31 December + 30 days) labels stop waiting for it.
    con = _warehouse(skip=("tzd_q4",))
    assert _labels(con, D(2023, 1, 29))["s2"][0] == "unknown"
    late = _labels(con, D(2023, 1, 30))
    assert late["s2"][0] == "dropout" and "tzd_cases (overdue since 2023-01-30)" in late["s2"][2]
    assert late["s5"][0] == "dropout"  # without the TZD row nothing shows the move abroad


def test_the_day_labels_became_known_is_the_last_evidence_to_arrive() -> None:
    assert labels_known_on(_warehouse(), CAL, ROUND, "next_census", D(2023, 1, 20)) == D(2023, 1, 15)
    assert labels_known_on(_warehouse(), CAL, ROUND, "next_census", D(2022, 12, 20)) is None
    assert labels_known_on(_warehouse(skip=("tzd_q4",)), CAL, ROUND, "next_census", D(2023, 2, 1)) == D(2023, 1, 30)
    # planning without a warehouse: every source overdue
    assert label_mature_on(CAL, ROUND) == D(2023, 1, 30)


def test_every_label_evidence_source_and_monitored_source_has_a_delivery_schedule() -> None:
    for e in EVIDENCE:
        assert e.source in SOURCES
        assert e.schedule.overdue_days >= e.schedule.lag_days
    for d in DELIVERY_SCHEDULE:
        assert (d.source in SOURCES or d.source in ACTION_SOURCES) and d.overdue_days > d.lag_days
    with pytest.raises(KeyError, match="several delivery rhythms"):
        delivery_due("grades")
    assert "## Delivery schedule" in contract_markdown()


def test_the_simulator_delivers_each_census_on_the_contracts_typical_lag() -> None:
    from simulator.config import SimulationConfig
    from simulator.schedule import Schedule

    s = Schedule(SimulationConfig.small(students=200, years=1, seed=1))
    for source in ("dmc_census", "other_enrolment"):
        d = s.get((source, 2563, 1))
        assert d is not None
        assert d.nominal_on == CAL.census_date(2563, 1) + dt.timedelta(days=delivery_due(source).lag_days)


def test_an_m6_pupil_with_final_marks_and_no_exit_is_unknown_not_a_dropout_even_with_a_remediable_ms() -> None:
    # Round 2565-T2-mid (census 10 Nov 2022, horizon 10 June 2023), every source overdue by the cutoff.
    # m1 passed M6's final marks, no exits row, in no census: completed or left, nothing tells -> unknown.
    # m2 the same with a `completed` exits row -> moved. m3 had a subject มส (barred from the exam for
    # attendance): a มส is remedied by make-up study before the certificate, so it is no evidence
    # against completion -> unknown too (issue 11; it was read as dropout). m4 passed but is in the
    # June census (repeating) -> continuing. m5 is M5 (no completion at stake) -> dropout. m6 had a
    # มส and its school filed a dropout exits row -> dropout (the row says so). m7 is M6 with term-1
    # final marks only (left during term 2, no term-2 marks) -> dropout.
    con = _warehouse()
    for t in ("linked_dmc_census", "linked_exits", "linked_grades", "linked_other_enrolment",
              "linked_ewe_training", "linked_tzd_cases"):
        con.execute(f"DELETE FROM wh.{t}")
    for i, (key, census, grade) in enumerate([*((f"m{k}", D(2022, 11, 10), "M6") for k in (1, 2, 3, 4, 6, 7)),
                                              ("m5", D(2022, 11, 10), "M5"), ("m4", D(2023, 6, 10), "M6")]):
        con.execute("INSERT INTO wh.linked_dmc_census VALUES (?, ?, 'dmc', 'dmc_census.csv', ?, ?, ?, 2565, ?, ?, "
                    "NULL, NULL, NULL, 'F', DATE '2005-01-01', ?, 1, 'TH', 'none', '100101')",
                    [key, i, i + 2, census + dt.timedelta(days=18), census, 2 if census.month == 11 else 1, A, grade])
    con.execute("INSERT INTO wh.linked_exits VALUES ('m2', DATE '2023-03-20', 'completed', NULL, DATE '2023-04-10')")
    con.execute("INSERT INTO wh.linked_exits VALUES ('m6', DATE '2023-03-25', 'dropout', NULL, DATE '2023-04-10')")
    for key, ms in (("m1", 0), ("m2", 0), ("m3", 1), ("m4", 0), ("m5", 0), ("m6", 2)):
        con.execute("INSERT INTO wh.linked_grades VALUES (?, DATE '2023-03-15', 'final', 2, ?, DATE '2023-04-05')", [key, ms])
    con.execute("INSERT INTO wh.linked_grades VALUES ('m7', DATE '2022-10-06', 'final', 1, 0, DATE '2022-10-25')")
    rows = con.execute(f"SELECT student_key, label_state, dropout, label_evidence FROM "
                       f"({labels_sql(CAL, parse_round('2565-T2-mid'), D(2023, 12, 31))})").fetchall()
    labels = {k: (s, d, e) for k, s, d, e in rows}
    assert {k: v[:2] for k, v in labels.items()} == {
        "m1": ("unknown", None), "m2": ("moved", 0), "m3": ("unknown", None), "m4": ("continuing", 0),
        "m5": ("dropout", 1), "m6": ("dropout", 1), "m7": ("dropout", 1)}
    for key in ("m1", "m3"):
        assert "final marks of M6 term 2 reported" in labels[key][2] and "no exits row" in labels[key][2]
    # the same declaration tells the not-found list which untold pupil it still searches for: the มส one
    untold = con.execute(f"SELECT student_key, e.outcome FROM ({paths_sql(CAL, parse_round('2565-T2-mid'), D(2023, 12, 31))}) "
                         "WHERE e.source = 'grades' ORDER BY 1").fetchall()
    assert untold == [("m1", "completion_untold"), ("m3", M6_REMEDIABLE)]
    # the rule reads only rows known by the cutoff: marks that became known after it do not count
    con.execute("UPDATE wh.linked_grades SET known_at = DATE '2024-01-05' WHERE student_key = 'm1'")
    late = con.execute(f"SELECT label_state FROM ({labels_sql(CAL, parse_round('2565-T2-mid'), D(2023, 12, 31))}) "
                       f"WHERE student_key = 'm1'").fetchone()
    assert late == ("dropout",)


def _year_end_labels(round_id: str, s_delivers: bool) -> dict[str, tuple[str, str]]:
    """Pupils of a primary school A and an extended school E at R's census; a secondary school S took
    M1 entrants from tambon 100101 and M4 entrants from tambon 100303 (its pupils at R's census).
    At the horizon census A and E deliver; S delivers only if `s_delivers`. Every other source is
    overdue by the cutoff and silent, so a pupil with no census row at the horizon has no path."""
    r = parse_round(round_id)
    census, horizon = CAL.census_date(r.academic_year, r.term), CAL.next_census(r.academic_year, r.term)[2]
    a, e, s = "1000000011", "1000000012", "1000000013"
    con = _warehouse()
    for t in ("linked_dmc_census", "linked_exits", "linked_grades", "linked_other_enrolment",
              "linked_ewe_training", "linked_tzd_cases"):
        con.execute(f"DELETE FROM wh.{t}")
    rows = [  # key, census date, school, grade, home tambon
        ("q1", census, a, "P6", "100101"), ("q2", census, a, "P6", "100202"), ("q3", census, a, "P6", "100101"),
        ("q4", census, a, "P5", "100101"), ("q5", census, e, "M3", "100101"), ("q6", census, e, "M3", "100303"),
        ("q7", census, a, "P6", "100102"),  # S's amphoe (1001), a tambon it took no entrant from
        ("a0", census, a, "P3", "100101"), ("e0", census, e, "P3", "100101"),
        ("s1", census, s, "M1", "100101"), ("s4", census, s, "M4", "100303"),
        ("a0", horizon, a, "P3", "100101"), ("e0", horizon, e, "P3", "100101"), ("q3", horizon, e, "P6", "100101"),
        *((("s1", horizon, s, "M1", "100101"),) if s_delivers else ()),
    ]
    for i, (key, on, school, grade, tambon) in enumerate(rows):
        con.execute("INSERT INTO wh.linked_dmc_census VALUES (?, ?, 'dmc', 'dmc_census.csv', ?, ?, ?, ?, ?, ?, "
                    "NULL, NULL, NULL, 'F', DATE '2010-01-01', ?, 1, 'TH', 'none', ?)",
                    [key, i, i + 2, on + dt.timedelta(days=18), on, r.academic_year, 1 if on.month == 6 else 2,
                     school, grade, tambon])
    got = con.execute(f"SELECT student_key, label_state, label_evidence FROM ({labels_sql(CAL, r, D(2024, 6, 30))})"
                      ).fetchall()
    return {k: (st, ev) for k, st, ev in got if not k.endswith("0")}


def test_a_year_end_move_into_a_school_whose_census_is_missing_leaves_the_pupils_of_its_catchment_unknown() -> None:
    # 2565-T2-mid: census 10 November 2022, horizon 10 June 2023, when P6 pupils enter M1 and M3
    # pupils M4, often at a new school. S's June file never arrives: a P6 pupil from a tambon S took
    # M1 entrants from may be on it, so its silence is no dropout (on a 100,000-pupil world 284 of the
    # 3,649 dropout labels of one round were such pupils, benchmarks.label_errors).
    labels = _year_end_labels("2565-T2-mid", s_delivers=False)
    assert {k: v[0] for k, v in labels.items()} == {
        "q1": "unknown", "q2": "dropout", "q3": "unknown", "q4": "dropout", "q5": "dropout", "q6": "unknown",
        "q7": "dropout", "s1": "unknown", "s4": "unknown"}
    assert ("census of 2023-06-10 not received from school 1000000013, where pupils from this tambon moved up "
            "after P6: a move there at the end of the year cannot be seen") in labels["q1"][1]
    assert "moved up after M3" in labels["q6"][1]
    # q3 was found at E: unknown all the same, or the tambon's known P6 labels would all be "continuing"
    assert "seen meanwhile: dmc_census: enrolled at school 1000000012" in labels["q3"][1]
    # S's own pupils: unknown for their own school's census, not for a move
    assert labels["s1"][1] == "census of 2023-06-10 from school 1000000013 not received"
    # once S's census arrives the same pupils get their paths
    delivered = _year_end_labels("2565-T2-mid", s_delivers=True)
    assert {k: v[0] for k, v in delivered.items()} == {
        "q1": "dropout", "q2": "dropout", "q3": "continuing", "q4": "dropout", "q5": "dropout", "q6": "dropout",
        "q7": "dropout", "s1": "continuing", "s4": "dropout"}


def test_a_missing_census_within_the_school_year_hides_no_year_end_move() -> None:
    # 2565-T1-mid: horizon 10 November 2022, in the same school year: nobody moves up, so a P6
    # pupil's silence is a dropout even though S's November file is missing.
    labels = _year_end_labels("2565-T1-mid", s_delivers=False)
    assert {k: v[0] for k, v in labels.items()} == {
        "q1": "dropout", "q2": "dropout", "q3": "continuing", "q4": "dropout", "q5": "dropout", "q6": "dropout",
        "q7": "dropout", "s1": "unknown", "s4": "unknown"}
