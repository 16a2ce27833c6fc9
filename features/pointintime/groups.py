"""The declared feature groups: what each reads, its named thresholds, and its columns.

This is the one place a feature is added: its catalogue fields (name, type, meaning in English
and Thai, what an empty value means) and the SQL expression that computes it, beside the reads
and aggregate steps of its group. `spec.py` derives the catalogue from these declarations and
`compile.py` turns them into the point-in-time query that `build.py` runs.

SQL templates name round parameters and thresholds in braces ({as_of}, {m12}, ...; see
`round_params` in build.py); a template written as a function receives the round's context.
Groups are named after what a school understands, because SHAP reasons are later summed per
group and shown to teachers.
"""

from __future__ import annotations

import datetime as dt

from features.calendar import SchoolCalendar, ScoringRound
from features.contract import CARE_DIMENSIONS, CCT_DIMENSIONS
from features.ids import GRADE_TYPICAL_AGE, GRADES
from features.pointintime.compile import Column, FeatureGroup, Read, RoundContext, Step
from features.pointintime.labels import PUPIL_SCHOOL_COLUMNS, labels_sql, population_sql

C = Column
NEVER = "never missing"
# Every "within the last 12 months" below: events on or before {m12} (as_of - 365 days) are stale.
STALENESS_DAYS = 365


# --- attendance --------------------------------------------------------------------------------

ATTENDANCE = FeatureGroup(
    name="attendance", en="Attendance", th="การมาเรียน",
    staleness="months described in the last 12 months (one more month is read for last term)",
    thresholds={"chronic_absence_rate": 0.9, "cct_attendance_condition": 0.85,
                "trend_min_months": 4, "trend_months": 3},
    reads=(Read(
        # one row per student-month, the latest known version of a month with school days
        name="att", source="linked_attendance", key=("sid", "year_month"), event="year_month",
        values=("school_days", "days_present", "days_leave", "days_absent"),
        fresh_after="att_window_start", where="t.school_days > 0",
    ),),
    steps=(
        Step("att_ranked", "SELECT *, row_number() OVER (PARTITION BY sid ORDER BY year_month DESC) AS recent "
                           "FROM att WHERE year_month >= {m12_month}"),
        Step("att_f", """SELECT sid,
          sum(days_present) FILTER (WHERE year_month >= {term_start_month})
            / sum(school_days) FILTER (WHERE year_month >= {term_start_month}) AS att_rate_term,
          sum(days_present) / sum(school_days) AS att_rate_12m,
          max(days_present / school_days) FILTER (WHERE recent = 1) AS att_rate_last_month,
          CASE WHEN count(*) >= {trend_min_months} THEN
              sum(days_present) FILTER (WHERE recent <= {trend_months})
                / sum(school_days) FILTER (WHERE recent <= {trend_months})
            - sum(days_present) FILTER (WHERE recent BETWEEN {trend_months} + 1 AND 2 * {trend_months})
                / sum(school_days) FILTER (WHERE recent BETWEEN {trend_months} + 1 AND 2 * {trend_months})
          END AS att_trend_3m,
          sum(days_absent) / sum(school_days) AS att_unexcused_rate_12m,
          count(*) AS att_months_known
        FROM att_ranked GROUP BY sid"""),
        Step("att_prev", "SELECT sid, sum(days_present) / sum(school_days) AS att_rate_prev_term FROM att "
                         "WHERE year_month >= {prev_start_month} AND year_month <= {prev_end} GROUP BY sid"),
    ),
    joins=("att_f USING (sid)", "att_prev USING (sid)"),
    columns=(
        C("att_rate_term", "float", "Attendance rate this term so far", "อัตราการมาเรียนภาคเรียนนี้",
          "no month of this term reported yet (always so in an early round before July data)", "att_f.att_rate_term"),
        C("att_rate_prev_term", "float", "Attendance rate last term", "อัตราการมาเรียนภาคเรียนที่แล้ว",
          "no attendance reported for last term", "att_prev.att_rate_prev_term"),
        C("att_rate_12m", "float", "Attendance rate over the last 12 months", "อัตราการมาเรียน 12 เดือน",
          "no attendance reported in 12 months", "att_f.att_rate_12m"),
        C("att_rate_last_month", "float", "Attendance rate in the latest reported month", "อัตราการมาเรียนเดือนล่าสุด",
          "no attendance reported in 12 months", "att_f.att_rate_last_month"),
        C("att_trend_3m", "float", "Change in attendance: last 3 months minus the 3 before", "แนวโน้มการมาเรียน 3 เดือน",
          "fewer than 4 months reported", "att_f.att_trend_3m"),
        C("att_unexcused_rate_12m", "float", "Share of school days absent without leave, 12 months",
          "สัดส่วนวันขาดเรียนโดยไม่ลา", "no attendance reported in 12 months", "att_f.att_unexcused_rate_12m"),
        C("att_chronic_absence", "bool", "Chronically absent: missed ≥ 10% of days last term", "ขาดเรียนเรื้อรัง (≥10%)",
          "no attendance reported for last term",
          "CASE WHEN att_prev.att_rate_prev_term IS NULL THEN NULL "
          "ELSE att_prev.att_rate_prev_term <= {chronic_absence_rate} END"),
        C("att_below_cct_85", "bool", "Below the CCT 85% attendance condition (12 months)", "มาเรียนต่ำกว่าเงื่อนไขทุน 85%",
          "no attendance reported in 12 months",
          "CASE WHEN att_f.att_rate_12m IS NULL THEN NULL ELSE att_f.att_rate_12m < {cct_attendance_condition} END"),
        C("att_months_known", "int", "Months of attendance reported in 12 months", "จำนวนเดือนที่มีข้อมูลการมาเรียน",
          NEVER, "coalesce(att_f.att_months_known, 0)"),
    ),
)


# --- academic ----------------------------------------------------------------------------------

_NO_FINALS = "no final grades reported"
ACADEMIC = FeatureGroup(
    name="academic", en="Academic results", th="ผลการเรียน",
    staleness="none for the last grades; failing marks count the last 12 months",
    reads=(Read(
        # the latest known version per student, year, term and assessment
        name="gr", source="linked_grades", key=("sid", "academic_year", "term", "assessment"), event="assessed_on",
        values=("assessed_on", "gpa", "n_mark_0", "n_mark_r", "n_mark_ms", "n_mark_mp"),
    ),),
    steps=(
        Step("finals", "SELECT *, row_number() OVER (PARTITION BY sid ORDER BY academic_year DESC, term DESC) AS k "
                       "FROM gr WHERE assessment = 'final'"),
        Step("gr_f", """SELECT sid,
          max(gpa) FILTER (WHERE k = 1) AS gpa_last,
          max(gpa) FILTER (WHERE k = 1) - max(gpa) FILTER (WHERE k = 2) AS gpa_trend,
          max(n_mark_0) FILTER (WHERE k = 1) AS marks_0_last,
          max(n_mark_r) FILTER (WHERE k = 1) AS marks_r_last,
          max(n_mark_ms) FILTER (WHERE k = 1) AS marks_ms_last,
          max(n_mark_mp) FILTER (WHERE k = 1) AS marks_mp_last,
          sum(n_mark_0 + n_mark_r + n_mark_ms) FILTER (WHERE assessed_on > {m12}) AS failing_marks_12m
        FROM finals GROUP BY sid"""),
        Step("interim", "SELECT sid, gpa AS gpa_interim, n_mark_0 + n_mark_r + n_mark_ms AS failing_marks_interim "
                        "FROM gr WHERE assessment = 'interim' AND academic_year = {academic_year} AND term = {term}"),
    ),
    joins=("gr_f USING (sid)", "interim USING (sid)"),
    columns=(
        C("gpa_last", "float", "GPA of the last final term grades", "เกรดเฉลี่ยภาคเรียนล่าสุด", _NO_FINALS, "gr_f.gpa_last"),
        C("gpa_trend", "float", "GPA change between the last two terms", "แนวโน้มเกรดเฉลี่ย",
          "fewer than two terms of grades", "gr_f.gpa_trend"),
        C("gpa_interim", "float", "Interim GPA this term (mid-term round)", "เกรดเฉลี่ยกลางภาคนี้",
          "no interim marks this term (always so in an early round)", "interim.gpa_interim"),
        C("marks_0_last", "int", "Subjects with mark 0 last term", "จำนวนวิชาที่ได้ 0 ภาคล่าสุด", _NO_FINALS,
          "gr_f.marks_0_last"),
        C("marks_r_last", "int", "Subjects with mark ร (incomplete) last term", "จำนวนวิชาที่ติด ร", _NO_FINALS,
          "gr_f.marks_r_last"),
        C("marks_ms_last", "int", "Subjects with mark มส (barred: attendance) last term", "จำนวนวิชาที่ติด มส",
          _NO_FINALS, "gr_f.marks_ms_last"),
        C("marks_mp_last", "int", "Activities with mark มผ last term", "จำนวนกิจกรรมที่ มผ", _NO_FINALS,
          "gr_f.marks_mp_last"),
        C("failing_marks_12m", "int", "Failing marks (0, ร, มส) in the last 12 months", "ผลการเรียนไม่ผ่านใน 12 เดือน",
          "no final grades reported in 12 months", "gr_f.failing_marks_12m"),
        C("failing_marks_interim", "int", "Failing interim marks this term", "ผลกลางภาคที่ไม่ผ่านภาคนี้",
          "no interim marks this term", "interim.failing_marks_interim"),
    ),
)


# --- poverty and household (the latest CCT screening of the last 12 months) -------------------

_NOT_SCREENED_12M = "not screened in the last 12 months"
_CCT_TEXT: dict[str, tuple[str, str]] = {
    "hh_dependants": ("Household carries dependants", "มีภาระพึ่งพิง"),
    "hh_no_own_house": ("Household does not own its home", "ไม่มีบ้านเป็นของตนเอง"),
    "hh_poor_housing": ("Home in poor condition", "สภาพบ้านชำรุด"),
    "hh_no_farmland": ("No farm land", "ไม่มีที่ดินทำกิน"),
    "hh_no_clean_water": ("No clean drinking water", "ไม่มีน้ำดื่มสะอาด"),
    "hh_no_electricity": ("No mains electricity", "ไม่มีไฟฟ้า"),
    "hh_no_vehicle": ("No working vehicle", "ไม่มียานพาหนะ"),
    "hh_no_appliances": ("No working appliances", "ไม่มีเครื่องใช้ไฟฟ้า"),
}
CCT_READ = Read(
    name="cct", source="linked_cct_screening", key=("sid",), event="screened_on", latest_event_first=True,
    fresh_after="m12",
    values=("household_size", "income_per_person", *CCT_DIMENSIONS, "caretaker", "travel_minutes", "travel_mode"),
)
POVERTY = FeatureGroup(
    name="poverty", en="Poverty and household", th="ความยากจนและครัวเรือน",
    staleness="the latest screening of the last 12 months",
    thresholds={"extremely_poor_income": 3000},
    reads=(CCT_READ,), steps=(), joins=("cct USING (sid)",),
    columns=(
        C("cct_screened", "bool", "Screened for CCT in the last 12 months", "ได้รับการคัดกรองยากจนใน 12 เดือน",
          NEVER, "cct.sid IS NOT NULL"),
        C("income_per_person", "float", "Household income per person per month (baht)", "รายได้ต่อคนต่อเดือน (บาท)",
          _NOT_SCREENED_12M, "CAST(cct.income_per_person AS DOUBLE)"),
        C("extremely_poor", "bool", "Income ≤ 3,000 baht per person per month", "ยากจนพิเศษ (≤3,000 บาท)",
          _NOT_SCREENED_12M, "cct.income_per_person <= {extremely_poor_income}"),
        C("hh_deprivations", "int", "Household-status deprivations (0-8)", "จำนวนสถานะครัวเรือนที่ขาดแคลน (0-8)",
          _NOT_SCREENED_12M, " + ".join(f"CAST(cct.{d} AS INTEGER)" for d in CCT_DIMENSIONS)),
        *(C(d, "bool", *_CCT_TEXT[d], "not screened", f"cct.{d}") for d in CCT_DIMENSIONS),
        C("household_size", "float", "Household members", "จำนวนสมาชิกครัวเรือน", "not screened",
          "CAST(cct.household_size AS DOUBLE)"),
        C("caretaker", "category", "Who cares for the child", "ผู้ดูแลนักเรียน", "not screened", "cct.caretaker"),
        C("travel_minutes", "float", "Travel time to school (minutes)", "เวลาเดินทางไปโรงเรียน (นาที)", "not screened",
          "CAST(cct.travel_minutes AS DOUBLE)"),
        C("travel_mode", "category", "Main way to school", "วิธีเดินทาง", "not screened", "cct.travel_mode"),
    ),
)


# --- care screening (the latest of the last 12 months) ----------------------------------------

AT_RISK, PROBLEM = "เสี่ยง", "มีปัญหา"


def _care_code(d: str) -> str:
    return f"CASE care.{d} WHEN 'ปกติ' THEN 0 WHEN '{AT_RISK}' THEN 1 WHEN '{PROBLEM}' THEN 2 END"


_CARE_TEXT: dict[str, tuple[str, str]] = {
    "learning": ("Learning: 0 normal, 1 at-risk, 2 problem", "ด้านการเรียน"),
    "behaviour_emotion": ("Behaviour and emotion: 0/1/2", "ด้านพฤติกรรมและอารมณ์"),
    "family": ("Family: 0/1/2", "ด้านครอบครัว"),
    "economic": ("Economic: 0/1/2", "ด้านเศรษฐกิจ"),
    "substances": ("Substances: 0/1/2", "ด้านสารเสพติด"),
    "sexual_behaviour": ("Sexual behaviour: 0/1/2", "ด้านพฤติกรรมทางเพศ"),
}
CARE = FeatureGroup(
    name="care", en="Student-care screening", th="ผลคัดกรองระบบดูแลช่วยเหลือ",
    staleness="the latest screening of the last 12 months",
    reads=(Read(name="care", source="linked_care_screening", key=("sid",), event="screened_on",
                latest_event_first=True, fresh_after="m12", values=CARE_DIMENSIONS),),
    steps=(), joins=("care USING (sid)",),
    columns=(
        C("care_screened", "bool", "Care screening in the last 12 months", "ได้รับการคัดกรองระบบดูแลใน 12 เดือน",
          NEVER, "care.sid IS NOT NULL"),
        C("care_at_risk_count", "int", "Dimensions screened at-risk (เสี่ยง)", "จำนวนด้านที่เสี่ยง", "not screened",
          " + ".join(f"CAST(care.{d} = '{AT_RISK}' AS INTEGER)" for d in CARE_DIMENSIONS)),
        C("care_problem_count", "int", "Dimensions screened problem (มีปัญหา)", "จำนวนด้านที่มีปัญหา", "not screened",
          " + ".join(f"CAST(care.{d} = '{PROBLEM}' AS INTEGER)" for d in CARE_DIMENSIONS)),
        *(C(f"care_{d}", "int", *_CARE_TEXT[d], "not screened", _care_code(d)) for d in _CARE_TEXT),
    ),
)


# --- welfare and health links known by the as-of date ------------------------------------------

_WELFARE: tuple[tuple[str, str, str, str], ...] = (
    ("welfare_disability_card", "disability_card", "Holds a disability card", "มีบัตรคนพิการ"),
    ("welfare_chronic_illness", "chronic_illness", "Chronic illness on record", "มีโรคเรื้อรัง"),
    ("welfare_bedridden_member", "bedridden_household_member", "A bedridden household member",
     "มีผู้ป่วยติดเตียงในครัวเรือน"),
    ("welfare_teen_pregnancy", "teen_pregnancy", "Teen pregnancy on record", "ตั้งครรภ์ในวัยเรียน"),
    ("welfare_state_card", "state_welfare_card", "Household holds a state-welfare card", "มีบัตรสวัสดิการแห่งรัฐ"),
)
WELFARE = FeatureGroup(
    name="welfare", en="Welfare and health", th="สวัสดิการและสุขภาพ",
    staleness="none: a link once recorded stays known",
    # every known link counts ("was it ever recorded"): no version to choose
    reads=(Read(name="wel", source="linked_welfare_links", key=None, event="record_date", values=("link_type",)),),
    steps=(Step("welfare", "SELECT sid, "
                + ", ".join(f"bool_or(link_type = '{t}') AS {n}" for n, t, _, _ in _WELFARE)
                + " FROM wel GROUP BY sid"),),
    joins=("welfare USING (sid)",),
    columns=tuple(C(n, "bool", en, th, NEVER, f"coalesce(welfare.{n}, false)") for n, _, en, th in _WELFARE),
)


# --- mobility and progression (the census history up to this round's census) ------------------

# The warehouse keeps the birth month, not the day (the exact date is in the identity vault).
# Both age features take the birthday as the 15th of the birth month (`BIRTH_DAY_IN_MONTH`):
# - age: days from that 15th to the as-of date / 365.25; off by at most about half a month
#   (16 days, 0.044 years) from the age the exact date gives.
# - over_age_years: birthdays passed by 10 June counted from that 15th, so it is exact for every
#   month but June; a child born in June counts as not yet a year older on 10 June (exact for
#   those born 11-30 June, one year lower for those born 1-10 June).
BIRTH_DAY_IN_MONTH = 15


def _birthday(ctx: RoundContext) -> str:
    """The birthday the features assume: the 15th of the birth month, as a date."""
    return f"CAST({ctx.dialect.plus_days('pop.birth_month', BIRTH_DAY_IN_MONTH - 1)} AS DATE)"


def _over_age(ctx: RoundContext) -> str:
    typical_age = " ".join(f"WHEN '{g}' THEN {a}" for g, a in GRADE_TYPICAL_AGE.items())
    years = ctx.dialect.years_between(_birthday(ctx), ctx.params["june10"])
    # greatest() skips NULLs in DuckDB and Spark alike: without the guard an unknown birth date
    # would read as "not over age" instead of missing.
    return (f"CASE WHEN pop.birth_month IS NULL THEN NULL "
            f"ELSE greatest(0, {years} - (CASE pop.grade {typical_age} END)) END")


MOBILITY = FeatureGroup(
    name="mobility", en="Mobility and progression", th="การย้าย ซ้ำชั้น และอายุเกินเกณฑ์",
    staleness="moves count the last 2 years of censuses",
    thresholds={"school_moves_window_days": 730},
    reads=(Read(name="hist", source="linked_dmc_census", key=("sid", "census_date"), event="census_date",
                event_until="census", values=("academic_year", "school_code", "grade")),),
    steps=(
        Step("hist_f", """SELECT sid,
          count(*) FILTER (WHERE census_date > {moves_window_start}
                             AND prev_school IS NOT NULL AND prev_school <> school_code) AS school_moves_2y,
          count(*) FILTER (WHERE census_date < {census}) AS censuses_known
        FROM (SELECT *, lag(school_code) OVER (PARTITION BY sid ORDER BY census_date) AS prev_school FROM hist)
        GROUP BY sid"""),
        Step("repeat", "SELECT sid, max(n_years) > 1 AS repeated_grade FROM (SELECT sid, grade, "
                       "count(DISTINCT academic_year) AS n_years FROM hist GROUP BY sid, grade) GROUP BY sid"),
    ),
    joins=("hist_f USING (sid)", "repeat USING (sid)"),
    columns=(
        C("school_moves_2y", "int", "School changes over the last 2 years", "จำนวนครั้งที่ย้ายโรงเรียนใน 2 ปี", NEVER,
          "coalesce(hist_f.school_moves_2y, 0)"),
        C("repeated_grade", "bool", "Repeated a grade (same grade in two academic years)", "เคยซ้ำชั้น", NEVER,
          "coalesce(repeat.repeated_grade, false)"),
        C("over_age_years", "int", "Years older than typical for the grade", "อายุเกินเกณฑ์ (ปี)", "birth date unknown",
          _over_age),
        C("censuses_known", "int", "Earlier censuses in which the student appears",
          "จำนวนครั้งที่ปรากฏในการนับข้อมูลก่อนหน้า", NEVER, "coalesce(hist_f.censuses_known, 0)"),
    ),
)


# --- grade and transition ----------------------------------------------------------------------

TRANSITION_GRADES = ("P6", "M3")
_GRADE_LEVEL = "CASE pop.grade " + " ".join(f"WHEN '{g}' THEN {i + 1}" for i, g in enumerate(GRADES)) + " END"
TRANSITION = FeatureGroup(
    name="transition", en="Grade and transition", th="ชั้นเรียนและช่วงรอยต่อ",
    reads=(), steps=(), joins=(),
    columns=(
        C("grade", "category", "Grade now", "ชั้นเรียนปัจจุบัน", NEVER, "pop.grade"),
        C("grade_level", "int", "Grade as a number (K1 = 1 ... M6 = 15)", "ระดับชั้น (ตัวเลข)", NEVER, _GRADE_LEVEL),
        C("in_transition_grade", "bool", "In P6 or M3: the next step is a school transition",
          "อยู่ชั้นรอยต่อ ป.6 หรือ ม.3", NEVER,
          "pop.grade IN (" + ", ".join(f"'{g}'" for g in TRANSITION_GRADES) + ")"),
        C("term", "int", "Term of the round (1 or 2)", "ภาคเรียน", NEVER, "{term}"),
        C("is_mid_round", "bool", "Mid-term round (more of this term known)", "รอบกลางภาค", NEVER, "{is_mid_round}"),
    ),
)


# --- school and area ---------------------------------------------------------------------------

PAST_DROPOUT_MIN_STUDENTS = 10  # fewer labelled students than this: the school rate is too noisy
PAST_DROPOUT_YEARS = 2


def earlier_early_rounds(cal: SchoolCalendar, r: ScoringRound, as_of: dt.date) -> list[ScoringRound]:
    """Early rounds of the last PAST_DROPOUT_YEARS years whose horizon census is before as_of."""
    out = []
    for y in range(r.academic_year - PAST_DROPOUT_YEARS, r.academic_year + 1):
        for t in (1, 2):
            e = ScoringRound(academic_year=y, term=t, round_type="early")
            if cal.next_census(y, t)[2] < as_of and cal.as_of(e.round_id) < as_of:
                out.append(e)
    return out


# Registry reads (no event date: the latest version known by as-of), shared by the school group,
# the fairness attributes and serving's placement.
SCHOOLS_READ = Read(name="school", source="src_schools", key=("school_code",), per_student=False,
                    values=("school_name", "size_class", "students", "remote", "distance_km", "tambon_code"))
AREAS_READ = Read(name="area", source="src_areas", key=("tambon_code",), per_student=False,
                  values=("tambon_name", "amphoe_code", "amphoe_name", "province_code", "province_name", "region"))
SCHOOL_JOINS = ("school ON school.school_code = pop.school_code", "area ON area.tambon_code = school.tambon_code")


def _past_rows(ctx: RoundContext) -> list[str]:
    """One SELECT per earlier early round whose outcome was known by as-of: (student_key, dropout,
    school_code) of its labelled pupils, each at the school of that round's census."""
    if ctx.cal is None or ctx.round is None:
        raise ValueError("the school's past dropout rate needs the round and its calendar")
    return [
        f"SELECT l.student_key, l.dropout, p.school_code "
        f"FROM ({labels_sql(ctx.cal, e, ctx.as_of, schema=ctx.schema, with_evidence=False, dialect=ctx.dialect)}) l "
        # only the two columns it reads: every census column costs an arg_max per pupil and round
        f"JOIN ({population_sql(ctx.cal, e, ctx.as_of, ctx.schema, PUPIL_SCHOOL_COLUMNS, dialect=ctx.dialect)}) p USING (student_key) "
        "WHERE l.dropout IS NOT NULL"
        for e in earlier_early_rounds(ctx.cal, ctx.round, ctx.as_of)
    ]


def _past_rate_over(ctx: RoundContext, rows: str) -> str:
    """Dropout rate per school over the labelled pupils in `rows` (an average of integers: exact,
    whatever order or parts the rows come in)."""
    return (f"SELECT school_code, CASE WHEN count(*) >= {ctx.params['past_dropout_min_students']} "
            f"THEN avg(dropout) END AS school_past_dropout_rate FROM {rows} GROUP BY school_code")


def _past_dropout_rate(ctx: RoundContext) -> str:
    """Dropout rate per school over earlier early rounds whose outcome was known by as-of."""
    parts = _past_rows(ctx)
    if not parts:
        return "SELECT CAST(NULL AS STRING) AS school_code, CAST(NULL AS DOUBLE) AS school_past_dropout_rate WHERE false"
    return _past_rate_over(ctx, f"({' UNION ALL '.join(parts)})")


_NO_SCHOOL = "school not in the registry"
SCHOOL = FeatureGroup(
    name="school", en="School and area", th="โรงเรียนและพื้นที่",
    staleness="none: the latest registry version known",
    thresholds={"past_dropout_min_students": PAST_DROPOUT_MIN_STUDENTS, "past_dropout_years": PAST_DROPOUT_YEARS},
    reads=(SCHOOLS_READ, AREAS_READ),
    # round-wide: the labels of the past rounds of the whole country (prepare_round takes them a round at a time)
    steps=(Step("past", _past_dropout_rate, parts=_past_rows, over=_past_rate_over),),
    joins=(*SCHOOL_JOINS, "past ON past.school_code = pop.school_code"),
    columns=(
        C("school_size_class", "category", "School size class", "ขนาดโรงเรียน", _NO_SCHOOL, "school.size_class"),
        C("school_students", "float", "Students in the school", "จำนวนนักเรียนในโรงเรียน", _NO_SCHOOL,
          "CAST(school.students AS DOUBLE)"),
        C("school_remote", "bool", "Remote or hardship-area school", "โรงเรียนพื้นที่ห่างไกล", _NO_SCHOOL, "school.remote"),
        C("school_distance_km", "float", "School distance to the district town (km)", "ระยะทางโรงเรียนถึงอำเภอ",
          _NO_SCHOOL, "school.distance_km"),
        C("school_past_dropout_rate", "float",
          "The school's dropout rate in rounds whose outcome was known before this round",
          "อัตราการออกกลางคันในอดีตของโรงเรียน", "no earlier round of this school has a known outcome",
          "past.school_past_dropout_rate"),
        C("region", "category", "Region of the school", "ภาค", _NO_SCHOOL, "area.region"),
    ),
)


# --- student background ------------------------------------------------------------------------

NON_THAI_ID_KINDS = ("gcode", "non_thai")
_NON_THAI = "pop.id_kind IN (" + ", ".join(f"'{k}'" for k in NON_THAI_ID_KINDS) + ")"
STUDENT = FeatureGroup(
    name="student", en="Student background", th="ข้อมูลพื้นฐานนักเรียน",
    reads=(), steps=(), joins=(),
    columns=(
        C("sex", "category", "Sex", "เพศ", NEVER, "pop.sex"),
        C("age", "float", "Age in years on the as-of date", "อายุ (ปี)", "birth date unknown",
          lambda ctx: f"{ctx.dialect.days_between(_birthday(ctx), ctx.params['as_of'])} / 365.25"),
        C("non_thai_id", "bool", "Holds a G-code or a non-Thai ID (nationality status)", "ไม่มีสัญชาติไทย/รหัส G",
          NEVER, _NON_THAI),
        C("disability", "bool", "Disability recorded in the census", "มีความพิการ (DMC)", NEVER,
          "pop.disability <> 'none'"),
    ),
)


# --- not model inputs --------------------------------------------------------------------------

FAIRNESS = FeatureGroup(
    name="fairness", en="Groups for the fairness audit", th="กลุ่มสำหรับตรวจความเป็นธรรม", model=False,
    reads=(CCT_READ, SCHOOLS_READ, AREAS_READ), steps=(), joins=("cct USING (sid)", *SCHOOL_JOINS),
    columns=(
        C("group_sex", "category", "Sex", "เพศ", NEVER, "pop.sex"),
        C("group_province", "category", "Province of the school", "จังหวัด", _NO_SCHOOL, "area.province_name"),
        C("group_region", "category", "Region of the school", "ภาค", _NO_SCHOOL, "area.region"),
        C("group_nationality", "category", "Nationality status", "สถานะสัญชาติ", NEVER,
          f"CASE WHEN {_NON_THAI} THEN 'gcode_or_non_thai' ELSE 'thai' END"),
        C("group_cct_poverty", "category", "CCT poverty screening", "ผลคัดกรองความยากจน", NEVER,
          "CASE WHEN cct.sid IS NULL THEN 'not_screened' WHEN cct.income_per_person <= {extremely_poor_income} "
          "THEN 'extremely_poor' ELSE 'screened_not_extreme' END"),
        C("group_disability", "category", "Disability", "ความพิการ", NEVER,
          "CASE WHEN pop.disability <> 'none' THEN 'disability' ELSE 'none' END"),
    ),
)

PLACEMENT = FeatureGroup(
    name="placement", en="Room and school area", th="ห้องเรียนและพื้นที่ของโรงเรียน", model=False,
    reads=(SCHOOLS_READ, AREAS_READ), steps=(), joins=SCHOOL_JOINS,
    columns=(
        C("room", "category", "Room", "ห้อง", "not recorded", "pop.room"),
        C("school_name", "category", "School name", "ชื่อโรงเรียน", _NO_SCHOOL, "school.school_name"),
        C("tambon_code", "category", "Tambon of the school", "รหัสตำบล", _NO_SCHOOL, "school.tambon_code"),
        C("tambon_name", "category", "Tambon name", "ชื่อตำบล", _NO_SCHOOL, "area.tambon_name"),
        C("amphoe_code", "category", "Amphoe code", "รหัสอำเภอ", _NO_SCHOOL, "area.amphoe_code"),
        C("amphoe_name", "category", "Amphoe name", "ชื่ออำเภอ", _NO_SCHOOL, "area.amphoe_name"),
        C("province_code", "category", "Province code", "รหัสจังหวัด", _NO_SCHOOL, "area.province_code"),
        C("province_name", "category", "Province name", "ชื่อจังหวัด", _NO_SCHOOL, "area.province_name"),
    ),
)

MODEL_GROUPS: tuple[FeatureGroup, ...] = (
    ATTENDANCE, ACADEMIC, POVERTY, CARE, WELFARE, MOBILITY, TRANSITION, SCHOOL, STUDENT,
)
ALL_GROUPS: tuple[FeatureGroup, ...] = (*MODEL_GROUPS, FAIRNESS, PLACEMENT)
