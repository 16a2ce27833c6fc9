"""Behaviour of a trained risk model: monotone where constrained, blind to the student key,
deterministic, and calibrated scores that serving can rebuild from plain numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import ModelConfig, TrainConfig
from training.model import MONOTONE, RiskModel, choose_thresholds
from training.pipeline import fit_model
from simulator.synthetic import synthetic_frame

CFG = TrainConfig(model=ModelConfig(num_threads=1, n_estimators=150))


@pytest.fixture(scope="module")
def folds() -> dict[str, pd.DataFrame]:
    f = synthetic_frame(800, seed=3)
    rid = f["round_id"]
    return {"train": f[rid < "2567-T2"], "calibration": f[rid.str.startswith("2567-T2")],
            "test": f[rid.str.startswith("2568-T1")]}


@pytest.fixture(scope="module")
def model(folds: dict[str, pd.DataFrame]) -> RiskModel:
    m = fit_model(folds, CFG)
    m.thresholds = choose_thresholds(m.risk_score(folds["test"]), folds["test"]["label"].to_numpy(), 0.05, 0.15)
    return m


@pytest.mark.parametrize("feature", ["att_rate_12m", "att_rate_term", "att_rate_last_month"])
def test_more_absence_never_lowers_the_score(model: RiskModel, folds: dict[str, pd.DataFrame], feature: str) -> None:
    assert MONOTONE[feature] == -1
    rows = folds["test"].head(200)
    previous = None
    for rate in np.linspace(1.0, 0.3, 15):  # attendance falling = absence rising
        scores = model.raw_score(rows.assign(**{feature: rate}))
        if previous is not None:
            assert (scores >= previous - 1e-12).all()
        previous = scores


def test_more_failing_marks_never_lower_the_score(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(200)
    s = [model.raw_score(rows.assign(failing_marks_12m=k)) for k in range(6)]
    assert all((b >= a - 1e-12).all() for a, b in zip(s, s[1:]))


def test_a_students_key_never_changes_the_score(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(300)
    shuffled_keys = rows.assign(student_key=rows["student_key"].sample(frac=1, random_state=1).to_numpy(),
                                school_code="9999999999")
    assert np.array_equal(model.risk_score(rows), model.risk_score(shuffled_keys))


def test_a_category_unseen_at_training_scores_like_a_missing_value(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(100)
    assert np.allclose(model.raw_score(rows.assign(travel_mode="hovercraft")), model.raw_score(rows.assign(travel_mode=None)))


def test_training_twice_gives_identical_trees_whatever_the_thread_count(folds: dict[str, pd.DataFrame]) -> None:
    small = {k: v.head(2000) for k, v in folds.items()}
    a = fit_model(small, TrainConfig(model=ModelConfig(num_threads=1, n_estimators=40))).booster.model_to_string()
    b = fit_model(small, TrainConfig(model=ModelConfig(num_threads=2, n_estimators=40))).booster.model_to_string()
    # The parameters block records num_threads; the trees before it must match exactly.
    assert a.split("parameters:")[0] == b.split("parameters:")[0]


def test_calibrated_scores_are_probabilities_and_groups_follow_thresholds(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    s = model.risk_score(folds["test"])
    assert ((s >= 0) & (s <= 1)).all()
    groups = model.risk_group(folds["test"])
    assert (s[groups == "problem"] >= model.thresholds.problem).all()
    assert (s[groups == "normal"] < model.thresholds.at_risk).all()


def test_the_model_beats_the_abc_rule_on_data_where_it_should() -> None:
    from training.baselines import abc_rule
    from training.metrics import score_metrics

    f = synthetic_frame(800, seed=4)
    rid = f["round_id"]
    folds = {"train": f[rid < "2567-T2"], "calibration": f[rid.str.startswith("2567-T2")],
             "test": f[rid.str.startswith("2568-T1")]}
    m = fit_model(folds, CFG)
    y = folds["test"]["label"].to_numpy()
    assert score_metrics(y, m.risk_score(folds["test"]))["roc_auc"] > score_metrics(y, abc_rule(folds["test"]), probabilistic=False)["roc_auc"]
