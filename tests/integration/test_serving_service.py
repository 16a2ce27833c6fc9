"""The running service (real `bentoml serve`, real MLflow store) keeps every school to its own students."""

from __future__ import annotations

import io
import math
import sqlite3
import time

import httpx
import pytest

from features.pointintime.spec import FEATURES
from tests.integration.serving_fixtures import ServingHome

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(url: str, path: str, token: str | None, **params: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url + path, headers=headers, params={k: v for k, v in params.items() if v is not None}, timeout=30)


def test_probes_are_open_and_everything_else_needs_a_token(service_url: str, serving_home: ServingHome) -> None:
    assert httpx.get(service_url + "/livez").status_code == 200
    assert httpx.get(service_url + "/readyz").status_code == 200
    r = _get(service_url, f"/ews/api/rounds/{serving_home.round_id}/schools/{serving_home.school}/students", None)
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert _get(service_url, "/ews/api/rounds", "ews_deadbeef_nope").status_code == 401


def test_a_school_sees_its_ranked_list_with_names_rooms_and_thai_reasons(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    r = _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students", h.tokens["school"])
    assert r.status_code == 200
    rows = r.json()["students"]
    assert rows and all(x["school_code"] == h.school for x in rows)
    scores = [x["risk_score"] for x in rows if x["risk_score"] is not None]
    assert scores == sorted(scores, reverse=True)
    assert any(x.get("name") for x in rows) and "room" in rows[0]
    assert any(x["reasons_th"] and "ความเสี่ยง" in x["reasons_th"] for x in rows)


def test_filters_by_grade_room_and_group_return_only_matching_rows(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    rows = _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students", h.tokens["school"]).json()["students"]
    # A grade and room that hold a "normal" student, so the filtered list cannot be empty.
    pick = next(x for x in rows if x["risk_group"] == "normal")
    grade, room = pick["grade"], pick["room"]
    got = _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students", h.tokens["school"],
               grade=grade, room=room, group="normal").json()["students"]
    assert got, "the filter must keep the students that match it"
    assert len(got) < len(rows), "the filter must remove the students that do not match it"
    assert all(x["grade"] == grade and x["room"] == room and x["risk_group"] == "normal" for x in got)
    expected = [x["student_key"] for x in rows if (x["grade"], x["room"], x["risk_group"]) == (grade, room, "normal")]
    assert [x["student_key"] for x in got] == expected


ENDPOINTS = (
    "/ews/api/rounds/{round}/schools/{other}/students",
    "/ews/api/rounds/{round}/schools/{other}/students?format=csv",
    "/ews/api/rounds/{round}/schools/{other}/students?format=xlsx",
    "/ews/api/rounds/{round}/schools/{other}/students?grade=M3&group=problem",
    "/ews/api/rounds/{round}/areas/{area}/summary",
    "/ews/api/rounds/{round}/areas/{area}/students",
    "/ews/api/rounds/{round}/areas/{province}/students",
    "/ews/api/rounds/{round}/students/{other_key}/explanation",
    "/ews/api/rounds/{round}/students/{other_key}/replay",
)


@pytest.mark.parametrize("template", ENDPOINTS)
def test_a_school_token_never_gets_another_schools_students(
    service_url: str, serving_home: ServingHome, template: str,
) -> None:
    h = serving_home
    other_rows = _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.other_school}/students",
                      h.tokens["other_school"]).json()["students"]
    other_key = other_rows[0]["student_key"]
    path = template.format(round=h.round_id, other=h.other_school, area=h.area, province=h.area[:2], other_key=other_key)
    r = httpx.get(service_url + path, headers={"Authorization": f"Bearer {h.tokens['school']}"}, timeout=30)
    assert r.status_code in (403, 404)
    assert other_key not in r.text and h.other_school not in r.text.replace(path, "")


@pytest.mark.parametrize("path,status", [
    ("/ews/api/rounds/2599-T9-late/schools/{school}/students", 404),
    ("/ews/api/rounds/{round}/schools/12/students", 400),
    ("/ews/api/rounds/{round}/schools/{school}/students?grade=Z9", 400),
    ("/ews/api/rounds/{round}/schools/{school}/students?room=99", 400),
    ("/ews/api/rounds/{round}/schools/{school}/students?room=abc", 422),
    ("/ews/api/rounds/{round}/schools/{school}/students?group=bad", 400),
    ("/ews/api/rounds/{round}/schools/{school}/students?limit=0", 400),
    ("/ews/api/rounds/{round}/schools/{school}/students?format=pdf", 400),
    ("/ews/api/rounds/{round}/students/x'%20OR%201=1/explanation", 400),
    ("/ews/api/rounds/{round}/students/S0000000000000000000/explanation", 404),
])
def test_malformed_requests_get_a_clear_4xx(service_url: str, serving_home: ServingHome, path: str, status: int) -> None:
    h = serving_home
    r = httpx.get(service_url + path.format(round=h.round_id, school=h.school),
                  headers={"Authorization": f"Bearer {h.tokens['school']}"}, timeout=30)
    assert r.status_code == status
    assert r.text


def test_area_token_sees_its_area_without_names_and_nothing_outside(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    s = _get(service_url, f"/ews/api/rounds/{h.round_id}/areas/{h.area}/summary", h.tokens["area"])
    assert s.status_code == 200
    body = s.json()
    # Small counts are withheld (null) with the counts that would give them away: the groups add up
    # to the area's total when none is withheld, else at least two are, holding >= k pupils together.
    shown = sum(v for v in body["by_group"].values() if v is not None)
    withheld = [g for g, v in body["by_group"].items() if v is None]
    assert body["students"] is not None and body["parts"] and body["suppressed_below"] == 5
    assert (not withheld and body["students"] == shown) or (len(withheld) >= 2 and body["students"] - shown >= 5)
    rows = _get(service_url, f"/ews/api/rounds/{h.round_id}/areas/{h.area}/students", h.tokens["area"]).json()["students"]
    # A tambon hidden by disclosure control (docs/PRIVACY.md) is null; a shown one is inside the area.
    assert rows and all((x["tambon_code"] is None or x["tambon_code"].startswith(h.area)) and "name" not in x
                        for x in rows)
    assert sum(x["tambon_code"] is not None for x in rows) > len(rows) / 2
    # every student of the area, ranked: highest risk first, students without a score last
    from serving.views import MAX_LIST

    assert len(rows) == min(body["students"], MAX_LIST)
    scores = [-1.0 if x["risk_score"] is None else x["risk_score"] for x in rows]
    assert scores == sorted(scores, reverse=True)
    assert _get(service_url, f"/ews/api/rounds/{h.round_id}/areas/{h.area[:2]}/summary", h.tokens["area"]).status_code == 403


def test_an_explanation_has_every_contribution_adding_up_to_the_published_logit(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    key = _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students", h.tokens["school"]).json()["students"][0]["student_key"]
    e = _get(service_url, f"/ews/api/rounds/{h.round_id}/students/{key}/explanation", h.tokens["auditor"]).json()
    # Every catalogue feature is listed, or (sensitive: docs/PRIVACY.md) withheld and summed per group.
    listed = {f["feature"] for f in e["features"] if not f["feature"].startswith("withheld:")}
    assert listed | set(e["disclosure"]["withheld"]) == {f.name for f in FEATURES}
    assert not listed & set(e["disclosure"]["withheld"])
    total = sum(f["contribution"] for f in e["features"]) + e["base_value"]
    assert e["scale"] == "published_logit"
    assert abs(total - e["published_logit"]) < 1e-9
    assert abs(e["published_logit"] - math.log(e["risk_score"] / (1 - e["risk_score"]))) < 1e-9
    # the points start at the base probability and end at the published score
    points = sum(f["probability_points"] for f in e["features"]) / 100
    assert abs(e["base_probability"] + points - e["risk_score"]) < 1e-12
    # context shown once, protected attributes apart; neither is ever among the reasons
    assert set(e["context"]["features"]) == {f["feature"] for f in e["features"] if f["role"] == "context"}
    reason_groups = {r["group"] for r in e["reasons"]}
    assert not reason_groups & {f["group"] for f in e["features"]} - {f["group"] for f in e["features"] if f["role"] == "reason"}
    assert all(abs(r["contribution"]) >= math.log(1.10) for r in e["reasons"])
    assert "name" not in e


def test_audit_replay_recomputes_the_published_score_exactly(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    key = _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students", h.tokens["school"]).json()["students"][0]["student_key"]
    r = _get(service_url, f"/ews/api/rounds/{h.round_id}/students/{key}/replay", h.tokens["auditor"])
    assert r.status_code == 200 and r.json()["matches"] is True
    assert _get(service_url, f"/ews/api/rounds/{h.round_id}/students/{key}/replay", h.tokens["analyst"]).status_code == 403


def test_downloads_have_thai_headers_and_only_the_schools_rows(service_url: str, serving_home: ServingHome) -> None:
    from openpyxl import load_workbook

    h = serving_home
    path = f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students"
    csv = _get(service_url, path, h.tokens["school"], format="csv")
    assert csv.status_code == 200 and "ลำดับ" in csv.content.decode("utf-8-sig").splitlines()[0]
    x = _get(service_url, path, h.tokens["school"], format="xlsx")
    ws = load_workbook(io.BytesIO(x.content)).active
    rows = list(ws.iter_rows(values_only=True))
    assert "ชื่อ-สกุล" in rows[1] and "กลุ่ม" in rows[1]
    n = len(_get(service_url, path, h.tokens["school"]).json()["students"])
    assert len(rows) - 2 == n


def test_a_list_goes_gzipped_to_clients_that_take_it_and_plain_to_those_that_do_not(
        service_url: str, serving_home: ServingHome) -> None:
    import gzip

    h = serving_home
    url = f"{service_url}/ews/api/rounds/{h.round_id}/schools/{h.school}/students"
    auth = {"Authorization": f"Bearer {h.tokens['school']}"}
    for fmt in ("json", "csv"):
        with httpx.Client(timeout=30) as client:  # raw bytes: no automatic decoding
            zipped = client.send(client.build_request("GET", url, params={"format": fmt},
                                                      headers={**auth, "Accept-Encoding": "gzip"}), stream=True)
            wire = b"".join(zipped.iter_raw())
            plain = client.get(url, params={"format": fmt}, headers={**auth, "Accept-Encoding": "identity"})
        assert zipped.status_code == plain.status_code == 200
        assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
        assert zipped.headers["vary"] == plain.headers["vary"] == "Accept-Encoding"
        assert gzip.decompress(wire) == plain.content and len(wire) < len(plain.content) / 3, fmt


def test_ad_hoc_scoring_takes_validated_lists_and_only_from_analysts(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    row = {f.name: None for f in FEATURES}
    row.update({"grade": "M3", "grade_level": 12, "term": 1, "att_rate_12m": 0.7, "sex": "M", "age": 15.0})
    ok = httpx.post(service_url + "/score", json={"rows": [row]}, timeout=30,
                    headers={"Authorization": f"Bearer {h.tokens['analyst']}"})
    assert ok.status_code == 200 and 0 <= ok.json()["results"][0]["risk_score"] <= 1
    bad = dict(row, att_rate_12m="lots")
    r = httpx.post(service_url + "/score", json={"rows": [bad]}, timeout=30,
                   headers={"Authorization": f"Bearer {h.tokens['analyst']}"})
    assert 400 <= r.status_code < 500
    missing = {k: v for k, v in row.items() if k != "age"}
    r = httpx.post(service_url + "/score", json={"rows": [missing]}, timeout=30,
                   headers={"Authorization": f"Bearer {h.tokens['analyst']}"})
    assert 400 <= r.status_code < 500
    r = httpx.post(service_url + "/score", json={"rows": [row]}, timeout=30,
                   headers={"Authorization": f"Bearer {h.tokens['school']}"})
    assert r.status_code == 403


def test_every_read_of_student_data_is_in_the_access_log_by_token_id(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    _get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students", h.tokens["school"])
    con = sqlite3.connect(h.root / "serving" / "access.sqlite")
    rows = con.execute("SELECT token_id, action, round_id, target FROM access_log").fetchall()
    assert (h.token_ids["school"], "school_list:json", h.round_id, h.school) in rows
    dump = "\n".join(con.iterdump())
    assert all(t not in dump for t in h.tokens.values())
    log = (h.root / "serve.log").read_text()
    assert all(t not in log for t in h.tokens.values())


def test_a_rounds_monitoring_report_is_served_to_analysts_only(service_url: str, serving_home: ServingHome) -> None:
    h = serving_home
    # The fixture published two rounds and monitored only the first (`ews monitor` writes its report).
    unmonitored = f"/ews/api/rounds/{h.census_round}/monitoring"
    assert _get(service_url, unmonitored, h.tokens["analyst"]).status_code == 404  # not monitored yet: says so
    path = f"/ews/api/rounds/{h.monitored_round}/monitoring"
    r = _get(service_url, path, h.tokens["analyst"])
    assert r.status_code == 200 and "<html" in r.text.lower()
    j = _get(service_url, path, h.tokens["admin"], format="json")
    assert j.status_code == 200 and j.json()
    for role in ("school", "area", "auditor"):
        assert _get(service_url, path, h.tokens[role]).status_code == 403
    assert _get(service_url, "/ews/api/rounds/../../etc/monitoring", h.tokens["analyst"]).status_code in (400, 404)
    assert _get(service_url, path, h.tokens["analyst"], format="pdf").status_code == 400


def test_a_round_with_unscored_new_students_lists_them_with_null_scores(service_url: str, serving_home: ServingHome) -> None:
    """The first round of a school year, right after the census, has newly enrolled pupils with no
    attendance, grades or screening yet: they are listed with their reason and a null score, and
    the scored students' missing reason is null, not an error."""
    import pyarrow.parquet as pq

    from features.home import EwsHome
    from serving.snapshot import published

    h = serving_home
    round_id = h.census_round  # the census of the year after the fixture's round, published by the fixture
    assert round_id == f"{int(h.round_id[:4]) + 1}-T1-early"
    ref = published(EwsHome(root=h.root), round_id)
    df = pq.read_table(ref.folder / "students.parquet", columns=["school_code", "scored"]).to_pandas()
    unscored = df.loc[~df["scored"], "school_code"].value_counts()
    assert len(unscored) > 0, "the world should have newly enrolled pupils without history in this round"
    school = str(unscored.index[0])
    assert school == h.census_school
    token = h.tokens["census_school"]  # created by the fixture for this school
    path = f"/ews/api/rounds/{round_id}/schools/{school}/students"
    r = _get(service_url, path, token)
    assert r.status_code == 200, r.text
    rows = r.json()["students"]
    missing = [x for x in rows if x["risk_score"] is None]
    scored = [x for x in rows if x["risk_score"] is not None]
    assert len(missing) == int(unscored.iloc[0]) and len(scored) == int((df["school_code"] == school).sum()) - len(missing)
    assert all(x["risk_group"] is None and x["no_score_reason"] and x["reasons_th"] for x in missing)
    assert missing and scored, "the school should have pupils with and without a score"
    assert all(x["no_score_reason"] is None and x["risk_group"] for x in scored)
    assert rows[: len(scored)] == scored  # unscored pupils come after every scored one
    for group in ("problem", "at_risk", "normal"):
        assert _get(service_url, path, token, group=group).status_code == 200
    x = _get(service_url, path, token, format="xlsx")
    assert x.status_code == 200
    key = missing[0]["student_key"]
    e = _get(service_url, f"/ews/api/rounds/{round_id}/students/{key}/explanation", token)
    assert e.status_code == 200 and e.json()["scored"] is False and e.json()["no_score_reason"]


def test_a_cached_school_list_is_the_same_answer_as_its_first_render_and_each_read_is_logged(
        service_url: str, serving_home: ServingHome) -> None:
    # The first request of a view renders it (in the worker's threadpool); later ones are answered
    # from the cache on the event loop. A client must not be able to tell which it got, and the
    # access log must have a line for every read either way.
    h = serving_home
    path = f"/ews/api/rounds/{h.round_id}/schools/{h.school}/students"
    tid = h.token_ids["school"]

    def lines() -> int:
        with sqlite3.connect(h.root / "serving" / "access.sqlite") as con:
            return con.execute("SELECT count(*) FROM access_log WHERE token_id = ? AND target = ?", [tid, h.school]).fetchone()[0]

    kept = ("content-type", "content-disposition", "content-encoding", "vary", "cache-control", "content-length")
    before = lines()
    # limit=7 is asked by no other test: the first answer of each format is a render in this worker
    # or the other; the next ones come from the caches. Exports are paced under the token's rate
    # limit (1 a second after a burst other tests may have spent).
    for fmt, n in (("json", 5), ("csv", 3), ("xlsx", 3)):
        answers = []
        for _ in range(n):
            answers.append(_get(service_url, path, h.tokens["school"], format=fmt, limit=7))
            time.sleep(0 if fmt == "json" else 1.05)
        assert {a.status_code for a in answers} == {200}, fmt
        assert len({a.content for a in answers}) == 1, fmt
        assert len({tuple(a.headers.get(k) for k in kept) for a in answers}) == 1, fmt
    assert lines() == before + 11
    refused = [_get(service_url, f"/ews/api/rounds/{h.round_id}/schools/{h.other_school}/students", h.tokens["school"])
               for _ in range(3)]
    assert [r.status_code for r in refused] == [403] * 3 and lines() == before + 11
