"""The not-found list for Thailand Zero Dropout, against the simulator's truth and as the CLI stores it.

Statistics run on the `seeded_world` seeds (the ladder's world and two smaller ones); tests that
write work on a copy of the session's world.

Why the bands: about 1% of the pupils of a census are out of school at the next (the base rate), so
a list of everyone has precision ~0.01 and a list of nobody recall 0. The issue's targets are 0.97 /
0.99 once every delivery is in. On these worlds a census list holds 80-140 truly out-of-school
(pupil, census) rows over eight censuses, so one wrong case moves a figure by about 0.01: the test
asks that the target lie inside or below the 95% bootstrap interval (by student) and the point be
within two cases of it, which a list missing one evidence source fails by far (second test).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from features.calendar import SchoolCalendar
from features.home import EwsHome
from features.pointintime.labels import EVIDENCE
from features.pointintime.notfound import build_notfound, load_notfound, notfound_sql
from features.pointintime.pipeline import connect_warehouse, latest_delivery
from simulator.evaluate_notfound import evaluate_notfound
from tests.conftest import SmallWorld, copy_world
from tests.support.pii import needles_from_deliveries
from tests.support.worlds import ews

pytestmark = pytest.mark.integration

PRECISION, RECALL = 0.97, 0.99
SLACK = 0.025  # two cases in about eighty
BOOTSTRAP = 400
CAL = SchoolCalendar()


def _quality(world: SmallWorld, **kw: object):  # -> NotFoundQuality
    con = connect_warehouse(EwsHome(root=world.home))
    try:
        return evaluate_notfound(con, world.truth, bootstrap=BOOTSTRAP, **kw)  # type: ignore[arg-type]
    finally:
        con.close()


def test_the_not_found_list_is_the_truly_out_of_school_pupils_overall_and_per_group(seeded_world: SmallWorld) -> None:
    q = _quality(seeded_world)
    o = q.overall
    assert len(q.censuses) >= 4 and o.truly_out >= 50  # enough cases that one moves a figure by <= 0.02
    assert o.base_rate < 0.05  # the list is a needle search: precision is far above what chance gives
    assert o.precision.value >= PRECISION - SLACK and o.precision.high >= PRECISION
    assert o.recall.value >= RECALL - SLACK and o.recall.high >= RECALL
    judged = [(g, v, x) for g, groups in q.per_group.items() for v, x in groups.items() if x.judged]
    assert {"nationality", "region"} <= {g for g, _, _ in judged}
    bad = [(g, v, x.precision.value, x.recall.value) for g, v, x in judged
           if x.precision.high < PRECISION or x.recall.high < RECALL]
    assert bad == []


def test_without_other_system_enrolment_movers_are_listed_and_precision_falls(small_world: SmallWorld) -> None:
    full = _quality(small_world)
    blind = _quality(small_world, evidence=tuple(e for e in EVIDENCE if e.source != "other_enrolment"))
    assert blind.overall.listed > full.overall.listed
    assert blind.overall.precision.high < PRECISION  # the same band fails without the evidence


def _cases(con: object, census: dt.date, as_of: dt.date) -> dict[str, dict[str, object]]:
    rows = con.sql(notfound_sql(CAL, census, as_of)).to_arrow_table().to_pylist()  # type: ignore[attr-defined]
    return {r["student_key"]: r for r in rows}


def test_a_returned_child_is_recognised_by_linkage_and_stays_on_the_census_list(small_world: SmallWorld) -> None:
    con = connect_warehouse(EwsHome(root=small_world.home))
    try:
        latest = latest_delivery(con)
        censuses = [d for (d,) in con.execute(
            "SELECT DISTINCT census_date FROM wh.linked_dmc_census ORDER BY 1").fetchall()][1:-1]
        returned = [(c, r) for c in censuses for r in _cases(con, c, latest).values() if r["state"] == "returned"]
        assert returned, "the world has children who came back after leaving"
        tables = {"dmc_census": ("census_date", "linked_dmc_census"),
                  "other_enrolment": ("record_date", "linked_other_enrolment"),
                  "ewe_training": ("record_date", "linked_ewe_training")}
        checked_before = 0
        for c, r in returned:
            assert r["returned_on"] > c and r["returned_source"] in tables
            col, table = tables[r["returned_source"]]
            seen = con.execute(f"SELECT min(known_at) FROM wh.{table} WHERE student_key = ? AND {col} = ?",
                               [r["student_key"], r["returned_on"]]).fetchall()[0][0]
            assert seen is not None and seen <= latest
            # the day before that record was known, the same child was on the list, not yet returned
            day_before = seen - dt.timedelta(days=1)
            before = _cases(con, c, day_before)
            if r["student_key"] in before:
                assert before[r["student_key"]]["state"] == "not_found"
                checked_before += 1
        assert checked_before > 0
        # a child back in a later census is never also a case of that later census
        for c, r in returned:
            if r["returned_source"] == "dmc_census" and r["returned_on"] in censuses:
                assert r["student_key"] not in _cases(con, r["returned_on"], latest)
    finally:
        con.close()


def test_late_sources_make_cases_provisional_and_a_refused_census_leaves_its_school_unjudged(
        small_world: SmallWorld, tmp_path: Path) -> None:
    world = copy_world(small_world, tmp_path)
    home = EwsHome(root=world.home)
    census = dt.date(2022, 11, 10)
    complete = build_notfound(home, census)
    assert complete.provisional == 0 and complete.awaited == [] and complete.schools_without_census == 0
    # Three weeks after the census its files are in but other systems' enrolment and TZD are not.
    early = build_notfound(home, census, as_of=census + dt.timedelta(days=21))
    _, table = load_notfound(home, census)
    assert early.cases >= complete.cases and early.provisional == early.cases > 0
    assert "other_enrolment" in early.awaited
    assert all("other_enrolment" in c and "a path may still arrive" in c for c in table.column("caveat").to_pylist())
    # The biggest school's census of that date refused: its pupils are counted, never listed.
    school = max(set(table.column("school_code").to_pylist()),
                 key=lambda s: table.column("school_code").to_pylist().count(s))
    con = connect_warehouse(home, read_only=False)
    try:
        con.execute("DELETE FROM wh.src_dmc_census WHERE census_date = ? AND school_code = ?", [census, school])
    finally:
        con.close()
    refused = build_notfound(home, census)
    _, table = load_notfound(home, census)
    assert school not in set(table.column("school_code").to_pylist())
    assert refused.schools_without_census == 1 and refused.pending_school_census > 0
    assert refused.cases < complete.cases


def test_the_cli_stores_a_list_and_shows_counts_without_keys_or_names(small_world: SmallWorld, tmp_path: Path) -> None:
    world = copy_world(small_world, tmp_path)
    built = ews(world.home, "notfound", "build", "--round", "2566-T1-early")
    assert "census 2023-06-10" in built
    shown = ews(world.home, "notfound", "show", "--census", "2023-06-10", "--level", "tambon")
    m, table = load_notfound(EwsHome(root=world.home), dt.date(2023, 6, 10))
    assert f"{m.cases:,} cases" in shown and table.num_rows == m.cases > 0
    assert not re.search(r"S[0-9a-f]{20}", shown + built)  # no student key
    needles = needles_from_deliveries(world.sim / "deliveries")
    assert not any(n in shown for n in needles.ids | needles.full_names)
    assert not any(name in table.column_names for name in ("first_name", "last_name", "student_id", "name"))
    with pytest.raises(RuntimeError, match="give exactly one"):
        ews(world.home, "notfound", "build", "--round", "2566-T1-early", "--census", "2023-06-10")


def test_the_service_routes_give_a_school_its_cases_with_names_and_areas_pseudonymous_counts(
        small_world: SmallWorld, tmp_path: Path) -> None:
    """The route methods of the service class, called in-process on a home with a built list (no
    champion needed for these routes; the full service is covered by the access matrix)."""
    import json
    import sqlite3

    from starlette.requests import Request

    from serving.access import TokenStore, create_token
    from serving.notfound import NotFoundLists
    from serving.service import EwsService

    world = copy_world(small_world, tmp_path)
    home = EwsHome(root=world.home)
    m = build_notfound(home, dt.date(2023, 6, 10))
    _, table = load_notfound(home, m.census_date)
    schools = table.column("school_code").to_pylist()
    school = max(set(schools), key=schools.count)
    tambon = table.column("tambon_code").to_pylist()[schools.index(school)]
    svc = EwsService.inner.__new__(EwsService.inner)  # the routes read only these three
    svc.home, svc.store, svc.notfound = home, TokenStore(home), NotFoundLists(home)

    def call(route: str, role: str, *args: str, school_code: str | None = None, area: str | None = None) -> tuple[int, dict]:
        token = create_token(home, role, school_code, [area] if area else None)[0]
        req = Request({"type": "http", "method": "GET", "path": "/", "headers": [(b"authorization", f"Bearer {token}".encode())]})
        resp = getattr(svc, route)(req, *args)
        return resp.status_code, json.loads(resp.body)

    census = m.census_date.isoformat()
    status, own = call("notfound_school", "school", census, school, school_code=school)
    assert status == 200 and len(own["cases"]) == schools.count(school)
    assert sum(1 for c in own["cases"] if c.get("name")) == len(own["cases"])  # names from the vault
    other = next(s for s in set(schools) | {"1099999999"} if s != school)
    assert call("notfound_school", "school", census, other, school_code=school)[0] == 403
    status, pseudo = call("notfound_school", "analyst", census, school)
    assert status == 200 and all("name" not in c for c in pseudo["cases"])
    status, summary = call("notfound_area_summary", "area", census, tambon[:4], area=tambon[:4])
    assert status == 200 and summary["level"] == "amphoe"
    assert all(p[k] is None or p[k] == 0 or p[k] >= 5 for p in summary["parts"]
               for k in ("cases", "not_found", "returned", "provisional"))
    assert call("notfound_area_cases", "area", census, "99", area=tambon[:4])[0] == 403
    assert call("notfound_school", "school", "2023-06-11", school, school_code=school)[0] == 404
    assert call("notfound_censuses", "auditor")[1] == {"censuses": [census]}
    with sqlite3.connect(home.access_db) as db:
        actions = {a for (a,) in db.execute("SELECT action FROM access_log")}
    assert {"notfound_cases", "notfound_summary"} <= actions

    # The TZD case path of a listed child goes into the action record, keyed by (student_key, census):
    # the child's last school records its steps, another school may not, and an auditor reads them.
    import asyncio

    from serving.actions import ActionStore

    svc.actions = ActionStore(home)
    case = own["cases"][0]["student_key"]

    def post(role: str, key: str, body: dict, school_code: str | None = None) -> tuple[int, dict]:
        token = create_token(home, role, school_code, None)[0]
        raw = json.dumps(body).encode()

        async def receive() -> dict:
            return {"type": "http.request", "body": raw, "more_body": False}

        req = Request({"type": "http", "method": "POST", "path": "/", "headers": [
            (b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]}, receive)
        resp = asyncio.run(svc.record_case_action(req, census, key))
        return resp.status_code, json.loads(resp.body)

    status, entry = post("school", case, {"action": "tzd_identified", "status": "done"}, school_code=school)
    assert status == 201 and entry["round_id"] == census and entry["snapshot_hash"] == m.sha256
    assert post("school", case, {"action": "tzd_identified", "status": "done"}, school_code=other)[0] == 403
    assert post("school", "S" + "0" * 20, {"action": "tzd_identified", "status": "done"}, school_code=school)[0] == 403
    status, read = call("case_actions", "auditor", census, case)
    assert status == 200 and [e["action"] for e in read["actions"]] == ["tzd_identified"]


def test_a_pupil_who_moved_into_a_school_whose_census_is_missing_is_not_listed_but_counted(
        small_world: SmallWorld, tmp_path: Path) -> None:
    world = copy_world(small_world, tmp_path)
    home = EwsHome(root=world.home)
    census, following = dt.date(2022, 6, 10), dt.date(2022, 11, 10)  # a year end: P6 -> M1, M3 -> M4 moves
    con = connect_warehouse(home, read_only=False)
    try:
        # the school that took in most pupils from other schools at this census, and its movers who
        # are still there at the next census
        school, movers = con.execute("""
            SELECT n.school_code, list(DISTINCT n.student_key) FROM wh.linked_dmc_census p
            JOIN wh.linked_dmc_census n USING (student_key)
            JOIN wh.linked_dmc_census f ON f.student_key = n.student_key AND f.census_date = ? AND f.school_code = n.school_code
            WHERE p.census_date = ? AND n.census_date = ? AND p.school_code <> n.school_code
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 1""", [following, dt.date(2021, 11, 10), census]).fetchone()
        assert len(movers) >= 3, "the test world should have pupils moving school at the year end"
        before = {k for (k,) in con.execute(f"SELECT student_key FROM ({notfound_sql(CAL, census, latest_delivery(con))})").fetchall()}
        assert not set(movers) & before  # found on the school's census while it was there
        # the school's census of that date refused
        con.execute("DELETE FROM wh.src_dmc_census WHERE census_date = ? AND school_code = ?", [census, school])
        as_of = latest_delivery(con)
        kept = {k for (k,) in con.execute(
            f"SELECT student_key FROM ({notfound_sql(CAL, census, as_of, include_at_school_without_census=True)})").fetchall()}
    finally:
        con.close()
    # without the rule the movers would be listed (seen nowhere at the census)...
    assert set(movers) <= kept
    # ... with it they are not judged: counted, never listed, like the missing school's own pupils
    m = build_notfound(home, census)
    _, table = load_notfound(home, census)
    assert not set(movers) & set(table.column("student_key").to_pylist())
    assert m.at_school_without_census >= len(movers) and m.schools_without_census == 1


def test_a_pupil_who_may_have_moved_up_into_a_school_that_never_delivered_is_listed_with_a_caveat_naming_it(
        small_world: SmallWorld, tmp_path: Path) -> None:
    # As above, but the school delivers no census from this one on (the world's last census, or a
    # school that keeps refusing): no later row shows the movers there, so a P6 or M3 pupil from a
    # tambon whose pupils moved up into it is a case to search for, with a caveat saying where the
    # child may be (the label is unknown, `labels.year_end_unseen_steps`).
    world = copy_world(small_world, tmp_path)
    home = EwsHome(root=world.home)
    census = dt.date(2022, 6, 10)
    con = connect_warehouse(home, read_only=False)
    try:
        school, movers = con.execute("""
            SELECT n.school_code, list(DISTINCT n.student_key) FROM wh.linked_dmc_census p
            JOIN wh.linked_dmc_census n USING (student_key)
            WHERE p.census_date = ? AND n.census_date = ? AND p.school_code <> n.school_code AND p.grade IN ('P6', 'M3')
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 1""", [dt.date(2021, 11, 10), census]).fetchone()
        con.execute("DELETE FROM wh.src_dmc_census WHERE census_date >= ? AND school_code = ?", [census, school])
    finally:
        con.close()
    m = build_notfound(home, census)
    _, table = load_notfound(home, census)
    rows = table.select(["student_key", "grade", "caveat"]).to_pylist()
    flagged = [r for r in rows if r["caveat"] and f"school {school}, where pupils from this tambon moved up" in r["caveat"]]
    assert len([r for r in flagged if r["student_key"] in set(movers)]) >= 3
    assert {r["grade"] for r in flagged} <= {"P6", "M3"}
    assert all(f"finished {r['grade']} at the year end" in r["caveat"] for r in flagged)
    # the manifest counts them (only this school is missing, so every such caveat names it)
    assert m.may_have_moved_up == len(flagged) == sum(1 for r in rows if r["caveat"] and "moved up" in r["caveat"])
    # against the truth the caveat's cases are measured apart: the movers among them were in school,
    # so they are far less often truly out than the other cases
    con = connect_warehouse(home)
    try:
        q = evaluate_notfound(con, world.truth, bootstrap=50)
    finally:
        con.close()
    assert census in q.censuses and q.moved_up_caveat.listed >= len(flagged)
    assert q.moved_up_caveat.listed + q.without_moved_up_caveat.listed == q.overall.listed
    assert q.moved_up_caveat.precision.value is not None and q.without_moved_up_caveat.precision.value is not None
    assert q.moved_up_caveat.precision.value < q.without_moved_up_caveat.precision.value - 0.2
