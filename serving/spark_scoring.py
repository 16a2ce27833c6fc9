"""Scoring a round on Spark: `ews score --round R` when the deployment says `[engine] kind = "spark"`.

Where it sits: the Spark twin of `serving.scoring.score_round`, and the same steps. The round's
features come from the compiled feature SQL on Spark (`features.engine.spark.SparkEngine`), joined
there with each pupil's room and school area (the same compiled placement and registry queries);
then `DataFrame.mapInPandas` scores each batch with the one `RiskModel` (its booster's model string
and fitted state broadcast once, rebuilt once per Python worker, never refitted): calibrated score,
exact SHAP on the published logit scale with its additivity check, and the reasons rendered
column-wise - `serving.scoring.explain_frame`, the very function DuckDB's path calls per chunk. The
rows come back as Parquet in the engine's exchange folder, in the order DuckDB's path writes them
(chunks of whole schools in school-code order, `student_key` within a chunk). The driver reads them
back file by file (at most `ScoreConfig.chunk_rows` rows each) into the snapshot's parts with
`build_snapshot_table`, then `serving.scoring.seal_round` cuts the risk groups on the whole round's
scores and writes students.parquet and the manifest through `serving.snapshot`: serving, replay and
monitoring read a Spark round exactly as a DuckDB one (tests/integration/test_engine_parity.py holds
the two files equal).

The population decision (census or latest evidence, the chunks' school counts) and the delivery
fingerprint stay on the warehouse's DuckDB session, as for `ews features` on Spark.

Exactness: every batch is cast to the Arrow schema DuckDB gives the same queries before it reaches
pandas (`duckdb_frame`), so the model reads the numbers DuckDB's path gives it; SHAP, scores and
reasons are per row, so batching changes no value.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.calendar import SchoolCalendar, ScoringRound
from features.home import EwsHome
from serving.scoring import (
    SNAPSHOT_COLUMNS, Additivity, RoundSummary, StageClock, explain_frame, round_summary,
    seal_round, write_part,
)
from serving.snapshot import PendingSnapshot, ScoreConfig, as_round

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

    from features.engine.spark import SparkEngine
    from features.pointintime.build import Chunk, PopulationSource
    from training.model import RiskModel
    from training.registry import VersionedModel

__all__ = ["EXPLAINED_TEXT", "SourceSchema", "duckdb_frame", "score_round_spark"]

# The text columns of `explain_frame`'s result (object columns: a string or None); the others are the
# `scored` flag and floats.
EXPLAINED_TEXT: tuple[str, ...] = ("no_score_reason", "risk_group", "reasons_th", "reasons_en")


@dataclass(frozen=True)
class SourceSchema:
    """The Arrow schema DuckDB gives the round's frame (features, then room and school area), and
    which of its columns `serving.scoring.read_chunk` fetches with DuckDB's own pandas conversion
    (the placement and registry queries' `fetch_df`) rather than Arrow's."""

    arrow: pa.Schema
    fetched: tuple[str, ...]


def explained_columns() -> list[str]:
    """`explain_frame`'s columns besides `student_key`, in its order."""
    return ["scored", "no_score_reason", "risk_score", "risk_group", "raw_margin", "base_value",
            *SNAPSHOT_COLUMNS.contributions.values(), *SNAPSHOT_COLUMNS.group_contributions.values(),
            "reasons_th", "reasons_en"]


def duckdb_frame(table: pa.Table, source: SourceSchema) -> pd.DataFrame:
    """The frame `serving.scoring.read_chunk` gives for these rows: every column cast (safely: an
    out-of-range value raises) to the type DuckDB gives it, the features converted to pandas by
    Arrow, the placement and area columns by DuckDB, as `fetch_df` converts them."""
    table = table.select(source.arrow.names).cast(source.arrow, safe=True)
    feats = table.drop_columns(list(source.fetched)).to_pandas()
    con = duckdb.connect()
    try:
        rest = con.from_arrow(table.select(list(source.fetched))).df()
    finally:
        con.close()
    return pd.concat([feats, rest], axis=1)


def explained_frame(table: pa.Table) -> pd.DataFrame:
    """`explain_frame`'s result for these rows, as it gave it (text columns as Python objects)."""
    def values(name: str) -> np.ndarray:
        column = table.column(name).to_numpy(zero_copy_only=False)  # a float's null comes back as NaN
        return column.astype(object) if name in (*EXPLAINED_TEXT, "student_key") else column

    out = pd.DataFrame({name: values(name) for name in ("student_key", *explained_columns())})
    out["scored"] = out["scored"].astype(bool)
    return out


# -- on the executors --------------------------------------------------------------------------

_MODELS: dict[str, RiskModel] = {}  # one rebuilt model per Python worker and model string


def _model(payload: tuple[str, str, str]) -> RiskModel:
    digest, booster, state = payload
    model = _MODELS.get(digest)
    if model is None:
        import lightgbm as lgb

        from training.model import RiskModel

        model = _MODELS[digest] = RiskModel.from_fitted_state(lgb.Booster(model_str=booster), json.loads(state))
    return model


def explain_batches(batches: Iterator[pd.DataFrame], payload: Any, source: SourceSchema,
                    cfg: ScoreConfig) -> Iterator[pd.DataFrame]:
    """mapInPandas's function: each batch of the round's frame -> the same rows with `explain_frame`'s
    columns appended (the frame's own columns go on as Spark gave them)."""
    model = _model(payload.value)
    for batch in batches:
        batch = batch[list(source.arrow.names)].reset_index(drop=True)
        frame = duckdb_frame(pa.Table.from_pandas(batch, preserve_index=False), source)
        explained = explain_frame(model, frame, cfg)
        yield pd.concat([batch, explained.drop(columns="student_key")], axis=1)


# -- on the driver -----------------------------------------------------------------------------

def model_payload(model: RiskModel) -> tuple[str, str, str]:
    """What the executors rebuild the model from: the booster's model string and the fitted state."""
    booster = model.booster_.model_to_string()
    state = json.dumps(model.fitted_state(), sort_keys=True)
    return hashlib.sha256((booster + state).encode()).hexdigest(), booster, state


def round_chunks(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, r: ScoringRound,
                 population: PopulationSource, chunk_rows: int) -> list[Chunk]:
    """The round's chunks of whole schools, as `prepare_round` packs them (school-code order, ''
    for pupils without a school code): the Spark round is written in the same row order."""
    from features.pointintime.build import pack_schools, round_context
    from features.pointintime.compile import population_steps, with_sql

    census = cal.census_date(r.academic_year, r.term)
    sql = with_sql(population_steps(round_context(cal, r), census, ("student_key", "sid", "school_code"),
                                    population.evidence(r)),
                   "SELECT coalesce(school_code, '') AS chunk_school, count(*) FROM pop GROUP BY 1 ORDER BY 1")
    return pack_schools([(code, int(n)) for code, n in con.execute(sql).fetchall()], chunk_rows)


def round_frame(engine: SparkEngine, cal: SchoolCalendar, r: ScoringRound, population: PopulationSource,
                chunks: list[Chunk]) -> tuple[DataFrame, SourceSchema]:
    """The round's features joined with room and school area on Spark, ordered as DuckDB's path
    writes them, and the Arrow schema DuckDB gives the same columns (see `duckdb_frame`)."""
    from pyspark.sql import functions as F

    from features.pointintime.build import placement_sql, school_areas_sql
    from features.pointintime.compile import DUCKDB, SPARK

    as_of, census = cal.as_of(r), cal.census_date(r.academic_year, r.term)
    evidence = population.evidence(r)
    feats, feat_schema = engine.features_frame(cal, r, population)
    rooms = engine.dataframe(placement_sql(census, as_of, dialect=SPARK, evidence=evidence))
    room_schema = engine.duckdb_schema(placement_sql(census, as_of, dialect=DUCKDB, evidence=evidence))
    areas = engine.dataframe(school_areas_sql(as_of, dialect=SPARK))
    area_schema = engine.duckdb_schema(school_areas_sql(as_of, dialect=DUCKDB))
    order = engine.spark.createDataFrame(
        [(code, i) for i, (schools, _) in enumerate(chunks) for code in schools], "chunk_school string, chunk int")
    fetched = [f for f in (*room_schema, *area_schema) if f.name not in ("student_key", "school_code")]
    source = SourceSchema(pa.schema([*feat_schema, *fetched]), tuple(f.name for f in fetched))
    frame = (feats.join(rooms, "student_key", "left").join(areas, "school_code", "left")
             .withColumn("chunk_school", F.coalesce(F.col("school_code"), F.lit("")))
             .join(F.broadcast(order), "chunk_school", "left")
             .orderBy("chunk", "student_key")
             .select(*source.arrow.names))
    return frame, source


def output_schema(frame: DataFrame) -> StructType:
    """The frame's own columns, then `explain_frame`'s."""
    from pyspark.sql.types import BooleanType, DoubleType, StringType, StructField, StructType

    explained = [StructField(c, StringType() if c in EXPLAINED_TEXT else BooleanType() if c == "scored"
                             else DoubleType()) for c in explained_columns()]
    return StructType([*frame.schema.fields, *explained])


def score_round_spark(
    home: EwsHome, scoring_round: ScoringRound | str, loaded: VersionedModel, cfg: ScoreConfig | None = None,
    cal: SchoolCalendar | None = None, do_publish: bool = True, clock: StageClock | None = None,
) -> RoundSummary:
    """`serving.scoring.score_round` on Spark (module doc): the same snapshot, published the same way.
    Stages: prepare (DuckDB: population, chunks, fingerprint), spark (features, scores, SHAP, reasons),
    snapshot (the driver writes the snapshot)."""
    from features.engine.spark import SparkEngine
    from features.pointintime.build import population_source, require_population
    from features.pointintime.pipeline import connect_warehouse, delivery_fingerprint

    r = as_round(scoring_round)
    cfg = cfg or ScoreConfig()
    cal = cal or home.calendar
    clock = clock or StageClock()
    t0 = time.perf_counter()
    con = connect_warehouse(home)
    try:
        with clock.stage("prepare"):
            population = population_source(con, cal, r)
            chunks = round_chunks(con, cal, r, population, cfg.chunk_rows)
            pupils = sum(n for _, n in chunks)
            require_population(r, population, pupils)
            fingerprint = delivery_fingerprint(con, cal.as_of(r))
        with SparkEngine.open(home, con) as engine:
            # in the exchange folder: on a cluster the executors write there and the driver reads it
            out_dir = Path(engine.exchange) / f"scored-{r.round_id}-{os.getpid()}"
            try:
                with clock.stage("spark"):
                    frame, source = round_frame(engine, cal, r, population, chunks)
                    # the model goes to each executor once; its Python workers rebuild it once (`_model`)
                    payload = engine.spark.sparkContext.broadcast(model_payload(loaded.model))
                    try:
                        scored = frame.mapInPandas(lambda it: explain_batches(it, payload, source, cfg),
                                                   output_schema(frame))
                        # files of at most a chunk: the driver's memory is set by the chunk, as on DuckDB
                        scored.write.option("maxRecordsPerFile", cfg.chunk_rows).parquet(str(out_dir))
                    finally:
                        payload.destroy()
                with PendingSnapshot(home, r) as pending:
                    parts = pending.scratch("parts")
                    written, additivity = [], Additivity()
                    with clock.stage("snapshot"):
                        # part-<partition>-<uuid>-c<file>: the sort's partitions and each one's files in order
                        for i, path in enumerate(sorted(out_dir.glob("part-*.parquet"))):
                            table = pq.read_table(path)
                            if not table.num_rows:  # an empty partition's file: nothing to type a part by
                                continue
                            written.append(write_part(parts / f"{i:05d}.arrow", duckdb_frame(table, source),
                                                      explained_frame(table), additivity))
                            del table
                        rows = sum(len(p.scored) for p in written)
                        if rows != pupils:
                            raise RuntimeError(f"round {r.round_id}: Spark scored {rows} rows for {pupils} pupils")
                        ref, flags, group = seal_round(home, pending, written, loaded, r, cal, cfg, fingerprint,
                                                       population, additivity, do_publish)
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        con.close()
    return round_summary(r, ref, flags, group, loaded, do_publish, population, clock, t0, len(chunks))

