"""The fairness audit on a constructed example, and agreement with fairlearn's MetricFrame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, false_negative_rate, false_positive_rate, selection_rate
from sklearn.metrics import precision_score

from training.config import FairnessConfig
from training.fairness import audit_table, flatten, gate_failures


def _example() -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    # Group F: 8 rows, 4 dropouts; flagged rows 0-3 (3 dropouts + 1 not).
    # Group M: 4 rows, 2 dropouts; flagged row 8 (a dropout).
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0])
    flagged = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0])
    groups = pd.DataFrame({"sex": ["F"] * 8 + ["M"] * 4})
    return y, flagged, groups


def test_rates_and_ratios_by_hand() -> None:
    y, flagged, groups = _example()
    t = audit_table(y, flagged, groups, FairnessConfig(min_group_rows=1, min_group_positives=1)).set_index("group")
    assert t.loc["F", "reference"] == "F"  # the largest group
    assert t.loc["F", "selection_rate"] == pytest.approx(0.5)
    assert t.loc["F", "precision"] == pytest.approx(0.75)
    assert t.loc["F", "fpr"] == pytest.approx(0.25)
    assert t.loc["F", "fnr"] == pytest.approx(0.25)
    assert t.loc["M", "selection_rate"] == pytest.approx(0.25)
    assert t.loc["M", "precision"] == pytest.approx(1.0)
    assert t.loc["M", "fpr"] == pytest.approx(0.0)
    assert t.loc["M", "fnr"] == pytest.approx(0.5)
    assert t.loc["M", "selection_rate_ratio"] == pytest.approx(0.5)
    assert t.loc["M", "fnr_ratio"] == pytest.approx(2.0)
    assert not t.loc["M", "fnr_in_band"] and t.loc["F", "fnr_in_band"]


def test_the_rates_equal_fairlearns_metricframe() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.2).astype(int)
    flagged = (rng.random(500) < 0.3).astype(int)
    sf = pd.Series(rng.choice(["a", "b", "c"], 500), name="region")
    mf = MetricFrame(metrics={"selection_rate": selection_rate, "fpr": false_positive_rate, "fnr": false_negative_rate,
                              "precision": lambda t, p: precision_score(t, p, zero_division=0)},
                     y_true=y, y_pred=flagged, sensitive_features=sf).by_group
    ours = audit_table(y, flagged, pd.DataFrame({"region": sf}), FairnessConfig()).set_index("group")
    for m in ("selection_rate", "fpr", "fnr", "precision"):
        assert np.allclose(ours.loc[mf.index, m].to_numpy(), mf[m].to_numpy())


def test_small_groups_are_reported_but_not_judged() -> None:
    y, flagged, groups = _example()
    # Group M: 4 students with an FNR twice F's. Judged on 40 copies of each pupil (so the interval is
    # narrow enough to be evidence), it fails; at its own size it is too small to judge.
    cfg = FairnessConfig(min_group_students=5, min_group_positives=1, gate_attributes=("sex",), gate_metrics=("fnr",))
    t = audit_table(y, flagged, groups, cfg)
    assert bool(t.set_index("group").loc["M", "too_small"])
    assert gate_failures(t, cfg) == []
    judged = FairnessConfig(min_group_students=1, min_group_positives=1, gate_attributes=("sex",), gate_metrics=("fnr",))
    many = pd.concat([groups] * 40, ignore_index=True)
    (failure,) = gate_failures(audit_table(np.tile(y, 40), np.tile(flagged, 40), many, judged), judged)
    assert failure.startswith("sex=M: fnr ratio 2.000")


def test_flattened_names_are_stable() -> None:
    y, flagged, groups = _example()
    flat = flatten(audit_table(y, flagged, groups, FairnessConfig()))
    assert flat["groups.sex.F.fpr"] == pytest.approx(0.25)
    assert flat["groups.sex.M.selection_rate_ratio"] == pytest.approx(0.5)


def test_missing_group_values_form_an_unknown_group() -> None:
    y, flagged, groups = _example()
    groups = groups.astype(object)
    groups.iloc[0, 0] = None
    t = audit_table(y, flagged, groups, FairnessConfig())
    assert "unknown" in set(t["group"])
