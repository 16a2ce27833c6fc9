"""The truth folder: what really happened, written beside the deliveries and never read by the pipeline.

Parquet files are appended province by province (one row group each), so memory stays bounded
by the largest province. Column meanings are documented in PROCESS.md.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class TruthWriter:
    """One ParquetWriter per truth table, opened on first use."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "truth"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._writers: dict[str, pq.ParquetWriter] = {}

    def append(self, name: str, table: pa.Table) -> None:
        w = self._writers.get(name)
        if w is None:
            w = pq.ParquetWriter(self.dir / f"{name}.parquet", table.schema, compression="zstd")
            self._writers[name] = w
        w.write_table(table.cast(w.schema) if table.schema != w.schema else table)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers = {}
