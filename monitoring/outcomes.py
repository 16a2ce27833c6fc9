"""Outcomes: a published round's scores judged on its labels once they have matured.

A round's label is known when its horizon census (the next census) has been delivered
(`features.pointintime.labels`). Then the round's realised ROC-AUC, precision@k, calibration (ECE
and observed / expected dropouts) and per-group error rates are computed with training's own
metric functions and compared with the model card's validation (test-fold) figures, so a drop is
measured on the same definitions as the release gate used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from monitoring.config import OutcomeConfig, Thresholds
from monitoring.stats import level_of


def observed_to_expected_interval(observed: int, expected: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) Poisson interval of the realised count, over the expected count. The realised
    count of rare dropouts is close to Poisson with the sum of scores as its mean when the scores
    are right; the interval says which O/E values that count cannot rule out."""
    from scipy.stats import chi2

    if not expected > 0:
        return float("nan"), float("nan")
    a = 1.0 - confidence
    low = chi2.ppf(a / 2, 2 * observed) / 2 if observed > 0 else 0.0
    high = chi2.ppf(1 - a / 2, 2 * observed + 2) / 2
    return float(low / expected), float(high / expected)


class OutcomeCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")
    check: str
    value: float | None
    card: float | None = None
    watch: float | None = None
    drift: float | None = None
    level: str
    judged: bool = True
    note: str = ""


class Outcomes(BaseModel):
    """Realised figures of one round, or why there are none yet."""

    model_config = ConfigDict(extra="forbid")
    matured: bool
    note: str = ""
    rows: int = 0
    positives: int = 0
    metrics: dict[str, float | None] = {}
    card: dict[str, float | None] = {}
    checks: list[OutcomeCheck] = []
    fairness: list[dict[str, Any]] = []


def _nan_to_none(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _drop_check(name: str, value: float, card: float | None, th: Thresholds, judged: bool) -> OutcomeCheck:
    if card is None or not np.isfinite(value):
        return OutcomeCheck(check=name, value=_nan_to_none(value), card=card, level="ok", judged=False,
                            note="no validation figure to compare with" if card is None else "undefined")
    drop = card - value
    lvl = level_of(drop, th.watch, th.drift) if judged else "ok"
    return OutcomeCheck(check=name, value=_nan_to_none(value), card=card, watch=th.watch, drift=th.drift, level=lvl,
                        judged=judged, note=f"{drop:+.4f} below the model card")


def judge_outcomes(y: np.ndarray, score: np.ndarray, school: np.ndarray, flagged: np.ndarray, groups: pd.DataFrame,
                   card: dict[str, float], cfg: OutcomeConfig) -> Outcomes:
    """Realised metrics of matured rows and their checks against the model card (pure)."""
    from training.config import FairnessConfig
    from training.fairness import audit_table
    from training.metrics import score_metrics

    y = np.asarray(y, dtype=float)
    score = np.asarray(score, dtype=float)
    m = score_metrics(y, score, school, cfg.capacities)
    pos = int(y.sum())
    judged = pos >= cfg.min_positives
    expected = float(score.sum())
    oe = pos / expected if expected > 0 else float("nan")
    keep = ("roc_auc", "pr_auc", "precision_at_5pct", "precision_at_10pct", "precision_at_20pct", "recall_at_10pct",
            "school_precision_at_10pct", "brier", "ece", "label_rate", "mean_score")
    metrics = {k: _nan_to_none(m.get(k, float("nan"))) for k in keep}
    metrics["observed_to_expected"] = _nan_to_none(oe)
    card_sel = {k: _nan_to_none(card[k]) if k in card and card[k] is not None else None for k in keep}
    checks = [
        _drop_check("roc_auc", m["roc_auc"], card_sel["roc_auc"], cfg.roc_auc_drop, judged),
        _drop_check("precision_at_10pct", m.get("precision_at_10pct", float("nan")), card_sel["precision_at_10pct"],
                    cfg.precision_drop, judged),
    ]
    ece_lvl = level_of(m["ece"], cfg.ece.watch, cfg.ece.drift) if judged else "ok"
    checks.append(OutcomeCheck(check="ece", value=_nan_to_none(m["ece"]), card=card_sel["ece"], watch=cfg.ece.watch,
                               drift=cfg.ece.drift, level=ece_lvl, judged=judged))
    lo, hi = cfg.observed_to_expected
    oe_lo, oe_hi = observed_to_expected_interval(pos, expected, cfg.observed_to_expected_confidence)
    # A breach only when the interval lies wholly outside the band: 38 dropouts against 25 expected
    # is O/E 1.5 but its 95% interval reaches down to 1.07, which a calibrated model also produces.
    outside = np.isfinite(oe) and (oe_lo > hi or oe_hi < lo)
    oe_lvl = "drift" if judged and outside else "ok"
    metrics["observed_to_expected_low"], metrics["observed_to_expected_high"] = _nan_to_none(oe_lo), _nan_to_none(oe_hi)
    checks.append(OutcomeCheck(
        check="observed_to_expected", value=_nan_to_none(oe), watch=None, drift=None, level=oe_lvl, judged=judged,
        note=f"{pos} dropouts against {expected:.1f} expected from the scores "
             f"({cfg.observed_to_expected_confidence:.0%} interval {oe_lo:.2f}-{oe_hi:.2f}); band [{lo}, {hi}]"))

    fcfg = FairnessConfig(band=cfg.fairness_band, min_group_rows=cfg.fairness_min_rows,
                          min_group_positives=cfg.fairness_min_positives, attributes=cfg.fairness_attributes,
                          gate_attributes=cfg.fairness_attributes, gate_metrics=cfg.fairness_metrics)
    table = audit_table(y.astype(int), np.asarray(flagged, dtype=int), groups[list(cfg.fairness_attributes)], fcfg)
    # Ratio metrics only: the gate's "oe" (O/E within a group) has no ratio to a reference group.
    ratio_metrics = tuple(x for x in cfg.fairness_metrics if f"{x}_ratio" in table.columns)
    fairness = []
    for _, r in table.iterrows():
        row = {k: (r[k] if not isinstance(r[k], (np.floating, float)) else _nan_to_none(float(r[k]))) for k in
               ("attribute", "group", "reference", "count", "positives", "too_small", "selection_rate", "precision", "fpr",
                "fnr", *(f"{x}_ratio" for x in ratio_metrics))}
        row = {k: (int(v) if isinstance(v, np.integer) else bool(v) if isinstance(v, np.bool_) else v) for k, v in row.items()}
        outside = [x for x in ratio_metrics if not r["too_small"] and not bool(r[f"{x}_in_band"])]
        row["outside_band"] = outside
        row["judged"] = r["attribute"] in cfg.fairness_judged_attributes
        fairness.append(row)
        if not row["judged"]:  # reported only: not an attribute the release gate checks
            continue
        for x in outside:
            checks.append(OutcomeCheck(check=f"fairness.{r['attribute']}.{r['group']}.{x}_ratio",
                                       value=_nan_to_none(float(r[f"{x}_ratio"])), level="drift", judged=True,
                                       note=f"outside [{cfg.fairness_band[0]}, {cfg.fairness_band[1]}] against {r['reference']}"))
    return Outcomes(matured=True, rows=len(y), positives=pos, metrics=metrics, card=card_sel, checks=checks, fairness=fairness,
                    note="" if judged else f"only {pos} dropouts (< {cfg.min_positives}): reported, not judged")
