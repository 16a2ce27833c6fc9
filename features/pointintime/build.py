"""Point-in-time features for one scoring round, set-based in DuckDB.

Rows are (student_key, round). A source row may contribute only if it was *known* by the
round's as-of date (its delivery's `known_at` ≤ as_of) and describes a date ≤ as_of. The query
is compiled (`compile.py`) from the declared groups (`groups.py`): population -> known rows of
each source -> latest version per record -> within staleness -> aggregates -> one wide row per
student. This module supplies the round's dates as named parameters and runs the query; it also
compiles serving's placement queries from the same steps. Missing stays missing (NULL) with
explicit indicators; nothing is imputed from later data.

The same meaning is written row by row in tests/support/pointintime_oracle.py; a test requires
both to agree on every column.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from features.calendar import SchoolCalendar, ScoringRound
from features.pointintime.compile import (
    DUCKDB, Dialect, RoundContext, compile_groups, population_steps, read_steps, render, with_sql,
)
from features.pointintime.groups import (
    ALL_GROUPS, AREAS_READ, FAIRNESS, MOBILITY, MODEL_GROUPS, PLACEMENT, SCHOOLS_READ, PAST_DROPOUT_MIN_STUDENTS, PAST_DROPOUT_YEARS, STALENESS_DAYS,
    earlier_early_rounds,
)
from features.pointintime.spec import FEATURE_NAMES, GROUP_COLUMNS, KEY_COLUMNS

__all__ = ["PAST_DROPOUT_MIN_STUDENTS", "PAST_DROPOUT_YEARS", "OUTPUT_COLUMNS", "build_features",
           "earlier_early_rounds", "features_sql", "placement_sql", "previous_term", "round_context",
           "school_areas_sql"]

# Population columns the features read (the population step carries only these: less to hash at 1M).
FEATURE_POPULATION_COLUMNS: tuple[str, ...] = (
    "student_key", "sid", "school_code", "sex", "birth_date", "grade", "id_kind", "disability",
)


def previous_term(r: ScoringRound) -> tuple[int, int]:
    return (r.academic_year - 1, 2) if r.term == 1 else (r.academic_year, 1)


def round_params(cal: SchoolCalendar, r: ScoringRound, as_of: dt.date, d: Dialect) -> dict[str, str]:
    """The round's dates as SQL expressions, by the names the groups' templates use."""
    census = cal.census_date(r.academic_year, r.term)
    term_start = cal.term(r.term).starts.in_year(r.academic_year)
    py, pt = previous_term(r)
    ptc = cal.term(pt)
    m12 = d.date(as_of - dt.timedelta(days=STALENESS_DAYS))
    params = {
        "as_of": d.date(as_of), "census": d.date(census), "m12": m12,
        "m12_month": d.month_start(m12),
        # last term's months may start before the 12-month window: read one month more
        "att_window_start": d.minus_months(m12, 1),
        "term_start_month": d.month_start(d.date(term_start)),
        "prev_start_month": d.month_start(d.date(ptc.starts.in_year(py))),
        "prev_end": d.date(ptc.ends.in_year(py)),
        "june10": d.date(cal.census_date(r.academic_year, 1)),
        "academic_year": str(r.academic_year), "term": str(r.term),
        "is_mid_round": "true" if r.round_type == "mid" else "false",
        "round_id": f"'{r.round_id}'",
    }
    for g in ALL_GROUPS:
        for k, v in g.thresholds.items():
            if params.setdefault(k, repr(v)) != repr(v):
                raise ValueError(f"threshold {k!r} of group {g.name!r} clashes with another of the same name")
    params["moves_window_start"] = d.minus_days(params["census"], int(MOBILITY.thresholds["school_moves_window_days"]))
    return params


def round_context(cal: SchoolCalendar, r: ScoringRound, schema: str = "wh", dialect: Dialect = DUCKDB,
                  as_of: dt.date | None = None) -> RoundContext:
    as_of = as_of or cal.as_of(r.round_id)
    return RoundContext(as_of=as_of, params=round_params(cal, r, as_of, dialect), schema=schema, dialect=dialect,
                        cal=cal, round=r)


def features_sql(cal: SchoolCalendar, r: ScoringRound, schema: str = "wh", dialect: Dialect = DUCKDB) -> str:
    """The round's feature query, compiled from the declared groups.

    Everything per student joins and groups on `sid`, the link run's integer for student_key
    (hashing an integer instead of a 21-character string); only the result carries the key.
    """
    ctx = round_context(cal, r, schema, dialect)
    census = cal.census_date(r.academic_year, r.term)
    head = ("pop.student_key", f"{ctx.params['round_id']} AS round_id", f"{ctx.params['as_of']} AS as_of",
            "pop.school_code")
    return compile_groups((*MODEL_GROUPS, FAIRNESS), ctx, head,
                          population_steps(ctx, census, FEATURE_POPULATION_COLUMNS))


def placement_sql(census: dt.date, as_of: dt.date, schema: str = "wh", dialect: Dialect = DUCKDB) -> str:
    """(student_key, room) of each student enrolled at the census, as known by as-of (for serving)."""
    ctx = RoundContext(as_of=as_of, params={"as_of": dialect.date(as_of)}, schema=schema, dialect=dialect)
    return with_sql(population_steps(ctx, census, ("student_key", "sid", "room")), "SELECT student_key, room FROM pop")


def school_areas_sql(as_of: dt.date, schema: str = "wh", dialect: Dialect = DUCKDB) -> str:
    """Each school's name and area (tambon -> amphoe -> province), latest registry versions by as-of."""
    ctx = RoundContext(as_of=as_of, params={"as_of": dialect.date(as_of)}, schema=schema, dialect=dialect)
    cols = ["school.school_code", *(f"{render(c.sql, ctx)} AS {c.name}" for c in PLACEMENT.columns if c.name != "room")]
    return with_sql([*read_steps(SCHOOLS_READ, ctx), *read_steps(AREAS_READ, ctx)],
                    f"SELECT {', '.join(cols)} FROM school LEFT JOIN area ON area.tambon_code = school.tambon_code")


OUTPUT_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *FEATURE_NAMES, *GROUP_COLUMNS)


def build_features(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound, schema: str = "wh") -> pa.Table:
    """The round's feature table (one row per enrolled student, sorted by student_key)."""
    table = con.sql(features_sql(cal, r, schema)).to_arrow_table()
    if tuple(table.column_names) != OUTPUT_COLUMNS:
        missing = set(OUTPUT_COLUMNS) - set(table.column_names)
        extra = set(table.column_names) - set(OUTPUT_COLUMNS)
        raise AssertionError(f"feature SQL out of step with the catalogue: missing {missing}, extra {extra}")
    return table
