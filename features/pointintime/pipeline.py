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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, ScoringRound, parse_round
from features.db import scalar, session
from features.debris import prepared_scratch
from features.home import EwsHome
from features.ids import BE_OFFSET
from features.linkage.link import latest_link_run
from features.parquet import write_parquet, write_parquet_batches
from features.pointintime.build import (
    PopulationSource, build_features, check_output_columns, features_sql, population_source, prepare_round,
    require_population,
)
from features.pointintime.labels import Horizon, labels_known_on, labels_sql
from features.pointintime.trainset import (  # re-exported: callers import them from here
    TrainsetConfig, TrainsetManifest, TrainsetRound, atomic_write_text, file_sha256,
    save_trainset_data, save_trainset_manifest,
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


def _write_duckdb_features(con: duckdb.DuckDBPyConnection, home: EwsHome, cal: SchoolCalendar, r: ScoringRound,
                           source: PopulationSource, chunk_rows: int, out: Path) -> tuple[int, dict[str, int]]:
    """The round's features chunk by chunk into `out` (sorted by student_key, `write_parquet`'s
    bytes): (rows, nulls per feature). Nothing is written for a round with nobody in it."""
    scratch = prepared_scratch(home.spill_dir, r.round_id)
    try:
        prepared = prepare_round(con, cal, r, source, chunk_rows, scratch, prefix="fs_")
        n = len(prepared.chunks)
        # a round in one chunk reads its prepared tables unrestricted (as serving does)
        for i in range(max(n, 1)):
            sql = features_sql(cal, r, population=source, prepared=prepared, chunk=i if n > 1 else None)
            con.execute(f"CREATE OR REPLACE TEMP TABLE fs_rows AS {sql}" if i == 0 else f"INSERT INTO fs_rows {sql}")
        check_output_columns([c for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'fs_rows' ORDER BY column_index").fetchall()])
        counted = con.execute("SELECT count(*), " + ", ".join(f'count(*) - count("{f.name}")' for f in FEATURES)
                              + " FROM fs_rows").fetchall()[0]
        rows, nulls = int(counted[0]), {f.name: int(v) for f, v in zip(FEATURES, counted[1:])}
        if rows:
            reader = con.sql("SELECT * FROM fs_rows ORDER BY student_key").to_arrow_reader(_BATCH_ROWS)
            write_parquet_batches(reader.schema, reader, out)
        return rows, nulls
    finally:
        con.execute("DROP TABLE IF EXISTS fs_rows")
        shutil.rmtree(scratch, ignore_errors=True)


def _engine(home: EwsHome, con: duckdb.DuckDBPyConnection, stack: ExitStack) -> SparkEngine | None:
    """The deployment's Spark engine, open until `stack` closes (None: DuckDB, the default)."""
    if home.engine.kind != "spark":
        return None
    from features.engine.spark import SparkEngine
    return stack.enter_context(SparkEngine.open(home, con))


def build_trainset(home: EwsHome, cfg: TrainsetConfig, cal: SchoolCalendar | None = None) -> TrainsetManifest:
    """Features of every chosen round joined to labels known by the cutoff; labelled rows only."""
    cal = cal or home.calendar
    con = connect_warehouse(home)
    stack = ExitStack()
    try:
        cutoff = cfg.cutoff or latest_delivery(con)
        rounds = [parse_round(x) for x in cfg.rounds] if cfg.rounds else available_rounds(con, cal)
        # A round whose as-of date is after the cutoff would use rows unknown at the cutoff.
        rounds = [r for r in rounds if cal.as_of(r.round_id) <= cutoff]
        if not rounds:
            raise RuntimeError(f"no scoring round has its census known by {cutoff}")
        parts: list[pa.Table] = []
        per_round: list[TrainsetRound] = []
        unlabelled = 0
        engine = _engine(home, con, stack)
        for r in rounds:
            if engine is not None:
                feats, labels = engine.features(cal, r), engine.labels(cal, r, cutoff, cfg.horizon)
            else:
                feats = build_features(con, cal, r)
                labels = con.sql(labels_sql(cal, r, cutoff, cfg.horizon)).to_arrow_table()
            con.register("f_tmp", feats)
            con.register("l_tmp", labels)
            joined = con.sql("""
                SELECT f.*, l.dropout AS label, l.outcome, l.label_state, l.label_evidence
                FROM f_tmp f JOIN l_tmp l USING (student_key)
                ORDER BY f.student_key
            """).to_arrow_table()
            con.unregister("f_tmp")
            con.unregister("l_tmp")
            n_unl = joined.column("label").null_count
            unlabelled += n_unl
            joined = joined.filter(pc.is_valid(joined.column("label")))
            n = joined.num_rows
            pos = pc.sum(joined.column("label")).as_py() or 0
            per_round.append(TrainsetRound(
                round_id=r.round_id, round_type=r.round_type, as_of=cal.as_of(r.round_id),
                rows=n, unlabelled=n_unl, label_rate=round(pos / n, 5) if n else None,
                label_known_on=label_known_on(con, cal, r, cfg.horizon, cutoff),
            ))
            if n:
                parts.append(joined)
        fp = delivery_fingerprint(con, cutoff)
        link_run = latest_link_run(con)
    finally:
        stack.close()
        con.close()
    if not parts:
        raise RuntimeError(f"no labelled rows: no round's outcome is known by {cutoff}")
    data = pa.concat_tables(parts)
    key = json.dumps({
        "rounds": [r.round_id for r in rounds], "horizon": cfg.horizon, "cutoff": cutoff.isoformat(),
        "deliveries": fp, "catalogue": CATALOGUE_VERSION,
    }, sort_keys=True)
    name = "ts-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    path = save_trainset_data(home.trainsets_dir, name, data)
    total = data.num_rows
    manifest = TrainsetManifest(
        name=name, config=cfg, cutoff=cutoff, rounds=per_round, rows=total, unlabelled_rows=unlabelled,
        label_rate=round((pc.sum(data.column("label")).as_py() or 0) / total, 5),
        delivery_fingerprint=fp, catalogue_version=CATALOGUE_VERSION,
        feature_groups={g: [f.name for f in FEATURES if f.group == g] for g in GROUPS},
        categorical=[f.name for f in FEATURES if f.dtype == "category"],
        file=str(path), sha256=file_sha256(path), engine=home.engine.kind, link_run=link_run,
    )
    save_trainset_manifest(home.trainsets_dir, manifest)
    return manifest
