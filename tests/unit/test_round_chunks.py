"""How a round is cut and prepared for scoring chunk by chunk: whole schools packed in order, a
chunk's reads pointed at its own partition, and the scoring session's DuckDB resources kept out of
the snapshot's manifest (they bound memory; they never change a value)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from features.pointintime.build import PreparedRound, pack_schools
from serving.snapshot import ScoreConfig


def test_schools_are_packed_whole_in_order_up_to_the_chunk_size() -> None:
    counts = [("a", 3), ("b", 4), ("c", 2), ("d", 9), ("e", 1), ("", 2)]
    chunks = pack_schools(counts, chunk_rows=7)
    assert [code for codes, _ in chunks for code in codes] == [code for code, _ in counts]
    assert sum(n for _, n in chunks) == sum(n for _, n in counts)
    for codes, n in chunks:
        assert n == sum(dict(counts)[c] for c in codes)
        assert n <= 7 or len(codes) == 1, "only a school larger than a chunk may exceed it, alone"
    assert chunks[0] == (("a", "b"), 7)
    assert (("d",), 9) in chunks


def test_every_school_alone_when_the_chunk_holds_one_pupil_and_one_chunk_when_it_holds_the_round() -> None:
    counts = [("a", 3), ("b", 4), ("c", 2)]
    assert pack_schools(counts, chunk_rows=1) == [(("a",), 3), (("b",), 4), (("c",), 2)]
    assert pack_schools(counts, chunk_rows=10**9) == [(("a", "b", "c"), 9)]
    assert pack_schools([], chunk_rows=5) == []


def test_a_chunk_reads_its_own_partition_and_a_read_without_rows_in_it_keeps_its_compiled_step(tmp_path: Path) -> None:
    for chunk in (0, 2):
        (tmp_path / "att_known" / f"chunk={chunk}").mkdir(parents=True)
        (tmp_path / "att_known" / f"chunk={chunk}" / "data_0.parquet").touch()
    # a partition folder with no file (DuckDB's COPY may leave one): globbing it is an error in DuckDB
    (tmp_path / "att_known" / "chunk=1").mkdir()
    prepared = PreparedRound(population="round_pop", steps={"past": "round_past"},
                             known={"att_known": tmp_path / "att_known"}, chunks=((("a",), 1), (("b",), 1), (("c",), 1)))
    first, second = prepared.prepared_steps(0), prepared.prepared_steps(1)
    assert "chunk=0" in first["att_known"] and "chunk=2" not in first["att_known"]
    assert "att_known" not in second, "chunk 1 has no attendance: the compiled step finds none either"
    assert first["past"] == second["past"] == "SELECT * FROM round_past"
    assert "chunk=" not in prepared.prepared_steps(None)["att_known"]
    assert prepared.population_steps(("sid",), 1) == [("pop", "SELECT sid FROM round_pop WHERE chunk = 1")]


def test_the_scoring_sessions_memory_limit_and_spill_folder_stay_out_of_the_manifest(tmp_path: Path) -> None:
    cfg = ScoreConfig(duckdb_memory_limit="2GB", spill_dir=tmp_path)
    dumped = cfg.model_dump(mode="json")
    assert "duckdb_memory_limit" not in dumped and "spill_dir" not in dumped
    assert ScoreConfig.model_validate(dumped) == ScoreConfig(), "the manifest's config reads back"
    with pytest.raises(pydantic.ValidationError, match="duckdb_memory_limit"):
        ScoreConfig(duckdb_memory_limit="plenty")
