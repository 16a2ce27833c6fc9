"""One monitoring report per published round: gather, judge, give a verdict, write JSON and HTML.

`monitor_round(home, scoring_round)` reads the round's published snapshot (serving: its typed manifest
and the columns of each role), the training set and model version that scored it (training), the
warehouse (features), runs the quality, drift and outcome checks, and returns a
`MonitoringReport`. `write_report` / `read_report` are the report's one save and one load: under
`home.monitoring_report(scoring_round, fmt)` as report.json and report.html (plots embedded), plain files
the service can hand to analysts without importing this package. Reports hold aggregates only: no
student_key, no name, no ID.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from features.calendar import SchoolCalendar, ScoringRound, parse_round
from features.home import EwsHome
from features.pointintime.spec import BY_NAME, FEATURE_NAMES, GROUPS
from monitoring.config import MonitorConfig
from monitoring.drift import DriftResult, attribution_drift, feature_drift, reference_rounds, score_drift
from monitoring.outcomes import Outcomes, judge_outcomes
from monitoring.quality import Check, population_checks, quality_checks
from monitoring.uplift import UpliftView
from training.version import ModelVersion

if TYPE_CHECKING:
    from serving.snapshot import SnapshotRef
    from training.model import RiskModel

# 3: `reference_source` and `drift_note` (why drift was not judged); older reports read with their defaults.
# 4: `uplift` (the analysts' uplift view, with --actions; also written alone as uplift.json).
SCHEMA_VERSION = 4
# Which delivered source a feature group comes from: a drifted group points at whom to ask first.
GROUP_SOURCE: dict[str, str] = {
    "attendance": "attendance", "academic": "grades", "poverty": "cct_screening", "care": "care_screening",
    "welfare": "welfare_links", "mobility": "dmc_census", "transition": "dmc_census", "school": "schools / areas",
    "student": "dmc_census",
}


class Breach(BaseModel):
    model_config = ConfigDict(extra="forbid")
    area: str  # quality | feature_drift | score_drift | attribution_drift | outcomes | fairness
    what: str
    statistic: str
    value: float | None
    threshold: float | None
    message: str


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alert: bool
    retrain_recommended: bool
    summary: str
    reasons: list[str]
    breaches: list[Breach]


class MonitoringReport(BaseModel):
    """One round's monitoring report. Its JSON also carries `round_id` (for readers that do not
    parse rounds); schema 1 had only that, and is read by deriving `round` from it."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    round: ScoringRound
    as_of: dt.date
    snapshot_hash: str
    model_version: str
    trainset: str
    reference_rounds: list[str]
    reference_rows: int
    reference_source: str = ""  # where the fitted rounds came from (the version's logged split)
    drift_note: str | None = None  # set when drift was not judged, saying why
    current_rows: int
    scored_rows: int
    config: MonitorConfig
    quality: list[Check]
    drift: list[DriftResult]
    outcomes: Outcomes
    verdict: Verdict
    generated_at: str
    uplift: UpliftView | None = None  # with an assignment (--actions): who is expected to benefit

    @computed_field  # type: ignore[prop-decorator]
    @property
    def round_id(self) -> str:
        return self.round.round_id

    @model_validator(mode="before")
    @classmethod
    def _round_from_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and "round_id" in data:
            data = dict(data)
            rid = data.pop("round_id")
            data.setdefault("round", parse_round(str(rid)))
        return data

    def breached(self, statistic: str | None = None, column: str | None = None) -> list[Breach]:
        return [b for b in self.verdict.breaches
                if (statistic is None or b.statistic == statistic) and (column is None or b.what.endswith(column))]


# ------------------------------------------------------------------------------------------------
# gathering inputs


def _card_metrics(home: EwsHome, run_id: str) -> dict[str, float]:
    """The validation (test-fold) metrics logged with the model version's training run.

    training.registry logs them as the run artefact metrics.json; there is no public accessor yet."""
    from training.registry import client_for

    try:
        path = client_for(home).download_artifacts(run_id, "metrics.json")
        return {k: float(v) for k, v in json.loads(Path(path).read_text(encoding="utf-8")).items()
                if isinstance(v, (int, float))}
    except Exception:  # noqa: BLE001 - a missing card leaves outcomes uncompared, not unreported
        return {}


def fitted_rounds(home: EwsHome, run_id: str, trainset_rounds: list[str]) -> tuple[list[str], str]:
    """The rounds a version was fitted on, and where that list came from.

    Fitted = the training fold (the booster), the calibration fold (early stopping and the Platt
    calibrator) and the refit-only rounds (the cross-fitted boosters), as the version's training run
    logged them (`split.train`, `split.calibration`, `split.refit_only`).
    The test fold is left out: the model never learned from it. A run that logged no split (or a
    registry that cannot be read) falls back to every round of its training set, and says so."""
    from training.registry import client_for

    try:
        params = client_for(home).get_run(run_id).data.params
        rounds = [x for k in ("split.train", "split.calibration", "split.refit_only") for x in str(params.get(k, "")).split(",") if x]
    except Exception:  # noqa: BLE001 - an unreadable run falls back to the training set, and says so
        rounds = []
    if rounds:
        return sorted(set(rounds)), f"training and calibration folds of run {run_id}"
    return sorted(set(trainset_rounds)), f"every round of the training set (run {run_id} logged no split)"


def _reference_contributions(home: EwsHome, model: RiskModel, version: ModelVersion, ref_ids: list[str],
                             rows: pd.DataFrame) -> np.ndarray:
    """Group contributions of the reference rows: the published snapshot of the reference round when
    the reference is one round the same model version scored, else the model's own TreeSHAP
    (LightGBM pred_contrib)."""
    from serving.model import to_published_scale
    from serving.reasons import group_matrix
    from serving.snapshot import published

    # A snapshot holds one round: with several reference rounds its rows would not be the reference's.
    snap = published(home, parse_round(ref_ids[0])) if len(ref_ids) == 1 else None
    if snap is not None and snap.manifest.model_version == str(version):
        cols = snap.manifest.columns.columns("group_contribution")
        t = snap.students(columns=["scored", *cols]).to_pandas()
        return t.loc[t["scored"], cols].to_numpy(dtype=float)
    raw = model.contributions(rows)  # on the scale snapshots store: the published score's logit
    contrib = to_published_scale(model, raw, model.risk_score_from_margin(raw.sum(axis=1)))[0][:, : len(model.features_.names)]
    return contrib @ group_matrix()


def monitor_round(home: EwsHome, scoring_round: ScoringRound | str, cfg: MonitorConfig | None = None,
                  cal: SchoolCalendar | None = None, actions: bool = False,
                  design: str = "holdout by pupil") -> MonitoringReport:
    """Every check for one published round, and the verdict. `scoring_round` is parsed by the CLI; a string
    from another caller is parsed once here. `actions`: use the schools' assignment the warehouse
    holds (ingested from assignment.csv, actions.csv: monitoring/effects.py); then outcomes are judged on the untreated
    pupils and the effect of acting is estimated from the holdout (`design` says how it was drawn)."""
    from features.pointintime.labels import horizon_census, labels_sql
    from features.pointintime.pipeline import connect_warehouse, latest_delivery
    from monitoring.effects import ASSIGNMENT_SOURCE
    from serving.scoring import eligibility
    from serving.snapshot import as_round, published
    from training.data import load_trainset
    from training.registry import load_model

    cfg = cfg or MonitorConfig()
    cal = cal or home.calendar
    r = as_round(scoring_round)
    snap = published(home, r)
    if snap is None:
        raise FileNotFoundError(f"round {r} is not published in {home.rounds_dir}: run `ews score --round {r}`")
    manifest = snap.manifest
    schema = manifest.columns
    students = snap.students().to_pandas()
    scored = students["scored"].to_numpy(dtype=bool)
    current = students[schema.columns("model_input")].copy()
    current.columns = list(schema.model_inputs)
    loaded = load_model(home, version=ModelVersion.parse(manifest.model_version))
    model = loaded.model
    ts = load_trainset(home, manifest.model.trainset_name or loaded.lineage.trainset_name)
    # The reference: rounds this version was fitted on, strictly before the monitored round.
    fitted, source = fitted_rounds(home, manifest.model.run_id or loaded.lineage.run_id,
                                   sorted(set(ts.frame["round_id"].astype(str))))
    ref_ids = reference_rounds(fitted, r, cfg.drift.reference)
    reference = ts.frame[ts.frame["round_id"].astype(str).isin(ref_ids)].reset_index(drop=True)

    # drift: features on every row; scores and attributions on rows that get a score
    drift: list[DriftResult] = []
    drift_note: str | None = None
    if not ref_ids:
        drift_note = (f"no round model v{manifest.model_version} was fitted on comes before {r} "
                      f"(fitted: {', '.join(fitted) or 'none'}), so there is nothing comparable to measure drift against")
    elif min(len(reference), len(current)) < cfg.drift.min_rows:
        drift_note = (f"too few rows to judge drift ({len(reference):,} in the reference {', '.join(ref_ids)}, "
                      f"{len(current):,} in the round; at least {cfg.drift.min_rows:,} on each side)")
    else:
        drift += feature_drift(reference, current, cfg.drift)
        ref_ok = eligibility(reference) == ""
        ref_scored = reference[ref_ok]
        ref_score = model.risk_score_from_margin(model.raw_margin(ref_scored))
        drift += score_drift(ref_score, students.loc[scored, "risk_score"].to_numpy(dtype=float),
                             # groups are each round's shares: the reference's rounds are cut the same way
                             np.asarray(model.thresholds_.assign_by_round(ref_score, ref_scored["round_id"].astype(str)
                                                                           .to_numpy()), dtype=object),
                             students.loc[scored, "risk_group"].to_numpy(dtype=object), cfg.drift)
        ref_contrib = _reference_contributions(home, model, loaded.lineage.version, ref_ids, ref_scored)
        cur_contrib = students.loc[scored, schema.columns("group_contribution")].to_numpy(dtype=float)
        drift += attribution_drift(ref_contrib, cur_contrib, cfg.drift.attribution_thresholds)

    con = connect_warehouse(home)
    try:
        quality = quality_checks(con, cal, manifest.as_of, cfg.quality) + population_checks(r.round_id, manifest.population)
        cutoff = latest_delivery(con)
        labels = con.execute(labels_sql(cal, r, cutoff)).fetch_df()
        assignment = None
        if actions:
            from monitoring.effects import read_assignment

            assignment = read_assignment(con, r.academic_year, r.term)
    finally:
        con.close()
    outcomes = _outcomes(home, snap, students[scored], labels, cfg, horizon_census(cal, r, "next_census"),
                         assignment=assignment, design=design, source=ASSIGNMENT_SOURCE if actions else "")
    verdict = decide(quality, drift, outcomes, cfg, drift_note=drift_note)
    uplift = None
    if assignment is not None:
        uplift = _uplift(snap, students[scored], labels, assignment, cfg, design, ASSIGNMENT_SOURCE)
    return MonitoringReport(
        round=r, as_of=manifest.as_of, snapshot_hash=snap.hash, model_version=manifest.model_version,
        trainset=ts.name, reference_rounds=ref_ids, reference_rows=len(reference), reference_source=source,
        drift_note=drift_note, current_rows=len(students),
        scored_rows=int(scored.sum()), config=cfg, quality=quality, drift=drift, outcomes=outcomes, verdict=verdict,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), uplift=uplift,
    )


def _uplift(snap: SnapshotRef, students: pd.DataFrame, labels: pd.DataFrame, assignment: pd.DataFrame,
            cfg: MonitorConfig, design: str, source: str) -> UpliftView:
    """The analysts' uplift view of the round (monitoring/uplift.py) from its matured, eligible pupils,
    cut by what the school saw (the snapshot's model inputs and risk group)."""
    from monitoring.uplift import uplift_view

    x = snap.manifest.columns.model_inputs
    rows = students[["student_key", "school_code", "risk_score", "risk_group"]].assign(
        extremely_poor=students[x["extremely_poor"]].to_numpy(), att_below_cct_85=students[x["att_below_cct_85"]].to_numpy())
    rows = rows.merge(labels[["student_key", "dropout"]], on="student_key", how="inner")
    rows = rows[rows["dropout"].notna()].merge(assignment[["student_key", "arm"]], on="student_key", how="inner")
    return uplift_view(rows, cfg.uplift, snap.manifest.round_id,
                       cfg.outcomes.observed_to_expected_confidence, design, source)


def _outcomes(home: EwsHome, snap: SnapshotRef, students: pd.DataFrame, labels: pd.DataFrame,
              cfg: MonitorConfig, horizon: dt.date, assignment: pd.DataFrame | None = None,
              design: str = "holdout by pupil", source: str = "") -> Outcomes:
    joined = students.merge(labels[["student_key", "dropout"]], on="student_key", how="left")
    known = joined["dropout"].notna()
    if not known.any():
        return Outcomes(matured=False, note=f"labels not mature yet: they need the census of {horizon}")
    j = joined[known]
    effects = None
    if assignment is not None:
        from monitoring.effects import with_actions

        # the served pupils' outcomes are the actions' doing: the model is judged on the others
        j, effects = with_actions(j, assignment, cfg.outcomes.observed_to_expected_confidence, design, source)
    flagged = j["risk_group"].isin(["problem", "at_risk"]).to_numpy()
    # The fairness attributes as the snapshot stored them (its group-attribute role), audited for
    # the attributes the monitoring config names (by default the release gate's).
    groups = snap.group_attributes(j)
    absent = [a for a in cfg.outcomes.fairness_attributes if a not in groups.columns]
    if absent:
        raise ValueError(f"{snap.folder}: the snapshot stores no fairness attribute {', '.join(absent)} "
                         f"(it has {', '.join(groups.columns) or 'none'})")
    out = judge_outcomes(j["dropout"].to_numpy(dtype=float), j["risk_score"].to_numpy(dtype=float),
                         j["school_code"].astype(str).to_numpy(), flagged, groups,
                         _card_metrics(home, snap.manifest.model.run_id), cfg.outcomes)
    if effects is not None:
        note = (f"judged on the {effects.judged_rows:,} untreated pupils; {effects.left_out_rows:,} served or acted on "
                "are left out (their outcome is the actions' doing)")
        out = out.model_copy(update={"effects": effects, "note": "; ".join(x for x in (out.note, note) if x)})
    return out


# ------------------------------------------------------------------------------------------------
# the verdict


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def decide(quality: list[Check], drift: list[DriftResult], outcomes: Outcomes, cfg: MonitorConfig,
           drift_note: str | None = None) -> Verdict:
    """Breaches (values at or past a `drift` line), whether they call for retraining, and why.

    `drift_note` says why drift was not judged (no fitted round before the monitored one, too few
    rows): then a calm verdict says so instead of "keep the model", which nothing was measured for."""
    breaches: list[Breach] = []
    for q in quality:
        if q.level == "drift":
            col = f".{q.column}" if q.column else ""
            breaches.append(Breach(area="quality", what=f"{q.source}{col} {q.scope}", statistic=q.check, value=q.value,
                                   threshold=q.drift, message=f"{q.check} of {q.source}{col} ({q.scope}) = {q.value:.4g} "
                                                              f"≥ {q.drift:g}: {q.note}"))
    area = {"feature": "feature_drift", "missing": "feature_drift", "score": "score_drift", "risk_groups": "score_drift",
            "attribution": "attribution_drift"}
    for d in drift:
        if d.drifted:
            shift = d.details.get("largest_shift")
            breaches.append(Breach(area=area[d.what], what=f"{d.what} {d.column}", statistic=d.statistic, value=d.score,
                                   threshold=d.drift, message=f"{d.what} {d.column}: {d.statistic} {_fmt(d.score)} ≥ {d.drift:g}"
                                                              + (f" (largest shift: {shift})" if shift else "")))
    for c in outcomes.checks:
        if c.level == "drift":
            a = "fairness" if c.check.startswith("fairness.") else "outcomes"
            breaches.append(Breach(area=a, what=c.check, statistic=c.check.split(".")[-1], value=c.value, threshold=c.drift,
                                   message=f"realised {c.check} {_fmt(c.value)} (model card {_fmt(c.card)}): {c.note}"))
    drifted_features = {b.what.split(" ", 1)[1] for b in breaches if b.area == "feature_drift"}
    triggers = set()
    for b in breaches:
        if b.area == "feature_drift" and len(drifted_features) < cfg.verdict.min_drifted_features:
            continue
        if b.area in cfg.verdict.retrain_on:
            triggers.add(b.area)
    reasons = [b.message for b in breaches]
    if drifted_features:
        groups = sorted({BY_NAME[f].group for f in drifted_features if f in BY_NAME})
        sources = sorted({GROUP_SOURCE[g] for g in groups})
        reasons.append(f"Drifted features come from {', '.join(sources)}: confirm with the source that the change is "
                       "real (not a changed column or unit) before retraining on it.")
    if any(b.area == "quality" for b in breaches):
        reasons.append("Data quality is breached: fix or re-deliver the source first; retraining on broken data learns the break.")
    retrain = bool(triggers)
    if retrain:
        summary = "Retraining recommended: " + ", ".join(sorted(t.replace("_", " ") for t in triggers)) + "."
    elif breaches:
        summary = "Alert, no retraining: only data quality is breached."
    elif drift_note:
        summary = "Drift not judged (the reasons say why); no other threshold breached."
    else:
        summary = "No threshold breached: keep the model."
    if drift_note:
        reasons.append(f"Drift not judged: {drift_note}.")
    if not outcomes.matured:
        reasons.append(f"Outcomes not judged: {outcomes.note}.")
    if outcomes.effects is not None:
        from monitoring.effects import describe

        reasons.append(describe(outcomes.effects))
    return Verdict(alert=bool(breaches), retrain_recommended=retrain, summary=summary, reasons=reasons, breaches=breaches)


# ------------------------------------------------------------------------------------------------
# writing


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(home: EwsHome, report: MonitoringReport) -> dict[str, Path]:
    """The report's one save: report.json and report.html at `home.monitoring_report` (each
    replaced atomically)."""
    from monitoring.html import render_html

    paths = {"json": home.monitoring_report(report.round, "json"), "html": home.monitoring_report(report.round, "html")}
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(paths["json"], report.model_dump_json(indent=2))
    _atomic_write(paths["html"], render_html(report))
    # The uplift view alone, for the service (analysts and auditors): it matches this report, so a
    # report monitored without the assignment removes an older one.
    uplift = home.monitoring_uplift(report.round)
    if report.uplift is not None:
        _atomic_write(uplift, report.uplift.model_dump_json(indent=2))
        paths["uplift"] = uplift
    else:
        uplift.unlink(missing_ok=True)
    return paths


def read_report(home: EwsHome, scoring_round: ScoringRound) -> MonitoringReport:
    """The report's one load (any schema version), naming the file when it is not a report."""
    path = home.monitoring_report(scoring_round, "json")
    try:
        return MonitoringReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not a monitoring report: {exc}") from None


def group_label(g: str) -> str:
    return f"{GROUPS[g][0]} ({GROUPS[g][1]})" if g in GROUPS else g
