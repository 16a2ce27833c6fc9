"""Behaviour of a trained risk model: monotone where constrained, blind to identifiers, deterministic,
calibrated scores that serving can rebuild from plain numbers, and replayable after the catalogue grows."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from training.config import ModelConfig, TrainConfig
from training.model import MONOTONE, RiskModel
from simulator.synthetic import synthetic_frame

CFG = TrainConfig(model=ModelConfig(num_threads=1, n_estimators=150))
# Columns that travel with every feature frame (keys, the round, fairness attributes) but must never
# reach the model.
IDENTIFIERS: tuple[str, ...] = ("student_key", "school_code", "round_id", "group_province")


def _folds(seed: int) -> dict[str, pd.DataFrame]:
    f = synthetic_frame(800, seed=seed)
    rid = f["round_id"]
    return {"train": f[rid < "2567-T2"], "calibration": f[rid.str.startswith("2567-T2")],
            "test": f[rid.str.startswith("2568-T1")]}


def fit(folds: dict[str, pd.DataFrame], cfg: TrainConfig = CFG, model: RiskModel | None = None) -> RiskModel:
    """Fit as training does: booster on train, calibrator on calibration, cut-offs on test."""
    model = model if model is not None else RiskModel.from_train_config(cfg)
    train, calib, test = folds["train"], folds["calibration"], folds["test"]
    return model.fit(train, train["label"].to_numpy(), calibration=(calib, calib["label"].to_numpy()),
                     cutoffs=(test, test["label"].to_numpy()))


@pytest.fixture(scope="module")
def folds() -> dict[str, pd.DataFrame]:
    return _folds(3)


@pytest.fixture(scope="module")
def model(folds: dict[str, pd.DataFrame]) -> RiskModel:
    return fit(folds)


def test_the_model_follows_scikit_learns_contract(folds: dict[str, pd.DataFrame]) -> None:
    unfitted = RiskModel.from_train_config(CFG)
    assert unfitted.get_params()["config"] is CFG.model
    with pytest.raises(NotFittedError):
        check_is_fitted(unfitted)
    assert not hasattr(unfitted, "booster_")
    small = {k: v.head(1500) for k, v in folds.items()}
    twin = clone(unfitted)
    fitted = fit(small, model=twin)
    assert fitted is twin  # fit returns self
    check_is_fitted(fitted)
    for attribute in ("booster_", "calibrator_", "categories_", "features_", "thresholds_"):
        assert hasattr(fitted, attribute)
    assert not hasattr(unfitted, "booster_")  # clone shares no fitted state


@pytest.mark.parametrize("feature", ["att_rate_12m", "att_rate_term", "att_rate_last_month"])
def test_more_absence_never_lowers_the_score(model: RiskModel, folds: dict[str, pd.DataFrame], feature: str) -> None:
    assert MONOTONE[feature] == -1
    rows = folds["test"].head(200)
    previous = None
    for rate in np.linspace(1.0, 0.3, 15):  # attendance falling = absence rising
        scores = model.raw_probability(rows.assign(**{feature: rate}))
        if previous is not None:
            assert (scores >= previous - 1e-12).all()
        previous = scores


def test_more_failing_marks_never_lower_the_score(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(200)
    s = [model.raw_probability(rows.assign(failing_marks_12m=k)) for k in range(6)]
    assert all((b >= a - 1e-12).all() for a, b in zip(s, s[1:]))


class _LeakingModel(RiskModel):
    """A deliberately broken model that reads the student key (through its first input): proof that
    the identifier test below fails for a model that leaks."""

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        x = super().encode(frame)
        key_hash = pd.util.hash_pandas_object(frame["student_key"], index=False).to_numpy()
        x[:, 0] = (key_hash % 1000) / 1000.0
        return x


def _relabelled(rows: pd.DataFrame) -> pd.DataFrame:
    """The same students with every identifier that travels with the frame changed."""
    return rows.assign(
        student_key=rows["student_key"].sample(frac=1, random_state=1).to_numpy(),
        school_code="9999999999", round_id="2599-T2", group_province="Somewhere else",
    )


def _assert_identifiers_never_change_the_score(model: RiskModel, rows: pd.DataFrame) -> None:
    assert set(IDENTIFIERS) <= set(rows.columns)  # the identifiers really are in the scored frame
    assert np.array_equal(model.risk_score(rows), model.risk_score(_relabelled(rows)))


def test_identifiers_travelling_with_the_frame_never_change_the_score(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(300)
    _assert_identifiers_never_change_the_score(model, rows)
    # The same check catches a model that reads the student key.
    leaking = _LeakingModel.restore(model.booster_, model.calibrator_, model.features_, model.thresholds_)
    with pytest.raises(AssertionError):
        _assert_identifiers_never_change_the_score(leaking, rows)


def test_a_category_unseen_at_training_scores_like_a_missing_value(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(100)
    unseen = model.raw_probability(rows.assign(travel_mode="hovercraft"))
    assert np.allclose(unseen, model.raw_probability(rows.assign(travel_mode=None)))
    assert not np.allclose(unseen, model.raw_probability(rows))  # travel_mode does move the score


def test_training_twice_gives_identical_trees_whatever_the_thread_count(folds: dict[str, pd.DataFrame]) -> None:
    small = {k: v.head(2000) for k, v in folds.items()}
    a = fit(small, TrainConfig(model=ModelConfig(num_threads=1, n_estimators=40))).booster_.model_to_string()
    b = fit(small, TrainConfig(model=ModelConfig(num_threads=2, n_estimators=40))).booster_.model_to_string()
    # The parameters block records num_threads; the trees before it must match exactly.
    assert a.split("parameters:")[0] == b.split("parameters:")[0]


def test_integer_codes_train_the_same_trees_as_pandas_categories(folds: dict[str, pd.DataFrame]) -> None:
    """The model encodes categories as codes in its own list; LightGBM given the same levels as pandas
    categories must grow the very same trees (the encoding changed, the model did not)."""
    small = {k: v.head(2000) for k, v in folds.items()}
    # refit="none": the early-stopped booster is the published one, so the trees compare one to one
    # (the cross-fitted refit reuses the same encoding: tests/model/test_crossfit.py).
    cfg = TrainConfig(model=ModelConfig(num_threads=1, n_estimators=40, refit="none"))
    ours = fit(small, cfg)
    from training.model import lgb_params

    def as_categories(frame: pd.DataFrame) -> pd.DataFrame:
        x = pd.DataFrame(ours.encode(frame), columns=list(ours.features_.names), index=frame.index)
        for name, levels in ours.categories_.items():
            codes = x[name].fillna(-1).astype(int).to_numpy()
            x[name] = pd.Categorical.from_codes(codes, categories=levels)
        return x

    train, calib = small["train"], small["calibration"]
    dtrain = lgb.Dataset(as_categories(train), label=train["label"].to_numpy(), categorical_feature="auto")
    dvalid = lgb.Dataset(as_categories(calib), label=calib["label"].to_numpy(), reference=dtrain)
    theirs = lgb.train(lgb_params(cfg.model, ours.features_.names), dtrain, num_boost_round=cfg.model.n_estimators,
                       valid_sets=[dvalid], callbacks=[lgb.early_stopping(cfg.model.early_stopping_rounds, verbose=False)])
    assert ours.booster_.model_to_string().split("parameters:")[0] == theirs.model_to_string().split("parameters:")[0]


def test_calibrated_scores_are_probabilities_and_groups_follow_thresholds(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    s = model.risk_score(folds["test"])
    assert ((s >= 0) & (s <= 1)).all()
    groups = model.risk_group(folds["test"])
    rounds = folds["test"]["round_id"].astype(str).to_numpy()
    for r in set(rounds):  # each round is cut at its own shares
        m = rounds == r
        problem, at_risk = model.thresholds_.round_cutoffs(s[m])
        assert (s[m][groups[m] == "problem"] >= problem).all()
        assert (s[m][groups[m] == "normal"] < at_risk).all()
    assert (model.thresholds_.assign(s) == np.where(s >= model.thresholds_.problem, "problem", np.where(
        s >= model.thresholds_.at_risk, "at_risk", "normal"))).all()  # without a round: the stored cut-offs
    assert {"problem", "at_risk", "normal"} <= set(groups)


def test_one_encoding_serves_scores_margins_and_explanations(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    rows = folds["test"].head(200)
    x = model.encode(rows)
    assert x.dtype == np.float64 and x.shape == (len(rows), len(model.features_.names))
    assert np.array_equal(model.risk_score(rows), model.risk_score(x))
    margin = model.raw_margin(x)
    assert np.allclose(model.contributions(x).sum(axis=1), margin, atol=1e-9)
    assert np.allclose(model.risk_score_from_margin(margin), model.risk_score(x), atol=1e-12)


def test_an_old_version_replays_identically_after_the_catalogue_grows(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    """A version stored as it is registered (booster text + JSON state) scores a frame built by a
    later catalogue — an extra feature column, columns in another order — exactly as before."""
    rows = folds["test"].head(300)
    stored = json.loads(json.dumps(model.fitted_state()))
    replayed = RiskModel.from_fitted_state(lgb.Booster(model_str=model.booster_.model_to_string()), stored)
    grown = rows.assign(att_new_signal=np.linspace(0, 1, len(rows)), travel_mode_detail="bicycle")
    grown = grown[list(reversed(grown.columns))]
    assert replayed.features_ == model.features_
    assert np.array_equal(replayed.risk_score(grown), model.risk_score(rows))
    assert np.array_equal(replayed.contributions(grown), model.contributions(rows))
    assert np.array_equal(replayed.risk_group(grown), model.risk_group(rows))


def test_a_version_stored_before_dtypes_were_recorded_still_loads(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    state = model.fitted_state()
    old = {k: v for k, v in state.items() if k != "feature_set"}  # names + category lists only
    replayed = RiskModel.from_fitted_state(model.booster_, old)
    rows = folds["test"].head(100)
    assert np.array_equal(replayed.risk_score(rows), model.risk_score(rows))


def test_a_frame_without_a_model_input_is_refused_by_name(model: RiskModel, folds: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="att_rate_12m"):
        model.encode(folds["test"].head(5).drop(columns=["att_rate_12m"]))


def test_the_model_beats_the_abc_rule_on_data_where_it_should() -> None:
    from training.baselines import abc_rule
    from training.metrics import score_metrics

    folds = _folds(4)
    m = fit(folds)
    y = folds["test"]["label"].to_numpy()
    assert score_metrics(y, m.risk_score(folds["test"]))["roc_auc"] > score_metrics(y, abc_rule(folds["test"]), probabilistic=False)["roc_auc"]
