"""Feature sets per round and training sets over many rounds, written as Parquet with manifests.

A feature set is named by its round; a training set by a hash of what produced it (rounds,
horizon, label cutoff, the deliveries it was built from, the feature catalogue), so a rebuild of
the same inputs is idempotent and two different builds never overwrite each other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from itertools import chain
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, ScoringRound, parse_round
from features.db import scalar, session
from features.debris import prepared_scratch
from features.home import EwsHome
from features.ids import BE_OFFSET
from features.linkage.link import latest_link_run
from features.parquet import write_parquet, write_parquet_batches
from features.pointintime.build import (
    PopulationSource, build_features, check_output_columns, features_sql, gather_into, population_source, prepare_round,
    require_population,
)
from features.pointintime.labels import Horizon, labels_known_on, labels_sql
from features.pointintime.trainset import (  # re-exported: callers import them from here
    TrainsetConfig, TrainsetManifest, TrainsetRound, atomic_write_text, file_sha256,
    save_trainset_data, save_trainset_manifest, trainset_folder,
)
from features.pointintime.spec import FEATURES, GROUPS

if TYPE_CHECKING:
    from features.engine.spark import SparkEngine

__all__ = ["FeatureSetManifest", "TrainsetConfig", "TrainsetManifest", "available_rounds", "build_trainset",
           "connect_warehouse", "delivery_fingerprint", "file_sha256", "label_known_on", "latest_delivery",
           "rounds_with_census", "warehouse_session", "write_feature_set"]

CATALOGUE_VERSION = hashlib.sha256(
    json.dumps([(f.name, f.group, f.dtype) for f in FEATURES]).encode()
).hexdigest()[:12]


def connect_warehouse(home: EwsHome, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A session with the warehouse attached as `wh` (the schema the feature SQL reads)."""
    if not home.warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {home.warehouse}: run `ews ingest` and `ews link` first")
    con = session(home, attach={"wh": (home.warehouse, read_only)})
    has_links = scalar(
        con,
        "SELECT count(*) FROM duckdb_views() WHERE database_name = 'wh' AND view_name = 'linked_dmc_census'"
    )
    if not has_links:
        con.close()
        raise RuntimeError("the warehouse has no linked histories yet: run `ews link` first")
    has_sid = scalar(con, "SELECT count(*) FROM duckdb_columns() WHERE database_name = 'wh' "
                          "AND table_name = 'linked_dmc_census' AND column_name = 'sid'")
    if not has_sid:  # linked by a version before the integer student ids
        con.close()
        raise RuntimeError(f"the linked histories in {home.warehouse} were made by an older version: "
                           "run `ews link` again")
    return con


@contextmanager
def warehouse_session(home: EwsHome) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect_warehouse` for a `with` block: the session is closed however the block ends."""
    con = connect_warehouse(home)
    try:
        yield con
    finally:
        con.close()


def latest_delivery(con: duckdb.DuckDBPyConnection) -> dt.date:
    # Any source's latest delivery, not the census's: other systems' enrolment, exits and TZD
    # arrive after the census, and a label waits for them (labels.py).
    return scalar(con, "SELECT max(delivered_on) FROM wh.deliveries")


def delivery_fingerprint(con: duckdb.DuckDBPyConnection, cutoff: dt.date) -> str:
    """sha256 over the content hashes of every file delivered by `cutoff` (order-independent)."""
    rows = con.execute(
        """SELECT f.delivery_id, f.source_file, f.sha256 FROM wh.ingested_files f
           JOIN wh.deliveries d USING (delivery_id) WHERE d.delivered_on <= ? ORDER BY 1, 2""",
        [cutoff],
    ).fetchall()
    h = hashlib.sha256()
    for r in rows:
        h.update("|".join(map(str, r)).encode() + b"\n")
    return h.hexdigest()


def rounds_with_census(cal: SchoolCalendar, censuses: Iterable[dt.date]) -> list[ScoringRound]:
    """Every scoring round (in calendar order) whose census date is one of `censuses`.

    The one place "which rounds exist" is derived from census dates: the academic years are the
    census years in the Buddhist Era, from the year before the first (its term-2 census falls in
    the next Common-Era year) to the last.
    """
    dates = set(censuses)
    if not dates:
        return []
    years = sorted({d.year for d in dates})
    return [r for r in cal.rounds(years[0] + BE_OFFSET - 1, years[-1] + BE_OFFSET)
            if cal.census_date(r.academic_year, r.term) in dates]


def available_rounds(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar) -> list[ScoringRound]:
    """Rounds whose census is in the warehouse and known by the round's as-of date."""
    censuses = [d for (d,) in con.execute("SELECT DISTINCT census_date FROM wh.src_dmc_census").fetchall()]
    return rounds_with_census(cal, censuses)


def label_known_on(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound, horizon: Horizon,
                   cutoff: dt.date) -> dt.date | None:
    """The day the round's labels became known: every evidence source arrived or overdue (labels.py)."""
    return labels_known_on(con, cal, r, horizon, cutoff)


class FeatureSetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round_id: str
    as_of: dt.date
    rows: int
    file: str
    sha256: str
    delivery_fingerprint: str
    catalogue_version: str
    missing_rates: dict[str, float]
    # Where the population came from (None: written before this field; the census then).
    population: PopulationSource | None = None
    # Which engine computed the rows (None: written before this field). DuckDB and Spark write the
    # same bytes (tests/integration/test_spark_submit.py), but an auditor replaying a set should
    # know which one ran.
    engine: Literal["duckdb", "spark"] | None = None


# Pupils per chunk when DuckDB builds a round's feature set: a chunk's work and memory, never the
# result (the rows are the unchunked query's, in the same bytes; tests/integration/test_feature_set_chunks.py).
# At 8.9M pupils the round in one query ran out of DuckDB's 6 GB (docs/ARCHITECTURE.md, "Engines").
FEATURE_CHUNK_ROWS = 500_000
_BATCH_ROWS = 65_536


def write_feature_set(home: EwsHome, round_id: str, cal: SchoolCalendar | None = None,
                      chunk_rows: int = FEATURE_CHUNK_ROWS) -> FeatureSetManifest:
    """Build one round's features and write features/<round>.parquet + .json.

    On DuckDB the round is built in chunks of whole schools (`prepare_round`, as `ews score` does:
    at most `chunk_rows` pupils' work at a time), gathered in a DuckDB table that spills, and
    written sorted by student_key one row group at a time: memory is set by the chunk, not the
    country. On Spark the engine computes the round in one query.

    A round with nobody in it raises `EmptyRoundError` (naming what is missing) and writes nothing.
    """
    cal = cal or home.calendar
    r = parse_round(round_id)
    path = home.features_dir / f"{round_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    con = connect_warehouse(home)
    try:
        source = population_source(con, cal, r)
        if home.engine.kind == "spark":
            from features.engine.spark import SparkEngine
            with SparkEngine.open(home, con) as engine:
                table = engine.features(cal, r, population=source)
            rows, nulls = table.num_rows, {f.name: table.column(f.name).null_count for f in FEATURES}
            if rows:
                write_parquet(table, tmp)
            del table
        else:
            rows, nulls = _write_duckdb_features(con, home, cal, r, source, chunk_rows, tmp)
        fp = delivery_fingerprint(con, cal.as_of(round_id))
        require_population(r, source, rows)
        os.replace(tmp, path)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    manifest = FeatureSetManifest(
        round_id=round_id, as_of=cal.as_of(round_id), rows=rows, file=str(path),
        sha256=file_sha256(path), delivery_fingerprint=fp, catalogue_version=CATALOGUE_VERSION,
        missing_rates={f.name: round(nulls[f.name] / max(rows, 1), 4) for f in FEATURES},
        population=source, engine=home.engine.kind,
    )
    atomic_write_text(manifest.model_dump_json(indent=2), path.with_suffix(".json"))
    return manifest


@contextmanager
def _duckdb_feature_rows(con: duckdb.DuckDBPyConnection, home: EwsHome, cal: SchoolCalendar, r: ScoringRound,
                         source: PopulationSource, chunk_rows: int, table: str = "fs_rows") -> Iterator[int]:
    """The round's features in the temporary table `table`, built chunk by chunk of whole schools
    (DuckDB spills the table, so memory is set by the chunk): yields its row count; the table and
    the prepared scratch are gone when the block ends, however it ends."""
    scratch = prepared_scratch(home.spill_dir, r.round_id)
    try:
        prepared = prepare_round(con, cal, r, source, chunk_rows, scratch, prefix="fs_")
        n = len(prepared.chunks)
        # a round in one chunk reads its prepared tables unrestricted (as serving does)
        gather_into(con, table, [features_sql(cal, r, population=source, prepared=prepared, chunk=i if n > 1 else None)
                                 for i in range(max(n, 1))])
        check_output_columns([c for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]).fetchall()])
        yield int(scalar(con, f"SELECT count(*) FROM {table}"))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        shutil.rmtree(scratch, ignore_errors=True)


def _write_duckdb_features(con: duckdb.DuckDBPyConnection, home: EwsHome, cal: SchoolCalendar, r: ScoringRound,
                           source: PopulationSource, chunk_rows: int, out: Path) -> tuple[int, dict[str, int]]:
    """The round's features chunk by chunk into `out` (sorted by student_key, `write_parquet`'s
    bytes): (rows, nulls per feature). Nothing is written for a round with nobody in it."""
    with _duckdb_feature_rows(con, home, cal, r, source, chunk_rows) as rows:
        counted = con.execute("SELECT " + ", ".join(f'count(*) - count("{f.name}")' for f in FEATURES)
                              + " FROM fs_rows").fetchall()[0]
        nulls = {f.name: int(v) for f, v in zip(FEATURES, counted)}
        if rows:
            reader = con.sql("SELECT * FROM fs_rows ORDER BY student_key").to_arrow_reader(_BATCH_ROWS)
            write_parquet_batches(reader.schema, reader, out)
        return rows, nulls


def _engine(home: EwsHome, con: duckdb.DuckDBPyConnection, stack: ExitStack) -> SparkEngine | None:
    """The deployment's Spark engine, open until `stack` closes (None: DuckDB, the default)."""
    if home.engine.kind != "spark":
        return None
    from features.engine.spark import SparkEngine
    return stack.enter_context(SparkEngine.open(home, con))


def trainset_name(rounds: list[ScoringRound], horizon: Horizon, cutoff: dt.date, deliveries: str) -> str:
    """A training set's name: a hash of what produces it, so a rebuild of the same inputs is idempotent."""
    key = json.dumps({
        "rounds": [r.round_id for r in rounds], "horizon": horizon, "cutoff": cutoff.isoformat(),
        "deliveries": deliveries, "catalogue": CATALOGUE_VERSION,
    }, sort_keys=True)
    return "ts-" + hashlib.sha256(key.encode()).hexdigest()[:12]


# A round's labelled rows: its features joined to its labels, in student_key order. `{features}` and
# `{labels}` name the round's features and labels (DuckDB tables, or the Spark engine's Arrow tables).
_LABELLED_SQL = """
    SELECT f.*, l.dropout AS label, l.outcome, l.label_state, l.label_evidence
    FROM {features} f JOIN {labels} l USING (student_key)
    WHERE l.dropout IS NOT NULL
    ORDER BY f.student_key
"""
_COUNT_SQL = """
    SELECT count(*) FILTER (WHERE l.dropout IS NULL), count(l.dropout), coalesce(sum(l.dropout), 0)
    FROM {features} f JOIN {labels} l USING (student_key)
"""


def build_trainset(home: EwsHome, cfg: TrainsetConfig, cal: SchoolCalendar | None = None,
                   chunk_rows: int = FEATURE_CHUNK_ROWS) -> TrainsetManifest:
    """Features of every chosen round joined to labels known by the cutoff; labelled rows only.

    Rounds are written one after the other into the set's Parquet file, in round order and
    student_key order within a round, one row group at a time: on DuckDB a round's features are
    built chunk by chunk of whole schools (`chunk_rows` pupils' work at a time, as `ews features`)
    into a table that spills, so memory is set by the chunk, not by the country or the number of
    rounds. The bytes do not depend on `chunk_rows` (tests/integration/test_trainset_streaming.py).
    On Spark the engine hands back each round's features and labels whole.
    """
    cal = cal or home.calendar
    con = connect_warehouse(home)
    stack = ExitStack()
    tmp: Path | None = None
    try:
        cutoff = cfg.cutoff or latest_delivery(con)
        rounds = [parse_round(x) for x in cfg.rounds] if cfg.rounds else available_rounds(con, cal)
        # A round whose as-of date is after the cutoff would use rows unknown at the cutoff.
        rounds = [r for r in rounds if cal.as_of(r.round_id) <= cutoff]
        if not rounds:
            raise RuntimeError(f"no scoring round has its census known by {cutoff}")
        fp = delivery_fingerprint(con, cutoff)
        link_run = latest_link_run(con)
        name = trainset_name(rounds, cfg.horizon, cutoff, fp)
        path = trainset_folder(home.trainsets_dir, name) / "data.parquet"
        # beside the sets, not in the set's folder: a build that fails leaves no folder behind
        home.trainsets_dir.mkdir(parents=True, exist_ok=True)
        tmp = home.trainsets_dir / f".{name}.data.parquet.tmp"
        per_round: list[TrainsetRound] = []
        positives: list[int] = []  # dropouts per round (the manifest's rate is of the exact counts)
        engine = _engine(home, con, stack)

        def labelled_batches() -> Iterator[pa.RecordBatch]:
            for r in rounds:
                with ExitStack() as round_stack:
                    if engine is not None:
                        con.register("f_rows", engine.features(cal, r))
                        con.register("l_rows", engine.labels(cal, r, cutoff, cfg.horizon))
                        round_stack.callback(con.unregister, "f_rows")
                        round_stack.callback(con.unregister, "l_rows")
                        features = "f_rows"
                    else:
                        source = population_source(con, cal, r)
                        round_stack.enter_context(_duckdb_feature_rows(con, home, cal, r, source, chunk_rows, "ts_feats"))
                        con.execute(f"CREATE OR REPLACE TEMP TABLE l_rows AS {labels_sql(cal, r, cutoff, cfg.horizon)}")
                        round_stack.callback(con.execute, "DROP TABLE IF EXISTS l_rows")
                        features = "ts_feats"
                    n_unl, n, pos = con.execute(_COUNT_SQL.format(features=features, labels="l_rows")).fetchone()
                    per_round.append(TrainsetRound(
                        round_id=r.round_id, round_type=r.round_type, as_of=cal.as_of(r.round_id),
                        rows=int(n), unlabelled=int(n_unl), label_rate=round(int(pos) / n, 5) if n else None,
                        label_known_on=label_known_on(con, cal, r, cfg.horizon, cutoff),
                    ))
                    positives.append(int(pos))
                    if n:
                        yield from con.sql(_LABELLED_SQL.format(features=features, labels="l_rows")
                                           ).to_arrow_reader(_BATCH_ROWS)

        # closed before the session, however the write ends: a round left half-read drops its tables
        batches = stack.enter_context(closing(labelled_batches()))
        first = next(batches, None)  # the file's schema is the first labelled round's
        if first is None:
            raise RuntimeError(f"no labelled rows: no round's outcome is known by {cutoff}")
        total = write_parquet_batches(first.schema, chain([first], batches), tmp)
        path.parent.mkdir(exist_ok=True)
        os.replace(tmp, path)
    finally:
        stack.close()
        con.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    manifest = TrainsetManifest(
        name=name, config=cfg, cutoff=cutoff, rounds=per_round, rows=total,
        unlabelled_rows=sum(x.unlabelled for x in per_round),
        label_rate=round(sum(positives) / total, 5),
        delivery_fingerprint=fp, catalogue_version=CATALOGUE_VERSION,
        feature_groups={g: [f.name for f in FEATURES if f.group == g] for g in GROUPS},
        categorical=[f.name for f in FEATURES if f.dtype == "category"],
        file=str(path), sha256=file_sha256(path), engine=home.engine.kind, link_run=link_run,
    )
    save_trainset_manifest(home.trainsets_dir, manifest)
    return manifest
