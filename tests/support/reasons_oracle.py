"""The reasons of one pupil, written row by row from the rules in serving/reasons.py's docstring.

The obviously correct reference the column-wise renderer (`serving.reasons.render_reasons`) must
match character for character: a plain loop over groups, Python's sort and f-strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from features.pointintime.spec import FEATURES, GROUPS
from serving.reasons import MATERIAL_ODDS

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
    out = []
    for lang, label in (("th", 1), ("en", 0)):
        odds = "โอกาส" if lang == "th" else "odds"
        out.append(" | ".join(f"{GROUPS[g][label]}: {_WAY[lang][0 if c > 0 else 1]} ({odds} ×{math.exp(c):.2f})"
                              for g, c, _ in picked[:k]))
    return out[0], out[1]
