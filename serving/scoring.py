"""Scoring rounds: features -> calibrated risk score -> risk group -> SHAP reasons -> snapshot.

`score_round` is the whole of `ews score --round R`; `due_rounds` / `score_due` are `ews score
--due`. The steps are small functions so the service (ad-hoc scoring, audit replay) reuses them.
The round arrives parsed (`ScoringRound`, parsed once by the CLI) and goes down as such to the
feature SQL and the snapshot's paths; the snapshot is written through `serving.snapshot`'s typed
manifest and column schema.

Too little data: a student enrolled at the round with no attendance month, no final grades, no
CCT or care screening known by the as-of date, *and* no earlier census (a newcomer about whom the
system knows only this census row) gets no score, with that reason. The model would only echo
grade and school for such a child; a school should meet the child instead of reading a guess.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, ScoringRound
from features.home import EwsHome
from features.pointintime.build import PopulationSource
from features.pointintime.compile import LatestEvidence
from features.pointintime.spec import BY_NAME, CONTEXT_FEATURES, FEATURE_NAMES, GROUP_COLUMNS, PROTECTED_FEATURES
from serving.model import ADDITIVITY_TOLERANCE, published_logit, published_scale, shap_tables, to_published_scale
from serving.reasons import GROUP_NAMES, MATERIAL_ODDS, group_matrix, render_reasons
from serving.snapshot import (
    ColumnSchema, ModelLineage, ScoreConfig, SnapshotManifest, as_round, publish, snapshots_of, write_snapshot,
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


def placement_sql(census: dt.date, as_of: dt.date, evidence: LatestEvidence | None = None) -> str:
    """Room of each enrolled student (the compiled population step of features' placement group)."""
    from features.pointintime.build import placement_sql as compiled

    return compiled(census, as_of, evidence=evidence)


def school_areas_sql(as_of: dt.date) -> str:
    """School name and area (tambon -> amphoe -> province): features' compiled registry reads."""
    from features.pointintime.build import school_areas_sql as compiled

    return compiled(as_of)


class RoundInputs(NamedTuple):
    frame: pd.DataFrame  # features + room + school area, one row per student, by student_key
    fingerprint: str  # deliveries known by the as-of date
    population: PopulationSource  # the round's census, or the latest evidence when it was late


def read_round_inputs(home: EwsHome, r: ScoringRound, cal: SchoolCalendar) -> RoundInputs:
    """The round's feature table joined with room and school area, the delivery fingerprint, and
    where the population came from. A round with nobody in it raises `EmptyRoundError`."""
    from features.pointintime.build import build_features, population_source, require_population
    from features.pointintime.pipeline import connect_warehouse, delivery_fingerprint

    as_of = cal.as_of(r)
    census = cal.census_date(r.academic_year, r.term)
    con = connect_warehouse(home)
    try:
        source = population_source(con, cal, r)
        feats = build_features(con, cal, r, population=source).to_pandas()
        require_population(r, source, len(feats))
        rooms = con.execute(placement_sql(census, as_of, source.evidence(r))).fetch_df()
        schools = con.execute(school_areas_sql(as_of)).fetch_df()
        fingerprint = delivery_fingerprint(con, as_of)
    finally:
        con.close()
    frame = feats.merge(rooms, on="student_key", how="left").merge(schools, on="school_code", how="left")
    return RoundInputs(frame.sort_values("student_key", kind="stable").reset_index(drop=True), fingerprint, source)


def explain_rows(model: RiskModel, x: np.ndarray, batch_rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(raw margin, contributions incl. base column, on the raw margin) for every row of the encoded
    matrix `x`, in batches (`score_frame` moves them onto the published scale)."""
    from serving.fastshap import tree_shap

    n = x.shape[0]
    contrib = np.zeros((n, len(model.features_.names) + 1), dtype=np.float64)
    for lo in range(0, n, batch_rows):
        hi = min(n, lo + batch_rows)
        # Flattened on first use only: a round with nobody to score never pays for it.
        tree_shap(shap_tables(model), x[lo:hi], out=contrib[lo:hi])
    margin = model.raw_margin(x) if n else np.zeros(0)
    return margin, contrib


def score_frame(model: RiskModel, frame: pd.DataFrame, cfg: ScoreConfig) -> pd.DataFrame:
    """Score, group and explain every eligible row of a feature frame; the others get a reason.

    Contributions are stored on the published score's logit scale (`serving.model.to_published_scale`):
    base_value + the contributions = logit(risk_score) for every scored row, checked here."""
    reason = eligibility(frame)
    ok = reason == ""
    x = model.encode(frame.loc[ok])
    margin, raw = explain_rows(model, x, cfg.batch_rows)
    err = np.abs(raw.sum(axis=1) - margin).max() if len(margin) else 0.0
    if err > cfg.additivity_tolerance:
        raise RuntimeError(f"SHAP contributions do not add up to the model output (max error {err:.2e})")
    score = model.risk_score_from_margin(margin)
    group = np.asarray(model.thresholds_.assign(score, round_scores=score), dtype=object)  # a round's own shares
    contrib, residual = to_published_scale(model, raw, score, inplace=True)
    failures = int((np.abs(residual) > ADDITIVITY_TOLERANCE).sum())
    if failures:
        # Counted and logged, not fatal: a pupil beyond the calibrator's clip still gets the score the
        # model gives; the manifest records how many explanations do not add up (`ExplanationSummary`).
        _log.warning("%d of %d scored rows: base + contributions differ from the published logit by more "
                     "than %.0e (max %.2e)", failures, len(residual), ADDITIVITY_TOLERANCE, np.abs(residual).max())
    gsum = contrib[:, :-1] @ group_matrix()

    n = len(frame)
    out = pd.DataFrame({"student_key": frame["student_key"].to_numpy()})
    out["scored"] = ok
    out["no_score_reason"] = pd.Series(reason, dtype=object).replace("", None).to_numpy()
    full = lambda a, fill: _scatter(ok, a, n, fill)  # noqa: E731
    out["risk_score"] = full(score, np.nan)
    out["risk_group"] = full(group, None)
    out["raw_margin"] = full(margin, np.nan)
    out["base_value"] = full(contrib[:, -1], np.nan)
    for i, col in enumerate(SNAPSHOT_COLUMNS.contributions.values()):
        out[col] = full(contrib[:, i], np.nan)
    for j, col in enumerate(SNAPSHOT_COLUMNS.group_contributions.values()):
        out[col] = full(gsum[:, j], np.nan)

    # Reasons for lists and downloads, column-wise; the explanation endpoint re-reads every contribution.
    th = np.full(n, None, dtype=object)
    en = np.full(n, None, dtype=object)
    th[ok], en[ok] = render_reasons(contrib[:, :-1] @ group_matrix(for_reasons=True), cfg.top_reasons)
    for row in np.flatnonzero(~ok):
        code = reason[row]
        en[row], th[row] = NO_SCORE_REASONS[code]
    out["reasons_th"] = th
    out["reasons_en"] = en
    return out


def explanation_summary(model: RiskModel, scored: pd.DataFrame) -> ExplanationSummary:
    """What the manifest records about a round's explanations: their scale, the base, and the
    additivity check recomputed from the columns as written."""
    from serving.snapshot import ExplanationSummary

    scale = published_scale(model)
    ok = scored["scored"].to_numpy(dtype=bool)
    phi = scored.loc[ok, list(SNAPSHOT_COLUMNS.contributions.values())].to_numpy(dtype=np.float64)
    base = scored.loc[ok, "base_value"].to_numpy(dtype=np.float64)
    residual = phi.sum(axis=1) + base - published_logit(scored.loc[ok, "risk_score"].to_numpy(dtype=np.float64))
    # The base is one number per round (every row shares the booster's expected value); a round with
    # nobody scored reports the model's own base.
    if len(base):
        base_logit = float(base[0])
    else:
        alone = np.zeros((1, len(model.features_.names) + 1))
        alone[0, -1] = shap_tables(model).base_value
        base_logit = float(to_published_scale(model, alone, model.risk_score_from_margin(alone.sum(axis=1)))[0][0, -1])
    return ExplanationSummary(
        calibration=scale.method, slope=scale.slope, intercept=scale.intercept, base_logit=base_logit,
        base_probability=float(1.0 / (1.0 + np.exp(-base_logit))), tolerance=ADDITIVITY_TOLERANCE,
        max_additivity_error=float(np.abs(residual).max()) if len(residual) else 0.0,
        additivity_failures=int((np.abs(residual) > ADDITIVITY_TOLERANCE).sum()), material_odds=MATERIAL_ODDS,
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
    population_caveat: dict[str, str] | None = None  # {en, th} when the census was late


def score_round(
    home: EwsHome, scoring_round: ScoringRound | str, loaded: VersionedModel, cfg: ScoreConfig | None = None,
    cal: SchoolCalendar | None = None, do_publish: bool = True,
) -> RoundSummary:
    """Score one round with a loaded registered version, write its snapshot and (by default) publish it.

    `scoring_round` is a `ScoringRound` on serving's own path (the CLI parses it); a string from a caller
    outside serving is parsed once here."""
    r = as_round(scoring_round)
    cfg = cfg or ScoreConfig()
    cal = cal or home.calendar
    t0 = time.perf_counter()
    frame, fingerprint, population = read_round_inputs(home, r, cal)
    t1 = time.perf_counter()
    scored = score_frame(loaded.model, frame, cfg)
    t2 = time.perf_counter()
    table = build_snapshot_table(frame, scored)
    manifest = SnapshotManifest(
        round=r, as_of=cal.as_of(r), model=model_lineage(loaded), thresholds=model_thresholds(loaded), calendar=cal,
        config=cfg, delivery_fingerprint=fingerprint, features=list(FEATURE_NAMES), feature_groups=list(GROUP_NAMES),
        no_score_reasons={k: {"en": v[0], "th": v[1]} for k, v in NO_SCORE_REASONS.items()}, columns=SNAPSHOT_COLUMNS,
        explanation=explanation_summary(loaded.model, scored),
        population=population,
    )
    ref = write_snapshot(home, manifest, table)
    if do_publish:
        publish(home, ref)
    t3 = time.perf_counter()
    groups = scored["risk_group"].value_counts().to_dict()
    return RoundSummary(
        round_id=r.round_id, snapshot_hash=ref.hash, folder=str(ref.folder), students=len(frame),
        scored=int(scored["scored"].sum()), no_score=int((~scored["scored"]).sum()),
        groups={g: int(groups.get(g, 0)) for g in ("problem", "at_risk", "normal")},
        model_version=str(loaded.lineage.version), published=do_publish, population_caveat=population.caveat(),
        seconds={"features": round(t1 - t0, 2), "score_explain": round(t2 - t1, 2), "write": round(t3 - t2, 2)},
    )


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
