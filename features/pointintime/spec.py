"""The feature catalogue: every model input, its group, meaning, and what missing means.

Derived from the declared groups in `groups.py` (where a feature is added, beside its SQL), so the
catalogue and the query cannot drift apart. Groups are named after what a school understands,
because SHAP reasons are later summed per group and shown to teachers ("attendance", ...).
Serving, training and the model card read this catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from features.pointintime.compile import Dtype
from features.pointintime.groups import FAIRNESS, MODEL_GROUPS

__all__ = ["BY_NAME", "CATEGORICAL", "CONTEXT_FEATURES", "Dtype", "FEATURES", "FEATURE_NAMES", "Feature", "FeatureRole",
           "GROUPS", "GROUP_COLUMNS", "KEY_COLUMNS", "PROTECTED_FEATURES", "catalogue_markdown"]

GROUPS: dict[str, tuple[str, str]] = {g.name: (g.en, g.th) for g in MODEL_GROUPS}

# What a feature may be in an explanation (serving.reasons reads the role, never a list of its own).
# "reason": part of a group a teacher is told raises or lowers the risk.
# "context": where the child is in the school calendar (grade, term, round type, age). It moves the
#   risk of every child of that grade and round alike, so it is shown once as context and is never
#   offered as a reason: "grade M3 raises risk" tells a school nothing it can act on.
# "protected": who the child is (sex, nationality status, disability). The model may read them (the
#   fairness audit measures what that does), but a teacher is never told that a child's sex,
#   nationality or disability is why the child is at risk.
FeatureRole = Literal["reason", "context", "protected"]
CONTEXT_FEATURES: frozenset[str] = frozenset({"grade", "grade_level", "in_transition_grade", "term", "is_mid_round", "age"})
PROTECTED_FEATURES: frozenset[str] = frozenset({"sex", "non_thai_id", "disability", "welfare_disability_card"})


def _role(name: str) -> FeatureRole:
    if name in PROTECTED_FEATURES:
        return "protected"
    return "context" if name in CONTEXT_FEATURES else "reason"


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    dtype: Dtype
    en: str
    th: str
    missing: str = "never missing"  # what an empty value means
    role: FeatureRole = "reason"  # see CONTEXT_FEATURES / PROTECTED_FEATURES

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown feature group {self.group!r}")


FEATURES: tuple[Feature, ...] = tuple(
    Feature(c.name, g.name, c.dtype, c.en, c.th, c.missing, _role(c.name)) for g in MODEL_GROUPS for c in g.columns
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.dtype == "category")
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

# Columns of a feature set that are not model inputs: identity of the row, groups for fairness.
KEY_COLUMNS: tuple[str, ...] = ("student_key", "round_id", "as_of", "school_code")
GROUP_COLUMNS: tuple[str, ...] = tuple(c.name for c in FAIRNESS.columns)


def catalogue_markdown() -> str:
    lines = ["| feature | group | type | meaning | ความหมาย | when empty |", "|---|---|---|---|---|---|"]
    for f in FEATURES:
        lines.append(f"| `{f.name}` | {GROUPS[f.group][0]} | {f.dtype} | {f.en} | {f.th} | {f.missing} |")
    return "\n".join(lines)
