"""One training run in memory: split by time, fit, calibrate, evaluate, compare, audit.

No MLflow here (that is `training.registry`): this module turns a training set and a config into a
`TrainResult` — the fitted `RiskModel`, every metric under its stable name, the fairness table and
what the plots and the model card need. It is what tests and the benchmark call directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.pointintime.spec import GROUP_COLUMNS
from features.pointintime.trainset import TrainsetManifest
from training.baselines import baseline_scores
from training.config import TrainConfig
from training.data import Trainset, grade_band_of, round_type_of
from training.fairness import audit_table, flatten, gate_failures
from training.metrics import ceiling_and_gap, sliced_metrics
from training.model import RiskModel
from training.splits import TemporalSplit, round_dates, temporal_split


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
    best_iteration: int = 0
    fold_rows: dict[str, int] = field(default_factory=dict)


def split_trainset(ts: Trainset, cfg: TrainConfig) -> tuple[TemporalSplit, dict[str, pd.DataFrame]]:
    """The temporal split of a training set and its three folds of rows."""
    horizon = ts.manifest.config.horizon
    rounds = sorted(set(ts.frame["round_id"].astype(str)))
    known = {r.round_id: r.label_known_on for r in ts.manifest.rounds}  # the warehouse's actual dates
    dated = [{"round_id": r, "label_known_on": known.get(r)} for r in rounds]
    split = temporal_split(round_dates(dated, horizon, cfg.split.label_delay_days), cfg.split)
    rid = ts.frame["round_id"].astype(str)
    folds = {name: ts.frame[rid.isin(getattr(split, name))] for name in ("train", "calibration", "test")}
    for name, f in folds.items():
        if f["label"].nunique() < 2:
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
    calibration fold), calibrator on the calibration fold, group cut-offs on the test fold."""
    train, calib, test = folds["train"], folds["calibration"], folds["test"]
    return RiskModel.from_train_config(cfg, monotone).fit(
        train, train["label"].to_numpy(), calibration=(calib, calib["label"].to_numpy()),
        cutoffs=(test, test["label"].to_numpy()),
    )


def train_and_evaluate(ts: Trainset, cfg: TrainConfig, truth: pd.DataFrame | None = None) -> TrainResult:
    """Fit on the training fold, calibrate on the calibration fold, evaluate on the test fold.

    `truth` (student_key, round_id, p_true) from the simulator adds ceiling_* and gap_* metrics."""
    t0 = time.perf_counter()
    split, folds = split_trainset(ts, cfg)
    timings: dict[str, float] = {"split": time.perf_counter() - t0}

    t = time.perf_counter()
    model = _fit(folds, cfg)
    timings["fit_and_calibrate"] = time.perf_counter() - t

    test = folds["test"]
    y = test["label"].to_numpy(dtype=float)
    raw = model.raw_probability(test)
    score = model.calibrator_.transform(raw)

    t = time.perf_counter()
    school = test["school_code"].astype(str).to_numpy()
    slices = {"round_type": round_type_of(test["round_id"]).to_numpy(),
              "grade_band": grade_band_of(test["grade_level"]).to_numpy()}
    metrics = sliced_metrics(y, score, school, slices, cfg.capacities)
    for k, v in sliced_metrics(y, raw, school, {}, cfg.capacities).items():
        if k in ("roc_auc", "pr_auc", "brier", "ece"):
            metrics[f"uncalibrated.{k}"] = v
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    train = folds["train"]
    base = baseline_scores(test, train, train["label"].to_numpy(), cfg.model.seed, cfg.logistic_max_rows)
    for name, s in base.items():
        for k, v in sliced_metrics(y, s, school, slices, cfg.capacities, probabilistic=name == "logistic").items():
            metrics[f"baselines.{name}.{k}"] = v
    timings["baselines"] = time.perf_counter() - t

    frame = pd.DataFrame({
        "student_key": test["student_key"].to_numpy(), "round_id": test["round_id"].astype(str).to_numpy(),
        "school_code": school, "round_type": slices["round_type"], "grade_band": slices["grade_band"],
        "label": y, "raw_score": raw, "risk_score": score, "risk_group": model.thresholds_.assign(score),
        **{f"baseline_{k}": v for k, v in base.items()},
        **{c: test[c].to_numpy() for c in GROUP_COLUMNS if c in test.columns},
    })
    if truth is not None:
        frame = frame.merge(truth[["student_key", "round_id", "p_true"]], on=["student_key", "round_id"], how="left")
        have = frame["p_true"].notna().to_numpy()
        metrics["ceiling_rows_matched"] = float(have.mean())
        if have.any():
            sub = frame[have]
            sub_slices = {k: np.asarray(v)[have] for k, v in slices.items()}
            ceil = sliced_metrics(sub["label"].to_numpy(), sub["p_true"].to_numpy(), sub["school_code"].to_numpy(),
                                  sub_slices, cfg.capacities)
            model_same_rows = sliced_metrics(sub["label"].to_numpy(), sub["risk_score"].to_numpy(),
                                             sub["school_code"].to_numpy(), {}, cfg.capacities)
            metrics.update(ceiling_and_gap(model_same_rows, ceil))
            for k, v in ceil.items():
                if "." in k:
                    metrics[f"ceiling.{k}"] = v

    t = time.perf_counter()
    groups = _group_frame(test, cfg.fairness.attributes)
    flagged = score >= model.thresholds_.at_risk
    problem = score >= model.thresholds_.problem
    fair = pd.concat([audit_table(y, flagged, groups, cfg.fairness, "flagged"),
                      audit_table(y, problem, groups, cfg.fairness, "problem")], ignore_index=True)
    failures = gate_failures(fair, cfg.fairness)
    metrics.update(flatten(fair))
    metrics["fairness_failures"] = float(len(failures))
    timings["fairness"] = time.perf_counter() - t

    t = time.perf_counter()
    importance = group_importance(model, test, cfg.shap_sample_rows, cfg.model.seed)
    timings["shap"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    return TrainResult(
        model=model, split=split, metrics=metrics, fairness=fair, fairness_failures=failures, test=frame,
        feature_importance=importance, trainset_name=ts.name, trainset_manifest=ts.manifest, timings=timings,
        best_iteration=int(model.booster_.best_iteration or model.booster_.current_iteration()),
        fold_rows={k: len(v) for k, v in folds.items()},
    )


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
                    if any(f["label"].nunique() < 2 for f in sub.values()):
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
