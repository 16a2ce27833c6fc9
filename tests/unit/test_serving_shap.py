"""Fast TreeSHAP gives LightGBM's (and shap.TreeExplainer's) exact values, and they add up."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving.fastshap import TreeTables, tree_shap


@pytest.fixture(scope="module")
def model_and_rows() -> tuple[lgb.Booster, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 3000
    x = rng.normal(size=(n, 8))
    x[rng.random((n, 8)) < 0.15] = np.nan
    x[:, 2] = np.where(rng.random(n) < 0.3, 0.0, x[:, 2])  # zeros, for missing_type Zero
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    df["many"] = pd.Categorical(rng.choice(list("abcdefghij") + [None], size=n))
    df["few"] = pd.Categorical(rng.choice(["x", "y", None], size=n))
    y = (np.nan_to_num(x[:, 0]) + df["many"].isin(list("ace")).to_numpy() + rng.normal(size=n) > 0.8).astype(int)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 15, "min_data_in_leaf": 10,
                         "max_cat_to_onehot": 4, "seed": 1, "num_threads": 1}, lgb.Dataset(df, y), 40)
    matrix = df.copy()
    for c in ("many", "few"):
        matrix[c] = matrix[c].cat.codes.replace(-1, np.nan).astype(float)
    return booster, df, matrix.to_numpy(dtype=float)


def test_fast_treeshap_equals_lightgbm_pred_contrib_to_1e_9(model_and_rows) -> None:
    booster, df, x = model_and_rows
    mine = tree_shap(TreeTables.from_booster(booster), x)
    ref = booster.predict(df, pred_contrib=True)
    assert np.abs(mine - ref).max() < 1e-9


def test_fast_treeshap_equals_shap_tree_explainer_to_1e_9(model_and_rows) -> None:
    shap = pytest.importorskip("shap")
    booster, df, x = model_and_rows
    mine = tree_shap(TreeTables.from_booster(booster), x[:300])
    explainer = shap.TreeExplainer(booster)
    values = np.asarray(explainer.shap_values(df.iloc[:300]))
    values = values[-1] if values.ndim == 3 else values
    assert np.abs(mine[:, :-1] - values).max() < 1e-9
    assert abs(mine[0, -1] - float(np.ravel(explainer.expected_value)[-1])) < 1e-9


def test_contributions_plus_base_add_up_to_the_raw_margin(model_and_rows) -> None:
    booster, df, x = model_and_rows
    mine = tree_shap(TreeTables.from_booster(booster), x)
    assert np.abs(mine.sum(axis=1) - booster.predict(df, raw_score=True)).max() < 1e-9


def test_a_matrix_with_the_wrong_number_of_columns_is_refused(model_and_rows) -> None:
    booster, _, x = model_and_rows
    with pytest.raises(ValueError, match="columns"):
        tree_shap(TreeTables.from_booster(booster), x[:, :3])
