"""The new baselines (grade x term lookup, school-only model) and the paired student-level intervals
of the headline metrics (training/baselines.py, training/pipeline.headline_intervals)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.pointintime.spec import FEATURE_NAMES
from training.baselines import SCHOOL_FEATURES, grade_term_lookup
from training.pipeline import headline_intervals


def _frame(n: int, seed: int, rows_per_student: int = 1) -> pd.DataFrame:
    """Test rows of students whose informative score carries signal and whose noise score does not."""
    rng = np.random.default_rng(seed)
    grade = rng.integers(1, 16, n)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-3.5 + 1.2 * signal)))).astype(float)
    frame = pd.DataFrame({
        "student_key": [f"S{i}" for i in range(n)], "label": y, "grade_level": grade.astype(str),
        "risk_score": 1 / (1 + np.exp(-(-3.5 + 1.2 * signal + rng.normal(0, 0.3, n)))),
        "baseline_logistic": rng.random(n),
    })
    return pd.concat([frame] * rows_per_student, ignore_index=True)


def test_the_lookup_gives_each_grade_and_term_its_training_rate_and_unseen_cells_the_overall_rate() -> None:
    train = pd.DataFrame({"grade_level": [12] * 1000 + [4] * 1000, "term": [2] * 2000})
    y = np.r_[np.ones(100), np.zeros(900), np.ones(10), np.zeros(990)]
    test = pd.DataFrame({"grade_level": [12, 4, 12], "term": [2, 2, 1]})
    rate = grade_term_lookup(test, train, y)
    assert rate[0] > rate[2] > rate[1]  # M3 year end above the overall rate above P1
    assert rate[0] == pytest.approx((100 + 50 * 0.055) / 1050) and rate[2] == pytest.approx(0.055)


def test_the_school_only_model_reads_school_and_area_features_and_nothing_else() -> None:
    assert SCHOOL_FEATURES and set(SCHOOL_FEATURES) < set(FEATURE_NAMES)
    assert {"school_past_dropout_rate", "school_remote"} <= set(SCHOOL_FEATURES)
    assert not any(f.startswith(("att_", "gpa", "care_", "welfare_")) for f in SCHOOL_FEATURES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_informative_score_beats_a_noise_baseline_with_an_interval_that_excludes_zero(seed: int) -> None:
    frame = _frame(4000, seed)
    ci = headline_intervals(frame, seed=seed, n_boot=100)
    assert ci["ci95_low.versus.logistic.roc_auc"] > 0
    assert ci["ci95_low.baselines.logistic.roc_auc"] < 0.5 < ci["ci95_high.baselines.logistic.roc_auc"]
    assert ci["ci95_low.roc_auc"] < ci["ci95_high.roc_auc"]


def test_a_students_repeated_rows_do_not_narrow_the_interval() -> None:
    # resampling students (not rows) carries all of a student's rows together: two identical rows per
    # student give the very same interval as one (a row bootstrap would narrow it by about 1/sqrt(2))
    once = headline_intervals(_frame(3000, 4), seed=0, n_boot=60)
    twice = headline_intervals(_frame(3000, 4, rows_per_student=2), seed=0, n_boot=60)
    for name in ("roc_auc", "pr_auc", "within_grade_roc_auc", "versus.logistic.pr_auc"):
        assert twice[f"ci95_low.{name}"] == pytest.approx(once[f"ci95_low.{name}"], abs=1e-12)
        assert twice[f"ci95_high.{name}"] == pytest.approx(once[f"ci95_high.{name}"], abs=1e-12)


def test_a_score_compared_with_itself_differs_by_exactly_zero_on_every_replicate() -> None:
    frame = _frame(2000, 5)
    frame["baseline_logistic"] = frame["risk_score"]
    ci = headline_intervals(frame, seed=0, n_boot=50)
    assert ci["ci95_low.versus.logistic.roc_auc"] == ci["ci95_high.versus.logistic.roc_auc"] == 0.0


def test_the_baselines_learn_from_the_rows_the_published_booster_learned_from() -> None:
    from training.config import TrainConfig
    from training.pipeline import learned_rows

    folds = {name: pd.DataFrame({"fold": [name] * n, "label": [0] * n})
             for name, n in (("train", 5), ("calibration", 3), ("refit_only", 2), ("test", 4))}
    crossfit = TrainConfig.model_validate({"model": {"refit": "crossfit"}})
    plain = TrainConfig.model_validate({"model": {"refit": "none"}})
    # the refitted booster learns from all three; the test fold is never learned from
    assert learned_rows(folds, crossfit)["fold"].value_counts().to_dict() == {"train": 5, "calibration": 3, "refit_only": 2}
    # without a refit the booster sees the training fold only, and so do the baselines
    assert learned_rows(folds, plain)["fold"].tolist() == ["train"] * 5
    # a split without refit-only rounds
    del folds["refit_only"]
    assert len(learned_rows(folds, crossfit)) == 8
