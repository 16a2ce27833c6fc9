"""Parquet files whose bytes depend on their content only.

A file's sha256 is how a feature set, a training set and a published snapshot are identified and
replayed. pyarrow cuts data pages at the boundaries of the table's chunks, and DuckDB hands back a
query result in chunks whose sizes depend on how its threads were scheduled: the same rows could
be written as different bytes. Writing fixed-size, contiguous row groups removes that freedom.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 131_072  # rows per row group; each is made contiguous (a copy of this many rows at most)


def write_parquet(table: pa.Table, path: Path, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write `table` (zstd, dictionaries, statistics) so that equal tables give equal bytes."""
    with pq.ParquetWriter(path, table.schema, compression="zstd", use_dictionary=True, write_statistics=True) as w:
        if table.num_rows == 0:
            w.write_table(table)
        for offset in range(0, table.num_rows, row_group_rows):
            w.write_table(table.slice(offset, row_group_rows).combine_chunks(), row_group_size=row_group_rows)
