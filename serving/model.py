"""What serving adds to a registered model: the risk-group labels it shows, and the booster
flattened for fast exact TreeSHAP.

The model itself is training's `RiskModel` (loaded with its lineage by
`training.registry.load_model`); its `encode` gives the very matrix LightGBM and
`serving.fastshap` read, so scores and explanations are computed on the same numbers.
"""

from __future__ import annotations

import weakref
from typing import Any

from training.model import RISK_GROUP_TH, RISK_GROUPS, RiskModel

__all__ = ["RISK_GROUPS", "RISK_GROUP_EN", "RISK_GROUP_TH", "shap_tables"]

RISK_GROUP_EN: dict[str, str] = {"problem": "problem", "at_risk": "at-risk", "normal": "normal"}

# One flattening per loaded model, dropped with it: building the tables takes a few seconds and the
# service keeps several versions in memory for replay.
_TABLES: weakref.WeakKeyDictionary[RiskModel, Any] = weakref.WeakKeyDictionary()


def shap_tables(model: RiskModel) -> Any:  # -> serving.fastshap.TreeTables
    """The model's booster flattened for fast exact TreeSHAP (built on first use, then kept)."""
    tables = _TABLES.get(model)
    if tables is None:
        from serving.fastshap import TreeTables

        tables = _TABLES[model] = TreeTables.from_booster(model.booster_)
    return tables
