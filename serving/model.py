"""What serving adds to a registered model: the risk-group labels it shows, the booster flattened
for fast exact TreeSHAP, and contributions moved onto the published score's logit scale.

The model itself is training's `RiskModel` (loaded with its lineage by
`training.registry.load_model`); its `encode` gives the very matrix LightGBM and
`serving.fastshap` read, so scores and explanations are computed on the same numbers.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from training.model import RISK_GROUP_TH, RISK_GROUPS, RiskModel

__all__ = ["ADDITIVITY_TOLERANCE", "RISK_GROUPS", "RISK_GROUP_EN", "RISK_GROUP_TH", "PublishedScale", "published_logit",
           "published_scale", "shap_tables", "to_published_scale"]

RISK_GROUP_EN: dict[str, str] = {"problem": "problem", "at_risk": "at-risk", "normal": "normal"}

# One flattening per loaded model, dropped with it: building the tables takes a few seconds and the
# service keeps several versions in memory for replay.
_TABLES: weakref.WeakKeyDictionary[RiskModel, Any] = weakref.WeakKeyDictionary()


def shap_tables(model: RiskModel) -> Any:  # -> serving.fastshap.TreeTables
    """The model's booster flattened for fast exact TreeSHAP (built on first use, then kept)."""
    tables = _TABLES.get(model)
    if tables is None:
        from serving.fastshap import TreeTables

        tables = _TABLES[model] = TreeTables.from_booster(model.booster_)
    return tables


# |base + sum of contributions - logit(published score)| above this is an additivity failure (issue 12's
# figure: 100% of scored pupils within 1e-9).
ADDITIVITY_TOLERANCE = 1e-9


@dataclass(frozen=True)
class PublishedScale:
    """How the booster's raw margin becomes the published score's logit.

    Platt (the default calibration) is affine on the margin: logit(score) = slope * margin + intercept,
    so SHAP contributions times `slope`, with `slope * base + intercept` as the base, add up to the
    published logit exactly (Shapley values are linear in the model's output). The only exception is
    the calibrator's clip of the raw probability to [1e-6, 1 - 1e-6] (margins beyond about -13.8):
    those pupils are counted as additivity failures, never hidden.

    Isotonic calibration is a step map, not affine: no attribution on its scale is exact. There each
    pupil's contributions are rescaled by the secant (logit(score) - logit(base score)) / (margin -
    base margin), which keeps their signs and ranking and adds up by construction; a pupil whose
    margin equals the base's but whose step differs is a counted failure."""

    method: Literal["platt", "isotonic"]
    slope: float = 1.0
    intercept: float = 0.0


def published_scale(model: RiskModel) -> PublishedScale:
    """The map of this model's calibrator (reads the fitted Platt coefficients `a_`, `b_`)."""
    cal = model.calibrator_
    if cal.method == "platt":
        return PublishedScale("platt", float(cal.a_), float(cal.b_))
    return PublishedScale("isotonic")


def published_logit(score: np.ndarray) -> np.ndarray:
    """logit of the published probability, computed so that small probabilities keep their digits."""
    p = np.asarray(score, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(p) - np.log1p(-p)


def to_published_scale(model: RiskModel, contrib: np.ndarray, score: np.ndarray,
                       inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(contributions on the published logit scale, base last; residual per row).

    `contrib` is TreeSHAP on the raw margin in LightGBM's layout (features, then the base value) and
    `score` the published probability of the same rows. The residual is base + sum of contributions
    minus logit(score): zero up to rounding (see `PublishedScale` for when it is not). `inplace`
    overwrites `contrib` (float64) instead of allocating a second round-sized matrix."""
    contrib = np.asarray(contrib, dtype=np.float64)
    target = published_logit(score)
    scale = published_scale(model)
    out = contrib if inplace else np.empty_like(contrib)
    if scale.method == "platt":
        np.multiply(contrib, scale.slope, out=out)
        out[:, -1] += scale.intercept
    else:
        base_margin = contrib[:, -1]
        base_logit = published_logit(model.risk_score_from_margin(base_margin[:1]))[0] if len(contrib) else 0.0
        diff = contrib[:, :-1].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            secant = np.where(np.abs(diff) > 1e-12, (target - base_logit) / diff, 0.0)
        secant = np.where(np.isfinite(secant), secant, 0.0)
        np.multiply(contrib[:, :-1], secant[:, None], out=out[:, :-1])
        out[:, -1] = base_logit
    residual = out.sum(axis=1) - target
    return out, residual
