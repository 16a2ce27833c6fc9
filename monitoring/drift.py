"""Drift between the training reference and a round: features, scores, risk groups, attribution.

The reference is made of rounds the scoring model was fitted on (its training and calibration
folds, as its run logged them) that come strictly before the monitored round: never the monitored
round itself, nor a later one (a round compared with itself reports PSI 0 and "keep the model",
which says nothing). By default it is the latest such round of the same term and round type:
features such as `term`, `is_mid_round`, `gpa_interim` (only in mid rounds) or `att_rate_term`
(empty early in a term) differ by design between kinds of round, so comparing a mid round with
early rounds would report drift that is only the calendar. Scores and SHAP attributions of the
reference are the model's own on those rows. When no fitted round comes before the monitored one,
the reference is empty and the report says drift was not judged.

Functions here take frames and arrays and return results; reading snapshots, training sets and
models is `monitoring.report`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from features.calendar import ROUND_TYPES, ScoringRound, parse_round
from features.pointintime.spec import BY_NAME, FEATURE_NAMES, GROUPS
from monitoring.config import DriftConfig, Thresholds
from monitoring.stats import StatResult, get_statistic, level_of


class DriftResult(BaseModel):
    """One statistic on one column (a feature, the score, a risk group, a feature group)."""

    model_config = ConfigDict(extra="forbid")
    what: str  # feature | missing | score | risk_groups | attribution
    column: str
    feature_group: str | None = None
    statistic: str
    score: float | None
    level: str
    drifted: bool
    watch: float
    drift: float
    details: dict[str, Any] = {}


def _result(what: str, column: str, r: StatResult, group: str | None = None) -> DriftResult:
    d = r.to_dict()
    return DriftResult(what=what, column=column, feature_group=group, statistic=d["statistic"], score=d["score"],
                       level=d["level"], drifted=d["drifted"], watch=d["watch"], drift=d["drift"], details=d["details"])


def round_order(r: ScoringRound) -> tuple[int, int, int]:
    """Calendar order of rounds: academic year, term, then early before mid."""
    return (r.academic_year, r.term, ROUND_TYPES.index(r.round_type))


def reference_rounds(fitted_rounds: Sequence[str], current: ScoringRound, mode: str) -> list[str]:
    """The rounds `current` is compared with (see DriftConfig.reference), chosen among the rounds the
    model was fitted on that come strictly before `current`; empty when there are none.

    Worked example: fitted on 2563-T1-early ... 2565-T1-mid, monitoring 2565-T2-mid -> latest of the
    same kind: 2564-T2-mid. Monitoring 2564-T2-mid itself -> 2563-T2-mid (never 2564-T2-mid, nor
    2565-*). Monitoring 2563-T1-early -> [] (nothing fitted comes before it)."""
    # The fitted rounds are named by id (the run's logged split): each is parsed once here.
    parsed = {x: parse_round(x) for x in fitted_rounds}
    before = {x: p for x, p in parsed.items() if round_order(p) < round_order(current)}
    ordered = sorted(before, key=lambda x: round_order(before[x]))
    if mode == "all":
        return ordered
    same = [x for x in ordered if (before[x].term, before[x].round_type) == (current.term, current.round_type)]
    if not same:  # no fitted round of this kind before it: fall back to the same round type, then to any
        same = [x for x in ordered if before[x].round_type == current.round_type] or ordered
    return same[-1:] if mode == "latest_same_kind" else same


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig) -> list[DriftResult]:
    """For each feature: the configured distribution statistic and the missing-share statistic."""
    out: list[DriftResult] = []
    th, mth = cfg.feature_thresholds, cfg.missing_thresholds
    for name in cfg.features or FEATURE_NAMES:
        f = BY_NAME[name]
        stat = get_statistic(cfg.categorical_statistic if f.dtype == "category" else cfg.numeric_statistic)
        r = stat.fn(reference[name], current[name], watch=th.watch, drift=th.drift, bins=cfg.bins)
        m = get_statistic(cfg.missing_statistic).fn(reference[name], current[name], watch=mth.watch, drift=mth.drift)
        for what, res in (("feature", r), ("missing", m)):
            d = _result(what, name, res, f.group)
            if name in cfg.report_only and d.drifted:
                d = d.model_copy(update={"level": "watch", "drifted": False,
                                         "details": {**d.details, "report_only": "history-length feature: reported, not a breach"}})
            out.append(d)
    return out


def score_drift(ref_score: np.ndarray, cur_score: np.ndarray, ref_group: np.ndarray, cur_group: np.ndarray,
                cfg: DriftConfig) -> list[DriftResult]:
    """The risk-score distribution and the risk-group shares, reference against round."""
    s, g = cfg.score_thresholds, cfg.group_thresholds
    score = get_statistic(cfg.score_statistic).fn(ref_score, cur_score, watch=s.watch, drift=s.drift, bins=cfg.bins)
    groups = get_statistic(cfg.group_statistic).fn(ref_group, cur_group, watch=g.watch, drift=g.drift)
    score.details.update({"reference_mean": round(float(np.nanmean(ref_score)), 5),
                          "current_mean": round(float(np.nanmean(cur_score)), 5)})
    return [_result("score", "risk_score", score), _result("risk_groups", "risk_group", groups)]


def attribution_shares(group_contrib: np.ndarray) -> np.ndarray:
    """Each feature group's share of the total mean |SHAP| (rows x groups -> groups)."""
    m = np.nanmean(np.abs(group_contrib), axis=0)
    return m / m.sum() if m.sum() > 0 else m


def attribution_drift(ref_group_contrib: np.ndarray, cur_group_contrib: np.ndarray, th: Thresholds) -> list[DriftResult]:
    """Change of each feature group's share of the attribution (mean |SHAP| summed per group first,
    so correlated features of one group neither cancel nor double-count)."""
    r, c = attribution_shares(ref_group_contrib), attribution_shares(cur_group_contrib)
    ref_mean, cur_mean = np.nanmean(ref_group_contrib, axis=0), np.nanmean(cur_group_contrib, axis=0)
    out = []
    for j, g in enumerate(GROUPS):
        score = float(abs(c[j] - r[j]))
        lvl = level_of(score, th.watch, th.drift)
        out.append(DriftResult(what="attribution", column=g, feature_group=g, statistic="attribution_share_change",
                               score=round(score, 6), level=lvl, drifted=lvl == "drift", watch=th.watch, drift=th.drift,
                               details={"reference_share": round(float(r[j]), 4), "current_share": round(float(c[j]), 4),
                                        "reference_mean_logodds": round(float(ref_mean[j]), 4),
                                        "current_mean_logodds": round(float(cur_mean[j]), 4)}))
    return out
