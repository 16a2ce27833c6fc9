"""Scoring rounds: features -> calibrated risk score -> risk group -> SHAP reasons -> snapshot.

`score_round` is the whole of `ews score --round R`; `due_rounds` / `score_due` are `ews score
--due`. The steps are small functions so the service (ad-hoc scoring, audit replay) reuses them.
The round arrives parsed (`ScoringRound`, parsed once by the CLI) and goes down as such to the
feature SQL and the snapshot's paths; the snapshot is written through `serving.snapshot`'s typed
manifest and column schema.

A round is scored in chunks of whole schools of at most `ScoreConfig.chunk_rows` pupils (a school
larger than that is a chunk alone), from the feature SQL to the snapshot file. The round is first
prepared once (`features.pointintime.build.prepare_round`): its population, its round-wide steps
(registries, the schools' past dropout rates) into temporary tables, and every source's known rows
of its pupils into Parquet partitioned by chunk; then the same compiled query runs for every chunk,
reading only that chunk's rows, so per-chunk work and memory are set by the chunk, not by the country (the
session's DuckDB memory limit and spill folder come from `ScoreConfig`).
Risk groups are cut within the whole round's scores, so one pass keeps only the score column of
the round (8 bytes a pupil) while each chunk's finished rows wait in a scratch file of the pending
snapshot; once every chunk is scored, the groups are cut and the parts are streamed, in chunk order,
into students.parquet. Rows are in student_key order within a chunk, chunks in school-code order
(a round that fits one chunk is in student_key order, as before chunking). With the Spark engine the
same per-chunk functions (`explain_frame`, `write_part`) and the same end (`seal_round`) run from
`serving.spark_scoring.score_round_spark`, and give the same snapshot.

Too little data: a student enrolled at the round with no attendance month, no final grades, no
CCT or care screening known by the as-of date, *and* no earlier census (a newcomer about whom the
system knows only this census row) gets no score, with that reason. The model would only echo
grade and school for such a child; a school should meet the child instead of reading a guess.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, ScoringRound
from features.debris import prepared_scratch
from features.home import EwsHome
from features.pointintime.build import PopulationSource, PreparedRound
from features.pointintime.compile import LatestEvidence
from features.pointintime.spec import BY_NAME, CONTEXT_FEATURES, FEATURE_NAMES, GROUP_COLUMNS, PROTECTED_FEATURES
from serving.model import ADDITIVITY_TOLERANCE, published_logit, published_scale, shap_tables, to_published_scale
from serving.reasons import GROUP_NAMES, MATERIAL_ODDS, group_sums, render_reasons
from serving.snapshot import (
    ColumnSchema, ModelLineage, PendingSnapshot, ScoreConfig, SnapshotManifest, SnapshotRef, StudentsWriter, as_round,
    publish, snapshots_of,
)

if TYPE_CHECKING:
    from serving.snapshot import ExplanationSummary
    from training.model import RiskModel
    from training.registry import VersionedModel
    from training.version import ModelVersion

_log = logging.getLogger(__name__)

NO_SCORE_REASONS: dict[str, tuple[str, str]] = {
    "no_history": (
        "No attendance, grades or screening known and no earlier census: too little data to score",
        "ยังไม่มีข้อมูลการมาเรียน ผลการเรียน หรือผลคัดกรอง และไม่เคยปรากฏในข้อมูลครั้งก่อน: ข้อมูลไม่พอสำหรับประเมิน",
    ),
}


def eligibility(frame: pd.DataFrame) -> np.ndarray:
    """Reason code per row, or '' when the row has enough data to score (rule in the module doc)."""
    nothing_known = (
        (frame["att_months_known"].fillna(0) == 0)
        & frame["gpa_last"].isna() & frame["marks_0_last"].isna()
        & ~frame["cct_screened"].fillna(False).astype(bool)
        & ~frame["care_screened"].fillna(False).astype(bool)
        & (frame["censuses_known"].fillna(0) == 0)
    )
    return np.where(nothing_known.to_numpy(), "no_history", "")


def placement_sql(census: dt.date, as_of: dt.date, evidence: LatestEvidence | None = None,
                  prepared: PreparedRound | None = None, chunk: int | None = None) -> str:
    """Room of each enrolled student (the compiled population step of features' placement group)."""
    from features.pointintime.build import placement_sql as compiled

    return compiled(census, as_of, evidence=evidence, prepared=prepared, chunk=chunk)


def school_areas_sql(as_of: dt.date) -> str:
    """School name and area (tambon -> amphoe -> province): features' compiled registry reads."""
    from features.pointintime.build import school_areas_sql as compiled

    return compiled(as_of)


class RoundInputs(NamedTuple):
    frame: pd.DataFrame  # features + room + school area, one row per student, by student_key
    fingerprint: str  # deliveries known by the as-of date
    population: PopulationSource  # the round's census, or the latest evidence when it was late


def read_chunk(con: Any, r: ScoringRound, cal: SchoolCalendar, population: PopulationSource,
               school_areas: pd.DataFrame, prepared: PreparedRound | None = None,
               chunk: int | None = None) -> pd.DataFrame:
    """Features joined with room and school area, one row per student by student_key: the round's,
    or with `prepared` (`prepare_round`) those of its chunk `chunk` (None: all)."""
    from features.pointintime.build import build_features

    as_of = cal.as_of(r)
    census = cal.census_date(r.academic_year, r.term)
    feats = build_features(con, cal, r, population=population, prepared=prepared, chunk=chunk).to_pandas()
    rooms = con.execute(placement_sql(census, as_of, population.evidence(r), prepared, chunk)).fetch_df()
    frame = feats.merge(rooms, on="student_key", how="left").merge(school_areas, on="school_code", how="left")
    return frame.sort_values("student_key", kind="stable").reset_index(drop=True)


def read_round_inputs(home: EwsHome, r: ScoringRound, cal: SchoolCalendar) -> RoundInputs:
    """The round's feature table joined with room and school area, the delivery fingerprint, and
    where the population came from, in one piece. A round with nobody in it raises `EmptyRoundError`."""
    from features.pointintime.build import population_source, require_population
    from features.pointintime.pipeline import connect_warehouse, delivery_fingerprint

    as_of = cal.as_of(r)
    con = connect_warehouse(home)
    try:
        source = population_source(con, cal, r)
        frame = read_chunk(con, r, cal, source, con.execute(school_areas_sql(as_of)).fetch_df())
        require_population(r, source, len(frame))
        fingerprint = delivery_fingerprint(con, as_of)
    finally:
        con.close()
    return RoundInputs(frame, fingerprint, source)


@dataclass
class StageClock:
    """Seconds per stage of a round, summed over its chunks; `current` names the running stage (a
    benchmark's memory sampler reads it to charge each sample to a stage)."""

    seconds: dict[str, float] = field(default_factory=dict)
    current: str = ""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        before, self.current = self.current, name
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.current = before


def explain_rows(model: RiskModel, x: np.ndarray, batch_rows: int = 200_000,
                 margin: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(raw margin, contributions incl. base column, on the raw margin) for every row of the encoded
    matrix `x`, in batches (`explain_frame` moves them onto the published scale). A `margin`
    already computed for `x` is returned as it is."""
    from serving.fastshap import tree_shap

    n = x.shape[0]
    contrib = np.zeros((n, len(model.features_.names) + 1), dtype=np.float64)
    for lo in range(0, n, batch_rows):
        hi = min(n, lo + batch_rows)
        # Flattened on first use only: a round with nobody to score never pays for it.
        tree_shap(shap_tables(model), x[lo:hi], out=contrib[lo:hi])
    if margin is None:
        margin = model.raw_margin(x) if n else np.zeros(0)
    return margin, contrib


def explain_frame(model: RiskModel, frame: pd.DataFrame, cfg: ScoreConfig,
                  clock: StageClock | None = None) -> pd.DataFrame:
    """Score and explain every eligible row of a feature frame (the others get a reason), all but
    the risk group: a scored row's `risk_group` is '' until `assign_groups` cuts the round's scores
    (a chunk is not a round).

    Contributions are stored on the published score's logit scale (`serving.model.to_published_scale`):
    base_value + the contributions = logit(risk_score) for every scored row, checked here."""
    clock = clock or StageClock()
    reason = eligibility(frame)
    ok = reason == ""
    with clock.stage("scores"):
        x = model.encode(frame.loc[ok])
        margin = model.raw_margin(x) if len(x) else np.zeros(0)
        score = model.risk_score_from_margin(margin)
    with clock.stage("shap"):
        _, raw = explain_rows(model, x, cfg.batch_rows, margin=margin)
        del x
        err = np.abs(raw.sum(axis=1) - margin).max() if len(margin) else 0.0
        if err > cfg.additivity_tolerance:
            raise RuntimeError(f"SHAP contributions do not add up to the model output (max error {err:.2e})")
        contrib, residual = to_published_scale(model, raw, score, inplace=True)
        failures = int((np.abs(residual) > ADDITIVITY_TOLERANCE).sum())
        if failures:
            # Counted and logged, not fatal: a pupil beyond the calibrator's clip still gets the score the
            # model gives; the manifest records how many explanations do not add up (`ExplanationSummary`).
            _log.warning("%d of %d scored rows: base + contributions differ from the published logit by more "
                         "than %.0e (max %.2e)", failures, len(residual), ADDITIVITY_TOLERANCE, np.abs(residual).max())
        gsum = group_sums(contrib[:, :-1])

    n = len(frame)
    out = pd.DataFrame({"student_key": frame["student_key"].to_numpy()})
    out["scored"] = ok
    out["no_score_reason"] = pd.Series(reason, dtype=object).replace("", None).to_numpy()
    full = lambda a, fill: _scatter(ok, a, n, fill)  # noqa: E731
    out["risk_score"] = full(score, np.nan)
    out["risk_group"] = full(np.full(len(score), "", dtype=object), None)
    out["raw_margin"] = full(margin, np.nan)
    out["base_value"] = full(contrib[:, -1], np.nan)
    for i, col in enumerate(SNAPSHOT_COLUMNS.contributions.values()):
        out[col] = full(contrib[:, i], np.nan)
    for j, col in enumerate(SNAPSHOT_COLUMNS.group_contributions.values()):
        out[col] = full(gsum[:, j], np.nan)

    # Reasons for lists and downloads, column-wise; the explanation endpoint re-reads every contribution.
    with clock.stage("reasons"):
        th = np.full(n, None, dtype=object)
        en = np.full(n, None, dtype=object)
        th[ok], en[ok] = render_reasons(group_sums(contrib[:, :-1], for_reasons=True), cfg.top_reasons)
        for row in np.flatnonzero(~ok):
            code = reason[row]
            en[row], th[row] = NO_SCORE_REASONS[code]
        out["reasons_th"] = th
        out["reasons_en"] = en
    return out


def assign_groups(model: RiskModel, score: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Risk group of every row of a round (None where not scored): cut within the round's own scores."""
    s = np.asarray(score, dtype=np.float64)[scored]
    return _scatter(scored, np.asarray(model.thresholds_.assign(s, round_scores=s), dtype=object), len(scored), None)


def score_frame(model: RiskModel, frame: pd.DataFrame, cfg: ScoreConfig) -> pd.DataFrame:
    """Score, group and explain every row of a whole round's feature frame (`explain_frame`, then
    the groups cut within the frame's scores)."""
    out = explain_frame(model, frame, cfg)
    out["risk_group"] = assign_groups(model, out["risk_score"].to_numpy(), out["scored"].to_numpy(dtype=bool))
    return out


@dataclass
class Additivity:
    """How a round's explanations add up, gathered chunk by chunk (`ExplanationSummary`'s figures)."""

    max_error: float = 0.0
    failures: int = 0
    base_logit: float | None = None  # one number per round: every row shares the booster's expected value

    def add(self, scored: pd.DataFrame) -> None:
        ok = scored["scored"].to_numpy(dtype=bool)
        if not ok.any():
            return
        phi = scored.loc[ok, list(SNAPSHOT_COLUMNS.contributions.values())].to_numpy(dtype=np.float64)
        base = scored.loc[ok, "base_value"].to_numpy(dtype=np.float64)
        residual = phi.sum(axis=1) + base - published_logit(scored.loc[ok, "risk_score"].to_numpy(dtype=np.float64))
        self.max_error = max(self.max_error, float(np.abs(residual).max()))
        self.failures += int((np.abs(residual) > ADDITIVITY_TOLERANCE).sum())
        if self.base_logit is None:
            self.base_logit = float(base[0])


def explanation_summary(model: RiskModel, scored: pd.DataFrame | Additivity) -> ExplanationSummary:
    """What the manifest records about a round's explanations: their scale, the base, and the
    additivity check recomputed from the columns as written (a whole round's frame, or gathered
    chunk by chunk)."""
    from serving.snapshot import ExplanationSummary

    if isinstance(scored, pd.DataFrame):
        gathered = Additivity()
        gathered.add(scored)
        scored = gathered
    scale = published_scale(model)
    # a round with nobody scored reports the model's own base
    if scored.base_logit is not None:
        base_logit = scored.base_logit
    else:
        alone = np.zeros((1, len(model.features_.names) + 1))
        alone[0, -1] = shap_tables(model).base_value
        base_logit = float(to_published_scale(model, alone, model.risk_score_from_margin(alone.sum(axis=1)))[0][0, -1])
    return ExplanationSummary(
        calibration=scale.method, slope=scale.slope, intercept=scale.intercept, base_logit=base_logit,
        base_probability=float(1.0 / (1.0 + np.exp(-base_logit))), tolerance=ADDITIVITY_TOLERANCE,
        max_additivity_error=scored.max_error, additivity_failures=scored.failures, material_odds=MATERIAL_ODDS,
        context_features=sorted(CONTEXT_FEATURES), protected_features=sorted(PROTECTED_FEATURES),
    )


def _scatter(mask: np.ndarray, values: np.ndarray, n: int, fill: Any) -> np.ndarray:
    out = np.full(n, fill, dtype=values.dtype if fill is not None else object)
    out[mask] = values
    return out


PLACEMENT_COLUMNS = (
    "student_key", "round_id", "as_of", "school_code", "school_name", "grade", "room",
    "tambon_code", "tambon_name", "amphoe_code", "amphoe_name", "province_code", "province_name",
)
# The column roles of every snapshot this code writes (the manifest carries them, so readers of an
# older snapshot use the roles it was written with). Fairness attributes are the feature set's
# group_* columns, stored as they are: monitoring reads them instead of rebuilding them.
SNAPSHOT_COLUMNS = ColumnSchema.build(
    features=list(FEATURE_NAMES), feature_groups=list(GROUP_NAMES),
    attributes=[c.removeprefix("group_") for c in GROUP_COLUMNS],
    placement=list(PLACEMENT_COLUMNS[3:]), score=["scored", "risk_score", "risk_group", "raw_margin", "base_value"],
    reason=["no_score_reason", "reasons_th", "reasons_en"],
)


def build_snapshot_table(frame: pd.DataFrame, scored: pd.DataFrame) -> pa.Table:
    """Placement, the scored columns, the model inputs and the fairness attributes, in that order
    (the order of schema 1, with the attributes appended)."""
    placement = frame[list(PLACEMENT_COLUMNS)].copy()
    placement["grade"] = placement["grade"].astype("string")
    feats = frame[list(FEATURE_NAMES)].copy()
    for f in FEATURE_NAMES:
        # DuckDB hands some numbers over as Decimal; the model read them as float64, so store that.
        if BY_NAME[f].dtype in ("float", "int") and feats[f].dtype == object:
            feats[f] = pd.to_numeric(feats[f].astype("Float64"), errors="coerce")
    feats.columns = list(SNAPSHOT_COLUMNS.model_inputs.values())
    attrs = frame[list(SNAPSHOT_COLUMNS.group_attributes.values())].astype("string")
    table = pd.concat([placement.reset_index(drop=True), scored.drop(columns="student_key").reset_index(drop=True),
                       feats.reset_index(drop=True), attrs.reset_index(drop=True)], axis=1)
    return pa.Table.from_pandas(table, preserve_index=False)


def model_lineage(loaded: VersionedModel) -> ModelLineage:
    """The registered version's lineage as the snapshot stores it (the manifest's text fields)."""
    return ModelLineage.model_validate(loaded.lineage.manifest_fields())


def model_thresholds(loaded: VersionedModel) -> dict[str, Any]:
    return loaded.model.thresholds_.to_dict()


class RoundSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    round_id: str
    snapshot_hash: str
    folder: str
    students: int
    scored: int
    no_score: int
    groups: dict[str, int]
    model_version: str
    published: bool
    seconds: dict[str, float]
    chunks: int = 1  # chunks of whole schools the round was scored in
    population_caveat: dict[str, str] | None = None  # {en, th} when the census was late


def score_round(
    home: EwsHome, scoring_round: ScoringRound | str, loaded: VersionedModel, cfg: ScoreConfig | None = None,
    cal: SchoolCalendar | None = None, do_publish: bool = True, clock: StageClock | None = None,
) -> RoundSummary:
    """Score one round with a loaded registered version, write its snapshot and (by default) publish it.

    `scoring_round` is a `ScoringRound` on serving's own path (the CLI parses it); a string from a caller
    outside serving is parsed once here. The round goes chunk by chunk (module doc); `clock` collects
    the seconds of each stage (prepare, features, scores, shap, reasons, snapshot)."""
    from features.pointintime.build import population_source, prepare_round, require_population
    from features.pointintime.pipeline import connect_warehouse, delivery_fingerprint

    r = as_round(scoring_round)
    cfg = cfg or ScoreConfig()
    cal = cal or home.calendar
    clock = clock or StageClock()
    model = loaded.model
    as_of = cal.as_of(r)
    t0 = time.perf_counter()
    con = connect_warehouse(home)
    prepared_dir: Path | None = None
    try:
        # the round's prepared known rows live beside DuckDB's spill, removed however the round ends
        prepared_dir = prepared_scratch(scoring_resources(con, home, cfg), r.round_id)
        with clock.stage("prepare"), prepare_resources(con, cfg):
            with clock.stage("prepare.source"):
                population = population_source(con, cal, r)
            # the population, the round-wide steps (registries, school rates) and every source's known
            # rows once for the round, by chunk: each chunk then does only its own pupils' work
            prepared = prepare_round(con, cal, r, population, cfg.chunk_rows, prepared_dir,
                                     stage=lambda name: clock.stage(f"prepare.{name}"))
            chunks = prepared.chunks
            require_population(r, population, sum(n for _, n in chunks))
            with clock.stage("prepare.areas"):
                school_areas = con.execute(school_areas_sql(as_of)).fetch_df()
                fingerprint = delivery_fingerprint(con, as_of)
        with PendingSnapshot(home, r) as pending:
            parts = pending.scratch("parts")
            written: list[_Part] = []
            additivity = Additivity()
            for i, (_, pupils) in enumerate(chunks):
                with clock.stage("features"):
                    # a round in one chunk reads its prepared tables unrestricted
                    frame = read_chunk(con, r, cal, population, school_areas, prepared=prepared,
                                       chunk=i if len(chunks) > 1 else None)
                if len(frame) != pupils:
                    raise RuntimeError(f"round {r.round_id}, chunk {i}: {len(frame)} feature rows for {pupils} "
                                       "pupils of its schools")
                explained = explain_frame(model, frame, cfg, clock)
                with clock.stage("snapshot"):
                    written.append(write_part(parts / f"{i:05d}.arrow", frame, explained, additivity))
                    del frame, explained
            con.close()
            with clock.stage("snapshot"):
                ref, scored, group = seal_round(
                    home, pending, written, loaded, r, cal, cfg, fingerprint, population, additivity, do_publish)
    finally:
        con.close()
        if prepared_dir is not None:
            shutil.rmtree(prepared_dir, ignore_errors=True)
    return round_summary(r, ref, scored, group, loaded, do_publish, population, clock, t0, len(chunks))


def write_part(path: Path, frame: pd.DataFrame, explained: pd.DataFrame, additivity: Additivity) -> _Part:
    """One chunk's finished snapshot rows (`build_snapshot_table` of its feature frame and its
    `explain_frame`), written to a scratch part, its explanations gathered into `additivity`."""
    additivity.add(explained)
    return _Part.write(path, build_snapshot_table(frame, explained))


def seal_round(home: EwsHome, pending: PendingSnapshot, written: list[_Part], loaded: VersionedModel,
               r: ScoringRound, cal: SchoolCalendar, cfg: ScoreConfig, fingerprint: str,
               population: PopulationSource, additivity: Additivity,
               do_publish: bool) -> tuple[SnapshotRef, np.ndarray, np.ndarray]:
    """The end of a round, whatever engine scored its parts: the risk groups cut within the whole
    round's scores, the parts streamed in order into students.parquet, the manifest sealed and (by
    default) published. Returns the snapshot, the scored flags and the groups of every row."""
    model = loaded.model
    score = np.concatenate([p.score for p in written])
    scored = np.concatenate([p.scored for p in written])
    group = assign_groups(model, score, scored)
    writer = StudentsWriter(pending.students_path, _common_schema(written))
    # the placeholder was typed as pandas types the groups' strings (null: nobody scored)
    gtype = writer.schema.field("risk_group").type
    offset = 0
    for part in written:
        table = part.read()
        idx = table.schema.get_field_index("risk_group")
        chunk_groups = pa.array(group[offset:offset + table.num_rows], type=gtype)
        writer.write(table.set_column(idx, table.schema.field(idx).with_type(gtype), chunk_groups))
        offset += table.num_rows
        part.path.unlink()
        del table
    writer.close()
    manifest = SnapshotManifest(
        round=r, as_of=cal.as_of(r), model=model_lineage(loaded), thresholds=model_thresholds(loaded), calendar=cal,
        config=cfg, delivery_fingerprint=fingerprint, features=list(FEATURE_NAMES),
        feature_groups=list(GROUP_NAMES),
        no_score_reasons={k: {"en": v[0], "th": v[1]} for k, v in NO_SCORE_REASONS.items()},
        columns=SNAPSHOT_COLUMNS, explanation=explanation_summary(model, additivity), population=population,
    )
    ref = pending.seal(manifest)
    if do_publish:
        publish(home, ref)
    return ref, scored, group


def round_summary(r: ScoringRound, ref: SnapshotRef, scored: np.ndarray, group: np.ndarray, loaded: VersionedModel,
                  do_publish: bool, population: PopulationSource, clock: StageClock, t0: float,
                  chunks: int) -> RoundSummary:
    """What `ews score` reports of a round it scored (`t0`: when the round started, perf_counter)."""
    counts = pd.Series(group[scored]).value_counts().to_dict()
    seconds = {k: round(v, 2) for k, v in clock.seconds.items()}
    return RoundSummary(
        round_id=r.round_id, snapshot_hash=ref.hash, folder=str(ref.folder), students=len(scored),
        scored=int(scored.sum()), no_score=int((~scored).sum()),
        groups={g: int(counts.get(g, 0)) for g in ("problem", "at_risk", "normal")},
        model_version=str(loaded.lineage.version), published=do_publish, population_caveat=population.caveat(),
        seconds=seconds | {"total": round(time.perf_counter() - t0, 2)}, chunks=chunks,
    )


def scoring_resources(con: Any, home: EwsHome, cfg: ScoreConfig) -> Path:
    """Set the scoring session's DuckDB memory limit and spill folder (`ScoreConfig`) and return
    the folder: the round's peak is this limit plus one chunk's frames, not the deployment's limit
    for big batch work."""
    spill = cfg.spill_dir or home.spill_dir
    spill.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET memory_limit = '{cfg.duckdb_memory_limit}'")
    con.execute("SET temp_directory = '" + str(spill).replace("'", "''") + "'")
    return spill


@contextmanager
def prepare_resources(con: Any, cfg: ScoreConfig) -> Iterator[None]:
    """DuckDB's limit for the round's preparation (`ScoreConfig.prepare_memory_limit`), set back to
    the scoring limit when it ends, however it ends (lowering the limit moves what the session holds
    beyond it to its spill folder)."""
    if cfg.prepare_memory_limit is None:
        yield
        return
    con.execute(f"SET memory_limit = '{cfg.prepare_memory_limit}'")
    try:
        yield
    finally:
        con.execute(f"SET memory_limit = '{cfg.duckdb_memory_limit}'")


@dataclass
class _Part:
    """One chunk's finished snapshot rows in a scratch file, with what the round needs of them in
    memory: the scores (for the round's groups) and, per column, whether it holds nulls (for the
    schema of the whole file)."""

    path: Path
    schema: pa.Schema
    score: np.ndarray
    scored: np.ndarray
    nulls: dict[str, tuple[int, int]]  # column -> (null count, rows)

    @classmethod
    def write(cls, path: Path, table: pa.Table) -> _Part:
        # Arrow IPC, lz4: read back once, column types and the pandas metadata kept exactly.
        feather.write_feather(table, path, compression="lz4")
        return cls(path, table.schema, table.column("risk_score").to_numpy(zero_copy_only=False),
                   table.column("scored").to_numpy(zero_copy_only=False).astype(bool),
                   {name: (col.null_count, len(col)) for name, col in zip(table.column_names, table.columns)})

    def read(self) -> pa.Table:
        return feather.read_table(self.path, memory_map=False)


def _common_schema(parts: list[_Part]) -> pa.Schema:
    """The schema of the round's file: each chunk's (from pandas) unified, as the whole round in one
    frame would have typed it. A column with nulls in one chunk and none in another (an integer
    feature becomes a float, a flag an object) or all null in one (null type) takes the wider type;
    its pandas metadata entry comes from a chunk whose column has some but not only nulls (as the
    round's has then), else from a chunk of the unified type."""
    import json

    schema = pa.unify_schemas([p.schema for p in parts], promote_options="permissive")
    metas = [json.loads(p.schema.metadata[b"pandas"]) if p.schema.metadata and b"pandas" in p.schema.metadata
             else None for p in parts]
    if metas[0] is None or len(parts) == 1:
        return schema.with_metadata(parts[0].schema.metadata) if len(parts) == 1 else schema
    chosen = []
    for j, entry in enumerate(metas[0]["columns"]):
        name = entry["name"]
        target = schema.field(name).type

        def rank(k: int) -> int:
            nulls, rows = parts[k].nulls[name]
            return 2 if 0 < nulls < rows else 1 if parts[k].schema.field(name).type == target else 0
        best = max(range(len(parts)), key=lambda k: (rank(k), -k))
        chosen.append(metas[best]["columns"][j] if metas[best] else entry)
    merged = dict(metas[0], columns=chosen)
    return schema.with_metadata({**parts[0].schema.metadata, b"pandas": json.dumps(merged).encode()})


def due_rounds(home: EwsHome, model_version: ModelVersion, today: dt.date,
               cal: SchoolCalendar | None = None) -> list[ScoringRound]:
    """Rounds whose as-of date has passed, whose census is in the warehouse, and that have no
    snapshot scored by `model_version` yet. A census that came after the round's as-of date does
    not hold the round back: it is scored on the latest enrolment evidence known by then (and says
    so), as the school would have been served on that day."""
    from features.pointintime.pipeline import connect_warehouse, rounds_with_census

    cal = cal or home.calendar
    con = connect_warehouse(home)
    try:
        rows = con.execute("SELECT census_date, min(known_at) FROM wh.src_dmc_census GROUP BY 1").fetchall()
    finally:
        con.close()
    known: dict[dt.date, dt.date] = {c: k for c, k in rows}
    out = []
    for r in rounds_with_census(cal, known):
        if cal.as_of(r) > today:
            continue
        if any(s.manifest.model_version == str(model_version) for s in snapshots_of(home, r)):
            continue
        out.append(r)
    return out


def score_due(home: EwsHome, loaded: VersionedModel, today: dt.date, cfg: ScoreConfig | None = None) -> list[RoundSummary]:
    return [score_round(home, r, loaded, cfg) for r in due_rounds(home, loaded.lineage.version, today)]
