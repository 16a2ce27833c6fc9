"""Seed-bagged boosters merged into one (training/bagging.py): the merged booster's margin is the mean
of the members' margins, its explanations add up to it, and it is a LightGBM model like any other.

Small data built here (numeric, categorical and missing values, monotone constraints on), two seeds."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from serving.fastshap import TreeTables, tree_shap
from training.bagging import member_params, merge_boosters, merge_model_strings

SEEDS = (4, 19)
K = 3


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 2500
    x = rng.normal(size=(n, 5))
    x[:, 2] = rng.integers(0, 12, n)  # a category of 12 levels (split as a set)
    x[:, 4] = rng.integers(0, 3, n)  # a category of 3 levels (split one-vs-rest)
    x[rng.random((n, 5)) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 1]) - np.nan_to_num(x[:, 3]) + np.isin(x[:, 2], (0, 3, 6, 9)) + (x[:, 4] == 1)
    y = (signal + rng.normal(size=n) > 1.2).astype(int)
    return x, y


def _members(seed: int, k: int = K, rounds: int = 25) -> tuple[list[lgb.Booster], np.ndarray]:
    x, y = _data(seed)
    params = {"objective": "binary", "verbosity": -1, "num_leaves": 7, "min_child_samples": 20, "max_cat_to_onehot": 4,
              "feature_fraction": 0.9, "seed": seed, "deterministic": True, "force_col_wise": True, "num_threads": 1,
              "monotone_constraints": [0, 1, 0, -1, 0], "monotone_constraints_method": "intermediate"}
    data = lgb.Dataset(x, label=y, categorical_feature=[2, 4], free_raw_data=True)
    return [lgb.train(member_params(params, j), data, num_boost_round=rounds) for j in range(k)], x


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def bagged(request: pytest.FixtureRequest) -> tuple[list[lgb.Booster], lgb.Booster, np.ndarray]:
    members, x = _members(request.param)
    return members, merge_boosters(members), x


def test_the_merged_boosters_raw_margin_is_the_mean_of_the_members_margins(bagged) -> None:
    members, merged, x = bagged
    mean = np.mean([m.predict(x, raw_score=True) for m in members], axis=0)
    assert np.abs(merged.predict(x, raw_score=True) - mean).max() <= 1e-9
    assert merged.current_iteration() == sum(m.current_iteration() for m in members)
    assert merged.best_iteration == 0  # as lgb.train's boosters without early stopping: every tree counts
    # The check can fail: the members differ (row subsampling), so no single one is the mean.
    assert min(np.abs(m.predict(x, raw_score=True) - mean).max() for m in members) > 1e-3
    # ... and the splits the test relies on are there: set splits on a category, missing values routed.
    text = merged.model_to_string()
    assert "cat_threshold=" in text and "monotone_constraints=0 1 0 -1 0" in text
    assert np.isnan(x).any()


def test_shap_on_the_merged_booster_adds_up_to_its_raw_margin(bagged) -> None:
    shap = pytest.importorskip("shap")
    _, merged, x = bagged
    rows = x[:300]
    margin = merged.predict(rows, raw_score=True)
    explainer = shap.TreeExplainer(merged)
    values = np.asarray(explainer.shap_values(rows))
    values = values[-1] if values.ndim == 3 else values
    base = float(np.ravel(explainer.expected_value)[-1])
    assert np.abs(values.sum(axis=1) + base - margin).max() <= 1e-9
    # The serving path's own TreeSHAP reads the merged trees the same way.
    fast = tree_shap(TreeTables.from_booster(merged), rows)
    assert np.abs(fast[:, :-1] - values).max() <= 1e-9
    assert np.abs(fast.sum(axis=1) - margin).max() <= 1e-9


def test_the_merged_model_text_is_what_lightgbm_writes_for_it(bagged) -> None:
    # tree_sizes, renumbered trees, feature_importances and the number formats are LightGBM's own:
    # loading the text and writing it again gives the same text.
    members, merged, _ = bagged
    text = merge_model_strings([m.model_to_string() for m in members])
    assert lgb.Booster(model_str=text).model_to_string() == text
    importance = merged.feature_importance("split")
    assert np.array_equal(importance, np.sum([m.feature_importance("split") for m in members], axis=0))


def test_one_booster_is_returned_as_it_is() -> None:
    members, _ = _members(SEEDS[0], k=1)
    assert merge_boosters(members) is members[0]


def test_members_seeds_are_derived_from_the_seed_and_differ_between_members() -> None:
    base = {"seed": 20251122, "feature_fraction": 0.9}
    first = [member_params(base, j) for j in range(5)]
    assert first == [member_params(base, j) for j in range(5)]  # deterministic
    assert len({p["bagging_seed"] for p in first}) == 5
    assert member_params({**base, "seed": 7}, 0)["bagging_seed"] != first[0]["bagging_seed"]
    assert all(p["bagging_freq"] == 1 and 0 < p["bagging_fraction"] < 1 and p["seed"] == base["seed"] for p in first)


def test_boosters_fitted_on_other_features_are_refused() -> None:
    members, _ = _members(SEEDS[0], k=1)
    x, y = _data(SEEDS[0])
    other = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(x[:, :4], label=y), 3)
    with pytest.raises(ValueError, match="header"):
        merge_model_strings([members[0].model_to_string(), other.model_to_string()])
    with pytest.raises(ValueError, match="LightGBM model text"):
        merge_model_strings(["not a model", members[0].model_to_string()])
