"""`ews score --chunk-rows`: the operator bounds a national round's memory from the command line;
an impossible chunk is refused before any work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
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



def test_the_deployment_engine_chooses_who_scores_the_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`[engine] kind = "spark"` scores on Spark (`serving.spark_scoring`), the default on DuckDB; the
    round and the chunk size reach either the same way."""
    import serving.scoring
    import serving.spark_scoring
    import training.registry
    from ews.cli import _register, app
    from serving.scoring import RoundSummary

    calls: list[tuple[str, str, int]] = []

    def scorer(engine: str) -> Callable[..., RoundSummary]:  # a stand-in with score_round's signature
        def score(home: object, r: object, champion: object, cfg: object) -> RoundSummary:
            calls.append((engine, r.round_id, cfg.chunk_rows))
            return RoundSummary(round_id=r.round_id, snapshot_hash="0" * 16, folder="-", students=0, scored=0,
                                no_score=0, groups={"problem": 0, "at_risk": 0, "normal": 0}, model_version="1",
                                published=True, seconds={})
        return score

    monkeypatch.setattr(training.registry, "load_model", lambda home: None)
    monkeypatch.setattr(serving.scoring, "score_round", scorer("duckdb"))
    monkeypatch.setattr(serving.spark_scoring, "score_round_spark", scorer("spark"))
    _register()
    duck, spark = tmp_path / "duck", tmp_path / "spark"
    duck.mkdir()
    spark.mkdir()
    (spark / "deployment.toml").write_text('[engine]\nkind = "spark"\n', encoding="utf-8")
    for home in (duck, spark):
        res = CliRunner().invoke(app, ["score", "--round", "2565-T1-early", "--chunk-rows", "700", "--json",
                                       "--home", str(home)])
        assert res.exit_code == 0, res.output
    assert calls == [("duckdb", "2565-T1-early", 700), ("spark", "2565-T1-early", 700)]
