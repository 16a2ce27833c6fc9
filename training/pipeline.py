"""One training run in memory: split by time, fit, calibrate, evaluate, compare, audit.

No MLflow here (that is `training.registry`): this module turns a training set and a config into a
`TrainResult` — the fitted `RiskModel`, every metric under its stable name, the fairness table and
what the plots and the model card need. It is what tests and the benchmark call directly.

Headline metrics carry 95% intervals from a student-level bootstrap (training/bootstrap.py; all of
a student's rows are drawn together), every score evaluated on the SAME replicates, so differences
(LightGBM - logistic, LightGBM - grade x term lookup, the gaps to the full and the observable
ceiling) get paired intervals: `ci95_low.<name>` / `ci95_high.<name>` beside each `<name>`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.pointintime.spec import GROUP_COLUMNS
from features.pointintime.trainset import TrainsetManifest
from training.baselines import PROBABILISTIC, baseline_scores
from training.bootstrap import interval, student_weights
from training.config import TrainConfig
from training.data import Trainset, grade_band_of, round_type_of
from training.fairness import audit_table, flatten, gate_failures
from training.metrics import calibration_report, ceiling_and_gap, platt_replicates, rank_metrics, sliced_metrics, within_grade_rank_metrics
from training.model import RiskModel
from training.splits import TemporalSplit, round_dates, temporal_split


# Replicates of the student-level bootstrap behind every interval: 200 put each 2.5% tail on 5
# replicates; the intervals' own Monte Carlo error is then a few thousandths of an AUC.
BOOTSTRAP_REPLICATES = 200
# Headline ranking metrics that get intervals, and the baselines the model is compared with, paired.
INTERVAL_METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "within_grade_roc_auc", "within_grade_pr_auc")
COMPARED_BASELINES: tuple[str, ...] = ("logistic", "grade_term_lookup", "school_model")


@dataclass
class TrainResult:
    model: RiskModel
    split: TemporalSplit
    metrics: dict[str, float]
    fairness: pd.DataFrame
    fairness_failures: list[str]
    test: pd.DataFrame  # test rows: keys, slices, label, raw/calibrated score, baselines, p_true
    feature_importance: dict[str, float]  # mean |SHAP| summed per feature group, on a test sample
    trainset_name: str
    trainset_manifest: TrainsetManifest
    timings: dict[str, float] = field(default_factory=dict)
    best_iteration: int = 0  # trees of the published booster
    # How the published booster was fitted: refit mode, the early-stopped tree count (stage A), the
    # published booster's, and the cross-fitting groups (0 without cross-fitting).
    refit: dict[str, int | str] = field(default_factory=dict)
    fold_rows: dict[str, int] = field(default_factory=dict)
    # The test fold's first five rows as loaded (features unencoded): the MLflow input example, kept
    # here so registration does not reload a training set of millions of rows for five of them.
    example_rows: pd.DataFrame | None = None


def split_trainset(ts: Trainset, cfg: TrainConfig) -> tuple[TemporalSplit, dict[str, pd.DataFrame]]:
    """The temporal split of a training set and its three folds of rows."""
    horizon = ts.manifest.config.horizon
    rounds = sorted(set(ts.frame["round_id"].astype(str)))
    known = {r.round_id: r.label_known_on for r in ts.manifest.rounds}  # the warehouse's actual dates
    dated = [{"round_id": r, "label_known_on": known.get(r)} for r in rounds]
    split = temporal_split(round_dates(dated, horizon, cfg.split.label_delay_days), cfg.split)
    rid = ts.frame["round_id"].astype(str)
    folds = {name: ts.frame[rid.isin(getattr(split, name))] for name in ("train", "calibration", "test", "refit_only")}
    for name, f in folds.items():
        if name != "refit_only" and f["label"].nunique() < 2:
            raise ValueError(f"the {name} fold ({', '.join(getattr(split, name))}) has only one label value")
    return split, folds


def _group_frame(frame: pd.DataFrame, attributes: tuple[str, ...]) -> pd.DataFrame:
    cols = {a: frame[f"group_{a}"] for a in attributes if f"group_{a}" in frame.columns}
    return pd.DataFrame(cols, index=frame.index)


def group_importance(model: RiskModel, frame: pd.DataFrame, rows: int, seed: int) -> dict[str, float]:
    """Mean |SHAP| per feature group: each row's contributions summed within a group first, so
    correlated features of one group do not cancel or double-count."""
    from features.pointintime.spec import BY_NAME

    sample = frame.sample(n=min(rows, len(frame)), random_state=seed) if len(frame) > rows else frame
    names = model.features_.names
    contrib = model.contributions(sample)[:, : len(names)]
    per_group: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        g = BY_NAME[name].group
        per_group[g] = per_group.get(g, 0) + contrib[:, j]
    return dict(sorted(((g, float(np.abs(v).mean())) for g, v in per_group.items()), key=lambda kv: -kv[1]))


def _fit(folds: dict[str, pd.DataFrame], cfg: TrainConfig, monotone: bool | None = None) -> RiskModel:
    """`RiskModel.fit` on the three folds: booster on the training fold (early-stopped on the
    calibration fold; refitted on both under `model.refit = "crossfit"`), calibrator on the
    calibration fold (out-of-fold scores under cross-fitting), group cut-offs on the test fold. The
    refit-only rounds (labels known by the test fold's as-of, not by the calibration fold's) join the
    refitted boosters under cross-fitting."""
    train, calib, test = folds["train"], folds["calibration"], folds["test"]
    extra = folds.get("refit_only")
    return RiskModel.from_train_config(cfg, monotone).fit(
        train, train["label"].to_numpy(), calibration=(calib, calib["label"].to_numpy()),
        cutoffs=(test, test["label"].to_numpy()),
        refit_only=(extra, extra["label"].to_numpy()) if extra is not None and len(extra) else None,
    )


def learned_rows(folds: dict[str, pd.DataFrame], cfg: TrainConfig) -> pd.DataFrame:
    """The labelled rows the published booster learned from, which the baselines learn from too: a
    baseline fitted on less would flatter the model. Under the cross-fitted refit these are the
    training and calibration folds and the refit-only rounds; without it, the training fold alone."""
    if cfg.model.refit != "crossfit":
        return folds["train"]
    parts = [folds["train"], folds["calibration"]]
    if folds.get("refit_only") is not None and len(folds["refit_only"]):
        parts.append(folds["refit_only"])
    return pd.concat(parts, ignore_index=True)


def train_and_evaluate(ts: Trainset, cfg: TrainConfig, truth: pd.DataFrame | None = None) -> TrainResult:
    """Fit on the training fold, calibrate on the calibration fold, evaluate on the test fold.

    `truth` (student_key, round_id, p_true[, p_observable]) from the simulator adds ceiling_* and gap_*
    metrics (the full ceiling) and observable.ceiling_* / observable.gap_* (the observable one)."""
    t0 = time.perf_counter()
    split, folds = split_trainset(ts, cfg)
    timings: dict[str, float] = {"split": time.perf_counter() - t0}

    t = time.perf_counter()
    model = _fit(folds, cfg)
    timings["fit_and_calibrate"] = time.perf_counter() - t
    timings.update({f"fit.{k}": v for k, v in model.fit_seconds_.items()})

    test = folds["test"]
    y = test["label"].to_numpy(dtype=float)
    raw = model.raw_probability(test)
    score = model.calibrator_.transform(raw)

    t = time.perf_counter()
    school = test["school_code"].astype(str).to_numpy()
    grade = test["grade_level"].astype(str).to_numpy()
    slices = {"round_type": round_type_of(test["round_id"]).to_numpy(),
              "grade_band": grade_band_of(test["grade_level"]).to_numpy()}
    metrics = sliced_metrics(y, score, school, slices, cfg.capacities, grade=grade)
    for k, v in sliced_metrics(y, raw, school, {}, cfg.capacities).items():
        if k in ("roc_auc", "pr_auc", "brier", "ece"):
            metrics[f"uncalibrated.{k}"] = v
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    learned = learned_rows(folds, cfg)
    base = baseline_scores(test, learned, learned["label"].to_numpy(), cfg.model.seed, cfg.logistic_max_rows)
    for name, s in base.items():
        for k, v in sliced_metrics(y, s, school, slices, cfg.capacities, probabilistic=name in PROBABILISTIC,
                                   grade=grade).items():
            metrics[f"baselines.{name}.{k}"] = v
    metrics.update(versus_points(metrics))
    timings["baselines"] = time.perf_counter() - t
    if cfg.model.refit == "crossfit":
        metrics.update(refit_validation(model, folds["calibration"], cfg))

    # Calibration that can fail: O/E, slope and intercept with student-level intervals, overall and per
    # term, round type, grade band and fairness group; every interval of the run on one set of replicates.
    t = time.perf_counter()
    keys = test["student_key"].astype(str).to_numpy()
    replicates = student_weights(keys, cfg.intervals.n_boot, cfg.intervals.seed)
    groups = _group_frame(test, cfg.fairness.attributes)
    calib_slices = {"term": test["round_id"].astype(str).str.split("-").str[1].to_numpy(), **slices,
                    **{a: groups[a].astype("object").where(groups[a].notna(), "unknown").astype(str).to_numpy()
                       for a in groups.columns}}
    # The O/E intervals hold the calibration fold's noise too (Platt refitted on its own student-level
    # replicates): the level the calibrator learnt from one year is an estimate, not a fact. The
    # replicates refit on the raw scores the calibrator saw (out-of-fold under refit="crossfit").
    p_reps = None
    if model.calibrator_.method == "platt":
        calib = folds["calibration"]
        calib_w = student_weights(calib["student_key"].astype(str).to_numpy(), cfg.intervals.n_boot,
                                  cfg.intervals.seed + 1)
        p_reps = platt_replicates(calib["label"].to_numpy(dtype=float), model.calibration_raw_, calib_w, raw)
        del calib_w  # 200 x the calibration fold's rows (0.8 GB at 2M rows): not held through the report
    metrics.update(calibration_report(y, score, keys, calib_slices, level=cfg.intervals.level, weights=replicates,
                                      p_replicates=p_reps))
    del p_reps
    timings["calibration"] = time.perf_counter() - t

    round_ids = test["round_id"].astype(str).to_numpy()
    risk_group = model.thresholds_.assign_by_round(score, round_ids)
    frame = pd.DataFrame({
        "student_key": test["student_key"].to_numpy(), "round_id": round_ids,
        "school_code": school, "grade_level": grade, "round_type": slices["round_type"],
        "grade_band": slices["grade_band"],
        "label": y, "raw_score": raw, "risk_score": score, "risk_group": risk_group,
        **{f"baseline_{k}": v for k, v in base.items()},
        **{c: test[c].to_numpy() for c in GROUP_COLUMNS if c in test.columns},
    })
    if truth is not None:
        ceilings = [c for c in ("p_true", "p_observable") if c in truth.columns]
        frame = frame.merge(truth[["student_key", "round_id", *ceilings]], on=["student_key", "round_id"], how="left")
        have = frame["p_true"].notna().to_numpy()
        metrics["ceiling_rows_matched"] = float(have.mean())
        if have.any():
            sub = frame[have]
            sub_slices = {k: np.asarray(v)[have] for k, v in slices.items()}
            ceil = sliced_metrics(sub["label"].to_numpy(), sub["p_true"].to_numpy(), sub["school_code"].to_numpy(),
                                  sub_slices, cfg.capacities, grade=sub["grade_level"].to_numpy())
            model_same_rows = sliced_metrics(sub["label"].to_numpy(), sub["risk_score"].to_numpy(),
                                             sub["school_code"].to_numpy(), {}, cfg.capacities,
                                             grade=sub["grade_level"].to_numpy())
            metrics.update(ceiling_and_gap(model_same_rows, ceil))
            for k, v in ceil.items():
                if "." in k:
                    metrics[f"ceiling.{k}"] = v
            if "p_observable" in sub.columns and sub["p_observable"].notna().all():
                observable = sliced_metrics(sub["label"].to_numpy(), sub["p_observable"].to_numpy(),
                                            sub["school_code"].to_numpy(), {}, cfg.capacities,
                                            grade=sub["grade_level"].to_numpy())
                metrics.update({f"observable.{k}": v for k, v in ceiling_and_gap(model_same_rows, observable).items()})
    t = time.perf_counter()
    metrics.update(headline_intervals(frame, cfg.model.seed))
    timings["intervals"] = time.perf_counter() - t

    t = time.perf_counter()
    # The operating points as schools see them: each round's top shares (risk groups per round).
    flagged = risk_group != "normal"
    problem = risk_group == "problem"
    audit = {"score": score, "student_key": keys, "weights": replicates, "intervals": cfg.intervals}
    fair = pd.concat([audit_table(y, flagged, groups, cfg.fairness, "flagged", **audit),
                      audit_table(y, problem, groups, cfg.fairness, "problem", **audit)], ignore_index=True)
    failures = gate_failures(fair, cfg.fairness)
    metrics.update(flatten(fair))
    metrics["fairness_failures"] = float(len(failures))
    timings["fairness"] = time.perf_counter() - t

    t = time.perf_counter()
    importance = group_importance(model, test, cfg.shap_sample_rows, cfg.model.seed)
    timings["shap"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    published_trees = int(model.booster_.best_iteration or model.booster_.current_iteration())
    return TrainResult(
        model=model, split=split, metrics=metrics, fairness=fair, fairness_failures=failures, test=frame,
        feature_importance=importance, trainset_name=ts.name, trainset_manifest=ts.manifest, timings=timings,
        best_iteration=published_trees,
        fold_rows={k: len(v) for k, v in folds.items()}, example_rows=folds["test"].head(5).copy(),
        refit={"mode": cfg.model.refit, "stage_a_trees": model.stage_a_trees_,
               "published_trees": published_trees, "refit_only_rows": model.refit_only_rows_,
               "crossfit_folds": cfg.model.crossfit_folds if cfg.model.refit == "crossfit" else 0},
    )


def refit_validation(model: RiskModel, calib: pd.DataFrame, cfg: TrainConfig) -> dict[str, float]:
    """Does learning from more rows pay, judged without the test fold: on the calibration fold, the
    ROC-AUC and PR-AUC of the out-of-fold scores (boosters on the training fold + the OTHER
    calibration students) against the early-stopped training-fold booster's, with paired
    student-level intervals of the difference (`refit.calibration_fold.<score>.<metric>`,
    `refit.calibration_fold.oof_minus_stage_a.<metric>`). The stage-A figure is if anything flattered
    (its tree count was chosen on these rows); the out-of-fold boosters share the calibration year
    with the rows they score, which a published booster never does with its test fold."""
    y = calib["label"].to_numpy(dtype=float)
    weights = student_weights(calib["student_key"].astype(str).to_numpy(), cfg.intervals.n_boot, cfg.intervals.seed + 2)
    out: dict[str, float] = {}
    reps = {}
    for name, raw in (("stage_a", model.stage_a_calibration_raw_), ("out_of_fold", model.calibration_raw_)):
        auc, ap = rank_metrics(y, raw, np.ones((1, len(y))))
        out[f"refit.calibration_fold.{name}.roc_auc"], out[f"refit.calibration_fold.{name}.pr_auc"] = float(auc[0]), float(ap[0])
        reps[name] = rank_metrics(y, raw, weights)
    for j, metric in enumerate(("roc_auc", "pr_auc")):
        name = f"refit.calibration_fold.oof_minus_stage_a.{metric}"
        out[name] = out[f"refit.calibration_fold.out_of_fold.{metric}"] - out[f"refit.calibration_fold.stage_a.{metric}"]
        out[f"ci95_low.{name}"], out[f"ci95_high.{name}"] = interval(reps["out_of_fold"][j] - reps["stage_a"][j])
    return out


def _replicated(frame: pd.DataFrame, column: str, weights: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Each INTERVAL_METRICS of one score on the bootstrap replicates, restricted to `rows`."""
    y = frame["label"].to_numpy(dtype=float)[rows]
    s = frame[column].to_numpy(dtype=float)[rows]
    w = weights if rows.all() else weights[:, rows]  # no copy of the whole replicate matrix for every row
    auc, ap = rank_metrics(y, s, w)
    wg_auc, wg_ap = within_grade_rank_metrics(y, s, frame["grade_level"].to_numpy()[rows], w)
    return {"roc_auc": auc, "pr_auc": ap, "within_grade_roc_auc": wg_auc, "within_grade_pr_auc": wg_ap}


def headline_intervals(frame: pd.DataFrame, seed: int, n_boot: int = BOOTSTRAP_REPLICATES) -> dict[str, float]:
    """95% student-level bootstrap intervals of the headline ranking metrics of the test rows `frame`
    (TrainResult.test): the model's, the compared baselines', the model minus each baseline
    (`versus.<baseline>.<metric>`), and, where the truth is known, the ceilings and the model's gaps to
    them (`gap_<metric>`, `observable.gap_<metric>`). All scores share one set of replicates, so a
    difference's interval is the interval of the per-replicate differences (paired)."""
    weights = student_weights(frame["student_key"].astype(str).to_numpy(), n_boot, seed)
    every = np.ones(len(frame), dtype=bool)
    out: dict[str, float] = {}

    def put(name: str, values: np.ndarray) -> None:
        out[f"ci95_low.{name}"], out[f"ci95_high.{name}"] = interval(values)

    model = _replicated(frame, "risk_score", weights, every)
    for m in INTERVAL_METRICS:
        put(m, model[m])
    for b in COMPARED_BASELINES:
        if f"baseline_{b}" not in frame.columns:
            continue
        base = _replicated(frame, f"baseline_{b}", weights, every)
        for m in INTERVAL_METRICS:
            put(f"baselines.{b}.{m}", base[m])
            put(f"versus.{b}.{m}", model[m] - base[m])
    if "p_true" in frame.columns:
        have = frame["p_true"].notna().to_numpy()
        if have.any():
            same_rows = _replicated(frame, "risk_score", weights, have)
            for column, prefix in (("p_true", ""), ("p_observable", "observable.")):
                if column not in frame.columns or frame.loc[have, column].isna().any():
                    continue
                ceil = _replicated(frame, column, weights, have)
                for m in INTERVAL_METRICS:
                    put(f"{prefix}ceiling_{m}", ceil[m])
                    put(f"{prefix}gap_{m}", ceil[m] - same_rows[m])
    return out


def versus_points(metrics: dict[str, float]) -> dict[str, float]:
    """`versus.<baseline>.<metric>` = model minus baseline, the point estimates beside their intervals."""
    return {f"versus.{b}.{m}": metrics[m] - metrics[f"baselines.{b}.{m}"]
            for b in COMPARED_BASELINES for m in INTERVAL_METRICS
            if m in metrics and f"baselines.{b}.{m}" in metrics}


def measure_variants(ts: Trainset, cfg: TrainConfig) -> pd.DataFrame:
    """The measurements behind two design choices, on the test fold (calibrated scores):
    monotone constraints on/off, and one model with round features vs one model per round type."""
    from training.metrics import score_metrics

    split, folds = split_trainset(ts, cfg)
    test = folds["test"]
    y = test["label"].to_numpy(dtype=float)
    school = test["school_code"].astype(str).to_numpy()
    rows = []
    for monotone in (True, False):
        for per_type in (False, True):
            t = time.perf_counter()
            score = np.zeros(len(test))
            if not per_type:
                score = _fit(folds, cfg, monotone).risk_score(test)
            else:
                rt = {k: round_type_of(f["round_id"]) for k, f in folds.items()}
                for kind in sorted(set(rt["test"])):
                    sub = {k: f[rt[k] == kind] for k, f in folds.items()}
                    if any(f["label"].nunique() < 2 for k, f in sub.items() if k != "refit_only"):
                        # e.g. a round missing from the calibration fold (its census arrived late)
                        score[:] = np.nan
                        break
                    m = (rt["test"] == kind).to_numpy()
                    score[m] = _fit(sub, cfg, monotone).risk_score(sub["test"])
                if np.isnan(score).any():
                    rows.append({"monotone": monotone, "per_round_type": per_type, "seconds": time.perf_counter() - t,
                                 "note": "not measurable: a fold lacks one round type or one label value"})
                    continue
            met = score_metrics(y, score, school, cfg.capacities)
            rows.append({"monotone": monotone, "per_round_type": per_type, "seconds": time.perf_counter() - t,
                         # .get: a config without the 10% capacity has no *_at_10pct to report
                         **{k: met.get(k, float("nan")) for k in ("roc_auc", "pr_auc", "brier", "ece", "precision_at_10pct",
                                                                  "recall_at_10pct", "school_precision_at_10pct")}})
    return pd.DataFrame(rows)
