"""Outcomes: a published round's scores judged on its labels once they have matured.

A round's label is known when its horizon census (the next census) has been delivered
(`features.pointintime.labels`). Then the round's realised ROC-AUC, precision@k, calibration (ECE
and observed / expected dropouts) and per-group error rates are computed with training's own
metric functions and compared with the model card's validation (test-fold) figures, so a drop is
measured on the same definitions as the release gate used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from monitoring.config import OutcomeConfig, Thresholds
from monitoring.effects import ActionEffects
from monitoring.stats import level_of


def ratio_interval(x1: float, n1: float, x0: float, n0: float, confidence: float = 0.95) -> tuple[float, float]:
    """Katz log interval of the ratio of two independent proportions, (x1/n1) / (x0/n0).

    Used for a group's miss rate (or false-alarm rate) over the reference group's: disjoint pupils,
    one row each. Undefined (NaN) when either side has no event or no denominator."""
    from scipy.stats import norm

    if min(x1, n1, x0, n0) <= 0:
        return float("nan"), float("nan")
    ratio = (x1 / n1) / (x0 / n0)
    se = float(np.sqrt(1 / x1 - 1 / n1 + 1 / x0 - 1 / n0))
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    return float(ratio * np.exp(-z * se)), float(ratio * np.exp(z * se))


# Counts behind each harm rate of an audit row: (events, denominator). FNR: missed dropouts over
# dropouts; FPR: flagged non-dropouts over non-dropouts.
HARM_COUNTS: dict[str, tuple[Callable[[pd.Series], float], Callable[[pd.Series], float]]] = {
    "fnr": (lambda r: round(float(r["fnr"]) * float(r["positives"])) if np.isfinite(r["fnr"]) else 0.0,
            lambda r: float(r["positives"])),
    "fpr": (lambda r: round(float(r["fpr"]) * (float(r["count"]) - float(r["positives"]))) if np.isfinite(r["fpr"]) else 0.0,
            lambda r: float(r["count"]) - float(r["positives"])),
}


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
    effects: ActionEffects | None = None  # when schools acted: judged on the untreated (monitoring/effects.py)


def _nan_to_none(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of a ROC-AUC from its positives and negatives."""
    if not (np.isfinite(auc) and positives > 0 and negatives > 0):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
    return float(np.sqrt(max(var, 0.0)))


def _drop_check(name: str, value: float, card: float | None, th: Thresholds, judged: bool, se: float,
                confidence: float) -> OutcomeCheck:
    """A drop below the model card, judged on what the round can show: the drop less its sampling
    error. One round's realised AUC on 33 dropouts has a standard error near 0.05, so a point drop
    of 0.07 is what a model as good as its card also gives; the level is set by the drop the round's
    upper bound still shows (the card's own test-fold error is not added: a conservative check)."""
    from scipy.stats import norm

    if card is None or not np.isfinite(value):
        return OutcomeCheck(check=name, value=_nan_to_none(value), card=card, level="ok", judged=False,
                            note="no validation figure to compare with" if card is None else "undefined")
    drop = card - value
    margin = float(norm.ppf(1 - (1 - confidence) / 2)) * se if np.isfinite(se) else 0.0
    shown = drop - margin
    lvl = level_of(shown, th.watch, th.drift) if judged else "ok"
    return OutcomeCheck(check=name, value=_nan_to_none(value), card=card, watch=th.watch, drift=th.drift, level=lvl,
                        judged=judged, note=f"{drop:+.4f} below the model card; at least {shown:+.4f} at "
                                            f"{confidence:.0%} (standard error {se:.4f})")


def judge_outcomes(y: np.ndarray, score: np.ndarray, school: np.ndarray, flagged: np.ndarray, groups: pd.DataFrame,
                   card: dict[str, float], cfg: OutcomeConfig) -> Outcomes:
    """Realised metrics of matured rows and their checks against the model card (pure)."""
    from training.config import FairnessConfig
    from training.fairness import HARM_METRICS, RATE_METRICS, audit_table
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
    p10 = float(m.get("precision_at_10pct", float("nan")))
    checks = [
        _drop_check("roc_auc", m["roc_auc"], card_sel["roc_auc"], cfg.roc_auc_drop, judged,
                    auc_standard_error(float(m["roc_auc"]), pos, len(y) - pos), cfg.observed_to_expected_confidence),
        _drop_check("precision_at_10pct", p10, card_sel["precision_at_10pct"], cfg.precision_drop, judged,
                    float(np.sqrt(p10 * (1 - p10) / max(1, round(0.1 * len(y))))), cfg.observed_to_expected_confidence),
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

    fcfg = FairnessConfig(band=cfg.fairness_band, min_group_students=cfg.fairness_min_rows,
                          min_group_positives=cfg.fairness_min_positives, attributes=cfg.fairness_attributes,
                          gate_attributes=cfg.fairness_attributes)
    # One row per pupil in a round, so rows are students and groups are disjoint: the intervals are
    # analytic from the counts (bounded memory at national size), not bootstrap replicates.
    table = audit_table(y.astype(int), np.asarray(flagged, dtype=int), groups[list(cfg.fairness_attributes)], fcfg,
                        score=score, bootstrap=False)
    fairness = []
    for _, r in table.iterrows():
        ref = table[(table["attribute"] == r["attribute"]) & (table["group"] == r["reference"])].iloc[0]
        row = {k: (r[k] if not isinstance(r[k], (np.floating, float)) else _nan_to_none(float(r[k]))) for k in
               ("attribute", "group", "reference", "count", "positives", "too_small", "selection_rate", "precision", "fpr",
                "fnr", "oe", *(f"{x}_ratio" for x in RATE_METRICS))}
        row = {k: (int(v) if isinstance(v, np.integer) else bool(v) if isinstance(v, np.bool_) else v) for k, v in row.items()}
        # Reported: every rate whose point ratio lies outside the band, either way.
        row["outside_band"] = [x for x in RATE_METRICS if not r["too_small"] and not bool(r[f"{x}_in_band"])]
        row["breaches"] = []
        for x, (num, den) in HARM_COUNTS.items():
            lo_r, hi_r = ratio_interval(num(r), den(r), num(ref), den(ref), cfg.observed_to_expected_confidence)
            row[f"{x}_ratio_low"], row[f"{x}_ratio_high"] = _nan_to_none(lo_r), _nan_to_none(hi_r)
            # Harm is one-sided and needs evidence, as at the release gate: the whole interval above
            # the band's top (fewer missed dropouts than the reference group is no harm).
            if x in cfg.fairness_metrics and not r["too_small"] and r["group"] != r["reference"] and lo_r > cfg.fairness_band[1]:
                row["breaches"].append(f"{x}_ratio")
        g_expected = float(r["positives"] / r["oe"]) if r["oe"] and np.isfinite(r["oe"]) and r["oe"] > 0 else 0.0
        oe_lo, oe_hi = observed_to_expected_interval(int(r["positives"]), g_expected, cfg.observed_to_expected_confidence)
        row["oe_low"], row["oe_high"] = _nan_to_none(oe_lo), _nan_to_none(oe_hi)
        if "oe" in cfg.fairness_metrics and not r["too_small"] and (oe_lo > fcfg.oe_band[1] or oe_hi < fcfg.oe_band[0]):
            row["breaches"].append("oe")
        row["judged"] = r["attribute"] in cfg.fairness_judged_attributes
        fairness.append(row)
        if not row["judged"]:  # reported only: not an attribute the release gate checks
            continue
        for x in row["breaches"]:
            if x == "oe":
                checks.append(OutcomeCheck(
                    check=f"fairness.{r['attribute']}.{r['group']}.oe", value=_nan_to_none(float(r["oe"])), level="drift",
                    judged=True, note=f"O/E interval {oe_lo:.2f}-{oe_hi:.2f} outside [{fcfg.oe_band[0]}, {fcfg.oe_band[1]}]"))
            else:
                m = x.removesuffix("_ratio")
                checks.append(OutcomeCheck(
                    check=f"fairness.{r['attribute']}.{r['group']}.{x}", value=_nan_to_none(float(r[x])), level="drift",
                    judged=True, note=f"interval {row[f'{m}_ratio_low']:.2f}-{row[f'{m}_ratio_high']:.2f} above "
                                      f"{cfg.fairness_band[1]}: {HARM_METRICS[m]} than in {r['reference']}"))
    return Outcomes(matured=True, rows=len(y), positives=pos, metrics=metrics, card=card_sel, checks=checks, fairness=fairness,
                    note="" if judged else f"only {pos} dropouts (< {cfg.min_positives}): reported, not judged")
