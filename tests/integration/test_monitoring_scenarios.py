"""Monitoring sees each simulated change, says which statistic fired at what value, and stays calm
when nothing changed. One unchanged world and three scenario worlds (monitoring_fixtures.py), all
through the real pipeline: simulate -> ingest -> link -> trainset -> train -> score -> monitor.
A fifth world, where schools act on the list, is monitored with its assignment (below). One module:
the worlds are built once per session, and `make test`'s workers (`--dist loadfile`) keep a module
on one worker."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.integration.monitoring_fixtures import CHANGE_TERM, CHANGE_YEAR, REFERENCE_ROUND, ROUND, MonitoredWorld
from tests.support.worlds import copy_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def worlds(monitored_worlds: dict[str, MonitoredWorld]) -> dict[str, MonitoredWorld]:
    return monitored_worlds  # built once per session (tests/conftest.py)


def _fired(world: MonitoredWorld, area: str) -> dict[str, float]:
    return {b.what: b.value for b in world.report.verdict.breaches if b.area == area}


def test_an_unchanged_world_is_not_flagged(worlds: dict[str, MonitoredWorld]) -> None:
    r = worlds["unchanged"].report
    assert not r.verdict.alert, r.verdict.reasons
    assert not r.verdict.retrain_recommended
    assert r.outcomes.matured
    oe = next(c for c in r.outcomes.checks if c.check == "observed_to_expected")
    # Judged with its interval (monitoring/outcomes.py): the realised count must not rule out the band.
    # The point estimate alone is noise at this size (about 40 dropouts).
    low, high = r.outcomes.metrics["observed_to_expected_low"], r.outcomes.metrics["observed_to_expected_high"]
    assert low <= oe.value <= high and low <= 1.5 and high >= 0.67 and oe.level == "ok"
    assert max(d.score for d in r.drift if d.what == "feature" and d.column == "income_per_person") < 0.1


def test_the_reference_is_a_round_the_champion_was_fitted_on_before_the_monitored_round(
        worlds: dict[str, MonitoredWorld]) -> None:
    for w in worlds.values():
        r = w.report
        assert r.reference_rounds == [REFERENCE_ROUND] and ROUND not in r.reference_rounds
        assert r.reference_source.startswith("training and calibration folds") and r.drift_note is None
        assert r.reference_rows > 0


def test_an_economic_shock_is_seen_in_attendance_and_poverty_features(worlds: dict[str, MonitoredWorld]) -> None:
    r = worlds["economic_shock"].report
    fired = _fired(worlds["economic_shock"], "feature_drift")
    assert r.verdict.retrain_recommended
    assert fired["feature att_rate_term"] >= 0.25
    assert fired["feature income_per_person"] >= 0.25
    # Halving incomes lifts the share at or under 3,000 baht a person a month from about 45% to 76%
    # of this world's pupils (Mae Hong Son: about half, as published; truth/rounds.parquet). The
    # feature reads the latest CCT screening, which targets poor households, so most screened pupils
    # were under the line already (about 70% before, 86% after), and a pupil screened only in term 1
    # still shows the old income: its PSI need not reach the drift line. It must still move, at
    # least to "watch"; income and attendance carry the drift verdict.
    poor = next(d for d in r.drift if d.what == "feature" and d.column == "extremely_poor")
    assert poor.score >= poor.watch, poor


def test_a_unit_change_in_the_cct_income_is_seen_in_income_and_the_poverty_line(worlds: dict[str, MonitoredWorld]) -> None:
    r = worlds["data_break"].report
    fired = _fired(worlds["data_break"], "feature_drift")
    assert fired["feature income_per_person"] >= 0.5
    assert set(fired) <= {"feature income_per_person", "feature extremely_poor"}
    # the advice points at the source the drifted features come from
    assert any("cct_screening" in x for x in r.verdict.reasons)


def test_a_change_in_the_dropout_process_is_seen_only_when_outcomes_mature(worlds: dict[str, MonitoredWorld]) -> None:
    r = worlds["process_change"].report
    assert not _fired(worlds["process_change"], "feature_drift")  # the features did not move
    fired = _fired(worlds["process_change"], "outcomes")
    assert fired["observed_to_expected"] > 1.5
    assert r.verdict.retrain_recommended and "outcomes" in r.verdict.summary


def test_each_round_has_a_json_and_html_report_without_personal_data(worlds: dict[str, MonitoredWorld]) -> None:
    import pyarrow.parquet as pq

    w = worlds["economic_shock"]
    folder = w.home.root / "monitoring" / ROUND
    data = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert data["round_id"] == ROUND and data["verdict"]["retrain_recommended"] is True
    assert "data:image/png;base64," in html and "Retraining recommended" in html
    keys = pq.read_table(next(iter((w.home.rounds_dir / ROUND).glob("*/students.parquet"))),
                         columns=["student_key"]).column(0).to_pylist()
    text = (folder / "report.json").read_text(encoding="utf-8") + html
    assert not any(k in text for k in keys[:200])


def test_ews_monitor_exits_3_with_the_breach_and_0_when_calm(worlds: dict[str, MonitoredWorld], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app

    # The command writes its report: on copies, never the shared worlds.
    data_break = copy_home(worlds["data_break"].home.root, tmp_path / "data_break")
    unchanged = copy_home(worlds["unchanged"].home.root, tmp_path / "unchanged")
    _register()
    runner = CliRunner()
    bad = runner.invoke(app, ["monitor", "--round", ROUND, "--home", str(data_break)])
    assert bad.exit_code == 3, bad.output
    assert "income_per_person" in bad.output and "psi" in bad.output
    calm = runner.invoke(app, ["monitor", "--round", ROUND, "--json", "--home", str(unchanged)])
    assert calm.exit_code == 0, calm.output
    assert json.loads(calm.stdout)["verdict"]["alert"] is False
    missing = runner.invoke(app, ["monitor", "--round", "2565-T1-early", "--home", str(unchanged)])
    assert missing.exit_code == 2 and "not published" in missing.output


# ---------------------------------------------------------------------------------------------
# Monitoring a world where schools act on the list (issue 15.6a), through the real pipeline.
# 
# The `interventions` world of the monitored worlds (monitoring_fixtures.py): schools act from
# 2566 term 2 on a randomised share of their top pupils, strongly; the deliveries before that are
# byte-identical to the unchanged world's (the fixture asserts it), so the champion is the same.
# The monitored round 2566-T2-mid is judged with the assignment (`ews monitor --actions`).


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
