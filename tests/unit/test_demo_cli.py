"""`ews demo --years`: a history too short to train on is refused before anything is simulated, not
after a minute and a half of simulation, ingest, linkage and a training set (as with --years 3)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner


def _demo(home: Path, years: str) -> tuple[int, str]:
    from ews.cli import _register, app

    _register()
    res = CliRunner().invoke(app, ["demo", "--home", str(home), "--students", "200", "--years", years, "--no-serve"])
    return res.exit_code, res.output


def test_a_demo_of_three_years_is_refused_before_the_home_is_made(tmp_path: Path) -> None:
    code, out = _demo(tmp_path / "demo", "3")
    assert code == 2
    flat = "".join(out.replace("│", "").split())  # rich wraps the error box at the terminal's width
    assert "Invalidvaluefor'--years'" in flat and "greaterthanorequalto4" in flat
    assert not (tmp_path / "demo").exists()
