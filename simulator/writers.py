"""Streaming writers: delivery folders of CSV files, and the truth's record map.

Each province appends its rows to the delivery files as it is simulated, so memory holds one
province at a time. Files are UTF-8, comma-separated, `\\n` line ends, header = the contract's
columns in contract order. Every data line written is mapped to its true person in
truth/records.parquet (delivery_id, source_file, source_line, person_id, fault_mask).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contract import SOURCES
from simulator.faults import FAULT_BITS
from simulator.schedule import Delivery, Schedule

_WRITE = pacsv.WriteOptions(include_header=False, quoting_style="needed", batch_size=65536)
SOURCE_FILES = tuple(s.file_name for s in SOURCES.values())


def table_csv_bytes(table: pa.Table, delimiter: str = ",") -> bytes:
    buf = io.BytesIO()
    opts = _WRITE if delimiter == "," else pacsv.WriteOptions(include_header=False, quoting_style="needed", delimiter=delimiter)
    pacsv.write_csv(table, buf, opts)
    return buf.getvalue()


class DeliveryWriter:
    """Appends rows to delivery files and keeps the line → person map."""

    def __init__(self, out: Path, schedule: Schedule) -> None:
        self.out = out
        self.schedule = schedule
        self.dir = out / "deliveries"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lines: dict[tuple[int, str], int] = {}  # (delivery index, source) -> last line written
        self.rows_written: dict[str, int] = {}
        self._rec: list[tuple[np.ndarray, ...]] = []
        self._twins: dict[int, list[tuple[pa.Table, np.ndarray, np.ndarray]]] = {}
        self._twin_filled: set[int] = set()
        self._records_writer: pq.ParquetWriter | None = None
        ids = [d.delivery_id for d in schedule.deliveries]
        self._delivery_ids = pa.array(ids, type=pa.string())
        self._source_files = pa.array(list(SOURCE_FILES), type=pa.string())
        self._source_index = {s: i for i, s in enumerate(SOURCES)}
        for d in schedule.deliveries:
            if d.malformed is None:
                folder = self.dir / d.delivery_id
                folder.mkdir(exist_ok=True)
                for s in d.sources:
                    (folder / SOURCES[s].file_name).write_bytes((",".join(SOURCES[s].column_names) + "\n").encode())
                    self.lines[(d.index, s)] = 1

    def write(self, delivery: Delivery | None, source: str, table: pa.Table, person_id: np.ndarray | None,
              mask: np.ndarray | None, school_col: str | None = "school_code") -> None:
        """Append a batch. Rows of a delivery outside the run (None) are dropped, never half-written."""
        if delivery is None or table.num_rows == 0:
            return
        if person_id is not None and delivery.late_days:
            mask = mask | FAULT_BITS["late_delivery"]
        if delivery.twin is not None and delivery.index not in self._twin_filled and person_id is not None:
            # one school's rows (or the first 200 rows) go to the separate malformed delivery
            if school_col and school_col in table.column_names:
                sc = table.column(school_col).to_numpy(zero_copy_only=False)
                sel = sc == sc[0]
            else:
                sel = np.zeros(table.num_rows, dtype=bool)
                sel[: min(200, table.num_rows)] = True
            self._twin_filled.add(delivery.index)
            tw = delivery.twin
            self._twins.setdefault(tw.index, []).append(
                (table.filter(pa.array(sel)), person_id[sel], mask[sel] | FAULT_BITS["malformed_file"]))
            keep = ~sel
            table, person_id, mask = table.filter(pa.array(keep)), person_id[keep], mask[keep]
            if table.num_rows == 0:
                return
        path = self.dir / delivery.delivery_id / SOURCES[source].file_name
        with open(path, "ab") as fh:
            fh.write(table_csv_bytes(table))
        first = self.lines[(delivery.index, source)] + 1
        self.lines[(delivery.index, source)] += table.num_rows
        self.rows_written[source] = self.rows_written.get(source, 0) + table.num_rows
        if person_id is not None:
            self._record(delivery.index, source, first, person_id, mask)

    def _record(self, d_index: int, source: str, first_line: int, person_id: np.ndarray, mask: np.ndarray) -> None:
        n = len(person_id)
        self._rec.append((np.full(n, d_index, np.int32), np.full(n, self._source_index[source], np.int32),
                          np.arange(first_line, first_line + n, dtype=np.int32), person_id.astype(np.int64),
                          mask.astype(np.int32)))

    def flush_records(self) -> None:
        """Write the record map gathered so far (called after each province)."""
        if not self._rec:
            return
        cols = [np.concatenate([r[i] for r in self._rec]) for i in range(5)]
        self._rec = []
        table = pa.table({
            "delivery_id": pa.DictionaryArray.from_arrays(pa.array(cols[0]), self._delivery_ids),
            "source_file": pa.DictionaryArray.from_arrays(pa.array(cols[1]), self._source_files),
            "source_line": pa.array(cols[2]),
            "person_id": pa.array(cols[3]),
            "fault_mask": pa.array(cols[4]),
        })
        if self._records_writer is None:
            (self.out / "truth").mkdir(parents=True, exist_ok=True)
            self._records_writer = pq.ParquetWriter(self.out / "truth" / "records.parquet", table.schema, compression="zstd")
        self._records_writer.write_table(table)

    def finalize(self) -> list[dict]:
        """Write the malformed files and every delivery.json; return the delivery list for the truth."""
        for d in self.schedule.deliveries:
            if d.malformed is None or d.index not in self._twins:
                continue
            src = d.sources[0]
            spec = SOURCES[src]
            parts = self._twins[d.index]
            table = pa.concat_tables([p[0] for p in parts])
            pids = np.concatenate([p[1] for p in parts])
            masks = np.concatenate([p[2] for p in parts])
            cols = list(spec.column_names)
            delim = ","
            if d.malformed == "missing_column":
                drop = cols[len(cols) // 2]
                cols.remove(drop)
                table = table.drop_columns([drop])
            if d.malformed == "semicolon_delimiter":
                delim = ";"
            text = (delim.join(cols) + "\n").encode() + table_csv_bytes(table, delim)
            if d.malformed == "cp874":
                text = text.decode("utf-8").encode("cp874", errors="replace")
            if d.malformed == "truncated_last_line":
                body = text.rstrip(b"\n")
                cut = body.rfind(b"\n")
                last = body[cut + 1:]
                text = body[: cut + 1] + last[: max(1, len(last) // 2)]
            folder = self.dir / d.delivery_id
            folder.mkdir(exist_ok=True)
            (folder / spec.file_name).write_bytes(text)
            self._record(d.index, src, 2, pids, masks)
        self.flush_records()
        if self._records_writer is not None:
            self._records_writer.close()
        listing = []
        for d in self.schedule.deliveries:
            folder = self.dir / d.delivery_id
            if not folder.exists():
                continue
            meta = {"delivery_id": d.delivery_id, "system": d.system, "delivered_on": d.delivered_on.isoformat()}
            (folder / "delivery.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            listing.append({
                **meta, "sources": list(d.sources), "nominal_on": d.nominal_on.isoformat(), "late_days": d.late_days,
                "malformed": d.malformed, "malformed_twin_of": d.twin_of,
                "rows": {s: (self.lines.get((d.index, s), 1) - 1) for s in d.sources} if d.malformed is None
                else {d.sources[0]: int(sum(p[0].num_rows for p in self._twins[d.index]))},
            })
        return listing
