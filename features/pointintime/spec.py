"""The feature catalogue: every model input, its group, meaning, and what missing means.

Derived from the declared groups in `groups.py` (where a feature is added, beside its SQL), so the
catalogue and the query cannot drift apart. Groups are named after what a school understands,
because SHAP reasons are later summed per group and shown to teachers ("attendance", ...).
Serving, training and the model card read this catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.pointintime.compile import Dtype
from features.pointintime.groups import FAIRNESS, MODEL_GROUPS

__all__ = ["BY_NAME", "CATEGORICAL", "Dtype", "FEATURES", "FEATURE_NAMES", "Feature", "GROUPS", "GROUP_COLUMNS",
           "KEY_COLUMNS", "catalogue_markdown"]

GROUPS: dict[str, tuple[str, str]] = {g.name: (g.en, g.th) for g in MODEL_GROUPS}


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    dtype: Dtype
    en: str
    th: str
    missing: str = "never missing"  # what an empty value means

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown feature group {self.group!r}")


FEATURES: tuple[Feature, ...] = tuple(
    Feature(c.name, g.name, c.dtype, c.en, c.th, c.missing) for g in MODEL_GROUPS for c in g.columns
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
