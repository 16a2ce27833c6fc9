"""Disclosure control: what a token other than the pupil's own school sees of a pupil.

A school token sees its own pupils whole (names, rooms, every value: the teachers act on them).
Area, analyst, auditor and admin tokens see pseudonymous rows; this module decides, per published
round, how much of each row they may see so that no pupil stands out (docs/PRIVACY.md):

- sensitive values are withheld: disability, nationality status, the welfare records of illness,
  disability, pregnancy and bedridden members, and every care-screening value (`SENSITIVE`) —
  value and per-feature contribution; their contributions are given only summed per group;
- quasi-identifiers are coarsened: age in whole years (never the fractional age, which gives
  the birth month; the exact birth date never leaves the identity vault), and generalised per (school, grade) cell until every combination a
  caller can see is shared by at least `K_ANONYMITY` pupils of the round (`plan`: age, then sex,
  then the school and its own features, then tambon, amphoe, province, grade are suppressed);
- reasons are said per group, without the pupil's own values.

`unique_share` measures the result: the share of pupils whose visible quasi-identifiers are
unique in the round. Sits between `serving.store` (a `LoadedRound` keeps its plan) and
`serving.views` (which selects fields through it); `serving.access` says which role sees what.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.pointintime.spec import FEATURES, GROUPS

# k of k-anonymity: every combination of quasi-identifiers a non-school token sees is shared by at
# least this many pupils of the round. 5 is the usual floor for statistics released on individuals.
K_ANONYMITY = 5

# Withheld from every role but the pupil's own school (docs/PRIVACY.md says why each).
SENSITIVE: frozenset[str] = frozenset({
    "disability", "non_thai_id", "welfare_disability_card", "welfare_chronic_illness", "welfare_teen_pregnancy",
    "welfare_bedridden_member",
    *(f.name for f in FEATURES if f.group == "care"),
})
# Quasi-identifiers inside the model's values, by the level from which they are suppressed.
AGE_FEATURES: tuple[str, ...] = ("age", "over_age_years")
SEX_FEATURES: tuple[str, ...] = ("sex",)
# These name the school as surely as its code (its size, distance, dropout history).
SCHOOL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == "school" and f.name != "region")
GRADE_FEATURES: tuple[str, ...] = ("grade", "grade_level", "in_transition_grade")

# Levels of a row, finest first: what is still shown at each.
FULL, NO_AGE, NO_SEX, TAMBON, AMPHOE, PROVINCE, NOTHING = range(7)
LEVEL_NAMES = ("school, grade, sex, age in years", "school, grade, sex", "school, grade", "tambon, grade",
               "amphoe, grade", "province, grade", "nothing")


def age_years(age: Any) -> int | None:
    """Whole years (floor); None for a missing age."""
    try:
        a = float(age)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(a) else int(math.floor(a))


@dataclass(frozen=True)
class DisclosurePlan:
    """The level of every row of a round (index = row of `LoadedRound.rows`)."""

    level: np.ndarray  # int8, FULL .. NOTHING
    k: int

    def hides_value(self, row: int, feature: str) -> bool:
        """Is this model value withheld (sensitive) or suppressed (a quasi-identifier) for row `row`?"""
        if feature in SENSITIVE:
            return True
        lv = int(self.level[row])
        return ((feature in AGE_FEATURES and lv >= NO_AGE) or (feature in SEX_FEATURES and lv >= NO_SEX)
                or (feature in SCHOOL_FEATURES and lv >= TAMBON) or (feature in GRADE_FEATURES and lv >= NOTHING))

    def shown(self, row: int, field: str, value: Any) -> Any:
        """A row-level field (school_code, tambon_code, grade, ...) as this plan shows it."""
        lv = int(self.level[row])
        hidden = {"school_code": TAMBON, "school_name": TAMBON, "tambon_code": AMPHOE, "tambon_name": AMPHOE,
                  "amphoe_code": PROVINCE, "amphoe_name": PROVINCE, "grade": NOTHING,
                  "province_code": NOTHING, "province_name": NOTHING}.get(field)
        return None if hidden is not None and lv >= hidden else value


def _small(keys: pd.DataFrame, k: int) -> np.ndarray:
    """True where the row's combination of `keys` is shared by fewer than k rows."""
    return keys.groupby(list(keys.columns), dropna=False, sort=False)[keys.columns[0]].transform("size").to_numpy() < k


def plan(rows: pd.DataFrame, values: pd.DataFrame, k: int = K_ANONYMITY) -> DisclosurePlan:
    """Choose each row's level: one level per (school, grade) cell — the finest at which every
    combination inside the cell is shared by >= k rows — so rows of a cell never differ in what is
    hidden (a lone row with its age hidden would stand out by that). Rows whose cell is smaller than
    k lose the school and are grouped by tambon, then amphoe, then province (with the grade), then
    lose everything, until each group they form has >= k rows."""
    n = len(rows)
    tambon = rows["tambon_code"].astype(object).where(rows["tambon_code"].notna(), "").astype(str).to_numpy()
    base = pd.DataFrame({
        "school": rows["school_code"].astype(object).to_numpy(), "grade": rows["grade"].astype(object).to_numpy(),
        "sex": values["sex"].astype(object).to_numpy() if "sex" in values else np.full(n, None, dtype=object),
        "age": [age_years(a) for a in values["age"]] if "age" in values else [None] * n,
        "over": values["over_age_years"].astype(object).to_numpy() if "over_age_years" in values else np.full(n, None, dtype=object),
    })
    cell = base.groupby(["school", "grade"], dropna=False, sort=False).ngroup().to_numpy()

    def cell_any(flag: np.ndarray) -> np.ndarray:  # does any row of the row's cell carry the flag?
        return pd.Series(flag).groupby(cell).transform("any").to_numpy()

    level = np.full(n, FULL, dtype=np.int8)
    for lv, keys in ((FULL, ["school", "grade", "sex", "age", "over"]), (NO_AGE, ["school", "grade", "sex"]),
                     (NO_SEX, ["school", "grade"])):
        fails = cell_any(_small(base[keys], k))
        level[(level == lv) & fails] = lv + 1
    # Rows without their school: grouped only with the other rows that lost theirs.
    for lv, width in ((TAMBON, 6), (AMPHOE, 4), (PROVINCE, 2)):
        at = np.flatnonzero(level == lv)
        if len(at) == 0:
            break
        keys = pd.DataFrame({"area": [t[:width] for t in tambon[at]], "grade": base["grade"].to_numpy()[at]})
        level[at[_small(keys, k)]] = lv + 1
    return DisclosurePlan(level=level, k=k)


def group_reasons(group_contrib: np.ndarray, top: int = 3) -> tuple[str, str]:
    """Reasons said per group only (no pupil's own value), Thai and English, joined like a list's:
    the same rules and text as every published list (serving/reasons.py: material groups only)."""
    from serving.reasons import render_reasons

    th, en = render_reasons(np.atleast_2d(np.asarray(group_contrib, dtype=float)), top)
    return str(th[0]), str(en[0])


def unique_share(records: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> float:
    """The share of records whose values of `fields` (missing or None counting as one value) no
    other record shares: the re-identification risk of releasing those fields."""
    keys = [tuple(_hashable(r.get(f)) for f in fields) for r in records]
    if not keys:
        return 0.0
    counts: dict[tuple[Any, ...], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return sum(1 for key in keys if counts[key] == 1) / len(keys)


def _hashable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


# --- Small counts in area summaries --------------------------------------------------------------
#
# An area summary (risk groups by grade, not-found cases by state) is a table of counts over three
# hierarchies: the area tree (province > amphoe > tambon > school), a first dimension (grade, or
# case state) and a second (risk group, or provisional/complete), each with its total. A count of 1
# to k-1 pupils is withheld (primary suppression). Every count of the tree is one sum of others,
# so a withheld count must not be the only unknown of any sum a caller can form from released
# counts, in any response: in every additive relation (a total and its parts) either nothing is
# withheld, or at least two members are; and where the total is released, the withheld parts
# together hold at least k pupils (two withheld parts summing to 2 would each be 1). Complementary
# cells are the smallest non-zero released parts, else the total (the usual greedy choice; an exact
# zero is released: it names no pupil). Counts that no response shows (a grade's total over
# groups, the pupils without a grade) are derivable, so they are protected like shown ones.
# Relations never cross a province (no response sums provinces), so one plan per province, and
# every response about it reads the same plan: a count has one fate whichever area asked.

# A cell: (node, first-dimension slot, second-dimension slot); "*" is the total of a dimension.
# Nodes: ("area", code) for a province/amphoe/tambon code, ("school", tambon, school code).
Cell = tuple[tuple[Any, ...], Any, Any]
ALL = "*"


def withhold_small_counts(counts: Mapping[Cell, int], relations: Sequence[tuple[Cell, Sequence[Cell]]],
                          k: int = K_ANONYMITY) -> frozenset[Cell]:
    """The cells to withhold: those of 1..k-1, then complements until every relation (total, parts)
    has no withheld member, or >= 2 with the withheld parts of a released total summing to >= k.
    Deterministic (the first smallest part in `relations`' order), so every worker withholds alike."""
    withheld: set[Cell] = {c for c, n in counts.items() if 0 < n < k}
    member_of: dict[Cell, list[int]] = {}
    for r, (total, parts) in enumerate(relations):
        for c in (total, *parts):
            member_of.setdefault(c, []).append(r)
    todo = sorted({r for c in withheld for r in member_of.get(c, ())})
    queued = set(todo)
    while todo:
        r = todo.pop()
        queued.discard(r)
        total, parts = relations[r]
        hidden = [p for p in parts if p in withheld]
        if total in withheld:
            ok = bool(hidden)
        else:
            ok = not hidden or (len(hidden) >= 2 and sum(counts.get(p, 0) for p in hidden) >= k)
        if ok:
            continue
        shown = [p for p in parts if p not in withheld and counts.get(p, 0) > 0]
        add = min(shown, key=lambda p: counts[p]) if shown else total
        withheld.add(add)
        for r2 in member_of.get(add, ()):
            if r2 not in queued:
                queued.add(r2)
                todo.append(r2)
        if r not in queued:  # check this relation again: one complement may not be enough
            queued.add(r)
            todo.append(r)
    return frozenset(withheld)


@dataclass(frozen=True)
class SmallCounts:
    """The withheld cells of one province's count table; `shown` releases a count through it."""

    counts: Mapping[Cell, int]
    withheld: frozenset[Cell]
    k: int

    def shown(self, cell: Cell, n: int) -> int | None:
        """`n` as released: None when withheld (fewer than k, or a complement of such a count), and
        when the plan does not know the cell with that count (fail closed); an exact 0 always."""
        if n == 0:
            return 0
        return None if cell in self.withheld or self.counts.get(cell) != n else int(n)


def area_nodes(tambon: str) -> list[tuple[Any, ...]]:
    """The area nodes above (and including) a tambon: province, amphoe, tambon."""
    return [("area", tambon[:w]) for w in (2, 4, 6)]


def plan_small_counts(tambon: Sequence[Any], school: Sequence[Any], first: Sequence[Any], second: Sequence[Any],
                      k: int = K_ANONYMITY) -> SmallCounts:
    """Withheld cells of the count table of some pupils (one row each; rows without a tambon are
    in no area and left out): per node of the area tree, counts by `first` x `second` and their
    totals. `first`/`second` values are the slots (None a slot of its own, e.g. pupils without a grade)."""
    leaf = pd.DataFrame({"t": pd.Series(tambon, dtype=object), "s": pd.Series(school, dtype=object),
                         "a": pd.Series(first, dtype=object), "b": pd.Series(second, dtype=object)})
    leaf = leaf[leaf["t"].map(lambda t: isinstance(t, str) and len(t) >= 6)]
    counts: dict[Cell, int] = {}
    children: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    firsts: dict[tuple[Any, ...], set[Any]] = {}
    seconds: set[Any] = set()
    for col in ("s", "a", "b"):
        leaf[col] = [None if _missing(v) else v for v in leaf[col]]
    sizes = leaf.groupby(["t", "s", "a", "b"], dropna=False, sort=False).size()
    for (t, s, a, b), n in sorted(sizes.items(), key=lambda kv: tuple(_slot_order(v) for v in kv[0])):
        path = [*area_nodes(t), ("school", t, s)]
        for parent, child in zip(path[:-1], path[1:], strict=True):
            kids = children.setdefault(parent, [])
            if child not in kids:
                kids.append(child)
        seconds.add(b)
        for node in path:
            firsts.setdefault(node, set()).add(a)
            for cell in ((node, a, b), (node, a, ALL), (node, ALL, b), (node, ALL, ALL)):
                counts[cell] = counts.get(cell, 0) + int(n)
    order = sorted(seconds, key=_slot_order)
    relations: list[tuple[Cell, Sequence[Cell]]] = []
    for node, fs in firsts.items():
        fs_sorted = sorted(fs, key=_slot_order)
        for a in (ALL, *fs_sorted):  # a total over the second dimension = its parts
            relations.append(((node, a, ALL), [(node, a, b) for b in order if (node, a, b) in counts]))
        for b in (ALL, *order):  # a total over the first dimension = its parts
            if (node, ALL, b) in counts:
                relations.append(((node, ALL, b), [(node, a, b) for a in fs_sorted if (node, a, b) in counts]))
        for a in (ALL, *fs_sorted):  # a node = its children, cell by cell
            for b in (ALL, *order):
                if node in children and (node, a, b) in counts:
                    relations.append(((node, a, b), [(c, a, b) for c in children[node] if (c, a, b) in counts]))
    return SmallCounts(counts, withhold_small_counts(counts, relations, k), k)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _slot_order(v: Any) -> tuple[bool, str]:
    return (v is None, str(v))
