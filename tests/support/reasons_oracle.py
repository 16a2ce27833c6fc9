"""The reasons of one pupil, written row by row from the rules in serving/reasons.py's docstring.

The obviously correct reference the column-wise renderer (`serving.reasons.render_reasons`) must
match character for character: a plain loop over groups, Python's sort and f-strings. A pupil with
no material reason gets the small-factor text (never an empty string).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from features.pointintime.spec import FEATURES, GROUPS
from serving.reasons import MATERIAL_ODDS, SMALL_FACTOR_NAMES

_WAY = {"th": ("เพิ่มความเสี่ยง", "ลดความเสี่ยง"), "en": ("raises risk", "lowers risk")}


def reasons_of_row(group_contrib: Sequence[float], k: int = 3, raising_only: bool = True) -> tuple[str, str]:
    """(Thai, English) reasons of one pupil from its contributions per group (catalogue group order),
    summed over reason features only."""
    threshold = math.log(MATERIAL_ODDS)
    picked: list[tuple[str, float, float]] = []
    for g, c in zip(GROUPS, group_contrib, strict=True):
        if not any(f.group == g and f.role == "reason" for f in FEATURES):
            continue  # a group of context or protected features only is never a reason
        strength = float(c) if raising_only else abs(float(c))
        if strength >= threshold:
            picked.append((g, float(c), strength))
    picked.sort(key=lambda t: -t[2])  # stable: equal strengths keep group order
    if not picked:
        return small_factors_of_row(group_contrib)
    out = []
    for lang, label in (("th", 1), ("en", 0)):
        odds = "โอกาส" if lang == "th" else "odds"
        out.append(" | ".join(f"{GROUPS[g][label]}: {_WAY[lang][0 if c > 0 else 1]} ({odds} ×{math.exp(c):.2f})"
                              for g, c, _ in picked[:k]))
    return out[0], out[1]


def small_factors_of_row(group_contrib: Sequence[float]) -> tuple[str, str]:
    """(Thai, English) text of a pupil with no material reason: the reason groups that raise risk at
    all, largest first (at most SMALL_FACTOR_NAMES), with their combined odds multiplier."""
    raising = [(g, float(c)) for g, c in zip(GROUPS, group_contrib, strict=True)
               if float(c) > 0 and any(f.group == g and f.role == "reason" for f in FEATURES)]
    raising.sort(key=lambda t: -t[1])  # stable: equal values keep group order
    named = raising[:SMALL_FACTOR_NAMES]
    if not named:
        return "ไม่มีปัจจัยใดในข้อมูลของนักเรียนที่เพิ่มความเสี่ยง", "No factor in the pupil's records raises risk"
    hundredths = math.floor(math.exp(sum(c for _, c in named)) * 100)  # rounded down: x1.0999 is "below x1.10"
    odds = f"{hundredths // 100}.{hundredths % 100:02d}"
    material = f"{MATERIAL_ODDS:.2f}"
    th_names = ", ".join(GROUPS[g][1] for g, _ in named)
    en_names = ", ".join(GROUPS[g][0] for g, _ in named)
    if len(named) == 1:
        # below the threshold by definition: shown at most x1.09 even where exp(c) computes as 1.10
        hundredths = min(hundredths, round(MATERIAL_ODDS * 100) - 1)
        odds = f"{hundredths // 100}.{hundredths % 100:02d}"
        return (f"ปัจจัยเล็กน้อยหนึ่งปัจจัย: {th_names} (โอกาส ×{odds}; ต่ำกว่า ×{material})",
                f"One small factor: {en_names} (odds ×{odds}; below ×{material})")
    return (f"หลายปัจจัยเล็กน้อยรวมกัน: {th_names} (โอกาส ×{odds}; ไม่มีปัจจัยใดถึง ×{material})",
            f"Several small factors together: {en_names} (odds ×{odds}; none alone reaches ×{material})")
