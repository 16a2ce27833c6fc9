"""The analysts' uplift view (issue 15.6c): benefit per cell from the holdout, and the net benefit of
serving the top of each school by one ranking or another."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.uplift import cell_uplift, net_benefit_at_capacity, top_share_per_school


def test_each_school_serves_the_top_share_of_its_own_rows() -> None:
    school = np.array(["a", "a", "a", "b", "b"])
    assert top_share_per_school(school, np.array([0.1, 0.3, 0.2, 0.5, 0.4]), 0.5).tolist() == [
        False, True, True, True, False]


def test_serving_by_benefit_averts_more_than_serving_by_risk_when_the_riskiest_gain_nothing() -> None:
    school = np.array(["a"] * 4)
    risk = np.array([0.30, 0.25, 0.10, 0.05])  # the two riskiest are at risk from a shock: no action helps
    benefit = np.array([0.0, 0.0, 0.04, 0.02])
    assert net_benefit_at_capacity(school, risk, benefit, 0.5) == 0.0
    assert net_benefit_at_capacity(school, benefit, benefit, 0.5) == pytest.approx(0.06)


def test_the_uplift_of_a_cell_is_the_held_out_rate_less_the_served_one_and_needs_rows_on_both_sides() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    poor = rng.random(n) < 0.5
    served = rng.random(n) < 0.5
    # serving halves the risk of the poor (0.10 -> 0.05) and does nothing for the others (0.04)
    p = np.where(poor, np.where(served, 0.05, 0.10), 0.04)
    rows = pd.DataFrame({"poor": poor, "arm": np.where(served, "served", "holdout"), "dropout": rng.random(n) < p})
    up = cell_uplift(rows, ["poor"])
    se = np.sqrt(2 * 0.1 * 0.9 / (n / 4))
    assert abs(up[True] - 0.05) < 3 * se and abs(up[False]) < 3 * se
    assert np.isnan(cell_uplift(rows.head(40), ["poor"], min_rows=30)).all()
