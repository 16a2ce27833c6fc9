"""`ews score --chunk-rows`: the operator bounds a national round's memory from the command line;
an impossible chunk is refused before any work."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner


def _score(home: Path, chunk_rows: str) -> tuple[int, str]:
    from ews.cli import _register, app

    _register()
    res = CliRunner().invoke(app, ["score", "--round", "2565-T1-early", "--chunk-rows", chunk_rows, "--home", str(home)])
    return res.exit_code, res.output


def test_a_chunk_of_no_pupils_is_refused_before_the_home_is_opened(tmp_path: Path) -> None:
    code, out = _score(tmp_path / "nowhere", "0")
    assert code == 2
    assert "Invalid value for '--chunk-rows'" in out and "greater than or equal to 1" in out
    assert not (tmp_path / "nowhere").exists()

