"""Monitoring compares like with like: the reference is rounds the model was fitted on, strictly before
the monitored round; without one, the report says drift was not judged; a shifted round is flagged."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features.calendar import ROUND_TYPES, parse_round
from monitoring.config import DriftConfig, MonitorConfig
from monitoring.drift import feature_drift, reference_rounds, round_order
from monitoring.outcomes import Outcomes
from monitoring.report import decide

ROUNDS = [f"{y}-T{t}-{k}" for y, t, k in itertools.product(range(2563, 2567), (1, 2), ROUND_TYPES)]
MODES = ("latest_same_kind", "all_same_kind", "all")


@pytest.mark.parametrize("mode", MODES)
def test_the_reference_never_holds_the_monitored_round_or_a_later_one(mode: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        fitted = sorted(rng.choice(ROUNDS, size=int(rng.integers(1, len(ROUNDS))), replace=False).tolist())
        current = parse_round(str(rng.choice(ROUNDS)))
        ref = reference_rounds(fitted, current, mode)
        assert set(ref) <= set(fitted)
        assert current.round_id not in ref
        assert all(round_order(parse_round(x)) < round_order(current) for x in ref), (fitted, current, ref)
        # something is compared whenever a fitted round comes before the monitored one
        assert bool(ref) == any(round_order(parse_round(x)) < round_order(current) for x in fitted)


def test_a_round_the_model_was_fitted_on_is_compared_with_an_earlier_fitted_round_not_with_itself() -> None:
    fitted = ["2563-T2-mid", "2564-T1-mid", "2564-T2-early", "2564-T2-mid", "2565-T2-mid"]
    assert reference_rounds(fitted, parse_round("2564-T2-mid"), "latest_same_kind") == ["2563-T2-mid"]
    assert reference_rounds(fitted, parse_round("2566-T2-mid"), "latest_same_kind") == ["2565-T2-mid"]
    assert reference_rounds(fitted, parse_round("2563-T2-mid"), "latest_same_kind") == []
    assert reference_rounds(fitted, parse_round("2564-T2-mid"), "all") == ["2563-T2-mid", "2564-T1-mid", "2564-T2-early"]


def test_without_a_reference_the_verdict_says_drift_was_not_judged_instead_of_keep_the_model() -> None:
    note = "no round model v1 was fitted on comes before 2563-T1-early"
    v = decide([], [], Outcomes(matured=False, note="later"), MonitorConfig(), drift_note=note)
    assert not v.alert and not v.retrain_recommended
    assert "keep the model" not in v.summary and "not judged" in v.summary
    assert any(note in r for r in v.reasons)
    # with a reference and nothing breached, the calm verdict stays
    assert decide([], [], Outcomes(matured=False, note="later"), MonitorConfig()).summary.endswith("keep the model.")


def _round_rows(rng: np.random.Generator, n: int, income_scale: float) -> pd.DataFrame:
    income = rng.lognormal(np.log(3300), 0.85, n) * income_scale
    return pd.DataFrame({"income_per_person": income, "extremely_poor": income <= 3000,
                         "att_rate_term": np.clip(rng.beta(30, 2, n), 0, 1)})


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_a_shifted_round_is_flagged_and_an_unshifted_one_is_not(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = DriftConfig(features=("income_per_person", "extremely_poor", "att_rate_term"))
    reference = _round_rows(rng, 4000, 1.0)
    same = feature_drift(reference, _round_rows(rng, 4000, 1.0), cfg)
    # incomes reported 40% lower (an economic shock, or a unit change in the source)
    shifted = feature_drift(reference, _round_rows(rng, 4000, 0.6), cfg)
    assert not any(d.drifted for d in same), [(d.column, d.score) for d in same if d.drifted]
    flagged = {d.column for d in shifted if d.drifted and d.what == "feature"}
    assert flagged == {"income_per_person", "extremely_poor"}
    v = decide([], shifted, Outcomes(matured=False), MonitorConfig())
    assert v.retrain_recommended and any("cct_screening" in r for r in v.reasons)
