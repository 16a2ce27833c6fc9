"""Drift statistics: small pure functions `(reference, current) -> StatResult`, registered by name.

Monitoring chooses statistics by name in its config (`MonitorConfig.drift`), as evidently does, so
a new statistic is one decorated function. Every function takes two 1-D samples (numpy arrays or
pandas Series; missing values allowed) and the thresholds to judge by, and returns the score, the
level it reaches (ok / watch / drift) and whether it drifted. Nothing here reads files or models.

Thresholds (the documented defaults, `DriftConfig`):
  PSI  (population stability index, sum over bins of (c - r) * ln(c / r)):
       < 0.10 stable · 0.10-0.25 watch · >= 0.25 drift. The usual credit-risk convention; with
       ten quantile bins, sampling noise alone gives PSI of about bins / n per sample (0.005 at
       2,000 rows), well below the watch line.
  missing_rate_change: absolute change in the share of missing values; watch 0.05, drift 0.20.
  share_change: the largest absolute change of a category's share (risk groups); watch 0.05, drift 0.10.
  ks: the Kolmogorov-Smirnov distance between the two distributions; watch 0.1, drift 0.2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Level = Literal["ok", "watch", "drift"]
Kind = Literal["numeric", "categorical", "any"]
# Added to every bin share before the logarithm: an empty bin would otherwise give infinite PSI.
PSI_EPSILON = 1e-4
MISSING = "__missing__"


@dataclass(frozen=True)
class StatResult:
    """One statistic on one column: the score, the level it reaches and whether that is drift."""

    statistic: str
    score: float
    level: Level
    watch: float
    drift: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return self.level == "drift"

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": self.statistic, "score": _round(self.score), "level": self.level,
                "drifted": self.drifted, "watch": self.watch, "drift": self.drift, "details": self.details}


StatFn = Callable[..., StatResult]


@dataclass(frozen=True)
class Statistic:
    name: str
    kind: Kind
    fn: StatFn
    greater_is_worse: bool = True


STATISTICS: dict[str, Statistic] = {}


def statistic(name: str, kind: Kind) -> Callable[[StatFn], StatFn]:
    """Register a statistic under `name` (used in config) for columns of `kind`."""

    def deco(fn: StatFn) -> StatFn:
        if name in STATISTICS:
            raise ValueError(f"statistic {name!r} registered twice")
        STATISTICS[name] = Statistic(name=name, kind=kind, fn=fn)
        return fn

    return deco


def get_statistic(name: str) -> Statistic:
    try:
        return STATISTICS[name]
    except KeyError:
        raise ValueError(f"unknown drift statistic {name!r}; known: {', '.join(sorted(STATISTICS))}") from None


def level_of(score: float, watch: float, drift: float) -> Level:
    if not np.isfinite(score):
        return "ok"
    return "drift" if score >= drift else "watch" if score >= watch else "ok"


def _round(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _numeric(x: Any) -> np.ndarray:
    return pd.to_numeric(pd.Series(x).astype("Float64"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _labels(x: Any) -> np.ndarray:
    s = pd.Series(x).astype("object")
    return s.where(s.notna(), MISSING).astype(str).to_numpy()


def psi_from_shares(ref: np.ndarray, cur: np.ndarray) -> float:
    r = np.asarray(ref, dtype=float) + PSI_EPSILON
    c = np.asarray(cur, dtype=float) + PSI_EPSILON
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (distinct values only: a feature with few
    values, like a count, gets one bin per value instead of empty duplicate bins)."""
    ref = reference[np.isfinite(reference)]
    if len(ref) == 0:
        return np.array([])
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1], method="linear"))


def numeric_bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares per bin: (-inf, e1], (e1, e2], ..., (ek, inf), then one bin for missing values."""
    finite = np.isfinite(values)
    idx = np.searchsorted(edges, values[finite], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, float((~finite).sum()))
    return counts / max(len(values), 1)


@statistic("psi", kind="numeric")
def psi_numeric(reference: Any, current: Any, *, watch: float = 0.1, drift: float = 0.25, bins: int = 10) -> StatResult:
    """PSI over quantile bins of the reference, with missing values as a bin of their own (a source
    that stops delivering a column shows up here as well as in the missing rate)."""
    ref, cur = _numeric(reference), _numeric(current)
    edges = quantile_edges(ref, bins)
    r, c = numeric_bin_shares(ref, edges), numeric_bin_shares(cur, edges)
    score = psi_from_shares(r, c)
    worst = int(np.argmax(np.abs(c - r)))
    label = "missing" if worst == len(edges) + 1 else _bin_label(edges, worst)
    return StatResult("psi", score, level_of(score, watch, drift), watch, drift, {
        "bins": len(r), "largest_shift": {"bin": label, "reference": round(float(r[worst]), 4),
                                          "current": round(float(c[worst]), 4)},
        "reference_median": _round(float(np.nanmedian(ref))) if np.isfinite(ref).any() else None,
        "current_median": _round(float(np.nanmedian(cur))) if np.isfinite(cur).any() else None,
    })


def _bin_label(edges: np.ndarray, i: int) -> str:
    if len(edges) == 0:
        return "all values"
    if i == 0:
        return f"<= {edges[0]:.4g}"
    if i == len(edges):
        return f"> {edges[-1]:.4g}"
    return f"({edges[i - 1]:.4g}, {edges[i]:.4g}]"


@statistic("psi_categorical", kind="categorical")
def psi_categorical(reference: Any, current: Any, *, watch: float = 0.1, drift: float = 0.25, **_: Any) -> StatResult:
    """PSI over the categories of both samples (missing is a category; unseen categories count)."""
    ref, cur = _labels(reference), _labels(current)
    cats = sorted(set(ref) | set(cur))
    r = np.array([(ref == k).mean() if len(ref) else 0.0 for k in cats])
    c = np.array([(cur == k).mean() if len(cur) else 0.0 for k in cats])
    score = psi_from_shares(r, c)
    worst = int(np.argmax(np.abs(c - r))) if cats else 0
    return StatResult("psi_categorical", score, level_of(score, watch, drift), watch, drift, {
        "categories": len(cats),
        "largest_shift": {"category": cats[worst] if cats else None, "reference": round(float(r[worst]), 4) if cats else None,
                          "current": round(float(c[worst]), 4) if cats else None},
    })


@statistic("ks", kind="numeric")
def ks_distance(reference: Any, current: Any, *, watch: float = 0.1, drift: float = 0.2, **_: Any) -> StatResult:
    """Largest distance between the two empirical distribution functions (finite values only)."""
    ref, cur = _numeric(reference), _numeric(current)
    ref, cur = np.sort(ref[np.isfinite(ref)]), np.sort(cur[np.isfinite(cur)])
    if len(ref) == 0 or len(cur) == 0:
        return StatResult("ks", float("nan"), "ok", watch, drift, {"note": "a sample has no finite value"})
    grid = np.concatenate([ref, cur])
    score = float(np.max(np.abs(np.searchsorted(ref, grid, side="right") / len(ref)
                                - np.searchsorted(cur, grid, side="right") / len(cur))))
    return StatResult("ks", score, level_of(score, watch, drift), watch, drift, {})


@statistic("missing_rate_change", kind="any")
def missing_rate_change(reference: Any, current: Any, *, watch: float = 0.05, drift: float = 0.2, **_: Any) -> StatResult:
    """Absolute change in the share of missing values."""
    r = float(pd.Series(reference).isna().mean()) if len(reference) else 0.0
    c = float(pd.Series(current).isna().mean()) if len(current) else 0.0
    score = abs(c - r)
    return StatResult("missing_rate_change", score, level_of(score, watch, drift), watch, drift,
                      {"reference": round(r, 4), "current": round(c, 4)})


@statistic("share_change", kind="categorical")
def share_change(reference: Any, current: Any, *, watch: float = 0.05, drift: float = 0.1, **_: Any) -> StatResult:
    """The largest absolute change in a category's share (e.g. of a risk group)."""
    ref, cur = _labels(reference), _labels(current)
    cats = sorted(set(ref) | set(cur))
    shares = {k: (float((ref == k).mean()) if len(ref) else 0.0, float((cur == k).mean()) if len(cur) else 0.0) for k in cats}
    if not shares:
        return StatResult("share_change", float("nan"), "ok", watch, drift, {})
    worst = max(shares, key=lambda k: abs(shares[k][1] - shares[k][0]))
    score = abs(shares[worst][1] - shares[worst][0])
    return StatResult("share_change", score, level_of(score, watch, drift), watch, drift, {
        "largest_shift": worst, "shares": {k: {"reference": round(a, 4), "current": round(b, 4)} for k, (a, b) in shares.items()},
    })
