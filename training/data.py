"""Reading a training set and turning rows into model inputs.

The model's inputs are exactly `spec.FEATURE_NAMES`, in that order. Category columns arrive as
strings; they are cast to pandas categories with a category list fixed at training time and
stored with the model, so a string unseen at training behaves like a missing value (LightGBM's
rule) instead of silently shifting the codes of every other level. Bools and ints become floats
with NaN for missing, which LightGBM and the serving stage treat the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.home import EwsHome
from features.pointintime.spec import BY_NAME, CATEGORICAL, FEATURE_NAMES
from features.pointintime.trainset import latest_trainset_name
from features.pointintime.trainset import load_trainset as load_typed_trainset

GRADE_BANDS: tuple[tuple[str, int, int], ...] = (
    # grade_level: K1 = 1 ... K3 = 3, P1 = 4 ... P6 = 9, M1 = 10 ... M3 = 12, M4 = 13 ... M6 = 15
    ("pre_primary", 1, 3), ("primary", 4, 9), ("lower_secondary", 10, 12), ("upper_secondary", 13, 15),
)


@dataclass(frozen=True)
class Trainset:
    name: str
    frame: pd.DataFrame
    manifest: dict[str, Any]
    folder: Path


def resolve_trainset_name(home: EwsHome, name: str | None) -> str:
    return name or latest_trainset_name(home.trainsets_dir)


def load_trainset(home: EwsHome, name: str | None = None) -> Trainset:
    """The named training set (default: the newest): features' typed artefact, its manifest as a dict."""
    ts = load_typed_trainset(home.trainsets_dir, name)
    return Trainset(name=ts.name, frame=ts.frame, manifest=ts.manifest.model_dump(mode="json"), folder=ts.folder)


def learn_categories(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Sorted non-missing levels of every categorical feature (learned on training rows only)."""
    return {c: sorted(str(v) for v in frame[c].dropna().unique()) for c in CATEGORICAL}


def model_matrix(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """The model's input frame: FEATURE_NAMES in order, floats and fixed-level categories."""
    out: dict[str, Any] = {}
    for name in FEATURE_NAMES:
        col = frame[name]
        if BY_NAME[name].dtype == "category":
            values = col.astype("string")
            known = values.isin(categories[name]).fillna(False).to_numpy(dtype=bool)
            # Unseen levels become missing explicitly (LightGBM treats them so anyway).
            out[name] = pd.Categorical(values.where(known, None).astype(object), categories=categories[name])
        else:
            out[name] = pd.to_numeric(col.astype("Float64"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return pd.DataFrame(out, index=frame.index)


def round_type_of(round_ids: pd.Series) -> pd.Series:
    return round_ids.astype(str).str.rsplit("-", n=1).str[-1]


def grade_band_of(grade_level: pd.Series) -> pd.Series:
    gl = pd.to_numeric(grade_level, errors="coerce")
    band = pd.Series("unknown", index=grade_level.index, dtype=object)
    for name, lo, hi in GRADE_BANDS:
        band[(gl >= lo) & (gl <= hi)] = name
    return band
