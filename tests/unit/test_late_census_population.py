"""The population of a round whose census is late, on tiny warehouses built in the test.

Round 2565-T2-mid (as of 2023-01-20) is defined by the census of 2022-11-10. When that census has
not arrived by the as-of date, the pupils are those of the latest enrolment evidence: the census of
2022-06-10 less the exits known by the as-of date, plus the pupils seen since in attendance or marks
(`features.pointintime.compile.latest_evidence_steps`). Each pupil below is one rule.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from features.calendar import SchoolCalendar, parse_round
from features.pointintime.build import (
    EmptyRoundError, PopulationSource, features_sql, placement_sql, population_source, require_population,
)
from features.linkage.views import linked_select
from features.pointintime.compile import (
    LatestEvidence, RoundContext, latest_evidence_steps, population_steps, with_sql,
)

CAL = SchoolCalendar()
D = dt.date
SCHOOL_A, SCHOOL_B = "1000000001", "1000000002"
COLUMNS = ("student_key", "sid", "school_code", "grade", "room")


def _warehouse(census: list[tuple], attendance: list[tuple] = (), grades: list[tuple] = (),
               exits: list[tuple] = (), no_token: frozenset[int] = frozenset()) -> duckdb.DuckDBPyConnection:
    """The few columns the population steps read, as the warehouse holds them under the schema `wh`
    the feature SQL reads: `src_<source>` tables, the link's `token_keys` and `record_keys`, and
    the `linked_<source>` views over them (`features.linkage.views.linked_select`).

    census: (sid, census_date, known_at, academic_year, term, school_code, grade, room)
    attendance: (sid, year_month, known_at, school_code, school_days); grades: (sid, assessed_on,
    known_at, school_code); exits: (sid, exit_date, known_at). Pupil `sid` has the id token `t<sid>`
    and the key `k<sid>`; the census rows of the pupils in `no_token` carry no token and are linked
    by their record (`record_keys`), as rows without a citizen ID are.
    """
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS wh")
    meta = "id_token VARCHAR, delivery_id VARCHAR, source_file VARCHAR, source_line BIGINT, known_at DATE"
    con.execute(f"CREATE TABLE wh.src_dmc_census ({meta}, census_date DATE, "
                "academic_year INT, term INT, school_code VARCHAR, grade VARCHAR, room INT)")
    con.execute(f"CREATE TABLE wh.src_attendance ({meta}, year_month DATE, school_code VARCHAR, school_days INT)")
    con.execute(f"CREATE TABLE wh.src_grades ({meta}, assessed_on DATE, school_code VARCHAR)")
    con.execute(f"CREATE TABLE wh.src_exits ({meta}, exit_date DATE)")
    con.execute("CREATE TABLE wh.token_keys (id_token VARCHAR, student_key VARCHAR, sid BIGINT)")
    con.execute("CREATE TABLE wh.record_keys (delivery_id VARCHAR, source_file VARCHAR, source_line BIGINT, "
                "student_key VARCHAR, sid BIGINT)")
    sids: set[int] = set()
    for i, (sid, cd, k, y, t, s, g, room) in enumerate(census):
        token = None if sid in no_token else f"t{sid}"
        con.execute("INSERT INTO wh.src_dmc_census VALUES (?, ?, 'c.csv', ?, ?, ?, ?, ?, ?, ?, ?)",
                    [token, f"{k}_dmc", i, k, cd, y, t, s, g, room])
        if token is None:
            con.execute("INSERT INTO wh.record_keys VALUES (?, 'c.csv', ?, ?, ?)", [f"{k}_dmc", i, f"k{sid}", sid])
        sids.add(sid)
    for i, (sid, ym, k, s, days) in enumerate(attendance):
        con.execute("INSERT INTO wh.src_attendance VALUES (?, ?, 'a.csv', ?, ?, ?, ?, ?)",
                    [f"t{sid}", f"{k}_att", i, k, ym, s, days])
        sids.add(sid)
    for i, (sid, on, k, s) in enumerate(grades):
        con.execute("INSERT INTO wh.src_grades VALUES (?, ?, 'g.csv', ?, ?, ?, ?)", [f"t{sid}", f"{k}_gr", i, k, on, s])
        sids.add(sid)
    for i, (sid, on, k) in enumerate(exits):
        con.execute("INSERT INTO wh.src_exits VALUES (?, ?, 'x.csv', ?, ?, ?)", [f"t{sid}", f"{k}_ex", i, k, on])
        sids.add(sid)
    for sid in sorted(sids):
        con.execute("INSERT INTO wh.token_keys VALUES (?, ?, ?)", [f"t{sid}", f"k{sid}", sid])
    for source in ("dmc_census", "attendance", "grades", "exits"):
        con.execute(f"CREATE VIEW wh.linked_{source} AS {linked_select(source, 'wh')}")
    return con


def _population(con: duckdb.DuckDBPyConnection, round_id: str, base: dt.date | None) -> dict[int, tuple]:
    r = parse_round(round_id)
    as_of = CAL.as_of(r)
    ctx = RoundContext(as_of=as_of, params={"as_of": f"DATE '{as_of}'"})
    steps = population_steps(ctx, CAL.census_date(r.academic_year, r.term), COLUMNS,
                             LatestEvidence(base, r.academic_year))
    rows = con.execute(with_sql(steps, "SELECT sid, school_code, grade, room FROM pop")).fetchall()
    return {sid: (school, grade, room) for sid, school, grade, room in rows}


def test_a_late_term_2_census_leaves_last_census_less_known_exits_plus_pupils_seen_since() -> None:
    june, nov = D(2022, 6, 10), D(2022, 11, 10)
    con = _warehouse(
        census=[
            (1, june, D(2022, 6, 28), 2565, 1, SCHOOL_A, "P4", 1),  # stays
            (2, june, D(2022, 6, 28), 2565, 1, SCHOOL_A, "P4", 1),  # exit known by as-of: gone
            (3, june, D(2022, 6, 28), 2565, 1, SCHOOL_A, "M2", 2),  # exit known only after as-of: stays
            (4, D(2021, 11, 10), D(2021, 11, 28), 2564, 2, SCHOOL_A, "P3", 1),  # back in a later month at B
            (5, june, D(2022, 6, 28), 2565, 1, SCHOOL_A, "M3", 1),  # left A, seen at B after the exit
            (6, nov, D(2023, 1, 23), 2565, 2, SCHOOL_B, "P1", 1),  # only in the late census: not yet known
            (7, june, D(2022, 6, 28), 2565, 1, SCHOOL_A, "P5", 3),  # moved to B (seen there in December)
        ],
        attendance=[
            (1, D(2022, 12, 1), D(2023, 1, 10), SCHOOL_A, 20),
            (4, D(2022, 12, 1), D(2023, 1, 10), SCHOOL_B, 20),
            (5, D(2022, 11, 1), D(2022, 12, 10), SCHOOL_B, 18),
            (7, D(2022, 12, 1), D(2023, 1, 10), SCHOOL_B, 20),
            (8, D(2022, 12, 1), D(2023, 1, 10), SCHOOL_B, 20),  # never in any census: no grade, left out
            (1, D(2023, 1, 1), D(2023, 2, 10), SCHOOL_B, 20),  # known after as-of: changes nothing
        ],
        exits=[(2, D(2022, 9, 1), D(2022, 10, 1)), (3, D(2022, 12, 15), D(2023, 2, 1)), (5, D(2022, 10, 5), D(2022, 10, 20))],
    )
    pop = _population(con, "2565-T2-mid", june)
    assert set(pop) == {1, 3, 4, 5, 7}
    assert pop[1] == (SCHOOL_A, "P4", 1)  # the census row as it was: same school, grade and room
    assert pop[3] == (SCHOOL_A, "M2", 2)
    assert pop[4] == (SCHOOL_B, "P4", None)  # seen at B; one academic year on; no room known at B
    assert pop[5] == (SCHOOL_B, "M3", None)
    assert pop[7] == (SCHOOL_B, "P5", None)


def test_marks_recorded_after_the_census_also_show_a_pupil_enrolled() -> None:
    june = D(2022, 6, 10)
    con = _warehouse(
        census=[(1, D(2021, 11, 10), D(2021, 11, 28), 2564, 2, SCHOOL_A, "M1", 1)],
        grades=[(1, D(2022, 10, 10), D(2022, 10, 30), SCHOOL_A)],
    )
    assert _population(con, "2565-T2-mid", june) == {1: (SCHOOL_A, "M2", None)}


def test_a_late_term_1_census_moves_every_pupil_up_a_grade_and_lets_the_last_grade_complete() -> None:
    nov = D(2021, 11, 10)
    con = _warehouse(census=[
        (1, nov, D(2021, 11, 28), 2564, 2, SCHOOL_A, "P6", 1),
        (2, nov, D(2021, 11, 28), 2564, 2, SCHOOL_A, "M6", 1),  # completed school: not enrolled any more
        (3, nov, D(2021, 11, 28), 2564, 2, SCHOOL_A, "K1", 2),
    ])
    assert _population(con, "2565-T1-early", nov) == {1: (SCHOOL_A, "M1", None), 3: (SCHOOL_A, "K2", None)}


def test_with_no_census_known_at_all_the_population_is_empty_and_the_round_refuses_to_be_written() -> None:
    con = _warehouse(census=[], attendance=[(1, D(2022, 12, 1), D(2023, 1, 10), SCHOOL_A, 20)])
    r = parse_round("2565-T2-mid")
    source = population_source(con, CAL, r)
    assert source.census_late and source.population_as_of is None
    assert _population(con, r.round_id, None) == {}
    with pytest.raises(EmptyRoundError, match=r"round 2565-T2-mid has no students: its census of 2022-11-10 "
                                              r"was not received by 2023-01-20 and no earlier census"):
        require_population(r, source, 0)
    require_population(r, source, 1)  # a round with someone in it passes


def test_the_census_decides_when_any_of_its_rows_were_known_by_the_as_of_date() -> None:
    june, nov = D(2022, 6, 10), D(2022, 11, 10)
    con = _warehouse(census=[
        (1, june, D(2022, 6, 28), 2565, 1, SCHOOL_A, "P4", 1),
        (1, nov, D(2023, 1, 23), 2565, 2, SCHOOL_A, "P4", 1),  # three days after the mid round's as-of
    ])
    late = population_source(con, CAL, parse_round("2565-T2-mid"))
    assert late == PopulationSource(population_source="latest_evidence", census_date_expected=nov,
                                    population_as_of=june, as_of=D(2023, 1, 20))
    on_time = population_source(con, CAL, parse_round("2565-T1-mid"))
    assert on_time.population_source == "census" and on_time.caveat() is None


def test_a_round_with_its_census_compiles_exactly_the_query_it_always_had() -> None:
    r = parse_round("2565-T2-mid")
    census = CAL.census_date(r.academic_year, r.term)
    source = PopulationSource(population_source="census", census_date_expected=census, population_as_of=census,
                              as_of=CAL.as_of(r))
    assert features_sql(CAL, r, population=source) == features_sql(CAL, r)
    assert source.evidence(r) is None
    late = source.model_copy(update={"population_source": "latest_evidence", "population_as_of": D(2022, 6, 10)})
    assert features_sql(CAL, r, population=late) != features_sql(CAL, r)
    assert "pop_exits" in placement_sql(census, CAL.as_of(r), evidence=late.evidence(r))


def test_the_caveat_names_the_missing_census_and_the_population_date_in_english_and_thai() -> None:
    source = PopulationSource(population_source="latest_evidence", census_date_expected=D(2022, 11, 10),
                              population_as_of=D(2022, 6, 10), as_of=D(2023, 1, 20))
    caveat = source.caveat()
    assert caveat is not None
    assert caveat["en"].startswith("census of 2022-11-10 not received; population as of 2022-06-10")
    assert "ยังไม่ได้รับข้อมูลนักเรียน" in caveat["th"]
    assert "2022-11-10" in caveat["th"] and "2022-06-10" in caveat["th"]


# --- one school's census file missing from a census that arrived (per-school fallback) ------------

SCHOOL_C = "1000000003"


def _one_school_missing() -> duckdb.DuckDBPyConnection:
    """The census of 2022-11-10 arrived (known 2022-11-28) for school A; B's file did not; C closed.

    B (refused): 10 and 11 stay, 12 exited, 13 moved to A (in A's census). C (closed): 20 moved to A,
    21 exited, 22 left without an exit row: one of three unaccounted for, so C is not brought back.
    """
    june, nov = D(2022, 6, 10), D(2022, 11, 10)
    june_known, nov_known = D(2022, 6, 28), D(2022, 11, 28)
    census = [
        (1, june, june_known, 2565, 1, SCHOOL_A, "P4", 1), (1, nov, nov_known, 2565, 2, SCHOOL_A, "P4", 1),
        (2, june, june_known, 2565, 1, SCHOOL_A, "M1", 2), (2, nov, nov_known, 2565, 2, SCHOOL_A, "M1", 2),
        (10, june, june_known, 2565, 1, SCHOOL_B, "P2", 1),
        (11, june, june_known, 2565, 1, SCHOOL_B, "P6", 1),
        (12, june, june_known, 2565, 1, SCHOOL_B, "P3", 1),
        (13, june, june_known, 2565, 1, SCHOOL_B, "P5", 1), (13, nov, nov_known, 2565, 2, SCHOOL_A, "P5", 3),
        (20, june, june_known, 2565, 1, SCHOOL_C, "P1", 1), (20, nov, nov_known, 2565, 2, SCHOOL_A, "P1", 1),
        (21, june, june_known, 2565, 1, SCHOOL_C, "P1", 1),
        (22, june, june_known, 2565, 1, SCHOOL_C, "P2", 1),
    ]
    return _warehouse(census=census, exits=[(12, D(2022, 8, 1), D(2022, 8, 20)), (21, D(2022, 10, 1), D(2022, 10, 20))])


def _rows(con: duckdb.DuckDBPyConnection, steps: list[tuple[str, str]]) -> dict[int, tuple]:
    rows = con.execute(with_sql(steps, "SELECT sid, school_code, grade, room FROM pop")).fetchall()
    assert len(rows) == len({r[0] for r in rows}), "a pupil listed twice"
    return {sid: (school, grade, room) for sid, school, grade, room in rows}


def test_a_school_missing_from_an_arrived_census_lists_its_pupils_from_the_latest_evidence() -> None:
    con = _one_school_missing()
    r = parse_round("2565-T2-mid")
    census, as_of = CAL.census_date(r.academic_year, r.term), CAL.as_of(r)
    source = population_source(con, CAL, r)
    assert source.population_source == "census" and not source.census_late
    assert [f.school_code for f in source.school_fallbacks] == [SCHOOL_B]  # C closed: not resurrected
    fell = source.school_fallbacks[0]
    assert (fell.population_as_of, fell.students, fell.census_students) == (D(2022, 6, 10), 2, 4)

    ctx = RoundContext(as_of=as_of, params={"as_of": f"DATE '{as_of}'"})
    complete = _rows(con, population_steps(ctx, census, COLUMNS))
    pop = _rows(con, population_steps(ctx, census, COLUMNS, source.evidence(r)))
    assert {s: v for s, v in pop.items() if v[0] != SCHOOL_B} == complete  # other schools unchanged
    assert {s: v for s, v in pop.items() if v[0] == SCHOOL_B} == {10: (SCHOOL_B, "P2", 1), 11: (SCHOOL_B, "P6", 1)}
    assert pop[13] == (SCHOOL_A, "P5", 3)  # in A's census: counted there only
    assert not {20, 21, 22} & {s for s, v in pop.items() if v[0] == SCHOOL_C}
    # serving's placement reads the same population
    rooms = con.execute(placement_sql(census, as_of, evidence=source.evidence(r))).fetchall()
    assert {k for k, _ in rooms} == {f"k{s}" for s in pop}


def test_a_complete_census_has_no_fallback_and_keeps_its_query_and_manifest() -> None:
    con = _one_school_missing()
    con.execute(f"DELETE FROM wh.src_dmc_census WHERE school_code IN ('{SCHOOL_B}', '{SCHOOL_C}')")
    r = parse_round("2565-T2-mid")
    source = population_source(con, CAL, r)
    assert source.school_fallbacks == () and source.evidence(r) is None and source.caveat() is None
    assert "school_fallbacks" not in source.model_dump_json()
    assert features_sql(CAL, r, population=source) == features_sql(CAL, r)


def test_the_fallen_back_school_alone_carries_the_caveat_and_monitoring_names_it() -> None:
    from monitoring.quality import population_checks

    r = parse_round("2565-T2-mid")
    source = population_source(_one_school_missing(), CAL, r)
    own = source.school_caveat(SCHOOL_B)
    assert own is not None
    assert own["en"].startswith("census of 2022-11-10 not received from this school; population as of 2022-06-10")
    assert "ของโรงเรียนนี้" in own["th"] and "2022-11-10" in own["th"] and "2022-06-10" in own["th"]
    assert source.school_caveat(SCHOOL_A) is None and source.caveat(within={SCHOOL_A}) is None
    area = source.caveat(within={SCHOOL_A, SCHOOL_B})
    assert area is not None and SCHOOL_B in area["en"] and SCHOOL_B in area["th"] and SCHOOL_A not in area["en"]
    assert PopulationSource.model_validate_json(source.model_dump_json()) == source  # the manifest round-trips
    checks = population_checks(r.round_id, source)
    assert [(c.check, c.scope, c.level) for c in checks] == [("stale_population", f"round {r.round_id} school {SCHOOL_B}",
                                                              "drift")]
    assert "2 pupils" in checks[0].note


def test_a_missing_schools_fallback_reads_only_the_pupils_it_could_place_there_and_places_them_as_the_whole_history_would() -> None:
    june, nov = D(2022, 6, 10), D(2022, 11, 10)
    june_known, nov_known = D(2022, 6, 28), D(2022, 11, 28)
    census = [
        (1, june, june_known, 2565, 1, SCHOOL_A, "P4", 1), (1, nov, nov_known, 2565, 2, SCHOOL_A, "P4", 1),
        (10, june, june_known, 2565, 1, SCHOOL_B, "P2", 1),  # B's file did not arrive: stays at B
        (11, june, june_known, 2565, 1, SCHOOL_B, "P6", 2),  # the same, linked by its record (no id token)
        (14, june, june_known, 2565, 1, SCHOOL_A, "P3", 1),  # not in A's November census; seen at B since
        (15, june, june_known, 2565, 1, SCHOOL_B, "P5", 1),  # seen at A since, not in A's census: at neither
        (16, june, june_known, 2565, 1, SCHOOL_A, "M1", 1), (16, nov, nov_known, 2565, 2, SCHOOL_A, "M1", 1),
        (17, D(2021, 11, 10), D(2021, 11, 28), 2564, 2, SCHOOL_A, "P1", 1),  # an old pupil of A only
    ]
    attendance = [(14, D(2022, 9, 1), D(2022, 9, 20), SCHOOL_B, 20), (15, D(2022, 10, 1), D(2022, 10, 20), SCHOOL_A, 18),
                  (16, D(2022, 9, 1), D(2022, 9, 20), SCHOOL_A, 20)]
    con = _warehouse(census=census, attendance=attendance, no_token=frozenset({11}))
    r = parse_round("2565-T2-mid")
    census_date, as_of = CAL.census_date(r.academic_year, r.term), CAL.as_of(r)
    source = population_source(con, CAL, r)
    assert [f.school_code for f in source.school_fallbacks] == [SCHOOL_B]
    ev = source.evidence(r)
    assert ev is not None and ev.schools == (SCHOOL_B,)

    ctx = RoundContext(as_of=as_of, params={"as_of": f"DATE '{as_of}'"})
    pop = _rows(con, population_steps(ctx, census_date, COLUMNS, ev))
    assert pop == {1: (SCHOOL_A, "P4", 1), 16: (SCHOOL_A, "M1", 1), 10: (SCHOOL_B, "P2", 1),
                   11: (SCHOOL_B, "P6", 2), 14: (SCHOOL_B, "P3", None)}  # 14 moved: his room is not B's
    # only the pupils with a row at B (census up to the base, or evidence after it) are read
    placed = latest_evidence_steps(ctx, LatestEvidence(june, r.academic_year), COLUMNS, name="fb", placed_at=(SCHOOL_B,))
    assert {s for (s,) in con.execute(with_sql(placed, "SELECT sid FROM fb_students")).fetchall()} == {10, 11, 14, 15}
    # ... and they are placed exactly as the steps over every pupil's history place them
    whole = latest_evidence_steps(ctx, LatestEvidence(june, r.academic_year), COLUMNS, name="fb")
    at_b = f"SELECT sid, school_code, grade, room FROM fb WHERE school_code = '{SCHOOL_B}' ORDER BY sid"
    assert con.execute(with_sql(placed, at_b)).fetchall() == con.execute(with_sql(whole, at_b)).fetchall()
    assert len(con.execute(with_sql(whole, "SELECT * FROM fb")).fetchall()) > len(
        con.execute(with_sql(placed, "SELECT * FROM fb")).fetchall())  # the whole history holds more pupils
