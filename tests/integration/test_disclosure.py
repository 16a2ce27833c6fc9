"""Disclosure control on a simulated world's published rounds: what area, analyst and auditor tokens
see of a pupil identifies at most 5% of pupils (docs/PRIVACY.md), while the school's own view —
exact age, sex, school, grade — is unique for most of them (so the measure can fail); no sensitive
screening value and no age finer than whole years reaches those roles.

Works in-process on the published snapshots (`serving.views`, the functions the service calls),
on both rounds of the ladder's scored world: a mid-year round and the next year's first round.
"""

from __future__ import annotations

from typing import Any

import pytest

from features.home import EwsHome
from serving import views
from serving.access import Principal
from serving.disclosure import K_ANONYMITY, SENSITIVE, unique_share
from serving.snapshot import published
from serving.store import LoadedRound, load_round
from tests.support.worlds import ScoredWorld

pytestmark = pytest.mark.integration

MAX_UNIQUE = 0.05  # the stated ceiling (docs/PRIVACY.md)
# What someone who knows a child could match a response on (from outside: the school, the class,
# sex, age or birth date, nationality status, a disability) and the school features that name the school.
QUASI = ("school_code", "grade", "sex", "age", "over_age_years", "non_thai_id", "disability", "school_students",
         "school_distance_km", "school_size_class", "school_remote", "region", "grade_level")


@pytest.fixture(scope="module", params=["round_id", "census_round"])
def rnd(request: pytest.FixtureRequest, scored_world: ScoredWorld) -> LoadedRound:
    ref = published(EwsHome(root=scored_world.root), getattr(scored_world, request.param))
    assert ref is not None
    return load_round(ref)


def _seen(e: dict[str, Any]) -> dict[str, Any]:
    values = e.get("values") or {x["feature"]: x["value"] for x in e["features"]}
    return {"school_code": e["school_code"], "grade": e["grade"], **{q: values.get(q) for q in QUASI[2:]}}


def _explanations(rnd: LoadedRound, who_of: Any) -> list[dict[str, Any]]:
    keys = rnd.rows["student_key"].tolist()
    schools = rnd.rows["school_code"].tolist()
    return [views.explanation(rnd, who_of(s), k) for k, s in zip(keys, schools, strict=True)]


def _everywhere(role: str, rnd: LoadedRound) -> Principal:
    provinces = tuple(sorted({str(t)[:2] for t in rnd.rows["tambon_code"].dropna()}))
    return Principal("t", role, None, provinces if role == "area" else ())


@pytest.mark.parametrize("role", ["area", "analyst", "auditor"])
def test_what_a_non_school_role_sees_identifies_at_most_five_percent_of_pupils(rnd: LoadedRound, role: str) -> None:
    who = _everywhere(role, rnd)
    seen = _explanations(rnd, lambda _s: who)
    assert len(seen) == len(rnd.rows) > 500
    assert unique_share([_seen(e) for e in seen], QUASI) <= MAX_UNIQUE
    for e in seen:
        names = {x["feature"] for x in e.get("features", [])} | set(e.get("values", {}))
        assert not names & SENSITIVE
        for x in e.get("features", []):
            if x["feature"] == "age" and x["value"] is not None:
                assert x["value"] == int(x["value"])  # whole years, never the birth date to a day
            if x["feature"].startswith("withheld:"):
                assert x["value"] is None
        if e["scored"]:  # the withheld features still add up: nothing silently dropped from the sum
            shown = sum(x["contribution"] for x in e["features"])
            assert shown == pytest.approx(e["sum_of_contributions"], abs=1e-9)
    # Area lists: every school shown in a row stands for a (school, grade) cell of >= k pupils.
    province = sorted(c for c in rnd.by_area if len(c) == 2)[0]
    rows = views.area_list(rnd, who, province)["students"]
    assert rows
    cells = rnd.rows.groupby(["school_code", "grade"]).size()
    for r in rows:
        if r["school_code"] is not None:
            assert cells[(r["school_code"], r["grade"])] >= K_ANONYMITY
    assert unique_share(rows, ("school_code", "grade", "tambon_code")) <= MAX_UNIQUE


def test_the_schools_own_view_is_unique_for_most_pupils_so_the_measure_can_fail(rnd: LoadedRound) -> None:
    seen = _explanations(rnd, lambda s: Principal("t", "school", s, ()))
    assert unique_share([_seen(e) for e in seen], QUASI) > MAX_UNIQUE
