"""Baselines reported beside the model on every run: if the model cannot beat these, say so.

  abc_rule      Balfanz's ABC: attendance <= 80%, failing marks, care-screening "problem" (count 0-3)
  cct_poverty   the CCT "extremely poor" flag alone (income <= 3,000 baht per person per month)
  school_only   the school's past dropout rate: every student of a school gets the same score
  grade_term_lookup  the learning rows' dropout rate of the row's (grade, term) cell, shrunk towards
                the overall rate by `LOOKUP_PRIOR_ROWS` pseudo-rows: the school calendar alone (dropout
                concentrates at the year-end transitions), the floor any model must clear
  school_model  logistic regression on the school-and-area features only (size, remote, distance, past
                dropout rate, region): school-level targeting, which can rival individual models
  logistic      logistic regression on the same features (median imputation + missing indicators,
                one-hot categories) inside one scikit-learn Pipeline

Every fitted baseline learns from the rows the published booster learned from
(training.pipeline.learned_rows: under the default cross-fitted refit, the training and calibration
folds and the refit-only rounds), so the model's margin over a baseline is not a margin of data.
The probabilistic ones (`PROBABILISTIC`) are judged on calibration too; the rules only on ranking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.pointintime.spec import BY_NAME, CATEGORICAL, FEATURE_NAMES

RULE_BASELINES: tuple[str, ...] = ("abc_rule", "cct_poverty", "school_only")
BASELINES: tuple[str, ...] = (*RULE_BASELINES, "grade_term_lookup", "school_model", "logistic")
PROBABILISTIC: frozenset[str] = frozenset({"grade_term_lookup", "school_model", "logistic"})
# Pseudo-rows at the overall rate added to every (grade, term) cell: a cell seen a few times in the
# training fold is not trusted to the last decimal; at thousands of rows per cell it changes nothing.
LOOKUP_PRIOR_ROWS = 50.0
SCHOOL_FEATURES: tuple[str, ...] = tuple(f for f in FEATURE_NAMES if BY_NAME[f].group == "school")


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(frame[col].astype("Float64"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def abc_rule(frame: pd.DataFrame) -> np.ndarray:
    """Number of ABC flags: attendance <= 80% (this term if known, else 12 months), any failing
    mark in 12 months or this term's interim marks, any care-screening dimension at "problem"."""
    att = _num(frame, "att_rate_term")
    att = np.where(np.isnan(att), _num(frame, "att_rate_12m"), att)
    a = np.nan_to_num(att, nan=1.0) <= 0.80
    fails = np.nan_to_num(_num(frame, "failing_marks_12m")) + np.nan_to_num(_num(frame, "failing_marks_interim"))
    c = np.nan_to_num(_num(frame, "care_problem_count")) > 0
    return a.astype(float) + (fails > 0).astype(float) + c.astype(float)


def cct_poverty(frame: pd.DataFrame) -> np.ndarray:
    return np.nan_to_num(_num(frame, "extremely_poor"), nan=0.0)


def school_only(frame: pd.DataFrame, fallback: float) -> np.ndarray:
    """A school with no known past gets the training fold's dropout rate."""
    return np.nan_to_num(_num(frame, "school_past_dropout_rate"), nan=fallback)


def grade_term_lookup(test: pd.DataFrame, train: pd.DataFrame, y_train: np.ndarray) -> np.ndarray:
    """The learning rows' dropout rate of each test row's (grade_level, term) cell (smoothed)."""
    y_train = np.asarray(y_train, dtype=float)
    overall = float(y_train.mean())
    cell = pd.DataFrame({"g": _num(train, "grade_level"), "t": _num(train, "term"), "y": y_train})
    rates = cell.groupby(["g", "t"], dropna=False)["y"].agg(["sum", "count"])
    smoothed = (rates["sum"] + LOOKUP_PRIOR_ROWS * overall) / (rates["count"] + LOOKUP_PRIOR_ROWS)
    keys = pd.MultiIndex.from_arrays([_num(test, "grade_level"), _num(test, "term")])
    return smoothed.reindex(keys).fillna(overall).to_numpy(dtype=float)


def logistic_input(frame: pd.DataFrame, features: tuple[str, ...] = FEATURE_NAMES) -> pd.DataFrame:
    """The logistic pipeline's input: categories as strings ('missing' for none), the rest as numbers."""
    out = {}
    for f in features:
        if f in CATEGORICAL:
            out[f] = frame[f].astype("object").where(frame[f].notna(), "missing").astype(str)
        else:
            out[f] = _num(frame, f)
    return pd.DataFrame(out, index=frame.index)


def logistic_pipeline(seed: int, features: tuple[str, ...] = FEATURE_NAMES) -> Pipeline:
    numeric = [f for f in features if f not in CATEGORICAL]
    prep = ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                          ("scale", StandardScaler())]), numeric),
        ("cat", OneHotEncoder(handle_unknown="ignore"), [f for f in features if f in CATEGORICAL]),
    ])
    return Pipeline([("prep", prep), ("lr", LogisticRegression(C=1.0, max_iter=2000, random_state=seed))])


def fit_logistic(train: pd.DataFrame, y: np.ndarray, seed: int, max_rows: int,
                 features: tuple[str, ...] = FEATURE_NAMES) -> Pipeline:
    if len(train) > max_rows:
        idx = np.random.default_rng(seed).choice(len(train), size=max_rows, replace=False)
        train, y = train.iloc[np.sort(idx)], np.asarray(y)[np.sort(idx)]
    return logistic_pipeline(seed, features).fit(logistic_input(train, features), y)


def baseline_scores(
    test: pd.DataFrame, train: pd.DataFrame, y_train: np.ndarray, seed: int, max_rows: int,
) -> dict[str, np.ndarray]:
    """Each baseline's score on the test rows (higher = riskier)."""
    lr = fit_logistic(train, y_train, seed, max_rows)
    school = fit_logistic(train, y_train, seed, max_rows, SCHOOL_FEATURES)
    return {
        "abc_rule": abc_rule(test),
        "cct_poverty": cct_poverty(test),
        "school_only": school_only(test, float(np.mean(y_train))),
        "grade_term_lookup": grade_term_lookup(test, train, y_train),
        "school_model": school.predict_proba(logistic_input(test, SCHOOL_FEATURES))[:, 1],
        "logistic": lr.predict_proba(logistic_input(test))[:, 1],
    }
