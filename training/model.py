"""The risk model: a deterministic LightGBM booster, a calibrator fitted on a later fold, and the
cut-offs of the three risk groups — one estimator with scikit-learn's contract.

`RiskModel(config, ...)` only stores its parameters; `fit` learns, on the training fold, the
model's own feature set (names, dtypes, category lists) and the booster (early-stopped on the
calibration fold), then the calibrator on the calibration fold only (a booster's scores on its own
training rows are overconfident), then the group cut-offs on the fold it is given for them; every
fitted attribute ends in `_`. `encode` is the one input encoding — a float64 matrix in the model's
own feature order, category -> its code in the model's own category list, unseen or missing -> NaN —
used by training, scoring, SHAP, replay and ad-hoc scoring alike. Because the model keeps its own
feature set, an old version still scores after the catalogue grows. The calibrator and thresholds
are plain numbers, so the registry rebuilds a model from JSON and the booster without unpickling.

`ModelConfig.refit = "crossfit"` lets the calibration fold's rows teach the published booster too:
the early-stopped booster then only fixes the number of trees, a few boosters each blind to one
group of the calibration fold's students give every calibration row an out-of-fold score for the
calibrator, and the published booster is refitted on training + calibration rows. With
`ModelConfig.bag_seeds` = K > 1 each of those refitted boosters is K subsampled fits merged into one
booster with the mean margin (training/bagging.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.pointintime.spec import BY_NAME, FEATURE_NAMES, Dtype
from training.bagging import member_params, merge_boosters
from training.config import ModelConfig
from training.metrics import clipped_logit

# Directions we are sure of, from the dropout literature and the programmes' own rules: more
# attendance never raises risk, more failing marks never lower it. Everything else is left free.
MONOTONE: dict[str, int] = {
    "att_rate_term": -1, "att_rate_prev_term": -1, "att_rate_12m": -1, "att_rate_last_month": -1,
    "att_unexcused_rate_12m": 1, "att_chronic_absence": 1, "att_below_cct_85": 1,
    "marks_0_last": 1, "marks_r_last": 1, "marks_ms_last": 1, "marks_mp_last": 1,
    "failing_marks_12m": 1, "failing_marks_interim": 1,
    "gpa_last": -1, "gpa_interim": -1,
}
Matrix = np.ndarray  # float64, one column per feature of the model's own feature set


# ---------------------------------------------------------------------------------------------
# The model's own inputs


@dataclass(frozen=True)
class FeatureColumn:
    """One model input as the model saw it at training: its dtype and, for a category, its levels."""

    name: str
    dtype: Dtype
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSet:
    """The inputs of one fitted model, in order. Kept with the model (not read from the catalogue)
    so a version trained before the catalogue grew is still encoded exactly as it was trained."""

    columns: tuple[FeatureColumn, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def categorical_indices(self) -> list[int]:
        return [j for j, c in enumerate(self.columns) if c.dtype == "category"]

    def categories(self) -> dict[str, list[str]]:
        return {c.name: list(c.categories) for c in self.columns if c.dtype == "category"}

    @classmethod
    def learn(cls, frame: pd.DataFrame, names: Sequence[str] = FEATURE_NAMES) -> FeatureSet:
        """The catalogue's dtypes for `names`; category levels sorted, learned from `frame` (training rows only)."""
        _require_columns(frame, names)
        columns = []
        for name in names:
            dtype = BY_NAME[name].dtype
            levels = tuple(sorted(str(v) for v in frame[name].dropna().unique())) if dtype == "category" else ()
            columns.append(FeatureColumn(name, dtype, levels))
        return cls(tuple(columns))

    def encode(self, frame: pd.DataFrame) -> Matrix:
        """The model's input matrix: categories -> code in the stored list (unseen or missing -> NaN,
        which LightGBM sends the way it sends missing), bools/ints -> floats, NaN for missing.
        Columns of `frame` the model does not know are ignored."""
        _require_columns(frame, self.names)
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, column in enumerate(self.columns):
            col = frame[column.name]
            if column.dtype == "category":
                values = col.astype("string").to_numpy(dtype=object, na_value=None)
                # The level's position in the stored list; -1 for a level unseen at training or missing.
                codes = pd.Index(list(column.categories), dtype=object).get_indexer(values)
                out[:, j] = np.where(codes < 0, np.nan, codes.astype(np.float64))
            else:
                out[:, j] = pd.to_numeric(col.astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "dtype": c.dtype, "categories": list(c.categories)} for c in self.columns]

    @classmethod
    def from_dict(cls, columns: Sequence[Mapping[str, Any]]) -> FeatureSet:
        return cls(tuple(FeatureColumn(str(c["name"]), c["dtype"], tuple(str(v) for v in c.get("categories", ())))
                         for c in columns))

    @classmethod
    def from_names_and_categories(cls, names: Sequence[str], categories: Mapping[str, Sequence[str]]) -> FeatureSet:
        """A feature set stored before dtypes were (versions registered with names + category lists
        only). Only category vs number matters to the encoding, so numbers are read as floats."""
        return cls(tuple(FeatureColumn(n, "category", tuple(categories[n])) if n in categories else FeatureColumn(n, "float")
                         for n in names))


def _require_columns(frame: pd.DataFrame, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the model's input columns {missing[:5]}"
                         f"{' and more' if len(missing) > 5 else ''}: build the features with the model's catalogue")


# ---------------------------------------------------------------------------------------------
# Calibration and the risk groups


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
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(clipped_logit(raw).reshape(-1, 1), y)
            self.a_ = float(lr.coef_[0, 0])
            self.b_ = float(lr.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def transform(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if self.method == "isotonic":
            return np.interp(raw, self.x_, self.y_)
        return 1.0 / (1.0 + np.exp(-(self.a_ * clipped_logit(raw) + self.b_)))

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist()}
        return {"method": "platt", "a": self.a_, "b": self.b_}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibrator:
        c = cls(d["method"])
        if c.method == "isotonic":
            c.x_, c.y_ = np.asarray(d["x"], dtype=float), np.asarray(d["y"], dtype=float)
        else:
            c.a_, c.b_ = float(d["a"]), float(d["b"])
        return c


RISK_GROUPS: tuple[str, ...] = ("problem", "at_risk", "normal")
RISK_GROUP_TH: dict[str, str] = {"problem": "มีปัญหา", "at_risk": "เสี่ยง", "normal": "ปกติ"}


def round_stratum(round_id: str) -> str:
    """The term and round type of a round id: "2565-T2-mid" -> "T2-mid" (dropout rates, hence score
    levels, differ several-fold between terms and between early and mid rounds)."""
    parts = str(round_id).split("-")
    return "-".join(parts[-2:]) if len(parts) >= 3 else str(round_id)


@dataclass
class RiskThresholds:
    """The three groups as shares of each round's scored pupils: the top `problem_share` of a round by
    calibrated score are มีปัญหา, the next `at_risk_share` เสี่ยง, the rest ปกติ.

    Shares, not fixed probabilities: a school's capacity to visit is the same every round, while the
    scores' level moves with the term (term-2 rounds carry the year-end transitions; fixed cut-offs
    cut at the term-2 quantiles flagged 0.1-0.5% "problem" on term-1 rounds). `assign(score,
    round_scores)` cuts within the round; `problem`/`at_risk` are the cut-offs of the fold they were
    fitted on, used only where no round is at hand (ad-hoc scoring of posted rows). `observed` holds
    each group's dropout rate on that fold, `by_stratum` the same per term and round type."""

    problem: float
    at_risk: float
    problem_share: float
    at_risk_share: float
    observed: dict[str, dict[str, float]] = field(default_factory=dict)
    by_stratum: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    rule: str = "within_round"

    def round_cutoffs(self, round_scores: np.ndarray) -> tuple[float, float]:
        """(problem, at_risk) cut-offs that put the configured shares of this round in each group."""
        s = np.asarray(round_scores, dtype=float)
        if len(s) == 0:
            return self.problem, self.at_risk
        t_problem = _cut_for_share(s, self.problem_share)
        return t_problem, min(_cut_for_share(s, self.problem_share + self.at_risk_share), t_problem)

    def assign(self, score: np.ndarray, round_scores: np.ndarray | None = None) -> np.ndarray:
        """Group of each score: cut within `round_scores` (every scored pupil of the score's round,
        e.g. `score` itself when it is a whole round), or at the stored cut-offs without a round."""
        s = np.asarray(score, dtype=float)
        problem, at_risk = (self.problem, self.at_risk) if round_scores is None or self.rule != "within_round" \
            else self.round_cutoffs(round_scores)
        return np.where(s >= problem, "problem", np.where(s >= at_risk, "at_risk", "normal"))

    def assign_by_round(self, score: np.ndarray, round_ids: np.ndarray) -> np.ndarray:
        """Groups of rows from several rounds, each round cut within itself."""
        s = np.asarray(score, dtype=float)
        rid = np.asarray(round_ids).astype(str)
        out = np.empty(len(s), dtype=object)
        for r in np.unique(rid):
            m = rid == r
            out[m] = self.assign(s[m], s[m])
        return out.astype(str) if len(s) else np.array([], dtype=str)

    def to_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "at_risk": self.at_risk, "problem_share": self.problem_share,
                "at_risk_share": self.at_risk_share, "observed": self.observed, "by_stratum": self.by_stratum,
                "rule": self.rule, "labels": dict(RISK_GROUP_TH)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RiskThresholds:
        # Versions stored before the per-round rule had fixed cut-offs: they keep them ("fixed").
        return cls(problem=float(d["problem"]), at_risk=float(d["at_risk"]), problem_share=float(d["problem_share"]),
                   at_risk_share=float(d["at_risk_share"]), observed=dict(d.get("observed", {})),
                   by_stratum=dict(d.get("by_stratum", {})), rule=str(d.get("rule", "fixed")))


def _cut_for_share(s: np.ndarray, share: float) -> float:
    """The cut-off t (one of the scores) for which the share of scores >= t is closest to `share`.
    A calibrator with plateaus ties many students; a plain quantile would swallow a whole plateau."""
    values = np.unique(s)  # ascending
    at_or_above = 1.0 - np.searchsorted(np.sort(s), values, side="left") / len(s)
    return float(values[int(np.argmin(np.abs(at_or_above - share)))])


def _observed(groups: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    return {
        g: {"share": float(np.mean(groups == g)) if len(groups) else float("nan"),
            "dropout_rate": float(y[groups == g].mean()) if np.any(groups == g) else float("nan"),
            "rows": int(np.sum(groups == g))}
        for g in RISK_GROUPS
    }


def choose_thresholds(score: np.ndarray, y: np.ndarray, problem_share: float, at_risk_share: float,
                      round_ids: np.ndarray | None = None, strata_fold: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                      ) -> RiskThresholds:
    """Groups as shares of each round: the reference cut-offs and each group's observed dropout rate
    on the rows given (each round cut within itself when `round_ids` are given), and per term and
    round type on `strata_fold` (score, label, round id: rows of both terms, e.g. calibration + test).
    Capacity, not a probability level, sets them: a school can visit its top few percent."""
    s = np.asarray(score, dtype=float)
    y = np.asarray(y, dtype=float)
    th = RiskThresholds(problem=0.0, at_risk=0.0, problem_share=problem_share, at_risk_share=at_risk_share)
    th.problem, th.at_risk = th.round_cutoffs(s)
    groups = th.assign_by_round(s, round_ids) if round_ids is not None else th.assign(s)
    th.observed = _observed(groups, y)
    if strata_fold is not None:
        ss, ys, rs = (np.asarray(a) for a in strata_fold)
        g = th.assign_by_round(ss.astype(float), rs)
        stratum = np.array([round_stratum(r) for r in rs.astype(str)])
        th.by_stratum = {k: _observed(g[stratum == k], ys.astype(float)[stratum == k]) for k in sorted(set(stratum))}
    return th


# ---------------------------------------------------------------------------------------------
# The estimator


def lgb_params(cfg: ModelConfig, features: Sequence[str], monotone: bool | None = None,
               seed: int | None = None) -> dict[str, Any]:
    use_monotone = cfg.monotone if monotone is None else monotone
    params: dict[str, Any] = {
        "objective": "binary", "metric": "binary_logloss", "verbosity": -1,
        "num_leaves": cfg.num_leaves, "learning_rate": cfg.learning_rate,
        "min_child_samples": cfg.min_child_samples, "feature_fraction": cfg.feature_fraction,
        "lambda_l2": cfg.lambda_l2, "max_cat_to_onehot": cfg.max_cat_to_onehot,
        # Determinism: same trees for the same data whatever the thread count.
        "seed": cfg.seed if seed is None else seed, "deterministic": True, "force_col_wise": True,
        "num_threads": cfg.num_threads,
    }
    if use_monotone:
        params["monotone_constraints"] = [MONOTONE.get(f, 0) for f in features]
        # "intermediate": tighter than "basic" at about the same cost; "advanced" measured 1.6x slower.
        params["monotone_constraints_method"] = "intermediate"
    return params


def crossfit_groups(student_keys: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Group (0 .. k-1) of each row, drawn per STUDENT: the sorted distinct keys are shuffled with
    `seed` and dealt round-robin, so all of a student's rows share a group and the groups' sizes in
    students differ by at most one. The same keys and seed give the same groups."""
    keys = np.asarray(student_keys).astype(str)
    distinct = np.unique(keys)  # sorted: the groups do not depend on the rows' order
    if len(distinct) < k:
        raise ValueError(f"cross-fitting needs at least {k} students in the calibration fold, it has {len(distinct)}")
    order = np.random.default_rng(seed).permutation(len(distinct))
    group_of_distinct = np.empty(len(distinct), dtype=np.int64)
    group_of_distinct[order] = np.arange(len(distinct)) % k
    return group_of_distinct[np.searchsorted(distinct, keys)]


def scaled_trees(trees: int, rows: int, early_stopped_rows: int) -> int:
    """Boosting rounds for a booster refitted on `rows` rows, from the count early stopping chose on
    `early_stopped_rows`: in proportion to the rows (the session-6 diagnosis' rule, 142 -> 236 trees;
    training/DECISIONS.md, issue 12). At a fixed learning rate, more rows carry more signal before
    the trees start fitting noise; there is no fold left to early-stop the refitted booster on
    (every labelled row before the test fold is in it), so the count is set beforehand."""
    return max(1, round(trees * rows / early_stopped_rows))


Fold = tuple[pd.DataFrame, np.ndarray]  # (feature frame, 0/1 labels)


class RiskModel(BaseEstimator):
    """Feature frame -> calibrated probability of dropout by the next census, and its risk group.

    Parameters (stored as given, scikit-learn style): `config` (the booster's settings),
    `calibration` ("platt" or "isotonic"), the two group shares, `monotone` (None: the config's
    choice), `features` (None: the whole catalogue at fit time) and `random_state` (None: the
    config's seed). Fitted: `features_`, `categories_`, `booster_`, `calibrator_`, `thresholds_`."""

    def __init__(
        self, config: ModelConfig | None = None, calibration: Literal["isotonic", "platt"] = "platt",
        problem_share: float = 0.05, at_risk_share: float = 0.15, monotone: bool | None = None,
        features: Sequence[str] | None = None, random_state: int | None = None,
    ) -> None:
        self.config = config
        self.calibration = calibration
        self.problem_share = problem_share
        self.at_risk_share = at_risk_share
        self.monotone = monotone
        self.features = features
        self.random_state = random_state

    @classmethod
    def from_train_config(cls, cfg: Any, monotone: bool | None = None) -> RiskModel:
        """An unfitted model with the settings of a `training.config.TrainConfig`."""
        return cls(cfg.model, cfg.calibration.method, cfg.risk_groups.problem_share, cfg.risk_groups.at_risk_share,
                   monotone=monotone, random_state=cfg.model.seed)

    def fit(self, X: pd.DataFrame, y: np.ndarray, *, calibration: Fold, cutoffs: Fold | None = None,
            refit_only: Fold | None = None) -> RiskModel:
        """Learn the feature set and booster on (X, y), early-stopping on the `calibration` fold; the
        calibrator on the calibration fold; the group cut-offs on `cutoffs` (default: the calibration
        fold; training passes its test fold, whose observed rates the model card reports).

        With `config.refit == "crossfit"` the early-stopped booster only sets the number of trees: the
        published booster is refitted on the training AND calibration rows, and the calibrator is fitted
        on out-of-fold scores of the calibration fold (`crossfit_groups`, `scaled_trees`); the calibration
        fold then needs its `student_key` column. `refit_only` rows (labels known too late for stage A's
        early stopping to have seen them, e.g. the rounds between the calibration and the test fold)
        train every refitted booster and nothing else; without cross-fitting they are unused.
        Fitted besides the public attributes: `stage_a_trees_` (the early-stopped count),
        `refit_only_rows_` (the refit-only rows the refits learnt from), `calibration_raw_` (the raw probabilities the calibrator was fitted
        on: the booster's own in "none", out-of-fold in "crossfit"), `stage_a_calibration_raw_` (the
        early-stopped booster's on the same rows), `crossfit_groups_` (each
        calibration row's group, None in "none") and `fit_seconds_`."""
        cfg = self.config or ModelConfig()
        x_calib, y_calib = calibration[0], np.asarray(calibration[1])
        y_train = np.asarray(y)
        self.features_ = FeatureSet.learn(X, tuple(self.features) if self.features is not None else FEATURE_NAMES)
        self.categories_ = self.features_.categories()
        names = list(self.features_.names)
        params = lgb_params(cfg, names, self.monotone, self.random_state)
        x_train, x_cal = self.encode(X), self.encode(x_calib)
        self.refit_only_rows_ = len(refit_only[0]) if refit_only is not None and cfg.refit == "crossfit" else 0
        t = time.perf_counter()
        # Integer codes with the categorical columns named by index: the same numbers LightGBM
        # derives from pandas categories, so the trees are those a category frame would give.
        train = lgb.Dataset(x_train, label=y_train, feature_name=names,
                            categorical_feature=self.features_.categorical_indices, free_raw_data=True)
        valid = lgb.Dataset(x_cal, label=y_calib, reference=train)
        stage_a = lgb.train(params, train, num_boost_round=cfg.n_estimators, valid_sets=[valid],
                            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)])
        self.stage_a_trees_ = int(stage_a.best_iteration or stage_a.current_iteration())
        self.fit_seconds_ = {"stage_a": time.perf_counter() - t}
        if cfg.refit == "none":
            self.booster_ = stage_a
            self.crossfit_groups_ = None
            self.calibration_raw_ = np.asarray(stage_a.predict(x_cal), dtype=float)
            self.stage_a_calibration_raw_ = self.calibration_raw_
        else:
            # Kept to compare, on the calibration fold alone, the out-of-fold scores with the
            # training-fold booster's (training.pipeline.refit_validation): no test row involved.
            self.stage_a_calibration_raw_ = np.asarray(stage_a.predict(x_cal), dtype=float)
            if refit_only is not None and len(refit_only[0]):
                x_more, y_more = self.encode(refit_only[0]), np.asarray(refit_only[1])
            else:
                x_more, y_more = x_train[:0], y_train[:0]
            self.booster_, self.calibration_raw_, self.crossfit_groups_ = self._crossfit(
                params, names, x_train, y_train, x_cal, y_calib, x_calib, cfg, x_more, y_more)
        self.calibrator_ = Calibrator(self.calibration).fit(self.calibration_raw_, y_calib)
        # The calibration fold's published-scale scores, from the same raw scores the calibrator saw
        # (out-of-fold under cross-fitting: the published booster has seen these rows).
        calib_score = np.asarray(self.calibrator_.transform(self.calibration_raw_), dtype=np.float64)
        x_cut, y_cut = cutoffs if cutoffs is not None else (x_calib, y_calib)
        cut_score = self.risk_score(x_cut) if cutoffs is not None else calib_score
        strata = None
        if "round_id" in x_calib.columns and "round_id" in x_cut.columns:
            both = x_calib if cutoffs is None else pd.concat([x_calib[["round_id"]], x_cut[["round_id"]]])
            strata = (np.concatenate([calib_score, cut_score]) if cutoffs is not None else cut_score,
                      np.concatenate([y_calib, np.asarray(y_cut)]) if cutoffs is not None else np.asarray(y_cut),
                      both["round_id"].astype(str).to_numpy())
        self.thresholds_ = choose_thresholds(
            cut_score, np.asarray(y_cut), self.problem_share, self.at_risk_share,
            round_ids=x_cut["round_id"].astype(str).to_numpy() if "round_id" in x_cut.columns else None, strata_fold=strata)
        return self

    def _crossfit(self, params: dict[str, Any], names: list[str], x_train: Matrix, y_train: np.ndarray,
                  x_cal: Matrix, y_calib: np.ndarray, x_calib: pd.DataFrame, cfg: ModelConfig,
                  x_more: Matrix, y_more: np.ndarray) -> tuple[lgb.Booster, np.ndarray, np.ndarray]:
        """(published booster, out-of-fold raw probabilities of the calibration rows, their groups).

        Each group's raw probabilities come from a booster fitted on the training fold plus the
        calibration rows of the OTHER groups' students, so a calibration row is never scored by a
        booster that saw its student (a student's early and mid rows share one outcome)."""
        if "student_key" not in x_calib.columns:
            raise ValueError("refit='crossfit' splits the calibration fold by student: its frame needs the student_key column")
        groups = crossfit_groups(x_calib["student_key"].to_numpy(), cfg.crossfit_folds,
                                 cfg.seed if self.random_state is None else self.random_state)
        oof = np.empty(len(x_cal), dtype=float)
        # Stage A's tree count was early-stopped on the training fold's rows: each refit scales it by
        # its own rows (scaled_trees), the refit-only ones included.
        base = len(x_train) + len(x_more)
        t = time.perf_counter()
        for k in range(cfg.crossfit_folds):
            seen = groups != k
            booster = self._boost(params, names, np.vstack([x_train, x_more, x_cal[seen]]),
                                  np.concatenate([y_train, y_more, y_calib[seen]]),
                                  scaled_trees(self.stage_a_trees_, base + int(seen.sum()), len(x_train)), cfg.bag_seeds)
            oof[~seen] = booster.predict(x_cal[~seen])
        self.fit_seconds_["crossfit"] = time.perf_counter() - t
        t = time.perf_counter()
        published = self._boost(params, names, np.vstack([x_train, x_more, x_cal]),
                                np.concatenate([y_train, y_more, y_calib]),
                                scaled_trees(self.stage_a_trees_, base + len(x_cal), len(x_train)), cfg.bag_seeds)
        self.fit_seconds_["published"] = time.perf_counter() - t
        return published, oof, groups

    def _boost(self, params: dict[str, Any], names: list[str], x: Matrix, y: np.ndarray, trees: int,
               bag_seeds: int = 1) -> lgb.Booster:
        """A booster with exactly `trees` rounds (no early stopping: the count is fixed beforehand);
        with `bag_seeds` > 1, that many subsampled fits on the same Dataset merged into one booster
        whose margin is their mean (training.bagging)."""
        data = lgb.Dataset(x, label=y, feature_name=names, categorical_feature=self.features_.categorical_indices,
                           free_raw_data=True)
        if bag_seeds == 1:
            return lgb.train(params, data, num_boost_round=trees)
        return merge_boosters([lgb.train(member_params(params, j), data, num_boost_round=trees) for j in range(bag_seeds)])

    @classmethod
    def restore(cls, booster: lgb.Booster, calibrator: Calibrator, features: FeatureSet,
                thresholds: RiskThresholds) -> RiskModel:
        """A fitted model from its stored parts (the registry's loader)."""
        if list(booster.feature_name()) != list(features.names):
            raise ValueError("the booster's inputs differ from the model's stored feature set: the artefact is corrupt")
        model = cls(calibration=calibrator.method, problem_share=thresholds.problem_share,
                    at_risk_share=thresholds.at_risk_share, features=features.names)
        model.features_, model.categories_ = features, features.categories()
        model.booster_, model.calibrator_, model.thresholds_ = booster, calibrator, thresholds
        return model

    # -- the one input encoding, and what is computed from it ------------------------------

    def encode(self, frame: pd.DataFrame) -> Matrix:
        """The model's input matrix for `frame` (see `FeatureSet.encode`)."""
        return self.features_.encode(frame)

    def _matrix(self, X: pd.DataFrame | Matrix) -> Matrix:
        """A frame is encoded; a matrix is taken as already encoded (serving encodes once for
        scores and SHAP) and only checked for width."""
        if isinstance(X, pd.DataFrame):
            return self.encode(X)
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features_.columns):
            raise ValueError(f"an encoded matrix needs {len(self.features_.columns)} columns, got shape {x.shape}")
        return x

    def raw_margin(self, X: pd.DataFrame | Matrix, num_threads: int = 0) -> np.ndarray:
        """Log-odds before calibration: what SHAP contributions add up to."""
        kw = {"num_threads": num_threads} if num_threads else {}
        return np.asarray(self.booster_.predict(self._matrix(X), raw_score=True, **kw), dtype=np.float64)

    def raw_probability(self, X: pd.DataFrame | Matrix) -> np.ndarray:
        """The booster's probability before calibration (what the calibrator was fitted on)."""
        return np.asarray(self.booster_.predict(self._matrix(X)), dtype=float)

    def risk_score(self, X: pd.DataFrame | Matrix) -> np.ndarray:
        """Calibrated probability of dropout by the next census, one per row."""
        return np.asarray(self.calibrator_.transform(self.raw_probability(X)), dtype=np.float64)

    def risk_score_from_margin(self, margin: np.ndarray) -> np.ndarray:
        """The calibrated probability from a raw margin already computed (serving computes the
        margin once and checks SHAP additivity against it)."""
        return np.asarray(self.calibrator_.transform(1.0 / (1.0 + np.exp(-np.asarray(margin)))), dtype=np.float64)

    def risk_group(self, X: pd.DataFrame | Matrix) -> np.ndarray:
        """Risk group of each row: within its round when `X` is a frame with `round_id` (each round's
        top shares), else at the stored cut-offs (rows without a round, e.g. ad-hoc scoring)."""
        score = self.risk_score(X)
        if isinstance(X, pd.DataFrame) and "round_id" in X.columns and self.thresholds_.rule == "within_round":
            return self.thresholds_.assign_by_round(score, X["round_id"].astype(str).to_numpy())
        return self.thresholds_.assign(score)

    def contributions(self, X: pd.DataFrame | Matrix) -> np.ndarray:
        """Exact TreeSHAP from LightGBM: one column per feature plus the base value (last)."""
        return np.asarray(self.booster_.predict(self._matrix(X), pred_contrib=True), dtype=np.float64)

    # -- the stored form -------------------------------------------------------------------

    def fitted_state(self) -> dict[str, Any]:
        """Everything besides the booster, as JSON: what the registry stores beside it."""
        return {"features": list(self.features_.names), "feature_set": self.features_.to_dict(),
                "categories": self.categories_, "calibrator": self.calibrator_.to_dict(),
                "thresholds": self.thresholds_.to_dict()}

    @classmethod
    def from_fitted_state(cls, booster: lgb.Booster, state: Mapping[str, Any]) -> RiskModel:
        """Inverse of `fitted_state` (also reads versions stored before the feature set had dtypes)."""
        features = (FeatureSet.from_dict(state["feature_set"]) if "feature_set" in state
                    else FeatureSet.from_names_and_categories(state["features"], state["categories"]))
        return cls.restore(booster, Calibrator.from_dict(state["calibrator"]), features,
                           RiskThresholds.from_dict(state["thresholds"]))
