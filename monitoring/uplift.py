"""Who is expected to benefit, beside who is at risk (issue 15, part 6c: the analysts' uplift view).

Where it sits: beside monitoring/effects.py, for analysts after a round's labels have matured and
a randomised holdout ran. The highest risk is not the largest benefit (Athey et al.): a CCT grant
helps a poor child, counselling a disengaged one, and a child at risk from a shock gains from
neither. Two pure pieces:

* `cell_uplift`: the estimated benefit of serving per cell of what the school sees (for instance
  the action its rule picks x poverty x term): the held-out dropout rate minus the served one in
  that cell, from the eligible rows only (a difference of randomised arms, so unbiased per cell).
* `net_benefit_at_capacity`: the dropouts averted when each school serves the top ceil(share x n)
  of its pupils by a ranking, summed over schools, given each pupil's benefit — to compare serving
  by risk with serving by expected benefit at the schools' capacity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def cell_uplift(rows: pd.DataFrame, cells: list[str], min_rows: int = 30) -> pd.Series:
    """Held-out minus served dropout rate per cell (positive = serving helps), NaN where either arm
    has fewer than `min_rows` rows. `rows`: eligible rows with `arm` ('served' / 'holdout'), `dropout`."""
    g = rows.groupby([*cells, "arm"])["dropout"].agg(["mean", "size"]).unstack("arm")
    ok = (g[("size", "served")] >= min_rows) & (g[("size", "holdout")] >= min_rows)
    return (g[("mean", "holdout")] - g[("mean", "served")]).where(ok).rename("uplift")


def top_share_per_school(school: np.ndarray, score: np.ndarray, share: float) -> np.ndarray:
    """Mask of the ceil(share x n_s) highest `score` rows of each school s (ties: first row first)."""
    order = np.lexsort((np.arange(len(score)), -np.asarray(score, dtype=float), np.asarray(school)))
    s = np.asarray(school)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.array([], dtype=int)
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    out = np.zeros(len(order), dtype=bool)
    out[order] = rank < np.repeat(np.ceil(share * sizes).astype(np.int64), sizes)
    return out


def net_benefit_at_capacity(school: np.ndarray, ranking: np.ndarray, benefit: np.ndarray, share: float) -> float:
    """Expected dropouts averted when every school serves its top `share` by `ranking`; `benefit` is
    each row's reduction of dropout probability if served (>= 0 where serving helps)."""
    chosen = top_share_per_school(school, ranking, share)
    return float(np.asarray(benefit, dtype=float)[chosen].sum())
