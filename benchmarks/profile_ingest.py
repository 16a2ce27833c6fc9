"""Where ingestion spends its time: every SQL statement of an ingest timed (wall and CPU seconds).

    EWS_PSEUDONYM_KEY_FILE=KEY python -m benchmarks.profile_ingest DELIVERIES NEW_HOME [--top 30]

Runs `features.ingest.pipeline.ingest_path` as `ews ingest` does, with the staging connection
wrapped so that each statement's wall and CPU time (the process's, all threads) is added to its
kind (the SQL text with the per-file table numbers taken out); a COMMIT is named after the
statement before it (vault or warehouse). `--no-read-ahead` runs the pre-pass in the main thread
and times it as "PREPASS", so that no statement's CPU includes the helper thread's.
Prints the totals (rows, wall, CPU, load average) and the statement kinds by CPU seconds.
Outside CI; the numbers behind docs/ARCHITECTURE.md's "Ingest throughput".
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import time
from pathlib import Path
from typing import Any


class _Timed:
    """A DuckDB connection whose `execute` adds its time to `totals` (everything else passes through)."""

    def __init__(self, con: Any, totals: dict[str, list[float]]) -> None:
        self._con, self._totals, self._prev = con, totals, ""

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = self._con.execute(sql, *args, **kwargs)
        key = re.sub(r"stg\.(\w+?)_\d+", r"stg.\1", re.sub(r"\s+", " ", sql))[:100]
        if key == "COMMIT":
            key = "COMMIT after " + self._prev[:60]
        self._prev = key
        entry = self._totals[key]
        entry[0] += time.perf_counter() - wall
        entry[1] += time.process_time() - cpu
        entry[2] += 1
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("deliveries", type=Path)
    ap.add_argument("home", type=Path, help="A new home (keep it to compare with benchmarks.ingest_compare).")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--no-read-ahead", action="store_true")
    args = ap.parse_args(argv)
    import features.ingest.pipeline as pipeline
    from features.home import EwsHome

    if args.home.exists():
        raise SystemExit(f"{args.home} exists: give a new home")
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    session = pipeline.duckdb_session
    pipeline.duckdb_session = lambda *a, **k: _Timed(session(*a, **k), totals)  # type: ignore[assignment]
    if args.no_read_ahead:
        read = pipeline._read_delivery
        pipeline._Session._read_ahead = lambda self, d: None  # type: ignore[method-assign]

        def timed_read(*a: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            out = read(*a)
            entry = totals["PREPASS (Python, numpy)"]
            entry[0] += time.perf_counter() - wall
            entry[1] += time.process_time() - cpu
            entry[2] += 1
            return out

        pipeline._read_delivery = timed_read  # type: ignore[assignment]
    home = EwsHome.from_env(args.home)
    load = os.getloadavg()
    wall, cpu = time.perf_counter(), time.process_time()
    report = pipeline.ingest_path(args.deliveries, home)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = report.totals().received
    print(f"{rows:,} rows, {wall:.1f} s wall ({rows / wall:,.0f} rows/s), {cpu:.1f} CPU s "
          f"({rows / cpu:,.0f} rows per CPU second), load average {load[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'wall s':>8} {'CPU s':>8} {'calls':>6}  statement")
    for key, (w, c, n) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{w:8.2f} {c:8.2f} {int(n):6d}  {key}")


if __name__ == "__main__":
    main()
