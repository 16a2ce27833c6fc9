"""The compiled inner loop of `training.metrics.logistic_recalibration`: Newton's method for the
two-parameter logistic regression logit P(y) = a + b x, one fit per bootstrap replicate.

Why compiled: the calibration report refits (slope, intercept) on 200 replicates for every slice of
the test fold and Platt's calibrator on 200 replicates of the calibration fold; in numpy each Newton
step materialises a handful of (replicates x rows) temporaries, and that was most of the evaluation
time at 2M rows. Here one pass over the rows per step accumulates, for every replicate still
moving, the five sums Newton needs, skipping the rows a replicate did not draw (weight 0, about 37%). The arithmetic is the
numpy version's, summed in another order: figures agree to float noise (tests/unit/
test_training_calibration.py holds them to 1e-9 relative against the numpy reference).

Only `training.metrics` calls this; numba is imported when the first fit runs, not at import.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_KERNEL: Any = None

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
            # wt is (rows, replicates): a row's replicate weights lie side by side, the layout
            # training.bootstrap.student_weights produces, so no (replicates x rows) copy is made.
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
    w = np.asarray(w, dtype=np.float64)
    wt = w.T if w.T.flags["C_CONTIGUOUS"] else np.ascontiguousarray(w.T)
    return _kernel()(wt, np.ascontiguousarray(y, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float64),
                     np.array(a, dtype=np.float64), np.array(b, dtype=np.float64), np.array(ok, dtype=np.bool_),
                     int(iterations), CONVERGED_STEP, SEPARABLE_BOUND)
