"""Compiled inner loops of the student-level bootstrap evaluation (training/metrics.py): Newton's
method for the logistic recalibration (logit P(y) = a + b x) and the ranking metrics (ROC-AUC and
average precision), once per bootstrap replicate.

Why compiled: the calibration report refits (slope, intercept) on 200 replicates for every slice of
the test fold and Platt's calibrator on 200 replicates of the calibration fold, and the headline
intervals rank every score under 200 replicates; in numpy each step materialises a handful of
(replicates x rows) temporaries, and that was most of the evaluation time at 2M rows. Here one pass
over the rows accumulates, for every replicate, the sums the statistic needs, skipping the rows a
replicate did not draw (weight 0, about 37%). Weights are read as (rows, replicates), the layout
training.bootstrap.student_weights produces, so no (replicates x rows) copy is made. The arithmetic is
the numpy version's, summed in another order: figures agree to float noise (tests/unit/
test_training_calibration.py and test_training_metrics.py hold them to 1e-9 relative against the
numpy path, which still runs below `training.metrics.COMPILED_FROM`).

Only `training.metrics` calls this; numba is imported when the first statistic runs, not at import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_KERNEL: Any = None
_RANK_KERNEL: Any = None

# A step smaller than this ends a replicate's iterations (as in the numpy version it replaced).
CONVERGED_STEP = 1e-9
# Beyond this a replicate is separable (the likelihood has no finite maximum): no estimate.
SEPARABLE_BOUND = 1e3


def _kernel() -> Any:
    """The compiled fit, built (or loaded from numba's cache) on first use."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        # error_model="numpy": a zero determinant gives inf/nan (the replicate fails), not an exception.
        @numba.njit(cache=True, error_model="numpy")
        def fits(wt, y, x, a, b, ok, iterations, converged, bound):  # pragma: no cover - compiled
            # wt is (rows, replicates): a row's replicate weights lie side by side.
            n = wt.shape[0]
            active = np.flatnonzero(ok)
            sums = np.empty((active.size, 5))
            for _ in range(iterations):
                if active.size == 0:
                    break
                sums[: active.size] = 0.0
                for i in range(n):
                    xi, yi = x[i], y[i]
                    for k in range(active.size):
                        r = active[k]
                        wi = wt[i, r]
                        if wi == 0.0:  # a row its replicate did not draw adds nothing
                            continue
                        mu = 1.0 / (1.0 + np.exp(-(a[r] + b[r] * xi)))
                        ri = wi * (yi - mu)
                        vi = wi * mu * (1.0 - mu)
                        sums[k, 0] += ri
                        sums[k, 1] += ri * xi
                        sums[k, 2] += vi
                        sums[k, 3] += vi * xi
                        sums[k, 4] += vi * xi * xi
                moving = 0
                for k in range(active.size):
                    r = active[k]
                    g_a, g_b, h_aa, h_ab, h_bb = sums[k, 0], sums[k, 1], sums[k, 2], sums[k, 3], sums[k, 4]
                    det = h_aa * h_bb - h_ab * h_ab
                    da = (h_bb * g_a - h_ab * g_b) / det
                    db = (h_aa * g_b - h_ab * g_a) / det
                    if not (np.isfinite(da) and np.isfinite(db)):
                        ok[r] = False
                        continue
                    a[r] += da
                    b[r] += db
                    if not (abs(b[r]) < bound and abs(a[r]) < bound):
                        ok[r] = False
                        continue
                    if abs(da) + abs(db) >= converged:
                        active[moving] = r
                        moving += 1
                active = active[:moving]
            return a, b, ok

        _KERNEL = fits
    return _KERNEL


def newton_fits(w: np.ndarray, y: np.ndarray, x: np.ndarray, a: np.ndarray, b: np.ndarray, ok: np.ndarray,
                iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton's method for logit P(y) = a + b x, one fit per row of the weights `w` (n_rep, n), each
    started from its (a, b); replicates with `ok` False are left alone. Returns the new (a, b, ok):
    ok turns False where a step is undefined (singular Hessian) or the fit runs off (separable)."""
    return _kernel()(_weights_by_row(w), np.ascontiguousarray(y, dtype=np.float64),
                     np.ascontiguousarray(x, dtype=np.float64),
                     np.array(a, dtype=np.float64), np.array(b, dtype=np.float64), np.array(ok, dtype=np.bool_),
                     int(iterations), CONVERGED_STEP, SEPARABLE_BOUND)


def _weights_by_row(w: np.ndarray) -> np.ndarray:
    """(rows, replicates) C-ordered view of (replicates, rows) weights: free for student_weights'
    column-major matrices, one copy otherwise."""
    w = np.asarray(w, dtype=np.float64)
    return w.T if w.T.flags["C_CONTIGUOUS"] else np.ascontiguousarray(w.T)


def _rank_kernel() -> Any:
    """The compiled ranking sums, built (or loaded from numba's cache) on first use."""
    global _RANK_KERNEL
    if _RANK_KERNEL is None:
        import numba

        @numba.njit(cache=True, error_model="numpy")
        def ranks(wt, y, order, starts):  # pragma: no cover - compiled
            n, n_rep = wt.shape
            p_tot, n_tot = np.zeros(n_rep), np.zeros(n_rep)
            for i in range(n):
                yi = y[i]
                for r in range(n_rep):
                    wi = wt[i, r]
                    p_tot[r] += wi * yi
                    n_tot[r] += wi * (1.0 - yi)
            tp, fp = np.zeros(n_rep), np.zeros(n_rep)
            auc_num, ap_num = np.zeros(n_rep), np.zeros(n_rep)
            pos, neg = np.empty(n_rep), np.empty(n_rep)
            for g in range(starts.size - 1):  # groups of tied scores, highest first
                pos[:] = 0.0
                neg[:] = 0.0
                for j in range(starts[g], starts[g + 1]):
                    i = order[j]
                    yi = y[i]
                    for r in range(n_rep):
                        wi = wt[i, r]
                        if wi != 0.0:
                            pos[r] += wi * yi
                            neg[r] += wi * (1.0 - yi)
                for r in range(n_rep):
                    tp[r] += pos[r]
                    fp[r] += neg[r]
                    neg_below = n_tot[r] - fp[r]
                    precision = tp[r] / (tp[r] + fp[r]) if tp[r] + fp[r] > 0 else 0.0
                    auc_num[r] += pos[r] * (neg_below + 0.5 * neg[r])
                    ap_num[r] += pos[r] * precision
            auc, ap = np.full(n_rep, np.nan), np.full(n_rep, np.nan)
            for r in range(n_rep):
                if p_tot[r] > 0 and n_tot[r] > 0:
                    auc[r] = auc_num[r] / (p_tot[r] * n_tot[r])
                    ap[r] = ap_num[r] / p_tot[r]
            return auc, ap

        _RANK_KERNEL = ranks
    return _RANK_KERNEL


def rank_sums(w: np.ndarray, y: np.ndarray, order: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and average precision under each row of the weights `w` (replicates, rows): `order`
    sorts the rows by descending score and `starts` (ending with the row count) bounds its groups of
    tied scores. See `training.metrics.rank_metrics` for the definitions."""
    return _rank_kernel()(_weights_by_row(w), np.ascontiguousarray(y, dtype=np.float64),
                          np.ascontiguousarray(order, dtype=np.int64), np.ascontiguousarray(starts, dtype=np.int64))
