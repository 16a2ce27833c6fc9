"""Benchmark: one scoring round of a million pupils in bounded memory - feature SQL -> scores -> SHAP
-> reasons -> snapshot - timed and its peak memory measured per stage, at two chunk sizes.

    .venv/bin/python -m benchmarks.bench_round --home PATH --round R [--pupils 1000000]
                                               [--chunk-rows 200000 --chunk-rows 1000000]

`--home` is a home with a champion and a linked warehouse (`make bench` passes its own); with
`--model-home M` the champion is M's instead (a national world simulated for one year has no labelled
past to train on, so its round is scored with a model trained on another world of the same catalogue).
`--measure OUT` scores `--home`'s round once as it is, without tiling (the national world itself),
and writes the measurement to OUT; the round is scored into `--home`'s rounds/ and not published. Simulating
and ingesting a million-pupil world takes about half an hour on the project's 2-core machine, so the
million-pupil warehouse is built by TILING the home's: every person-bearing table (src_* but the
area registry, token_keys, record_keys) is repeated k times with new keys in copy i > 0 - id token,
student key, school code and case id get the suffix `~i`, `sid` moves up by i x (largest sid + 1),
source_line by i x 10^9 - so the feature SQL really runs over k x the round's pupils in k x the
schools, each copy a faithful replay of the base world. k is the smallest count reaching --pupils.
The tiled home is kept in --work and reused while its tile count is the same.

Each chunk size is scored in its own process (`serving.scoring.score_round`, not published) so its
peak RSS is its own: a sampler thread reads the RSS every 20 ms and charges it to the stage the
round's `StageClock` is in (prepare, features, scores, shap, reasons, snapshot); the process peak is
`ru_maxrss`. CPU seconds per stage are sampled the same way: on a shared machine they say what the
wall time would be on an idle one (2 cores: wall >= CPU / 2). `prepare` reads the round once
(`features.pointintime.build.prepare_round`: population, school rates, every source's known rows
into Parquet partitioned by chunk); `features` is the chunks' queries over their own partitions.
The projection to 8M pupils scales each stage's time linearly in pupils from the measured run (one
pass over the sources, then the same work per chunk for 8x as many chunks), and states which memory
grows with the round: 17 bytes a pupil (score, scored flag, group) plus the population's count by
school; DuckDB works within `--memory-limit` (ScoreConfig.duckdb_memory_limit) and spills beyond it,
and the prepared known rows are on disk, so every other peak is set by the chunk and that limit.
Writes bench-out/round_<pupils>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TILED_TABLE_PREFIX = "src_"
UNTILED_SOURCES = {"src_areas"}  # the area registry: keyed by tambon, shared by every copy
KEY_TABLES = ("token_keys", "record_keys")
SUFFIXED = ("id_token", "student_key", "school_code", "case_id")
LINE_OFFSET = 1_000_000_000
PROJECT_TO = 8_000_000
ROUND_STAGES = ("prepare", "features", "scores", "shap", "reasons", "snapshot")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME with a champion and a linked warehouse.")
    ap.add_argument("--round", dest="round_id", help="The round to score (its census must be in the warehouse).")
    ap.add_argument("--pupils", type=int, default=1_000_000, help="Pupils in the tiled round (at least).")
    ap.add_argument("--chunk-rows", type=int, action="append", dest="chunk_rows",
                    help="Chunk size to measure (repeat); default 200000 and 1000000.")
    ap.add_argument("--memory-limit", default=None,
                    help="ScoreConfig.duckdb_memory_limit of the scoring session (default: ScoreConfig's).")
    ap.add_argument("--prepare-memory-limit", default=None,
                    help="ScoreConfig.prepare_memory_limit: DuckDB's limit while the round is prepared "
                         "(default: ScoreConfig's).")
    ap.add_argument("--work", type=Path, default=None, help="Where the tiled home lives (default bench-out/work/round_<pupils>).")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    ap.add_argument("--model-home", type=Path, default=None,
                    help="Score with this home's champion instead of --home's (same feature catalogue).")
    ap.add_argument("--measure", type=Path, default=None,
                    help="Score --home's round once as it is (no tiling) and write the measurement here.")
    return ap


# --- the tiled home ---------------------------------------------------------------------------

def round_pupils(home: Path, round_id: str) -> int:
    """Pupils of the round in a home (the compiled population the features read)."""
    from features.calendar import parse_round
    from features.home import EwsHome
    from features.pointintime.build import population_source, round_context
    from features.pointintime.compile import population_steps, with_sql
    from features.pointintime.pipeline import connect_warehouse

    h = EwsHome(root=home)
    r = parse_round(round_id)
    con = connect_warehouse(h)
    try:
        evidence = population_source(con, h.calendar, r).evidence(r)
        census = h.calendar.census_date(r.academic_year, r.term)
        sql = with_sql(population_steps(round_context(h.calendar, r), census, ("sid",), evidence), "SELECT count(*) FROM pop")
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def _tiled_select(con: Any, table: str, tiles: int, max_sid: int) -> str:
    cols = [c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = 'base' AND table_name = ? ORDER BY column_index",
        [table]).fetchall()]
    out = []
    for c in cols:
        q = f'"{c}"'
        if c in SUFFIXED:
            out.append(f"CASE WHEN i = 0 OR {q} IS NULL THEN {q} ELSE {q} || '~' || i END AS {q}")
        elif c == "sid":
            out.append(f"{q} + i * {max_sid + 1} AS {q}")
        elif c == "source_line":
            out.append(f"{q} + i * {LINE_OFFSET} AS {q}")
        else:
            out.append(q)
    return f"SELECT {', '.join(out)} FROM base.{table}, range({tiles}) AS tile(i)"


def tile_home(base: Path, dest: Path, tiles: int) -> None:
    """`dest`: a copy of `base`'s registry and settings with its warehouse tiled `tiles` times."""
    import duckdb

    from features.linkage.link import create_linked_views

    if dest.exists():
        shutil.rmtree(dest)
    skip = {"warehouse.duckdb", "warehouse.duckdb.wal", "vault", "rounds", "features", "trainsets", "quarantine", "spill"}
    shutil.copytree(base, dest, ignore=lambda d, names: [n for n in names if Path(d) == base and n in skip])
    con = duckdb.connect()
    try:
        con.execute("SET preserve_insertion_order = false")
        # DuckDB's default (80% of the machine) took 20.5 GB tiling 387 times, leaving nothing for
        # anything else running: the copies stream, so a fixed limit costs little time
        con.execute("SET memory_limit = '10GB'")
        con.execute(f"ATTACH '{base / 'warehouse.duckdb'}' AS base (READ_ONLY)")
        con.execute(f"ATTACH '{dest / 'warehouse.duckdb'}' AS wh")
        tables = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'base' "
                                            "ORDER BY table_name").fetchall()]
        max_sid = int(con.execute("SELECT max(sid) FROM base.token_keys").fetchone()[0] or 0)
        max_sid = max(max_sid, int(con.execute("SELECT coalesce(max(sid), 0) FROM base.record_keys").fetchone()[0]))
        for t in tables:
            tiled = t in KEY_TABLES or (t.startswith(TILED_TABLE_PREFIX) and t not in UNTILED_SOURCES)
            sql = _tiled_select(con, t, tiles, max_sid) if tiled else f"SELECT * FROM base.{t}"
            con.execute(f"CREATE TABLE wh.{t} AS {sql}")
        con.execute("USE wh")
        create_linked_views(con)
    finally:
        con.close()
    (dest / ".tiles").write_text(f"{tiles}\n")


# --- one measured scoring ---------------------------------------------------------------------

def measure(home: Path, round_id: str, chunk_rows: int, out: Path, memory_limit: str | None = None,
            prepare_memory_limit: str | None = None,
            model_home: Path | None = None) -> None:
    """Score the round once (not published) and write seconds and peak RSS per stage to `out`
    (`model_home`: the champion of that home instead of `home`'s)."""
    import psutil

    from features.calendar import parse_round
    from features.home import EwsHome
    from serving.scoring import ScoreConfig, StageClock, score_round
    from training.registry import load_model

    h = EwsHome(root=home)
    loaded = load_model(EwsHome(root=model_home) if model_home else h)
    clock = StageClock()
    peaks: dict[str, int] = {}
    cpu: dict[str, float] = {}  # CPU seconds of the process per stage: the shared machine's load inflates wall time
    proc, done = psutil.Process(), threading.Event()

    def sample() -> None:
        last = sum(proc.cpu_times()[:2])
        while not done.is_set():
            rss, stage, now = proc.memory_info().rss, clock.current or "other", sum(proc.cpu_times()[:2])
            # a part of a stage ("prepare.population") is charged to it and to its stage
            for name in dict.fromkeys((stage, stage.split(".")[0])):
                peaks[name] = max(peaks.get(name, 0), rss)
                cpu[name] = cpu.get(name, 0.0) + now - last
            last = now
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    rss_before = proc.memory_info().rss
    sampler.start()
    t0 = time.perf_counter()
    cfg = ScoreConfig(chunk_rows=chunk_rows, **({"duckdb_memory_limit": memory_limit} if memory_limit else {}),
                      **({"prepare_memory_limit": prepare_memory_limit} if prepare_memory_limit else {}))
    summary = score_round(h, parse_round(round_id), loaded, cfg, do_publish=False, clock=clock)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    out.write_text(json.dumps({
        "chunk_rows": chunk_rows, "duckdb_memory_limit": cfg.duckdb_memory_limit,
        "prepare_memory_limit": cfg.prepare_memory_limit or cfg.duckdb_memory_limit, "chunks": summary.chunks, "pupils": summary.students, "scored": summary.scored,
        "seconds_total": round(wall, 1),
        "stages": {s: {"seconds": round(clock.seconds.get(s, 0.0), 1), "cpu_seconds": round(cpu.get(s, 0.0), 1),
                       "peak_rss_mb": round(peaks.get(s, 0) / 2**20)} for s in ROUND_STAGES},
        # where prepare goes at national size: the population, the round-wide steps, the known rows' copies
        "prepare_parts": {s.split(".", 1)[1]: {"seconds": round(v, 1), "cpu_seconds": round(cpu.get(s, 0.0), 1),
                                               "peak_rss_mb": round(peaks.get(s, 0) / 2**20)}
                          for s, v in clock.seconds.items() if s.startswith("prepare.")},
        "cpu_seconds_total": round(sum(v for k, v in cpu.items() if "." not in k), 1), "load_average_1min_at_end": os.getloadavg()[0],
        "rss_after_loading_model_mb": round(rss_before / 2**20),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "snapshot_mb": round(sum(p.stat().st_size for p in Path(summary.folder).iterdir()) / 2**20, 1),
    }, indent=2) + "\n")


def projection(run: dict[str, Any], pupils: int) -> dict[str, Any]:
    """8M from a measured run: each stage's time x (8M / pupils); memory: the chunk's peak, plus
    what the round holds for every pupil until the groups are cut."""
    factor = PROJECT_TO / pupils
    per_round_mb = 17 * (PROJECT_TO - pupils) / 2**20
    return {
        "pupils": PROJECT_TO, "chunk_rows": run["chunk_rows"], "chunks": math.ceil(run["chunks"] * factor),
        "minutes": round(run["seconds_total"] * factor / 60, 1),
        "cpu_minutes": round(run["cpu_seconds_total"] * factor / 60, 1),
        "peak_rss_mb": round(run["peak_rss_mb"] + per_round_mb),
        "stage_minutes": {s: round(v["seconds"] * factor / 60, 1) for s, v in run["stages"].items()},
        "assumes": "time linear in pupils (one pass over the sources, same work per chunk, chunks x8); memory = "
                   "measured peak + 17 B/pupil held for the round (score, flag, group); DuckDB stays within its "
                   "memory limit (spilling beyond it) and the prepared known rows are on disk",
    }


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    a.chunk_rows = a.chunk_rows or [200_000, 1_000_000]
    a.work = a.work or a.out_dir / "work" / f"round_{a.pupils}"
    if a.plan:
        print(json.dumps({"benchmark": "round", **vars(a)}, default=str))
        return
    if a.home is None or a.round_id is None:
        ap.error("--home and --round are required (`make bench` builds a home and passes them)")
    if a.measure is not None:
        measure(a.home.resolve(), a.round_id, a.chunk_rows[0], a.measure, a.memory_limit, a.prepare_memory_limit,
                a.model_home.resolve() if a.model_home else None)
        return
    base = round_pupils(a.home.resolve(), a.round_id)
    if not base:
        raise SystemExit(f"round {a.round_id} has no pupils in {a.home}")
    tiles = math.ceil(a.pupils / base)
    tiled = (a.work / "home").resolve()
    t0 = time.perf_counter()
    marker = tiled / ".tiles"
    if not (marker.exists() and marker.read_text().strip() == str(tiles)):
        print(f"tiling {a.home}'s warehouse {tiles} times ({base:,} pupils in {a.round_id}) into {tiled}", flush=True)
        tile_home(a.home.resolve(), tiled, tiles)
    tile_seconds = time.perf_counter() - t0
    runs = []
    for n in a.chunk_rows:
        out = a.work / f"measure_{n}.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_round", "--home", str(tiled), "--round", a.round_id,
               "--chunk-rows", str(n), "--measure", str(out),
               *(["--memory-limit", a.memory_limit] if a.memory_limit else []),
               *(["--prepare-memory-limit", a.prepare_memory_limit] if a.prepare_memory_limit else []),
               *(["--model-home", str(a.model_home.resolve())] if a.model_home else [])]
        print("== " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
        runs.append(json.loads(out.read_text()))
        print(json.dumps(runs[-1]), flush=True)
        for d in (tiled / "rounds" / a.round_id).iterdir():  # the next size scores the round afresh
            shutil.rmtree(d) if d.is_dir() else d.unlink()
    result = {
        "benchmark": "round", "round": a.round_id, "base_home": str(a.home), "base_pupils": base, "tiles": tiles,
        "pupils": runs[0]["pupils"], "tiling_seconds": round(tile_seconds, 1), "runs": runs,
        "projection_8M": [projection(r, r["pupils"]) for r in runs],
        "targets": {"minutes_at_1M": 3, "peak_gb_at_1M": 4, "minutes_at_8M": 25},
        "command": " ".join([".venv/bin/python", "-m", "benchmarks.bench_round", *(argv if argv is not None else sys.argv[1:])]),
    }
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / f"round_{a.pupils}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
