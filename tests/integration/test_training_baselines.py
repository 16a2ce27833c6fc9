"""The baselines that keep the model honest and the intervals on its headline figures, on the session's
simulated worlds (`trained`, and `seeded_trained` on three seeds): `ews train --truth --json` reports
the grade x term lookup and the school-only model, within-grade ranking, the gap to both ceilings,
and a paired student-level 95% interval for each (training/pipeline.headline_intervals)."""

from __future__ import annotations

import pytest

from tests.conftest import TrainedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADLINE = ("roc_auc", "pr_auc", "within_grade_roc_auc", "within_grade_pr_auc")


def test_train_json_reports_the_new_baselines_within_grade_figures_both_ceilings_and_their_intervals(
    trained: TrainedWorld,
) -> None:
    m = trained[1]["metrics"]
    for metric in HEADLINE:
        for name in (metric, f"baselines.grade_term_lookup.{metric}", f"baselines.school_model.{metric}",
                     f"ceiling_{metric}", f"gap_{metric}", f"observable.ceiling_{metric}", f"observable.gap_{metric}",
                     f"versus.logistic.{metric}", f"versus.grade_term_lookup.{metric}"):
            assert name in m, name
            assert m[f"ci95_low.{name}"] <= m[f"ci95_high.{name}"], name
    # the paired difference is the difference of the two point estimates
    assert m["versus.logistic.roc_auc"] == pytest.approx(m["roc_auc"] - m["baselines.logistic.roc_auc"])


def test_the_model_beats_neither_ceiling_and_the_lookup_within_grade(seeded_trained: TrainedWorld) -> None:
    m = seeded_trained[1]["metrics"]
    # the truth, full or observable, is the best score the records allow: a model ahead of it by more
    # than its paired 95% interval would mean a leak from the future
    assert m["ci95_high.gap_roc_auc"] > 0
    assert m["ci95_high.observable.gap_roc_auc"] > 0
    # within one grade the school calendar tells nothing: the model must rank there, clearly
    assert m["ci95_low.versus.grade_term_lookup.within_grade_roc_auc"] > 0
