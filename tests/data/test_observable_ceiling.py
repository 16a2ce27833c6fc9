"""The observable ceiling (truth/rounds.parquet `p_observable`, simulator/observable.py): it knows less
than the full ceiling, so it ranks no better; it is still calibrated, so it expects as many dropouts
as happen within the sampling error; and it reads only records delivered by the as-of date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from simulator import SimulationConfig, simulate
from simulator.config import WorldConfig
from simulator.observable import (ObservedHistory, SchoolHistory, TermObservations, fit_fractional_logit,
                                  observable_features)
from tests.support.ceiling import Z_LIMIT, ceiling_z

# the world of test_simulated_calibration's ceiling test: ~60,000 rows and ~700 dropouts per round type
OBSERVABLE_WORLD = {"students": 10_000, "years": 3}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_observable_ceiling_ranks_no_better_than_the_full_one_and_expects_the_dropouts_that_happen(
    tmp_path: Path, seed: int,
) -> None:
    simulate(SimulationConfig(world=WorldConfig(**OBSERVABLE_WORLD, seed=seed)), tmp_path)
    rounds = pq.read_table(tmp_path / "truth" / "rounds.parquet").to_pandas()
    assert rounds.p_observable.between(0, 1).all()
    for kind in ("early", "mid"):
        rows = rounds[rounds.round_type == kind]
        full = roc_auc_score(rows.dropout, rows.p_dropout)
        observable = roc_auc_score(rows.dropout, rows.p_observable)
        assert observable <= full, (kind, observable, full)
        # and it is not a constant: the records do tell most of the story
        assert observable > 0.5 + (full - 0.5) / 2, (kind, observable, full)
        z = ceiling_z(rows.p_observable, rows.dropout)
        assert abs(z) < Z_LIMIT, (kind, z, rows.p_observable.sum(), rows.dropout.sum())


def test_the_fractional_logistic_fit_keeps_the_sum_and_recovers_a_logistic_truth() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4000, 3))
    p = 1 / (1 + np.exp(-(-4.0 + X @ np.array([1.0, -0.5, 0.0]))))
    fitted = fit_fractional_logit(X, p)
    assert np.max(np.abs(fitted - p)) < 1e-6
    # a misspecified fit (one column hidden) still keeps the expected count exactly
    coarse = fit_fractional_logit(X[:, 2:], p)
    assert abs(coarse.sum() - p.sum()) < 1e-6 * p.sum()
    assert np.std(coarse) < np.std(p)


def test_a_record_delivered_after_the_as_of_date_is_not_seen() -> None:
    term = TermObservations(n=2)
    term.add_attendance(delivered=100, present=np.array([20.0, 5.0]), days=np.array([20.0, 20.0]))
    term.add_attendance(delivered=130, present=np.array([0.0, 20.0]), days=np.array([20.0, 20.0]))
    term.add_welfare(3, rows=np.array([1]), delivered=np.array([125]))
    history = ObservedHistory.empty(2)
    idx = np.arange(2)
    before = observable_features(term, history, idx, 120, np.zeros(2), shocks=4, school_signal=np.zeros(2))
    after = observable_features(term, history, idx, 130, np.zeros(2), shocks=4, school_signal=np.zeros(2))
    # column 2: this term's attendance log-odds; the last four: welfare links of the term's shocks
    assert before[0, 2] > 0 > before[1, 2]
    assert after[0, 2] < before[0, 2] and after[1, 2] > before[1, 2]
    assert before[1, -1] == 0 and after[1, -1] == 1


def test_a_school_s_past_dropouts_count_only_once_its_horizon_census_is_delivered() -> None:
    past = SchoolHistory()
    school = np.array([0, 0, 0, 1, 1, 1])
    # term A (census delivered on day 50): school 0 lost 3 pupils where 0.3 were expected
    past.add_term(50, school, np.array([1, 1, 1, 0, 0, 0]), np.full(6, 0.1), schools=2)
    # term B (census delivered on day 90): nobody left
    past.add_term(90, school, np.zeros(6, int), np.full(6, 0.1), schools=2)
    assert np.all(past.log_ratio(49, 2, 0.5) == 0)  # nothing revealed yet: no signal either way
    at_50 = past.log_ratio(50, 2, 0.5)
    assert at_50[0] > 0 > at_50[1]  # more dropouts than expected raise the school's estimate
    at_90 = past.log_ratio(90, 2, 0.5)
    assert 0 < at_90[0] < at_50[0]  # a quiet term pulls it back towards average
    # shrinkage: the same ratio seen over more expected dropouts moves the estimate further
    many = SchoolHistory()
    many.add_term(50, school, np.array([1, 1, 1, 0, 0, 0]) * 10, np.full(6, 1.0), schools=2)
    assert many.log_ratio(50, 2, 0.5)[0] > at_50[0]
    # a world without school effects: the past is chance, and says nothing
    assert np.all(past.log_ratio(90, 2, 0.0) == 0)
