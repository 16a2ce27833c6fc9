"""Scoring rounds: features -> calibrated risk score -> risk group -> SHAP reasons -> snapshot.

`score_round` is the whole of `ews score --round R`; `due_rounds` / `score_due` are `ews score
--due`. The steps are small functions so the service (ad-hoc scoring, audit replay) reuses them.

Too little data: a student enrolled at the round with no attendance month, no final grades, no
CCT or care screening known by the as-of date, *and* no earlier census (a newcomer about whom the
system knows only this census row) gets no score, with that reason. The model would only echo
grade and school for such a child; a school should meet the child instead of reading a guess.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from features.calendar import SchoolCalendar, parse_round
from features.home import EwsHome
from features.pointintime.spec import BY_NAME, FEATURE_NAMES
from serving.model import shap_tables
from serving.reasons import GROUP_NAMES, group_matrix, top_reasons
from serving.snapshot import SnapshotRef, publish, snapshots_of, write_snapshot

if TYPE_CHECKING:
    from training.model import RiskModel
    from training.registry import VersionedModel
    from training.version import ModelVersion

SCHEMA_VERSION = 1
NO_SCORE_REASONS: dict[str, tuple[str, str]] = {
    "no_history": (
        "No attendance, grades or screening known and no earlier census: too little data to score",
        "ยังไม่มีข้อมูลการมาเรียน ผลการเรียน หรือผลคัดกรอง และไม่เคยปรากฏในข้อมูลครั้งก่อน: ข้อมูลไม่พอสำหรับประเมิน",
    ),
}


class ScoreConfig(BaseModel):
    """How a round is scored. Loaded at the entry point; recorded in the snapshot manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = SCHEMA_VERSION
    batch_rows: int = Field(200_000, ge=1000, description="Rows explained per batch (bounds memory: ~0.6 KB per row).")
    top_reasons: int = Field(3, ge=1, le=9, description="Reasons kept per student for lists and downloads.")
    additivity_tolerance: float = Field(1e-6, gt=0, description="Max |sum of contributions + base - raw margin| accepted.")


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


def placement_sql(census: dt.date, as_of: dt.date) -> str:
    """Room and the area of the school (tambon -> amphoe -> province) for each enrolled student."""
    return f"""
        WITH pop AS (
            SELECT student_key, room FROM (
                SELECT c.student_key, c.room, row_number() OVER (PARTITION BY c.student_key
                    ORDER BY c.known_at DESC, c.delivery_id DESC, c.source_line DESC) AS rn
                FROM wh.linked_dmc_census c
                WHERE c.student_key IS NOT NULL AND c.census_date = DATE '{census}' AND c.known_at <= DATE '{as_of}'
            ) WHERE rn = 1
        )
        SELECT student_key, room FROM pop
    """


def school_areas_sql(as_of: dt.date) -> str:
    return f"""
        WITH s AS (
            SELECT * FROM (SELECT school_code, school_name, tambon_code, row_number() OVER (
                PARTITION BY school_code ORDER BY known_at DESC, delivery_id DESC) AS rn
                FROM wh.src_schools WHERE known_at <= DATE '{as_of}') WHERE rn = 1
        ), a AS (
            SELECT * FROM (SELECT tambon_code, tambon_name, amphoe_code, amphoe_name, province_code, province_name,
                row_number() OVER (PARTITION BY tambon_code ORDER BY known_at DESC, delivery_id DESC) AS rn
                FROM wh.src_areas WHERE known_at <= DATE '{as_of}') WHERE rn = 1
        )
        SELECT s.school_code, s.school_name, s.tambon_code, a.tambon_name, a.amphoe_code, a.amphoe_name,
               a.province_code, a.province_name
        FROM s LEFT JOIN a USING (tambon_code)
    """


def read_round_inputs(home: EwsHome, round_id: str, cal: SchoolCalendar) -> tuple[pd.DataFrame, str]:
    """The round's feature table joined with room and school area, and the delivery fingerprint."""
    from features.pointintime.build import build_features
    from features.pointintime.pipeline import connect_warehouse, delivery_fingerprint

    r = parse_round(round_id)
    as_of = cal.as_of(round_id)
    census = cal.census_date(r.academic_year, r.term)
    con = connect_warehouse(home)
    try:
        feats = build_features(con, cal, r).to_pandas()
        rooms = con.execute(placement_sql(census, as_of)).fetch_df()
        schools = con.execute(school_areas_sql(as_of)).fetch_df()
        fingerprint = delivery_fingerprint(con, as_of)
    finally:
        con.close()
    frame = feats.merge(rooms, on="student_key", how="left").merge(schools, on="school_code", how="left")
    return frame.sort_values("student_key", kind="stable").reset_index(drop=True), fingerprint


def explain_rows(model: RiskModel, x: np.ndarray, batch_rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(raw margin, contributions incl. base column) for every row of the encoded matrix `x`, in batches."""
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
    """Score, group and explain every eligible row of a feature frame; the others get a reason."""
    reason = eligibility(frame)
    ok = reason == ""
    x = model.encode(frame.loc[ok])
    margin, contrib = explain_rows(model, x, cfg.batch_rows)
    err = np.abs(contrib.sum(axis=1) - margin).max() if len(margin) else 0.0
    if err > cfg.additivity_tolerance:
        raise RuntimeError(f"SHAP contributions do not add up to the model output (max error {err:.2e})")
    score = model.risk_score_from_margin(margin)
    group = np.asarray(model.thresholds_.assign(score), dtype=object)
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
    for i, f in enumerate(FEATURE_NAMES):
        out[f"phi__{f}"] = full(contrib[:, i], np.nan)
    for j, g in enumerate(GROUP_NAMES):
        out[f"grp__{g}"] = full(gsum[:, j], np.nan)

    # Reasons for lists and downloads; the explanation endpoint re-reads every contribution.
    th = np.full(n, None, dtype=object)
    en = np.full(n, None, dtype=object)
    greason = contrib[:, :-1] @ group_matrix(for_reasons=True)
    values = frame.loc[ok, list(FEATURE_NAMES)].to_dict("records")
    rows = np.flatnonzero(ok)
    for k, (row, vals) in enumerate(zip(rows, values, strict=True)):
        rs = top_reasons(contrib[k, :-1], greason[k], vals, cfg.top_reasons)
        th[row] = " | ".join(r["th"] for r in rs)
        en[row] = " | ".join(r["en"] for r in rs)
    for row in np.flatnonzero(~ok):
        code = reason[row]
        en[row], th[row] = NO_SCORE_REASONS[code]
    out["reasons_th"] = th
    out["reasons_en"] = en
    return out


def _scatter(mask: np.ndarray, values: np.ndarray, n: int, fill: Any) -> np.ndarray:
    out = np.full(n, fill, dtype=values.dtype if fill is not None else object)
    out[mask] = values
    return out


PLACEMENT_COLUMNS = (
    "student_key", "round_id", "as_of", "school_code", "school_name", "grade", "room",
    "tambon_code", "tambon_name", "amphoe_code", "amphoe_name", "province_code", "province_name",
)


def build_snapshot_table(frame: pd.DataFrame, scored: pd.DataFrame) -> pa.Table:
    placement = frame[list(PLACEMENT_COLUMNS)].copy()
    placement["grade"] = placement["grade"].astype("string")
    feats = frame[list(FEATURE_NAMES)].copy()
    for f in FEATURE_NAMES:
        # DuckDB hands some numbers over as Decimal; the model read them as float64, so store that.
        if BY_NAME[f].dtype in ("float", "int") and feats[f].dtype == object:
            feats[f] = pd.to_numeric(feats[f].astype("Float64"), errors="coerce")
    feats = feats.add_prefix("x__")
    table = pd.concat([placement.reset_index(drop=True), scored.drop(columns="student_key").reset_index(drop=True),
                       feats.reset_index(drop=True)], axis=1)
    return pa.Table.from_pandas(table, preserve_index=False)


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


def score_round(
    home: EwsHome, round_id: str, loaded: VersionedModel, cfg: ScoreConfig | None = None,
    cal: SchoolCalendar | None = None, do_publish: bool = True,
) -> RoundSummary:
    """Score one round with a loaded registered version, write its snapshot and (by default) publish it."""
    cfg = cfg or ScoreConfig()
    cal = cal or SchoolCalendar()
    t0 = time.perf_counter()
    frame, fingerprint = read_round_inputs(home, round_id, cal)
    t1 = time.perf_counter()
    scored = score_frame(loaded.model, frame, cfg)
    t2 = time.perf_counter()
    table = build_snapshot_table(frame, scored)
    manifest = {
        "schema_version": SCHEMA_VERSION, "round_id": round_id, "as_of": cal.as_of(round_id).isoformat(),
        **loaded.lineage.manifest_fields(), "delivery_fingerprint": fingerprint,
        "config": cfg.model_dump(mode="json"), "calendar": cal.model_dump(mode="json"),
        "thresholds": loaded.model.thresholds_.to_dict(), "features": list(FEATURE_NAMES), "feature_groups": list(GROUP_NAMES),
        "no_score_reasons": {k: {"en": v[0], "th": v[1]} for k, v in NO_SCORE_REASONS.items()},
    }
    ref = write_snapshot(home, round_id, manifest, table)
    if do_publish:
        publish(home, ref)
    t3 = time.perf_counter()
    groups = scored["risk_group"].value_counts().to_dict()
    return RoundSummary(
        round_id=round_id, snapshot_hash=ref.hash, folder=str(ref.folder), students=len(frame),
        scored=int(scored["scored"].sum()), no_score=int((~scored["scored"]).sum()),
        groups={g: int(groups.get(g, 0)) for g in ("problem", "at_risk", "normal")},
        model_version=str(loaded.lineage.version), published=do_publish,
        seconds={"features": round(t1 - t0, 2), "score_explain": round(t2 - t1, 2), "write": round(t3 - t2, 2)},
    )


def due_rounds(home: EwsHome, model_version: ModelVersion, today: dt.date, cal: SchoolCalendar | None = None) -> list[str]:
    """Rounds whose as-of date has passed, whose census delivery was known by the as-of date,
    and that have no snapshot scored by `model_version` yet."""
    from features.pointintime.pipeline import connect_warehouse

    cal = cal or SchoolCalendar()
    con = connect_warehouse(home)
    try:
        rows = con.execute("SELECT census_date, min(known_at) FROM wh.src_dmc_census GROUP BY 1").fetchall()
    finally:
        con.close()
    known: dict[dt.date, dt.date] = {c: k for c, k in rows}
    years = sorted({c.year for c in known})
    if not years:
        return []
    out = []
    for r in cal.rounds(years[0] + 543 - 1, years[-1] + 543):
        as_of = cal.as_of(r.round_id)
        census = cal.census_date(r.academic_year, r.term)
        if as_of > today or census not in known or known[census] > as_of:
            continue
        if any(s.manifest.get("model_version") == str(model_version) for s in snapshots_of(home, r.round_id)):
            continue
        out.append(r.round_id)
    return out


def score_due(home: EwsHome, loaded: VersionedModel, today: dt.date, cfg: ScoreConfig | None = None) -> list[RoundSummary]:
    return [score_round(home, rid, loaded, cfg) for rid in due_rounds(home, loaded.lineage.version, today)]
