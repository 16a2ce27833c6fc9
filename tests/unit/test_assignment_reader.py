"""The schools' assignment folder becomes pupils' keys, arms and actions received (features/assignment.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from features.assignment import read_assignment
from features.home import EwsHome
from features.pseudonym import id_token


def _folder(tmp: Path, assignment: str, actions: str) -> Path:
    d = tmp / "actions"
    d.mkdir()
    (d / "assignment.csv").write_text(assignment, encoding="utf-8")
    (d / "actions.csv").write_text(actions, encoding="utf-8")
    return d


def _warehouse(home: EwsHome, ids: dict[str, str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS wh")
    con.execute("CREATE TABLE wh.token_keys (id_token VARCHAR, student_key VARCHAR)")
    key = home.pseudonym_key()
    for sid, skey in ids.items():
        con.execute("INSERT INTO wh.token_keys VALUES (?, ?)", [id_token(key, sid), skey])
    return con


def test_ids_become_student_keys_with_their_arm_and_whether_an_action_was_received(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    con = _warehouse(home, {"1111111111111": "S1", "2222222222222": "S2", "3333333333333": "S3"})
    folder = _folder(tmp_path,
                     "round_id,school_code,student_id,arm\n"
                     "2566-T1-early,1058000001,1-1111-11111-11-1,served\n"
                     "2566-T1-early,1058000001,2222222222222,holdout\n"
                     "2566-T2-early,1058000001,2222222222222,served\n"
                     "2566-T2-early,1058000001,9999999999999,served\n",
                     "round_id,school_code,student_id,action,status,recorded_on\n"
                     "2566-T1-early,1058000001,1111111111111,cct_application,done,2023-07-10\n"
                     "2566-T2-early,1058000001,2222222222222,home_visit,planned,2023-11-20\n"
                     "2566-T2-early,1058000001,3333333333333,counselling,done,2023-11-21\n")
    a = read_assignment(home, con, folder)
    rows = {(r.student_key, r.term): (r.arm, r.treated) for r in a.itertuples()}
    assert rows == {("S1", 1): ("served", True), ("S2", 1): ("holdout", False), ("S2", 2): ("served", False),
                    ("S3", 2): ("", True)}  # S3 was acted on outside the design
    assert a.attrs["unmatched"] == 1  # the ID linkage never saw
    assert not any("1111111111111" in str(v) for v in a.to_numpy().ravel())


def test_a_bad_arm_or_round_is_refused_naming_the_file_row_and_field(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    con = _warehouse(home, {})
    ok_actions = "round_id,school_code,student_id,action,status,recorded_on\n"
    folder = _folder(tmp_path, "round_id,school_code,student_id,arm\n2566-T1-early,1,2,maybe\n", ok_actions)
    with pytest.raises(ValueError, match=r"assignment.csv: row 2, field arm"):
        read_assignment(home, con, folder)
    (folder / "assignment.csv").write_text("round_id,school_code,student_id,arm\n2566-T3-early,1,2,served\n")
    with pytest.raises(ValueError, match=r"assignment.csv: row 2, field round_id"):
        read_assignment(home, con, folder)
    (folder / "assignment.csv").write_text("round_id,school_code,student_id,arm\n2566-T1-early,1,2,served\n")
    (folder / "actions.csv").unlink()
    with pytest.raises(FileNotFoundError, match="actions.csv"):
        read_assignment(home, con, folder)
