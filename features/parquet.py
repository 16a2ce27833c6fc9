"""Parquet files whose bytes depend on their content only.

A file's sha256 is how a feature set, a training set and a published snapshot are identified and
replayed. pyarrow cuts data pages at the boundaries of the table's chunks, and DuckDB hands back a
query result in chunks whose sizes depend on how its threads were scheduled: the same rows could
be written as different bytes. Writing fixed-size, contiguous row groups removes that freedom.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 131_072  # rows per row group; each is made contiguous (a copy of this many rows at most)


def write_parquet(table: pa.Table, path: Path, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write `table` (zstd, dictionaries, statistics) so that equal tables give equal bytes."""
    write_parquet_batches(table.schema, table.to_batches(), path, row_group_rows)


def write_parquet_batches(schema: pa.Schema, batches: Iterable[pa.RecordBatch], path: Path,
                          row_group_rows: int = ROW_GROUP_ROWS) -> int:
    """`write_parquet` of the table the batches make, holding one row group at a time (a national
    feature set is gigabytes): the same row groups, so the same bytes. Returns the rows written."""
    rows, pending, held = 0, [], 0
    with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=True, write_statistics=True) as w:
        def flush(n: int) -> None:
            nonlocal pending, held
            buffered = pa.Table.from_batches(pending, schema)
            w.write_table(buffered.slice(0, n).combine_chunks(), row_group_size=row_group_rows)
            rest = buffered.slice(n)
            pending, held = rest.to_batches(), rest.num_rows

        for batch in batches:
            if batch.num_rows == 0:
                continue
            pending.append(batch)
            held += batch.num_rows
            rows += batch.num_rows
            while held >= row_group_rows:
                flush(row_group_rows)
        if held:
            flush(held)
        if rows == 0:
            w.write_table(schema.empty_table())
    return rows
