"""The not-found list for Thailand Zero Dropout: after each census, the pupils enrolled at the previous
census who are in no system now.

Sits beside the labels (`features.pointintime.labels`) in the flow: a pupil enrolled at census P is
*not found* at the next census C when the label's evidence steps (`paths_sql`, declared once in
`EVIDENCE`) show no path at C known by the as-of date: not in an OBEC school's census, not in another
system (vocational, non-formal, local-government, private, BPP) or EWE work training, no exit row for
a completion, death or move abroad, no TZD case closed as a move abroad. A pupil whose only evidence
is M6 term-2 final marks with no exits row (completed or left, not told apart; the label is
`unknown`) is left off and counted (`m6_untold`), unless the marks held a มส: a remedy is not
certain, so that pupil is listed with a caveat saying so (`labels.M6_COMPLETION`, declared once).
A pupil who finished P6 or M3 at the year end, from a tambon whose pupils moved up into a school that
has not delivered census C, is listed with a caveat naming that school: the child may be on its census
(the label is `unknown`; `labels.year_end_unseen_steps`, shared).

Each case carries its evidence: the last census and school the pupil was seen at, the last month of
attendance with a day present, the sources searched and when each arrived, and, when the as-of date
came before the evidence was complete, a caveat and the deliveries still awaited by the contract's
schedule (`features.contract`). Such cases are *provisional* (`evidence_complete` false): TZD teams
may start on them, knowing some will be found. A pupil whose own school's census of C has not
arrived (late or refused) is not judged at all (the pupil may be on it): the manifest counts those
pupils and schools, and the list says so, rather than list a whole school.

A returned child is recognised by linkage: a case whose pupil appears in a later census, or in
another system or EWE after C's window, has state `returned` (and stays on C's list, so the case's
path can be closed). Cases are keyed by (student_key, census_date): the key the TZD case path
(identify -> care plan -> follow-up -> closed) records its actions under.

`ews notfound build` writes notfound/<census date>.parquet + .json under the home (atomic); the
service's routes (`serving/notfound.py`) read them. Names never enter the artefact.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, ScoringRound, parse_round
from features.home import EwsHome
from features.ids import BE_OFFSET
from features.pointintime.build import school_areas_sql
from features.pointintime.compile import DUCKDB, Dialect
from features.pointintime.labels import (
    EVIDENCE, M6_REMEDIABLE, OTHER_SYSTEM_WINDOW_DAYS, Evidence, crosses_year_end, evidence_status_sql, paths_sql,
    population_sql, unseen_join, year_end_unseen_steps,
)
from features.pointintime.trainset import atomic_write_parquet, atomic_write_text, file_sha256

CaseState = Literal["not_found", "returned"]
CASE_STATES: tuple[CaseState, ...] = ("not_found", "returned")
SCHEMA_VERSION = 1
NOTFOUND_COLUMNS: tuple[str, ...] = (
    "census_date", "previous_census", "student_key", "state", "evidence_complete", "school_code", "school_name",
    "tambon_code", "tambon_name", "amphoe_code", "amphoe_name", "province_code", "province_name", "grade",
    "last_census", "last_school_code", "last_attendance_month", "returned_source", "returned_on",
    "searched", "caveat", "awaited",
)


class SourceStatus(BaseModel):
    """One evidence source at the as-of date: delivered (when) or awaited (overdue from when)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    period_end: dt.date
    arrived_on: dt.date | None
    overdue_on: dt.date
    complete: bool


class NotFoundManifest(BaseModel):
    """What a not-found list is, for the service and an auditor: the census, the as-of date it was
    built with, the counts, the evidence status, and the file's hash."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    census_date: dt.date
    previous_census: dt.date
    round_id: str  # the early round of the previous census: whose labels' horizon is this census
    as_of: dt.date
    population: int  # enrolled at the previous census
    cases: int
    by_state: dict[str, int]
    provisional: int  # cases whose evidence was incomplete at the as-of date
    m6_untold: int  # M6 term-2 final marks, no exits row, in no census: left off the list
    schools_without_census: int  # schools of the previous census whose census of this date is missing
    pending_school_census: int  # their pupils: not judged (they may be on the census), never listed
    # Pupils of schools whose census arrived, seen at the next census at a school whose census of
    # this date did not (a P6 -> M1 or M3 -> M4 move into it): not judged either, never listed.
    at_school_without_census: int = 0
    # Cases (listed) of pupils who finished P6 or M3 at the year end, from a tambon whose pupils moved
    # up into a school that has not delivered this census: each carries a caveat naming the school,
    # and a team may start by asking that school (`labels.year_end_unseen_steps`).
    may_have_moved_up: int = 0
    sources: list[SourceStatus]
    file: str
    sha256: str

    @property
    def awaited(self) -> list[str]:
        return [s.source for s in self.sources if not s.complete]


def previous_round(cal: SchoolCalendar, census: dt.date) -> ScoringRound:
    """The early round of the census before `census` (its labels' horizon is `census`); a clear
    error when `census` is not a census date of the calendar."""
    for year in (census.year + BE_OFFSET - 1, census.year + BE_OFFSET, census.year + BE_OFFSET + 1):
        for term in (1, 2):
            if cal.census_date(year, term) == census:
                py, pt = (year, 1) if term == 2 else (year - 1, 2)
                return ScoringRound(academic_year=py, term=pt, round_type="early")
    raise ValueError(f"{census} is not a census date of the school calendar")


def census_of(cal: SchoolCalendar, round_id: str) -> dt.date:
    """The census of a round's term (`--round`)."""
    r = parse_round(round_id)
    return cal.census_date(r.academic_year, r.term)


def notfound_dir(home: EwsHome) -> Path:
    return home.notfound_dir


def notfound_paths(home: EwsHome, census: dt.date) -> tuple[Path, Path]:
    """(parquet, manifest) of a census's list."""
    base = notfound_dir(home) / census.isoformat()
    return base.with_suffix(".parquet"), base.with_suffix(".json")


def _d(x: dt.date) -> str:
    return f"DATE '{x.isoformat()}'"


def notfound_sql(cal: SchoolCalendar, census: dt.date, as_of: dt.date, schema: str = "wh",
                 include_m6_untold: bool = False, evidence: tuple[Evidence, ...] = EVIDENCE,
                 dialect: Dialect = DUCKDB, include_at_school_without_census: bool = False) -> str:
    """One row per pupil enrolled at the census before `census` who is not found at `census`, as
    known by `as_of` (columns `NOTFOUND_COLUMNS`, and `may_be_at_school`: the school a P6 or M3
    pupil may have moved up into, whose census is missing; it is named in the case's caveat).

    `include_m6_untold` keeps the M6 pupils a completion cannot be told from (for measuring what
    leaving them off costs); `evidence` is the label's declared sources (another set only to measure
    what one source is worth); `dialect` the SQL engine's spelling (`features.pointintime.compile`);
    `include_at_school_without_census` keeps the pupils seen next at a school whose census of
    `census` is missing (to count them)."""
    d = dialect
    r = previous_round(cal, census)
    prev = cal.census_date(r.academic_year, r.term)
    # Two kinds of path nobody can tell (EVIDENCE, state unknown): an M6 completion with no exits row
    # (source grades), and a move at the year's end into a school whose census is missing (source
    # dmc_census: seen there at the next census). Neither is listed; each is counted.
    remediable = f"(e.state = 'unknown' AND e.source = 'grades' AND e.outcome = '{M6_REMEDIABLE}')"
    lost = (f"e IS NULL OR {remediable}" + (" OR (e.state = 'unknown' AND e.source = 'grades')" if include_m6_untold else "")
            + (" OR (e.state = 'unknown' AND e.source = 'dmc_census')" if include_at_school_without_census else ""))
    # A return: seen again after this census's window (inside it, the same rows are the path that
    # keeps a pupil off the list).
    after = census + dt.timedelta(days=OTHER_SYSTEM_WINDOW_DAYS)
    return f"""
        WITH pop AS ({population_sql(cal, r, as_of, schema, dialect=d)}),
        paths AS ({paths_sql(cal, r, as_of, "next_census", schema, evidence, with_evidence=True, dialect=d)}),
        status AS ({evidence_status_sql(cal, census, as_of, schema, evidence, d)}),
        summary AS (
            SELECT count(*) FILTER (WHERE NOT complete) AS missing,
                   {d.string_agg("CASE WHEN NOT complete THEN source || ' (period to ' || period_end "
                                 "|| ' not delivered; overdue from ' || overdue_on || ')' END", "'; '", "source")} AS awaited,
                   {d.string_agg("CASE WHEN NOT complete THEN source END", "', '", "source")} AS awaited_sources,
                   {d.string_agg("source || CASE WHEN arrived_on IS NOT NULL THEN ' (delivered ' || arrived_on || ')' "
                                 "ELSE ' (overdue since ' || overdue_on || ')' END", "'; '", "source")} AS searched
            FROM status
        ),
        school_census AS (
            SELECT school_code, min(known_at) AS known_at FROM {schema}.src_dmc_census
            WHERE census_date = {_d(census)} AND known_at <= {_d(as_of)} GROUP BY school_code
        ),{year_end_unseen_steps(census, as_of, schema, d, crosses_year_end(cal, r, "next_census"))}
        lost AS (
            -- A pupil whose school's census of this date has not arrived is not judged (the pupil may
            -- be on it): counted by the manifest (`pending_school_census`), never listed.
            SELECT p.student_key, p.school_code, p.grade, p.tambon_code AS home_tambon, p.census_date,
                   coalesce({remediable}, false) AS remediable
            FROM pop p LEFT JOIN paths USING (student_key)
            WHERE ({lost}) AND p.school_code IN (SELECT school_code FROM school_census)
        ),
        attended AS (
            SELECT a.student_key, max(a.year_month) AS last_month
            FROM {schema}.linked_attendance a JOIN lost USING (student_key)
            WHERE a.known_at <= {_d(as_of)} AND a.days_present > 0 AND a.year_month <= {_d(census)}
            GROUP BY a.student_key
        ),
        seen_again AS (
            SELECT student_key, {d.arg_min}({d.struct({'source': 'source', 'seen_on': 'seen_on'})}, seen_on) AS r FROM (
                SELECT c.student_key, 'dmc_census' AS source, c.census_date AS seen_on
                FROM {schema}.linked_dmc_census c JOIN lost USING (student_key)
                WHERE c.known_at <= {_d(as_of)} AND c.census_date > {_d(census)}
                UNION ALL
                SELECT o.student_key, 'other_enrolment', o.record_date
                FROM {schema}.linked_other_enrolment o JOIN lost USING (student_key)
                WHERE o.known_at <= {_d(as_of)} AND o.record_date > {_d(after)}
                UNION ALL
                SELECT w.student_key, 'ewe_training', w.record_date
                FROM {schema}.linked_ewe_training w JOIN lost USING (student_key)
                WHERE w.known_at <= {_d(as_of)} AND w.record_date > {_d(after)}
            ) GROUP BY student_key
        ),
        areas AS ({school_areas_sql(as_of, schema, d)})
        SELECT {_d(census)} AS census_date, {_d(prev)} AS previous_census, l.student_key,
               CASE WHEN s.r IS NULL THEN 'not_found' ELSE 'returned' END AS state,
               sm.missing = 0 AS evidence_complete,
               l.school_code, a.school_name, a.tambon_code, a.tambon_name, a.amphoe_code, a.amphoe_name,
               a.province_code, a.province_name, l.grade,
               l.census_date AS last_census, l.school_code AS last_school_code,
               CAST(att.last_month AS DATE) AS last_attendance_month,
               s.r.source AS returned_source, CAST(s.r.seen_on AS DATE) AS returned_on,
               'dmc_census (school delivered ' || sc.known_at || '); ' || sm.searched AS searched,
               nullif(concat_ws('; ', CASE WHEN sm.missing > 0 THEN 'evidence incomplete on {as_of}: a path may still '
                                              || 'arrive from ' || sm.awaited_sources END,
                                CASE WHEN l.remediable THEN 'M6 final marks held a มส and no exits row: may have '
                                     || 'completed after remedial study' END,
                                CASE WHEN b.unseen_school IS NOT NULL THEN 'finished ' || l.grade || ' at the year end; '
                                     || 'school ' || b.unseen_school || ', where pupils from this tambon moved up, has '
                                     || 'not delivered this census: may be enrolled there' END), '') AS caveat,
               sm.awaited, b.unseen_school AS may_be_at_school
        FROM lost l
        CROSS JOIN summary sm
        JOIN school_census sc ON sc.school_code = l.school_code
        LEFT JOIN attended att USING (student_key)
        LEFT JOIN seen_again s USING (student_key)
        LEFT JOIN unseen_tambon b ON {unseen_join('l.grade', 'l.home_tambon')}
        LEFT JOIN areas a ON a.school_code = l.school_code
        -- NULLS LAST spelled out: DuckDB's default, where Spark puts NULLs first (a school with no area)
        ORDER BY a.province_code NULLS LAST, a.amphoe_code NULLS LAST, a.tambon_code NULLS LAST,
                 l.school_code, l.grade, l.student_key
    """


def build_notfound(home: EwsHome, census: dt.date, as_of: dt.date | None = None,
                   cal: SchoolCalendar | None = None) -> NotFoundManifest:
    """Build and store the not-found list of `census` as known by `as_of` (default: the latest
    delivery). Writes the Parquet first, then the manifest naming its hash, each atomically."""
    from features.db import scalar
    from features.pointintime.pipeline import connect_warehouse, latest_delivery

    cal = cal or home.calendar
    r = previous_round(cal, census)
    prev = cal.census_date(r.academic_year, r.term)
    con = connect_warehouse(home)
    try:
        as_of = as_of or latest_delivery(con)
        if as_of < census:
            raise ValueError(f"as-of date {as_of} is before the census of {census}: nobody can be missing from it yet")
        population = scalar(con, f"SELECT count(*) FROM ({population_sql(cal, r, as_of)})")
        if not population:
            raise RuntimeError(f"nobody is enrolled at the previous census ({prev}) as known by {as_of}")
        table = con.sql(notfound_sql(cal, census, as_of)).to_arrow_table()
        m6 = scalar(con, f"SELECT count(*) FROM ({notfound_sql(cal, census, as_of, include_m6_untold=True)})") - table.num_rows
        late = scalar(con, f"SELECT count(*) FROM ({notfound_sql(cal, census, as_of, include_at_school_without_census=True)})") - table.num_rows
        sources = [SourceStatus(source=s, period_end=pe, arrived_on=a, overdue_on=o, complete=bool(c))
                   for s, pe, a, o, c in con.execute(evidence_status_sql(cal, census, as_of)).fetchall()]
        no_census, pending = con.execute(f"""
            SELECT count(DISTINCT p.school_code), count(*) FROM ({population_sql(cal, r, as_of)}) p
            WHERE NOT EXISTS (SELECT 1 FROM wh.src_dmc_census c WHERE c.school_code = p.school_code
                              AND c.census_date = {_d(census)} AND c.known_at <= {_d(as_of)})""").fetchall()[0]
    finally:
        con.close()
    # the school a moved-up pupil may be at is in the case's caveat; here it is only counted
    moved_up = table.num_rows - table.column("may_be_at_school").null_count
    table = table.select(list(NOTFOUND_COLUMNS))
    data, manifest_path = notfound_paths(home, census)
    atomic_write_parquet(table, data)
    states = table.column("state").to_pylist()
    complete = table.column("evidence_complete").to_pylist()
    manifest = NotFoundManifest(
        census_date=census, previous_census=prev, round_id=r.round_id, as_of=as_of, population=int(population),
        cases=table.num_rows, by_state={s: states.count(s) for s in CASE_STATES},
        provisional=sum(1 for c in complete if not c), m6_untold=int(m6), schools_without_census=int(no_census),
        pending_school_census=int(pending), at_school_without_census=int(late),
        may_have_moved_up=int(moved_up),
        sources=sources, file=str(data), sha256=file_sha256(data),
    )
    atomic_write_text(manifest.model_dump_json(indent=2), manifest_path)
    return manifest


def load_notfound(home: EwsHome, census: dt.date) -> tuple[NotFoundManifest, pa.Table]:
    """A stored list and its manifest; the file must match the manifest's hash (a list rewritten
    by hand, or half-copied, is refused)."""
    import pyarrow.parquet as pq

    data, manifest_path = notfound_paths(home, census)
    if not manifest_path.exists():
        raise FileNotFoundError(f"no not-found list for the census of {census}: run `ews notfound build --census {census}`")
    m = NotFoundManifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    if not data.exists() or file_sha256(data) != m.sha256:
        raise RuntimeError(f"{data} does not match its manifest {manifest_path}: rebuild it with `ews notfound build`")
    return m, pq.read_table(data)


def built_censuses(home: EwsHome) -> list[dt.date]:
    """Census dates with a stored list, latest first."""
    folder = notfound_dir(home)
    if not folder.exists():
        return []
    out = []
    for p in folder.glob("*.json"):
        try:
            out.append(dt.date.fromisoformat(p.stem))
        except ValueError:
            continue
    return sorted(out, reverse=True)


COUNT_LEVELS: tuple[str, ...] = ("province", "amphoe", "tambon", "school")


def counts_by(table: pa.Table, level: str) -> list[dict[str, object]]:
    """Cases per area (province, amphoe, tambon) or school: code, name and counts by state and
    provisional; no key, no name of a pupil."""
    if level not in COUNT_LEVELS:
        raise ValueError(f"level must be one of {', '.join(COUNT_LEVELS)}")
    code, name = (f"{level}_code", f"{level}_name")
    acc: dict[tuple[object, object], dict[str, int]] = {}
    for c, n, s, ok in zip(table.column(code).to_pylist(), table.column(name).to_pylist(),
                           table.column("state").to_pylist(), table.column("evidence_complete").to_pylist(),
                           strict=True):
        row = acc.setdefault((c, n), {"cases": 0, "not_found": 0, "returned": 0, "provisional": 0})
        row["cases"] += 1
        row[s] += 1
        row["provisional"] += 0 if ok else 1
    return [{"code": c, "name": n, **v} for (c, n), v in sorted(acc.items(), key=lambda kv: str(kv[0][0] or ""))]

