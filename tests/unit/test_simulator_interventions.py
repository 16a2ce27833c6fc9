"""Schools acting on the list in the simulator (issue 15.5): off by default, heterogeneous, fading, with the truth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.actions import BY_CODE
from simulator.api import simulate
from simulator.config import InterventionConfig, SimulationConfig
from simulator.interventions import (
    A_CCT, A_COUNSELLING, A_HOME_VISIT, ACTION_CODES, choose_action, effect_logit, top_share_per_school, true_effects,
)

FIRST_YEAR = 2563


def _world(tmp: Path, seed: int, interventions: InterventionConfig | None, students: int = 1200, years: int = 2) -> Path:
    cfg = SimulationConfig.small(students=students, years=years, seed=seed).model_copy(update={"interventions": interventions})
    simulate(cfg, tmp)
    return tmp


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_action_codes_the_simulator_writes_are_codes_of_the_action_records_catalogue() -> None:
    for code in ACTION_CODES:
        assert code in BY_CODE, code
        assert BY_CODE[code].path == "care"


def test_each_school_makes_eligible_the_top_share_of_its_own_pupils_and_no_more() -> None:
    school = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    index = np.array([0.1, 0.9, 0.5, 0.3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], dtype=float)
    out = top_share_per_school(school, index, 0.25, np.zeros(len(school)))
    # school 0: ceil(0.25 x 4) = 1 -> its highest (0.9); school 1: ceil(0.25 x 10) = 3 -> 10, 9, 8
    assert out.tolist() == [False, True, False, False] + [False] * 7 + [True] * 3


def test_the_effect_of_an_action_depends_on_the_cause_of_the_risk() -> None:
    ic = InterventionConfig(from_year=FIRST_YEAR)
    poverty = np.array([1.5, 1.5, -0.5, -0.5, 0.0])
    engagement = np.array([0.5, -1.0, -1.0, 1.0, -1.0])
    # a CCT helps the poor by need, not the child at or above the line
    cct = effect_logit(np.full(5, A_CCT), poverty, engagement, ic)
    assert cct[0] == pytest.approx(-ic.cct_effect_per_poverty * 1.5) and cct[2] == 0 and cct[4] == 0
    # a home visit or counselling helps the disengaged, not the poor but engaged child
    for action, coef in ((A_HOME_VISIT, ic.home_visit_effect_per_disengagement),
                         (A_COUNSELLING, ic.counselling_effect_per_disengagement)):
        eff = effect_logit(np.full(5, action), poverty, engagement, ic)
        assert eff[0] == 0 and eff[3] == 0 and eff[1] == pytest.approx(-coef)
    assert choose_action(np.array([True, False, False]), np.array([0.5, 0.5, 0.95]), 0.85).tolist() == [
        A_CCT, A_HOME_VISIT, A_COUNSELLING]


def test_a_world_whose_schools_never_act_is_byte_identical_to_the_world_without_interventions(tmp_path: Path) -> None:
    off = _world(tmp_path / "off", 5, None, years=1)
    # configured, but from a year after the run: the hook is built, its stream drawn from, and nothing moves
    later = _world(tmp_path / "later", 5, InterventionConfig(from_year=FIRST_YEAR + 1), years=1)
    a, b = _digests(off / "deliveries"), _digests(later / "deliveries")
    assert a == b and len(a) > 10
    for name in ("rounds", "census_status", "records", "persons", "shocks"):
        assert _digests(off / "truth")[f"{name}.parquet"] == _digests(later / "truth")[f"{name}.parquet"], name
    assert not (off / "actions").exists()
    assert "interventions" not in json.loads((off / "truth/process.json").read_text())["config"]


def test_deliveries_before_the_first_acting_term_do_not_move_and_later_ones_do(tmp_path: Path) -> None:
    off = _world(tmp_path / "off", 5, None)
    on = _world(tmp_path / "on", 5, InterventionConfig(from_year=FIRST_YEAR + 1))
    a, b = _digests(off / "deliveries"), _digests(on / "deliveries")
    assert a.keys() == b.keys()
    # delivery folders are named by the day they arrive; schools act from the academic year starting in May 2021
    before = [k for k in a if k < f"{FIRST_YEAR + 1 - 543}-05-01"]
    assert len(before) > 10 and all(a[k] == b[k] for k in before)
    assert any(a[k] != b[k] for k in a)  # acting changed who left, so some later delivery differs
    rounds_off = pd.read_parquet(off / "truth/rounds.parquet")
    rounds_on = pd.read_parquet(on / "truth/rounds.parquet")
    y1 = rounds_off["academic_year"] == FIRST_YEAR
    pd.testing.assert_frame_equal(rounds_off[y1].reset_index(drop=True),
                                  rounds_on[rounds_on["academic_year"] == FIRST_YEAR].reset_index(drop=True))


@pytest.mark.parametrize("seed", [11, 23])
def test_the_truth_holds_both_potential_outcomes_and_the_delivery_matches_it(tmp_path: Path, seed: int) -> None:
    ic = InterventionConfig(from_year=FIRST_YEAR, capacity_share=0.1, uptake=0.8, holdout_share=0.5)
    out = _world(tmp_path, seed, ic)
    t = pd.read_parquet(out / "truth/interventions.parquet")
    # the realised outcome is one of the two potential outcomes: the acted one exactly for the treated
    realised = np.where(t["treated"], t["dropout_if_acted"], t["dropout_if_not"])
    assert (realised == t["dropout"]).all()
    assert not t.loc[t["arm"] == "holdout", "treated"].any()
    assert (t.loc[t["treated"], "would_take_up"]).all()
    # an action never raises the risk; some pupils gain and some do not (heterogeneous)
    diff = t["p_dropout_if_acted"] - t["p_dropout_if_not"]
    assert (diff <= 1e-12).all()
    assert 0.1 < (diff < -1e-4).mean() < 0.95
    # capacity: at most ceil(share x pupils) per school and round (schools' sizes from the rounds truth)
    rounds = pd.read_parquet(out / "truth/rounds.parquet", columns=["round_id", "school_code"])
    sizes = rounds[rounds["round_id"].str.endswith("early")].groupby(["round_id", "school_code"]).size()
    per = t.groupby(["round_id", "school_code"]).size()
    assert (per <= np.ceil(0.1 * sizes.reindex(per.index))).all()
    # the delivery: one assignment row per eligible pupil-term, an action row per served one
    assign = pd.read_csv(out / "actions/assignment.csv", dtype=str)
    acts = pd.read_csv(out / "actions/actions.csv", dtype=str)
    assert len(assign) == len(t) and (assign["arm"].value_counts() == t["arm"].value_counts()).all()
    assert len(acts) == int((t["arm"] == "served").sum())
    assert int((acts["status"] == "done").sum()) == int(t["treated"].sum())
    assert set(acts["action"]) <= set(ACTION_CODES)
    eff = true_effects(out / "truth")
    assert eff["itt"] < 0 and eff["att"] < eff["itt"]  # not everyone served takes it up


def test_the_effect_of_an_action_fades_term_after_term(tmp_path: Path) -> None:
    # one acting term only (from the last term, 2 years): what is left shows in the next term's carry
    ic = InterventionConfig(from_year=FIRST_YEAR, fade_per_term=0.5, holdout_share=0.0, uptake=1.0)
    out = _world(tmp_path, 3, ic)
    t = pd.read_parquet(out / "truth/interventions.parquet")
    first = t[t["round_id"] == f"{FIRST_YEAR}-T1-early"].set_index("person_id")
    second = t[t["round_id"] == f"{FIRST_YEAR}-T2-early"].set_index("person_id")
    both = first.index.intersection(second.index)
    assert len(both) > 5
    np.testing.assert_allclose(second.loc[both, "carried_logit"], 0.5 * first.loc[both, "effect_logit"])


def test_the_simulate_command_switches_interventions_on_with_the_settings_given(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from simulator.cli import simulate_command

    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["simulate", "--students", "800", "--years", "1", "--seed", "3", "--out", str(tmp_path),
                                   "--json", "--no-malformed", "--interventions", "--capacity", "0.2", "--holdout", "0.3",
                                   "--holdout-unit", "school"])
    assert res.exit_code == 0, res.output
    iv = json.loads((tmp_path / "truth" / "process.json").read_text())["config"]["interventions"]
    assert (iv["from_year"], iv["capacity_share"], iv["holdout_share"], iv["holdout_unit"]) == (FIRST_YEAR, 0.2, 0.3, "school")
    assert (tmp_path / "actions" / "assignment.csv").exists()
    t = pd.read_parquet(tmp_path / "truth/interventions.parquet")
    assert (t.groupby("school_code")["arm"].nunique() == 1).all()  # a school is held out whole
    bad = CliRunner().invoke(app, ["simulate", "--students", "800", "--years", "1", "--out", str(tmp_path / "x"),
                                   "--interventions", "--holdout-unit", "class"])
    assert bad.exit_code == 2 and "holdout_unit" in bad.output
