"""DuckDB vs Spark local mode on one round: linkage, the compiled features and labels, time and
peak memory per stage.

    python -m benchmarks.bench_engines --home DIR [--students N] [--round R] [--master local[2]]
        [--conf KEY=VALUE ...] [--stages link,features] [--engines duckdb,spark] [--keep-published-keys]
        [--out-dir bench-out]

DIR is an ingested and linked home (bench_pipeline's work folder has one: <work>/home). Each engine
runs in its own process (`--child`), so its peak memory is its own: the resident memory of the
process tree (Python, and for Spark the JVM it starts) sampled every 0.1 s; the child reports when
each stage began and ended, so the peak is given per stage too. Stages: `session_start` (Spark's
JVM, timed apart), `link` (`features.linkage.link.link`: on Spark, Splink's model is fitted and
applied on SparkAPI; records, components and keys stay on DuckDB), `features` and `labels` (the
Parquet export of the warehouse relations is part of Spark's features time: a cluster reading the
same Parquet would skip it). DuckDB's features are what `ews features` runs (`write_feature_set`:
chunks of whole schools, written to the home's features/ folder); Spark's are the engine's one
query.

The link stage RE-DECIDES every link (as `ews link --relink`), so each engine's keys are its own
decisions: the benchmark REWRITES the home's keys (the DuckDB child first, then Spark's; both runs
are deterministic, so the home ends with Spark's keys). `--keep-published-keys` links as a routine
`ews link` does instead (published keys kept: equal keys by construction, the same work).
Both engines' outputs are compared by sha256 (`equal_outputs`: keys, features, labels). Keys may
differ on worlds with more than ~1,400 named identities: Splink samples u by hashes that differ
between engines (features/linkage/splink_spark.py); then features and labels differ by those keys
(they were equal at 20k and 100k).

Results: bench-out/engines_<students>.json (`make bench` runs it on each size's pipeline home), with
`spark_over_duckdb_link_plus_features`: the issue's figure, Spark local mode within 3x of DuckDB at 1M
for link + features (the Spark time excludes the session start, given apart). At 1M (the lead's
run; deliveries in /work/bench1m/sim, see docs/ARCHITECTURE.md "Engines"):

    ews ingest /work/bench1m/sim/deliveries --home H && ews link --home H
    python -m benchmarks.bench_engines --home H --students 1000000 \
        --conf spark.driver.memory=12g --out-dir /work/bench1m
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _tree(pid: int) -> tuple[float, dict[int, float]]:
    """Resident memory of a process and all its descendants (MB), and each one's CPU seconds so far
    (user + system), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(p.name))
            rss[int(p.name)] = int(fields[21]) * 4096
            cpu[int(p.name)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    total, todo, seen = 0, [pid], {}
    while todo:
        q = todo.pop()
        total += rss.get(q, 0)
        seen[q] = cpu.get(q, 0.0)
        todo.extend(children.get(q, []))
    return total / 2**20, seen


def _digest(table: object) -> str:
    import pyarrow as pa

    from features.parquet import write_parquet

    assert isinstance(table, pa.Table)
    path = Path(f"/tmp/ews-bench-engines-{time.time_ns()}.parquet")
    try:
        write_parquet(table, path)
        return hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        path.unlink(missing_ok=True)


STAGES = ("link", "features")
ENGINES = ("duckdb", "spark")


def child(engine: str, home_dir: Path, round_id: str, master: str, conf: dict[str, str] | None = None,
          stages: tuple[str, ...] = STAGES, keep_published_keys: bool = False,
          exchange_dir: Path | None = None) -> dict[str, object]:
    """One engine's run in this process: linkage, then features and labels of the round, timed.
    `stage_marks` gives each stage's start and end (epoch seconds) for the parent's per-stage peak."""
    from features.calendar import parse_round
    from features.deployment import EngineSettings, SparkSettings
    from features.home import EwsHome
    from features.pointintime.build import population_source
    from features.pointintime.labels import labels_sql
    from features.pointintime.pipeline import connect_warehouse, latest_delivery, write_feature_set

    home = EwsHome.from_env(home_dir)
    home = home.model_copy(update={"engine": EngineSettings(kind=engine, spark=SparkSettings(
        master=master, conf=conf or {}, exchange_dir=exchange_dir))})
    r = parse_round(round_id)
    out: dict[str, object] = {"engine": engine}
    marks: dict[str, list[float]] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        t0, p0 = time.time(), time.perf_counter()
        yield
        out[f"{name}_s"] = round(time.perf_counter() - p0, 2)
        marks[name] = [t0, time.time()]

    if engine == "spark":
        from features.engine.spark import spark_session

        with stage("session_start"):  # the JVM, once per process: link and features share it
            spark_session(home.engine.spark)
    if "link" in stages:
        from features.linkage.link import LinkConfig, link

        with stage("link"):
            summary = link(home, LinkConfig(keep_published_keys=keep_published_keys))
        out["link_steps_s"] = summary.step_seconds
        out["students"], out["candidate_pairs"] = summary.students, summary.candidate_pairs
        out["keys_sha256"] = _keys_digest(home)
    if "features" in stages:
        con = connect_warehouse(home)
        try:
            source = population_source(con, home.calendar, r)
            cutoff = latest_delivery(con)
            if engine == "spark":
                from features.engine.spark import SparkEngine

                with SparkEngine.open(home, con) as eng:
                    with stage("features"):
                        feats = eng.features(home.calendar, r, population=source)
                    with stage("labels"):
                        labels = eng.labels(home.calendar, r, cutoff)
                    out["exports_reused"] = sorted(eng.reused)
            else:
                with stage("features"):
                    # what `ews features` runs: chunks of whole schools, written sorted (the same bytes
                    # as the round in one query, tests/integration/test_feature_set_chunks.py)
                    manifest = write_feature_set(home, round_id)
                with stage("labels"):
                    labels = con.sql(labels_sql(home.calendar, r, cutoff)).to_arrow_table()
        finally:
            con.close()
        if engine == "spark":
            out["rows"], out["features_sha256"] = feats.num_rows, _digest(feats)
        else:
            out["rows"], out["features_sha256"] = manifest.rows, manifest.sha256
        out["labels_sha256"] = _digest(labels.sort_by("student_key"))
    out["stage_marks"] = marks
    return out


def _keys_digest(home: object) -> str:
    """sha256 of the published keys (token_keys and record_keys, sorted): equal across engines when
    both partition the records into the same students with the same student_key values."""
    import pyarrow as pa

    from features.pointintime.pipeline import warehouse_session

    with warehouse_session(home) as con:  # type: ignore[arg-type]
        tokens = con.sql("SELECT id_token, student_key FROM wh.token_keys ORDER BY id_token").to_arrow_table()
        records = con.sql("SELECT delivery_id, source_file, source_line, student_key FROM wh.record_keys "
                          "ORDER BY ALL").to_arrow_table()
    assert isinstance(tokens, pa.Table) and isinstance(records, pa.Table)
    return hashlib.sha256((_digest(tokens) + _digest(records)).encode()).hexdigest()


def measure(engine: str, home: Path, round_id: str, master: str, conf: list[str] | None = None,
            stages: tuple[str, ...] = STAGES, keep_published_keys: bool = False,
            exchange_dir: Path | None = None) -> dict[str, object]:
    """Run `child` in a fresh process; wall time, the tree's peak resident memory (overall and per
    stage) and CPU time."""
    argv = [sys.executable, "-m", "benchmarks.bench_engines", "--child", engine, "--home", str(home),
            "--round", round_id, "--master", master, "--stages", ",".join(stages),
            *(["--keep-published-keys"] if keep_published_keys else []),
            *(["--exchange-dir", str(exchange_dir)] if exchange_dir else []), *(f"--conf={c}" for c in conf or [])]
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    peak = 0.0
    samples: list[tuple[float, float]] = []  # (epoch seconds, tree RSS MB): matched to the child's stage marks
    cpu: dict[int, float] = {}  # CPU seconds per process of the tree, the last reading of each
    while proc.poll() is None:
        rss, seen = _tree(proc.pid)
        peak = max(peak, rss)
        samples.append((time.time(), rss))
        cpu.update(seen)
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        return {"engine": engine, "exit_code": proc.returncode, "wall_s": round(wall, 1)}
    result = json.loads(stdout.strip().splitlines()[-1])
    stage_peaks = {name: round(max((m for t, m in samples if a <= t <= b), default=0.0))
                   for name, (a, b) in result.pop("stage_marks", {}).items()}
    # CPU seconds depend far less than wall time on what else the machine runs: on a shared machine
    # they are the fairer comparison (the last 0.1 s of each process is not counted).
    return {**result, "exit_code": 0, "wall_s": round(wall, 1), "peak_tree_rss_mb": round(peak),
            "stage_peak_rss_mb": stage_peaks,
            "tree_cpu_s": round(sum(cpu.values()), 1), "load_avg_1m": [round(load, 1), round(os.getloadavg()[0], 1)]}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=None, help="An ingested and linked EWS home (required to measure).")
    ap.add_argument("--students", type=int, default=None, help="Students of the home's world (names the JSON).")
    ap.add_argument("--round", default=None, help="Round (default: the latest T1-mid with a census).")
    ap.add_argument("--master", default="local[2]", help="Spark master URL.")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="A Spark setting of the run (repeat), as [engine.spark] conf gives it, e.g. spark.driver.memory=6g.")
    ap.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--stages", default=",".join(STAGES),
                    help="Stages to measure, comma-separated: link, features (features includes labels).")
    ap.add_argument("--keep-published-keys", action="store_true",
                    help="Link as a routine `ews link` does (published keys kept) instead of re-deciding every link.")
    ap.add_argument("--exchange-dir", type=Path, default=None,
                    help="Spark's [engine.spark] exchange_dir: exports kept between runs and reused while the "
                         "warehouse is unchanged (run `--stages features` twice to time a kept export; a link "
                         "stage makes a new linkage run, which makes every export stale).")
    ap.add_argument("--engines", default="duckdb,spark",
                    help="Engines to run, comma-separated (duckdb, spark). One engine alone measures that engine's "
                         "stages and compares nothing: how the national world's link + features were timed on DuckDB.")
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    ap.add_argument("--child", choices=("duckdb", "spark"), help=argparse.SUPPRESS)
    return ap


def _conf(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--conf {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _default_round(home_dir: Path) -> str:
    from features.home import EwsHome
    from features.pointintime.pipeline import available_rounds, warehouse_session

    home = EwsHome.from_env(home_dir)
    with warehouse_session(home) as con:
        mids = [r.round_id for r in available_rounds(con, home.calendar) if r.round_id.endswith("T1-mid")]
    if not mids:
        raise SystemExit(f"no T1-mid round with a census in {home_dir}")
    return mids[-1]


def _stages(text: str) -> tuple[str, ...]:
    stages = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in stages if x not in STAGES]
    if unknown or not stages:
        raise SystemExit(f"--stages {text!r}: expected some of {', '.join(STAGES)}")
    return stages


def _engines(text: str) -> tuple[str, ...]:
    engines = tuple(x.strip() for x in text.split(",") if x.strip())
    if not engines or any(e not in ENGINES for e in engines) or len(set(engines)) != len(engines):
        raise SystemExit(f"--engines {text!r}: expected duckdb, spark or both, each once")
    return engines


def compare(duck: dict[str, object], spark: dict[str, object]) -> dict[str, object]:
    """Spark over DuckDB per stage and for link + features (the issue's figure), in wall seconds of
    the stage (Spark's session start given apart) and in the whole process's CPU seconds."""
    out: dict[str, object] = {}
    times: dict[str, dict[str, float]] = {}
    for name in ("link", "features", "labels"):
        if f"{name}_s" in duck and f"{name}_s" in spark:
            d, s = float(duck[f"{name}_s"]), float(spark[f"{name}_s"])  # type: ignore[arg-type]
            times[name] = {"duckdb": d, "spark": s}
            out[f"spark_over_duckdb_{name}"] = round(s / d, 2) if d else None
    out["stage_s"] = times
    # (stages summed, key of their seconds, key of their ratio)
    for first, second, key, ratio in (("features", "labels", "features_plus_labels_s", "spark_over_duckdb"),
                                      ("link", "features", "link_plus_features_s", "spark_over_duckdb_link_plus_features")):
        if first in times and second in times:
            d = times[first]["duckdb"] + times[second]["duckdb"]
            s = times[first]["spark"] + times[second]["spark"]
            out[key] = {"duckdb": round(d, 2), "spark": round(s, 2), "spark_with_session_start": round(s + float(spark["session_start_s"]), 2)}  # type: ignore[arg-type]
            out[ratio] = round(s / d, 2) if d else None
    # the whole process (session start, exports, every stage) in CPU seconds: the ratio that a loaded
    # machine distorts least
    dc, sc = float(duck["tree_cpu_s"]), float(spark["tree_cpu_s"])  # type: ignore[arg-type]
    out["spark_over_duckdb_tree_cpu"] = round(sc / dc, 2) if dc else None
    return out


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    stages = _stages(a.stages)
    engines = _engines(a.engines)
    if a.plan:
        print(json.dumps({"benchmark": "engines", **vars(a)}, default=str))
        return
    if a.home is None:
        raise SystemExit("--home is required: an ingested and linked home (bench_pipeline's <work>/home)")
    if a.child:
        print(json.dumps(child(a.child, a.home, a.round, a.master, _conf(a.conf), stages, a.keep_published_keys,
                               a.exchange_dir)), flush=True)
        return
    rnd = a.round or _default_round(a.home)
    _conf(a.conf)  # a malformed setting fails before anything runs
    runs = [measure(e, a.home, rnd, a.master, a.conf, stages, a.keep_published_keys, a.exchange_dir)
            for e in engines]
    ok = all(r.get("exit_code") == 0 for r in runs)
    result: dict[str, object] = {
        "benchmark": "engines", "home": str(a.home), "round": rnd, "master": a.master, "conf": _conf(a.conf),
        "stages": list(stages), "engines": list(engines), "keep_published_keys": a.keep_published_keys,
        "exchange_dir": str(a.exchange_dir) if a.exchange_dir else None, "runs": runs,
        "rows": runs[0].get("rows"),
    }
    if len(runs) == 2:
        duck, spark = runs
        digests = [k for k in ("keys_sha256", "features_sha256", "labels_sha256") if k in duck]
        result["equal_outputs"] = ok and all(duck[k] == spark[k] for k in digests)
        result["equal"] = {k: ok and duck[k] == spark.get(k) for k in digests}
        if ok:
            result.update(compare(duck, spark))
    a.out_dir.mkdir(parents=True, exist_ok=True)
    # a run of some stages, or of one engine, does not overwrite the full comparison
    suffix = ("" if stages == STAGES else "_" + "_".join(stages)) + ("" if len(runs) == 2 else "_" + engines[0])
    path = a.out_dir / f"engines_{a.students or runs[0].get('rows', 'x')}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
