"""A bad field is not a lost pupil: the contract's per-column roles, and what ingestion does with a
row whose identity and enrolment are valid but whose detail is impossible (set to NULL, logged,
row kept) against a row that cannot say who or where (quarantined, with today's reason)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from features.contract import REGISTRY_SOURCES, SOURCES, contract_markdown, other_identity, rule_on_invalid
from features.home import EwsHome
from features.ingest.pipeline import FileReport, ingest_path
from features.ingest.warehouse import connect
from simulator.samples import citizen_id, registry_rows, valid_row, write_delivery

ID_REASON = ("student_id: not a student ID (13 digits, or G and 12 digits; letters or more than 20 "
             "characters cannot be repaired); value withheld: personal data; see the file at this line")
# The birth date is personal data: a reason never shows it (the census date is not).
AGE_REASON = ("birth date gives an age outside 2-25 years on the census date "
              "(birth_date withheld, census_date 2025-06-10)")


# -- the contract -----------------------------------------------------------------------------


def test_what_says_who_where_and_when_is_never_set_to_null() -> None:
    for s in SOURCES.values():
        strict = {"first_name", "last_name", "prefix", "student_no", "school_code"}
        if s.describes:
            strict.add(s.describes)
        for c in s.columns:
            if c.name == "student_id":  # only where the row names the child another way
                assert c.on_invalid == "null_if_named"
            elif c.name in strict or c.identity or s.name in REGISTRY_SOURCES:
                assert c.on_invalid == "quarantine", (s.name, c.name)
    assert other_identity(SOURCES["welfare_links"]) == ()
    assert other_identity(SOURCES["attendance"]) == (("student_no",),)
    assert other_identity(SOURCES["dmc_census"]) == (("first_name", "last_name"), ("student_no",))


def test_only_the_named_details_are_nullable() -> None:
    nullable = {(s.name, c.name, c.on_invalid) for s in SOURCES.values() for c in s.columns if c.on_invalid != "quarantine"}
    assert {(s, c) for s, c, how in nullable if how == "null"} == {
        ("dmc_census", "room"), ("dmc_census", "nationality"), ("dmc_census", "disability"),
        ("dmc_census", "tambon_code"), ("grades", "gpa"), ("cct_screening", "household_size"),
        ("cct_screening", "caretaker"), ("cct_screening", "travel_minutes"), ("cct_screening", "travel_mode"),
        ("exits", "reason_code"), ("exits", "destination_school_code"),
    }
    # Birth date and sex only help say who; every source that has them has a student ID too.
    assert {c for _, c, how in nullable if how == "null_if_id"} == {"birth_date", "sex"}
    assert {c for _, c, how in nullable if how == "null_if_named"} == {"student_id"}
    assert all("student_id" in SOURCES[s].column_names for s, _, how in nullable if how == "null_if_id")


def test_row_rules_blame_existing_columns_and_counts_are_never_nulled() -> None:
    how = {(s.name, r.name): rule_on_invalid(s, r) for s in SOURCES.values() for r in s.row_rules}
    for s in SOURCES.values():
        for r in s.row_rules:
            assert set(r.columns) <= set(s.column_names)
    assert how == {
        ("areas", "amphoe_in_tambon"): "quarantine", ("areas", "province_in_tambon"): "quarantine",
        ("dmc_census", "age_plausible"): "null_if_id",
        ("attendance", "days_add_up"): "quarantine", ("grades", "marks_within_subjects"): "quarantine",
    }


def test_contract_md_is_the_rendered_contract() -> None:
    text = (Path(__file__).parents[2] / "features" / "CONTRACT.md").read_text(encoding="utf-8")
    assert text.strip() == contract_markdown().strip()
    assert "| `room` | ห้อง | Room number | required; whole number; ≥ 1; ≤ 30 | detail: set to NULL (logged); row kept |" in text


# -- ingestion --------------------------------------------------------------------------------


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EwsHome:
    monkeypatch.delenv("EWS_PSEUDONYM_KEY_FILE", raising=False)
    h = EwsHome(root=tmp_path / "home")
    assert ingest_path(write_delivery(tmp_path / "reg", "reg-1", registry_rows(), delivered_on="2025-01-01"), h).ok
    return h


def _ingest(tmp_path: Path, home: EwsHome, files: dict[str, list[dict[str, str]]]) -> FileReport:
    rep = ingest_path(write_delivery(tmp_path / "d", "d-1", files), home)
    assert rep.deliveries[0].status == "ingested"
    return rep.deliveries[0].files[0]


def _rows(home: EwsHome, sql: str) -> list[tuple]:
    con = connect(home)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_one_impossible_detail_is_set_to_null_and_the_pupil_stays_in_the_census(tmp_path: Path, home: EwsHome) -> None:
    rows = [valid_row("dmc_census", i) for i in range(3)]
    rows[1]["room"] = "99"
    f = _ingest(tmp_path, home, {"dmc_census": rows})
    assert (f.received, f.accepted, f.quarantined, f.repaired) == (3, 3, 0, 1)
    got = _rows(home, "SELECT source_line, room, census_date::VARCHAR, id_kind FROM src_dmc_census ORDER BY 1")
    assert got == [(2, 1, "2025-06-10", "thai"), (3, None, "2025-06-10", "thai"), (4, 1, "2025-06-10", "thai")]
    assert _rows(home, "SELECT source_file, source_line, column_name, raw_value, repaired_value, rule FROM repairs") == [
        ("dmc_census.csv", 3, "room", "99", None, "null_range")]
    assert _rows(home, "SELECT count(*) FROM quarantine")[0][0] == 0
    assert [(r.column_name, r.rule, r.count, r.example) for r in f.top_repairs] == [
        ("room", "null_range", 1, "room: 99 is above the maximum 30")]
    with open(home.quarantine_report("d-1"), encoding="utf-8") as fh:
        report = list(csv.DictReader(fh))
    assert report == [{"source_file": "dmc_census.csv", "source_line": "3", "column_name": "room", "rule": "null_range",
                       "reason": "room: 99 is above the maximum 30", "value": "99",
                       "action": "value set to NULL; row kept"}]


def test_a_row_with_two_repaired_values_counts_once(tmp_path: Path, home: EwsHome) -> None:
    row = {**valid_row("dmc_census", 1), "nationality": "Martian", "tambon_code": "999999",
           "census_date": "2568-06-10"}
    f = _ingest(tmp_path, home, {"dmc_census": [row]})
    assert (f.accepted, f.quarantined, f.repaired) == (1, 0, 1)
    assert sorted(_rows(home, "SELECT column_name, rule FROM repairs")) == [
        ("census_date", "be_year_to_ce"), ("nationality", "null_allowed"), ("tambon_code", "null_registry")]
    assert _rows(home, "SELECT nationality, tambon_code, census_date::VARCHAR FROM src_dmc_census") == [
        (None, None, "2025-06-10")]


def test_an_impossible_birth_date_is_nulled_only_when_the_id_says_who(tmp_path: Path, home: EwsHome) -> None:
    with_id = {**valid_row("dmc_census", 1), "birth_date": "2025-06-10"}
    no_id = {**valid_row("dmc_census", 2), "birth_date": "2025-06-10", "student_id": ""}
    bad_check_digit = {**valid_row("dmc_census", 3), "birth_date": "2025-06-10",
                       "student_id": citizen_id(3)[:12] + str((int(citizen_id(3)[12]) + 1) % 10)}
    f = _ingest(tmp_path, home, {"dmc_census": [with_id, no_id, bad_check_digit]})
    assert (f.received, f.accepted, f.quarantined, f.repaired) == (3, 1, 2, 1)
    assert _rows(home, "SELECT source_line, birth_month FROM src_dmc_census") == [(2, None)]
    assert _rows(home, "SELECT source_line, column_name, rule, reason FROM quarantine ORDER BY 1") == [
        (3, "birth_date", "age_plausible", AGE_REASON), (4, "birth_date", "age_plausible", AGE_REASON)]


def test_a_row_that_cannot_say_who_or_where_is_quarantined_with_todays_reason(tmp_path: Path, home: EwsHome) -> None:
    rows = [
        {**valid_row("dmc_census", 1), "student_id": "12X4", "first_name": ""},  # absurd ID and no name
        {**valid_row("dmc_census", 2), "school_code": "1234567890", "room": "99"},
        {**valid_row("dmc_census", 3), "census_date": "2025-13-10"},
        {**valid_row("dmc_census", 4), "grade": "M9"},
        {**valid_row("dmc_census", 5), "first_name": ""},
    ]
    f = _ingest(tmp_path, home, {"dmc_census": rows})
    assert (f.received, f.accepted, f.quarantined, f.repaired) == (5, 0, 5, 0)
    q = _rows(home, "SELECT source_line, column_name, reason FROM quarantine ORDER BY 1, 2")
    assert q == [
        (2, "first_name", "first_name: missing (required)"),
        (2, "student_id", ID_REASON),
        (3, "room", "room: 99 is above the maximum 30"),  # the whole row's problems are shown
        (3, "school_code", "school_code 1234567890 is not in the school registry"),
        (4, "census_date", "census_date: '2025-13-10' is not a date (YYYY-MM-DD)"),
        (5, "grade", "grade: 'M9' is not one of: K1, K2, K3, P1, P2, P3, P4, P5, P6, M1, M2, M3, M4, M5, M6"),
        (6, "first_name", "first_name: missing (required)"),
    ]
    assert _rows(home, "SELECT count(*) FROM repairs")[0][0] == 0


def test_a_gpa_out_of_range_is_nulled_but_counts_that_carry_the_row_are_not(tmp_path: Path, home: EwsHome) -> None:
    grade = {**valid_row("grades", 1), "gpa": "5.2"}
    att = {**valid_row("attendance", 1), "days_present": "21"}
    rep = ingest_path(write_delivery(tmp_path / "d", "d-1", {"grades": [grade], "attendance": [att]}), home)
    files = {f.source: f for f in rep.deliveries[0].files}
    assert (files["grades"].accepted, files["grades"].repaired) == (1, 1)
    assert _rows(home, "SELECT gpa, n_subjects FROM src_grades") == [(None, 8)]
    assert (files["attendance"].accepted, files["attendance"].quarantined) == (0, 1)
    assert _rows(home, "SELECT column_name, rule FROM repairs") == [("gpa", "null_range")]


def test_an_absurd_id_is_dropped_only_when_the_row_names_the_child_another_way(tmp_path: Path, home: EwsHome) -> None:
    census = {**valid_row("dmc_census", 1), "student_id": "12X4"}  # names and student number: kept, no ID
    named = {**valid_row("attendance", 1), "student_id": "12X4"}  # student number at the school: kept
    unnamed = {**valid_row("attendance", 2), "student_id": "12X4", "student_no": ""}  # nothing else: quarantined
    welfare = {**valid_row("welfare_links", 3), "student_id": "12X4"}  # no other identity in the source
    rep = ingest_path(write_delivery(tmp_path / "d", "d-1", {"dmc_census": [census], "attendance": [named, unnamed],
                                                              "welfare_links": [welfare]}), home)
    files = {f.source: (f.received, f.accepted, f.quarantined, f.repaired) for f in rep.deliveries[0].files}
    assert files == {"dmc_census": (1, 1, 0, 1), "attendance": (2, 1, 1, 1), "welfare_links": (1, 0, 1, 0)}
    # The student number is kept (it names the child at the school) as a keyed token, never as delivered.
    [(tok, kind, student_no)] = _rows(home, "SELECT id_token, id_kind, student_no FROM src_dmc_census")
    assert (tok, kind) == (None, "missing") and student_no is not None and len(student_no) == 24
    assert student_no != "ข้อความ 1"
    assert _rows(home, "SELECT student_no FROM src_attendance") == [(student_no,)]  # the same number, the same token
    assert _rows(home, "SELECT source_line, id_token, id_kind FROM src_attendance") == [(2, None, "missing")]
    assert sorted(_rows(home, "SELECT source_file, source_line, column_name, raw_value, rule FROM repairs")) == [
        ("attendance.csv", 2, "student_id", None, "null_id_form"),  # the value is personal data: never logged
        ("dmc_census.csv", 2, "student_id", None, "null_id_form")]
    assert sorted(_rows(home, "SELECT source_file, source_line, reason, value FROM quarantine")) == [
        ("attendance.csv", 3, ID_REASON, None), ("welfare_links.csv", 2, ID_REASON, None)]
