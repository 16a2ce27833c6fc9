"""Recording actions on the running service: a school records for its own pupils, the list (JSON,
CSV, Excel) shows each pupil's latest action, `not_contacted` keeps the others, every other school
is refused, and the pupil sheet is the school's only (issue 15, parts 1, 3, 4, 7)."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys

import httpx
import pytest

from tests.integration.serving_fixtures import ROOT, ServingHome

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _list(url: str, h: ServingHome, **params: object) -> httpx.Response:
    return httpx.get(f"{url}/ews/api/rounds/{h.round_id}/schools/{h.school}/students", headers=_auth(h.tokens["school"]),
                     params=params, timeout=30)


def _post(url: str, h: ServingHome, key: str, token: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/ews/api/rounds/{h.round_id}/students/{key}/actions", json=body, headers=_auth(token), timeout=30)


def test_a_recorded_action_appears_in_the_list_json_csv_and_excel(service_url: str, serving_home: ServingHome) -> None:
    from openpyxl import load_workbook

    h = serving_home
    rows = _list(service_url, h).json()["students"]
    pupil = next(r for r in rows if r["action"] is None)
    r = _post(service_url, h, pupil["student_key"], h.tokens["school"],
              {"action": "home_visit", "status": "done", "follow_up_due": "2099-01-01"})
    assert r.status_code == 422 and r.json()["field"] == "follow_up_due"  # two years ahead at most
    r = _post(service_url, h, pupil["student_key"], h.tokens["school"], {"action": "home_visit", "status": "planned"})
    assert r.status_code == 201, r.text
    entry = r.json()
    # The entry links to what the school was shown: the round's snapshot, the score and group, the list it read.
    assert entry["round_id"] == h.round_id and entry["risk_group"] == pupil["risk_group"]
    assert entry["risk_score"] == pytest.approx(pupil["risk_score"]) if pupil["risk_score"] is not None else True
    assert entry["snapshot_hash"] == _list(service_url, h).json()["snapshot_hash"]
    assert entry["served_log_id"] is not None and entry["token_id"] == h.tokens["school"].split("_")[1]
    with sqlite3.connect(h.root / "serving" / "access.sqlite") as con:
        served = con.execute("SELECT token_id, action, target, snapshot_hash FROM access_log WHERE rowid = ?",
                             [entry["served_log_id"]]).fetchone()
    assert served == (entry["token_id"], "school_list:json", h.school, entry["snapshot_hash"])
    after = {x["student_key"]: x for x in _list(service_url, h).json()["students"]}
    got = after[pupil["student_key"]]
    assert (got["action"], got["action_status"], got["action_th"]) == ("home_visit", "planned", "เยี่ยมบ้าน")
    csv_rows = list(csv.reader(io.StringIO(_list(service_url, h, format="csv").content.decode("utf-8-sig"))))
    head = csv_rows[0] if "ลำดับ" in csv_rows[0] else csv_rows[1]
    line = next(x for x in csv_rows if pupil["student_key"] in x)
    assert line[head.index("การดำเนินการล่าสุด")] == "เยี่ยมบ้าน" and line[head.index("สถานะ")] == "วางแผนแล้ว"
    book = load_workbook(io.BytesIO(_list(service_url, h, format="xlsx").content)).active
    xrows = list(book.iter_rows(values_only=True))
    xhead = next(x for x in xrows if "ลำดับ" in x)
    xline = next(x for x in xrows if pupil["student_key"] in x)
    assert xline[xhead.index("การดำเนินการล่าสุด")] == "เยี่ยมบ้าน"
    # The pupil's record: the update refers to the plan and the latest state is the one listed.
    done = _post(service_url, h, pupil["student_key"], h.tokens["school"],
                 {"action": "home_visit", "status": "done", "refers_to": entry["entry_id"]})
    assert done.status_code == 201
    mine = httpx.get(f"{service_url}/ews/api/rounds/{h.round_id}/students/{pupil['student_key']}/actions",
                     headers=_auth(h.tokens["school"]), timeout=30).json()["actions"]
    assert [a["status"] for a in mine] == ["planned", "done"] and mine[1]["refers_to"] == entry["entry_id"]


def test_not_contacted_keeps_only_the_pupils_nobody_has_contacted(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    rows = _list(service_url, h).json()["students"]
    pupil = next(r for r in rows if not r["contacted"])
    before = _list(service_url, h, not_contacted="true").json()["students"]
    assert pupil["student_key"] in {x["student_key"] for x in before}
    assert len(before) == sum(not r["contacted"] for r in rows) < len(rows) + 1
    assert _post(service_url, h, pupil["student_key"], h.tokens["school"],
                 {"action": "counselling", "status": "done"}).status_code == 201
    after = _list(service_url, h, not_contacted="true").json()["students"]
    assert pupil["student_key"] not in {x["student_key"] for x in after}
    assert len(after) == len(before) - 1 and all(not x["contacted"] for x in after)


def test_another_school_and_read_only_roles_cannot_record_and_areas_record_in_their_area(
        service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    key = _list(service_url, h).json()["students"][0]["student_key"]
    body = {"action": "parent_meeting", "status": "planned"}
    assert _post(service_url, h, key, h.tokens["other_school"], body).status_code == 403
    for role in ("analyst", "auditor", "admin"):
        assert _post(service_url, h, key, h.tokens[role], body).status_code == 403, role
    r = httpx.get(f"{service_url}/ews/api/rounds/{h.round_id}/students/{key}/actions",
                  headers=_auth(h.tokens["other_school"]), timeout=30)
    assert r.status_code == 404
    assert _post(service_url, h, key, h.tokens["area"], body).status_code == 201  # the area of the school
    bad = _post(service_url, h, key, h.tokens["school"], {"action": "home_visit", "status": "done", "comment": "x"})
    assert bad.status_code == 422 and bad.json()["field"] == "comment"
    school_log = httpx.get(f"{service_url}/ews/api/rounds/{h.round_id}/schools/{h.school}/actions",
                           headers=_auth(h.tokens["other_school"]), timeout=30)
    assert school_log.status_code == 403


def test_the_pupil_sheet_is_one_printable_page_for_the_pupils_own_school(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    rows = _list(service_url, h).json()["students"]
    pupil = next(r for r in rows if r["risk_score"] is not None and r.get("name"))
    path = f"/ews/api/rounds/{h.round_id}/students/{pupil['student_key']}/sheet"
    r = httpx.get(service_url + path, headers=_auth(h.tokens["school"]), timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert pupil["name"] in page and pupil["risk_group_th"] in page and "<svg" in page
    assert f"{100 * pupil['risk_score']:.1f}%" in page and "ผลการคัดกรอง" in page
    assert httpx.get(service_url + path, headers=_auth(h.tokens["other_school"]), timeout=30).status_code == 404
    for role in ("area", "analyst", "admin"):
        assert httpx.get(service_url + path, headers=_auth(h.tokens[role]), timeout=30).status_code == 403, role


def test_the_record_the_service_wrote_verifies_with_ews_actions_verify(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    key = _list(service_url, h).json()["students"][1]["student_key"]
    assert _post(service_url, h, key, h.tokens["school"], {"action": "learning_support", "status": "done"}).status_code == 201
    out = subprocess.run([sys.executable, "-m", "ews", "actions", "verify", "--json", "--home", str(h.root)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '"ok": true' in out.stdout
