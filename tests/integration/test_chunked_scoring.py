"""A round scored chunk by chunk of whole schools is the round scored in one piece: the same pupils
with the same features, scores, groups, reasons and SHAP values (to 1e-12), the same column types,
and the same explanation summary in the manifest. Scores a copy of the ladder's trained world. A
round prepared for chunks (`prepare_round`) gives, chunk by chunk, the rows of the declared query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.calendar import parse_round
from features.home import EwsHome
from serving.scoring import RoundSummary, score_round
from serving.snapshot import STUDENTS, ScoreConfig, SnapshotRef
from tests.support.worlds import SmallWorld, TrainedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _scored(home: EwsHome, round_id: str, chunk_rows: int, prepare_memory_limit: str | None = None
            ) -> tuple[RoundSummary, SnapshotRef]:
    from training.registry import load_model

    r = parse_round(round_id)
    # the default prepare limit unless one is given (None would turn it off)
    cfg = ScoreConfig(chunk_rows=chunk_rows, **({"prepare_memory_limit": prepare_memory_limit} if prepare_memory_limit else {}))
    summary = score_round(home, r, load_model(home), cfg, do_publish=False)
    return summary, SnapshotRef(r, summary.snapshot_hash, home.rounds_dir / round_id / summary.snapshot_hash)


def _rows(ref: SnapshotRef) -> pd.DataFrame:
    return ref.students().to_pandas().sort_values("student_key").reset_index(drop=True)


def test_a_round_scored_in_chunks_of_schools_equals_the_round_scored_in_one_chunk(trained_copy: TrainedWorld) -> None:
    home = EwsHome(root=trained_copy.world.home)
    round_id = f"{trained_copy.world.summary['first_year'] + 2}-T2-early"
    whole, whole_ref = _scored(home, round_id, chunk_rows=10_000_000)
    assert whole.chunks == 1 and whole.students > 100
    one = _rows(whole_ref)
    assert one["risk_group"].notna().sum() == whole.scored > 0
    for chunk_rows in (max(1, whole.students // 5), 1):  # a fifth of the round; every school alone
        part, part_ref = _scored(home, round_id, chunk_rows=chunk_rows)
        assert part.chunks >= 4, "the round was not cut into chunks"
        assert (part.students, part.scored, part.groups) == (whole.students, whole.scored, whole.groups)
        assert pq.read_schema(part_ref.folder / STUDENTS) == pq.read_schema(whole_ref.folder / STUDENTS)
        many = _rows(part_ref)
        assert list(many.columns) == list(one.columns)
        assert many["student_key"].tolist() == one["student_key"].tolist()
        for col in one.columns:
            a, b = one[col], many[col]
            if pd.api.types.is_float_dtype(a):
                np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=0, atol=1e-12, equal_nan=True,
                                           err_msg=f"{col} ({chunk_rows} pupils a chunk)")
            else:
                assert a.equals(b), f"{col} differs ({chunk_rows} pupils a chunk)"
        e1, e2 = whole_ref.manifest.explanation, part_ref.manifest.explanation
        assert e1 is not None and e2 is not None
        assert (e2.base_logit, e2.additivity_failures) == (e1.base_logit, e1.additivity_failures)
        assert abs(e2.max_additivity_error - e1.max_additivity_error) <= 1e-12
        assert (part_ref.manifest.rows, part_ref.manifest.scored_rows) == (whole_ref.manifest.rows,
                                                                          whole_ref.manifest.scored_rows)
        assert part_ref.manifest.config.chunk_rows == chunk_rows
    # DuckDB's limit while the round is prepared bounds memory and changes no value: the same snapshot
    again, again_ref = _scored(home, round_id, chunk_rows=1, prepare_memory_limit="512MB")  # as the loop's last
    assert again.chunks >= 4 and again.snapshot_hash == part.snapshot_hash
    assert again_ref.manifest.config == part_ref.manifest.config


def test_the_scoring_sessions_memory_limit_is_back_after_the_round_is_prepared_however_it_ends(tmp_path: Path) -> None:
    import duckdb

    from serving.scoring import prepare_resources, scoring_resources

    con = duckdb.connect()
    cfg = ScoreConfig(duckdb_memory_limit="700MB", prepare_memory_limit="2GB", spill_dir=tmp_path)
    home = EwsHome(root=tmp_path / "home")
    scoring_resources(con, home, cfg)

    def limit() -> str:
        return str(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])

    scoring = limit()
    with prepare_resources(con, cfg):
        preparing = limit()
    assert limit() == scoring != preparing
    with pytest.raises(RuntimeError, match="prepare failed"), prepare_resources(con, cfg):
        assert limit() == preparing
        raise RuntimeError("prepare failed")
    assert limit() == scoring
    with prepare_resources(con, cfg.model_copy(update={"prepare_memory_limit": None})):
        assert limit() == scoring


def test_a_round_that_fails_half_way_through_its_chunks_leaves_no_snapshot(trained_copy: TrainedWorld,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.scoring as scoring

    home = EwsHome(root=trained_copy.world.home)
    round_id = f"{trained_copy.world.summary['first_year'] + 2}-T2-early"
    real, calls = scoring.explain_frame, []

    def dies_on_the_second_chunk(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed half way")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "explain_frame", dies_on_the_second_chunk)
    with pytest.raises(RuntimeError, match="killed half way"):
        _scored(home, round_id, chunk_rows=1)
    assert len(calls) == 2
    assert list((home.rounds_dir / round_id).iterdir()) == []


@pytest.mark.parametrize("offset, round_kind", [(2, "T2-early"), (1, "T1-mid")])
def test_a_prepared_round_read_chunk_by_chunk_gives_the_rows_of_the_compiled_feature_query(
        small_world: SmallWorld, tmp_path: Path, offset: int, round_kind: str) -> None:
    """`prepare_round` reads each source once into chunk partitions; every chunk's query must then
    give exactly the rows the declared query gives for the chunk's pupils (the chunks together:
    the round's rows)."""
    from features.pointintime.build import build_features, population_source, prepare_round
    from features.pointintime.pipeline import connect_warehouse

    home = EwsHome(root=small_world.home)
    r = parse_round(f"{small_world.summary['first_year'] + offset}-{round_kind}")
    con = connect_warehouse(home)
    try:
        population = population_source(con, home.calendar, r)
        declared = build_features(con, home.calendar, r, population=population).to_pandas()
        assert len(declared) > 100
        prepared = prepare_round(con, home.calendar, r, population, chunk_rows=len(declared) // 5, folder=tmp_path)
        assert len(prepared.chunks) >= 4
        parts = [build_features(con, home.calendar, r, population=population, prepared=prepared, chunk=i).to_pandas()
                 for i in range(len(prepared.chunks))]
    finally:
        con.close()
    assert [len(p) for p in parts] == [n for _, n in prepared.chunks]
    chunked = pd.concat(parts).sort_values("student_key").reset_index(drop=True)
    assert list(chunked.columns) == list(declared.columns)
    assert chunked["student_key"].tolist() == declared["student_key"].tolist()
    for col in declared.columns:
        a, b = declared[col], chunked[col]
        if pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=0, atol=1e-12, equal_nan=True, err_msg=col)
        else:
            assert a.equals(b), f"{col} differs"
