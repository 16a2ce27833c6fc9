"""Point-in-time features for one scoring round, set-based in DuckDB.

Rows are (student_key, round). A source row may contribute only if it was *known* by the
round's as-of date (its delivery's `known_at` ≤ as_of) and describes a date ≤ as_of. The query
is compiled (`compile.py`) from the declared groups (`groups.py`): population -> known rows of
each source -> latest version per record -> within staleness -> aggregates -> one wide row per
student. This module supplies the round's dates as named parameters and runs the query; it also
compiles serving's placement queries from the same steps, and prepares a round to be read chunk by
chunk of whole schools (`prepare_round`: the population, the round-wide steps and every source's
known rows computed once, then the same compiled query per chunk over the chunk's rows only). Missing stays missing (NULL) with
explicit indicators; nothing is imputed from later data.

The same meaning is written row by row in tests/support/pointintime_oracle.py; a test requires
both to agree on every column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from features.calendar import SchoolCalendar, ScoringRound
from features.pointintime.compile import (
    DUCKDB, VERSION_ORDER, Dialect, LatestEvidence, Read, RoundContext, Step, compile_groups, population_steps, read_steps,
    render, with_sql,
)
from features.pointintime.groups import (
    ALL_GROUPS, AREAS_READ, FAIRNESS, MOBILITY, MODEL_GROUPS, PLACEMENT, SCHOOLS_READ, PAST_DROPOUT_MIN_STUDENTS, PAST_DROPOUT_YEARS, STALENESS_DAYS,
    earlier_early_rounds,
)
from features.pointintime.spec import FEATURE_NAMES, GROUP_COLUMNS, KEY_COLUMNS

__all__ = ["PAST_DROPOUT_MIN_STUDENTS", "PAST_DROPOUT_YEARS", "OUTPUT_COLUMNS", "EmptyRoundError",
           "PopulationSource", "PreparedRound", "SchoolFallback", "build_features", "earlier_early_rounds", "features_sql",
           "check_output_columns", "pack_schools", "placement_sql", "population_source", "prepare_round", "previous_term", "school_fallbacks", "require_population", "round_context", "school_areas_sql"]

# Population columns the features read (the population step carries only these: less to hash at 1M).
FEATURE_POPULATION_COLUMNS: tuple[str, ...] = (
    "student_key", "sid", "school_code", "sex", "birth_month", "grade", "id_kind", "disability",
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


class SchoolFallback(BaseModel):
    """One school whose file was missing from a census that otherwise arrived: its pupils come from
    the latest enrolment evidence (`compile.school_fallback_steps`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    school_code: str
    population_as_of: dt.date = Field(description="The previous census, which the school's population rests on.")
    students: int = Field(ge=0, description="Pupils listed for the school from the latest evidence.")
    census_students: int = Field(ge=0, description="The school's pupils in that previous census.")


class PopulationSource(BaseModel):
    """Where a round's population came from: its census, or (census late) the latest enrolment evidence.

    Travels in the feature set's and the snapshot's manifests, so the list, the web page, the
    download and monitoring can say "census of <date> not received; population as of <date>".
    `school_fallbacks` names the schools whose file alone was missing from a census that arrived.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    population_source: Literal["census", "latest_evidence"] = Field(
        description="'census': the round's census known by as-of; 'latest_evidence': it was not, so the "
                    "previous census less known exits plus pupils seen in later attendance or marks.")
    census_date_expected: dt.date = Field(description="The census the round is defined by.")
    population_as_of: dt.date | None = Field(
        description="Date of the census the population rests on (None: no census known at all).")
    as_of: dt.date = Field(description="The round's as-of date: exits and attendance known by then count.")
    school_fallbacks: tuple[SchoolFallback, ...] = Field(
        (), description="Schools absent from the round's census (which arrived) whose pupils come from the "
                        "latest evidence instead; empty when every school's file arrived.")

    @model_serializer(mode="wrap")
    def _omit_no_fallbacks(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A round whose census is complete keeps the manifest bytes (and snapshot hash) it always had.
        out = handler(self)
        if not self.school_fallbacks:
            out.pop("school_fallbacks", None)
        return out

    @property
    def census_late(self) -> bool:
        return self.population_source == "latest_evidence"

    def evidence(self, r: ScoringRound) -> LatestEvidence | None:
        if self.census_late:
            return LatestEvidence(self.population_as_of, r.academic_year)
        if self.school_fallbacks:
            return LatestEvidence(self.school_fallbacks[0].population_as_of, r.academic_year,
                                  schools=tuple(f.school_code for f in self.school_fallbacks))
        return None

    def _evidence_words(self) -> tuple[str, str]:
        a = self.as_of.isoformat()
        return (f"(that census, less exits and plus pupils seen in attendance or marks known by {a})",
                f"(หักผู้ที่ออกแล้ว และเพิ่มผู้ที่มีข้อมูลการมาเรียนหรือผลการเรียนถึงวันที่ {a})")

    def caveat(self, within: Collection[str] | None = None) -> dict[str, str] | None:
        """The sentence a reader of the round must see, in English and Thai (None: census as planned).

        `within`: the school codes the reader is shown (an area's list); a school's fallback is
        mentioned only when that school is among them. None: the whole round.
        """
        expected = self.census_date_expected.isoformat()
        en_ev, th_ev = self._evidence_words()
        if self.census_late:
            base = self.population_as_of.isoformat() if self.population_as_of else "-"
            return {
                "en": f"census of {expected} not received; population as of {base} {en_ev}",
                "th": f"ยังไม่ได้รับข้อมูลนักเรียน (DMC) รอบวันที่ {expected}; "
                      f"รายชื่อนักเรียนเป็นข้อมูล ณ วันที่ {base} {th_ev}",
            }
        fell = [f for f in self.school_fallbacks if within is None or f.school_code in within]
        if not fell:
            return None
        codes, base = ", ".join(f.school_code for f in fell), fell[0].population_as_of.isoformat()
        return {
            "en": f"census of {expected} not received from school(s) {codes}; their population as of {base} {en_ev}",
            "th": f"ยังไม่ได้รับข้อมูลนักเรียน (DMC) ของโรงเรียน {codes} รอบวันที่ {expected}; "
                  f"รายชื่อนักเรียนของโรงเรียนเหล่านี้เป็นข้อมูล ณ วันที่ {base} {th_ev}",
        }

    def school_caveat(self, school_code: str) -> dict[str, str] | None:
        """The caveat of one school's own list: the round's, or "not received from this school"."""
        if self.census_late:
            return self.caveat()
        fell = next((f for f in self.school_fallbacks if f.school_code == school_code), None)
        if fell is None:
            return None
        expected, base = self.census_date_expected.isoformat(), fell.population_as_of.isoformat()
        en_ev, th_ev = self._evidence_words()
        return {
            "en": f"census of {expected} not received from this school; population as of {base} {en_ev}",
            "th": f"ยังไม่ได้รับข้อมูลนักเรียน (DMC) ของโรงเรียนนี้ รอบวันที่ {expected}; "
                  f"รายชื่อนักเรียนเป็นข้อมูล ณ วันที่ {base} {th_ev}",
        }


class EmptyRoundError(RuntimeError):
    """A round with nobody in it: never written or published (a school would get an empty list)."""


# A school absent from the round's census falls back only while at least this share of its previous
# census's pupils is still unaccounted for (not exited, not in the census at another school): a
# school that closed or merged has sent its pupils elsewhere, and is not brought back to life.
FALLBACK_MIN_REMAINING = 0.5


def population_source(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound,
                      schema: str = "wh") -> PopulationSource:
    """The round's census if any of its rows were known by the as-of date; else the latest census
    known by then, which the latest-evidence population rests on. Decided for the whole round:
    a round with its census keeps exactly the query it always had, unless some schools' files are
    missing from it (`school_fallbacks`)."""
    as_of = cal.as_of(r)
    census = cal.census_date(r.academic_year, r.term)
    arrived, base = con.execute(
        f"""SELECT count(*) FILTER (WHERE census_date = ?), max(census_date) FILTER (WHERE census_date < ?)
            FROM {schema}.src_dmc_census WHERE known_at <= ? AND census_date <= ?""",
        [census, census, as_of, census],
    ).fetchall()[0]  # fetched fully: DuckDB 2 blocks the next statement while a result is open
    if arrived:
        return PopulationSource(population_source="census", census_date_expected=census, population_as_of=census,
                                as_of=as_of,
                                school_fallbacks=school_fallbacks(con, r, census, base, as_of, schema))
    return PopulationSource(population_source="latest_evidence", census_date_expected=census,
                            population_as_of=base, as_of=as_of)


def school_fallbacks(con: duckdb.DuckDBPyConnection, r: ScoringRound, census: dt.date, base: dt.date | None,
                     as_of: dt.date, schema: str = "wh") -> tuple[SchoolFallback, ...]:
    """Schools of the previous census (`base`) with no row in the round's census known by as-of,
    whose pupils the latest evidence still places there (at least `FALLBACK_MIN_REMAINING` of the
    previous census's): their file was refused or is missing, not the school closed."""
    if base is None:
        return ()
    # Which schools are absent, from the census rows alone: the linked view joins every row of a
    # census to the link's keys (at 8M pupils the round's "source" part, mostly this join, took 324 s at
    # 1.5 GB; docs/ARCHITECTURE.md "Where a national round's preparation goes"), and nearly every round
    # has no absent school at all.
    absent = [code for (code,) in con.execute(
        f"""SELECT school_code FROM {schema}.src_dmc_census
            WHERE known_at <= ? AND census_date = ? AND school_code IS NOT NULL
            EXCEPT SELECT school_code FROM {schema}.src_dmc_census
            WHERE known_at <= ? AND census_date = ? AND school_code IS NOT NULL""",
        [as_of, base, as_of, census]).fetchall()]
    if not absent:
        return ()
    missing = con.execute(
        f"""SELECT school_code, count(DISTINCT sid) FROM {schema}.linked_dmc_census
            WHERE known_at <= ? AND census_date = ? AND student_key IS NOT NULL
              AND list_contains(?::VARCHAR[], school_code)
            GROUP BY school_code ORDER BY school_code""",
        [as_of, base, absent],
    ).fetchall()
    if not missing:
        return ()
    d = DUCKDB
    ctx = RoundContext(as_of=as_of, params={"as_of": d.date(as_of)}, schema=schema, dialect=d)
    ev = LatestEvidence(base, r.academic_year, schools=tuple(code for code, _ in missing))
    steps = population_steps(ctx, census, ("sid", "school_code"), ev)
    # the fallback rows of `pop`: the census part holds none of these schools (they are absent from it)
    listed = dict(con.execute(with_sql(steps, "SELECT school_code, count(*) FROM pop WHERE school_code IN "
                                              f"({', '.join('?' for _ in missing)}) GROUP BY school_code"),
                              [code for code, _ in missing]).fetchall())
    out = []
    for code, counted in missing:
        remaining = int(listed.get(code, 0))
        if remaining and remaining >= FALLBACK_MIN_REMAINING * counted:
            out.append(SchoolFallback(school_code=code, population_as_of=base, students=remaining,
                                      census_students=counted))
    return tuple(out)


def require_population(r: ScoringRound, source: PopulationSource, rows: int) -> None:
    """Raise `EmptyRoundError` naming the round and what is missing when the round has nobody in it."""
    if rows:
        return
    if source.census_late and source.population_as_of is None:
        missing = (f"its census of {source.census_date_expected} was not received by {source.as_of} "
                   "and no earlier census is known to fall back on")
    elif source.census_late:
        missing = (f"its census of {source.census_date_expected} was not received by {source.as_of}, and no "
                   f"pupil of the census of {source.population_as_of} remains (all exited or completed)")
    else:
        missing = (f"the census of {source.census_date_expected} has rows known by {source.as_of} but none "
                   "linked to a student: run `ews link` after `ews ingest`")
    raise EmptyRoundError(f"round {r.round_id} has no students: {missing}; nothing was written")


# Group steps that read the whole round rather than its pupils: a school's past dropout rate
# counts every labelled pupil of earlier rounds. With the reads that never join the population
# (the school and area registries) they are the round-wide steps `prepare_round` computes once.
ROUND_WIDE_STEPS: frozenset[str] = frozenset({"past"})
# The population columns the features and serving's placement read (`prepare_round` keeps these).
ROUND_POPULATION_COLUMNS: tuple[str, ...] = (*FEATURE_POPULATION_COLUMNS, "room")

Chunk = tuple[tuple[str, ...], int]  # (school codes, pupils) of one chunk
PARTITION_FLUSH_ROWS = 65_536  # rows a partitioned COPY buffers per thread before writing (`prepare_round`)


def pack_schools(counts: list[tuple[str, int]], chunk_rows: int) -> list[Chunk]:
    """Whole schools, in the order given, packed into chunks of at most `chunk_rows` pupils (a
    school larger than that is a chunk alone)."""
    chunks: list[Chunk] = []
    codes: list[str] = []
    pupils = 0
    for code, n in counts:
        if codes and pupils + n > chunk_rows:
            chunks.append((tuple(codes), pupils))
            codes, pupils = [], 0
        codes.append(code)
        pupils += int(n)
    if codes:
        chunks.append((tuple(codes), pupils))
    return chunks


@dataclass(frozen=True)
class PreparedRound:
    """A round made ready to be read chunk by chunk of whole schools (`prepare_round`): `population`
    is a temporary table of the round's population (`ROUND_POPULATION_COLUMNS`) with each pupil's
    `chunk`; `steps` maps each round-wide step to its temporary table; `known` maps each per-pupil
    read's `<read>_known` step to a folder of its known rows of the round's pupils, one Parquet
    partition per chunk (`<folder>/chunk=<i>/`). A chunk's query reads only its own partition: per
    chunk, the work and DuckDB's memory are the chunk's, not the country's."""

    population: str
    steps: Mapping[str, str]
    known: Mapping[str, Path]
    chunks: tuple[Chunk, ...]

    def population_steps(self, columns: tuple[str, ...], chunk: int | None) -> list[tuple[str, str]]:
        """`pop` of one chunk (None: the whole round)."""
        where = "" if chunk is None else f" WHERE chunk = {int(chunk)}"
        return [("pop", f"SELECT {', '.join(columns)} FROM {self.population}{where}")]

    def prepared_steps(self, chunk: int | None) -> dict[str, str]:
        """The steps `compile_groups` reads from the prepared round instead (step name -> query);
        a read with no known row in the chunk keeps its compiled step (it finds none either)."""
        out = {name: f"SELECT * FROM {table}" for name, table in self.steps.items()}
        for name, folder in self.known.items():
            files = folder / ("*" if chunk is None else f"chunk={int(chunk)}") / "*.parquet"
            if chunk is None or any(files.parent.glob("*.parquet")):
                out[name] = f"SELECT * FROM read_parquet({_quote(str(files))}, hive_partitioning = false)"
        return out


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _known_columns(read: Read) -> tuple[str, ...]:
    """What a read's later steps take from its known rows: the key, the values, the event date
    and the version order (`compile.read_steps`)."""
    return tuple(dict.fromkeys(("sid", *(read.key or ()), *read.values, *((read.event,) if read.event else ()),
                                *VERSION_ORDER)))


def _feature_reads() -> list[Read]:
    reads: dict[str, Read] = {}
    for g in (*MODEL_GROUPS, FAIRNESS):
        for read in g.reads:
            reads.setdefault(read.name, read)
    return list(reads.values())


def round_wide_sql(cal: SchoolCalendar, r: ScoringRound, schema: str = "wh",
                   dialect: Dialect = DUCKDB) -> dict[str, str]:
    """Each round-wide step of the feature query as a query of its own (step name -> SQL), from
    the same declarations `features_sql` compiles."""
    ctx = round_context(cal, r, schema, dialect)
    out = {read.name: with_sql(read_steps(read, ctx), f"SELECT * FROM {read.name}")
           for read in _feature_reads() if not read.per_student}
    for g in (*MODEL_GROUPS, FAIRNESS):
        for step in g.steps:
            if step.name in ROUND_WIDE_STEPS:
                out[step.name] = render(step.sql, ctx)
    return out


def gather_into(con: duckdb.DuckDBPyConnection, table: str, selects: list[str]) -> None:
    """The rows of `selects`, one after the other, in the temporary table `table` (replaced if it
    exists): the first creates it, the rest insert into it. DuckDB spills the table, so memory is set
    by the largest SELECT, not by their union. Nothing happens for no SELECT."""
    for i, sql in enumerate(selects):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {sql}" if i == 0 else f"INSERT INTO {table} {sql}")


@dataclass(frozen=True)
class PartedStep:
    """A round-wide step that declares its rows in parts (`compile.Step.parts`), in a round's context."""

    step: Step
    ctx: RoundContext

    @property
    def parts(self) -> list[str]:
        """One SELECT per part."""
        return self.step.parts(self.ctx) if self.step.parts is not None else []

    def over(self, rows: str) -> str:
        """The step over the relation `rows` holding the parts' rows."""
        assert self.step.over is not None  # round_wide_parts keeps only steps that declare it
        return self.step.over(self.ctx, rows)

    def run(self, con: duckdb.DuckDBPyConnection, rows: str, out: str) -> None:
        """The step into the temporary table `out`: its parts gathered one after the other into `rows`
        (`gather_into`), then the step over them; `rows` is dropped after."""
        gather_into(con, rows, self.parts)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {self.over(rows)}")
        con.execute(f"DROP TABLE {rows}")


def round_wide_parts(cal: SchoolCalendar, r: ScoringRound, schema: str = "wh",
                     dialect: Dialect = DUCKDB) -> dict[str, PartedStep]:
    """The round-wide steps that declare their rows in parts (`compile.Step.parts`), by step name."""
    ctx = round_context(cal, r, schema, dialect)
    return {step.name: PartedStep(step, ctx) for g in (*MODEL_GROUPS, FAIRNESS) for step in g.steps
            if step.name in ROUND_WIDE_STEPS and step.parts is not None and step.over is not None}


def prepare_round(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound,
                  population: PopulationSource, chunk_rows: int, folder: Path, schema: str = "wh",
                  prefix: str = "round_", stage: Callable[[str], AbstractContextManager[object]] | None = None
                  ) -> PreparedRound:
    """Compute a round's population, its chunks of whole schools (`pack_schools`, in school-code
    order; '' stands for pupils without a school code), its round-wide steps (temporary tables
    `<prefix>...`, replaced if they exist) and its pupils' known rows of every per-pupil read
    (Parquet under `folder`, partitioned by chunk; the caller removes the folder), once.

    Each source is read once for the round by the same compiled `<read>_known` step the features
    run, so a chunk's rows are exactly those the unchunked query reads for its pupils; only the
    columns the read's later steps use are kept (`_known_columns`).

    `stage(name)`, when given, is entered around each of its three parts - "population" (and the
    chunks), "round_wide" (the round-wide steps) and "known" (the copies) - so that a caller's clock
    can say where a national round's preparation goes."""
    stage = stage or (lambda name: nullcontext())
    ctx = round_context(cal, r, schema)
    census = cal.census_date(r.academic_year, r.term)
    pop, whole = f"{prefix}pop", f"{prefix}pop_all"
    with stage("population"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {whole} AS "
                    + with_sql(population_steps(ctx, census, ROUND_POPULATION_COLUMNS, population.evidence(r)),
                               "SELECT *, coalesce(school_code, '') AS chunk_school FROM pop"))
        counts = con.execute(f"SELECT chunk_school, count(*) FROM {whole} GROUP BY 1 ORDER BY 1").fetchall()
        chunks = pack_schools([(code, int(n)) for code, n in counts], chunk_rows)
        codes = [code for schools, _ in chunks for code in schools]
        numbers = [i for i, (schools, _) in enumerate(chunks) for _ in schools]
        # two lists in one statement: a country's tens of thousands of schools, not a statement each
        con.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}chunks AS SELECT unnest(?::VARCHAR[]) AS school_code, "
                    "unnest(?::INTEGER[]) AS chunk", [codes, numbers])
        con.execute(f"CREATE OR REPLACE TEMP TABLE {pop} AS SELECT p.* EXCLUDE (chunk_school), c.chunk "
                    f"FROM {whole} p JOIN {prefix}chunks c ON c.school_code = p.chunk_school ORDER BY c.chunk, p.sid")
        con.execute(f"DROP TABLE {whole}")
    steps = {}
    with stage("round_wide"):
        in_parts = round_wide_parts(cal, r, schema)
        for name, sql in round_wide_sql(cal, r, schema).items():
            parted = in_parts.get(name)
            if parted is not None and parted.parts:
                # A country's past rounds in one query outgrow the scoring session's memory (8M pupils: out
                # of memory at 1.5 GB, docs/ARCHITECTURE.md "Engines"): their rows are gathered one part at a
                # time into a table that spills, and the step runs over them (the same rows: the same step).
                parted.run(con, f"{prefix}{name}_rows", f"{prefix}{name}")
            else:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}{name} AS {sql}")
            steps[name] = f"{prefix}{name}"
    known: dict[str, Path] = {}
    keys = f"(SELECT sid, chunk FROM {pop})"
    # A partitioned COPY buffers up to this many rows per thread, across its partitions (one per
    # chunk), before it writes them out; DuckDB's default (524,288) ran an 8M-pupil round's
    # attendance rows (256M, 41 chunks) out of the scoring session's 1.5 GB; with 65,536 the whole
    # round peaked at 2.9 GB (docs/ARCHITECTURE.md, "A whole national round").
    with stage("known"):
        con.execute(f"SET partitioned_write_flush_threshold = {PARTITION_FLUSH_ROWS}")
        try:
            for read in _feature_reads():
                if not read.per_student:
                    continue
                name, sql = read_steps(read, ctx)[0]  # `<read>_known`: its known rows of the pupils in `pop`
                cols = ", ".join(f"k.{c}" for c in _known_columns(read))
                rows = with_sql([("pop", keys), (name, sql)], f"SELECT {cols}, c.chunk FROM {name} k JOIN {keys} c USING (sid)")
                con.execute(f"COPY ({rows}) TO {_quote(str(folder / name))} (FORMAT parquet, PARTITION_BY (chunk))")
                # no file at all (COPY of no rows may still leave the folder): the read keeps its compiled step,
                # which finds no row either; a glob over an empty folder is an error in DuckDB
                if any((folder / name).glob("*/*.parquet")):
                    known[name] = folder / name
        finally:
            con.execute("RESET partitioned_write_flush_threshold")
    return PreparedRound(pop, steps, known, tuple(chunks))


def features_sql(cal: SchoolCalendar, r: ScoringRound, schema: str = "wh", dialect: Dialect = DUCKDB,
                 population: PopulationSource | None = None, prepared: PreparedRound | None = None,
                 chunk: int | None = None) -> str:
    """The round's feature query, compiled from the declared groups (`prepared`: the population,
    round-wide steps and known rows read from `prepare_round`'s tables, of chunk `chunk`, or of the
    whole round when it is None).

    Everything per student joins and groups on `sid`, the link run's integer for student_key
    (hashing an integer instead of a 21-character string); only the result carries the key.
    """
    ctx = round_context(cal, r, schema, dialect)
    census = cal.census_date(r.academic_year, r.term)
    head = ("pop.student_key", f"{ctx.params['round_id']} AS round_id", f"{ctx.params['as_of']} AS as_of",
            "pop.school_code")
    if prepared is not None:
        return compile_groups((*MODEL_GROUPS, FAIRNESS), ctx, head,
                              prepared.population_steps(FEATURE_POPULATION_COLUMNS, chunk),
                              prepared=prepared.prepared_steps(chunk))
    evidence = population.evidence(r) if population else None
    return compile_groups((*MODEL_GROUPS, FAIRNESS), ctx, head,
                          population_steps(ctx, census, FEATURE_POPULATION_COLUMNS, evidence))


def placement_sql(census: dt.date, as_of: dt.date, schema: str = "wh", dialect: Dialect = DUCKDB,
                  evidence: LatestEvidence | None = None, prepared: PreparedRound | None = None,
                  chunk: int | None = None) -> str:
    """(student_key, room) of each student enrolled at the census, as known by as-of (for serving);
    with `evidence`, of the latest-evidence population the features used (census late); with
    `prepared`, read from the round's prepared population (chunk `chunk`; None: all of it)."""
    if prepared is not None:
        return with_sql(prepared.population_steps(("student_key", "room"), chunk), "SELECT student_key, room FROM pop")
    ctx = RoundContext(as_of=as_of, params={"as_of": dialect.date(as_of)}, schema=schema, dialect=dialect)
    return with_sql(population_steps(ctx, census, ("student_key", "sid", "room"), evidence),
                    "SELECT student_key, room FROM pop")


def school_areas_sql(as_of: dt.date, schema: str = "wh", dialect: Dialect = DUCKDB) -> str:
    """Each school's name and area (tambon -> amphoe -> province), latest registry versions by as-of."""
    ctx = RoundContext(as_of=as_of, params={"as_of": dialect.date(as_of)}, schema=schema, dialect=dialect)
    cols = ["school.school_code", *(f"{render(c.sql, ctx)} AS {c.name}" for c in PLACEMENT.columns if c.name != "room")]
    return with_sql([*read_steps(SCHOOLS_READ, ctx), *read_steps(AREAS_READ, ctx)],
                    f"SELECT {', '.join(cols)} FROM school LEFT JOIN area ON area.tambon_code = school.tambon_code")


OUTPUT_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, *FEATURE_NAMES, *GROUP_COLUMNS)


def build_features(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound, schema: str = "wh",
                   population: PopulationSource | None = None, prepared: PreparedRound | None = None,
                   chunk: int | None = None) -> pa.Table:
    """The round's feature table (one row per enrolled student, sorted by student_key).

    The population is the round's census, or the latest enrolment evidence when the census was not
    known by the as-of date (`population_source` decides when `population` is not given). An empty
    table is returned as it is: writers call `require_population` before they write anything.
    """
    population = population or population_source(con, cal, r, schema)
    table = con.sql(features_sql(cal, r, schema, population=population, prepared=prepared,
                                 chunk=chunk)).to_arrow_table()
    check_output_columns(table.column_names)
    return table


def check_output_columns(columns: list[str] | tuple[str, ...]) -> None:
    """The feature query's columns are the catalogue's, in its order (or the SQL drifted from it)."""
    if tuple(columns) != OUTPUT_COLUMNS:
        missing, extra = set(OUTPUT_COLUMNS) - set(columns), set(columns) - set(OUTPUT_COLUMNS)
        raise AssertionError(f"feature SQL out of step with the catalogue: missing {missing}, extra {extra}")
