"""The schools' assignment enters through ingest (features/ingest/actions.py) and is read back keyed by
student_key (features/assignment.py): validated, quarantined and accounted like any source, IDs
tokenised at ingest, append-only, and no ID in the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from features.assignment import read_assignment
from features.contract import ACTION_SOURCES, ACTION_STATUSES
from features.home import EwsHome
from features.ingest.actions import ingest_assignment, is_assignment_folder
from features.ingest.delivery import DeliveryRefused
from features.pseudonym import id_token

SCHOOL = "1058000001"
ASSIGNMENT = ("round_id,school_code,student_id,arm\n"
              f"2566-T1-early,{SCHOOL},1-1111-11111-11-1,served\n"
              f"2566-T1-early,{SCHOOL},2222222222222,holdout\n"
              f"2566-T2-early,{SCHOOL},2222222222222,served\n"
              f"2566-T2-early,{SCHOOL},9999999999999,served\n")
ACTIONS = ("round_id,school_code,student_id,action,status,recorded_on\n"
           f"2566-T1-early,{SCHOOL},1111111111111,cct_application,done,2023-07-10\n"
           f"2566-T2-early,{SCHOOL},2222222222222,home_visit,planned,2023-11-20\n"
           f"2566-T2-early,{SCHOOL},3333333333333,counselling,done,2023-11-21\n")
RAW_IDS = ("1111111111111", "2222222222222", "3333333333333", "9999999999999")


def _folder(tmp: Path, assignment: str | None, actions: str | None) -> Path:
    d = tmp / "actions"
    d.mkdir(exist_ok=True)
    for name, text in (("assignment.csv", assignment), ("actions.csv", actions)):
        if text is not None:
            (d / name).write_text(text, encoding="utf-8")
    return d


def _linked(home: EwsHome, ids: dict[str, str]) -> None:
    """What linkage leaves: token_keys mapping each delivered ID's token to its student_key."""
    key = home.pseudonym_key()
    con = duckdb.connect(str(home.warehouse))
    try:
        con.execute("CREATE TABLE IF NOT EXISTS token_keys (id_token VARCHAR, student_key VARCHAR)")
        for sid, skey in ids.items():
            con.execute("INSERT INTO token_keys VALUES (?, ?)", [id_token(key, sid), skey])
    finally:
        con.close()


def _read(home: EwsHome):  # noqa: ANN202 (a DataFrame)
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{home.warehouse}' AS wh (READ_ONLY)")
        return read_assignment(con)
    finally:
        con.close()


def _warehouse_text(home: EwsHome) -> str:
    """Every value of every table of the warehouse, as text."""
    con = duckdb.connect(str(home.warehouse), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return "\n".join(str(con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)
    finally:
        con.close()


def test_ids_become_student_keys_with_their_arm_and_whether_an_action_was_received(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    folder = _folder(tmp_path, ASSIGNMENT, ACTIONS)
    assert is_assignment_folder(folder)
    report = ingest_assignment(folder, home)
    assert report.status == "ingested"
    assert {f.source_file: (f.received, f.accepted, f.quarantined) for f in report.files} == {
        "assignment.csv": (4, 4, 0), "actions.csv": (3, 3, 0)}
    _linked(home, {"1111111111111": "S1", "2222222222222": "S2", "3333333333333": "S3"})
    a = _read(home)
    rows = {(r.student_key, r.term): (r.arm, r.treated) for r in a.itertuples()}
    assert rows == {("S1", 1): ("served", True), ("S2", 1): ("holdout", False), ("S2", 2): ("served", False),
                    ("S3", 2): ("", True)}  # S3 was acted on outside the design
    assert a.attrs["unmatched"] == 1  # the ID linkage never saw
    assert not any("1111111111111" in str(v) for v in a.to_numpy().ravel())
    # the warehouse holds tokens, never the IDs (in any spelling delivered)
    text = _warehouse_text(home)
    assert not any(i in text for i in (*RAW_IDS, "1-1111-11111-11-1"))


def test_a_bad_arm_or_round_is_quarantined_naming_the_file_row_and_field(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    folder = _folder(tmp_path,
                     "round_id,school_code,student_id,arm\n"
                     f"2566-T1-early,{SCHOOL},2222222222222,maybe\n"
                     f"2566-T3-early,{SCHOOL},2222222222222,served\n"
                     f"2566-T1-early,{SCHOOL},22222X22222,served\n"
                     f"2566-T1-early,{SCHOOL},1111111111111,served\n",
                     "round_id,school_code,student_id,action,status,recorded_on\n"
                     f"2566-T1-early,{SCHOOL},1111111111111,home_visit,done,2023-13-40\n"
                     f"2566-T1-early,{SCHOOL},1111111111111,counselling,done,2566-07-12\n")
    report = ingest_assignment(folder, home)
    files = {f.source_file: f for f in report.files}
    assert (files["assignment.csv"].received, files["assignment.csv"].accepted, files["assignment.csv"].quarantined) == (4, 1, 3)
    # a Buddhist-Era year in a date is converted and logged, the row kept (as for every source)
    assert (files["actions.csv"].received, files["actions.csv"].quarantined, files["actions.csv"].repaired) == (2, 1, 1)
    con = duckdb.connect(str(home.warehouse), read_only=True)
    try:
        q = con.execute("SELECT source_file, source_line, column_name, rule, value FROM quarantine "
                        "ORDER BY source_file DESC, source_line").fetchall()
        accounted = con.execute("SELECT source_file, received, accepted, quarantined FROM ingested_files ORDER BY 1").fetchall()
        repairs = con.execute("SELECT source_file, source_line, column_name, raw_value, repaired_value, rule FROM repairs").fetchall()
        held = con.execute("SELECT recorded_on::VARCHAR FROM src_actions").fetchall()
    finally:
        con.close()
    assert q == [("assignment.csv", 2, "arm", "allowed", "maybe"), ("assignment.csv", 3, "round_id", "form", "2566-T3-early"),
                 ("assignment.csv", 4, "student_id", "id_form", None),  # a personal value is never quoted
                 ("actions.csv", 2, "recorded_on", "form", "2023-13-40")]
    assert accounted == [("actions.csv", 2, 1, 1), ("assignment.csv", 4, 1, 3)]
    assert repairs == [("actions.csv", 3, "recorded_on", "2566-07-12", "2023-07-12", "be_year_to_ce")]
    assert held == [("2023-07-12",)]
    csv = home.quarantine_report(report.delivery_id).read_text(encoding="utf-8")
    assert "assignment.csv,2,arm" in csv and "22222X22222" not in csv


def test_a_file_missing_a_column_is_refused_naming_it_and_nothing_is_written(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    folder = _folder(tmp_path, "round_id,school_code,student_id\n2566-T1-early,1058000001,1111111111111\n", ACTIONS)
    with pytest.raises(DeliveryRefused, match=r"assignment.csv: missing column\(s\) arm"):
        ingest_assignment(folder, home)
    assert not home.warehouse.exists()
    with pytest.raises(LookupError, match="ews ingest"):  # and nothing to read: a clear error, not an empty design
        home.ensure()
        duckdb.connect(str(home.warehouse)).close()
        _read(home)


def test_ingesting_the_same_files_again_changes_nothing_and_a_grown_file_adds_only_its_new_rows(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    folder = _folder(tmp_path, ASSIGNMENT, ACTIONS)
    (folder / "delivery.json").write_text(json.dumps({"delivery_id": "assign-1", "system": "schools",
                                                      "delivered_on": "2023-12-01"}), encoding="utf-8")
    ingest_assignment(folder, home)
    again = ingest_assignment(folder, home)
    assert again.status == "already_ingested" and again.files == []
    more = f"2567-T1-early,{SCHOOL},3333333333333,holdout\n"
    (folder / "assignment.csv").write_text(ASSIGNMENT + more, encoding="utf-8")
    grown = ingest_assignment(folder, home)
    assert [f.source_file for f in grown.files] == ["assignment.csv"]  # actions.csv unchanged: skipped
    con = duckdb.connect(str(home.warehouse), read_only=True)
    try:
        held = con.execute("SELECT round_id, source_line, known_at::VARCHAR FROM src_assignment ORDER BY source_line").fetchall()
        n_actions = con.execute("SELECT count(*) FROM src_actions").fetchone()
    finally:
        con.close()
    assert len(held) == 5 and held[-1] == ("2567-T1-early", 6, "2023-12-01")  # known on the delivery's date
    assert n_actions == (3,)


def test_the_assignment_is_declared_in_the_contract_with_the_action_records_statuses() -> None:
    from features.contract import contract_markdown, delivery_due
    from serving.actions import STATUSES

    assert set(ACTION_STATUSES) == set(STATUSES)
    assert {s.file_name for s in ACTION_SOURCES.values()} == {"assignment.csv", "actions.csv"}
    assert all(ACTION_SOURCES[s].column("student_id").identity for s in ACTION_SOURCES)
    text = contract_markdown()
    assert "## `assignment.csv`" in text and "## `actions.csv`" in text
    for s in ACTION_SOURCES:
        assert delivery_due(s).overdue_days > delivery_due(s).lag_days


def test_ews_ingest_takes_the_assignment_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app

    folder = _folder(tmp_path, ASSIGNMENT, ACTIONS)
    _register()
    res = CliRunner().invoke(app, ["ingest", str(folder), "--json", "--home", str(tmp_path / "home")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["totals"]["received"] == 7 == out["totals"]["accepted"]
    assert not any(i in res.output for i in RAW_IDS)
