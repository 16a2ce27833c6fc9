"""Monitoring a world where schools act on the list (issue 15.6a), through the real pipeline.

The `interventions` world of the monitored worlds (monitoring_fixtures.py): schools act from
2566 term 2 on a randomised share of their top pupils, strongly; the deliveries before that are
byte-identical to the unchanged world's (the fixture asserts it), so the champion is the same.
The monitored round 2566-T2-mid is judged with the assignment (`ews monitor --actions`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.monitoring_fixtures import CHANGE_TERM, CHANGE_YEAR, ROUND, MonitoredWorld
from tests.support.worlds import copy_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(monitored_worlds: dict[str, MonitoredWorld]) -> MonitoredWorld:
    return monitored_worlds["interventions"]


def _truth(world: MonitoredWorld) -> pd.DataFrame:
    t = pd.read_parquet(world.sim / "truth" / "interventions.parquet")
    return t[t["round_id"] == f"{CHANGE_YEAR}-T{CHANGE_TERM}-early"]


def test_the_effect_of_acting_is_estimated_from_the_holdout_and_covers_the_truth(world: MonitoredWorld) -> None:
    e = world.report.outcomes.effects
    assert e is not None and e.design == "holdout by pupil"
    t = _truth(world)
    # every eligible pupil of the term was found by linkage from the ID the school wrote, bar a few
    assert e.eligible >= 0.95 * len(t) and e.holdout >= 0.9 * int((t["arm"] == "holdout").sum())
    true_itt = float(((t["p_dropout_if_acted"] - t["p_dropout_if_not"]) * t["would_take_up"]).mean())
    est = e.effect_of_serving
    assert est is not None and est.low <= true_itt <= est.high, (est, true_itt)


def test_a_world_where_the_actions_work_is_not_called_miscalibrated(world: MonitoredWorld) -> None:
    from monitoring.report import monitor_round

    r = world.report
    assert r.outcomes.matured
    assert not [b for b in r.verdict.breaches if b.area == "outcomes"], r.verdict.reasons
    assert any(x.startswith("Actions:") for x in r.verdict.reasons)
    # the same round judged on every pupil: the served pupils' fewer dropouts read as over-prediction
    blind = monitor_round(world.home, ROUND)
    assert blind.outcomes.effects is None
    assert blind.outcomes.metrics["observed_to_expected"] < r.outcomes.metrics["observed_to_expected"]
    assert r.outcomes.rows == r.outcomes.effects.judged_rows < blind.outcomes.rows


def test_ews_monitor_reads_the_assignment_folder_and_writes_the_effect_into_the_report(
        world: MonitoredWorld, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app

    home = copy_home(world.home.root, tmp_path / "home")
    _register()
    res = CliRunner().invoke(app, ["monitor", "--round", ROUND, "--json", "--home", str(home),
                                   "--actions", str(world.sim / "actions")])
    assert res.exit_code in (0, 3), res.output
    data = json.loads(res.stdout)
    assert data["outcomes"]["effects"]["served"] > 0
    html = (home / "monitoring" / ROUND / "report.html").read_text(encoding="utf-8")
    assert "Effect of acting on the list" in html
    keys = set(pd.read_csv(world.sim / "actions" / "assignment.csv", dtype=str)["student_id"])
    assert not any(k in html or k in res.stdout for k in list(keys)[:200])  # aggregates only


def test_ews_train_with_the_assignment_leaves_out_the_outcomes_an_action_changed(
        world: MonitoredWorld, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app
    from features.assignment import read_assignment
    from features.home import EwsHome
    from features.pointintime.pipeline import TrainsetConfig, build_trainset, connect_warehouse
    from training.actions import without_acted
    from training.config import ActionAwareConfig
    from training.data import load_trainset

    home = EwsHome(root=copy_home(world.home.root, tmp_path / "home"))
    build_trainset(home, TrainsetConfig())  # now with the labels of the acting term
    ts = load_trainset(home)
    con = connect_warehouse(home)
    try:
        assignment = read_assignment(home, con, world.sim / "actions")
    finally:
        con.close()
    aware, dropped = without_acted(ts, assignment, ActionAwareConfig(terms_after=0))
    acted = set(assignment.loc[assignment["arm"].eq("served") | assignment["treated"], "student_key"])
    held = set(assignment.loc[assignment["arm"].eq("holdout") & ~assignment["treated"], "student_key"]) - acted
    term = f"{CHANGE_YEAR}-T{CHANGE_TERM}-"
    in_term = aware.frame["round_id"].astype(str).str.startswith(term)
    assert dropped > 0 and not set(aware.frame.loc[in_term, "student_key"]) & acted
    # pupils held out at random keep their rows: the untreated of the same profiles
    in_term_before = set(ts.frame.loc[ts.frame["round_id"].astype(str).str.startswith(term), "student_key"])
    assert held & in_term_before and held & in_term_before <= set(aware.frame.loc[in_term, "student_key"])
    # rows of other terms stay
    assert len(aware.frame[~in_term]) == int((~ts.frame["round_id"].astype(str).str.startswith(term)).sum())

    config = tmp_path / "train.json"
    config.write_text(json.dumps({"model": {"n_estimators": 60}, "shap_sample_rows": 100}), encoding="utf-8")
    _register()
    res = CliRunner().invoke(app, ["train", "--json", "--home", str(home.root), "--config", str(config),
                                   "--actions", str(world.sim / "actions")])
    assert res.exit_code == 0, res.output
