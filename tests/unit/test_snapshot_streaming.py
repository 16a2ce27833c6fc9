"""The snapshot's streaming writer: a round appended chunk by chunk is the same file as the round
written at once, and a failure while writing leaves no snapshot folder behind."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features.calendar import parse_round
from features.home import EwsHome
from features.parquet import write_parquet
from features.pointintime.pipeline import file_sha256
from serving.snapshot import PendingSnapshot, StudentsWriter


def _table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"student_key": [f"k{i:07d}" for i in range(rows)], "risk_score": rng.random(rows),
                     "reasons_en": [None if i % 7 == 0 else f"reason {i % 13}" for i in range(rows)]})


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_a_table_streamed_in_uneven_chunks_has_the_bytes_of_the_table_written_at_once(tmp_path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    whole = _table(1_000 + int(rng.integers(0, 500)), seed)
    write_parquet(whole, tmp_path / "once.parquet", row_group_rows=128)
    cuts = np.sort(rng.choice(np.arange(1, whole.num_rows), size=9, replace=False))
    writer = StudentsWriter(tmp_path / "streamed.parquet", whole.schema, row_group_rows=128)
    for lo, hi in zip([0, *cuts], [*cuts, whole.num_rows]):
        writer.write(whole.slice(lo, hi - lo))
    writer.close()
    assert writer.rows == whole.num_rows
    assert file_sha256(tmp_path / "streamed.parquet") == file_sha256(tmp_path / "once.parquet")


def test_an_empty_stream_writes_the_file_an_empty_table_gives(tmp_path) -> None:
    empty = _table(0, 1)
    write_parquet(empty, tmp_path / "once.parquet")
    StudentsWriter(tmp_path / "streamed.parquet", empty.schema).close()
    assert file_sha256(tmp_path / "streamed.parquet") == file_sha256(tmp_path / "once.parquet")


def test_a_failure_while_a_snapshot_is_written_leaves_no_folder_under_the_round(tmp_path) -> None:
    home = EwsHome(root=tmp_path)
    r = parse_round("2566-T1-early")
    with pytest.raises(RuntimeError, match="killed"), PendingSnapshot(home, r) as pending:
        writer = StudentsWriter(pending.students_path, _table(10, 1).schema)
        writer.write(_table(10, 1))
        (pending.scratch("parts") / "0.arrow").write_bytes(b"part")
        raise RuntimeError("killed half way")
    assert list((home.rounds_dir / r.round_id).iterdir()) == []
