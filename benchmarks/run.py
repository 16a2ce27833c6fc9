"""`make bench`: every benchmark, with defaults that measure the issues' figures, outside CI.

    python -m benchmarks.run [--size N ...] [--quick] [--only NAME ...] [--plan]
    EWS_BENCH_SIZES="3000" python -m benchmarks.run --quick      # a small run that proves the chain

In order:
  simulate   bench_simulate at the home size (the smallest size unless --home-size)
  pipeline   bench_pipeline at every size: simulate -> ingest -> link -> one round's features
  engines    bench_engines at every size: DuckDB vs Spark local mode on the pipeline's home (features + labels)
  home       on the home size's pipeline folder: `ews trainset`, `ews train`, `ews score --round R`
             (R = the pipeline's round), each timed; this gives bench_train, bench_score and
             bench_serve the trained champion and published round they need
  labels     label_errors on the home size's pipeline world: label precision per group against the truth,
             and every false dropout per round by what truly happened and which omission hid it
  ingest     bench_ingest on a synthetic delivery of --ingest-rows
  train      bench_train grows the home's training set to --train-rows
  score      bench_score repeats the published round to --score-rows
  round      bench_round: the home's round tiled to --round-pupils, scored end to end (feature SQL ->
             snapshot) at two chunk sizes, time and peak memory per stage, projected to 8M
  past       bench_past: the round-wide past step on the tiled round's home, in parts and in one query
  population bench_population: the round's population on the tiled round's home, the per-school fallback
             over the pupils it could place (the code) and over every pupil's history (before session 17)
  reasons    bench_reasons: the round's reasons rendered column-wise vs per row, tiled to --score-rows
  explain    bench_explain: one pupil's explanation in process, every pupil of the round, as its school and
             as an auditor (the disclosed view), and each pupil's printable sheet: median and p99 each
  serve      bench_serve: per-request latency per route at --serve-clients clients
  load       bench_load: the service under --load-clients clients of mixed routes, and the guard's
             refusals (its own defaults: 100 clients x 5 minutes)
  actionaware  bench_action_training: naive vs action-aware LightGBM through the pipeline on worlds
             where schools act (issue 15.6b), bias on the eligible pupils against the truth, 3 seeds
             (its own worlds; --quick: one seed of 2,000 pupils)

Sizes come from --size (repeatable), else EWS_BENCH_SIZES (default "100000 1000000"). Every
benchmark writes JSON to --out-dir (bench-out/, git-ignored); the data they work on lives in
bench-out/work/. A benchmark that fails is reported and the others still run (those that need the
home are skipped if it could not be built). At the end this writes bench-out/SUMMARY.md: one row
per figure with the command that reproduces it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SIZES = "100000 1000000"
# Defaults measure the issues' figures; --quick shrinks every one of them to prove the chain runs.
FULL = {"ingest_rows": 1_000_000, "train_rows": 2_000_000, "score_rows": 1_000_000, "compare_rows": 2000,
        "serve_seconds": 20.0, "serve_clients": 10, "mix_clients": 50,
        "load_clients": 100, "load_minutes": 5.0, "load_paths": 20_000, "round_pupils": 1_000_000}
QUICK = {"ingest_rows": 50_000, "train_rows": 50_000, "score_rows": 20_000, "compare_rows": 500,
         "serve_seconds": 3.0, "serve_clients": 10, "mix_clients": 20,
         "load_clients": 10, "load_minutes": 0.1, "load_paths": 500, "round_pupils": 20_000}
STEPS = ("simulate", "pipeline", "engines", "home", "labels", "ingest", "train", "score", "round", "past", "population",
         "reasons", "explain", "serve", "load", "actionaware")

# The steps that need the home trained, with a published round (their commands name it as ROUND until it is known).
NEEDS_ROUND = ("train", "score", "round", "past", "population", "reasons", "explain", "serve", "load")


@dataclass
class Step:
    """One benchmark run: the command, where its JSON lands, and what happened."""

    name: str
    argv: list[str]  # after `python -m`
    json_path: Path | None
    exit_code: int | None = None
    seconds: float | None = None
    note: str = ""
    figures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def command(self) -> str:
        return ".venv/bin/python -m " + shlex.join(self.argv)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, action="append", dest="sizes",
                    help=f"Students in a simulated world (repeat); default: $EWS_BENCH_SIZES or {DEFAULT_SIZES!r}.")
    ap.add_argument("--years", type=int, default=6, help="Simulated school years per world.")
    ap.add_argument("--home-size", type=int, help="Size whose world becomes the benchmark home (default: the smallest).")
    ap.add_argument("--quick", action="store_true", help="Small rows and short durations: proves the chain, measures little.")
    ap.add_argument("--only", action="append", choices=STEPS, help="Run only these steps (repeat).")
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None, help=f"default {v} ({QUICK[k]} with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="Service workers for bench_serve.")
    ap.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the commands that would run, and exit.")
    return ap


def resolve(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> argparse.Namespace:
    """Parsed arguments with every default filled in (sizes sorted, the home size chosen)."""
    a = parser().parse_args(argv)
    env = os.environ if environ is None else environ
    a.sizes = sorted(set(a.sizes or [int(s) for s in env.get("EWS_BENCH_SIZES", DEFAULT_SIZES).split()]))
    if not a.sizes or min(a.sizes) < 1:
        raise SystemExit("benchmark sizes must be positive integers")
    a.home_size = a.home_size or a.sizes[0]
    if a.home_size not in a.sizes:
        a.sizes = sorted({*a.sizes, a.home_size})
    preset = QUICK if a.quick else FULL
    for k, v in preset.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.only = list(a.only or STEPS)
    return a


def _run(step: Step) -> None:
    print(f"== {step.name}: {step.command}", flush=True)
    t0 = time.perf_counter()
    step.exit_code = subprocess.run([sys.executable, "-m", *step.argv], check=False).returncode
    step.seconds = round(time.perf_counter() - t0, 1)
    if step.exit_code:
        print(f"!! {step.name} exited {step.exit_code}", flush=True)


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:.3g}" if abs(v) < 1e-3 and v else f"{v:,.2f}".rstrip("0").rstrip(".")
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def _figures(name: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    """The headline figures of one benchmark's JSON (what the issues name), as (label, value)."""
    f: list[tuple[str, str]] = []
    if name.startswith("simulate"):
        f += [(f"simulate {r['students']:,} x {r['years']} years", f"{_fmt(r['wall_seconds'], ' s')}, peak {_fmt(r['peak_rss_mb'], ' MB')}")]
    elif name.startswith("pipeline"):
        for s in r["stages"]:
            f.append((f"{s['stage']} ({r['students']:,} students)", f"{_fmt(s['seconds'], ' s')}, peak {_fmt(s['peak_rss_mb'], ' MB')}"
                      + (f", exit {s['exit_code']}" if s["exit_code"] else "")))
        f.append((f"link + features ({r['students']:,})", f"{_fmt(r['link_plus_features_seconds'], ' s')}, peak {_fmt(r['link_plus_features_peak_rss_mb'], ' MB')}"))
        if "rows_ingested" in r and "ingest" in {s["stage"] for s in r["stages"]}:
            secs = next(s["seconds"] for s in r["stages"] if s["stage"] == "ingest")
            f.append((f"ingest rate ({r['rows_ingested']:,} rows)", _fmt(round(r["rows_ingested"] / secs) if secs else None, " rows/s")))
    elif name.startswith("engines"):
        for run_ in r["runs"]:
            f.append((f"{run_['engine']} features + labels ({r['rows']:,} pupils)",
                      f"{_fmt(run_.get('features_s'), ' s')} + {_fmt(run_.get('labels_s'), ' s')}"
                      + (f" (+ {_fmt(run_['session_start_s'], ' s')} session start)" if "session_start_s" in run_ else "")
                      + f", peak {_fmt(run_.get('peak_tree_rss_mb'), ' MB')}"))
        f.append(("Spark / DuckDB time; equal outputs", f"{_fmt(r.get('spark_over_duckdb'))}x; {r['equal_outputs']}"))
    elif name.startswith("home"):
        for s in r["stages"]:
            f.append((f"`ews {s['stage']}` ({r['students']:,} students)", f"{_fmt(s['seconds'], ' s')}, peak {_fmt(s['peak_rss_mb'], ' MB')}"
                      + (f", exit {s['exit_code']}" if s["exit_code"] else "")))
    elif name.startswith("labels"):
        o = r["overall"]
        lo, hi = o["precision_interval"]
        f.append(("label precision (all rounds)", f"{_fmt(o['precision'])} [{_fmt(lo)}, {_fmt(hi)}], agreement "
                  f"{_fmt(o['agreement'])}, unknown {o['unknown']:,} of {o['rows']:,} rows"))
        worst = min(r["per_round"], key=lambda x: x["agreement"] if x["agreement"] is not None else 1.0)
        f.append(("lowest round agreement", f"{worst['round_id']}: {_fmt(worst['agreement'])} "
                  f"({worst['false_dropouts']} false of {worst['labelled_dropouts']} dropouts)"))
    elif name.startswith("ingest"):
        f += [(f"ingest {r['rows_received']:,} rows", f"{_fmt(r['rows_per_second'], ' rows/s')}, {_fmt(r['seconds'], ' s')}, peak {_fmt(r['peak_rss_mb'], ' MB')}")]
    elif name.startswith("train"):
        f += [(f"train {r['rows']:,} rows incl. registration", f"{_fmt(r['total_s'], ' s')}, peak {_fmt(r['peak_rss_mb'], ' MB')}")]
    elif name.startswith("score"):
        f += [(f"score + SHAP + reasons, {r['rows']:,} rows", _fmt(r["total_seconds_excluding_feature_sql"], " s")),
              ("fast TreeSHAP", _fmt(r["fast_treeshap_rows_per_s"], " rows/s")),
              ("max abs diff vs shap.TreeExplainer", _fmt(r["max_abs_diff_vs_treeexplainer"])),
              ("max additivity error", _fmt(r["max_additivity_error"])),
              ("projected 8M (excluding feature SQL)", _fmt(r["extrapolated_8M_minutes"], " min"))]
    elif name.startswith("round"):
        for run, proj in zip(r["runs"], r["projection_8M"]):
            stages = ", ".join(f"{k} {_fmt(v['seconds'], ' s')} / {_fmt(v['peak_rss_mb'], ' MB')}" for k, v in run["stages"].items())
            f.append((f"round of {run['pupils']:,} pupils ({r['tiles']} tiles), chunks of {run['chunk_rows']:,} ({run['chunks']})",
                      f"{_fmt(run['seconds_total'], ' s')}, peak {_fmt(run['peak_rss_mb'], ' MB')}; {stages}"))
            f.append((f"projected 8M, chunks of {run['chunk_rows']:,}", f"{_fmt(proj['minutes'], ' min')}, peak {_fmt(proj['peak_rss_mb'], ' MB')}"))
    elif name.startswith("past"):
        for how in ("in_parts", "one_query"):
            s = r[how]
            f.append((f"past step ({r['past_rounds']} past rounds) {how.replace('_', ' ')} at {s['memory_limit']}",
                      f"{_fmt(s['seconds'], ' s')}, peak {_fmt(s['peak_rss_mb'], ' MB')}"
                      + (f"; failed: {s['failed']}" if "failed" in s else "")))
        if "rows_that_differ" in r:
            f.append((f"schools whose rate differs between the two ({r['schools']:,} schools)", _fmt(r["rows_that_differ"])))
    elif name.startswith("population"):
        for how, v in r["variants"].items():
            f.append((f"population of {v['pupils']:,} pupils ({v['missing_schools']} missing schools), fallback {how.replace('_', ' ')}"
                      f" at {r['memory_limit']}", f"source {_fmt(v['source_seconds'], ' s')}, population {_fmt(v['population_seconds'], ' s')}"))
        if "rows_differing" in r:
            f.append(("population rows that differ between the two", _fmt(r["rows_differing"])))
    elif name.startswith("reasons"):
        sec = r["seconds"]
        f += [(f"reasons, {r['rows']:,} rows: column-wise / per-row reference / before", f"{_fmt(sec['column_wise'], ' s')} / "
               f"{_fmt(sec['per_row'], ' s')} / {_fmt(sec['before'], ' s')} ({_fmt(r['speedup_vs_before'])}x before)"),
              ("reason text mismatches vs per-row reference", _fmt(r["text_mismatches_vs_per_row_reference"]))]
    elif name.startswith("explain"):
        for role, s in r["roles"].items():
            f.append((f"one explanation in process as {role} ({s['calls']:,} pupils)",
                      f"median {_fmt(s['median_ms'], ' ms')}, p99 {_fmt(s['p99_ms'], ' ms')}, max {_fmt(s['max_ms'], ' ms')}"))
        if "sheet" in r:
            s = r["sheet"]
            f.append((f"one pupil's sheet in process ({s['calls']:,} pupils, {s['rounds_held']} rounds held)",
                      f"median {_fmt(s['median_ms'], ' ms')}, p99 {_fmt(s['p99_ms'], ' ms')}, max {_fmt(s['max_ms'], ' ms')}"))
    elif name.startswith("serve"):
        for route, s in r["per_route"].items():
            rows = r.get("rows", {}).get(route.removesuffix("_json").removesuffix("_xlsx"))
            f.append((f"{route}{f' ({rows:,} rows)' if rows is not None else ''} at {r['clients']} clients", f"p50 {_fmt(s['p50_ms'], ' ms')}, p90 {_fmt(s['p90_ms'], ' ms')}, "
                      f"p99 {_fmt(s['p99_ms'], ' ms')}, max {_fmt(s['max_ms'], ' ms')}; {s['requests']:,} requests, {s['errors']} errors"))
        for k, m in r.items():
            if k.startswith("mix_"):
                o = m["overall"]
                f.append((f"mixed load at {m['clients']} clients", f"{o['requests']:,} requests, {o['errors']} errors, p99 {_fmt(o['p99_ms'], ' ms')}, "
                          f"{_fmt(o['rps'], ' req/s')} (Little's law: {_fmt(m['littles_law_rps'], ' req/s')})"))
    elif name.startswith("actionaware"):
        for seed, s in r["seeds"].items():
            f.append((f"seed {seed}: bias on eligible pupils vs untreated truth ({s['eligible_rows']:,} rows, points)",
                      f"naive {s['naive_bias_pts']:+.2f} ({s['naive_low']:+.2f} to {s['naive_high']:+.2f}), "
                      f"action-aware {s['aware_bias_pts']:+.2f} ({s['aware_low']:+.2f} to {s['aware_high']:+.2f})"
                      + (f", nobody acts {s['reference_bias_pts']:+.2f}" if s.get("reference_bias_pts") is not None else "")))
    elif name.startswith("load"):
        ld = r["load"]
        f.append((f"mixed routes at {r['clients']} clients for {r['minutes']} min",
                  f"{ld['requests']:,} requests, {ld['errors']} errors, {ld['rate_limited_429']} x 429, "
                  f"p50 {_fmt(ld['p50_ms'], ' ms')}, p99 {_fmt(ld['p99_ms'], ' ms')}"))
        f.append(("50 MB /score body refused after", ", ".join(_fmt(x, " ms") for x in r["body_50mb"]["refused_ms"])))
        rp = r["random_paths"]
        f.append((f"{rp['paths']:,} random paths: worker RSS before -> after",
                  f"{sum(rp['rss_before_mb'].values()):,.0f} -> {sum(rp['rss_after_mb'].values()):,.0f} MB; "
                  f"/metrics {rp['metrics_bytes_before']:,} -> {rp['metrics_bytes_after']:,} bytes"))
    return f


def _home_step(a: argparse.Namespace, work: Path) -> tuple[Path, str | None]:
    """Train and score on the home size's pipeline home; time each command; write home_<N>.json."""
    from benchmarks.bench_pipeline import run_stage

    home = work / "home"
    try:  # the round bench_pipeline built features for: scoring it reuses them
        rnd = str(json.loads((a.out_dir / f"pipeline_{a.home_size}.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return home, None
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    stages = []
    for name, args in (("trainset", ["trainset"]), ("train", ["train"]), ("score", ["score", "--round", rnd])):
        stages.append(run_stage(name, [*args, "--home", str(home), "--json"], work / f"{name}.log"))
        if stages[-1]["exit_code"]:
            break
    (a.out_dir / f"home_{a.home_size}.json").write_text(json.dumps(
        {"students": a.home_size, "years": a.years, "home": str(home), "round": rnd, "stages": stages}, indent=2) + "\n")
    ok = all(not s["exit_code"] for s in stages) and len(stages) == 3
    return home, rnd if ok else None


def plan(a: argparse.Namespace) -> list[Step]:
    """The steps to run, in order, with their commands (the home's round is known once simulated)."""
    out, work = a.out_dir, a.out_dir / "work"
    hwork = work / f"pipeline_{a.home_size}"
    home, rnd = str(hwork / "home"), "ROUND"
    o = [] if out == Path("bench-out") else ["--out-dir", str(out)]  # the benchmarks' own default
    steps = [Step("simulate", ["benchmarks.bench_simulate", "--students", str(a.home_size), "--years", str(a.years), *o],
                  out / f"simulate_{a.home_size}.json")]
    steps += [Step(f"pipeline_{n}", ["benchmarks.bench_pipeline", "--students", str(n), "--years", str(a.years),
                                     "--work", str(work / f"pipeline_{n}"), *o], out / f"pipeline_{n}.json") for n in a.sizes]
    steps += [Step(f"engines_{n}", ["benchmarks.bench_engines", "--home", str(work / f"pipeline_{n}" / "home"),
                                    "--students", str(n), *o], out / f"engines_{n}.json") for n in a.sizes]
    steps.append(Step("home", ["benchmarks.run", "--size", str(a.home_size), "--years", str(a.years), "--only", "pipeline",
                               "--only", "home", *o], out / f"home_{a.home_size}.json"))
    steps.append(Step("labels", ["benchmarks.label_errors", "--home", home, "--truth", str(hwork / "sim" / "truth"), *o],
                      out / "label_errors.json"))
    steps.append(Step("ingest", ["benchmarks.bench_ingest", "--rows", str(a.ingest_rows), *o], out / f"ingest-{a.ingest_rows}.json"))
    steps.append(Step("train", ["benchmarks.bench_train", "--home", home, "--rows", str(a.train_rows), *o],
                      out / f"train-{a.train_rows}.json"))
    steps.append(Step("score", ["benchmarks.bench_score", "--home", home, "--round", rnd, "--rows", str(a.score_rows),
                                "--compare-rows", str(a.compare_rows), *o], out / f"score_{a.score_rows}.json"))
    steps.append(Step("round", ["benchmarks.bench_round", "--home", home, "--round", rnd, "--pupils", str(a.round_pupils),
                                *([] if a.round_pupils > 100_000 else ["--chunk-rows", str(max(1, a.round_pupils // 5)),
                                                                        "--chunk-rows", str(a.round_pupils)]), *o],
                      out / f"round_{a.round_pupils}.json"))
    # the round-wide past step alone on the round's tiled home: in parts (as scoring) and in one query
    steps.append(Step("past", ["benchmarks.bench_past", "--home", str(out / "work" / f"round_{a.round_pupils}" / "home"),
                               "--round", rnd, *o], out / f"past_{rnd}.json"))
    steps.append(Step("population", ["benchmarks.bench_population", "--home", str(out / "work" / f"round_{a.round_pupils}" / "home"),
                                     "--round", rnd, "--compare-whole-history", *o], out / f"population_{rnd}.json"))
    steps.append(Step("reasons", ["benchmarks.bench_reasons", "--home", home, "--round", rnd, "--rows", str(a.score_rows), *o],
                      out / f"reasons_{a.score_rows}.json"))
    steps.append(Step("explain", ["benchmarks.bench_explain", "--home", home, "--round", rnd, "--roles", "school", "auditor", *o],
                      out / f"explain_{rnd}.json"))
    steps.append(Step("serve", ["benchmarks.bench_serve", "--home", home, "--round", rnd, "--clients", str(a.serve_clients),
                                "--mix-clients", str(a.mix_clients), "--seconds", str(a.serve_seconds),
                                "--workers", str(a.workers), *o], out / f"serve_{rnd}.json"))
    # bench_load writes bench-out/bench_load.json wherever --out-dir points, and serves with its own 1 worker.
    steps.append(Step("load", ["benchmarks.bench_load", "--home", home, "--round", rnd, "--clients", str(a.load_clients),
                               "--minutes", str(a.load_minutes), "--paths", str(a.load_paths)], Path("bench-out/bench_load.json")))
    small = ["--seeds", "11", "--students", "2000", "--reps", "200"] if a.quick else []
    steps.append(Step("actionaware", ["benchmarks.bench_action_training", *small, "--reference",
                                      "--work", str(work / "action_training"), "--out", str(out / "action_training.json")],
                      out / "action_training.json"))
    return [s for s in steps if s.name.split("_")[0] in a.only]


def _with_round(step: Step, rnd: str) -> None:
    step.argv = [rnd if x == "ROUND" else x for x in step.argv]
    if step.json_path is not None:
        step.json_path = step.json_path.with_name(step.json_path.name.replace("ROUND", rnd))


def write_summary(a: argparse.Namespace, steps: list[Step], run_argv: list[str], path: Path) -> str:
    """SUMMARY.md: how the run was made, then one row per figure naming the command behind it."""
    lines = [
        "# Benchmark summary", "",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average (1 min) {a.load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(the machine is shared: a high load inflates every time and latency).",
        f"Whole run: `{'EWS_BENCH_SIZES=' + repr(os.environ['EWS_BENCH_SIZES']) + ' ' if 'EWS_BENCH_SIZES' in os.environ else ''}"
        f".venv/bin/python -m benchmarks.run {shlex.join(run_argv)}`"
        + (" (--quick: small rows and short durations, the figures prove the chain and measure little)" if a.quick else ""),
        f"Sizes: {', '.join(f'{n:,}' for n in a.sizes)} students x {a.years} years; home: {a.home_size:,}.", "",
        "| Benchmark | Figure | Value | Reproduce with |", "|---|---|---|---|",
    ]
    for s in steps:
        if s.figures:
            for label, value in s.figures:
                lines.append(f"| {s.name} | {label} | {value} | `{s.command}` |")
        else:
            lines.append(f"| {s.name} | - | {s.note or 'no result'} | `{s.command}` |")
    lines += ["", "| Benchmark | Exit | Seconds | JSON |", "|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s.name} | {_fmt(s.exit_code)} | {_fmt(s.seconds)} | {s.json_path if s.json_path and s.json_path.exists() else '-'} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    run_argv = list(sys.argv[1:] if argv is None else argv)
    a = resolve(run_argv)
    steps = plan(a)
    if a.plan:
        for s in steps:
            print(f"{s.name}: {s.command}")
        return
    a.out_dir.mkdir(parents=True, exist_ok=True)
    a.load_at_start = os.getloadavg()[0]
    hwork = a.out_dir / "work" / f"pipeline_{a.home_size}"
    rnd: str | None = None
    for s in steps:
        if s.name == "home":
            print(f"== home: ews trainset, train, score on {hwork / 'home'}", flush=True)
            t0 = time.perf_counter()
            _, rnd = _home_step(a, hwork)
            s.seconds, s.exit_code = round(time.perf_counter() - t0, 1), 0 if rnd else 1
            if rnd is None:
                s.note = f"home not built: see {hwork}/*.log"
        elif s.name in NEEDS_ROUND:
            if rnd is None and "home" not in a.only:  # e.g. --only serve: reuse the home an earlier run built
                rnd = _existing_round(a, hwork)
            if rnd is None:
                s.note = "skipped: no home with a published round"
                print(f"-- {s.name}: {s.note}", flush=True)
                continue
            _with_round(s, rnd)
            _run(s)
        else:
            _run(s)
        if s.json_path is not None and s.json_path.exists():
            try:
                s.figures = _figures(s.name, json.loads(s.json_path.read_text()))
            except (ValueError, KeyError, TypeError) as exc:
                s.note = f"see {s.json_path} ({type(exc).__name__}: {exc})"
        elif not s.note:
            s.note = f"no JSON (exit {s.exit_code})"
    text = write_summary(a, steps, run_argv, a.out_dir / "SUMMARY.md")
    print("\n" + text)


def _existing_round(a: argparse.Namespace, hwork: Path) -> str | None:
    """The round an earlier run's home step published, if every one of its commands succeeded."""
    try:
        record = json.loads((a.out_dir / f"home_{a.home_size}.json").read_text())
    except (OSError, ValueError):
        return None
    ok = len(record.get("stages", [])) == 3 and not any(s["exit_code"] for s in record["stages"])
    return str(record["round"]) if ok and (hwork / "home").exists() else None

if __name__ == "__main__":
    main()
