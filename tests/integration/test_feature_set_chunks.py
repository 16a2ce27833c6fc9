"""A round's feature set built chunk by chunk of whole schools (`ews features` on DuckDB) is the
round's feature query in one piece: the same file, byte for byte, whatever the chunk size, and the
same manifest. The chunks bound the memory of a national round (8.9M pupils ran out of DuckDB's
6 GB in one query), as does gathering the round-wide past rate one past round at a time; they must
change nothing else."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from features.calendar import parse_round
from features.home import EwsHome
from features.parquet import write_parquet
from features.pointintime.build import build_features, population_source, round_wide_parts
from features.pointintime.pipeline import connect_warehouse, write_feature_set
from tests.conftest import SmallWorld, copy_world

pytestmark = [pytest.mark.integration]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_feature_set_built_in_chunks_is_the_one_query_byte_for_byte(small_world: SmallWorld, tmp_path: Path,
                                                                      prepared_chunks: list[int]) -> None:
    chunks = prepared_chunks
    home = EwsHome(root=copy_world(small_world, tmp_path / "w").home)
    round_id = f"{small_world.summary['first_year'] + 1}-T2-mid"
    r = parse_round(round_id)
    con = connect_warehouse(home)
    try:
        whole = build_features(con, home.calendar, r, population=population_source(con, home.calendar, r))
    finally:
        con.close()
    write_parquet(whole, tmp_path / "whole.parquet")
    assert whole.num_rows > 300
    # the round-wide past rate, which the chunked build gathers one past round at a time, is there to compare
    assert len(round_wide_parts(home.calendar, r)["past"].parts) >= 2 and whole.column("school_past_dropout_rate").null_count < whole.num_rows / 2
    manifests = {}
    for chunk_rows in (10_000_000, whole.num_rows // 7):
        m = write_feature_set(home, round_id, chunk_rows=chunk_rows)
        assert _sha(Path(m.file)) == _sha(tmp_path / "whole.parquet") == m.sha256, f"chunks of {chunk_rows}"
        assert m.rows == whole.num_rows
        assert m.missing_rates["att_rate_term"] == round(whole.column("att_rate_term").null_count / whole.num_rows, 4)
        manifests[chunk_rows] = m.model_dump()
    one, several = manifests.values()
    assert one == several
    assert chunks[0] == 1 and chunks[1] >= 4, chunks
    # nothing of the chunks is left behind: no scratch folder, no temporary file
    assert not list(home.spill_dir.glob(".round-*")) and not list(home.features_dir.glob("*.tmp"))
