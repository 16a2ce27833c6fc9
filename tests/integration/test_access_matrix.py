"""The full access matrix against the running service: every route x every role x own / foreign
scope, /metrics and the API description included, as one parametrised test.

Each case asserts the status the role should get and that the answer carries no student key and
no school code outside the token's scope ("a foreign read"); /metrics and /docs.json carry none
at all. The tokens are made here (one per role), so rate buckets spent elsewhere do not matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from features.home import EwsHome
from features.pointintime.spec import FEATURES
from tests.integration.serving_fixtures import ServingHome

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROLES = ("school", "area", "analyst", "auditor", "admin", "monitoring")
GLOBAL = ("analyst", "auditor", "admin")
R = "/ews/api/rounds/{round}"
ROUTES = {
    "whoami": ("GET", "/ews/api/whoami"),
    "rounds": ("GET", "/ews/api/rounds"),
    "school_list": ("GET", R + "/schools/{school}/students"),
    "school_csv": ("GET", R + "/schools/{school}/students?format=csv"),
    "area_summary": ("GET", R + "/areas/{area}/summary"),
    "area_list": ("GET", R + "/areas/{area}/students"),
    "explanation": ("GET", R + "/students/{key}/explanation"),
    "replay": ("GET", R + "/students/{key}/replay"),
    "monitoring": ("GET", R + "/monitoring?format=json"),
    "uplift": ("GET", R + "/uplift"),
    "score": ("POST", "/score"),
    "metrics": ("GET", "/metrics"),
    "docs": ("GET", "/docs.json"),
}
KEY = re.compile(r"S[0-9a-f]{20}")
CODE = re.compile(r"(?<![0-9])[0-9]{10}(?![0-9])")


@dataclass(frozen=True)
class World:
    tokens: dict[str, str]
    keys_of_school: dict[str, frozenset[str]]
    tambon_of_school: dict[str, str]
    own: dict[str, str]      # school, area, key inside the scope of the school and area tokens
    foreign: dict[str, str]  # school, area, key outside both


_WORLDS: dict[str, World] = {}


def _world(h: ServingHome) -> World:
    if str(h.root) not in _WORLDS:
        _WORLDS[str(h.root)] = _make_world(h)
    return _WORLDS[str(h.root)]


def _make_world(h: ServingHome) -> World:
    import pyarrow.parquet as pq

    from serving.access import create_token
    from serving.snapshot import published

    ref = published(EwsHome(root=h.root), h.round_id)
    assert ref is not None
    df = pq.read_table(ref.folder / "students.parquet", columns=["student_key", "school_code", "tambon_code"]).to_pandas()
    keys = {str(s): frozenset(g["student_key"]) for s, g in df.groupby("school_code")}
    tambon = {str(s): str(a) for s, a in df.groupby("school_code")["tambon_code"].first().items()}
    # The area token covers the tambon of the fixture's school (a small test world may have one
    # amphoe only, but has several tambons); foreign is the largest school of another tambon.
    own_area = tambon[h.school]
    outside = sorted(s for s, a in tambon.items() if a != own_area)
    assert outside, "the test world has one tambon only: no foreign area to try"
    foreign_school = max(outside, key=lambda s: len(keys[s]))
    home = EwsHome(root=h.root)
    tokens = {}
    for role in ROLES:
        school = h.school if role == "school" else None
        areas = [own_area] if role == "area" else None
        tokens[role] = create_token(home, role, school, areas, label="access matrix")[0]
    return World(
        tokens=tokens, keys_of_school=keys, tambon_of_school=tambon,
        own={"school": h.school, "area": own_area, "key": sorted(keys[h.school])[0]},
        foreign={"school": foreign_school, "area": tambon[foreign_school], "key": sorted(keys[foreign_school])[0]},
    )


def expected(route: str, role: str, scope: str) -> set[int]:
    if route in ("whoami", "rounds", "docs"):
        return {200}
    if route == "metrics":
        return {200} if role in ("monitoring", "admin") else {403}
    if route == "score":
        return {200} if role in ("analyst", "admin") else {403}
    if route == "monitoring":  # 404 until `ews monitor` has written the round's report
        return {200, 404} if role in ("analyst", "admin") else {403}
    if route == "uplift":  # 404 until `ews monitor --actions` has written the round's uplift view
        return {200, 404} if role in GLOBAL else {403}
    if role == "monitoring":
        return {403}
    if route == "replay":
        return {200} if role in ("auditor", "admin") else {403}
    if role in GLOBAL:
        return {200}
    if route in ("area_summary", "area_list") and role == "school":
        return {403}
    if scope == "own":
        return {200}
    return {403, 404} if route == "explanation" else {403}


def _allowed(w: World, role: str, route: str) -> tuple[set[str], set[str]]:
    """(student keys, school codes) a token of `role` may read on `route`."""
    if route in ("metrics", "docs") or role == "monitoring":
        return set(), set()
    if role in GLOBAL:
        schools = set(w.keys_of_school)
    elif role == "school":
        schools = {w.own["school"]}
    else:
        schools = {s for s, a in w.tambon_of_school.items() if a.startswith(w.own["area"])}
    return {k for s in schools for k in w.keys_of_school[s]}, schools


CASES = [(route, role, scope) for route in ROUTES for role in ROLES for scope in ("own", "foreign")]


@pytest.mark.parametrize("route,role,scope", CASES, ids=[f"{a}-{b}-{c}" for a, b, c in CASES])
def test_access_matrix(service_url: str, serving_home: ServingHome, route: str, role: str, scope: str) -> None:
    h = serving_home
    w = _world(h)
    target = w.own if scope == "own" else w.foreign
    method, template = ROUTES[route]
    path = template.format(round=h.round_id, **target)
    headers = {"Authorization": f"Bearer {w.tokens[role]}"}
    if method == "POST":
        row = {f.name: None for f in FEATURES}
        row.update({"grade": "M3", "grade_level": 12, "term": 1, "att_rate_12m": 0.7, "sex": "M", "age": 15.0})
        r = httpx.post(service_url + path, json={"rows": [row]}, headers=headers, timeout=30)
    else:
        r = httpx.get(service_url + path, headers=headers, timeout=30)
    assert r.status_code in expected(route, role, scope), (r.status_code, r.text[:300])
    if path.startswith("/ews/api") or path in ("/score", "/metrics"):
        assert r.headers.get("cache-control") == "no-store"
    # a foreign read: any key or school code outside the token's scope, in any answer
    # what the caller sent itself (the path, the codes and key in it) may be echoed back
    text = r.content.decode("utf-8", errors="replace").replace(path, "")
    for sent in (target["school"], target["key"]):
        text = text.replace(sent, "")
    keys, schools = _allowed(w, role, route)
    leaked_keys = set(KEY.findall(text)) - keys
    leaked_schools = (set(CODE.findall(text)) & set(w.keys_of_school)) - schools
    assert not leaked_keys and not leaked_schools, (len(leaked_keys), len(leaked_schools))
