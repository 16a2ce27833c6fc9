"""Monitoring sees each simulated change, says which statistic fired at what value, and stays calm
when nothing changed. One unchanged world and three scenario worlds (monitoring_fixtures.py), all
through the real pipeline: simulate -> ingest -> link -> trainset -> train -> score -> monitor.
A fifth world, where schools act on the list, is monitored with its assignment (below). One module:
the worlds are built once per session, and `make test`'s workers (`--dist loadfile`) keep a module
on one worker."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from features.home import EwsHome
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


def test_ews_monitor_reads_the_ingested_assignment_and_writes_the_effect_into_the_report(
        world: MonitoredWorld, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app

    home = copy_home(world.home.root, tmp_path / "home")
    _register()
    # the assignment folder goes through ingest (already held by the world's home: nothing changes)
    ingested = CliRunner().invoke(app, ["ingest", str(world.sim / "actions"), "--json", "--home", str(home)])
    assert ingested.exit_code == 0, ingested.output
    assert json.loads(ingested.stdout)["totals"]["already_ingested"] == 1
    res = CliRunner().invoke(app, ["monitor", "--round", ROUND, "--json", "--home", str(home), "--actions"])
    assert res.exit_code in (0, 3), res.output
    data = json.loads(res.stdout)
    assert data["outcomes"]["effects"]["served"] > 0
    html = (home / "monitoring" / ROUND / "report.html").read_text(encoding="utf-8")
    assert "Effect of acting on the list" in html
    keys = set(pd.read_csv(world.sim / "actions" / "assignment.csv", dtype=str)["student_id"])
    assert not any(k in html or k in res.stdout for k in list(keys)[:200])  # aggregates only
    # the warehouse holds the assignment by token: no delivered ID in any of its rows
    con = duckdb.connect(str(EwsHome(root=home).warehouse), read_only=True)
    try:
        held = "\n".join(str(con.execute(f"SELECT * FROM {t}").fetchall()) for t in ("src_assignment", "src_actions"))
    finally:
        con.close()
    assert "served" in held and not any(k in held for k in keys)


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
        assignment = read_assignment(con)
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
    res = CliRunner().invoke(app, ["train", "--json", "--home", str(home.root), "--config", str(config), "--actions"])
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------------------------------------
# The analysts' uplift view (issue 15.6c) of the same world: written by `ews monitor --actions`
# beside the report, served to analysts and auditors, shown on the page in a real Chromium.


def test_monitoring_with_the_assignment_writes_the_uplift_view_beside_the_report(
        world: MonitoredWorld, worlds: dict[str, MonitoredWorld]) -> None:
    from monitoring.uplift import UpliftView

    r = world.report
    path = world.home.monitoring_uplift(r.round)
    view = UpliftView.model_validate_json(path.read_text(encoding="utf-8"))
    assert view == r.uplift and view.round_id == ROUND and view.resampled == "student"
    e = r.outcomes.effects
    assert e is not None and view.eligible == e.eligible  # the same matured, eligible pupils
    shown = [c for c in view.cells if not c.suppressed]
    assert shown and all(min(c.served, c.holdout) >= view.config.min_cell_students for c in shown)
    assert all(c.low <= c.uplift <= c.high for c in shown)
    assert sum(c.served + c.holdout for c in shown) <= view.eligible
    cap = view.capacity
    assert cap is not None and cap.by_risk.pupils_served == cap.by_benefit.pupils_served > 0
    assert cap.by_risk.low <= cap.by_risk.averted <= cap.by_risk.high and cap.low <= cap.benefit_minus_risk <= cap.high
    # aggregates only
    keys = set(pd.read_parquet(next(iter((world.home.rounds_dir / ROUND).glob("*/students.parquet"))),
                               columns=["student_key"])["student_key"])
    text = path.read_text(encoding="utf-8")
    assert not any(k in text for k in list(keys)[:500])
    html = world.home.monitoring_report(r.round, "html").read_text(encoding="utf-8")
    assert "Who is expected to benefit" in html and f"{cap.by_risk.averted:.1f}" in html
    # a round monitored without the assignment has no view (and would remove an older one)
    assert worlds["unchanged"].report.uplift is None
    assert not worlds["unchanged"].home.monitoring_uplift(r.round).exists()


@pytest.fixture(scope="module")
def uplift_service(world: MonitoredWorld, tmp_path_factory: pytest.TempPathFactory):
    """`ews serve` on a copy of the acting world's home, with a token per role (one service for the
    access and browser tests below)."""
    from features.home import EwsHome
    from serving.access import create_token
    from tests.support.worlds import ServingHome, served

    root = copy_home(world.home.root, tmp_path_factory.mktemp("uplift") / "home")
    home = EwsHome(root=root)
    students = pd.read_parquet(next(iter((root / "rounds" / ROUND).glob("*/students.parquet"))),
                               columns=["school_code", "amphoe_code"])
    school = str(students["school_code"].iloc[0])
    area = str(students["amphoe_code"].iloc[0])
    tokens = {role: create_token(home, role, school if role == "school" else None,
                                 [area] if role == "area" else None)[0]
              for role in ("school", "area", "analyst", "auditor", "admin", "monitoring")}
    h = ServingHome(root=root, round_id=ROUND, school=school, other_school=school, area=area, other_area=None,
                    tokens=tokens, token_ids={})
    with served(h) as url:
        yield url, h


def test_the_uplift_route_is_for_analysts_auditors_and_admins_only(uplift_service, world: MonitoredWorld) -> None:
    import httpx

    url, h = uplift_service
    for role in ("analyst", "auditor", "admin", "school", "area", "monitoring"):
        r = httpx.get(f"{url}/ews/api/rounds/{ROUND}/uplift", headers={"Authorization": f"Bearer {h.tokens[role]}"}, timeout=30)
        if role in ("analyst", "auditor", "admin"):
            assert r.status_code == 200, (role, r.text[:300])
            assert r.json()["round_id"] == ROUND and r.json() == json.loads(world.home.monitoring_uplift(world.report.round).read_text())
        else:
            assert r.status_code == 403, (role, r.status_code)
    auth = {"Authorization": f"Bearer {h.tokens['analyst']}"}
    assert httpx.get(f"{url}/ews/api/rounds/{REFERENCE_ROUND}/uplift", headers=auth, timeout=30).status_code == 404
    assert httpx.get(f"{url}/ews/api/rounds/not-a-round/uplift", headers=auth, timeout=30).status_code == 400
    assert httpx.get(f"{url}/ews/api/rounds/{ROUND}/uplift", timeout=30).status_code == 401
    doc = httpx.get(f"{url}/docs.json", headers=auth, timeout=30).json()
    op = doc["paths"]["/ews/api/rounds/{round_id}/uplift"]["get"]
    assert {"200", "400", "401", "403", "404", "409"} <= set(op["responses"])


def test_an_analyst_sees_the_uplift_view_on_the_page_in_a_real_browser(uplift_service, world: MonitoredWorld) -> None:
    import shutil

    from playwright.sync_api import sync_playwright

    from tests.integration.test_web_page import CHROMIUM_FLAGS

    url, h = uplift_service
    chromium = shutil.which("chromium")
    assert chromium is not None, "Debian chromium is not installed (apt-get install chromium)"
    view = world.report.uplift
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)
        try:
            page = b.new_page()
            page.goto(url + "/ews/")
            page.fill("#token", h.tokens["analyst"])
            page.click("#login")
            page.wait_for_function("(document.querySelector('#u_cells').dataset.round || '').length > 0", timeout=20_000)
            page.select_option("#round", ROUND)
            page.click("#u_show")
            page.wait_for_function("document.querySelector('#u_cells').dataset.round === %r" % ROUND, timeout=20_000)
            assert page.is_visible("#uplift") and not page.is_visible("#list")
            rows = page.locator("#u_cells tbody tr")
            assert rows.count() == len(view.cells)
            assert page.locator("#u_cells tbody tr.suppressed").count() == sum(c.suppressed for c in view.cells)
            cap = page.locator("#u_capacity tbody tr").all_inner_texts()
            assert len(cap) == 3 and f"{view.capacity.by_risk.averted:.1f}" in cap[0]
            assert f"{view.capacity.by_benefit.averted:.1f}" in cap[1]
            # a school token sees its list, never the uplift section
            page.fill("#token", h.tokens["school"])
            page.click("#login")
            page.wait_for_selector("#list tbody tr", timeout=20_000)
            assert not page.is_visible("#uplift")
            page.close()
        finally:
            b.close()
