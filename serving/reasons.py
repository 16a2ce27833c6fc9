"""Reasons: contributions to the published score summed per feature group, said in short Thai and
English sentences, rendered column-wise for a whole chunk of pupils at once.

Where it sits: `serving.scoring.score_frame` renders the reasons of every scored pupil of a round
(the lists and downloads show them); `serving.views.explanation` shows one pupil's groups, context
and reasons. Contributions arrive on the published score's logit scale
(`serving.model.to_published_scale`), so a group's odds multiplier exp(c) multiplies the odds of the
score the school sees, and the points add up to that score.

The rules (issue 12, "explanations of the published score"):
- A reason is a feature group, summed over the features whose catalogue role is "reason"
  (`features.pointintime.spec`). Context (grade, term, round type, age) is shown once, as context;
  protected attributes (sex, nationality status, disability) are never part of a reason.
- A reason needs a material effect: odds x1.10 or more (log-odds >= log 1.10 = 0.0953; a lowering
  reason x0.91 or less). Below that a group moves a pupil near the "problem" cut-off (a few percent)
  by a few tenths of a percentage point, less than the score moves between rounds: a teacher would
  be asked to act on noise (29% of the reasons shown before this rule were x1.02-x1.09).
- The sentence says the group's effect ("Attendance: raises risk (odds x1.35)"), not one feature's
  value: a group's contribution is the net of all its features, and naming the single feature that
  weighs most printed good values as causes ("attendance 95% - raises risk"). The explanation
  endpoint lists every feature's value and contribution for whoever needs the detail.
- Lists show the groups that raise risk most, largest first (ties keep the catalogue's group order).
- A pupil with no material reason is never left with an empty cell (7.2% of flagged pupils had one
  on the 3-year demo before issue 11, 0.7% [0.2%, 1.4%] on today's 3,000 x 4 demo:
  `python -m benchmarks.figures --only reasons`, `reasons.demo.*` in figures/FIGURES.md).
  The cell says so honestly instead: "Several small factors together: Attendance, Academic results
  (odds ×1.16; none alone reaches ×1.10)", naming the reason groups that raise risk most (up to
  `SMALL_FACTOR_NAMES`, largest first) and their combined odds multiplier; "One small factor: ..."
  when only one raises risk; "No factor in the pupil's records raises risk" when none does (the
  score then comes from context or background, which are never reasons). The same rules hold: a
  context or protected group is never named, and nothing here touches the contributions, so
  base + contributions = the published logit still holds.

Rendering is column-wise (issue 14: at 1M pupils the per-pupil loop over dicts was 80% of scoring):
k passes of argmax per chunk rank the groups, each distinct reason text is formatted once, and rows
are concatenated rank by rank over object arrays. The per-row reference in
tests/support/reasons_oracle.py must give the very same text.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.pointintime.spec import FEATURES, GROUPS

GROUP_NAMES: tuple[str, ...] = tuple(GROUPS)
TOP_REASONS = 3
MATERIAL_ODDS = 1.10
MATERIAL_LOGODDS = math.log(MATERIAL_ODDS)
SEPARATOR = " | "
# Reason groups named when no group is material on its own (the lists' "several small factors").
SMALL_FACTOR_NAMES = 3

_WAY = {"th": ("เพิ่มความเสี่ยง", "ลดความเสี่ยง"), "en": ("raises risk", "lowers risk")}
_ODDS = {"th": "โอกาส", "en": "odds"}
# The texts of a pupil with no material reason: several small raising groups, one, or none.
_SEVERAL = {"th": "หลายปัจจัยเล็กน้อยรวมกัน: {names} (โอกาส ×{odds}; ไม่มีปัจจัยใดถึง ×{material})",
            "en": "Several small factors together: {names} (odds ×{odds}; none alone reaches ×{material})"}
_ONE = {"th": "ปัจจัยเล็กน้อยหนึ่งปัจจัย: {names} (โอกาส ×{odds}; ต่ำกว่า ×{material})",
        "en": "One small factor: {names} (odds ×{odds}; below ×{material})"}
_NONE = {"th": "ไม่มีปัจจัยใดในข้อมูลของนักเรียนที่เพิ่มความเสี่ยง", "en": "No factor in the pupil's records raises risk"}


def group_matrix(for_reasons: bool = False) -> np.ndarray:
    """(features x groups) 0/1 matrix: contributions @ G = contributions per group. With
    `for_reasons`, only features whose role is "reason" count (context and protected are left out)."""
    g = np.zeros((len(FEATURES), len(GROUP_NAMES)))
    for i, f in enumerate(FEATURES):
        if not for_reasons or f.role == "reason":
            g[i, GROUP_NAMES.index(f.group)] = 1.0
    return g


def group_sums(contributions: np.ndarray, for_reasons: bool = False) -> np.ndarray:
    """Contributions per group (what `contributions @ group_matrix(for_reasons)` means), added column by
    column in catalogue order: each pupil's sums depend on that pupil's row alone. A matrix product
    does not promise that (BLAS blocks by the batch's shape), and a round scored in other batches - Spark's
    mapInPandas against DuckDB's chunks - must give the same bytes. Accepts one pupil (1-D) or many (2-D)."""
    c = np.asarray(contributions, dtype=float)
    one = c.ndim == 1
    c2 = c[None, :] if one else c
    out = np.zeros((c2.shape[0], len(GROUP_NAMES)))
    for i, f in enumerate(FEATURES):
        if not for_reasons or f.role == "reason":
            out[:, GROUP_NAMES.index(f.group)] += c2[:, i]
    return out[0] if one else out


def reason_groups() -> np.ndarray:
    """Bool per group: True when the group has at least one reason feature (a group made only of
    context or protected features - grade and transition, student background - is never a reason)."""
    return group_matrix(for_reasons=True).sum(axis=0) > 0


def sentence(group: str, contribution: float, lang: str) -> str:
    """One reason, the group's effect: '<group>: raises risk (odds ×1.35)'."""
    label = GROUPS[group][1] if lang == "th" else GROUPS[group][0]
    way = _WAY[lang][0 if contribution > 0 else 1]
    return f"{label}: {way} ({_ODDS[lang]} ×{math.exp(contribution):.2f})"


def rank_reasons(group_contrib: np.ndarray, k: int = TOP_REASONS, raising_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """For every row of (rows x groups) reason-group contributions: the column indices of its first
    k reasons (rows x k) and how many of them are real reasons (the rest of a row is padding).

    A reason is a reason group whose contribution is material (and raises risk, with
    `raising_only`); reasons come largest first (by |c| without `raising_only`), ties in group order."""
    c = np.asarray(group_contrib, dtype=np.float64)
    strength = c if raising_only else np.abs(c)
    material = (strength >= MATERIAL_LOGODDS) & reason_groups()[None, :]
    left = np.where(material, strength, -np.inf)
    k = min(k, c.shape[1])
    order = np.zeros((c.shape[0], k), dtype=np.intp)
    rows = np.arange(c.shape[0])
    # k passes of argmax instead of a sort: argmax takes the first of equal values, so ties keep group order
    for j in range(k):
        order[:, j] = best = np.argmax(left, axis=1)
        left[rows, best] = -np.inf
    count = np.minimum(material.sum(axis=1), k)
    return order, count


def render_reasons(group_contrib: np.ndarray, k: int = TOP_REASONS, raising_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The reasons of every row as one Thai and one English string (reasons joined by ' | '; a row
    with no material reason gets its small-factor text instead, never ''), built column-wise.

    A reason's text depends only on (group, direction, odds to two decimals): each distinct one is
    formatted once, in Python (a round of 1M pupils has a few thousand), and a row's text is then
    concatenated rank by rank over object arrays, one C loop per rank."""
    c = np.asarray(group_contrib, dtype=np.float64)
    n, n_groups = c.shape
    order, count = rank_reasons(c, k, raising_only)
    k = order.shape[1]
    present = np.arange(k)[None, :] < count[:, None]
    picked = np.take_along_axis(c, order, axis=1)[present]
    # one integer per distinct reason text: (hundredths of the odds, direction, group)
    code = (_hundredths(picked) * 2 + (picked <= 0)) * n_groups + order[present]
    piece_of, pieces = pd.factorize(code)  # hashing, not sorting: a few thousand distinct texts
    slot = np.full((n, k), len(pieces), dtype=np.int64)  # len(pieces): no reason at this rank
    slot[present] = piece_of
    out = []
    for lang in ("th", "en"):
        text = [_piece_text(int(p), n_groups, lang) for p in pieces]
        first = np.array([*text, ""], dtype=object)
        later = np.array([*(SEPARATOR + t for t in text), ""], dtype=object)
        row = first[slot[:, 0]] if k else np.full(n, "", dtype=object)
        for j in range(1, k):
            row = row + later[slot[:, j]]
        out.append(row)
    # A row with no material reason says so (never an empty cell): "several small factors together".
    none = count == 0
    if none.any():
        out[0][none], out[1][none] = _small_factor_texts(c[none])
    return out[0], out[1]


def small_factors(group_contrib: np.ndarray, n: int = SMALL_FACTOR_NAMES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row of (rows x groups) reason-group contributions: the column indices of the (at
    most `n`) reason groups that raise risk most, largest first, ties in group order (rows x n); how
    many of them raise risk at all (the rest of a row is padding); and their summed log-odds.

    What a row with no material reason is told: these groups are each below the materiality
    threshold when the row has none, so their names come with their combined effect."""
    c = np.asarray(group_contrib, dtype=np.float64)
    raising = (c > 0) & reason_groups()[None, :]
    left = np.where(raising, c, -np.inf)
    n = min(n, c.shape[1])
    order = np.zeros((c.shape[0], n), dtype=np.intp)
    rows = np.arange(c.shape[0])
    for j in range(n):  # argmax passes, as rank_reasons: ties keep group order
        order[:, j] = best = np.argmax(left, axis=1)
        left[rows, best] = -np.inf
    count = np.minimum(raising.sum(axis=1), n)
    present = np.arange(n)[None, :] < count[:, None]
    # largest first, then zeros: the same additions, in the same order, as a Python sum of the named values
    together = np.where(present, np.take_along_axis(c, order, axis=1), 0.0).sum(axis=1)
    return order, count, together


def small_factor_text(groups: list[str], together: float, lang: str) -> str:
    """What a pupil with no material reason is told: the raising groups named (largest first) with
    their combined odds multiplier exp(together) in hundredths rounded down, or that no factor of the
    records raises risk."""
    return _small_text(groups, int(_floor_hundredths(np.array([together]))[0]) if groups else 0, lang)


def _small_text(groups: list[str], hundredths: int, lang: str) -> str:
    if not groups:
        return _NONE[lang]
    names = ", ".join(GROUPS[g][1] if lang == "th" else GROUPS[g][0] for g in groups)
    template = _SEVERAL if len(groups) > 1 else _ONE
    if len(groups) == 1:  # one group is below the threshold: exp(c) just under 1.10 may still compute as 1.10
        hundredths = min(hundredths, round(MATERIAL_ODDS * 100) - 1)
    return template[lang].format(names=names, odds=f"{hundredths // 100}.{hundredths % 100:02d}",
                                 material=f"{MATERIAL_ODDS:.2f}")


def _small_factor_texts(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The small-factor texts of rows with no material reason, column-wise like the reasons: one
    integer per distinct text (the named groups, then the odds in hundredths), each formatted once."""
    order, count, together = small_factors(c)
    n_groups = c.shape[1]
    named = np.where(np.arange(order.shape[1])[None, :] < count[:, None], order, n_groups)  # n_groups: none
    code = np.zeros(len(c), dtype=np.int64)
    for j in range(order.shape[1]):
        code = code * (n_groups + 1) + named[:, j]
    code = code * 1_000_000 + np.where(count > 0, _floor_hundredths(together), 0)
    piece_of, pieces = pd.factorize(code)
    first = np.zeros(len(pieces), dtype=np.intp)
    first[piece_of] = np.arange(len(c))  # any row holding each distinct text: they all read the same
    out = []
    for lang in ("th", "en"):
        text = [_small_text([GROUP_NAMES[g] for g in order[r, : count[r]]], int(p % 1_000_000), lang)
                for r, p in zip(first.tolist(), pieces.tolist(), strict=True)]
        out.append(np.array(text, dtype=object)[piece_of])
    return out[0], out[1]


def _hundredths(contribution: np.ndarray) -> np.ndarray:
    """exp(c) in hundredths, rounded as Python's f'{math.exp(c):.2f}' rounds it (the per-row text).

    rint(exp(c) * 100) agrees with it except within rounding error of a half-hundredth (and
    np.exp may differ from math.exp in the last bit): those few are formatted by Python itself."""
    m100 = np.exp(contribution) * 100.0
    out = np.rint(m100)
    near = np.abs(m100 - np.floor(m100) - 0.5) < 1e-6
    if near.any():
        out[near] = [int(f"{math.exp(v):.2f}".replace(".", "")) for v in contribution[near].tolist()]
    return out.astype(np.int64)


def _floor_hundredths(contribution: np.ndarray) -> np.ndarray:
    """exp(c) in hundredths rounded down, as math.floor(math.exp(c) * 100) gives it: a small
    factor's odds are shown truncated, so one just under x1.10 reads x1.09, never "x1.10; below x1.10".
    Values within rounding error of a whole hundredth are computed by Python itself."""
    m100 = np.exp(contribution) * 100.0
    out = np.floor(m100)
    near = np.abs(m100 - np.rint(m100)) < 1e-6
    if near.any():
        out[near] = [math.floor(math.exp(v) * 100.0) for v in contribution[near].tolist()]
    return out.astype(np.int64)


def _piece_text(code: int, n_groups: int, lang: str) -> str:
    rest, gi = divmod(code, n_groups)
    hundredths, lowers = divmod(rest, 2)
    g = GROUP_NAMES[gi]
    label = GROUPS[g][1] if lang == "th" else GROUPS[g][0]
    return f"{label}: {_WAY[lang][lowers]} ({_ODDS[lang]} ×{hundredths // 100}.{hundredths % 100:02d})"


def top_reasons(group_contrib: np.ndarray, k: int = TOP_REASONS, raising_only: bool = True) -> list[dict[str, Any]]:
    """One pupil's reasons (the explanation endpoint), ranked exactly as the lists rank them: material
    reasons only (a pupil with none has `small_factors_of` in the lists' cell instead)."""
    c = np.asarray(group_contrib, dtype=np.float64).reshape(1, -1)
    order, count = rank_reasons(c, k, raising_only)
    out = []
    for gi in order[0, : int(count[0])]:
        v = float(c[0, gi])
        g = GROUP_NAMES[gi]
        out.append({"group": g, "label_en": GROUPS[g][0], "label_th": GROUPS[g][1], "contribution": v,
                    "odds_multiplier": math.exp(v), "th": sentence(g, v, "th"), "en": sentence(g, v, "en")})
    return out


def probability_scale(logit: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Factor turning log-odds contributions into probability points that add up exactly to
    sigmoid(logit) - sigmoid(base); at logit == base the slope of the sigmoid is used."""
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    diff = logit - base
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (sig(logit) - sig(base)) / diff
    slope = sig(base) * (1 - sig(base))
    return np.where(np.abs(diff) < 1e-12, slope, scale)


def small_factors_of(group_contrib: np.ndarray) -> dict[str, Any]:
    """One pupil's small-factor summary (what the lists say when no reason is material): the reason
    groups named, their summed log-odds, the odds multiplier, and the Thai and English text."""
    c = np.asarray(group_contrib, dtype=np.float64).reshape(1, -1)
    order, count, together = small_factors(c)
    groups = [GROUP_NAMES[g] for g in order[0, : int(count[0])]]
    v = float(together[0])
    return {"groups": groups, "contribution": v, "odds_multiplier": math.exp(v),
            "th": small_factor_text(groups, v, "th"), "en": small_factor_text(groups, v, "en")}
