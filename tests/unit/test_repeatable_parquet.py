"""Equal tables give byte-equal Parquet files, however the rows were chunked in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from features.parquet import write_parquet

N = 200_000  # large enough for pages to fill: small tables happen to write the same bytes either way


def _table(n: int) -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table({
        "student_key": [f"S{i:020x}" for i in range(n)],
        "att_rate": pa.array([None if m else v for m, v in zip(rng.uniform(size=n) < 0.1, rng.uniform(size=n))],
                             type=pa.float64()),
        "grade": pa.array(rng.choice(["P1", "P6", "M3"], size=n)),
    })


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rechunked(t: pa.Table, rows: int) -> pa.Table:
    return pa.Table.from_batches(t.combine_chunks().to_batches(max_chunksize=rows))


def test_the_same_rows_in_different_chunks_give_the_same_bytes(tmp_path: Path) -> None:
    t = _table(N)
    a, b, c = _rechunked(t, N), _rechunked(t, 777), _rechunked(t, 2048)
    assert a.column(0).num_chunks == 1 and b.column(0).num_chunks > 200
    for name, x in (("a", a), ("b", b), ("c", c)):
        write_parquet(x, tmp_path / f"{name}.parquet", row_group_rows=65_536)
    assert _sha(tmp_path / "a.parquet") == _sha(tmp_path / "b.parquet") == _sha(tmp_path / "c.parquet")
    back = pq.read_table(tmp_path / "b.parquet")
    assert back.equals(t) and pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups == 4


def test_plain_pyarrow_writes_differ_with_chunking_which_is_why_this_exists(tmp_path: Path) -> None:
    t = _table(N)
    pq.write_table(_rechunked(t, N), tmp_path / "a.parquet", compression="zstd")
    pq.write_table(_rechunked(t, 777), tmp_path / "b.parquet", compression="zstd")
    assert _sha(tmp_path / "a.parquet") != _sha(tmp_path / "b.parquet")


def test_an_empty_table_is_written_with_its_schema(tmp_path: Path) -> None:
    t = _table(10).slice(0, 0)
    write_parquet(t, tmp_path / "e.parquet")
    back = pq.read_table(tmp_path / "e.parquet")
    assert back.num_rows == 0 and back.schema.names == t.schema.names


def test_rows_streamed_in_batches_give_the_bytes_of_the_whole_table(tmp_path: Path) -> None:
    # a national feature set is written from a stream of batches, one row group held at a time
    from features.parquet import write_parquet_batches

    t = _table(N)
    write_parquet(t, tmp_path / "whole.parquet", row_group_rows=65_536)
    for rows in (777, 65_536, 100_000):
        written = write_parquet_batches(t.schema, iter(_rechunked(t, rows).to_batches()),
                                        tmp_path / f"s{rows}.parquet", row_group_rows=65_536)
        assert written == N and _sha(tmp_path / f"s{rows}.parquet") == _sha(tmp_path / "whole.parquet")
    assert write_parquet_batches(t.schema, iter([]), tmp_path / "none.parquet") == 0
    assert pq.read_table(tmp_path / "none.parquet").schema.names == t.schema.names
