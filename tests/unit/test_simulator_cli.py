"""`ews simulate --json` prints the summary as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from simulator.cli import simulate_command
from simulator.scenarios import NAMED_SCENARIOS


def test_the_simulate_command_with_json_prints_a_valid_summary(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)  # a second command keeps typer from flattening the app
    res = CliRunner().invoke(app, ["simulate", "--students", "800", "--years", "1", "--seed", "3",
                                   "--out", str(tmp_path), "--json", "--no-malformed"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["students"] == 800 and summary["malformed_deliveries"] == []
    assert {"early", "mid"} <= set(summary["ceiling"])
    assert json.loads((tmp_path / "summary.json").read_text())["rows_by_source"] == summary["rows_by_source"]


def test_the_simulate_help_speaks_to_a_data_officer() -> None:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)  # a second command keeps typer from flattening the app
    res = CliRunner().invoke(app, ["simulate", "--help"])
    assert res.exit_code == 0
    assert "--students" in res.output and "census" in res.output


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("simulate")(simulate_command)
    app.command("noop")(lambda: None)  # a second command keeps typer from flattening the app
    return app


def test_the_simulate_help_lists_every_named_scenario() -> None:
    res = CliRunner().invoke(_app(), ["simulate", "--help"], terminal_width=400)
    assert res.exit_code == 0
    assert "--scenario" in res.output
    for name in NAMED_SCENARIOS:
        assert name in res.output, name


def test_a_scenario_named_on_the_command_line_changes_the_world_from_the_year_given(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["simulate", "--students", "800", "--years", "2", "--seed", "3", "--out", str(tmp_path),
                                      "--json", "--no-malformed", "--scenario", "process_change", "--scenario-from", "2564",
                                      "--scenario-term", "2"])
    assert res.exit_code == 0, res.output
    process = json.loads((tmp_path / "truth" / "process.json").read_text())
    scenario = process["config"]["scenario"]
    assert (scenario["name"], scenario["from_year"], scenario["from_term"]) == ("process_change", 2564, 2)
    assert [c["kind"] for c in scenario["changes"]] == ["process_change"]


def test_a_scenario_starts_in_the_last_simulated_year_unless_told_otherwise(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["simulate", "--students", "800", "--years", "2", "--seed", "3", "--out", str(tmp_path),
                                      "--json", "--no-malformed", "--scenario", "data_break"])
    assert res.exit_code == 0, res.output
    process = json.loads((tmp_path / "truth" / "process.json").read_text())
    scenario = process["config"]["scenario"]
    assert (scenario["name"], scenario["from_year"], scenario["from_term"]) == ("data_break", 2564, 1)


def test_an_unknown_scenario_is_refused_with_the_names_to_choose_from(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["simulate", "--students", "800", "--years", "1", "--out", str(tmp_path),
                                      "--scenario", "flood"])
    assert res.exit_code == 2
    assert "flood" in res.output and all(name in res.output for name in NAMED_SCENARIOS)
    assert not (tmp_path / "truth").exists()
