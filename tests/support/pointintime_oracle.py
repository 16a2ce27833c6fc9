"""A slow, obviously-correct oracle for point-in-time features and labels, written row by row.

It exists to check the compiled SQL (`features/pointintime/compile.py` over `groups.py`): the
set-based query and these loops must agree on a sample of students. It deliberately shares
nothing with the SQL except the calendar and the contract's vocabulary: each rule, threshold and
window is re-stated here in plain Python over the rows of one student (or, for the school's past
dropout rate, over every student of a school). Test code only; never used in production.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import duckdb

from features.calendar import SchoolCalendar, ScoringRound
from features.contract import CARE_DIMENSIONS, CCT_DIMENSIONS, delivery_due
from features.ids import GRADE_TYPICAL_AGE, GRADES

Row = dict[str, Any]
SOURCES = ("dmc_census", "attendance", "grades", "cct_screening", "care_screening", "welfare_links",
           "other_enrolment", "ewe_training", "exits", "tzd_cases")


class Warehouse:
    """Every linked row, grouped by student, plus the registries: read once, then looked up."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.by_student: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
        for name in SOURCES:
            for row in _rows(con, f"SELECT * FROM wh.linked_{name} WHERE student_key IS NOT NULL"):
                self.by_student[row["student_key"]][name].append(row)
        self.census_deliveries = _rows(con, "SELECT census_date, school_code, known_at, grade, tambon_code "
                                            "FROM wh.src_dmc_census")
        self.deliveries = _rows(con, "SELECT f.source, d.delivered_on FROM wh.ingested_files f "
                                     "JOIN wh.deliveries d USING (delivery_id)")
        self.schools = _rows(con, "SELECT * FROM wh.src_schools")
        self.areas = _rows(con, "SELECT * FROM wh.src_areas")

    def src(self, key: str, name: str) -> list[Row]:
        return self.by_student.get(key, {}).get(name, [])


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[Row]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _latest(rows: list[Row]) -> Row:
    """The latest known version of a record: known_at, then delivery_id, then line."""
    return max(rows, key=lambda r: (r["known_at"], r["delivery_id"], r["source_line"]))


def _month_start(d: dt.date) -> dt.date:
    return d.replace(day=1)


def _rate(rows: list[Row], num: str = "days_present") -> float | None:
    days = sum(r["school_days"] for r in rows)
    return sum(r[num] for r in rows) / days if rows and days else None


def _previous_term(r: ScoringRound) -> tuple[int, int]:
    return (r.academic_year - 1, 2) if r.term == 1 else (r.academic_year, 1)


def enrolled(wh: Warehouse, key: str, census: dt.date, known_by: dt.date) -> Row | None:
    """The student's census row at `census`, the latest version known by `known_by`."""
    rows = [c for c in wh.src(key, "dmc_census") if c["census_date"] == census and c["known_at"] <= known_by]
    return _latest(rows) if rows else None


def label(wh: Warehouse, cal: SchoolCalendar, r: ScoringRound, key: str, cutoff: dt.date) -> int | None:
    """1 dropout, 0 continued or left for another reason, None (unknown) while the evidence is
    incomplete: the student's school's horizon census not known, or a source that could show a path
    neither delivered (after the period holding the horizon) nor overdue; None too for an M6 pupil
    with term-2 final marks and no path and no exits row (completed or left, not told apart)."""
    census = cal.census_date(r.academic_year, r.term)
    target = cal.next_census(r.academic_year, r.term)[2]
    me = enrolled(wh, key, census, cutoff)
    school = me["school_code"] if me else None
    if not any(c["census_date"] == target and c["school_code"] == school and c["known_at"] <= cutoff
               for c in wh.census_deliveries):
        return None
    # Moving up at the year's end (P6 -> M1, M3 -> M4) into a school whose horizon census is missing,
    # one that took entrants of that grade from the pupil's home tambon in the year before: unknown.
    entered = {"P6": "M1", "M3": "M4"}.get(me["grade"]) if me else None
    if entered and cal.next_census(r.academic_year, r.term)[0] > r.academic_year:
        delivered = {c["school_code"] for c in wh.census_deliveries
                     if c["census_date"] == target and c["known_at"] <= cutoff}
        if any(c["grade"] == entered and c["tambon_code"] == me["tambon_code"] and c["known_at"] <= cutoff
               and target - dt.timedelta(days=400) <= c["census_date"] < target and c["school_code"] not in delivered
               for c in wh.census_deliveries):
            return None
    for source, period in (("other_enrolment", None), ("ewe_training", None), ("exits", "term_end"), ("tzd_cases", None),
                           ("grades", "term_end")):
        due = delivery_due(source, period)
        start = due.period_end(cal, target)
        arrived = any(d["source"] == source and start <= d["delivered_on"] <= cutoff for d in wh.deliveries)
        if not arrived and due.overdue_on(cal, target) > cutoff:
            return None
    if any(c["census_date"] == target and c["known_at"] <= cutoff for c in wh.src(key, "dmc_census")):
        return 0
    near = dt.timedelta(days=75)
    if any(target - near <= o["record_date"] <= target + near and o["record_date"] > census and o["known_at"] <= cutoff
           for o in wh.src(key, "other_enrolment")):
        return 0
    if any(target - dt.timedelta(days=200) <= t["record_date"] <= target + near and t["record_date"] > census
           and t["known_at"] <= cutoff for t in wh.src(key, "ewe_training")):
        return 0
    not_dropout = {"completed", "death", "moved_abroad", "to_vocational", "to_non_formal", "to_work_training"}
    for x in wh.src(key, "exits"):
        if census < x["exit_date"] <= target and x["known_at"] <= cutoff and (
                x["exit_type"] in not_dropout
                or (x["exit_type"] == "transfer_out" and x["destination_school_code"] is not None)):
            return 0
    if any(census < z["updated_on"] <= target + near and z["known_at"] <= cutoff and z["outcome"] == "moved_abroad"
           for z in wh.src(key, "tzd_cases")):
        return 0
    # An M6 pupil with term-2 final marks (any: a 0, ร or มส can be remedied before the certificate)
    # and no exits row: completed or left at the year end, nothing delivered tells which, so the
    # label is unknown, not dropout.
    for g in wh.src(key, "grades"):
        if not (census < g["assessed_on"] <= target and g["known_at"] <= cutoff
                and g["assessment"] == "final" and g["term"] == 2):
            continue
        window = g["assessed_on"] - dt.timedelta(days=200)
        was_m6 = any(c["grade"] == "M6" and c["known_at"] <= cutoff and window <= c["census_date"] <= g["assessed_on"]
                     for c in wh.src(key, "dmc_census"))
        no_exit = not any(x["known_at"] <= cutoff and x["exit_date"] >= window for x in wh.src(key, "exits"))
        if was_m6 and no_exit:
            return None
    # Seen at the census after the horizon at a school whose census before it never arrived: a move
    # into that school at the year's end, most likely on the missing census.
    within = dt.timedelta(days=215)
    for c in wh.src(key, "dmc_census"):
        if not (target < c["census_date"] <= target + within and c["known_at"] <= cutoff):
            continue
        if not any(d["school_code"] == c["school_code"] and c["census_date"] - within <= d["census_date"] < c["census_date"]
                   and d["known_at"] <= cutoff for d in wh.census_deliveries):
            return None
    return 1


def past_dropout_rates(wh: Warehouse, cal: SchoolCalendar, r: ScoringRound, as_of: dt.date) -> dict[str, float | None]:
    """Per school: dropout rate over the early rounds of the last two years whose outcome was known
    before as_of (students as enrolled then); None under 10 labelled students."""
    labels: dict[str, list[int]] = defaultdict(list)
    for y in range(r.academic_year - 2, r.academic_year + 1):
        for t in (1, 2):
            e = ScoringRound(academic_year=y, term=t, round_type="early")
            if not (cal.next_census(y, t)[2] < as_of and cal.as_of(e.round_id) < as_of):
                continue
            census = cal.census_date(y, t)
            for key in wh.by_student:
                row = enrolled(wh, key, census, as_of)
                if row is None:
                    continue
                lab = label(wh, cal, e, key, as_of)
                if lab is not None:
                    labels[row["school_code"]].append(lab)
    return {s: (sum(v) / len(v) if len(v) >= 10 else None) for s, v in labels.items()}


def _registry(rows: list[Row], key: str, as_of: dt.date) -> dict[str, Row]:
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row["known_at"] <= as_of:
            out[row[key]].append(row)
    return {k: _latest(v) for k, v in out.items()}


def reference_features(
    con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound, student_keys: list[str],
) -> dict[str, Row]:
    """Every feature and fairness column for the given students, one dict per student."""
    wh = Warehouse(con)
    as_of = cal.as_of(r.round_id)
    census = cal.census_date(r.academic_year, r.term)
    term_start = cal.term(r.term).starts.in_year(r.academic_year)
    py, pt = _previous_term(r)
    prev_start, prev_end = cal.term(pt).starts.in_year(py), cal.term(pt).ends.in_year(py)
    m12 = as_of - dt.timedelta(days=365)
    schools = _registry(wh.schools, "school_code", as_of)
    areas = _registry(wh.areas, "tambon_code", as_of)
    past_rates = past_dropout_rates(wh, cal, r, as_of)
    out: dict[str, Row] = {}
    for key in student_keys:
        def src(name: str) -> list[Row]:
            return wh.src(key, name)

        me = enrolled(wh, key, census, as_of)
        if me is None:
            continue
        f: Row = {}
        # attendance: latest known version per month, months of the last 12
        by_month: dict[dt.date, list[Row]] = defaultdict(list)
        for a in src("attendance"):
            if a["known_at"] <= as_of and a["year_month"] <= as_of and a["school_days"] > 0:
                by_month[a["year_month"]].append(a)
        months = {m: _latest(v) for m, v in by_month.items()}
        last12 = sorted((m for m in months if m >= _month_start(m12)), reverse=True)
        rows12 = [months[m] for m in last12]
        f["att_rate_term"] = _rate([months[m] for m in last12 if m >= _month_start(term_start)])
        f["att_rate_prev_term"] = _rate(
            [a for m, a in months.items() if _month_start(prev_start) <= m <= prev_end])
        f["att_rate_12m"] = _rate(rows12)
        f["att_rate_last_month"] = _rate(rows12[:1])
        f["att_trend_3m"] = (_rate(rows12[:3]) - _rate(rows12[3:6])) if len(rows12) >= 4 else None  # type: ignore[operator]
        f["att_unexcused_rate_12m"] = _rate(rows12, "days_absent")
        f["att_chronic_absence"] = None if f["att_rate_prev_term"] is None else f["att_rate_prev_term"] <= 0.9
        f["att_below_cct_85"] = None if f["att_rate_12m"] is None else f["att_rate_12m"] < 0.85
        f["att_months_known"] = len(rows12)
        # grades: latest known version per (year, term, assessment)
        by_exam: dict[tuple[int, int, str], list[Row]] = defaultdict(list)
        for g in src("grades"):
            if g["known_at"] <= as_of and g["assessed_on"] <= as_of:
                by_exam[(g["academic_year"], g["term"], g["assessment"])].append(g)
        exams = {k: _latest(v) for k, v in by_exam.items()}
        finals = sorted(((k, g) for k, g in exams.items() if k[2] == "final"), key=lambda kg: kg[0][:2], reverse=True)
        last = finals[0][1] if finals else None
        f["gpa_last"] = last["gpa"] if last else None
        f["gpa_trend"] = (
            last["gpa"] - finals[1][1]["gpa"]
            if last and len(finals) > 1 and last["gpa"] is not None and finals[1][1]["gpa"] is not None else None
        )
        interim = exams.get((r.academic_year, r.term, "interim"))
        f["gpa_interim"] = interim["gpa"] if interim else None
        for col, name in (("n_mark_0", "marks_0_last"), ("n_mark_r", "marks_r_last"),
                          ("n_mark_ms", "marks_ms_last"), ("n_mark_mp", "marks_mp_last")):
            f[name] = last[col] if last else None
        recent = [g for _, g in finals if g["assessed_on"] > m12]
        f["failing_marks_12m"] = sum(g["n_mark_0"] + g["n_mark_r"] + g["n_mark_ms"] for g in recent) if recent else None
        f["failing_marks_interim"] = (
            interim["n_mark_0"] + interim["n_mark_r"] + interim["n_mark_ms"] if interim else None)
        # CCT: the latest screening of the last 12 months
        cct = [c for c in src("cct_screening") if c["known_at"] <= as_of and m12 < c["screened_on"] <= as_of]
        c = max(cct, key=lambda x: (x["screened_on"], x["known_at"], x["delivery_id"], x["source_line"])) if cct else None
        f["cct_screened"] = c is not None
        f["income_per_person"] = float(c["income_per_person"]) if c else None
        f["extremely_poor"] = c["income_per_person"] <= 3000 if c else None
        f["hh_deprivations"] = sum(int(c[d]) for d in CCT_DIMENSIONS) if c else None
        for d in CCT_DIMENSIONS:
            f[d] = c[d] if c else None
        f["household_size"] = float(c["household_size"]) if c else None
        f["caretaker"] = c["caretaker"] if c else None
        f["travel_minutes"] = float(c["travel_minutes"]) if c else None
        f["travel_mode"] = c["travel_mode"] if c else None
        care = [x for x in src("care_screening") if x["known_at"] <= as_of and m12 < x["screened_on"] <= as_of]
        k = max(care, key=lambda x: (x["screened_on"], x["known_at"], x["delivery_id"], x["source_line"])) if care else None
        code = {"ปกติ": 0, "เสี่ยง": 1, "มีปัญหา": 2}
        f["care_screened"] = k is not None
        f["care_at_risk_count"] = sum(k[d] == "เสี่ยง" for d in CARE_DIMENSIONS) if k else None
        f["care_problem_count"] = sum(k[d] == "มีปัญหา" for d in CARE_DIMENSIONS) if k else None
        for d in ("learning", "behaviour_emotion", "family", "economic", "substances", "sexual_behaviour"):
            f[f"care_{d}"] = code[k[d]] if k else None
        links = {w["link_type"] for w in src("welfare_links") if w["known_at"] <= as_of and w["record_date"] <= as_of}
        f["welfare_disability_card"] = "disability_card" in links
        f["welfare_chronic_illness"] = "chronic_illness" in links
        f["welfare_bedridden_member"] = "bedridden_household_member" in links
        f["welfare_teen_pregnancy"] = "teen_pregnancy" in links
        f["welfare_state_card"] = "state_welfare_card" in links
        # census history up to this census
        by_census: dict[dt.date, list[Row]] = defaultdict(list)
        for h in src("dmc_census"):
            if h["known_at"] <= as_of and h["census_date"] <= census:
                by_census[h["census_date"]].append(h)
        hist = [_latest(by_census[d]) for d in sorted(by_census)]
        moves = 0
        for prev, cur in zip(hist, hist[1:]):
            if cur["census_date"] > census - dt.timedelta(days=730) and prev["school_code"] != cur["school_code"]:
                moves += 1
        f["school_moves_2y"] = moves
        years_per_grade: dict[str, set[int]] = defaultdict(set)
        for h in hist:
            years_per_grade[h["grade"]].add(h["academic_year"])
        f["repeated_grade"] = any(len(v) > 1 for v in years_per_grade.values())
        june10 = cal.census_date(r.academic_year, 1)
        # The warehouse keeps the birth month; the birthday is taken as its 15th (groups.py).
        # A census row whose birth date failed the age rule keeps the row with the field empty.
        bd = me["birth_month"].replace(day=15) if me["birth_month"] is not None else None
        if bd is None:
            f["over_age_years"] = None
        else:
            completed = june10.year - bd.year - ((june10.month, june10.day) < (bd.month, bd.day))
            f["over_age_years"] = max(0, completed - GRADE_TYPICAL_AGE[me["grade"]])
        f["censuses_known"] = sum(1 for h in hist if h["census_date"] < census)
        f["grade"] = me["grade"]
        f["grade_level"] = GRADES.index(me["grade"]) + 1
        f["in_transition_grade"] = me["grade"] in ("P6", "M3")
        f["term"] = r.term
        f["is_mid_round"] = r.round_type == "mid"
        # school and area: the latest registry versions known by as-of
        school = schools.get(me["school_code"])
        area = areas.get(school["tambon_code"]) if school else None
        f["school_size_class"] = school["size_class"] if school else None
        f["school_students"] = float(school["students"]) if school and school["students"] is not None else None
        f["school_remote"] = school["remote"] if school else None
        f["school_distance_km"] = school["distance_km"] if school else None
        f["school_past_dropout_rate"] = past_rates.get(me["school_code"])
        f["region"] = area["region"] if area else None
        f["sex"] = me["sex"]
        f["age"] = (as_of - bd).days / 365.25 if bd is not None else None
        f["non_thai_id"] = me["id_kind"] in ("gcode", "non_thai")
        f["disability"] = me["disability"] != "none"
        # groups for the fairness audit
        f["group_sex"] = me["sex"]
        f["group_province"] = area["province_name"] if area else None
        f["group_region"] = area["region"] if area else None
        f["group_nationality"] = "gcode_or_non_thai" if f["non_thai_id"] else "thai"
        f["group_cct_poverty"] = ("not_screened" if c is None
                                  else "extremely_poor" if c["income_per_person"] <= 3000 else "screened_not_extreme")
        f["group_disability"] = "disability" if f["disability"] else "none"
        out[key] = f
    return out
