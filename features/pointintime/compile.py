"""The point-in-time compiler: declared feature groups -> one SQL query of small named steps.

Where it sits: `groups.py` declares what each feature group reads and computes; this module turns
those declarations into SQL for one round; `build.py` runs it (features), `labels.py` uses the same
population step, and serving's placement query uses the same registry reads. The chain, per read:

    population  students enrolled at the round (one census row each, the latest known version;
                when the census is late, the latest enrolment evidence: `latest_evidence_steps`;
                when only some schools' census files are missing, those schools' pupils from the
                latest evidence: `school_fallback_steps`)
    <x>_known   rows of the source known by the as-of date that describe a date not after it
    <x>_latest  the latest known version of each record (known_at, then delivery, then line)
    <x>         within the staleness limit (rows describing a date too long ago are dropped)
    aggregates  the group's own steps over <x> (written in the group's declaration)
    join        one wide row per student: every group's columns, in catalogue order

"The latest known version of a record" is written once, in `latest_version_sql`. Engine-specific
functions (arg_max vs max_by, struct literals, date arithmetic) sit behind `Dialect`, so a second
engine runs the same declarations: DUCKDB (embedded, the default) and SPARK (features/engine/).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from features.calendar import SchoolCalendar, ScoringRound
from features.contract import SOURCES, identity_columns
from features.ids import GRADES
from features.linkage.views import linked_select

Dtype = Literal["float", "int", "bool", "category"]

# Columns every warehouse table carries besides the contract's: where a row came from and when it
# became known. Linked views add the pseudonymous key, the link run's integer `sid`, and the
# identity token and its kind (which replace the vault-only identity columns).
DELIVERY_COLUMNS: tuple[str, ...] = ("delivery_id", "source_file", "source_line", "known_at")
LINKED_COLUMNS: tuple[str, ...] = ("student_key", "sid", "id_token", "id_kind")
LINKED = "linked_"  # a linked view is `linked_<source>` (features/linkage/views.py)
# The order that makes one version of a record "the latest known": known_at, then the delivery,
# then the line in the file (the last two are unique, so exactly one version wins).
VERSION_ORDER: tuple[str, ...] = ("known_at", "delivery_id", "source_line")


# --- dialect -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dialect:
    """The few functions whose spelling differs between SQL engines."""

    name: str
    arg_max: str  # aggregate: the value at the row where the ordering key is largest
    arg_min: str  # aggregate: the value at the row where the ordering key is smallest
    struct: Callable[[Mapping[str, str]], str]  # named fields -> a struct value
    row: Callable[[tuple[str, ...]], str]  # an ordering key of several columns, compared left to right
    date: Callable[[dt.date], str]  # a date literal
    month_start: Callable[[str], str]  # first day of the month of a date expression
    minus_months: Callable[[str, int], str]
    minus_days: Callable[[str, int], str]
    plus_days: Callable[[str, int], str]
    years_between: Callable[[str, str], str]  # whole years from a to b (birthdays passed)
    days_between: Callable[[str, str], str]  # days from a to b
    string: str  # the string type's name (in a CAST)
    # aggregate: the non-NULL values joined by a separator, in the order of a key (NULL if none)
    string_agg: Callable[[str, str, str], str]  # (value, separator literal, ordering key)


DUCKDB = Dialect(
    name="duckdb",
    arg_max="arg_max",
    arg_min="arg_min",
    struct=lambda fields: "{" + ", ".join(f"'{k}': {v}" for k, v in fields.items()) + "}",
    row=lambda cols: "(" + ", ".join(cols) + ")",
    date=lambda d: f"DATE '{d.isoformat()}'",
    month_start=lambda e: f"date_trunc('month', {e})",
    minus_months=lambda e, n: f"{e} - INTERVAL {n} MONTH",
    minus_days=lambda e, n: f"{e} - INTERVAL {n} DAY",
    plus_days=lambda e, n: f"{e} + INTERVAL {n} DAY",
    years_between=lambda a, b: f"date_sub('year', {a}, {b})",
    days_between=lambda a, b: f"date_diff('day', {a}, {b})",
    string="VARCHAR",
    string_agg=lambda v, sep, key: f"string_agg({v}, {sep} ORDER BY {key})",
)
# Spark SQL (features/engine/spark.py runs it). Where the meaning could drift:
# - max_by / min_by skip a NULL ordering key as arg_max / arg_min do; the ordering keys here are
#   structs, never NULL. Inside a struct key, though, DuckDB orders a NULL field last and Spark
#   first: a key field that may be NULL is preceded by `<field> IS NULL` (labels.paths_sql).
# - string_agg ... WITHIN GROUP (Spark >= 4) skips NULLs and gives NULL over no value, as DuckDB's
#   string_agg ... ORDER BY does; it orders NULL keys first where DuckDB puts them last (no key
#   here is NULL).
# - add_months clips to the month's last day (Spark >= 3), as DuckDB's date - INTERVAL n MONTH does.
# - months_between(b, a) is whole months plus (day_b - day_a) / 31, so its floor / 12 counts the
#   birthdays passed, as DuckDB's date_sub('year', a, b) does (the fraction is never within 1e-8
#   of a whole month, where Spark's 8-digit rounding could tip it).
# - days_between is cast to DOUBLE: a decimal literal (`/ 365.25`) would otherwise make Spark divide
#   in DECIMAL, where DuckDB divides in DOUBLE.
SPARK = Dialect(
    name="spark",
    arg_max="max_by",
    arg_min="min_by",
    struct=lambda fields: "named_struct(" + ", ".join(f"'{k}', {v}" for k, v in fields.items()) + ")",
    row=lambda cols: "struct(" + ", ".join(cols) + ")",
    date=lambda d: f"DATE '{d.isoformat()}'",
    month_start=lambda e: f"trunc({e}, 'MM')",
    minus_months=lambda e, n: f"add_months({e}, -{n})",
    minus_days=lambda e, n: f"date_sub({e}, {n})",
    plus_days=lambda e, n: f"date_add({e}, {n})",
    years_between=lambda a, b: f"CAST(floor(months_between({b}, {a}) / 12) AS INT)",
    days_between=lambda a, b: f"CAST(datediff({b}, {a}) AS DOUBLE)",
    string="STRING",
    string_agg=lambda v, sep, key: f"string_agg({v}, {sep}) WITHIN GROUP (ORDER BY {key})",
)
DIALECTS: dict[str, Dialect] = {"duckdb": DUCKDB, "spark": SPARK}


# --- declarations ------------------------------------------------------------------------------

def source_columns(relation: str) -> tuple[str, ...]:
    """Columns of a warehouse relation (`linked_<source>` or `src_<source>`) from the contract."""
    kind, _, name = relation.partition("_")
    if kind not in ("linked", "src") or name not in SOURCES:
        raise ValueError(
            f"unknown source {relation!r}: expected linked_<source> or src_<source> with a source of "
            f"the contract ({', '.join(sorted(SOURCES))})"
        )
    src = SOURCES[name]
    own = tuple(c.stored_name for c in src.columns if c.name not in identity_columns(src))
    return (*(LINKED_COLUMNS if kind == "linked" else ()), *DELIVERY_COLUMNS, *own)


@dataclass(frozen=True)
class Read:
    """One point-in-time read of a source: known by the as-of date -> latest version -> fresh.

    `key` names a record (one row per key survives); `latest_event_first` makes the record the
    student's latest event (e.g. the latest screening), then its latest known version. `key=None`
    keeps every known row (a group that only asks "was it ever recorded").
    """

    name: str
    source: str  # warehouse relation, e.g. "linked_attendance", "src_schools"
    values: tuple[str, ...]  # columns carried from the winning version
    key: tuple[str, ...] | None = ("sid",)
    event: str | None = None  # the column of the date the row describes (None: a registry)
    event_until: str = "as_of"  # round date the event may not be after ("as_of" or "census")
    fresh_after: str | None = None  # round parameter: events on or before it are stale
    latest_event_first: bool = False
    where: str = ""  # a filter on the known rows, before the latest version is chosen
    per_student: bool = True  # restrict to the population (joins on `sid`)

    def __post_init__(self) -> None:
        cols = set(source_columns(self.source))
        named = [*self.values, *(self.key or ()), *([self.event] if self.event else [])]
        unknown = [c for c in named if c not in cols]
        if unknown:
            raise ValueError(f"read {self.name!r} of {self.source}: unknown column(s) {unknown}; "
                             f"the source has {sorted(cols)}")
        if self.fresh_after and not self.event:
            raise ValueError(f"read {self.name!r}: a staleness limit needs an event column")
        if self.fresh_after and self.key is None:
            # A read of every known row has no record whose version could go stale.
            raise ValueError(f"read {self.name!r}: a staleness limit needs a record key")
        if self.fresh_after and self.event not in (self.key or ()) and not self.latest_event_first:
            # Otherwise "latest version, then drop stale" and "drop stale, then latest" differ.
            raise ValueError(f"read {self.name!r}: a staleness limit needs its event in the key "
                             "or the latest event first")


@dataclass(frozen=True)
class RoundContext:
    """What a step needs to know about the round it is compiled for."""

    as_of: dt.date
    params: Mapping[str, str]  # named SQL expressions (dates of the round, thresholds)
    schema: str = "wh"
    dialect: Dialect = field(default_factory=lambda: DUCKDB)
    cal: SchoolCalendar | None = None  # None: a query of dates only (serving's placement)
    round: ScoringRound | None = None

    def fmt(self, template: str) -> str:
        return template.format(**self.params)


Sql = str | Callable[[RoundContext], str]


@dataclass(frozen=True)
class Step:
    """An aggregate step of a group: a named SELECT over earlier steps (a template or a function).

    A round-wide step over the whole country may also declare its rows in parts (`parts`: one
    SELECT each) and itself over any relation holding them (`over`), with `sql` = `over` of the
    parts' UNION ALL. An engine that cannot hold the union at once (DuckDB in a bounded session,
    `build.prepare_round`) materialises the parts one after the other and runs `over` on them:
    the same rows, so the same step.
    """

    name: str
    sql: Sql
    parts: Callable[[RoundContext], list[str]] | None = None
    over: Callable[[RoundContext, str], str] | None = None


@dataclass(frozen=True)
class Column:
    """One output column of a group: its catalogue fields and the SQL that computes it."""

    name: str
    dtype: Dtype
    en: str
    th: str
    missing: str
    sql: Sql


@dataclass(frozen=True)
class FeatureGroup:
    """A declared group: reads, aggregate steps, the joins into the population, output columns.

    `model` groups are model inputs and go into the catalogue; others (placement, fairness) are
    columns serving and monitoring need beside the features.
    """

    name: str
    en: str
    th: str
    reads: tuple[Read, ...]
    steps: tuple[Step, ...]
    joins: tuple[str, ...]  # "<step> USING (sid)" / "<step> ON ...", joined to `pop` in this order
    columns: tuple[Column, ...]
    thresholds: Mapping[str, float | int] = field(default_factory=dict)
    model: bool = True
    staleness: str = "none"  # said in words for the catalogue and a newcomer

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"group {self.name!r} declares a column twice")


# --- the population ----------------------------------------------------------------------------

POPULATION_COLUMNS: tuple[str, ...] = (
    "student_key", "sid", "delivery_id", "source_file", "source_line", "known_at", "census_date",
    "academic_year", "term", "school_code", "id_token", "id_kind", "student_no", "sex", "birth_month",
    "grade", "room", "nationality", "disability", "tambon_code",
)
POPULATION = Read(
    name="pop", source="linked_dmc_census", values=tuple(c for c in POPULATION_COLUMNS if c != "sid"),
    key=("sid",), event="census_date", per_student=False, where="t.student_key IS NOT NULL",
)


# --- the compiler ------------------------------------------------------------------------------

def latest_version_sql(d: Dialect, relation: str, key: tuple[str, ...], values: tuple[str, ...],
                       order: tuple[str, ...]) -> str:
    """The latest known version of each record: the ONE place this rule is written.

    An arg_max per key (a hash aggregate) rather than a window sorted on the key: several times
    faster at 1M students, and the same row wins because the ordering key is unique.
    """
    k = ", ".join(key)
    v = d.struct({c: c for c in values})
    return (f"SELECT {k}, {', '.join(f'v.{c}' for c in values)} FROM ("
            f"SELECT {k}, {d.arg_max}({v}, {d.row(order)}) AS v FROM {relation} GROUP BY {k})")


def known_rows_sql(ctx: RoundContext, relation: str, where: list[str], join_population: bool = False,
                   students: str | None = None) -> str:
    """Rows of a source known by the as-of date (its delivery's known_at) that pass `where`.

    `students` (a step with a `sid` column; `relation` a `linked_<source>` view): only those
    students' rows, read through their keys (`linked_select`), not the view.
    """
    join = " JOIN pop USING (sid)" if join_population else ""
    rows = f"{ctx.schema}.{relation}"
    if students is not None:
        if not relation.startswith(LINKED):
            raise ValueError(f"rows of some students are read from a linked view, not {relation!r}")
        rows = f"({linked_select(relation.removeprefix(LINKED), ctx.schema, students)})"
    return (f"SELECT t.* FROM {rows} t{join} WHERE "
            + " AND ".join([f"t.known_at <= {ctx.params['as_of']}", *where]))


def read_steps(read: Read, ctx: RoundContext, *, event_filter: str | None = None) -> list[tuple[str, str]]:
    """The named steps of one read: <name>_known (rows known by as-of, within the staleness limit),
    <name>_latest (the latest version of each record), <name>."""
    d, p = ctx.dialect, ctx.params
    where = []
    if event_filter is not None:
        where.append(event_filter)
    elif read.event:
        where.append(f"t.{read.event} <= {p[read.event_until]}")
    if read.where:
        where.append(ctx.fmt(read.where))
    if read.fresh_after:
        # The staleness filter commutes with "latest version" (`Read` refuses a limit whose event is
        # neither in the record's key nor first in its order): a key's rows are all stale or all fresh,
        # or its latest row is its freshest. So stale rows are dropped as they are read, not after:
        # a scoring round's known rows, copied once per round, then hold 13 months of attendance,
        # not every month a pupil was ever reported (docs/ARCHITECTURE.md, "Known rows").
        where.append(f"t.{read.event} > {p[read.fresh_after]}")
    steps = [(f"{read.name}_known", known_rows_sql(ctx, read.source, where, read.per_student))]
    if read.key is None:
        steps.append((read.name, f"SELECT * FROM {read.name}_known"))
        return steps
    order = ((read.event,) if read.latest_event_first and read.event else ()) + VERSION_ORDER
    values = read.values
    if read.event and read.event not in (*read.key, *values):
        values = (*values, read.event)  # the record keeps its event date (later steps may read it)
    steps.append((f"{read.name}_latest", latest_version_sql(d, f"{read.name}_known", read.key, values, order)))
    steps.append((read.name, f"SELECT * FROM {read.name}_latest"))
    return steps


def population_steps(ctx: RoundContext, census: dt.date, columns: tuple[str, ...] = POPULATION_COLUMNS,
                     evidence: LatestEvidence | None = None) -> list[tuple[str, str]]:
    """Students enrolled at the round: one census row each, the latest version known by as-of.

    With `evidence` (the round's census had not arrived by as-of) the population is the latest
    enrolment evidence instead (`latest_evidence_steps`); the step is named `pop` either way.
    """
    if evidence is not None and evidence.schools:
        return school_fallback_steps(ctx, census, evidence, columns)
    if evidence is not None:
        return latest_evidence_steps(ctx, evidence, columns)
    read = replace(POPULATION, values=tuple(c for c in columns if c != "sid"))
    # enrolled at the round = in its census (the event date equals the census, not "on or before")
    steps = read_steps(read, ctx, event_filter=f"t.census_date = {ctx.dialect.date(census)}")
    steps[-1] = ("pop", f"SELECT {', '.join(columns)} FROM pop_latest")  # the contract's column order
    return steps


# --- the population when the round's census is late ----------------------------------------------

@dataclass(frozen=True)
class LatestEvidence:
    """The round's census (or one school's part of it) has not arrived by its as-of date: enrolment
    from the latest evidence.

    `base_census` is the latest census known by the as-of date (None: no census known at all, so
    the population is empty); `academic_year` is the round's, so a pupil counted in an earlier
    academic year has moved up one grade per year since.
    """

    base_census: dt.date | None
    academic_year: int
    # Non-empty: the round's census HAS arrived, but not from these schools (a file refused or
    # missing). Only their pupils come from the latest evidence; every other school keeps its census.
    schools: tuple[str, ...] = ()


# Records that show a pupil enrolled in an OBEC school after the base census: (source, the date the
# row describes, a filter). A month with school days or a term's marks means the school still
# lists the pupil; the latest of them also says which school (a pupil who moved since the census).
ENROLMENT_EVIDENCE: tuple[tuple[str, str, str], ...] = (
    ("linked_attendance", "year_month", "t.school_days > 0"),
    ("linked_grades", "assessed_on", ""),
)


def latest_evidence_steps(ctx: RoundContext, ev: LatestEvidence, columns: tuple[str, ...],
                          name: str = "pop", placed_at: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Students enrolled at a round whose census is late, set-based, as known by the as-of date.

        pop_known    census rows known by as-of, up to the base census
        pop_latest   each pupil's latest census row (latest census first, then its latest version)
        pop_seen     pupils with attendance or marks after the base census: when last, and where
        pop_exits    each pupil's latest exit after the base census
        pop          the base census's pupils and the pupils seen since, less those whose exit came
                     after they were last seen, and less those past the last grade (completed school)

    `name` names the steps (`<name>_known` ...; the last is `<name>`), so the per-school fallback
    can run them beside the census's own `pop_known`/`pop_latest`.

    `placed_at` (school codes; the per-school fallback's): the steps keep every pupil the evidence
    could place at one of these schools and may keep others (the caller filters on the school).
    A first step, `<name>_students`, lists the pupils with a census row up to the base census or
    a row of evidence after it at one of the schools - the pupil's school below is one of those
    rows' schools - and every other step reads those pupils' rows only (`known_rows_sql`'s
    `students`): the fallback for one absent school no longer reads the whole country's history
    (8M pupils: docs/ARCHITECTURE.md "Where a national round's preparation goes").

    A pupil seen since but never counted by any census is left out: the features need the grade,
    sex and birth month a census row gives; they join the list when the census arrives. Grades move
    up one per academic year since the pupil's census row; a room is kept only when the school
    and the grade are still the census's.
    """
    d, p = ctx.dialect, ctx.params
    base = d.date(ev.base_census) if ev.base_census else None
    after_base = (lambda col: f"t.{col} > {base}") if base else (lambda col: "true")
    census_values = tuple(dict.fromkeys(
        (*(c for c in columns if c != "sid"), "census_date", "academic_year", "school_code", "grade", "room")))
    unknown = set(census_values) - set(POPULATION_COLUMNS)
    if unknown:
        raise ValueError(f"population columns {sorted(unknown)} are not census columns")
    census_conds = [f"t.census_date <= {base}" if base else "false", "t.student_key IS NOT NULL"]
    seen_reads = [(source, event, [after_base(event), f"t.{event} <= {p['as_of']}", "t.student_key IS NOT NULL",
                                   *([where] if where else [])]) for source, event, where in ENROLMENT_EVIDENCE]
    steps: list[tuple[str, str]] = []
    students = None
    if placed_at:
        at = "t.school_code IN (" + ", ".join("'" + c.replace("'", "''") + "'" for c in placed_at) + ")"
        students = f"{name}_students"
        steps.append((students, " UNION ".join(
            f"SELECT sid FROM ({known_rows_sql(ctx, source, [*conds, at])})"
            for source, conds in ((POPULATION.source, census_conds), *((s, c) for s, _, c in seen_reads)))))
    steps += [
        (f"{name}_known", known_rows_sql(ctx, POPULATION.source, census_conds, students=students)),
        (f"{name}_latest", latest_version_sql(d, f"{name}_known", ("sid",), census_values, ("census_date", *VERSION_ORDER))),
    ]
    seen = [f"SELECT sid, school_code, {event} AS seen_on, known_at, delivery_id, source_line "
            f"FROM ({known_rows_sql(ctx, source, conds, students=students)})" for source, event, conds in seen_reads]
    steps.append((f"{name}_seen_rows", " UNION ALL ".join(seen)))
    steps.append((f"{name}_seen", f"SELECT sid, max(seen_on) AS seen_on, "
                              f"{d.arg_max}(school_code, {d.row(('seen_on', *VERSION_ORDER))}) AS seen_school "
                              f"FROM {name}_seen_rows GROUP BY sid"))
    steps.append((f"{name}_exits", "SELECT sid, max(exit_date) AS exit_date FROM ("
                               + known_rows_sql(ctx, "linked_exits", [after_base("exit_date"), f"t.exit_date <= {p['as_of']}"],
                                                students=students)
                               + ") GROUP BY sid"))
    last = len(GRADES) - 1
    index = "CASE c.grade " + " ".join(f"WHEN '{g}' THEN {i}" for i, g in enumerate(GRADES)) + " END"
    steps.append((f"{name}_evidence", f"""SELECT c.*, s.seen_on, s.seen_school, x.exit_date,
          {index} + ({ev.academic_year} - c.academic_year) AS grade_index
        FROM {name}_latest c LEFT JOIN {name}_seen s USING (sid) LEFT JOIN {name}_exits x USING (sid)
        WHERE {f"c.census_date = {base}" if base else "false"} OR s.seen_on IS NOT NULL"""))
    moved = "(seen_school IS NOT NULL AND seen_school <> school_code)"
    out = {
        "school_code": "coalesce(seen_school, school_code) AS school_code",
        "grade": "CASE least(grade_index, " + str(last) + ") "
                 + " ".join(f"WHEN {i} THEN '{g}'" for i, g in enumerate(GRADES)) + " END AS grade",
        "room": f"CASE WHEN {moved} OR academic_year <> {ev.academic_year} THEN NULL ELSE room END AS room",
    }
    steps.append((name, f"SELECT {', '.join(out.get(c, c) for c in columns)} FROM {name}_evidence "
                         f"WHERE (exit_date IS NULL OR seen_on > exit_date) "
                         f"AND (grade_index <= {last} OR seen_on IS NOT NULL)"))
    return steps


def school_fallback_steps(ctx: RoundContext, census: dt.date, ev: LatestEvidence,
                          columns: tuple[str, ...]) -> list[tuple[str, str]]:
    """Students enrolled at a round whose census arrived without some schools' files, set-based.

        pop_known, pop_latest   the round's census, as for any round (`population_steps`)
        pop_census              its pupils
        pop_fallback_*          the latest-evidence steps (`latest_evidence_steps`) on `ev.base_census`
        pop                     the census's pupils, plus the pupils the latest evidence places at a
                                school of `ev.schools` who are not in the round's census anywhere

    A pupil of a missing school who is in the round's census at another school is counted there
    only (the census that arrived is authoritative); so is a pupil the evidence places elsewhere.
    """
    if "sid" not in columns:
        raise ValueError("the per-school fallback joins on sid: the population columns must include it")
    steps = population_steps(ctx, census, columns)
    steps[-1] = ("pop_census", steps[-1][1])
    # the fallback carries the school (its filter below) even when the caller does not ask for it
    steps += latest_evidence_steps(ctx, replace(ev, schools=()), tuple(dict.fromkeys((*columns, "school_code"))),
                                   name="pop_fallback", placed_at=ev.schools)
    codes = ", ".join("'" + code.replace("'", "''") + "'" for code in ev.schools)
    cols = ", ".join(columns)
    steps.append(("pop", f"SELECT {cols} FROM pop_census UNION ALL "
                         f"SELECT {cols} FROM pop_fallback f WHERE f.school_code IN ({codes}) "
                         "AND NOT EXISTS (SELECT 1 FROM pop_census c WHERE c.sid = f.sid)"))
    return steps


def with_sql(steps: list[tuple[str, str]], select: str) -> str:
    body = ",\n    ".join(f"{name} AS ({sql})" for name, sql in steps)
    return f"WITH {body}\n{select}"


def render(sql: Sql, ctx: RoundContext) -> str:
    return sql(ctx) if callable(sql) else ctx.fmt(sql)


def compile_groups(groups: tuple[FeatureGroup, ...], ctx: RoundContext, head: tuple[str, ...],
                   population: list[tuple[str, str]], order_by: str = "pop.student_key",
                   prepared: Mapping[str, str] | None = None) -> str:
    """One query: population, every read and step of the groups (each once), joined to `pop`.

    `head` is the leading SELECT list (row identity); then each group's columns in order.
    `prepared`: steps computed beforehand (step name -> the query that reads its rows), used in
    place of the declared ones (a round scored in chunks computes its round-wide pieces once).
    """
    steps: list[tuple[str, str]] = list(population)
    seen = dict(steps)

    def add(group: str, name: str, sql: str) -> None:
        if prepared and name in prepared:
            sql = prepared[name]
        # a step shared by two groups (the CCT read, the registries) is emitted once
        if name in seen:
            if seen[name] != sql:
                raise ValueError(f"group {group!r} declares step {name!r} differently from an earlier group")
            return
        seen[name] = sql
        steps.append((name, sql))

    joins: list[str] = []
    for g in groups:
        for read in g.reads:
            for name, sql in read_steps(read, ctx):
                add(g.name, name, sql)
        for s in g.steps:
            add(g.name, s.name, render(s.sql, ctx))
        for j in g.joins:
            if j not in joins:
                joins.append(j)
    cols = [*head]
    for g in groups:
        cols.extend(f"{render(c.sql, ctx)} AS {c.name}" for c in g.columns)
    select = ("SELECT\n        " + ",\n        ".join(cols) + "\n    FROM pop\n"
              + "".join(f"    LEFT JOIN {j}\n" for j in joins) + f"    ORDER BY {order_by}")
    return with_sql(steps, select)
