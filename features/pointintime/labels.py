"""Dropout labels from linked histories.

For a student enrolled at round R (in the DMC census of R's term), the label asks: at the
horizon census (the next census by default, or the same term a year later), is the child
enrolled in *any* linked system - an OBEC school, another system's school (vocational, non-formal,
local-government, private, BPP) or a recognised work-training path - and if not, did the child
leave for a reason that is not dropout (completed M.6, died, confirmed move abroad, a transfer
whose destination is known, moved to vocational / non-formal / work training)?

  dropout = 1  not enrolled anywhere at the horizon census, and no non-dropout exit in between
  dropout = 0  enrolled somewhere, or left for a non-dropout reason
  NULL         the horizon census is not known yet (its DMC delivery has not arrived by the
               cutoff): unlabelled, never counted as a negative

Only rows known by `cutoff` are used, so a label is itself point-in-time: the school's past
dropout rate feature asks for labels with cutoff = the round's as-of date.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from features.calendar import SchoolCalendar, ScoringRound
from features.pointintime.compile import (
    DUCKDB, POPULATION_COLUMNS, Dialect, RoundContext, known_rows_sql, population_steps, with_sql,
)

Horizon = Literal["next_census", "one_year"]
NON_DROPOUT_EXITS = ("completed", "death", "moved_abroad", "to_vocational", "to_non_formal", "to_work_training")
# Other systems count their learners on their own dates: a record within this window of the
# horizon census shows the child was learning then.
OTHER_SYSTEM_WINDOW_DAYS = 75
TRAINING_WINDOW_DAYS = 200


def horizon_census(cal: SchoolCalendar, r: ScoringRound, horizon: Horizon) -> dt.date:
    if horizon == "next_census":
        return cal.next_census(r.academic_year, r.term)[2]
    if horizon == "one_year":
        return cal.census_date(r.academic_year + 1, r.term)
    raise ValueError(f"unknown label horizon {horizon!r}")


def _d(x: dt.date) -> str:
    return DUCKDB.date(x)


def population_sql(cal: SchoolCalendar, r: ScoringRound, cutoff: dt.date, schema: str = "wh",
                   columns: tuple[str, ...] = POPULATION_COLUMNS, dialect: Dialect = DUCKDB) -> str:
    """Students enrolled at round R: one census row per student, as known by `cutoff`.

    A student with two rows for one census (a resent or corrected delivery) keeps the latest known
    version (the compiler's population step, shared with the features).
    """
    ctx = RoundContext(as_of=cutoff, params={"as_of": _d(cutoff)}, schema=schema, dialect=dialect, cal=cal, round=r)
    return with_sql(population_steps(ctx, cal.census_date(r.academic_year, r.term), columns), "SELECT * FROM pop")


def labels_sql(
    cal: SchoolCalendar, r: ScoringRound, cutoff: dt.date, horizon: Horizon = "next_census",
    schema: str = "wh", population: str | None = None, dialect: Dialect = DUCKDB,
) -> str:
    """(student_key, round_id, dropout, outcome) for every student enrolled at R.

    `population` may name a relation already holding the round's population (saves a rescan).
    """
    census = cal.census_date(r.academic_year, r.term)
    target = horizon_census(cal, r, horizon)
    pop = population or f"({population_sql(cal, r, cutoff, schema, dialect=dialect)})"
    d = dialect
    ctx = RoundContext(as_of=cutoff, params={"as_of": _d(cutoff)}, schema=schema, dialect=d, cal=cal, round=r)
    at_target = f"t.census_date = {_d(target)}"
    keyed = "t.student_key IS NOT NULL"
    after_census = f"t.record_date > {_d(census)}"
    near_target = f"t.record_date <= {d.plus_days(_d(target), OTHER_SYSTEM_WINDOW_DAYS)}"
    exits_list = ", ".join(f"'{e}'" for e in NON_DROPOUT_EXITS)
    # Evidence of the outcome: each a set of rows known by the cutoff (the compiler's known-by step).
    return f"""
        WITH pop AS (SELECT student_key FROM {pop}),
        horizon_known AS (
            SELECT count(*) > 0 AS known FROM ({known_rows_sql(ctx, "src_dmc_census", [at_target])})
        ),
        obec AS (
            SELECT DISTINCT student_key FROM ({known_rows_sql(ctx, "linked_dmc_census", [at_target, keyed])})
        ),
        other AS (
            SELECT DISTINCT student_key FROM ({known_rows_sql(ctx, "linked_other_enrolment", [
                f"t.record_date >= {d.minus_days(_d(target), OTHER_SYSTEM_WINDOW_DAYS)}", near_target,
                after_census, keyed])})
        ),
        training AS (
            SELECT DISTINCT student_key FROM ({known_rows_sql(ctx, "linked_ewe_training", [
                f"t.record_date >= {d.minus_days(_d(target), TRAINING_WINDOW_DAYS)}", near_target,
                after_census, keyed])})
        ),
        exits AS (
            SELECT student_key, {d.arg_max}(exit_type, exit_date) AS exit_type
            FROM ({known_rows_sql(ctx, "linked_exits", [
                f"t.exit_date > {_d(census)}", f"t.exit_date <= {_d(target)}", keyed,
                f"(t.exit_type IN ({exits_list}) "
                f"OR (t.exit_type = 'transfer_out' AND t.destination_school_code IS NOT NULL))"])})
            GROUP BY student_key
        )
        SELECT p.student_key, '{r.round_id}' AS round_id,
               CASE WHEN NOT (SELECT known FROM horizon_known) THEN NULL
                    WHEN o.student_key IS NOT NULL OR x.student_key IS NOT NULL
                         OR t.student_key IS NOT NULL OR e.student_key IS NOT NULL THEN 0
                    ELSE 1 END AS dropout,
               CASE WHEN NOT (SELECT known FROM horizon_known) THEN 'unknown'
                    WHEN o.student_key IS NOT NULL THEN 'continued'
                    WHEN x.student_key IS NOT NULL THEN 'other_system'
                    WHEN t.student_key IS NOT NULL THEN 'work_training'
                    WHEN e.student_key IS NOT NULL THEN e.exit_type
                    ELSE 'dropout' END AS outcome
        FROM pop p
        LEFT JOIN obec o USING (student_key)
        LEFT JOIN other x USING (student_key)
        LEFT JOIN training t USING (student_key)
        LEFT JOIN exits e USING (student_key)
    """
