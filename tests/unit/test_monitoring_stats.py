"""Drift statistics are small pure functions chosen by name, with documented thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from monitoring.config import DriftConfig, MonitorConfig
from monitoring.stats import STATISTICS, get_statistic, level_of, psi_from_shares, quantile_edges


def test_every_configured_default_statistic_is_registered_by_name() -> None:
    d = DriftConfig()
    for name in (d.numeric_statistic, d.categorical_statistic, d.missing_statistic, d.score_statistic, d.group_statistic):
        assert name in STATISTICS


def test_an_unknown_statistic_name_is_refused_when_the_config_is_loaded() -> None:
    with pytest.raises(ValidationError, match="unknown drift statistic 'wasserstein'"):
        MonitorConfig.model_validate({"drift": {"numeric_statistic": "wasserstein"}})


def test_the_config_refuses_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        MonitorConfig.model_validate({"drift": {"psi_watch": 0.2}})


def test_psi_of_a_sample_against_another_sample_of_the_same_distribution_is_below_the_watch_line() -> None:
    rng = np.random.default_rng(1)
    r = get_statistic("psi").fn(rng.normal(size=3000), rng.normal(size=3000))
    assert r.score < 0.02 and r.level == "ok" and not r.drifted


def test_psi_of_a_halved_income_is_drift() -> None:
    rng = np.random.default_rng(2)
    income = np.exp(rng.normal(8, 0.8, 3000))
    r = get_statistic("psi").fn(income, income * 0.5)
    assert r.score >= 0.25 and r.drifted
    assert r.details["current_median"] == pytest.approx(r.details["reference_median"] * 0.5, rel=0.01)


def test_psi_counts_missing_values_as_a_bin_of_their_own() -> None:
    ref = pd.Series([1.0, 2.0, 3.0, 4.0] * 500)
    cur = pd.Series([1.0, 2.0, None, None] * 500)
    r = get_statistic("psi").fn(ref, cur)
    assert r.drifted and r.details["largest_shift"]["bin"] == "missing"


def test_psi_worked_example_from_shares() -> None:
    # (0.6 - 0.5) ln(0.6 / 0.5) + (0.4 - 0.5) ln(0.4 / 0.5) = 0.0182 + 0.0223 = 0.0405
    assert psi_from_shares(np.array([0.5, 0.5]), np.array([0.6, 0.4])) == pytest.approx(0.0405, abs=1e-3)


def test_quantile_edges_of_a_count_keep_one_bin_per_value() -> None:
    assert list(quantile_edges(np.array([0, 0, 1, 1, 2, 2] * 100, dtype=float), 10)) == [0.0, 1.0, 2.0]


def test_categorical_psi_sees_a_category_that_appears() -> None:
    r = get_statistic("psi_categorical").fn(["a", "b"] * 500, ["a", "b", "c", "c"] * 250)
    assert r.drifted and r.details["largest_shift"]["category"] == "c"


def test_missing_rate_change_reports_both_shares() -> None:
    r = get_statistic("missing_rate_change").fn(pd.Series([1.0] * 100), pd.Series([None] * 30 + [1.0] * 70))
    assert r.score == pytest.approx(0.3) and r.drifted
    assert r.details == {"reference": 0.0, "current": 0.3}


def test_share_change_names_the_group_that_moved() -> None:
    ref = ["normal"] * 80 + ["at_risk"] * 15 + ["problem"] * 5
    cur = ["normal"] * 60 + ["at_risk"] * 25 + ["problem"] * 15
    r = get_statistic("share_change").fn(ref, cur)
    assert r.score == pytest.approx(0.2) and r.details["largest_shift"] == "normal"


def test_ks_is_zero_for_identical_samples_and_one_for_disjoint_ones() -> None:
    ks = get_statistic("ks").fn
    assert ks([1, 2, 3], [1, 2, 3]).score == 0
    assert ks([1, 2, 3], [10, 11]).score == 1


def test_levels_follow_the_two_lines() -> None:
    assert [level_of(x, 0.1, 0.25) for x in (0.05, 0.1, 0.2, 0.25, float("nan"))] == ["ok", "watch", "watch", "drift", "ok"]


def test_the_observed_to_expected_interval_covers_poisson_counts_at_its_stated_rate() -> None:
    # Counts drawn with the expected count as their mean fall outside their own interval about 5% of
    # the time; a wrong mean (twice the expected) is excluded far more often.
    import numpy as np

    from monitoring.outcomes import observed_to_expected_interval

    rng = np.random.default_rng(3)
    for expected in (5.0, 25.0, 120.0):
        counts = rng.poisson(expected, 4000)
        covered = np.mean([lo <= 1.0 <= hi for lo, hi in (observed_to_expected_interval(int(k), expected) for k in counts)])
        assert 0.93 <= covered <= 0.995, (expected, covered)
    doubled = rng.poisson(2 * 25.0, 1000)
    excluded = np.mean([observed_to_expected_interval(int(k), 25.0)[0] > 1.0 for k in doubled])
    assert excluded > 0.95
