"""Evaluation metrics, each declaring whether greater is better, under stable names.

Schools act within capacity, so lists are judged by precision and recall among the top k% —
nationally and within each school (each school visits its own top k%) — beside ROC-AUC, PR-AUC,
the Brier score and the expected calibration error (ECE, 10 equal-mass bins, weighted by bin size).

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
from typing import Literal

import numpy as np
import pandas as pd

# The numpy and the compiled Newton fits stop and give up on the same bounds (numba loads lazily).
from training.kernels import CONVERGED_STEP, SEPARABLE_BOUND
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


def _bin_index(p: np.ndarray, bins: int, strategy: str) -> np.ndarray:
    """Bin of each score. "mass": `bins` bins of (nearly) equal row counts in score order (ties by row
    order); "width": `bins` equal-width bins of [0, 1]. At a 1-3% base rate nearly every score lies in
    the first equal-width bin, so a width-binned ECE cannot tell a calibrated model from one that
    under-predicts threefold; equal-mass bins spread the rows over the range where the scores are."""
    if strategy == "width":
        return np.clip((p * bins).astype(int), 0, bins - 1)
    if strategy != "mass":
        raise ValueError(f"unknown binning strategy {strategy!r} (mass or width)")
    order = np.argsort(p, kind="stable")
    idx = np.empty(len(p), dtype=np.int64)
    idx[order] = (np.arange(len(p)) * bins) // max(len(p), 1)
    return idx


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10, strategy: Literal["mass", "width"] = "mass") -> float:
    """Expected calibration error: sum over bins of (bin share) * |mean(p) - mean(y)|; equal-mass bins
    by default (see `_bin_index`). Lower is better; a perfect model still scores about
    sqrt(rate / rows-per-bin) from sampling noise, so judge calibration by O/E and slope with intervals."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    idx = _bin_index(p, bins, strategy)
    count = np.bincount(idx, minlength=bins)
    diff = np.abs(np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y, minlength=bins))
    # sum_b (n_b / n) * |sum_b(p)/n_b - sum_b(y)/n_b| = sum_b |sum_b(p) - sum_b(y)| / n
    return float(diff[count > 0].sum() / len(y))


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10,
                      strategy: Literal["mass", "width"] = "mass") -> pd.DataFrame:
    """Mean score, observed rate and rows per bin (equal-mass bins by default)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    idx = _bin_index(p, bins, strategy)
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


# Weight entries (replicates x rows; 10,000 rows x 200) from which a statistic runs compiled
# (training/kernels.py): below it numpy is fast enough and the process does not pay numba's start
# (2-4 s on a loaded 2-core machine, once per process) - small worlds and the suite keep numpy's bits.
COMPILED_FROM = 2_000_000


def rank_metrics(y: np.ndarray, score: np.ndarray, weights: np.ndarray,
                 chunk: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and PR-AUC (average precision) under each row of `weights` (replicates x rows).

    One sort of the scores, then per replicate the weighted positives and negatives of each group of
    tied scores: ROC-AUC = Σ_g pos_g (neg below g + ½ neg_g) / (P N) (ties count one half, as
    sklearn's roc_auc_score), PR-AUC = Σ_g (pos_g / P) · precision at g (sklearn's
    average_precision_score: one threshold per distinct score). With all weights 1 both equal
    sklearn's figures. A replicate without both outcomes gives NaN. From `COMPILED_FROM` weights one
    compiled pass over the sorted rows serves every replicate (training/kernels.py); below it numpy
    takes the replicates `chunk` at a time to bound memory (chunk x rows floats)."""
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
    if weights.size >= COMPILED_FROM:
        from training.kernels import rank_sums

        return rank_sums(weights, y, order, np.r_[starts, len(s)])
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


# ---------------------------------------------------------------------------------------------
# Calibration that can fail: observed/expected and the recalibration slope, with student-level
# bootstrap intervals, overall and per slice. At a 1-3% base rate an equal-width ECE is small for
# any score that is small (a model that under-predicts threefold passed ECE <= 0.02), so the gate
# judges O/E (is the level right?) and the slope (is the spread right?) and only when the interval
# lies wholly outside the band: a breach is evidence, not noise.

CALIBRATION_PREFIX = "calibration"
# Suffixes `calibration_report` writes for every slice; a gate reads `<slice>.oe_lo` etc.
CALIBRATION_STATS: tuple[str, ...] = (
    "rows", "students", "observed", "expected", "oe", "oe_lo", "oe_hi", "slope", "slope_lo", "slope_hi",
    "intercept", "intercept_lo", "intercept_hi", "ece",
)


def clipped_logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [eps, 1 - eps]. The one logit of training: Platt's calibrator
    (training/model.py) and its bootstrap refits here must agree on it to the bit."""
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    return np.log(p / (1 - p))


_NEWTON_BLOCK = 8  # replicates per block: measured 2x faster than all 200 at once on a 51,000-row fold


def _newton(w: np.ndarray, y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, ok: np.ndarray,
            iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton's method for logit P(y) = a + b x, one fit per row of `w`, from (a, b); returns the new
    (a, b, ok). Only replicates still moving are iterated: most converge in a few steps from the full
    fit, and a few (a slice with a handful of dropouts, a flat likelihood) need all of them."""
    from scipy.special import expit

    a, b, ok = a.copy(), b.copy(), ok.copy()
    active = np.flatnonzero(ok)
    for _ in range(iterations):
        if active.size == 0:
            break
        wa = w if active.size == w.shape[0] else w[active]  # no copy while every replicate still moves
        aa, ba = a[active], b[active]
        mu = expit(aa[:, None] + ba[:, None] * x[None, :])  # 0 or 1 for far-off replicates, as it should
        r = wa * (y[None, :] - mu)
        v = wa * mu * (1 - mu)
        g_a, g_b = r.sum(axis=1), r @ x
        h_aa, h_ab, h_bb = v.sum(axis=1), v @ x, v @ (x * x)
        det = h_aa * h_bb - h_ab ** 2
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            da = (h_bb * g_a - h_ab * g_b) / det
            db = (h_aa * g_b - h_ab * g_a) / det
        good = np.isfinite(da) & np.isfinite(db)
        da, db = np.where(good, da, 0.0), np.where(good, db, 0.0)
        a[active], b[active] = aa + da, ba + db
        # separable replicates drift off: no estimate
        good &= (np.abs(b[active]) < SEPARABLE_BOUND) & (np.abs(a[active]) < SEPARABLE_BOUND)
        ok[active] = good
        active = active[good & (np.abs(da) + np.abs(db) >= CONVERGED_STEP)]
    return a, b, ok


def logistic_recalibration(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None,
                           iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """(slope, intercept) of the logistic regression of y on logit(p), once per row of `weights`.

    `weights` is (n_boot, n) (bootstrap replicates) or None (one fit, unit weights). A calibrated score
    has slope 1 and intercept 0; slope > 1 means the scores are too compressed (the model is too
    timid: the demo model had 1.5), slope < 1 too spread. Newton's method on the two parameters,
    vectorised over replicates; a replicate that does not converge (e.g. no dropout drawn) gives NaN.
    """
    y = np.asarray(y, dtype=float)
    x = clipped_logit(p)
    if weights is None:
        w = np.ones((1, len(y)))
        # Started at slope 0 and the base rate's log-odds: the maximum of a concave likelihood.
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = y.mean() if len(y) else np.nan
            a0, b0 = np.log(rate / (1 - rate)), 0.0
    else:
        w = np.atleast_2d(np.asarray(weights, dtype=float))
        # Replicates start at the full sample's fit: Newton then needs a few steps, not twenty.
        b_full, a_full = logistic_recalibration(y, p, None, iterations)
        a0, b0 = float(a_full[0]), float(b_full[0])
    # A replicate that drew no dropout (or only dropouts) has no finite maximum: left out from the start.
    wy = w @ y
    ok = np.full(w.shape[0], bool(np.isfinite(a0) and np.isfinite(b0))) & (wy > 0) & (wy < w.sum(axis=1))
    a = np.full(w.shape[0], a0 if ok.all() else 0.0)
    b = np.full(w.shape[0], b0 if ok.all() else 0.0)
    if w.size >= COMPILED_FROM:  # one pass over the rows per step for every replicate, no temporaries
        from training.kernels import newton_fits

        a, b, ok = newton_fits(w, y, x, a, b, ok, iterations)
    else:
        # A few replicates at a time (their rows then stay in the CPU's cache), only those still moving.
        for lo in range(0, w.shape[0], _NEWTON_BLOCK):
            blk = slice(lo, lo + _NEWTON_BLOCK)
            a[blk], b[blk], ok[blk] = _newton(w[blk], y, x, a[blk], b[blk], ok[blk], iterations)
    if weights is None and not ok[0] and 0 < wy[0] < len(y):
        # Plain Newton from slope 0 can overshoot and diverge when the scores' logits spread widely
        # (seen on out-of-fold scores of a small calibration fold, whose maximum is finite): the one
        # fit falls back to scikit-learn's L-BFGS, the solver Platt's calibrator itself uses.
        return _lbfgs_recalibration(y, x)
    return np.where(ok, b, np.nan), np.where(ok, a, np.nan)


def _lbfgs_recalibration(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slope, intercept) of one unpenalised logistic regression of y on x, by L-BFGS."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1e6, max_iter=1000).fit(x.reshape(-1, 1), y)
    slope, intercept = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    ok = abs(slope) < SEPARABLE_BOUND and abs(intercept) < SEPARABLE_BOUND
    return np.array([slope if ok else np.nan]), np.array([intercept if ok else np.nan])


def poisson_interval(observed: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean given an observed count: the interval of O/E when
    rows are independent (divide by the expected count). Used when no student keys are given."""
    from scipy.stats import chi2

    alpha = 1 - level
    lo = 0.0 if observed == 0 else chi2.ppf(alpha / 2, 2 * observed) / 2
    hi = chi2.ppf(1 - alpha / 2, 2 * observed + 2) / 2
    return float(lo), float(hi)


def platt_replicates(y_calib: np.ndarray, raw_calib: np.ndarray, calib_weights: np.ndarray,
                     raw: np.ndarray) -> np.ndarray:
    """The published score of `raw` rows as each bootstrap replicate of the calibration fold would
    have made it: Platt refitted per replicate (`logistic_recalibration` is Platt's fit, unpenalised,
    on the same clipped logit), (n_boot, n) floats; NaN where a replicate's fit does not converge.

    Why: the calibrator learns the level of risk from one fold of a few hundred dropouts. A test fold's
    O/E interval that resamples only the test fold treats that level as known, and a correct model
    whose calibration year happened to be quiet is rejected (a 1,000-pupil world: 14 term-2 dropouts
    in the calibration year, 25 in the test year)."""
    slope, intercept = logistic_recalibration(y_calib, raw_calib, calib_weights)
    # 1 / (1 + exp(-(slope x + intercept))) computed in place: one (n_boot, n) matrix, not four.
    z = slope[:, None] * clipped_logit(raw)[None, :]
    z += intercept[:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        return np.divide(1.0, z, out=z)


def calibration_stats(y: np.ndarray, p: np.ndarray, student_key: np.ndarray | None = None,
                      weights: np.ndarray | None = None, level: float = 0.95,
                      p_replicates: np.ndarray | None = None) -> dict[str, float]:
    """O/E, slope and intercept with intervals, equal-mass ECE, rows/students of one set of rows.

    `weights` (n_boot, n) are the student-level bootstrap replicates of these rows (training.bootstrap);
    without them the O/E interval is the exact Poisson one and the slope has none. The same pupil's
    early and mid rows share one outcome, so with weights the intervals are honest about it.
    `p_replicates` (n_boot, n), with `weights`: the scores as each replicate of the calibration fold
    would have published them (`platt_replicates`); the O/E interval then holds the noise of both
    folds - the level the calibrator learnt, and the outcomes it is checked on. Slope and intercept
    describe the published scores themselves and keep the test fold's interval."""
    from training.bootstrap import interval, weighted_ratio

    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    n = len(y)
    out: dict[str, float] = {"rows": float(n), "observed": float(y.sum()), "expected": float(p.sum())}
    out["students"] = float(len(np.unique(student_key))) if student_key is not None else float(n)
    nan = float("nan")
    if n == 0:
        return {**out, **{k: nan for k in CALIBRATION_STATS if k not in out}}
    out["oe"] = out["observed"] / out["expected"] if out["expected"] > 0 else nan
    slope, intercept = logistic_recalibration(y, p)
    out["slope"], out["intercept"] = float(slope[0]), float(intercept[0])
    out["ece"] = ece(y, p)
    if weights is not None and p_replicates is not None:
        w = np.asarray(weights, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = np.einsum("bn,bn->b", w, p_replicates)
            out["oe_lo"], out["oe_hi"] = interval(np.where(expected > 0, (w @ y) / expected, np.nan), level)
    elif weights is not None:
        out["oe_lo"], out["oe_hi"] = interval(weighted_ratio(y, p, weights), level)
    if weights is not None:
        bs, bi = logistic_recalibration(y, p, weights)
        out["slope_lo"], out["slope_hi"] = interval(bs, level)
        out["intercept_lo"], out["intercept_hi"] = interval(bi, level)
    else:
        lo, hi = poisson_interval(out["observed"], level)
        out["oe_lo"], out["oe_hi"] = (lo / out["expected"], hi / out["expected"]) if out["expected"] > 0 else (nan, nan)
        out["slope_lo"] = out["slope_hi"] = out["intercept_lo"] = out["intercept_hi"] = nan
    return out


def calibration_report(
    y: np.ndarray, p: np.ndarray, student_key: np.ndarray, slices: Mapping[str, np.ndarray] | None = None,
    n_boot: int = 200, seed: int = 0, level: float = 0.95, weights: np.ndarray | None = None,
    p_replicates: np.ndarray | None = None,
) -> dict[str, float]:
    """`calibration.<stat>` overall and `calibration.<slice>.<value>.<stat>` for every slice value
    (term, round type, grade band, fairness groups), all on one set of student-level replicates
    (`weights`, or drawn here with `n_boot` and `seed`); `p_replicates` as in `calibration_stats`
    (its rows pair with the weights' rows)."""
    from training.bootstrap import student_weights

    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    keys = np.asarray(student_key)
    w = weights if weights is not None else (student_weights(keys, n_boot, seed) if len(y) else None)
    if p_replicates is not None and (w is None or p_replicates.shape != w.shape):
        raise ValueError(f"p_replicates has shape {getattr(p_replicates, 'shape', None)}, the replicates "
                         f"{None if w is None else w.shape}: one calibration replicate per test replicate")
    out = {f"{CALIBRATION_PREFIX}.{k}": v for k, v in calibration_stats(y, p, keys, w, level, p_replicates).items()}
    for slice_name, values in (slices or {}).items():
        values = np.asarray(values).astype(str)
        for v in sorted(set(values)):
            m = values == v
            stats = calibration_stats(y[m], p[m], keys[m], w[:, m] if w is not None else None, level,
                                      p_replicates[:, m] if p_replicates is not None else None)
            out.update({f"{CALIBRATION_PREFIX}.{slice_name}.{v}.{k}": val for k, val in stats.items()})
    return out


def outside_band(lo: float, hi: float, band: tuple[float, float]) -> bool:
    """True when the interval [lo, hi] lies wholly outside `band` (a breach is evidence, not noise).
    An undefined interval is not a breach here: the caller decides what an unmeasured slice means."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    return hi < band[0] or lo > band[1]


def calibration_breaches(
    metrics: Mapping[str, float], oe_band: tuple[float, float], slope_band: tuple[float, float],
    slices: tuple[str, ...] = ("term",),
) -> list[str]:
    """Reasons a model's calibration fails: the overall O/E or slope interval, or a slice's O/E
    interval (per term by default), lies wholly outside its band. Reads `calibration_report` names."""
    pre = CALIBRATION_PREFIX
    if f"{pre}.oe" not in metrics:
        return ["calibration not measured: no calibration.oe among the run's metrics (trained before O/E was)"]
    out = []
    lo, hi = metrics.get(f"{pre}.oe_lo", math.nan), metrics.get(f"{pre}.oe_hi", math.nan)
    if outside_band(lo, hi, oe_band):
        out.append(f"O/E {metrics[f'{pre}.oe']:.2f} (interval {lo:.2f}-{hi:.2f}) outside [{oe_band[0]}, {oe_band[1]}]")
    lo, hi = metrics.get(f"{pre}.slope_lo", math.nan), metrics.get(f"{pre}.slope_hi", math.nan)
    if outside_band(lo, hi, slope_band):
        out.append(f"calibration slope {metrics.get(f'{pre}.slope', math.nan):.2f} (interval {lo:.2f}-{hi:.2f}) "
                   f"outside [{slope_band[0]}, {slope_band[1]}]")
    for s in slices:
        values = sorted({k[len(f"{pre}.{s}."):].rsplit(".", 1)[0] for k in metrics
                         if k.startswith(f"{pre}.{s}.") and k.endswith(".oe")})
        for v in values:
            base = f"{pre}.{s}.{v}"
            lo, hi = metrics.get(f"{base}.oe_lo", math.nan), metrics.get(f"{base}.oe_hi", math.nan)
            if outside_band(lo, hi, oe_band):
                out.append(f"{s} {v}: O/E {metrics[f'{base}.oe']:.2f} (interval {lo:.2f}-{hi:.2f}) "
                           f"outside [{oe_band[0]}, {oe_band[1]}]")
    return out
