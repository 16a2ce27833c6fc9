"""`benchmarks.bench_ingest --first N` measures the first N deliveries of a folder and nothing else.

The ingest figures of issue 14 are quoted on "the first 20 deliveries of the 1M world"; the flag
makes that command reproducible without hand-made folders of links."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_ingest
from simulator.samples import registry_rows, write_delivery


def test_first_n_ingests_only_the_first_n_delivery_folders_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "deliveries"
    reg = registry_rows()
    write_delivery(folder / "2020-01-01_a", "first-a", reg, delivered_on="2020-01-01")
    write_delivery(folder / "2020-02-01_b", "first-b", reg, delivered_on="2020-02-01")
    registry_total = sum(len(rows) for rows in reg.values())
    out = tmp_path / "out"
    bench_ingest.main(["--folder", str(folder), "--first", "1", "--out-dir", str(out)])
    result = json.loads((out / "ingest-deliveries-first1.json").read_text())
    assert result["rows_received"] == registry_total
    # Both deliveries together hold twice as many rows: the second was left out, not merged in.
    bench_ingest.main(["--folder", str(folder), "--out-dir", str(out)])
    assert json.loads((out / "ingest-deliveries.json").read_text())["rows_received"] == 2 * registry_total
