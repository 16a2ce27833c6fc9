"""Dropout labels from linked histories: a state per pupil and round, and the rows that decided it.

For a student enrolled at round R (in the DMC census of R's term), the label asks: at the
horizon census (the next census by default, or the same term a year later), is the child
learning somewhere, and if not, did the child leave for a reason that is not dropout? Each
`Evidence` below declares one source that can show a path, the rows that count and the state they
show; the SQL is compiled from these declarations (one place), over rows known by `cutoff`:

Once the evidence is complete (as for `dropout` below):

  continuing  enrolled in an OBEC school at the horizon census (DMC census)
  moved       another system (vocational, non-formal, local-government, private, BPP), a work-
              training path (EWE), an exit row that is not dropout (completed, abroad, vocational,
              a transfer with a known destination), or a TZD case closed as a move abroad
  died        an exit row for a death
  dropout     none of these, and the evidence is complete: the pupil's own school's horizon census
              has arrived, and every other evidence source has delivered the period that holds the
              horizon (or is overdue by the contract's delivery schedule, `features.contract`)
  unknown     evidence missing: the school's census refused or late, or a source not yet delivered
              and not yet overdue. Kept out of training and counted. A pupil a row already shows
              moved is unknown too while the evidence is incomplete: labelling only the pupils with a
              path would bias the known labels of that school or round towards "not dropout".
              Also unknown: an M6 pupil with term-2 final marks (whatever they hold: a 0 or ร is
              re-examined, a มส lifted by make-up study and a sitting the school allows, before the
              certificate) who is in no census at the horizon and has no exits row. Completion or a
              year-end dropout: nothing delivered tells them apart, and schools file no exits row
              for some completions, which would otherwise all read as dropouts (`M6_COMPLETION`).
              Also unknown: a pupil seen at the census after the horizon at a school whose horizon
              census never arrived (a move into it at the year's end): likely on that census.
              And, when a year end lies before the horizon, every P6 or M3 pupil from a home
              tambon whose pupils moved up into a school whose horizon census is missing: a move
              there cannot be seen, even before any later census (`year_end_unseen_steps`).

`dropout` (the column the trainer reads) is 1 for dropout, 0 for continuing/moved/died and NULL
for unknown. `label_evidence` says why, for an auditor: the deciding row (source, what it says,
the date it describes, the day it became known), or for a dropout the sources that were searched
and when each arrived, or for an unknown what is missing. Evidence is judged per school (DMC) and
per source (the national deliveries), never by one global flag.

Only rows known by `cutoff` are used, so a label is itself point-in-time: the school's past
dropout rate feature asks for labels with cutoff = the round's as-of date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from features.calendar import SchoolCalendar, ScoringRound
from features.contract import DeliveryDue, delivery_due
from features.pointintime.compile import DUCKDB, POPULATION_COLUMNS, Dialect, RoundContext, population_steps, with_sql

if TYPE_CHECKING:
    import duckdb

Horizon = Literal["next_census", "one_year"]
LabelState = Literal["dropout", "continuing", "moved", "died", "unknown"]
LABEL_STATES: tuple[LabelState, ...] = ("dropout", "continuing", "moved", "died", "unknown")
NON_DROPOUT_EXITS = ("completed", "death", "moved_abroad", "to_vocational", "to_non_formal", "to_work_training")
# Other systems count their learners on their own dates: a record within this window of the
# horizon census shows the child was learning then.
OTHER_SYSTEM_WINDOW_DAYS = 75
TRAINING_WINDOW_DAYS = 200
# A TZD follow-up closes a case some weeks after the child left: a closure up to this long after the
# horizon census still tells where the child was at it.
TZD_WINDOW_DAYS = 75
# Censuses are 153 (June -> November) or 212 (November -> June) days apart: the census after the
# horizon lies within this many days of it, the one after that does not.
NEXT_CENSUS_WITHIN_DAYS = 215


@dataclass(frozen=True)
class Evidence:
    """A source that can show a pupil's path at the horizon census, declared once.

    Rows of `linked_<source>` known by the cutoff whose `date` column lies in the window
    (`after`/`before`: days from the horizon census; `after=None` means "since the round's census")
    and that pass `where` show the state `state` (SQL over the row `t`). `detail` is what an auditor
    reads; `outcome` the older one-word outcome kept in training sets. A `where` that needs an
    engine-specific spelling (date arithmetic) is a function of the dialect.
    """

    source: str
    date: str
    after: int | None  # the window opens this many days from the horizon census (None: the round's census)
    before: int  # and closes this many days after it
    state: str
    outcome: str
    detail: str
    where: str | Callable[[Dialect], str] = "true"
    rank: int = 2  # among several rows the lowest rank decides: a census row beats a move

    @property
    def schedule(self) -> DeliveryDue:
        """The delivery that must have arrived (or be overdue) before its silence means anything."""
        return delivery_due(self.source, "term_end" if self.source in ("exits", "grades") else None)

    def where_sql(self, d: Dialect, schema: str, cutoff: dt.date) -> str:
        """`where` in dialect `d`, its {schema} and {cutoff} filled in."""
        where = self.where(d) if callable(self.where) else self.where
        return where.replace("{schema}", schema).replace("{cutoff}", d.date(cutoff))


# M6's term-2 final marks and no exits row of any kind: completed or dropped out at the year end,
# the records cannot say which, so the label does not guess (state `unknown`; any other path found
# outranks it). The marks are not read: a failing mark is no evidence against completion, since the
# ministry's assessment rules let a school remedy every one before the certificate (a 0 or ร by a
# re-examination, a มส -- barred from the exam for attendance under 80% -- by make-up study and a
# sitting the school allows), and the certificate's date is not delivered. Reading a มส as "cannot
# have completed" made such completions with no exits row dropouts (issue 11: 15 of 64 false M6
# dropouts on a 20,000-pupil world). A pupil who left during term 2 has no final marks and stays a
# dropout; one whose school filed a dropout exits row too. {schema}/{cutoff}: the warehouse schema and
# the label's cutoff. Shared by the labels and the not-found list: a label states a fact, so it is
# `unknown`; the list is a search, so it still lists the pupils whose marks held a มส (outcome
# `M6_REMEDIABLE`: the remedy is not certain, and a child who did not complete is one TZD should
# find), with a caveat, and leaves off and counts the others (`m6_untold`).
M6_REMEDIABLE = "completion_untold_ms"
M6_COMPLETION = Evidence(
    "grades", "assessed_on", None, 0, "'unknown'",
    f"CASE WHEN t.n_mark_ms > 0 THEN '{M6_REMEDIABLE}' ELSE 'completion_untold' END",
    "'final marks of M6 term 2 reported' || CASE WHEN t.n_mark_ms > 0 THEN ' with a มส (remediable)' ELSE '' END "
    "|| ', no exits row: completed or left, not told apart'",
    where=lambda d: "t.assessment = 'final' AND t.term = 2 AND EXISTS ("
          "SELECT 1 FROM {schema}.linked_dmc_census c WHERE c.student_key = t.student_key "
          "AND c.known_at <= {cutoff} AND c.grade = 'M6' "
          f"AND c.census_date BETWEEN {d.minus_days('t.assessed_on', 200)} AND t.assessed_on) "
          "AND NOT EXISTS (SELECT 1 FROM {schema}.linked_exits x WHERE x.student_key = t.student_key "
          f"AND x.known_at <= {{cutoff}} AND x.exit_date >= {d.minus_days('t.assessed_on', 200)})")

_EXITS = ", ".join(f"'{e}'" for e in NON_DROPOUT_EXITS)
EVIDENCE: tuple[Evidence, ...] = (
    Evidence("dmc_census", "census_date", 0, 0, "'continuing'", "'continued'",
             "'enrolled at school ' || t.school_code", rank=1),
    Evidence("exits", "exit_date", None, 0,
             "CASE WHEN t.exit_type = 'death' THEN 'died' ELSE 'moved' END", "t.exit_type",
             "'exit row: ' || t.exit_type || coalesce(' to ' || t.destination_school_code, '')",
             where=f"(t.exit_type IN ({_EXITS}) OR (t.exit_type = 'transfer_out' "
                   f"AND t.destination_school_code IS NOT NULL))"),
    Evidence("other_enrolment", "record_date", -OTHER_SYSTEM_WINDOW_DAYS, OTHER_SYSTEM_WINDOW_DAYS,
             "'moved'", "'other_system'", "'enrolled in ' || t.system || ' school ' || t.school_code"),
    Evidence("ewe_training", "record_date", -TRAINING_WINDOW_DAYS, OTHER_SYSTEM_WINDOW_DAYS,
             "'moved'", "'work_training'", "'work-training path (EWE): ' || t.status"),
    Evidence("tzd_cases", "updated_on", None, TZD_WINDOW_DAYS, "'moved'", "'moved_abroad'",
             "'TZD case ' || t.case_id || ' closed: moved abroad'", where="t.outcome = 'moved_abroad'"),
    M6_COMPLETION,
    # Seen at the census after the horizon at a school whose census before it (the horizon's) never
    # arrived: a pupil who moved into it at the year's end (P6 -> M1, M3 -> M4) was most likely on
    # that missing census, so whether the child was learning at the horizon is unknown, not a
    # dropout. On a 20,000-pupil world 20 of the 64 falsely labelled dropouts were such movers.
    Evidence("dmc_census", "census_date", 1, NEXT_CENSUS_WITHIN_DAYS, "'unknown'", "'unknown'",
             "'at school ' || t.school_code || ' at the next census; its census before that was not received'",
             where=lambda d: "NOT EXISTS (SELECT 1 FROM {schema}.src_dmc_census h WHERE h.school_code = t.school_code "
                   f"AND h.known_at <= {{cutoff}} AND h.census_date < t.census_date "
                   f"AND h.census_date >= {d.minus_days('t.census_date', NEXT_CENSUS_WITHIN_DAYS)})"),
)
# Deaths outrank moves: a child who moved and then died is not "moved" at the horizon.
# A path that cannot be told (completed or left) ranks below every path that can.
_STATE_RANK = {"continuing": 1, "died": 2, "moved": 3, "unknown": 4}


def horizon_census(cal: SchoolCalendar, r: ScoringRound, horizon: Horizon) -> dt.date:
    if horizon == "next_census":
        return cal.next_census(r.academic_year, r.term)[2]
    if horizon == "one_year":
        return cal.census_date(r.academic_year + 1, r.term)
    raise ValueError(f"unknown label horizon {horizon!r}")


def label_mature_on(cal: SchoolCalendar, r: ScoringRound, horizon: Horizon = "next_census") -> dt.date:
    """The day by which every evidence source of R's labels is due or overdue (the contract's
    schedule): a label can be final by then whatever arrives late. Planning only; the warehouse's
    actual deliveries decide each label (`labels_sql`)."""
    target = horizon_census(cal, r, horizon)
    return max(e.schedule.overdue_on(cal, target) for e in EVIDENCE)


def _d(x: dt.date) -> str:
    return DUCKDB.date(x)


# What `labels_sql` reads of a round's population (a `population` relation given needs these).
# A round with no year end before its horizon reads only the pupil and its school (each census column
# costs an arg_max field per pupil, and the past dropout rate labels every past round of the country).
PUPIL_SCHOOL_COLUMNS: tuple[str, ...] = ("student_key", "school_code")
LABEL_POPULATION_COLUMNS: tuple[str, ...] = (*PUPIL_SCHOOL_COLUMNS, "grade", "tambon_code")

# The grades after which pupils change school at the year's end (P6 -> M1, M3 -> M4), keyed by the
# grade they enter: the grade a school must teach for a move into it to hide a leaver's path.
YEAR_END_MOVES: dict[str, str] = {"M1": "P6", "M4": "M3"}
# How far back a missing school's catchment is read: the censuses of the year before the horizon.
CATCHMENT_DAYS = 400


def crosses_year_end(cal: SchoolCalendar, r: ScoringRound, horizon: Horizon) -> bool:
    """Whether R's horizon census lies in a later academic year (pupils move up, and some move school)."""
    return horizon == "one_year" or cal.next_census(r.academic_year, r.term)[0] > r.academic_year


def population_sql(cal: SchoolCalendar, r: ScoringRound, cutoff: dt.date, schema: str = "wh",
                   columns: tuple[str, ...] = POPULATION_COLUMNS, dialect: Dialect = DUCKDB) -> str:
    """Students enrolled at round R: one census row per student, as known by `cutoff`.

    A student with two rows for one census (a resent or corrected delivery) keeps the latest known
    version (the compiler's population step, shared with the features).
    """
    ctx = RoundContext(as_of=cutoff, params={"as_of": _d(cutoff)}, schema=schema, dialect=dialect, cal=cal, round=r)
    return with_sql(population_steps(ctx, cal.census_date(r.academic_year, r.term), columns), "SELECT * FROM pop")


def _evidence_rows_sql(e: Evidence, census: dt.date, target: dt.date, cutoff: dt.date, schema: str,
                       with_evidence: bool = True, dialect: Dialect = DUCKDB) -> str:
    lo = census + dt.timedelta(days=1) if e.after is None else max(census + dt.timedelta(days=1),
                                                                    target + dt.timedelta(days=e.after))
    hi = target + dt.timedelta(days=e.before)
    state_rank = "CASE " + " ".join(f"WHEN ({e.state}) = '{s}' THEN {k}" for s, k in _STATE_RANK.items()) + " END"
    # Without the evidence text only the state is read: the linked views are scanned for the key and
    # the filter columns alone, as cheap as the plain 0/1 label (the features' past dropout rate).
    select = (f"""t.student_key, {e.rank} AS rank, {state_rank} AS state_rank, ({e.state}) AS state,
               ({e.outcome}) AS outcome, '{e.source}' AS source, ({e.detail}) AS detail,
               t.{e.date} AS described, t.known_at""" if with_evidence else
              f"DISTINCT t.student_key, {state_rank} AS state_rank")
    return f"""
        SELECT {select}
        FROM {schema}.linked_{e.source} t
        WHERE t.known_at <= {_d(cutoff)} AND t.student_key IS NOT NULL
          AND t.{e.date} BETWEEN {_d(lo)} AND {_d(hi)} AND ({e.where_sql(dialect, schema, cutoff)})"""


def evidence_status_sql(cal: SchoolCalendar, target: dt.date, cutoff: dt.date, schema: str = "wh",
                        evidence: tuple[Evidence, ...] = EVIDENCE, dialect: Dialect = DUCKDB) -> str:
    """Per evidence source other than the school's own census: the end of the period it must have
    delivered, the day a delivery covering it arrived (a delivery of that source made after the
    period ended; NULL if none by the cutoff), the day it is overdue, and whether its silence is
    now complete evidence (arrived, or overdue by the cutoff)."""
    rows = ", ".join(
        f"('{e.source}', {_d(e.schedule.period_end(cal, target))}, {_d(e.schedule.overdue_on(cal, target))})"
        for e in evidence if e.source != "dmc_census"
    )
    due = (f"SELECT * FROM (VALUES {rows}) v(source, period_end, overdue_on)" if rows else
           f"SELECT CAST(NULL AS {dialect.string}) AS source, CAST(NULL AS DATE) AS period_end, "
           "CAST(NULL AS DATE) AS overdue_on WHERE false")
    return f"""
        WITH due AS ({due}),
        arrived AS (
            SELECT u.source, min(d.delivered_on) AS arrived_on
            FROM due u
            JOIN {schema}.ingested_files f ON f.source = u.source
            JOIN {schema}.deliveries d ON d.delivery_id = f.delivery_id
            WHERE d.delivered_on >= u.period_end AND d.delivered_on <= {_d(cutoff)}
            GROUP BY u.source
        )
        SELECT u.source, u.period_end, a.arrived_on, u.overdue_on,
               a.arrived_on IS NOT NULL OR u.overdue_on <= {_d(cutoff)} AS complete
        FROM due u LEFT JOIN arrived a USING (source)
    """


def paths_sql(
    cal: SchoolCalendar, r: ScoringRound, cutoff: dt.date, horizon: Horizon = "next_census",
    schema: str = "wh", evidence: tuple[Evidence, ...] = EVIDENCE, with_evidence: bool = True,
    dialect: Dialect = DUCKDB,
) -> str:
    """(student_key, e): the row that decides each pupil's path at R's horizon census, for every
    pupil with at least one evidence row known by `cutoff` (pupils with none are absent).

    `e.state` is the path (continuing, died, moved, or unknown for a completion not told apart);
    with `with_evidence`, `e` also holds outcome, source, detail, described and known_at. The step
    `labels_sql` judges, and the not-found list (`features.pointintime.notfound`) reads, so the
    rule of what counts as a path is declared once (`EVIDENCE`).
    """
    census = cal.census_date(r.academic_year, r.term)
    target = horizon_census(cal, r, horizon)
    d = dialect
    rows = " UNION ALL ".join(_evidence_rows_sql(e, census, target, cutoff, schema, with_evidence, d) for e in evidence)
    states = "CASE min(state_rank) " + " ".join(f"WHEN {k} THEN '{s}'" for s, k in _STATE_RANK.items()) + " END"
    fields = ("state", "outcome", "source", "detail", "described", "known_at")
    # `detail` may be NULL (a source's column it quotes is empty): `detail IS NULL` first puts it
    # last in both engines (DuckDB orders a NULL struct field last, Spark first).
    order = ("state_rank", "rank", "known_at", "described", "source", "detail IS NULL", "detail")
    decided = (f"""SELECT student_key, {d.arg_min}({d.struct({f: f for f in fields})}, {d.row(order)}) AS e
            FROM ev GROUP BY student_key""" if with_evidence else
               f"SELECT student_key, {d.struct({'state': states})} AS e FROM ev GROUP BY student_key")
    return f"WITH ev AS ({rows}) {decided}"


def year_end_unseen_steps(target: dt.date, cutoff: dt.date, schema: str, dialect: Dialect, moves: bool) -> str:
    """CTE steps `entry`, `unseen`, `unseen_tambon` (each followed by a comma), after the step
    `school_census` (the schools whose census of `target` is known by the cutoff): `unseen_tambon`
    holds, per grade that moves up (P6, M3) and home tambon, a school whose pupils of the next grade
    came from that tambon and whose census of `target` is missing (unseen_school: the first such
    school; unseen_schools: how many). A pupil of that grade and home tambon may have moved there:
    the caller LEFT JOINs it on (grade, tambon_code). Empty when no year end lies between (`moves`
    false). Shared by the labels and the not-found list."""
    d = dialect
    # Schools that pupils entered at the year's end in the year before the horizon, with no horizon
    # census, and the home tambons those entrants came from: the catchment a move can hide in. By
    # tambon, not amphoe: an extended-opportunity school takes its own tambon's pupils, a secondary
    # school every tambon of its district, and the entrants' homes say which (on a 100,000-pupil
    # world the amphoe marked 647 P6 pupils unknown for an extended school whose entrants all
    # lived in one tambon).
    entry = ", ".join(f"('{g}', '{f}')" for g, f in YEAR_END_MOVES.items())
    unseen = f"""
        entry AS (SELECT * FROM (VALUES {entry}) v(grade, from_grade)),
        unseen AS (
            SELECT DISTINCT e.from_grade AS grade, c.tambon_code, c.school_code
            FROM {schema}.src_dmc_census c JOIN entry e ON e.grade = c.grade
            WHERE c.known_at <= {_d(cutoff)} AND c.census_date < {_d(target)}
              AND c.census_date >= {_d(target - dt.timedelta(days=CATCHMENT_DAYS))}
              AND NOT EXISTS (SELECT 1 FROM school_census sc WHERE sc.school_code = c.school_code)
        ),
        -- one row per (grade, tambon), which the pupils then join by their own grade and home
        -- tambon (a LEFT JOIN that cannot multiply them): joining pupils to schools, a round tiled 387
        -- times (one missing school per copy, in the same tambons) peaked at 10 GB; and `pop` is read
        -- once (a version that read it a second time ran out of DuckDB's 3 GB at 8M pupils)
        unseen_tambon AS (
            SELECT grade, tambon_code, min(school_code) AS unseen_school, count(DISTINCT school_code) AS unseen_schools
            FROM unseen GROUP BY grade, tambon_code
        ),""" if moves else f"""
        unseen_tambon AS (SELECT CAST(NULL AS {d.string}) AS grade, CAST(NULL AS {d.string}) AS tambon_code,
                                 CAST(NULL AS {d.string}) AS unseen_school, CAST(NULL AS BIGINT) AS unseen_schools
                          WHERE false),"""
    return unseen


def unseen_join(grade: str, tambon: str) -> str:
    """The condition that LEFT JOINs `unseen_tambon b` (`year_end_unseen_steps`) to pupils: by the
    pupil's grade and home tambon (SQL expressions `grade`, `tambon`). One row per (grade, tambon), so
    it cannot multiply the pupils."""
    return f"b.grade = {grade} AND b.tambon_code = {tambon}"


def labels_sql(
    cal: SchoolCalendar, r: ScoringRound, cutoff: dt.date, horizon: Horizon = "next_census",
    schema: str = "wh", population: str | None = None, evidence: tuple[Evidence, ...] = EVIDENCE,
    with_evidence: bool = True, dialect: Dialect = DUCKDB,
) -> str:
    """(student_key, round_id, label_state, dropout, outcome, label_evidence) for every student
    enrolled at R.

    `population` may name a relation already holding the round's population (`LABEL_POPULATION_COLUMNS`;
    saves a rescan). `evidence` is the declared sources (another set only to measure
    what one source is worth). `with_evidence=False` leaves out `outcome` and `label_evidence` (and
    the columns they read): for callers that need only the state or the 0/1 label.

    A pupil in P6 or M3 at a round whose horizon is in the next academic year is `unknown` when a
    school that took pupils into M1 (or M4) from the pupil's home tambon in the year before the
    horizon has not delivered its horizon census: a move into that school at the year's end leaves no
    row anyone can read, so the pupil's silence is not a dropout. Every such pupil is unknown, with
    or without a path, as for a pupil of a missing school (`YEAR_END_MOVES`).
    """
    target = horizon_census(cal, r, horizon)
    d = dialect
    moves = crosses_year_end(cal, r, horizon)
    # Only the columns the labels read: every census column would cost an arg_max field per pupil
    # (at 8M pupils the whole census row ran DuckDB out of 3 GB); the grade and home tambon only when
    # a year end lies before the horizon (the catchment rule reads them).
    columns = LABEL_POPULATION_COLUMNS if moves else PUPIL_SCHOOL_COLUMNS
    pop = population or f"({population_sql(cal, r, cutoff, schema, columns, dialect=d)})"
    text = """,
               CASE WHEN e IS NOT NULL AND label_state <> 'unknown' THEN e.outcome ELSE label_state END AS outcome,
               CASE WHEN label_state = 'unknown'
                    THEN concat_ws('; ', CASE WHEN school_known_at IS NULL THEN 'census of {target} from school '
                                              || school_code || ' not received' END, missing_text,
                                   CASE WHEN unseen_school IS NOT NULL THEN 'census of {target} not received from school '
                                        || unseen_school || CASE WHEN unseen_schools > 1 THEN ' and '
                                        || (unseen_schools - 1) || ' more' ELSE '' END
                                        || ', where pupils from this tambon moved up after ' || unseen_grade
                                        || ': a move there at the end of the year cannot be seen' END,
                                   'seen meanwhile: ' || e.source || ': ' || e.detail || ' on ' || e.described)
                    WHEN e IS NOT NULL
                    THEN e.source || ': ' || e.detail || ' on ' || e.described || ' (known ' || e.known_at || ')'
                    ELSE 'no path found: dmc_census (school ' || school_code || ' delivered ' || school_known_at
                         || '); ' || searched_text
               END AS label_evidence""".replace("{target}", str(target)) if with_evidence else ""
    unseen = year_end_unseen_steps(target, cutoff, schema, d, moves)
    # a round with no year end reads neither the grade nor the tambon (its `unseen_tambon` is empty)
    unseen_on = unseen_join("p.grade", "p.tambon_code") if moves else "1 = 0"
    return f"""
        WITH pop AS (SELECT {', '.join(columns)} FROM {pop}),
        decided AS ({paths_sql(cal, r, cutoff, horizon, schema, evidence, with_evidence, d)}),
        school_census AS (
            SELECT school_code, min(known_at) AS known_at FROM {schema}.src_dmc_census
            WHERE census_date = {_d(target)} AND known_at <= {_d(cutoff)} GROUP BY school_code
        ),{unseen}
        status AS ({evidence_status_sql(cal, target, cutoff, schema, evidence, d)}),
        summary AS (
            SELECT count(*) FILTER (WHERE NOT complete) AS missing,
                   {d.string_agg("CASE WHEN NOT complete THEN source || ' (not delivered; overdue from ' "
                                 "|| overdue_on || ')' END", "'; '", "source")} AS missing_text,
                   {d.string_agg("source || CASE WHEN arrived_on IS NOT NULL THEN ' (delivered ' || arrived_on || ')' "
                                 "ELSE ' (overdue since ' || overdue_on || ')' END", "'; '", "source")} AS searched_text
            FROM status
        ),
        judged AS (
            SELECT p.student_key,
                   -- Incomplete evidence makes every pupil it concerns unknown, even one a row shows
                   -- moved: labelling only those would fill the school's (or round's) known labels
                   -- with non-dropouts and bias its rate down.
                   -- A pupil who may have moved into a school whose census is missing is unknown
                   -- the same way (`unseen_tambon`): its stayers and leavers cannot be told apart either.
                   CASE WHEN sc.school_code IS NULL OR s.missing > 0 OR b.unseen_school IS NOT NULL THEN 'unknown'
                        WHEN d.e IS NOT NULL THEN d.e.state
                        ELSE 'dropout' END AS label_state,
                   d.e, sc.known_at AS school_known_at, p.school_code, s.missing_text, s.searched_text,
                   b.grade AS unseen_grade, b.unseen_school, b.unseen_schools
            FROM pop p
            LEFT JOIN decided d USING (student_key)
            LEFT JOIN school_census sc ON sc.school_code = p.school_code
            LEFT JOIN unseen_tambon b ON {unseen_on}
            CROSS JOIN summary s
        )
        SELECT student_key, '{r.round_id}' AS round_id, label_state,
               CASE label_state WHEN 'dropout' THEN 1 WHEN 'unknown' THEN NULL ELSE 0 END AS dropout{text}
        FROM judged
    """


def labels_known_on(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound, horizon: Horizon,
                    cutoff: dt.date, schema: str = "wh") -> dt.date | None:
    """The day R's labels became final in this warehouse: its horizon census first arrived and every
    other evidence source had arrived or was overdue. None when that had not happened by the cutoff
    (some labels are still `unknown` for a missing source)."""
    target = horizon_census(cal, r, horizon)
    census = con.execute(f"SELECT min(known_at) FROM {schema}.src_dmc_census WHERE census_date = ? AND known_at <= ?",
                         [target, cutoff]).fetchone()
    rows = con.execute(f"SELECT complete, least(arrived_on, overdue_on) FROM ({evidence_status_sql(cal, target, cutoff, schema)})"
                       ).fetchall()
    if census is None or census[0] is None or not all(c for c, _ in rows):
        return None
    return max([census[0], *(d for _, d in rows)])
