"""Metrics hand-checked on tiny arrays; every metric declares its direction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    METRICS, ceiling_and_gap, ece, greater_is_better, precision_at_k, recall_at_k, school_top_mask, score_metrics,
)


def test_precision_at_k_counts_dropouts_among_the_top_ceil_k_rows() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    s = np.array([.9, .8, .7, .6, .5, .4, .3, .2, .1, .05])
    assert precision_at_k(y, s, 0.2) == pytest.approx(0.5)  # top 2: 1, 0
    assert precision_at_k(y, s, 0.3) == pytest.approx(2 / 3)  # top 3: 1, 0, 1
    assert precision_at_k(y, s, 0.25) == pytest.approx(2 / 3)  # ceil(2.5) = 3
    assert recall_at_k(y, s, 0.3) == pytest.approx(2 / 3)


def test_ties_are_broken_by_row_order() -> None:
    y = np.array([0, 1, 1, 1])
    s = np.array([1.0, 1.0, 1.0, 1.0])
    assert precision_at_k(y, s, 0.25) == 0.0


def test_within_school_top_k_takes_each_schools_own_top_rows() -> None:
    s = np.array([.9, .1, .2, .3, .8, .7])
    school = np.array(["a", "a", "a", "b", "b", "b"])
    assert school_top_mask(s, school, 0.33).tolist() == [True, False, False, False, True, False]
    # ceil(0.34 * 3) = 2 rows per school
    assert school_top_mask(s, school, 0.34).tolist() == [True, False, True, False, True, True]


def test_ece_by_hand() -> None:
    # bin 0 ([0, .1)): p = .05, .05, y = 0, 1 -> |0.05 - 0.5| = 0.45, weight 2/4
    # bin 9 ([.9, 1]): p = .95, .95, y = 1, 1 -> |0.95 - 1| = 0.05, weight 2/4
    y = np.array([0, 1, 1, 1])
    p = np.array([.05, .05, .95, .95])
    assert ece(y, p, strategy="width") == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    y = np.array([0, 0, 0, 1, 1, 0, 1, 1, 1, 1])
    p = np.array([.25] * 4 + [.75] * 4 + [1.0] * 2)
    assert ece(y, p, strategy="width") == pytest.approx(0.0)
    # Equal-mass bins of 2 split each tied block by row order: (.25,.25|0,0) (.25,.25|0,1) (.75,.75|1,0)
    # (.75,.75|1,1) (1,1|1,1) -> |.5-0| + |.5-1| + |1.5-1| + |1.5-2| + 0 over 10 rows.
    assert ece(y, p, bins=5, strategy="mass") == pytest.approx(2.0 / 10)


def test_equal_mass_ece_by_hand() -> None:
    # 6 rows, 3 bins of 2 in score order: (.01, .02 | y 0, 0), (.03, .04 | y 0, 1), (.05, .06 | y 1, 1)
    # -> |0.03 - 0| + |0.07 - 1| + |0.11 - 2| over 6 rows
    y = np.array([1, 0, 1, 0, 0, 1])
    p = np.array([.06, .02, .05, .01, .03, .04])
    assert ece(y, p, bins=3) == pytest.approx((0.03 + 0.93 + 1.89) / 6)


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_equal_mass_ece_tells_a_threefold_under_prediction_at_a_low_base_rate(seed: int) -> None:
    # At a 2% base rate every score is in the first equal-width bin, where a threefold under-prediction
    # costs only ~0.013: the old gate (ECE <= 0.02) passed it. Equal-mass bins see it in every bin.
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-4.3, 1.0, 20_000)))
    y = (rng.random(20_000) < p).astype(float)
    assert ece(y, p / 3, strategy="width") < 0.02  # the old gate would pass it
    calibrated, third = ece(y, p), ece(y, p / 3)
    assert third > 2.5 * calibrated
    assert third > 0.6 * y.mean()  # most of the base rate is missing


def test_rule_scores_get_no_brier_or_ece() -> None:
    m = score_metrics(np.array([0, 1, 0, 1]), np.array([0, 2, 1, 3]), probabilistic=False)
    assert "brier" not in m and "ece" not in m
    assert m["roc_auc"] == pytest.approx(1.0)


def test_every_metric_declares_its_direction() -> None:
    assert greater_is_better("roc_auc") and greater_is_better("precision_at_10pct")
    assert not greater_is_better("ece") and not greater_is_better("brier")
    assert greater_is_better("baselines.abc_rule.roc_auc")
    assert greater_is_better("ceiling_pr_auc")
    assert not greater_is_better("gap_roc_auc") and not greater_is_better("gap_ece")
    assert not greater_is_better("groups.sex.F.fpr")
    assert all(isinstance(v, bool) for v in METRICS.values())
    with pytest.raises(KeyError):
        greater_is_better("groups.sex.F.fpr_ratio")


def test_the_gap_is_how_far_the_model_is_behind_the_ceiling() -> None:
    out = ceiling_and_gap({"roc_auc": 0.80, "ece": 0.03}, {"roc_auc": 0.85, "ece": 0.01, "rows": 10})
    assert out["gap_roc_auc"] == pytest.approx(0.05)
    assert out["gap_ece"] == pytest.approx(0.02)
    assert "ceiling_rows" not in out


def test_a_slice_without_dropouts_has_undefined_ranking_metrics() -> None:
    m = score_metrics(np.zeros(5), np.linspace(0, 1, 5))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["recall_at_10pct"])


def test_rank_metrics_under_weights_equal_sklearns_weighted_figures_ties_included() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from training.metrics import rank_metrics

    rng = np.random.default_rng(0)
    y = (rng.random(3000) < 0.05).astype(float)
    s = np.round(rng.random(3000) + 0.3 * y, 1)  # 14 distinct values: ties everywhere
    w = rng.integers(0, 3, (4, 3000)).astype(float)
    auc, ap = rank_metrics(y, s, np.vstack([np.ones(3000), w]))
    assert auc[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ap[0] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    for b in range(4):
        assert auc[b + 1] == pytest.approx(roc_auc_score(y, s, sample_weight=w[b]), abs=1e-12)
        assert ap[b + 1] == pytest.approx(average_precision_score(y, s, sample_weight=w[b]), abs=1e-12)


def test_within_grade_metrics_average_each_grades_figure_weighted_by_its_dropouts() -> None:
    # grade A: 1 dropout ranked above 1 of 2 others (AUC 0.5); grade B: 2 dropouts above both others (AUC 1)
    y = np.array([1, 0, 0, 1, 1, 0, 0])
    s = np.array([.5, .9, .1, .8, .7, .2, .3])
    grade = np.array(["A", "A", "A", "B", "B", "B", "B"])
    m = score_metrics(y, s, grade=grade)
    assert m["within_grade_roc_auc"] == pytest.approx((1 * 0.5 + 2 * 1.0) / 3)
    assert m["within_grade_pr_auc"] == pytest.approx((1 * 0.5 + 2 * 1.0) / 3)  # A: AP = precision 1/2 at its dropout


def test_a_score_that_only_knows_the_grade_ranks_at_chance_within_grade() -> None:
    rng = np.random.default_rng(1)
    grade = rng.integers(1, 16, 5000)
    y = (rng.random(5000) < 0.005 * grade).astype(float)
    m = score_metrics(y, grade / 100.0, grade=grade.astype(str))
    assert m["roc_auc"] > 0.6  # the grade alone ranks well across grades...
    assert m["within_grade_roc_auc"] == pytest.approx(0.5)  # ...and not at all within one
    assert greater_is_better("within_grade_roc_auc") and not greater_is_better("gap_within_grade_pr_auc")



@pytest.mark.parametrize("seed", [11, 5, 23])
@pytest.mark.parametrize("rows", [4000, 60])  # a slice of 60 rows: some replicates draw no dropout
def test_the_compiled_ranking_gives_the_numpy_figures_to_float_noise(seed: int, rows: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The headline intervals must not move when a large ranking runs compiled: every replicate's
    # ROC-AUC and PR-AUC equal the numpy path's to 1e-9 relative, ties included, NaN where it was NaN,
    # whatever the memory layout of the weights (student_weights' column-major or a row-major copy).
    from training import metrics
    from training.bootstrap import student_weights

    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.05).astype(float) if rows > 1000 else np.eye(1, rows)[0]  # small: one dropout
    s = np.round(rng.random(rows) + 0.3 * y, 2)  # about 130 distinct values: ties everywhere
    w = student_weights(np.arange(rows) // 2, 200, seed)
    assert w.size < metrics.COMPILED_FROM
    want_auc, want_ap = metrics.rank_metrics(y, s, w)  # numpy at this size
    assert np.isfinite(want_auc).sum() > 100, "most replicates must be defined for the comparison to mean much"
    assert rows > 1000 or np.isnan(want_auc).any(), "the small slice must have undefined replicates"
    monkeypatch.setattr(metrics, "COMPILED_FROM", 0)
    for weights in (w, np.ascontiguousarray(w)):
        auc, ap = metrics.rank_metrics(y, s, weights)
        np.testing.assert_array_equal(np.isnan(auc), np.isnan(want_auc))
        np.testing.assert_allclose(auc, want_auc, rtol=1e-9)
        np.testing.assert_allclose(ap, want_ap, rtol=1e-9)
