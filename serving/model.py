"""The model as serving sees it: a registered version's booster, calibrator, thresholds and lineage.

Training owns the MLflow registry and how a version is stored (`training.registry`); this module
only adapts what it returns into one typed object, and turns a feature frame into the float
matrix LightGBM and `serving.fastshap` read (category codes from the categories fixed at training,
NaN for missing), so scores and explanations are computed on the very same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from features.home import EwsHome
from features.pointintime.spec import BY_NAME, FEATURE_NAMES

RISK_GROUPS: tuple[str, ...] = ("problem", "at_risk", "normal")
RISK_GROUP_TH: dict[str, str] = {"problem": "มีปัญหา", "at_risk": "เสี่ยง", "normal": "ปกติ"}
RISK_GROUP_EN: dict[str, str] = {"problem": "problem", "at_risk": "at-risk", "normal": "normal"}


@dataclass
class ServingModel:
    """One registered model version, ready to score and explain."""

    booster: Any  # lightgbm.Booster
    calibrator: Any  # training.model.Calibrator: raw probability -> calibrated probability
    categories: dict[str, list[str]]
    thresholds: Any  # training.model.RiskThresholds
    version: str
    run_id: str
    name: str = "dropout-risk"
    trainset_name: str = ""
    trainset_fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = list(self.booster.feature_name())
        if names != list(FEATURE_NAMES):
            raise ValueError("the model's features differ from the feature catalogue: retrain, or score with its version")

    @cached_property
    def shap_tables(self) -> Any:
        """The booster flattened for fast exact TreeSHAP (built on first use: a few seconds)."""
        from serving.fastshap import TreeTables

        return TreeTables.from_booster(self.booster)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return model_matrix(frame, self.categories)

    def raw_margin(self, x: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Log-odds before calibration (what SHAP contributions add up to)."""
        kw = {"num_threads": num_threads} if num_threads else {}
        return np.asarray(self.booster.predict(x, raw_score=True, **kw), dtype=np.float64)

    def risk_score(self, margin: np.ndarray) -> np.ndarray:
        """Calibrated probability of dropout by the next census, from the raw margin."""
        return np.asarray(self.calibrator.transform(1.0 / (1.0 + np.exp(-margin))), dtype=np.float64)

    def risk_group(self, score: np.ndarray) -> np.ndarray:
        return np.asarray(self.thresholds.assign(score), dtype=object)

    def thresholds_dict(self) -> dict[str, Any]:
        t = self.thresholds
        return t.to_dict() if hasattr(t, "to_dict") else dict(t)

    def lineage(self) -> dict[str, Any]:
        return {
            "model_name": self.name, "model_version": str(self.version), "run_id": self.run_id,
            "trainset_name": self.trainset_name, "trainset_fingerprint": self.trainset_fingerprint,
            **self.extra,
        }


def model_matrix(frame: pd.DataFrame, categories: dict[str, list[str]]) -> np.ndarray:
    """FEATURE_NAMES in order as float64: categories -> their code in the training list (unseen or
    missing -> NaN, which LightGBM sends the way it sends missing), bools/ints -> floats."""
    out = np.empty((len(frame), len(FEATURE_NAMES)), dtype=np.float64)
    for j, name in enumerate(FEATURE_NAMES):
        col = frame[name]
        if BY_NAME[name].dtype == "category":
            levels = categories.get(name, [])
            codes = pd.Categorical(col.astype("string").to_numpy(dtype=object, na_value=None), categories=levels).codes
            out[:, j] = np.where(codes < 0, np.nan, codes.astype(np.float64))
        else:
            out[:, j] = pd.to_numeric(col.astype("Float64"), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def from_loaded(loaded: Any, tags: dict[str, str] | None = None) -> ServingModel:
    """A `training.registry.LoadedModel` (and its run's tags) -> ServingModel."""
    risk = loaded.model
    tags = tags or {}
    return ServingModel(
        booster=risk.booster, calibrator=risk.calibrator, categories=dict(risk.categories),
        thresholds=risk.thresholds, version=str(loaded.version), run_id=str(loaded.run_id),
        name=str(loaded.model_uri).split("/")[1] if str(loaded.model_uri).startswith("models:/") else "dropout-risk",
        trainset_name=str(loaded.trainset),
        trainset_fingerprint=tags.get("trainset.sha256", ""),
        extra={"trainset_delivery_fingerprint": tags.get("trainset.delivery_fingerprint", "")},
    )


def _load(home: EwsHome, version: str | None) -> ServingModel:
    from training import registry

    loaded = registry.load_model(home, version=int(version)) if version is not None else registry.load_champion(home)
    try:
        tags = dict(registry.client_for(home).get_run(loaded.run_id).data.tags)
    except Exception:  # noqa: BLE001 - lineage tags are informative; a missing run must not stop scoring
        tags = {}
    return from_loaded(loaded, tags)


def load_champion(home: EwsHome) -> ServingModel:
    """The model version the registry's `champion` alias points to."""
    return _load(home, None)


def load_version(home: EwsHome, version: str) -> ServingModel:
    """A given registered version (audit replay of an older round)."""
    return _load(home, version)
