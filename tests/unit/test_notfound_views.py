"""The not-found list's calendar arithmetic and what each token sees of it, on a list built in the test.

The list: census of 10 June 2024 (the one before it: 10 November 2023). School A (tambon 580101) has
six M1 cases and one M3 case; school B (tambon 580201) one P6 case, returned.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features.calendar import SchoolCalendar
from features.pointintime.notfound import NotFoundManifest, census_of, counts_by, previous_round
from serving.access import Principal
from serving.guard import match
from serving.notfound import LoadedList, area_cases, area_summary, school_cases
from serving.views import RequestError

CAL = SchoolCalendar()
CENSUS = dt.date(2024, 6, 10)
A, B = "1058000001", "1058000002"


def test_the_census_before_a_term_one_census_is_term_two_of_the_year_before() -> None:
    # 10 June 2024 is the term-1 census of 2567 BE; the census before it is term 2 of 2566, 10 November 2023.
    r = previous_round(CAL, CENSUS)
    assert (r.academic_year, r.term, r.round_type) == (2566, 2, "early")
    assert CAL.census_date(r.academic_year, r.term) == dt.date(2023, 11, 10)
    # and the census before a term-2 census is term 1 of the same year
    assert previous_round(CAL, dt.date(2023, 11, 10)).round_id == "2566-T1-early"
    assert census_of(CAL, "2567-T1-mid") == CENSUS


def test_a_date_that_is_no_census_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="2024-06-11 is not a census date"):
        previous_round(CAL, dt.date(2024, 6, 11))


def _list() -> LoadedList:
    rows = []
    for i in range(8):
        school, tambon, grade, state = ((A, "580101", "M1", "not_found") if i < 6 else
                                        (A, "580101", "M3", "not_found") if i == 6 else (B, "580201", "P6", "returned"))
        rows.append({
            "student_key": f"S{i:020d}", "census_date": CENSUS, "state": state, "evidence_complete": i != 0,
            "school_code": school, "school_name": f"school {school}", "tambon_code": tambon, "tambon_name": "t",
            "amphoe_code": tambon[:4], "amphoe_name": "a", "province_code": "58", "province_name": "p",
            "grade": grade, "last_census": dt.date(2023, 11, 10), "last_attendance_month": dt.date(2024, 2, 1),
            "returned_source": "dmc_census" if state == "returned" else None,
            "returned_on": dt.date(2024, 11, 10) if state == "returned" else None,
            "caveat": None, "awaited": None,
        })
    m = NotFoundManifest(census_date=CENSUS, previous_census=dt.date(2023, 11, 10), round_id="2566-T2-early",
                         as_of=dt.date(2024, 7, 15), population=100, cases=8, by_state={"not_found": 7, "returned": 1},
                         provisional=1, m6_untold=0, schools_without_census=0, pending_school_census=0, sources=[],
                         file="x", sha256="0")
    return LoadedList(manifest=m, rows=pd.DataFrame(rows), mtime=0.0)


SCHOOL_A = Principal("ta", "school", A, ())
SCHOOL_B = Principal("tb", "school", B, ())
AREA_5801 = Principal("ar", "area", None, ("5801",))
ANALYST = Principal("an", "analyst", None, ())


def test_a_school_sees_its_own_cases_with_names_and_no_other_schools() -> None:
    lst = _list()
    out = school_cases(lst, SCHOOL_A, A, {f"S{i:020d}": f"name {i}" for i in range(8)})
    assert [c["name"] for c in out["cases"]] == [f"name {i}" for i in range(7)]
    assert {c["school_code"] for c in out["cases"]} == {A}
    with pytest.raises(RequestError) as exc:
        school_cases(lst, SCHOOL_B, A, {})
    assert exc.value.status == 403


def test_tokens_other_than_the_school_see_no_names_even_when_names_are_passed() -> None:
    out = school_cases(_list(), ANALYST, A, {f"S{i:020d}": "leak" for i in range(8)})
    assert out["cases"] and all("name" not in c for c in out["cases"])


def test_pseudonymous_cases_hide_the_school_of_a_cell_smaller_than_k() -> None:
    out = area_cases(_list(), AREA_5801, "5801")
    shown = [c for c in out["cases"] if c["school_code"] is not None]
    hidden = [c for c in out["cases"] if c["school_code"] is None]
    # six M1 cases of school A share their cell (>= 5): shown; the lone M3 case loses its school
    assert len(shown) == 6 and {c["grade"] for c in shown} == {"M1"}
    assert len(hidden) == 1
    assert all("name" not in c for c in out["cases"])
    # the returned case of tambon 580201 is outside amphoe 5801
    assert len(out["cases"]) == 7


def test_area_counts_between_one_and_k_minus_one_are_withheld_with_the_counts_that_would_give_them_away() -> None:
    out = area_summary(_list(), ANALYST, "58")
    assert out["cases"] == 8 and out["suppressed_below"] == 5
    assert out["returned"] is None and out["provisional"] is None  # 1 each: fewer than 5
    # 8 cases = not_found + returned: a released 7 would give the returned 1 away by subtraction
    assert out["not_found"] is None
    parts = {p["code"]: p for p in out["parts"]}
    assert parts["5802"]["cases"] is None
    assert parts["5801"]["cases"] is None  # 8 - 7 = the 1 case of amphoe 5802
    assert parts["5802"]["not_found"] == 0  # an exact zero is no disclosure
    # the same count has the same fate in every response: amphoe 5801's own summary withholds its 7 too
    assert area_summary(_list(), ANALYST, "5801")["cases"] is None


def test_area_tokens_outside_their_area_and_school_tokens_get_no_area_view() -> None:
    for who, area in ((AREA_5801, "5802"), (SCHOOL_A, "58")):
        with pytest.raises(RequestError) as exc:
            area_summary(_list(), who, area)
        assert exc.value.status == 403


def test_counts_per_school_add_up_to_the_list() -> None:
    import pyarrow as pa

    table = pa.Table.from_pandas(_list().rows)
    rows = counts_by(table, "school")
    assert [(r["code"], r["cases"], r["returned"], r["provisional"]) for r in rows] == [(A, 7, 0, 1), (B, 1, 1, 0)]
    with pytest.raises(ValueError, match="level must be one of"):
        counts_by(table, "region")


def test_the_guard_knows_the_not_found_routes_and_the_permission_each_needs() -> None:
    for path, action in (("/ews/api/notfound", "list"), ("/ews/api/notfound/2024-06-10/schools/1058000001/cases", "list"),
                         ("/ews/api/notfound/2024-06-10/areas/58/summary", "summary"),
                         ("/ews/api/notfound/2024-06-10/areas/5801/cases", "list")):
        spec, ok = match("GET", path)
        assert spec is not None and ok and spec.action == action
        assert not match("POST", path)[1]
