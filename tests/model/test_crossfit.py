"""The cross-fitted training mode (`ModelConfig.refit = "crossfit"`): the published booster learns from
the training and calibration folds, while the calibrator only sees scores of calibration rows made by
boosters that never saw those rows' students, and the explanations still add up to the published logit.

Each specification rebuilds what the mode must have done with plain LightGBM calls on tiny synthetic
folds (training is deterministic, so "the same booster" means the same trees), on two seeds."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving.model import to_published_scale
from simulator.synthetic import synthetic_frame
from training.config import ModelConfig, TrainConfig
from training.model import Calibrator, RiskModel, crossfit_groups, lgb_params, scaled_trees

SEEDS = (3, 5)
K = 3


def _folds(seed: int) -> dict[str, pd.DataFrame]:
    f = synthetic_frame(600, seed=seed)
    rid = f["round_id"]
    return {"train": f[rid < "2567-T2"], "calibration": f[rid.str.startswith("2567-T2")],
            "test": f[rid.str.startswith("2568-T1")]}


def _cfg(refit: str, bag_seeds: int = 1) -> TrainConfig:
    return TrainConfig(model=ModelConfig(num_threads=1, n_estimators=120, early_stopping_rounds=30, refit=refit,
                                         crossfit_folds=K, bag_seeds=bag_seeds))


def _fit(folds: dict[str, pd.DataFrame], refit: str, bag_seeds: int = 1) -> RiskModel:
    train, calib, test = folds["train"], folds["calibration"], folds["test"]
    return RiskModel.from_train_config(_cfg(refit, bag_seeds)).fit(
        train, train["label"].to_numpy(), calibration=(calib, calib["label"].to_numpy()),
        cutoffs=(test, test["label"].to_numpy()))


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def fitted(request: pytest.FixtureRequest) -> tuple[dict[str, pd.DataFrame], RiskModel]:
    folds = _folds(request.param)
    return folds, _fit(folds, "crossfit")


def _booster_on(model: RiskModel, x: np.ndarray, y: np.ndarray, early_stopped_rows: int) -> lgb.Booster:
    """What the mode's rule says a booster on these rows is: same settings, trees scaled with the rows."""
    names = list(model.features_.names)
    data = lgb.Dataset(x, label=y, feature_name=names, categorical_feature=model.features_.categorical_indices)
    params = lgb_params(_cfg("crossfit").model, names, None, _cfg("crossfit").model.seed)
    return lgb.train(params, data, num_boost_round=scaled_trees(model.stage_a_trees_, len(x), early_stopped_rows))


def _trees(booster: lgb.Booster) -> str:
    return booster.model_to_string().split("parameters:")[0]


def test_every_student_of_the_calibration_fold_falls_in_one_group_of_a_seeded_split() -> None:
    keys = np.array(["c", "a", "b", "a", "d", "c", "e", "b", "f", "g"])
    groups = crossfit_groups(keys, 3, seed=1)
    for key in set(keys):
        assert len(set(groups[keys == key])) == 1  # all of a student's rows share a group
    per_group = [len(set(keys[groups == g])) for g in range(3)]
    assert max(per_group) - min(per_group) <= 1  # groups differ by at most one student
    # The same keys and seed give the same groups whatever the rows' order; another seed may not.
    order = np.random.default_rng(0).permutation(len(keys))
    assert np.array_equal(crossfit_groups(keys[order], 3, seed=1), groups[order])
    assert any(not np.array_equal(crossfit_groups(keys, 3, seed=s), groups) for s in range(2, 12))
    with pytest.raises(ValueError, match="at least 3 students"):
        crossfit_groups(np.array(["a", "b", "a"]), 3, seed=1)


def test_out_of_fold_scores_come_from_boosters_that_never_saw_those_students(fitted) -> None:
    folds, model = fitted
    train, calib = folds["train"], folds["calibration"]
    x_train, x_cal = model.encode(train), model.encode(calib)
    y_train, y_cal = train["label"].to_numpy(), calib["label"].to_numpy()
    groups = model.crossfit_groups_
    keys = calib["student_key"].astype(str).to_numpy()
    assert sorted(set(groups)) == list(range(K))
    for k in range(K):
        out = groups == k
        assert not set(keys[out]) & set(keys[~out])  # a group's students have no row elsewhere in the fold
        blind = _booster_on(model, np.vstack([x_train, x_cal[~out]]), np.concatenate([y_train, y_cal[~out]]), len(x_train))
        assert np.allclose(model.calibration_raw_[out], blind.predict(x_cal[out]), rtol=0, atol=1e-12)
        # The check can fail: a booster that also saw group k scores its rows differently.
        seeing = _booster_on(model, np.vstack([x_train, x_cal]), np.concatenate([y_train, y_cal]), len(x_train))
        assert not np.allclose(model.calibration_raw_[out], seeing.predict(x_cal[out]), rtol=0, atol=1e-6)


def test_the_published_booster_learnt_from_the_training_and_calibration_rows(fitted) -> None:
    folds, model = fitted
    train, calib = folds["train"], folds["calibration"]
    x = np.vstack([model.encode(train), model.encode(calib)])
    y = np.concatenate([train["label"].to_numpy(), calib["label"].to_numpy()])
    assert _trees(model.booster_) == _trees(_booster_on(model, x, y, len(train)))
    assert model.booster_.current_iteration() == scaled_trees(model.stage_a_trees_, len(x), len(train))
    assert model.booster_.current_iteration() > model.stage_a_trees_  # more rows, more trees
    # ... and not from the training fold alone (what refit="none" publishes).
    assert _trees(model.booster_) != _trees(_fit(folds, "none").booster_)


def test_platt_is_fitted_on_the_out_of_fold_scores_not_the_published_boosters_own(fitted) -> None:
    folds, model = fitted
    calib = folds["calibration"]
    y_cal = calib["label"].to_numpy()
    oof = Calibrator("platt").fit(model.calibration_raw_, y_cal)
    assert (model.calibrator_.a_, model.calibrator_.b_) == pytest.approx((oof.a_, oof.b_), rel=1e-12)
    in_sample = Calibrator("platt").fit(model.raw_probability(calib), y_cal)
    assert abs(in_sample.a_ - model.calibrator_.a_) > 1e-3  # the published booster's own scores differ


def test_the_risk_groups_observed_rates_use_the_out_of_fold_scores_of_the_calibration_fold(fitted) -> None:
    folds, model = fitted
    calib = folds["calibration"]
    oof_score = model.calibrator_.transform(model.calibration_raw_)
    groups = model.thresholds_.assign_by_round(oof_score, calib["round_id"].astype(str).to_numpy())
    stratum = model.thresholds_.by_stratum["T2-early"]  # the calibration fold's rounds (2567-T2)
    early = calib["round_id"].str.endswith("T2-early").to_numpy()
    y = calib["label"].to_numpy(dtype=float)
    assert stratum["problem"]["dropout_rate"] == pytest.approx(y[early & (groups == "problem")].mean())


def _assert_explains_the_published_score(model: RiskModel, rows: pd.DataFrame) -> None:
    """Contributions add up to the booster's margin, and on the published scale to the published logit."""
    contrib = model.contributions(rows)
    assert np.abs(contrib.sum(axis=1) - model.raw_margin(rows)).max() <= 1e-9
    _, residual = to_published_scale(model, contrib, model.risk_score(rows))
    assert np.abs(residual).max() <= 1e-9


def test_base_plus_contributions_is_the_published_logit_under_crossfit(fitted) -> None:
    folds, model = fitted
    _assert_explains_the_published_score(model, folds["test"])


def test_without_crossfit_the_calibrator_sees_the_published_boosters_own_scores() -> None:
    folds = _folds(SEEDS[0])
    model = _fit(folds, "none")
    calib = folds["calibration"]
    assert model.crossfit_groups_ is None
    assert model.booster_.best_iteration == model.stage_a_trees_
    assert np.array_equal(model.calibration_raw_, model.raw_probability(calib))


def test_crossfit_needs_the_calibration_folds_student_keys() -> None:
    folds = _folds(SEEDS[0])
    train, calib = folds["train"], folds["calibration"].drop(columns=["student_key"])
    with pytest.raises(ValueError, match="student_key"):
        RiskModel.from_train_config(_cfg("crossfit")).fit(train, train["label"].to_numpy(),
                                                           calibration=(calib, calib["label"].to_numpy()))


def test_the_refit_is_judged_on_the_calibration_fold_against_the_early_stopped_booster(fitted) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from training.pipeline import refit_validation

    folds, model = fitted
    calib = folds["calibration"]
    y = calib["label"].to_numpy()
    out = refit_validation(model, calib, _cfg("crossfit"))
    assert out["refit.calibration_fold.out_of_fold.roc_auc"] == pytest.approx(roc_auc_score(y, model.calibration_raw_))
    assert out["refit.calibration_fold.stage_a.pr_auc"] == pytest.approx(
        average_precision_score(y, model.stage_a_calibration_raw_))
    for metric in ("roc_auc", "pr_auc"):
        name = f"refit.calibration_fold.oof_minus_stage_a.{metric}"
        assert out[f"ci95_low.{name}"] < out[f"ci95_high.{name}"]
        assert out[f"ci95_low.{name}"] - 0.01 <= out[name] <= out[f"ci95_high.{name}"] + 0.01


@pytest.mark.parametrize("seed", SEEDS)
def test_refit_only_rounds_train_every_refitted_booster_and_never_stage_a(seed: int) -> None:
    # The rounds labelled after the calibration fold's as-of but before the test's (training.splits):
    # here the training fold's last term stands in for them.
    folds = _folds(seed)
    late = folds["train"]["round_id"].str.startswith("2567-T1")
    train, extra, calib = folds["train"][~late], folds["train"][late], folds["calibration"]
    assert len(extra) and len(train)

    def fit(refit: str) -> RiskModel:
        return RiskModel.from_train_config(_cfg(refit)).fit(
            train, train["label"].to_numpy(), calibration=(calib, calib["label"].to_numpy()),
            refit_only=(extra, extra["label"].to_numpy()))

    model = fit("crossfit")
    without = RiskModel.from_train_config(_cfg("none")).fit(
        train, train["label"].to_numpy(), calibration=(calib, calib["label"].to_numpy()))
    assert model.stage_a_trees_ == without.stage_a_trees_  # early stopping never saw the late labels
    assert model.refit_only_rows_ == len(extra)
    x_train, x_more, x_cal = model.encode(train), model.encode(extra), model.encode(calib)
    y_train, y_more, y_cal = (f["label"].to_numpy() for f in (train, extra, calib))
    published = _booster_on(model, np.vstack([x_train, x_more, x_cal]), np.concatenate([y_train, y_more, y_cal]),
                            len(x_train))
    assert _trees(model.booster_) == _trees(published)
    for k in range(K):
        out = model.crossfit_groups_ == k
        blind = _booster_on(model, np.vstack([x_train, x_more, x_cal[~out]]),
                            np.concatenate([y_train, y_more, y_cal[~out]]), len(x_train))
        assert np.allclose(model.calibration_raw_[out], blind.predict(x_cal[out]), rtol=0, atol=1e-12)
    # Without cross-fitting there is no refit: the late rows are not used at all.
    plain = fit("none")
    assert plain.refit_only_rows_ == 0 and _trees(plain.booster_) == _trees(without.booster_)


# -- seed-bagged refits (ModelConfig.bag_seeds) ---------------------------------------------------

BAGS = 3


@pytest.fixture(scope="module", params=SEEDS, ids=[f"seed{s}" for s in SEEDS])
def bagged(request: pytest.FixtureRequest) -> tuple[dict[str, pd.DataFrame], RiskModel]:
    folds = _folds(request.param)
    return folds, _fit(folds, "crossfit", BAGS)


def _members_on(model: RiskModel, x: np.ndarray, y: np.ndarray, early_stopped_rows: int) -> list[lgb.Booster]:
    """What the bagging rule says the members of a refit on these rows are: one Dataset, the
    mode's tree count, member j's subsampling seeds (training.bagging.member_params)."""
    from training.bagging import member_params

    names = list(model.features_.names)
    cfg = _cfg("crossfit", BAGS).model
    data = lgb.Dataset(x, label=y, feature_name=names, categorical_feature=model.features_.categorical_indices)
    params = lgb_params(cfg, names, None, cfg.seed)
    trees = scaled_trees(model.stage_a_trees_, len(x), early_stopped_rows)
    return [lgb.train(member_params(params, j), data, num_boost_round=trees) for j in range(BAGS)]


def test_one_bag_seed_trains_exactly_as_without_bagging(fitted) -> None:
    folds, model = fitted  # the default config: bag_seeds = 1
    assert ModelConfig().bag_seeds == 1
    once = _fit(folds, "crossfit", 1)
    assert once.booster_.model_to_string() == model.booster_.model_to_string()  # parameters block included
    assert np.array_equal(once.calibration_raw_, model.calibration_raw_)
    assert "bagging_freq: 0" in once.booster_.model_to_string()


def test_a_bagged_published_booster_is_the_mean_of_its_members_margins(bagged) -> None:
    folds, model = bagged
    train, calib, test = folds["train"], folds["calibration"], folds["test"]
    x = np.vstack([model.encode(train), model.encode(calib)])
    y = np.concatenate([train["label"].to_numpy(), calib["label"].to_numpy()])
    members = _members_on(model, x, y, len(train))
    x_test = model.encode(test)
    mean = np.mean([m.predict(x_test, raw_score=True) for m in members], axis=0)
    assert np.abs(model.raw_margin(test) - mean).max() <= 1e-9
    assert model.booster_.current_iteration() == BAGS * members[0].current_iteration()
    # The check can fail: the members differ, and bagging changed the published booster.
    assert min(np.abs(m.predict(x_test, raw_score=True) - mean).max() for m in members) > 1e-4
    assert np.abs(model.raw_margin(test) - _fit(folds, "crossfit", 1).raw_margin(test)).max() > 1e-4


def test_bagged_out_of_fold_scores_are_the_mean_of_members_blind_to_those_students(bagged) -> None:
    folds, model = bagged
    train, calib = folds["train"], folds["calibration"]
    x_train, x_cal = model.encode(train), model.encode(calib)
    y_train, y_cal = train["label"].to_numpy(), calib["label"].to_numpy()
    for k in range(K):
        out = model.crossfit_groups_ == k
        members = _members_on(model, np.vstack([x_train, x_cal[~out]]), np.concatenate([y_train, y_cal[~out]]),
                              len(x_train))
        mean = np.mean([m.predict(x_cal[out], raw_score=True) for m in members], axis=0)
        assert np.allclose(model.calibration_raw_[out], 1.0 / (1.0 + np.exp(-mean)), rtol=0, atol=1e-12)


def test_a_bagged_model_explains_and_survives_the_registrys_save_and_load(bagged, tmp_path) -> None:
    import mlflow.lightgbm

    folds, model = bagged
    test = folds["test"]
    _assert_explains_the_published_score(model, test)
    # The registry logs the booster with MLflow's LightGBM flavour and rebuilds the model from it
    # and the fitted state (training.registry.runs / versions).
    import lightgbm

    mlflow.lightgbm.save_model(model.booster_, tmp_path / "model",
                               pip_requirements=[f"lightgbm=={lightgbm.__version__}"])  # as runs.py: no inference
    loaded = RiskModel.from_fitted_state(mlflow.lightgbm.load_model(str(tmp_path / "model")), model.fitted_state())
    assert loaded.booster_.model_to_string() == model.booster_.model_to_string()
    assert np.array_equal(loaded.risk_score(test), model.risk_score(test))
    assert np.array_equal(loaded.contributions(test), model.contributions(test))
