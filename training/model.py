"""The risk model: a deterministic LightGBM booster plus a calibrator fitted on a later fold.

`fit_booster` trains on the training fold and stops early on the calibration fold; `Calibrator`
maps the booster's raw probability to a calibrated one and is fitted on the calibration fold only,
never on training rows (a booster's scores on its own training rows are overconfident). The
calibrator is plain numbers (isotonic knots or Platt coefficients) so serving rebuilds it from
JSON without unpickling anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.pointintime.spec import FEATURE_NAMES
from training.config import ModelConfig
from training.data import model_matrix

# Directions we are sure of, from the dropout literature and the programmes' own rules: more
# attendance never raises risk, more failing marks never lower it. Everything else is left free.
MONOTONE: dict[str, int] = {
    "att_rate_term": -1, "att_rate_prev_term": -1, "att_rate_12m": -1, "att_rate_last_month": -1,
    "att_unexcused_rate_12m": 1, "att_chronic_absence": 1, "att_below_cct_85": 1,
    "marks_0_last": 1, "marks_r_last": 1, "marks_ms_last": 1, "marks_mp_last": 1,
    "failing_marks_12m": 1, "failing_marks_interim": 1,
    "gpa_last": -1, "gpa_interim": -1,
}
_EPS = 1e-6


def lgb_params(cfg: ModelConfig, monotone: bool | None = None) -> dict[str, Any]:
    use_monotone = cfg.monotone if monotone is None else monotone
    params: dict[str, Any] = {
        "objective": "binary", "metric": "binary_logloss", "verbosity": -1,
        "num_leaves": cfg.num_leaves, "learning_rate": cfg.learning_rate,
        "min_child_samples": cfg.min_child_samples, "feature_fraction": cfg.feature_fraction,
        "lambda_l2": cfg.lambda_l2, "max_cat_to_onehot": cfg.max_cat_to_onehot,
        # Determinism: same trees for the same data whatever the thread count.
        "seed": cfg.seed, "deterministic": True, "force_col_wise": True, "num_threads": cfg.num_threads,
    }
    if use_monotone:
        params["monotone_constraints"] = [MONOTONE.get(f, 0) for f in FEATURE_NAMES]
        # "intermediate": tighter than "basic" at about the same cost; "advanced" measured 1.6x slower.
        params["monotone_constraints_method"] = "intermediate"
    return params


def fit_booster(
    x_train: pd.DataFrame, y_train: np.ndarray, x_valid: pd.DataFrame, y_valid: np.ndarray,
    cfg: ModelConfig, monotone: bool | None = None,
) -> lgb.Booster:
    """A booster trained on (x_train, y_train), early-stopped on the later fold (x_valid, y_valid)."""
    train = lgb.Dataset(x_train, label=y_train, categorical_feature="auto", free_raw_data=True)
    valid = lgb.Dataset(x_valid, label=y_valid, reference=train)
    return lgb.train(
        lgb_params(cfg, monotone), train, num_boost_round=cfg.n_estimators, valid_sets=[valid],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class Calibrator:
    """Raw probability -> calibrated probability. scikit-learn style: fit returns self, state ends in _."""

    def __init__(self, method: Literal["isotonic", "platt"] = "isotonic") -> None:
        self.method = method

    def fit(self, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        raw = np.asarray(raw, dtype=float)
        y = np.asarray(y, dtype=float)
        if self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            # IsotonicRegression predicts by linear interpolation between these knots.
            self.x_ = np.asarray(iso.X_thresholds_, dtype=float)
            self.y_ = np.asarray(iso.y_thresholds_, dtype=float)
        elif self.method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw).reshape(-1, 1), y)
            self.a_ = float(lr.coef_[0, 0])
            self.b_ = float(lr.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            return np.interp(raw, self.x_, self.y_)
        return 1.0 / (1.0 + np.exp(-(self.a_ * _logit(raw) + self.b_)))

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist()}
        return {"method": "platt", "a": self.a_, "b": self.b_}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        c = cls(d["method"])
        if c.method == "isotonic":
            c.x_, c.y_ = np.asarray(d["x"], dtype=float), np.asarray(d["y"], dtype=float)
        else:
            c.a_, c.b_ = float(d["a"]), float(d["b"])
        return c


@dataclass
class RiskThresholds:
    """Probability cut-offs on the calibrated score, fixed at training: >= problem -> มีปัญหา,
    >= at_risk -> เสี่ยง, else ปกติ. Observed dropout rates per group come from the test fold."""

    problem: float
    at_risk: float
    problem_share: float
    at_risk_share: float
    observed: dict[str, dict[str, float]] = field(default_factory=dict)

    def assign(self, score: np.ndarray) -> np.ndarray:
        s = np.asarray(score, dtype=float)
        return np.where(s >= self.problem, "problem", np.where(s >= self.at_risk, "at_risk", "normal"))

    def to_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "at_risk": self.at_risk, "problem_share": self.problem_share,
                "at_risk_share": self.at_risk_share, "observed": self.observed,
                "labels": {"problem": "มีปัญหา", "at_risk": "เสี่ยง", "normal": "ปกติ"}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RiskThresholds:
        return cls(problem=float(d["problem"]), at_risk=float(d["at_risk"]), problem_share=float(d["problem_share"]),
                   at_risk_share=float(d["at_risk_share"]), observed=dict(d.get("observed", {})))


def _cut_for_share(s: np.ndarray, share: float) -> float:
    """The cut-off t (one of the scores) for which the share of scores >= t is closest to `share`.
    A calibrator with plateaus ties many students; a plain quantile would swallow a whole plateau."""
    values = np.unique(s)  # ascending
    at_or_above = 1.0 - np.searchsorted(np.sort(s), values, side="left") / len(s)
    return float(values[int(np.argmin(np.abs(at_or_above - share)))])


def choose_thresholds(score: np.ndarray, y: np.ndarray, problem_share: float, at_risk_share: float) -> RiskThresholds:
    """Cut-offs so that about `problem_share` of students are มีปัญหา and the next `at_risk_share`
    เสี่ยง. Capacity, not a probability level, sets them: a school can visit its top few percent."""
    s = np.asarray(score, dtype=float)
    t_problem = _cut_for_share(s, problem_share)
    t_at_risk = min(_cut_for_share(s, problem_share + at_risk_share), t_problem)
    th = RiskThresholds(problem=t_problem, at_risk=t_at_risk, problem_share=problem_share, at_risk_share=at_risk_share)
    groups = th.assign(s)
    y = np.asarray(y, dtype=float)
    th.observed = {
        g: {"share": float(np.mean(groups == g)), "dropout_rate": float(y[groups == g].mean()) if np.any(groups == g) else float("nan"),
            "rows": int(np.sum(groups == g))}
        for g in ("problem", "at_risk", "normal")
    }
    return th


@dataclass
class RiskModel:
    """What serving needs to turn a feature frame into calibrated risk scores and groups."""

    booster: lgb.Booster
    calibrator: Calibrator
    categories: dict[str, list[str]]
    thresholds: RiskThresholds
    features: tuple[str, ...] = FEATURE_NAMES

    def raw_score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict(model_matrix(frame, self.categories)), dtype=float)

    def risk_score(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of dropout by the next census, one per row of `frame`."""
        return self.calibrator.transform(self.raw_score(frame))

    def risk_group(self, frame: pd.DataFrame) -> np.ndarray:
        return self.thresholds.assign(self.risk_score(frame))
