"""The student-level bootstrap resamples pupils with all their rows, and its intervals cover."""

from __future__ import annotations

import numpy as np
import pytest

from training.bootstrap import (
    bootstrap_interval, interval, student_counts, student_weights, weighted_ratio,
)


def test_every_row_of_a_student_carries_the_same_weight_in_every_replicate() -> None:
    keys = np.array(["a", "b", "a", "c", "b", "a"])
    w = student_weights(keys, n_boot=50, seed=3)
    assert w.shape == (50, 6)
    assert np.array_equal(w[:, 0], w[:, 2]) and np.array_equal(w[:, 0], w[:, 5])
    assert np.array_equal(w[:, 1], w[:, 4])


def test_each_replicate_draws_as_many_students_as_there_are() -> None:
    keys = np.repeat(np.arange(40), 3)
    counts, inverse = student_counts(keys, n_boot=30, seed=1)
    assert counts.shape == (30, 40)
    assert (counts.sum(axis=1) == 40).all()
    assert np.array_equal(np.unique(keys)[inverse], keys)


def test_the_same_seed_gives_the_same_replicates_and_another_seed_does_not() -> None:
    keys = np.arange(100)
    assert np.array_equal(student_weights(keys, 20, 7), student_weights(keys, 20, 7))
    assert not np.array_equal(student_weights(keys, 20, 7), student_weights(keys, 20, 8))


def test_interval_is_the_percentile_interval_and_ignores_undefined_replicates() -> None:
    v = np.array([*np.arange(1.0, 101.0), np.nan, np.inf])
    lo, hi = interval(v, level=0.9)
    assert lo == pytest.approx(np.quantile(np.arange(1.0, 101.0), 0.05))
    assert hi == pytest.approx(np.quantile(np.arange(1.0, 101.0), 0.95))
    assert np.isnan(interval(np.array([np.nan]))[0])


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_the_interval_of_a_mean_covers_the_truth_about_as_often_as_it_claims(seed: int) -> None:
    # 150 datasets of 300 students x 2 correlated rows (the student's outcome repeats): a row-level
    # bootstrap would be too narrow; the student-level one covers ~95%. With 150 trials the coverage
    # has a binomial sd of ~1.8 points, so [0.88, 0.99] fails a too-narrow interval (row-level: ~83%).
    rng = np.random.default_rng(seed)
    covered = 0
    trials = 150
    for t in range(trials):
        y_student = rng.random(300) < 0.3
        keys = np.repeat(np.arange(300), 2)
        y = np.repeat(y_student, 2).astype(float)
        w = student_weights(keys, n_boot=200, seed=t)
        lo, hi = interval(weighted_ratio(y, np.ones_like(y), w))
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_interval_evaluates_any_weighted_statistic() -> None:
    rng = np.random.default_rng(0)
    keys = np.repeat(np.arange(500), 2)
    x = rng.normal(size=1000)
    lo, hi = bootstrap_interval(lambda w: float(np.average(x, weights=w)), keys, n_boot=100, seed=0)
    assert lo < x.mean() < hi
