"""Point-in-time features for one scoring round, set-based in DuckDB.

Rows are (student_key, round). A source row may contribute only if it was *known* by the
round's as-of date (its delivery's `known_at` ≤ as_of) and describes a date ≤ as_of. The chain
of steps follows a historical retrieval: population -> known rows of each source -> latest
record per key and period -> aggregates -> one wide row per student. Missing stays missing
(NULL) with explicit indicators; nothing is imputed from later data.

The same meaning is written row by row in `reference.py`; a test requires both to agree.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from features.calendar import SchoolCalendar, ScoringRound
from features.contract import CARE_DIMENSIONS, CCT_DIMENSIONS
from features.ids import GRADE_TYPICAL_AGE, GRADES
from features.pointintime.labels import labels_sql, population_sql
from features.pointintime.spec import FEATURE_NAMES, GROUP_COLUMNS, KEY_COLUMNS

PAST_DROPOUT_MIN_STUDENTS = 10  # fewer labelled students than this: the school rate is too noisy
PAST_DROPOUT_YEARS = 2


def _d(x: dt.date) -> str:
    return f"DATE '{x.isoformat()}'"


def previous_term(r: ScoringRound) -> tuple[int, int]:
    return (r.academic_year - 1, 2) if r.term == 1 else (r.academic_year, 1)


def earlier_early_rounds(cal: SchoolCalendar, r: ScoringRound, as_of: dt.date) -> list[ScoringRound]:
    """Early rounds of the last PAST_DROPOUT_YEARS years whose horizon census is before as_of."""
    out = []
    for y in range(r.academic_year - PAST_DROPOUT_YEARS, r.academic_year + 1):
        for t in (1, 2):
            e = ScoringRound(academic_year=y, term=t, round_type="early")
            if cal.next_census(y, t)[2] < as_of and cal.as_of(e.round_id) < as_of:
                out.append(e)
    return out


def features_sql(cal: SchoolCalendar, r: ScoringRound, schema: str = "wh") -> str:
    as_of = cal.as_of(r.round_id)
    A = _d(as_of)
    census = cal.census_date(r.academic_year, r.term)
    tc = cal.term(r.term)
    term_start = tc.starts.in_year(r.academic_year)
    py, pt = previous_term(r)
    ptc = cal.term(pt)
    prev_start, prev_end = ptc.starts.in_year(py), ptc.ends.in_year(py)
    m12 = as_of - dt.timedelta(days=365)
    grade_level = " ".join(f"WHEN '{g}' THEN {i + 1}" for i, g in enumerate(GRADES))
    typical_age = " ".join(f"WHEN '{g}' THEN {a}" for g, a in GRADE_TYPICAL_AGE.items())
    june10 = cal.census_date(r.academic_year, 1)
    care_code = lambda d: f"CASE {d} WHEN 'ปกติ' THEN 0 WHEN 'เสี่ยง' THEN 1 WHEN 'มีปัญหา' THEN 2 END"  # noqa: E731
    deprivations = " + ".join(f"CAST({d} AS INTEGER)" for d in CCT_DIMENSIONS)
    care_at_risk = " + ".join(f"CAST({d} = 'เสี่ยง' AS INTEGER)" for d in CARE_DIMENSIONS)
    care_problem = " + ".join(f"CAST({d} = 'มีปัญหา' AS INTEGER)" for d in CARE_DIMENSIONS)

    past = earlier_early_rounds(cal, r, as_of)
    if past:
        past_labels = " UNION ALL ".join(
            f"SELECT l.student_key, l.dropout, p.school_code FROM ({labels_sql(cal, e, as_of, schema=schema)}) l "
            f"JOIN ({population_sql(cal, e, as_of, schema)}) p USING (student_key) WHERE l.dropout IS NOT NULL"
            for e in past
        )
        past_rate = f"""
            SELECT school_code,
                   CASE WHEN count(*) >= {PAST_DROPOUT_MIN_STUDENTS} THEN avg(dropout) END AS school_past_dropout_rate
            FROM ({past_labels}) GROUP BY school_code
        """
    else:
        past_rate = "SELECT NULL::VARCHAR AS school_code, NULL::DOUBLE AS school_past_dropout_rate WHERE false"

    return f"""
    -- Everything per student joins and groups on `sid`, the link run's integer for student_key
    -- (hashing an integer instead of a 21-character string); only the result carries the key.
    WITH pop AS ({population_sql(cal, r, as_of, schema)}),
    -- attendance: one row per student-month, the latest known version
    -- ("latest known version" is an arg_max per group: a hash aggregate, several times faster
    -- than a window sorted on the student key at 1M students; the same row wins - known_at, then
    -- delivery and line, which are unique)
    att AS (
        SELECT sid, year_month, v.school_days, v.days_present, v.days_leave, v.days_absent FROM (
            SELECT a.sid, a.year_month,
                   arg_max({{'school_days': a.school_days, 'days_present': a.days_present,
                             'days_leave': a.days_leave, 'days_absent': a.days_absent}},
                           (a.known_at, a.delivery_id, a.source_line)) AS v
            FROM {schema}.linked_attendance a JOIN pop USING (sid)
            WHERE a.known_at <= {A} AND a.year_month <= {A} AND a.year_month > {_d(m12)} - INTERVAL 1 MONTH
              AND a.school_days > 0
            GROUP BY a.sid, a.year_month
        )
    ),
    att_ranked AS (
        SELECT *, row_number() OVER (PARTITION BY sid ORDER BY year_month DESC) AS recent
        FROM att WHERE year_month >= date_trunc('month', {_d(m12)})
    ),
    att_f AS (
        SELECT sid,
          sum(days_present) FILTER (WHERE year_month >= date_trunc('month', {_d(term_start)}))
            / sum(school_days) FILTER (WHERE year_month >= date_trunc('month', {_d(term_start)})) AS att_rate_term,
          sum(days_present) / sum(school_days) AS att_rate_12m,
          max(days_present / school_days) FILTER (WHERE recent = 1) AS att_rate_last_month,
          CASE WHEN count(*) >= 4 THEN
              sum(days_present) FILTER (WHERE recent <= 3) / sum(school_days) FILTER (WHERE recent <= 3)
            - sum(days_present) FILTER (WHERE recent BETWEEN 4 AND 6) / sum(school_days) FILTER (WHERE recent BETWEEN 4 AND 6)
          END AS att_trend_3m,
          sum(days_absent) / sum(school_days) AS att_unexcused_rate_12m,
          count(*) AS att_months_known
        FROM att_ranked GROUP BY sid
    ),
    att_prev AS (
        SELECT sid, sum(days_present) / sum(school_days) AS att_rate_prev_term
        FROM att
        WHERE year_month >= date_trunc('month', {_d(prev_start)}) AND year_month <= {_d(prev_end)}
        GROUP BY sid
    ),
    -- grades: latest known version per student, year, term and assessment
    gr AS (
        SELECT sid, academic_year, term, assessment, v.assessed_on, v.gpa,
               v.n_mark_0, v.n_mark_r, v.n_mark_ms, v.n_mark_mp FROM (
            SELECT g.sid, g.academic_year, g.term, g.assessment,
                   arg_max({{'assessed_on': g.assessed_on, 'gpa': g.gpa, 'n_mark_0': g.n_mark_0,
                             'n_mark_r': g.n_mark_r, 'n_mark_ms': g.n_mark_ms, 'n_mark_mp': g.n_mark_mp}},
                           (g.known_at, g.delivery_id, g.source_line)) AS v
            FROM {schema}.linked_grades g JOIN pop USING (sid)
            WHERE g.known_at <= {A} AND g.assessed_on <= {A}
            GROUP BY g.sid, g.academic_year, g.term, g.assessment
        )
    ),
    finals AS (
        SELECT *, row_number() OVER (PARTITION BY sid ORDER BY academic_year DESC, term DESC) AS k
        FROM gr WHERE assessment = 'final'
    ),
    gr_f AS (
        SELECT sid,
          max(gpa) FILTER (WHERE k = 1) AS gpa_last,
          max(gpa) FILTER (WHERE k = 1) - max(gpa) FILTER (WHERE k = 2) AS gpa_trend,
          max(n_mark_0) FILTER (WHERE k = 1) AS marks_0_last,
          max(n_mark_r) FILTER (WHERE k = 1) AS marks_r_last,
          max(n_mark_ms) FILTER (WHERE k = 1) AS marks_ms_last,
          max(n_mark_mp) FILTER (WHERE k = 1) AS marks_mp_last,
          sum(n_mark_0 + n_mark_r + n_mark_ms) FILTER (WHERE assessed_on > {_d(m12)}) AS failing_marks_12m
        FROM finals GROUP BY sid
    ),
    interim AS (
        SELECT sid, gpa AS gpa_interim, n_mark_0 + n_mark_r + n_mark_ms AS failing_marks_interim
        FROM gr WHERE assessment = 'interim' AND academic_year = {r.academic_year} AND term = {r.term}
    ),
    -- CCT and care screening: the latest screening of the last 12 months
    cct AS (
        SELECT * FROM (
            SELECT c.*, row_number() OVER (PARTITION BY c.sid
                ORDER BY c.screened_on DESC, c.known_at DESC, c.delivery_id DESC, c.source_line DESC) AS rn
            FROM {schema}.linked_cct_screening c JOIN pop p USING (sid)
            WHERE c.known_at <= {A} AND c.screened_on <= {A} AND c.screened_on > {_d(m12)}
        ) WHERE rn = 1
    ),
    care AS (
        SELECT * FROM (
            SELECT c.*, row_number() OVER (PARTITION BY c.sid
                ORDER BY c.screened_on DESC, c.known_at DESC, c.delivery_id DESC, c.source_line DESC) AS rn
            FROM {schema}.linked_care_screening c JOIN pop p USING (sid)
            WHERE c.known_at <= {A} AND c.screened_on <= {A} AND c.screened_on > {_d(m12)}
        ) WHERE rn = 1
    ),
    welfare AS (
        SELECT w.sid,
          bool_or(link_type = 'disability_card') AS welfare_disability_card,
          bool_or(link_type = 'chronic_illness') AS welfare_chronic_illness,
          bool_or(link_type = 'bedridden_household_member') AS welfare_bedridden_member,
          bool_or(link_type = 'teen_pregnancy') AS welfare_teen_pregnancy,
          bool_or(link_type = 'state_welfare_card') AS welfare_state_card
        FROM {schema}.linked_welfare_links w JOIN pop USING (sid)
        WHERE w.known_at <= {A} AND w.record_date <= {A}
        GROUP BY w.sid
    ),
    -- census history before this round: moves, repetition, presence
    hist AS (
        SELECT sid, census_date, v.academic_year, v.school_code, v.grade FROM (
            SELECT h.sid, h.census_date,
                   arg_max({{'academic_year': h.academic_year, 'school_code': h.school_code, 'grade': h.grade}},
                           (h.known_at, h.delivery_id, h.source_line)) AS v
            FROM {schema}.linked_dmc_census h JOIN pop USING (sid)
            WHERE h.known_at <= {A} AND h.census_date <= {_d(census)}
            GROUP BY h.sid, h.census_date
        )
    ),
    hist_f AS (
        SELECT sid,
          count(*) FILTER (WHERE census_date > {_d(census)} - INTERVAL 730 DAY
                             AND prev_school IS NOT NULL AND prev_school <> school_code) AS school_moves_2y,
          count(*) FILTER (WHERE census_date < {_d(census)}) AS censuses_known
        FROM (SELECT *, lag(school_code) OVER (PARTITION BY sid ORDER BY census_date) AS prev_school FROM hist)
        GROUP BY sid
    ),
    repeat AS (
        SELECT sid, max(n_years) > 1 AS repeated_grade
        FROM (SELECT sid, grade, count(DISTINCT academic_year) AS n_years FROM hist GROUP BY ALL)
        GROUP BY sid
    ),
    school AS (
        SELECT * FROM (
            SELECT s.school_code, s.size_class, s.students, s.remote, s.distance_km, s.tambon_code,
                   row_number() OVER (PARTITION BY s.school_code ORDER BY s.known_at DESC, s.delivery_id DESC) AS rn
            FROM {schema}.src_schools s WHERE s.known_at <= {A}
        ) WHERE rn = 1
    ),
    area AS (
        SELECT * FROM (
            SELECT a.tambon_code, a.province_code, a.province_name, a.region,
                   row_number() OVER (PARTITION BY a.tambon_code ORDER BY a.known_at DESC, a.delivery_id DESC) AS rn
            FROM {schema}.src_areas a WHERE a.known_at <= {A}
        ) WHERE rn = 1
    ),
    past AS ({past_rate})
    SELECT
        pop.student_key, '{r.round_id}' AS round_id, {A} AS as_of, pop.school_code,
        -- attendance
        att_f.att_rate_term, att_prev.att_rate_prev_term, att_f.att_rate_12m, att_f.att_rate_last_month,
        att_f.att_trend_3m, att_f.att_unexcused_rate_12m,
        CASE WHEN att_prev.att_rate_prev_term IS NULL THEN NULL ELSE att_prev.att_rate_prev_term <= 0.9 END AS att_chronic_absence,
        CASE WHEN att_f.att_rate_12m IS NULL THEN NULL ELSE att_f.att_rate_12m < 0.85 END AS att_below_cct_85,
        coalesce(att_f.att_months_known, 0) AS att_months_known,
        -- academic
        gr_f.gpa_last, gr_f.gpa_trend, interim.gpa_interim,
        gr_f.marks_0_last, gr_f.marks_r_last, gr_f.marks_ms_last, gr_f.marks_mp_last,
        gr_f.failing_marks_12m, interim.failing_marks_interim,
        -- poverty and household
        cct.student_key IS NOT NULL AS cct_screened,
        CAST(cct.income_per_person AS DOUBLE) AS income_per_person,
        cct.income_per_person <= 3000 AS extremely_poor,
        {deprivations.replace('CAST(', 'CAST(cct.')} AS hh_deprivations,
        {", ".join(f"cct.{d}" for d in CCT_DIMENSIONS)},
        CAST(cct.household_size AS DOUBLE) AS household_size,
        cct.caretaker, CAST(cct.travel_minutes AS DOUBLE) AS travel_minutes, cct.travel_mode,
        -- care screening
        care.student_key IS NOT NULL AS care_screened,
        {care_at_risk.replace('CAST(', 'CAST(care.')} AS care_at_risk_count,
        {care_problem.replace('CAST(', 'CAST(care.')} AS care_problem_count,
        {care_code('care.learning')} AS care_learning,
        {care_code('care.behaviour_emotion')} AS care_behaviour_emotion,
        {care_code('care.family')} AS care_family,
        {care_code('care.economic')} AS care_economic,
        {care_code('care.substances')} AS care_substances,
        {care_code('care.sexual_behaviour')} AS care_sexual_behaviour,
        -- welfare and health
        coalesce(welfare.welfare_disability_card, false) AS welfare_disability_card,
        coalesce(welfare.welfare_chronic_illness, false) AS welfare_chronic_illness,
        coalesce(welfare.welfare_bedridden_member, false) AS welfare_bedridden_member,
        coalesce(welfare.welfare_teen_pregnancy, false) AS welfare_teen_pregnancy,
        coalesce(welfare.welfare_state_card, false) AS welfare_state_card,
        -- mobility
        coalesce(hist_f.school_moves_2y, 0) AS school_moves_2y,
        coalesce(repeat.repeated_grade, false) AS repeated_grade,
        greatest(0, date_sub('year', pop.birth_date, {_d(june10)}) - (CASE pop.grade {typical_age} END)) AS over_age_years,
        coalesce(hist_f.censuses_known, 0) AS censuses_known,
        -- grade and transition
        pop.grade, CASE pop.grade {grade_level} END AS grade_level,
        pop.grade IN ('P6', 'M3') AS in_transition_grade,
        {r.term} AS term, {str(r.round_type == 'mid').lower()} AS is_mid_round,
        -- school and area
        school.size_class AS school_size_class, CAST(school.students AS DOUBLE) AS school_students,
        school.remote AS school_remote, school.distance_km AS school_distance_km,
        past.school_past_dropout_rate, area.region,
        -- student background
        pop.sex, date_diff('day', pop.birth_date, {A}) / 365.25 AS age,
        pop.id_kind IN ('gcode', 'non_thai') AS non_thai_id,
        pop.disability <> 'none' AS disability,
        -- groups for the fairness audit (not model inputs)
        pop.sex AS group_sex, area.province_name AS group_province, area.region AS group_region,
        CASE WHEN pop.id_kind IN ('gcode', 'non_thai') THEN 'gcode_or_non_thai' ELSE 'thai' END AS group_nationality,
        CASE WHEN cct.student_key IS NULL THEN 'not_screened'
             WHEN cct.income_per_person <= 3000 THEN 'extremely_poor' ELSE 'screened_not_extreme' END AS group_cct_poverty,
        CASE WHEN pop.disability <> 'none' THEN 'disability' ELSE 'none' END AS group_disability
    FROM pop
    LEFT JOIN att_f USING (sid)
    LEFT JOIN att_prev USING (sid)
    LEFT JOIN gr_f USING (sid)
    LEFT JOIN interim USING (sid)
    LEFT JOIN cct USING (sid)
    LEFT JOIN care USING (sid)
    LEFT JOIN welfare USING (sid)
    LEFT JOIN hist_f USING (sid)
    LEFT JOIN repeat USING (sid)
    LEFT JOIN school ON school.school_code = pop.school_code
    LEFT JOIN area ON area.tambon_code = school.tambon_code
    LEFT JOIN past ON past.school_code = pop.school_code
    ORDER BY pop.student_key
    """


OUTPUT_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *FEATURE_NAMES, *GROUP_COLUMNS)


def build_features(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound, schema: str = "wh") -> pa.Table:
    """The round's feature table (one row per enrolled student, sorted by student_key)."""
    table = con.sql(features_sql(cal, r, schema)).to_arrow_table()
    if tuple(table.column_names) != OUTPUT_COLUMNS:
        missing = set(OUTPUT_COLUMNS) - set(table.column_names)
        extra = set(table.column_names) - set(OUTPUT_COLUMNS)
        raise AssertionError(f"feature SQL out of step with the catalogue: missing {missing}, extra {extra}")
    return table
