"""`ews simulate --json` prints the summary as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from simulator.cli import simulate_command


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
