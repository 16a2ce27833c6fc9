"""Benchmark: a round's round-wide `past` step (every school's past dropout rate, from the labels of
the past early rounds of the whole country) alone, gathered in parts as `prepare_round` does and in
the one query the step compiles to, each at its own DuckDB memory limit; the two results compared.

    .venv/bin/python -m benchmarks.bench_past --home PATH --round R [--parts-limit 1500MB] [--query-limit 3GB]

`--home` is any linked home (a national one, or `bench_round`'s tiled home). In parts: each past
round's labelled pupils inserted into a table that spills, then the step over it (the step of
`features.pointintime.build.round_wide_parts`, run by `PartedStep.run` as `prepare_round` runs it);
in one query: `round_wide_sql(...)["past"]`. A query that runs out of memory is reported as such,
with its time. Peak RSS is the process's
(`ru_maxrss`) after each, so the one query runs second: its peak includes the first. The results
must be equal row for row (EXCEPT ALL both ways, doubles compared exactly). Writes
bench-out/past_<round>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="A linked EWS_HOME.")
    ap.add_argument("--round", dest="round_id", required=True, help="The round whose past step is computed.")
    ap.add_argument("--parts-limit", default="1500MB", help="DuckDB memory limit for the step in parts "
                                                            "(default: ScoreConfig's scoring limit).")
    ap.add_argument("--query-limit", default="3GB", help="DuckDB memory limit for the step in one query.")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    return ap


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measure(home: Path, round_id: str, parts_limit: str, query_limit: str) -> dict[str, Any]:
    from features.calendar import parse_round
    from features.home import EwsHome
    from features.pointintime.build import round_wide_parts, round_wide_sql
    from features.pointintime.pipeline import connect_warehouse

    h, r = EwsHome(root=home), parse_round(round_id)
    con = connect_warehouse(h)
    try:
        con.execute("SET temp_directory = '" + str(h.spill_dir).replace("'", "''") + "'")
        past = round_wide_parts(h.calendar, r)["past"]
        out: dict[str, Any] = {"past_rounds": len(past.parts)}
        con.execute(f"SET memory_limit = '{parts_limit}'")
        t = time.perf_counter()
        past.run(con, "past_rows", "in_parts")  # what prepare_round runs
        out["in_parts"] = {"memory_limit": parts_limit, "seconds": round(time.perf_counter() - t, 1),
                           "peak_rss_mb": _peak_mb()}
        con.execute(f"SET memory_limit = '{query_limit}'")
        t = time.perf_counter()
        try:
            con.execute(f"CREATE TEMP TABLE one_query AS {round_wide_sql(h.calendar, r)['past']}")
        except Exception as e:  # duckdb.OutOfMemoryException: the figure this benchmark exists for
            out["one_query"] = {"memory_limit": query_limit, "seconds": round(time.perf_counter() - t, 1),
                                "failed": str(e).splitlines()[0][:200], "peak_rss_mb": _peak_mb()}
            return out
        out["one_query"] = {"memory_limit": query_limit, "seconds": round(time.perf_counter() - t, 1),
                            "peak_rss_mb": _peak_mb()}
        schools, rated = con.execute("SELECT count(*), count(school_past_dropout_rate) FROM in_parts").fetchone()
        differ = [con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0]
                  for a, b in (("in_parts", "one_query"), ("one_query", "in_parts"))]
        out["schools"], out["schools_rated"], out["rows_that_differ"] = schools, rated, sum(differ)
        return out
    finally:
        con.close()


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    result = {"benchmark": "past", "round": a.round_id, "home": str(a.home), "load_average_at_start": os.getloadavg()[0],
              **measure(a.home, a.round_id, a.parts_limit, a.query_limit), "load_average_at_end": os.getloadavg()[0]}
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"past_{a.round_id}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
