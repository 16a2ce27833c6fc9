"""Evaluation metrics, each declaring whether greater is better, under stable names.

Schools act within capacity, so lists are judged by precision and recall among the top k% —
nationally and within each school (each school visits its own top k%) — beside ROC-AUC, PR-AUC,
the Brier score and the expected calibration error (ECE, 10 equal-width bins, weighted by bin size).
Ties in a score are broken by row order (a stable sort), so a rule with few distinct values is
judged on an arbitrary but reproducible order of its tied rows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

# name -> greater is better. Dotted names (baselines.abc_rule.roc_auc, round_type.mid.ece,
# groups.sex.F.fpr) take the direction of their last part.
METRICS: dict[str, bool] = {
    "roc_auc": True, "pr_auc": True, "brier": False, "ece": False, "label_rate": True, "mean_score": True,
    "rows": True, "positives": True,
}
# Metrics of the top k% by score, one per configured capacity: named by `at_k` and nowhere else, so
# any capacity (0.15 as well as 0.05/0.10/0.20) has a name and a direction.
AT_K_METRICS: dict[str, bool] = {"precision": True, "recall": True, "school_precision": True, "school_recall": True}
_AT_K_NAME = re.compile(r"^(?P<metric>[a-z_]+)_at_(?P<pct>\d+)pct$")
GROUP_METRICS: dict[str, bool] = {
    "selection_rate": True, "precision": True, "fpr": False, "fnr": False, "count": True, "positives": True,
}


def greater_is_better(name: str) -> bool:
    """Direction of a metric by its stable name (raises KeyError for an unknown metric)."""
    last = name.rsplit(".", 1)[-1]
    for prefix in ("ceiling_", "gap_"):
        if last.startswith(prefix):
            base = last[len(prefix):]
            # gap = ceiling - model: smaller gap is better whatever the metric's direction
            return False if prefix == "gap_" else greater_is_better(base)
    if last.endswith("_ratio"):
        raise KeyError(f"{name}: a ratio is better near 1, neither greater nor smaller")
    if last in METRICS:
        return METRICS[last]
    at_k_name = _AT_K_NAME.match(last)
    if at_k_name and at_k_name["metric"] in AT_K_METRICS:
        return AT_K_METRICS[at_k_name["metric"]]
    return GROUP_METRICS[last]


def measured_names(capacities: tuple[float, ...]) -> frozenset[str]:
    """Every name `score_metrics` can report for these capacities (what a gate may compare on)."""
    return frozenset(METRICS) | {at_k(m, c) for m in AT_K_METRICS for c in capacities}


def at_k(metric: str, share: float) -> str:
    """The stable name of a top-k metric at a capacity: at_k("precision", 0.1) == "precision_at_10pct"."""
    if metric not in AT_K_METRICS:
        raise KeyError(f"{metric}: not a top-k metric (one of {sorted(AT_K_METRICS)})")
    if not 0 < share < 1:
        raise ValueError(f"capacity {share} must be a share between 0 and 1")
    return f"{metric}_at_{round(share * 100)}pct"


def _top_mask(score: np.ndarray, frac: float) -> np.ndarray:
    n = len(score)
    k = max(1, math.ceil(frac * n)) if n else 0
    order = np.argsort(-score, kind="stable")
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask


def precision_at_k(y: np.ndarray, score: np.ndarray, frac: float) -> float:
    """Share of dropouts among the top ceil(frac * n) rows by score."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    if len(y) == 0:
        return float("nan")
    return float(y[_top_mask(score, frac)].mean())


def recall_at_k(y: np.ndarray, score: np.ndarray, frac: float) -> float:
    """Share of all dropouts found among the top ceil(frac * n) rows by score."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    if y.sum() == 0:
        return float("nan")
    return float(y[_top_mask(score, frac)].sum() / y.sum())


def school_rank(score: np.ndarray, school: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank within the row's school by descending score, ties by row order; size of the school)."""
    score = np.asarray(score, dtype=float)
    _, code = np.unique(np.asarray(school).astype(str), return_inverse=True)
    n = len(score)
    order = np.lexsort((np.arange(n), -score, code))  # by school, then score desc, then row
    sorted_code = code[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_code)) + 1]
    sizes = np.diff(np.r_[starts, n])
    rank_sorted = np.arange(n) - np.repeat(starts, sizes)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    return rank, np.bincount(code)[code]


def school_top_mask(score: np.ndarray, school: np.ndarray, frac: float,
                    ranked: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Each school's own top ceil(frac * n_school) rows (ties by row order)."""
    rank, size = ranked if ranked is not None else school_rank(score, school)
    return rank < np.maximum(1, np.ceil(frac * size))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width bins of (bin share) * |mean(p) - mean(y)|."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(total)


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    df = pd.DataFrame({"bin": idx, "p": p, "y": y})
    return df.groupby("bin").agg(mean_score=("p", "mean"), observed=("y", "mean"), rows=("y", "size")).reset_index()


def score_metrics(
    y: np.ndarray, score: np.ndarray, school: np.ndarray | None = None,
    capacities: tuple[float, ...] = (0.05, 0.10, 0.20), probabilistic: bool = True,
) -> dict[str, float]:
    """All headline metrics of one score on one set of rows. Rule scores are not probabilities:
    `probabilistic=False` leaves out Brier and ECE for them."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    out: dict[str, float] = {"rows": float(len(y)), "positives": float(y.sum()),
                             "label_rate": float(y.mean()) if len(y) else float("nan")}
    both = 0 < y.sum() < len(y)
    out["roc_auc"] = float(roc_auc_score(y, score)) if both else float("nan")
    out["pr_auc"] = float(average_precision_score(y, score)) if both else float("nan")
    if probabilistic:
        out["brier"] = float(np.mean((score - y) ** 2)) if len(y) else float("nan")
        out["ece"] = ece(y, score)
        out["mean_score"] = float(score.mean()) if len(y) else float("nan")
    ranked = school_rank(score, np.asarray(school)) if school is not None and len(y) else None
    for c in capacities:
        out[at_k("precision", c)] = precision_at_k(y, score, c)
        out[at_k("recall", c)] = recall_at_k(y, score, c)
        if school is not None and len(y):
            m = school_top_mask(score, np.asarray(school), c, ranked)
            out[at_k("school_precision", c)] = float(y[m].mean())
            out[at_k("school_recall", c)] = float(y[m].sum() / y.sum()) if y.sum() else float("nan")
    return out


def sliced_metrics(
    y: np.ndarray, score: np.ndarray, school: np.ndarray, slices: Mapping[str, np.ndarray],
    capacities: tuple[float, ...] = (0.05, 0.10, 0.20), probabilistic: bool = True,
) -> dict[str, float]:
    """Overall metrics plus `<slice>.<value>.<metric>` for each slicing column (round_type, grade_band)."""
    out = score_metrics(y, score, school, capacities, probabilistic)
    for slice_name, values in slices.items():
        values = np.asarray(values).astype(str)
        for v in sorted(set(values)):
            m = values == v
            for k, val in score_metrics(y[m], score[m], school[m], capacities, probabilistic).items():
                out[f"{slice_name}.{v}.{k}"] = val
    return out


def ceiling_and_gap(model: Mapping[str, float], ceiling: Mapping[str, float]) -> dict[str, float]:
    """ceiling_<m> for the true probabilities and gap_<m>: how far the model is behind the ceiling,
    in the metric's bad direction (ceiling - model when greater is better, model - ceiling otherwise)."""
    out: dict[str, float] = {}
    for k, v in ceiling.items():
        if "." in k or k in ("rows", "positives", "label_rate"):
            continue
        out[f"ceiling_{k}"] = v
        if k in model:
            out[f"gap_{k}"] = (v - model[k]) if greater_is_better(k) else (model[k] - v)
    return out
