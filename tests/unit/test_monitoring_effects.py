"""Monitoring separates "the model is off" from "the actions worked" (issue 15.6a), checked on the simulator's truth.

Worlds are simulated here (simulator only, no pipeline: seconds each) on the seeds of the fixture
ladder, 11, 5 and 23; the pupils' outcomes and the assignment are what a deployment would hold,
the truth's potential outcomes are the target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.effects import (
    ActionEffects, describe, holdout_effect, naive_effect, summarise, untreated_mask, with_actions,
)
from monitoring.outcomes import observed_to_expected_interval
from simulator.api import simulate
from simulator.config import InterventionConfig, SimulationConfig
from simulator.interventions import true_effects

SEEDS = (11, 5, 23)
FIRST_YEAR = 2563


@pytest.fixture(scope="module")
def acting_worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """8,000 pupils x 3 years per seed, schools acting every term with the default settings."""
    out = {}
    for seed in SEEDS:
        folder = tmp_path_factory.mktemp(f"acting{seed}")
        cfg = SimulationConfig.small(students=8000, years=3, seed=seed)
        simulate(cfg.model_copy(update={"interventions": InterventionConfig(from_year=FIRST_YEAR)}), folder)
        out[seed] = folder
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_the_holdout_estimate_covers_the_true_effect_and_a_comparison_without_the_holdout_does_not(
        acting_worlds: dict[int, Path], seed: int) -> None:
    truth = acting_worlds[seed] / "truth"
    t = pd.read_parquet(truth / "interventions.parquet")
    true = true_effects(truth)
    itt, per = holdout_effect(t["dropout"].to_numpy(), t["arm"].eq("served").to_numpy(), t["person_id"].astype(str).to_numpy(),
                              t["treated"].to_numpy())
    assert itt.low <= true["itt"] <= itt.high, (itt, true)
    assert per is not None and per.low <= true["att"] <= per.high, (per, true)
    # The tolerance can fail: comparing the pupils acted on with everyone else (no holdout) gives an
    # interval the true effect lies outside, on the same data and the same bootstrap.
    rounds = pd.read_parquet(truth / "rounds.parquet", columns=["round_id", "person_id", "dropout"])
    # every pupil of the acting terms' early rounds (the round the schools acted on)
    m = rounds[rounds["round_id"].str.endswith("early")].merge(
        t[["round_id", "person_id", "treated"]], on=["round_id", "person_id"], how="left")
    treated = m["treated"].fillna(False).astype(bool).to_numpy()
    naive, _ = holdout_effect(m["dropout"].to_numpy(), treated, m["person_id"].astype(str).to_numpy())
    assert not naive.low <= true["itt"] <= naive.high, (naive, true)
    assert naive_effect(m["dropout"].to_numpy(), treated) == pytest.approx(naive.estimate)


def _first_acting_term(seed: int, folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A world whose schools act from the last term on, strongly: the round's matured rows, scored by
    the world's own probability without any action (a calibrated model of a world nobody acts in),
    and the round's assignment."""
    ic = InterventionConfig(from_year=FIRST_YEAR + 1, from_term=2, capacity_share=0.3, uptake=0.9, holdout_share=0.25,
                            cct_effect_per_poverty=2.5, home_visit_effect_per_disengagement=2.5,
                            counselling_effect_per_disengagement=2.5)
    simulate(SimulationConfig.small(students=8000, years=2, seed=seed).model_copy(update={"interventions": ic}), folder)
    rid = f"{FIRST_YEAR + 1}-T2"
    t = pd.read_parquet(folder / "truth/interventions.parquet")
    t = t[t["round_id"] == f"{rid}-early"]
    r = pd.read_parquet(folder / "truth/rounds.parquet")
    r = r[r["round_id"] == f"{rid}-mid"].merge(t[["person_id", "arm", "p_dropout_if_not"]], on="person_id", how="left")
    # the first acting term: nothing is left of earlier actions, so p_dropout of the not eligible and
    # p_dropout_if_not of the eligible are both the world without actions
    score = np.where(r["arm"].notna(), r["p_dropout_if_not"], r["p_dropout"])
    rows = pd.DataFrame({"student_key": r["person_id"].astype(str), "school_code": r["school_code"],
                         "dropout": r["dropout"].astype(float), "risk_score": score})
    assignment = pd.DataFrame({"student_key": t["person_id"].astype(str), "arm": t["arm"], "treated": t["treated"]})
    return rows, assignment


@pytest.mark.parametrize("seed", SEEDS)
def test_a_calibrated_model_looks_calibrated_on_the_untreated_when_the_actions_work(tmp_path: Path, seed: int) -> None:
    rows, assignment = _first_acting_term(seed, tmp_path)

    def oe(frame: pd.DataFrame) -> tuple[float, float]:
        return observed_to_expected_interval(int(frame["dropout"].sum()), float(frame["risk_score"].sum()))

    # On every pupil the actions' success reads as over-prediction: the O/E interval lies below 1 ...
    assert oe(rows)[1] < 1.0
    judged, effects = with_actions(rows, assignment)
    # ... on the untreated it holds 1, and nobody served or acted on is left in
    lo, hi = oe(judged)
    assert lo <= 1.0 <= hi
    served = set(assignment.loc[assignment["arm"].eq("served") | assignment["treated"], "student_key"])
    assert not served & set(judged["student_key"])
    assert effects.judged_rows == len(judged) and effects.left_out_rows == len(rows) - len(judged)
    assert effects.holdout > 0 and effects.effect_of_serving is not None
    assert "untreated" in describe(effects)


def test_without_a_holdout_the_effect_is_not_estimated_and_says_why() -> None:
    rows = pd.DataFrame({"student_key": ["a", "b", "c", "d"], "school_code": ["s"] * 4, "dropout": [1.0, 0, 0, 1],
                         "arm": ["served", "served", "", ""], "treated": [True, False, False, False]})
    e = summarise(rows)
    assert isinstance(e, ActionEffects) and e.effect_of_serving is None and "no randomised holdout" in e.note
    assert e.judged_rows == 2  # the two not eligible; both served pupils are left out
    assert untreated_mask(rows["arm"], rows["treated"]).tolist() == [False, False, True, True]
    assert "Actions recorded for 1 pupils" in describe(e)


def test_a_school_randomised_holdout_is_resampled_by_school() -> None:
    rng = np.random.default_rng(0)
    school = np.repeat(np.arange(40), 25).astype(str)
    served = np.repeat(rng.random(40) < 0.5, 25)
    y = (rng.random(1000) < np.where(served, 0.05, 0.10)).astype(float)
    by_school, _ = holdout_effect(y, served, school, resampled="school")
    by_pupil, _ = holdout_effect(y, served, np.arange(1000).astype(str))
    assert by_school.resampled == "school" and by_school.estimate == pytest.approx(by_pupil.estimate)
    assert by_school.low < by_school.estimate < by_school.high


def test_a_pupil_served_in_the_two_terms_before_is_not_judged_as_untreated() -> None:
    from monitoring.effects import earlier_terms, with_carry_over

    assert earlier_terms(2566, 1, 2) == [(2565, 2), (2565, 1)] and earlier_terms(2566, 2, 1) == [(2566, 1)]
    every = pd.DataFrame({
        "student_key": ["now", "last", "last_held", "two_ago", "three_ago", "last_and_now"],
        "academic_year": [2566, 2566, 2566, 2565, 2565, 2566],
        "term": [2, 1, 1, 2, 1, 1],
        "school_code": ["s"] * 6,
        "arm": ["holdout", "served", "holdout", "", "served", "served"],
        "treated": [False, False, False, True, True, True],
    })
    every = pd.concat([every, pd.DataFrame({"student_key": ["last_and_now"], "academic_year": [2566], "term": [2],
                                            "school_code": ["s"], "arm": ["holdout"], "treated": [False]})])
    a = with_carry_over(every, 2566, 2, carry_terms=2)
    carried = dict(zip(a["student_key"], a["carried"], strict=True))
    # served last term (planned only), acted on two terms ago: carried; held out last term, or
    # acted on three terms ago: not
    assert carried == {"now": False, "last_and_now": True, "last": True, "two_ago": True}
    assert a.set_index("student_key").loc["last_and_now", "arm"] == "holdout"  # this term's arm is kept
    rows = pd.DataFrame({"student_key": ["now", "last", "two_ago", "last_and_now", "other"], "school_code": ["s"] * 5,
                         "dropout": [0.0, 0.0, 1.0, 0.0, 0.0]})
    judged, e = with_actions(rows, a)
    assert judged["student_key"].tolist() == ["now", "other"] and e.carried == 3 and e.judged_rows == 2
    assert "3 served or acted on in the 2 terms before" in describe(e)
