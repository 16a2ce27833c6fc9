"""Reading a training set and the slices (round type, grade band) its rows are evaluated by.

The training set itself is features' typed artefact (`features.pointintime.trainset.Trainset`,
re-exported here); this module only finds it in a home. A training set holds every
`spec.FEATURE_NAMES` column besides its keys and label. Turning rows into model inputs is the model's own business (`training.model.RiskModel.encode`, with the
feature set and category lists fixed when it was fitted).
"""

from __future__ import annotations

import pandas as pd

from features.home import EwsHome
from features.pointintime.trainset import Trainset, latest_trainset_name
from features.pointintime.trainset import load_trainset as load_typed_trainset

__all__ = ["GRADE_BANDS", "Trainset", "grade_band_of", "load_trainset", "resolve_trainset_name", "round_type_of"]

GRADE_BANDS: tuple[tuple[str, int, int], ...] = (
    # grade_level: K1 = 1 ... K3 = 3, P1 = 4 ... P6 = 9, M1 = 10 ... M3 = 12, M4 = 13 ... M6 = 15
    ("pre_primary", 1, 3), ("primary", 4, 9), ("lower_secondary", 10, 12), ("upper_secondary", 13, 15),
)


def resolve_trainset_name(home: EwsHome, name: str | None) -> str:
    return name or latest_trainset_name(home.trainsets_dir)


def load_trainset(home: EwsHome, name: str | None = None) -> Trainset:
    """The named training set (default: the newest) of the home: features' typed artefact, as is."""
    return load_typed_trainset(home.trainsets_dir, name)


def round_type_of(round_ids: pd.Series) -> pd.Series:
    return round_ids.astype(str).str.rsplit("-", n=1).str[-1]


def grade_band_of(grade_level: pd.Series) -> pd.Series:
    gl = pd.to_numeric(grade_level, errors="coerce")
    band = pd.Series("unknown", index=grade_level.index, dtype=object)
    for name, lo, hi in GRADE_BANDS:
        band[(gl >= lo) & (gl <= hi)] = name
    return band
