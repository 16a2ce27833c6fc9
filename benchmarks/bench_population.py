"""Benchmark: a round's population - which census it rests on (`population_source`, with the count of
what each missing school's fallback would list) and the population table `prepare_round` keeps - timed,
with the per-school fallback over the pupils it could place at a missing school (the code) and, with
`--compare-whole-history`, over every pupil's history as before session 17; the two results compared.

    .venv/bin/python -m benchmarks.bench_population --home PATH --round R [--memory-limit 3GB]
                                                    [--compare-whole-history]

`--home` is any linked home (`bench_round`'s tiled home: a world whose round has a refused census file
has one missing school per copy). The whole-history variant is the same compiled steps with the
fallback's restriction left out (`latest_evidence_steps(..., placed_at=())`), run second in the same
process. The populations must be equal row for row (EXCEPT ALL both ways). Writes
bench-out/population_<round>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="A linked EWS_HOME.")
    ap.add_argument("--round", dest="round_id", required=True, help="The round whose population is computed.")
    ap.add_argument("--memory-limit", default="3GB",
                    help="DuckDB memory limit (default: ScoreConfig.prepare_memory_limit's default).")
    ap.add_argument("--compare-whole-history", action="store_true",
                    help="Also run the fallback over every pupil's history (as before session 17) and compare.")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    return ap


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    import features.pointintime.compile as compile_
    from features.calendar import parse_round
    from features.home import EwsHome
    from features.pointintime.build import ROUND_POPULATION_COLUMNS, population_source, round_context
    from features.pointintime.pipeline import connect_warehouse

    home, r = EwsHome(root=a.home), parse_round(a.round_id)
    restricted = compile_.latest_evidence_steps

    def whole_history(ctx: Any, ev: Any, columns: tuple[str, ...], name: str = "pop",
                      placed_at: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return restricted(ctx, ev, columns, name)

    variants = {"placed": restricted, **({"whole_history": whole_history} if a.compare_whole_history else {})}
    out: dict[str, Any] = {"benchmark": "population", "round": a.round_id, "home": str(a.home),
                           "memory_limit": a.memory_limit, "variants": {}}
    con = connect_warehouse(home)
    try:
        con.execute(f"SET memory_limit = '{a.memory_limit}'")
        ctx = round_context(home.calendar, r)
        census = home.calendar.census_date(r.academic_year, r.term)
        for label, steps_fn in variants.items():
            compile_.latest_evidence_steps = steps_fn  # school_fallback_steps looks it up at call time
            try:
                t0 = time.perf_counter()
                source = population_source(con, home.calendar, r)
                t1 = time.perf_counter()
                evidence = source.evidence(r)
                con.execute(f"CREATE OR REPLACE TEMP TABLE pop_{label} AS " + compile_.with_sql(
                    compile_.population_steps(ctx, census, ROUND_POPULATION_COLUMNS, evidence), "SELECT * FROM pop"))
                t2 = time.perf_counter()
            finally:
                compile_.latest_evidence_steps = restricted
            out["variants"][label] = {
                "source_seconds": round(t1 - t0, 1), "population_seconds": round(t2 - t1, 1),
                "missing_schools": len(source.school_fallbacks), "census_late": source.census_late,
                "pupils": int(con.execute(f"SELECT count(*) FROM pop_{label}").fetchone()[0]),
            }
            print(json.dumps({label: out["variants"][label]}), flush=True)
        if a.compare_whole_history:
            out["rows_differing"] = int(con.execute(
                "SELECT (SELECT count(*) FROM (SELECT * FROM pop_placed EXCEPT ALL SELECT * FROM pop_whole_history))"
                " + (SELECT count(*) FROM (SELECT * FROM pop_whole_history EXCEPT ALL SELECT * FROM pop_placed))"
            ).fetchone()[0])
    finally:
        con.close()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"population_{a.round_id}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
