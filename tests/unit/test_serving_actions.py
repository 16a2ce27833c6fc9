"""The action record: a fixed catalogue, an append-only store whose hash chain finds any edit, and
who may record for whom (issue 15, part 1)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest

from features.home import EwsHome
from serving.access import Principal
from serving.actions import (
    BY_CODE, CATALOGUE, OUTCOMES, STATUSES, TZD_PATH, ActionError, ActionStore, Pupil, actions_revision, annotate,
    export, parse_input, verify,
)

SCHOOL, OTHER = "1234567890", "1234567891"
TODAY = dt.date(2026, 11, 30)


@pytest.fixture()
def home(tmp_path: Path) -> EwsHome:
    return EwsHome(root=tmp_path)


def who(role: str, school: str | None = None, areas: tuple[str, ...] = ()) -> Principal:
    return Principal(token_id=f"t{role[:7]:0<7}", role=role, school_code=school, areas=areas)


def pupil(key: str = "Skey0000001", school: str = SCHOOL, tambon: str = "580101") -> Pupil:
    return Pupil(student_key=key, school_code=school, tambon_code=tambon, round_id="2566-T1-mid",
                 snapshot_hash="abc123", risk_score=0.42, risk_group="problem")


def inp(**kw: object):  # noqa: ANN201 - ActionInput
    return parse_input({"action": "home_visit", "status": "done", **kw})


# -- the catalogue -------------------------------------------------------------------------------


def test_every_catalogue_entry_has_a_unique_code_and_thai_and_english_labels() -> None:
    assert len({a.code for a in CATALOGUE}) == len(CATALOGUE)
    assert all(a.th and a.en and a.path in ("care", "tzd") for a in CATALOGUE)
    for needed in ("home_visit", "counselling", "learning_support", "cct_application", "referral_health",
                   "referral_social", "referral_police", "parent_meeting", "transport_help"):
        assert needed in BY_CODE


def test_the_tzd_case_path_runs_identify_care_plan_follow_up_close_in_order() -> None:
    assert TZD_PATH == ("tzd_identified", "tzd_care_plan", "tzd_follow_up", "tzd_closed")
    assert set(STATUSES) == {"planned", "done", "referred", "closed"}
    assert {"returned_to_school", "non_formal_learning", "work_training", "other"} <= set(OUTCOMES)


@pytest.mark.parametrize(("body", "field"), [
    ({"action": "magic", "status": "done"}, "action"),
    ({"action": "home_visit", "status": "finished"}, "status"),
    ({"action": "home_visit", "status": "done", "outcome": "returned_to_school"}, "outcome"),
    ({"action": "tzd_closed", "status": "closed"}, "outcome"),
    ({"action": "home_visit", "status": "done", "follow_up_due": "next week"}, "follow_up_due"),
    ({"action": "home_visit", "status": "done", "comment": "free text"}, "comment"),
    ({"status": "done"}, "action"),
])
def test_a_bad_action_is_refused_naming_its_field(body: dict, field: str) -> None:
    with pytest.raises(ActionError) as err:
        parse_input(body)
    assert err.value.status == 422 and err.value.field == field and f"field {field}" in err.value.message


def test_a_follow_up_date_in_the_past_is_refused(home: EwsHome) -> None:
    store = ActionStore(home)
    with pytest.raises(ActionError) as err:
        store.record(who("school", SCHOOL), pupil(), inp(follow_up_due="2020-01-01"), today=TODAY)
    assert err.value.field == "follow_up_due"


# -- who may record ------------------------------------------------------------------------------


def test_a_school_records_for_its_own_pupils_only(home: EwsHome) -> None:
    store = ActionStore(home)
    e = store.record(who("school", SCHOOL), pupil(), inp(follow_up_due="2026-12-15"), today=TODAY)
    assert e["school_code"] == SCHOOL and e["risk_group"] == "problem" and e["follow_up_due"] == "2026-12-15"
    with pytest.raises(ActionError) as err:
        store.record(who("school", OTHER), pupil(), inp(), today=TODAY)
    assert err.value.status == 403
    with pytest.raises(ActionError):
        store.record(who("school", SCHOOL), None, inp(), today=TODAY)  # not on its list of that round


def test_an_area_records_for_pupils_of_its_areas_only(home: EwsHome) -> None:
    store = ActionStore(home)
    store.record(who("area", areas=("5801",)), pupil(), inp(), today=TODAY)
    with pytest.raises(ActionError) as err:
        store.record(who("area", areas=("5802",)), pupil(), inp(), today=TODAY)
    assert err.value.status == 403


@pytest.mark.parametrize("role", ["analyst", "auditor", "admin", "monitoring"])
def test_other_roles_read_but_never_record(home: EwsHome, role: str) -> None:
    store = ActionStore(home)
    store.record(who("school", SCHOOL), pupil(), inp(), today=TODAY)
    with pytest.raises(ActionError) as err:
        store.record(who(role), pupil(), inp(), today=TODAY)
    assert err.value.status == 403
    if role == "monitoring":
        with pytest.raises(ActionError):
            store.for_pupil(who(role), pupil())
    else:
        assert len(store.for_pupil(who(role), pupil())) == 1
    with pytest.raises(ActionError):  # a school reads its own pupils' actions only
        store.for_pupil(who("school", OTHER), pupil())


def test_notes_are_refused_unless_the_deployment_enables_them_and_then_live_in_the_vault(tmp_path: Path) -> None:
    plain = EwsHome(root=tmp_path / "a")
    with pytest.raises(ActionError) as err:
        ActionStore(plain).record(who("school", SCHOOL), pupil(), inp(note="mother works away"), today=TODAY)
    assert err.value.field == "note"
    noted = EwsHome(root=tmp_path / "b", actions={"notes": True})
    store = ActionStore(noted)
    store.record(who("school", SCHOOL), pupil(), inp(note="mother works away"), today=TODAY)
    assert "mother works away" not in "\n".join(sqlite3.connect(noted.actions_db).iterdump())
    assert noted.action_notes_db.parent == noted.vault_dir
    assert store.for_pupil(who("school", SCHOOL), pupil())[0]["note"] == "mother works away"
    assert "note" not in store.for_pupil(who("area", areas=("58",)), pupil())[0]


# -- append-only, chained --------------------------------------------------------------------------


def test_the_store_refuses_updates_and_deletes(home: EwsHome) -> None:
    ActionStore(home).record(who("school", SCHOOL), pupil(), inp(), today=TODAY)
    con = sqlite3.connect(home.actions_db)
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("UPDATE entries SET status = 'closed'")
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("DELETE FROM entries")


def _three(home: EwsHome) -> ActionStore:
    store = ActionStore(home)
    first = store.record(who("school", SCHOOL), pupil(), parse_input({"action": "home_visit", "status": "planned"}), today=TODAY)
    store.record(who("school", SCHOOL), pupil(), inp(refers_to=first["entry_id"]), today=TODAY)
    store.record(who("school", SCHOOL), pupil("Skey0000002"), inp(), today=TODAY)
    return store


def test_an_intact_record_verifies(home: EwsHome) -> None:
    _three(home)
    v = verify(home)
    assert v.ok and v.entries == 3


@pytest.mark.parametrize("tamper", [
    "UPDATE entries SET status = 'closed' WHERE seq = 2",
    "UPDATE entries SET risk_group = 'normal' WHERE seq = 1",
    "DELETE FROM entries WHERE seq = 2",
])
def test_an_edit_made_around_the_triggers_is_found_by_verify(home: EwsHome, tamper: str) -> None:
    _three(home)
    con = sqlite3.connect(home.actions_db)
    con.executescript("DROP TRIGGER entries_no_update; DROP TRIGGER entries_no_delete;")
    con.execute(tamper)
    con.commit()
    v = verify(home)
    assert not v.ok and "seq" in (v.problem or "")


def test_an_update_refers_to_an_earlier_entry_of_the_same_pupil(home: EwsHome) -> None:
    store = _three(home)
    first = store.all_entries()[0]["entry_id"]
    with pytest.raises(ActionError) as err:
        store.record(who("school", SCHOOL), pupil("Skey0000002"), inp(refers_to=first), today=TODAY)
    assert err.value.field == "refers_to"


def test_concurrent_writers_lose_nothing_and_keep_one_chain(home: EwsHome) -> None:
    stores = [ActionStore(home) for _ in range(4)]  # as separate service workers would

    def write(s: ActionStore, n: int) -> None:
        for k in range(25):
            s.record(who("school", SCHOOL), pupil(f"Skey{n:03d}{k:04d}"), inp(), today=TODAY)

    threads = [threading.Thread(target=write, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = verify(home)
    assert v.ok and v.entries == 100
    assert len({e["student_key"] for e in stores[0].all_entries()}) == 100


# -- the list with actions -----------------------------------------------------------------------


def test_the_revision_of_a_school_changes_when_one_of_its_pupils_gets_an_action(home: EwsHome) -> None:
    store = ActionStore(home)
    before, other_before = actions_revision(home, SCHOOL), actions_revision(home, OTHER)
    store.record(who("school", SCHOOL), pupil(), inp(), today=TODAY)
    assert actions_revision(home, SCHOOL) != before == "actions:0"
    assert actions_revision(home, OTHER) == other_before
    assert store.revision(SCHOOL) == actions_revision(home, SCHOOL)


def test_a_planned_action_is_not_yet_contact_and_the_filter_keeps_only_uncontacted_pupils(home: EwsHome) -> None:
    store = ActionStore(home)
    store.record(who("school", SCHOOL), pupil("Skey0000001"), parse_input({"action": "home_visit", "status": "planned",
                                                                           "follow_up_due": "2026-12-01"}), today=TODAY)
    store.record(who("school", SCHOOL), pupil("Skey0000002"), inp(), today=TODAY)
    rows = [{"rank": i + 1, "student_key": f"Skey000000{i + 1}"} for i in range(3)]
    latest = store.latest_by_student(SCHOOL)
    full = annotate(rows, latest)
    assert [r["action_status"] for r in full] == ["planned", "done", None]
    assert full[0]["follow_up_due"] == "2026-12-01" and full[2]["actions_count"] == 0
    assert [r["student_key"] for r in annotate(rows, latest, not_contacted=True)] == ["Skey0000001", "Skey0000003"]


def test_export_puts_the_record_in_the_warehouse_and_a_csv(home: EwsHome, tmp_path: Path) -> None:
    import duckdb

    _three(home)
    out = tmp_path / "actions.csv"
    assert export(home, out) == 3
    con = duckdb.connect(str(home.warehouse), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT student_key) FROM actions").fetchone() == (3, 2)
    con.close()
    assert out.read_text(encoding="utf-8-sig").count("\n") == 4


# -- the pupil sheet -----------------------------------------------------------------------------


def test_the_pupil_sheet_escapes_every_value_and_plots_only_what_is_known() -> None:
    from serving.sheet import HistoryPoint, pupil_sheet

    history = [HistoryPoint("2565-T2-mid", 0.2, 0.9, 2.5), HistoryPoint("2566-T1-mid", 0.6, 0.7, None)]
    page = pupil_sheet(name="<script>alert(1)</script>", student_key="Skey0000001", school_name="ร.ร. <b>", school_code=SCHOOL,
                       grade="M2", room=3, round_id="2566-T1-mid", snapshot_hash="abc123", history=history,
                       row={"risk_score": 0.6, "risk_group": "problem", "reasons_th": "การมาเรียน — เพิ่มความเสี่ยง"},
                       values={"care_learning": 2, "care_screened": True}, actions=[])
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "ร.ร. &lt;b&gt;" in page
    assert page.count("<svg") == 3 and "60.0%" in page and "มีปัญหา" in page and "ยังไม่มีการบันทึก" in page
    empty = pupil_sheet(name=None, student_key="Skey0000001", school_name=None, school_code=SCHOOL, grade=None, room=None,
                        round_id="2566-T1-mid", snapshot_hash="abc123", history=[HistoryPoint("2566-T1-mid", None, None, None)],
                        row={"risk_score": None, "risk_group": None, "no_score_reason": "too little data"}, values={}, actions=[])
    assert "<svg" not in empty and "ไม่มีคะแนน" in empty


# -- what was served ---------------------------------------------------------------------------------


def test_an_action_links_to_the_access_log_line_of_the_list_its_token_was_served(home: EwsHome) -> None:
    from serving.access import TokenStore, create_token, read_access_log

    token, _ = create_token(home, "school", school=SCHOOL)
    tokens = TokenStore(home)
    me = tokens.authenticate(token)
    assert me is not None
    store = ActionStore(home)
    assert store.record(me, pupil(), inp(), today=TODAY)["served_log_id"] is None  # never shown a list
    tokens.log(me, "school_list:json", "2566-T1-mid", OTHER, 10, "other")
    tokens.log(me, "school_list:xlsx", "2566-T1-mid", SCHOOL, 10, "abc123")
    tokens.log(me, "school_list:json", "2565-T2-mid", SCHOOL, 10, "older")
    served = store.record(me, pupil(), inp(), today=TODAY)["served_log_id"]
    line = next(x for x in read_access_log(home) if x["log_id"] == served)
    assert (line["action"], line["target"], line["snapshot_hash"]) == ("school_list:xlsx", SCHOOL, "abc123")


def test_an_access_log_written_before_snapshots_were_recorded_gains_the_column(home: EwsHome) -> None:
    from serving.access import read_access_log

    home.access_db.parent.mkdir(parents=True)
    con = sqlite3.connect(home.access_db)
    con.execute("CREATE TABLE access_log (at TEXT NOT NULL, token_id TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL, "
                "round_id TEXT, target TEXT, students INTEGER NOT NULL)")
    con.execute("INSERT INTO access_log VALUES ('2026-01-01', 'tid', 'school', 'school_list:json', 'R', 'S', 3)")
    con.commit()
    con.close()
    (old,) = read_access_log(home)
    assert old["snapshot_hash"] is None and old["target"] == "S"
