"""Training that knows about actions (issue 15.6b): the outcomes an action changed are left out, and
that removes the bias naive retraining has on the profiles schools act on (simulator truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.actions import acted_rows, term_index, without_acted
from training.config import ActionAwareConfig, TrainConfig

SEEDS = (11, 5, 23)
FIRST_YEAR = 2563


def test_terms_are_counted_so_that_consecutive_terms_differ_by_one() -> None:
    t = term_index(np.array([2565, 2565, 2566]), np.array([1, 2, 1]))
    assert np.diff(t).tolist() == [1, 1]


def test_rows_of_a_served_or_acted_pupil_are_left_out_for_the_term_and_the_terms_after() -> None:
    frame = pd.DataFrame({"student_key": ["A", "A", "A", "A", "B", "C"],
                          "round_id": ["2565-T1-mid", "2565-T2-mid", "2566-T1-mid", "2566-T2-early", "2565-T2-mid",
                                       "2565-T2-mid"]})
    assignment = pd.DataFrame({"student_key": ["A", "B", "C"], "academic_year": [2565, 2565, 2565], "term": [2, 2, 2],
                               "arm": ["served", "holdout", ""], "treated": [False, False, True]})
    # A served in 2565 T2: that term and one after; B held out: kept; C acted on outside the design
    assert acted_rows(frame, assignment, 1).tolist() == [False, True, True, False, False, True]
    assert acted_rows(frame, assignment, 0).tolist() == [False, True, False, False, False, True]


def test_the_default_training_config_drops_acted_outcomes_only_when_an_assignment_is_given() -> None:
    assert TrainConfig().actions.outcomes == "drop"
    assert ActionAwareConfig(outcomes="keep").terms_after == 1
    with pytest.raises(ValueError):
        ActionAwareConfig(outcomes="reweight")


def _world(folder: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from simulator.api import simulate
    from simulator.config import InterventionConfig, SimulationConfig

    ic = InterventionConfig(from_year=FIRST_YEAR, capacity_share=0.2, uptake=1.0, holdout_share=0.3,
                            cct_effect_per_poverty=3.0, home_visit_effect_per_disengagement=3.0,
                            counselling_effect_per_disengagement=3.0)
    simulate(SimulationConfig.small(students=10000, years=2, seed=seed).model_copy(update={"interventions": ic}), folder)
    t = pd.read_parquet(folder / "truth/interventions.parquet")
    r = pd.read_parquet(folder / "truth/rounds.parquet", columns=["round_id", "academic_year", "term", "person_id",
                                                                  "grade", "extremely_poor", "dropout"])
    r = r[r["round_id"].str.endswith("mid")]
    frame = pd.DataFrame({"student_key": r["person_id"].astype(str), "round_id": r["round_id"],
                          "academic_year": r["academic_year"].astype(int), "term": r["term"].astype(int),
                          "grade": r["grade"].astype(str), "extremely_poor": r["extremely_poor"], "label": r["dropout"]})
    assignment = pd.DataFrame({"student_key": t["person_id"].astype(str),
                               "academic_year": t["round_id"].str[:4].astype(int),
                               "term": t["round_id"].str[6].astype(int), "arm": t["arm"], "treated": t["treated"]})
    return frame, assignment, t


@pytest.mark.parametrize("seed", SEEDS)
def test_action_aware_training_predicts_the_treated_profile_without_the_bias_of_naive_retraining(
        tmp_path: Path, seed: int) -> None:
    """A model of the risk by profile (school's eligibility x term x poverty: what schools rank on),
    fitted on every outcome (naive) or without the acted ones, against the truth: the probability of
    dropping out of the eligible pupils had nobody acted (truth/interventions.parquet)."""
    from features.pointintime.trainset import Trainset

    frame, assignment, t = _world(tmp_path, seed)
    elig = t.assign(student_key=t["person_id"].astype(str), term=t["round_id"].str[6].astype(int),
                    academic_year=t["round_id"].str[:4].astype(int))[["student_key", "academic_year", "term",
                                                                       "p_dropout_if_not"]]
    frame = frame.merge(elig, on=["student_key", "academic_year", "term"], how="left")
    frame["eligible"] = frame["p_dropout_if_not"].notna()
    ts = Trainset(name="t", manifest=None, frame=frame, folder=tmp_path)  # type: ignore[arg-type]
    aware, dropped = without_acted(ts, assignment, ActionAwareConfig(terms_after=0))
    assert dropped > 0 and len(aware.frame) == len(frame) - dropped

    cells = ["eligible", "term", "extremely_poor"]

    def fit(rows: pd.DataFrame) -> pd.Series:
        return rows.groupby(cells)["label"].mean()

    target = frame[frame["eligible"]]
    truth = target.groupby(cells)["p_dropout_if_not"].mean()

    def bias(model: pd.Series) -> float:
        pred = target.join(model.rename("pred"), on=cells)["pred"]
        return float((pred - target["p_dropout_if_not"]).mean())

    naive_bias, aware_bias = bias(fit(frame)), bias(fit(aware.frame))
    # naive retraining learns that the profiles schools act on are safer than they are
    assert naive_bias < 0 and abs(aware_bias) < abs(naive_bias)
    # and it is no artefact of the cells: the action-aware bias is within the sampling error of the
    # held-out rows it rests on (3 standard errors of a mean of 0/1 outcomes), the naive one is not
    held = aware.frame[aware.frame["eligible"]]
    se = float(np.sqrt(held["label"].mean() * (1 - held["label"].mean()) / len(held)))
    assert abs(aware_bias) < 3 * se < abs(naive_bias), (aware_bias, naive_bias, se, truth.to_dict())
