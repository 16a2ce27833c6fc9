"""The per-group calibration `benchmarks.booster_variants --group` prints: O/E of the published
score with a student-level interval, and truth/expected, which tells a model's bias in a group from
the noise of that group's outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.booster_variants import group_calibration
from training.bootstrap import student_weights


def _world(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # 4,000 students x 2 rounds; group "b" (10%) is scored at half its true probability, "a" exactly
    rng = np.random.default_rng(seed)
    students = np.repeat(np.arange(4000), 2).astype(str)
    group = np.where(np.repeat(rng.random(4000) < 0.1, 2), "b", "a")
    p_true = rng.uniform(0.01, 0.2, len(students))
    score = np.where(group == "b", p_true / 2, p_true)
    y = (rng.random(len(students)) < p_true).astype(np.float64)
    return group, y, score, p_true, student_weights(students, 300, seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_group_scored_at_half_its_risk_shows_truth_over_expected_of_two_and_an_interval_around_its_oe(seed: int) -> None:
    group, y, score, p_true, weights = _world(seed)
    a, b = group_calibration(group, y, score, p_true, weights)
    assert (a.value, b.value) == ("a", "b")
    assert a.truth_over_expected == pytest.approx(1.0) and b.truth_over_expected == pytest.approx(2.0)
    assert b.oe == pytest.approx(y[group == "b"].sum() / score[group == "b"].sum())
    assert b.rows == int((group == "b").sum()) and b.dropouts == int(y[group == "b"].sum())
    for g in (a, b):
        assert g.oe_low < g.oe < g.oe_high
    # the halved group's interval lies above the gate's band; the exact group's O/E (about 830
    # dropouts, standard error near 0.035) sits inside it
    assert b.oe_low > 1.25 and 0.8 < a.oe < 1.25


def test_test_rows_without_a_true_probability_are_refused_not_summed_as_nan() -> None:
    group, y, score, p_true, weights = _world(1)
    p_true[5] = np.nan
    with pytest.raises(ValueError, match="1 rows have no p_true"):
        group_calibration(group, y, score, p_true, weights)
