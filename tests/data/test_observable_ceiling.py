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
from simulator.observable import ObservedHistory, TermObservations, fit_fractional_logit, observable_features
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
    before = observable_features(term, history, idx, 120, np.zeros(2), shocks=4)
    after = observable_features(term, history, idx, 130, np.zeros(2), shocks=4)
    # column 1: this term's attendance log-odds; the last four: welfare links of the term's shocks
    assert before[0, 1] > 0 > before[1, 1]
    assert after[0, 1] < before[0, 1] and after[1, 1] > before[1, 1]
    assert before[1, -1] == 0 and after[1, -1] == 1
