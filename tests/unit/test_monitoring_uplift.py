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


# ---------------------------------------------------------------------------------------------
# The view `ews monitor --actions` writes (uplift_view -> UpliftView)


def _round(seed: int, n: int = 6000, poor_gain: float = 0.5, other_gain: float = 0.0, shock_risk: float = 0.30) -> pd.DataFrame:
    """Eligible pupils of 40 schools, 70% served at random. Serving cuts a poor pupil's risk by
    `poor_gain` (a share) and anyone else's by `other_gain`; the riskiest pupils are at risk from a
    shock (not poor, attending): no action helps them unless `other_gain` says so."""
    rng = np.random.default_rng(seed)
    poor = rng.random(n) < 0.4
    shock = ~poor & (rng.random(n) < 0.3)
    att = ~poor & ~shock & (rng.random(n) < 0.4)
    risk = np.where(shock, shock_risk, np.where(poor, 0.15, np.where(att, 0.10, 0.05)))
    served = rng.random(n) < 0.7
    p = risk * np.where(served, 1 - np.where(poor, poor_gain, other_gain), 1.0)
    return pd.DataFrame({
        "student_key": [f"S{seed}-{i}" for i in range(n)], "school_code": rng.integers(0, 40, n).astype(str),
        "dropout": (rng.random(n) < p).astype(float), "risk_score": risk + rng.random(n) * 0.004,
        "risk_group": np.where(risk >= 0.15, "problem", "at_risk"), "extremely_poor": poor,
        "att_below_cct_85": att, "arm": np.where(served, "served", "holdout"),
    })


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_a_cell_where_serving_helps_has_an_interval_above_zero_and_covering_the_true_uplift(seed: int) -> None:
    from monitoring.uplift import UpliftConfig, uplift_view

    rows = _round(seed)
    v = uplift_view(rows, UpliftConfig(cells=("poverty",), reps=400), "2566-T2-mid")
    poor = next(c for c in v.cells if c.cell == {"poverty": "extremely_poor"})
    other = next(c for c in v.cells if c.cell == {"poverty": "not_extreme"})
    assert poor.low <= 0.15 * 0.5 <= poor.high and poor.low > 0  # true uplift: 15% risk halved
    assert other.low <= 0.0 <= other.high  # nothing helps the others
    assert poor.served + poor.holdout + other.served + other.holdout == v.eligible == len(rows)


def test_a_cell_with_fewer_pupils_than_the_minimum_in_an_arm_is_suppressed_with_no_counts() -> None:
    from monitoring.uplift import UpliftConfig, uplift_view

    rows = _round(3, n=400)
    v = uplift_view(rows, UpliftConfig(cells=("rule_action", "risk_group"), min_cell_students=40, reps=200), "2566-T2-mid")
    sizes = rows.assign(a=rows["arm"]).groupby([np.where(rows["extremely_poor"], "p", np.where(rows["att_below_cct_85"], "h", "c")),
                                                 rows["risk_group"], "a"]).size().unstack("a").min(axis=1)
    assert (sizes < 40).any() and (sizes >= 40).any()  # the world has both kinds of cell
    assert sum(c.suppressed for c in v.cells) == int((sizes < 40).sum())
    for c in v.cells:
        if c.suppressed:
            assert c.served is c.holdout is c.uplift is c.dropout_rate_served is None
        else:
            assert min(c.served, c.holdout) >= 40


@pytest.mark.parametrize("seed", [11, 5])
def test_at_capacity_serving_by_benefit_averts_more_than_serving_by_risk_when_the_riskiest_gain_nothing(seed: int) -> None:
    from monitoring.uplift import UpliftConfig, uplift_view

    rows = _round(seed, n=12000)
    v = uplift_view(rows, UpliftConfig(reps=400, capacity_share=0.3), "2566-T2-mid")
    c = v.capacity
    assert c is not None and c.by_risk.pupils_served == c.by_benefit.pupils_served
    # the risk ranking picks the shocked pupils first (nothing helps them); the benefit ranking the poor
    assert c.low > 0 and c.by_benefit.averted > c.by_risk.averted
    # what the risk ranking really averts: the (risk x gain) of the poor pupils it reaches
    chosen = top_share_per_school(rows["school_code"].to_numpy(), rows["risk_score"].to_numpy(), 0.3)
    true = float((rows["risk_score"].round(2) * 0.5 * rows["extremely_poor"])[chosen].sum())
    assert c.by_risk.low <= true <= c.by_risk.high


@pytest.mark.parametrize("seed", [11, 5])
def test_when_serving_helps_everyone_alike_neither_ranking_is_shown_to_avert_more(seed: int) -> None:
    from monitoring.uplift import UpliftConfig, uplift_view

    v = uplift_view(_round(seed, n=12000, poor_gain=0.4, other_gain=0.4, shock_risk=0.15), UpliftConfig(reps=400), "2566-T2-mid")
    assert v.capacity is not None and v.capacity.low <= 0 <= v.capacity.high


def test_without_a_holdout_the_view_says_there_is_nothing_to_estimate() -> None:
    from monitoring.uplift import UpliftConfig, uplift_view

    rows = _round(1, n=300).assign(arm="served")
    v = uplift_view(rows, UpliftConfig(reps=100), "2566-T2-mid")
    assert v.cells == [] and v.capacity is None and "no randomised holdout" in v.note
