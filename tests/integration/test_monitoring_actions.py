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
