"""Evaluation metrics, each declaring whether greater is better, under stable names.

Schools act within capacity, so lists are judged by precision and recall among the top k% —
nationally and within each school (each school visits its own top k%) — beside ROC-AUC, PR-AUC,
the Brier score and the expected calibration error (ECE, 10 equal-width bins, weighted by bin size).

Grade and term explain much of the ranking (dropout concentrates at M3 -> M4), so ROC-AUC and PR-AUC
are also reported WITHIN GRADE: the metric computed among the rows of each grade, averaged over
grades weighted by their dropouts (`within_grade_roc_auc` = the chance that a random dropout is
ranked above a random non-dropout *of its own grade*). Grades without both outcomes are left out.
`rank_metrics` computes ROC-AUC and PR-AUC for many row weightings at once (the replicates of a
student-level bootstrap, training/bootstrap.py) from one sort of the scores.
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
    "rows": True, "positives": True, "within_grade_roc_auc": True, "within_grade_pr_auc": True,
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
    grade: np.ndarray | None = None,
) -> dict[str, float]:
    """All headline metrics of one score on one set of rows. Rule scores are not probabilities:
    `probabilistic=False` leaves out Brier and ECE for them. With `grade`, also the within-grade
    ROC-AUC and PR-AUC."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    out: dict[str, float] = {"rows": float(len(y)), "positives": float(y.sum()),
                             "label_rate": float(y.mean()) if len(y) else float("nan")}
    both = 0 < y.sum() < len(y)
    out["roc_auc"] = float(roc_auc_score(y, score)) if both else float("nan")
    out["pr_auc"] = float(average_precision_score(y, score)) if both else float("nan")
    if grade is not None:
        wg_auc, wg_ap = within_grade_rank_metrics(y, score, grade, np.ones((1, len(y))))
        out["within_grade_roc_auc"], out["within_grade_pr_auc"] = float(wg_auc[0]), float(wg_ap[0])
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
    grade: np.ndarray | None = None,
) -> dict[str, float]:
    """Overall metrics plus `<slice>.<value>.<metric>` for each slicing column (round_type, grade_band)."""
    out = score_metrics(y, score, school, capacities, probabilistic, grade)
    for slice_name, values in slices.items():
        values = np.asarray(values).astype(str)
        for v in sorted(set(values)):
            m = values == v
            sub_grade = None if grade is None else np.asarray(grade)[m]
            for k, val in score_metrics(y[m], score[m], school[m], capacities, probabilistic, sub_grade).items():
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


def rank_metrics(y: np.ndarray, score: np.ndarray, weights: np.ndarray,
                 chunk: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and PR-AUC (average precision) under each row of `weights` (replicates x rows).

    One sort of the scores, then per replicate the weighted positives and negatives of each group of
    tied scores: ROC-AUC = Σ_g pos_g (neg below g + ½ neg_g) / (P N) (ties count one half, as
    sklearn's roc_auc_score), PR-AUC = Σ_g (pos_g / P) · precision at g (sklearn's
    average_precision_score: one threshold per distinct score). With all weights 1 both equal
    sklearn's figures. A replicate without both outcomes gives NaN. Replicates are taken `chunk` at a
    time to bound memory (chunk x rows floats)."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    n_rep = weights.shape[0]
    auc, ap = np.full(n_rep, np.nan), np.full(n_rep, np.nan)
    if len(y) == 0:
        return auc, ap
    order = np.argsort(-score, kind="stable")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s) != 0) + 1]
    ys = y[order]
    for lo in range(0, n_rep, chunk):
        w = weights[lo:lo + chunk][:, order]
        pos = np.add.reduceat(w * ys, starts, axis=1)
        neg = np.add.reduceat(w * (1 - ys), starts, axis=1)
        p_tot, n_tot = pos.sum(axis=1), neg.sum(axis=1)
        ok = (p_tot > 0) & (n_tot > 0)
        neg_below = n_tot[:, None] - np.cumsum(neg, axis=1)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
            a = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (p_tot * n_tot)
            b = (pos * precision).sum(axis=1) / p_tot
        auc[lo:lo + chunk] = np.where(ok, a, np.nan)
        ap[lo:lo + chunk] = np.where(ok, b, np.nan)
    return auc, ap


def within_grade_rank_metrics(y: np.ndarray, score: np.ndarray, grade: np.ndarray,
                              weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-grade ROC-AUC and PR-AUC under each row of `weights`: each grade's metric, averaged over
    the grades with both outcomes, weighted by the grade's (weighted) dropouts."""
    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    g = np.asarray(grade).astype(str)
    n_rep = weights.shape[0]
    num_auc, num_ap, den = np.zeros(n_rep), np.zeros(n_rep), np.zeros(n_rep)
    for value in np.unique(g):
        m = g == value
        auc, ap = rank_metrics(y[m], score[m], weights[:, m])
        dropouts = weights[:, m] @ y[m]
        ok = np.isfinite(auc)
        num_auc += np.where(ok, auc * dropouts, 0.0)
        num_ap += np.where(ok, ap * dropouts, 0.0)
        den += np.where(ok, dropouts, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num_auc / den, np.nan), np.where(den > 0, num_ap / den, np.nan)
