"""Reasons: SHAP contributions summed per feature group and said in short Thai and English sentences.

A contribution is in log-odds (LightGBM's raw margin). A teacher reads a reason as: which part of
the child's situation, the child's own value that weighs most in it, and whether it raises or
lowers the risk and how strongly. Strength is said as an odds multiplier, exp(contribution): it is
exact for the model, needs no choice of reference point, and multiplies across reasons. The
explanation endpoint also gives probability points, rescaled additively as
(sigmoid(f) - sigmoid(f0)) / (f - f0) so that the points add up to (model probability - base).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from features.pointintime.spec import BY_NAME, FEATURE_NAMES, FEATURES, GROUPS

GROUP_NAMES: tuple[str, ...] = tuple(GROUPS)
TOP_REASONS = 3
# A group whose contribution is smaller than this (|log-odds|, odds x1.02) is not worth a sentence.
MIN_REASON_LOGODDS = 0.02


# Features with one value for the whole round (its term and type): their contribution moves every
# student of the round alike, so it is kept in the explanation but never offered as a reason.
ROUND_LEVEL: frozenset[str] = frozenset({"term", "is_mid_round"})


def group_matrix(for_reasons: bool = False) -> np.ndarray:
    """(features x groups) 0/1 matrix: contributions @ G = contributions per group. With
    `for_reasons`, round-level features are left out (see ROUND_LEVEL)."""
    g = np.zeros((len(FEATURE_NAMES), len(GROUP_NAMES)))
    for i, f in enumerate(FEATURES):
        if not (for_reasons and f.name in ROUND_LEVEL):
            g[i, GROUP_NAMES.index(f.group)] = 1.0
    return g


def format_value(feature: str, value: Any, lang: str) -> str:
    """The student's own value, as a teacher reads it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "ไม่มีข้อมูล" if lang == "th" else "no data"
    dtype = BY_NAME[feature].dtype
    if dtype == "bool":
        yes = bool(value)
        return ("ใช่" if yes else "ไม่ใช่") if lang == "th" else ("yes" if yes else "no")
    if dtype == "category":
        return str(value)
    v = float(value)
    if feature == "att_trend_3m":
        return f"{v * 100:+.0f} จุด" if lang == "th" else f"{v * 100:+.0f} points"
    if "rate" in feature:
        return f"{v:.0%}"
    if dtype == "int" or v.is_integer():
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def sentence(group: str, feature: str, value: Any, contribution: float, lang: str) -> str:
    """One reason: '<group>: <feature> <value> — raises risk (odds ×1.8)'."""
    mult = math.exp(contribution)
    f = BY_NAME[feature]
    if lang == "th":
        way = "เพิ่มความเสี่ยง" if contribution > 0 else "ลดความเสี่ยง"
        return f"{GROUPS[group][1]}: {f.th} {format_value(feature, value, 'th')} — {way} (โอกาส ×{mult:.2f})"
    way = "raises risk" if contribution > 0 else "lowers risk"
    return f"{GROUPS[group][0]}: {f.en} {format_value(feature, value, 'en')} — {way} (odds ×{mult:.2f})"


def top_reasons(
    contrib: np.ndarray, group_contrib: np.ndarray, values: dict[str, Any], k: int = TOP_REASONS,
    raising_only: bool = True,
) -> list[dict[str, Any]]:
    """The k groups that raise this student's risk most (or move it most, if not raising_only),
    each with the feature inside the group that weighs most in the same direction."""
    order = np.argsort(-group_contrib if raising_only else -np.abs(group_contrib), kind="stable")
    out: list[dict[str, Any]] = []
    for gi in order:
        c = float(group_contrib[gi])
        if abs(c) < MIN_REASON_LOGODDS or (raising_only and c <= 0):
            continue
        group = GROUP_NAMES[gi]
        idx = [i for i, f in enumerate(FEATURES) if f.group == group and f.name not in ROUND_LEVEL]
        best = max(idx, key=lambda i: contrib[i] * math.copysign(1.0, c))
        feat = FEATURE_NAMES[best]
        v = values.get(feat)
        out.append({
            "group": group, "contribution": c, "feature": feat, "value": v,
            "th": sentence(group, feat, v, c, "th"), "en": sentence(group, feat, v, c, "en"),
        })
        if len(out) == k:
            break
    return out


def probability_scale(margin: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Factor turning log-odds contributions into probability points that add up exactly to
    sigmoid(margin) - sigmoid(base); at margin == base the slope of the sigmoid is used."""
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    diff = margin - base
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (sig(margin) - sig(base)) / diff
    slope = sig(base) * (1 - sig(base))
    return np.where(np.abs(diff) < 1e-12, slope, scale)
