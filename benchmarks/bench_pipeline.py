"""Benchmark the data path at a given size: simulate -> ingest -> link -> one round's features.

    python -m benchmarks.bench_pipeline --students 100000 [--years 6] [--work DIR] [--reuse-sim [--reuse-home]]

Each stage runs as its own `ews` process under /usr/bin/time, so wall time and peak RSS are the
stage's own. Results go to bench-out/pipeline_<students>.json. The issue's figures: simulate
1M x 6 years <= 10 min and <= 8 GB; link + features for one round at 1M <= 5 min, <= 8 GB.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

EWS = [sys.executable, "-m", "ews"]


def run_stage(name: str, args: list[str], log: Path) -> dict[str, object]:
    """Run one stage, return wall seconds and peak RSS (MB) of that process alone."""
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([*timer, *EWS, *args], stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    result: dict[str, object] = {
        "stage": name, "seconds": round(wall, 1), "exit_code": proc.returncode,
        "peak_rss_mb": round(int(m.group(1)) / 1024) if m else None,
    }
    print(json.dumps(result), flush=True)
    return result


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=100_000)
    ap.add_argument("--years", type=int, default=6)
    ap.add_argument("--round", default=None, help="Round for the features stage (default: the last T1-mid).")
    ap.add_argument("--work", type=Path, default=None, help="Working folder (default: /tmp/ews-bench-<N>).")
    ap.add_argument("--reuse-sim", action="store_true", help="Keep an existing simulation in the work folder.")
    ap.add_argument("--reuse-home", action="store_true",
                    help="Keep an existing ingested home too: time link + features only.")
    ap.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.plan:
        print(json.dumps({"benchmark": "pipeline", **vars(args)}, default=str))
        return
    work = args.work or Path(f"/tmp/ews-bench-{args.students}")
    sim, home = work / "sim", work / "home"
    work.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    if not (args.reuse_sim and (sim / "truth").exists()):
        results.append(run_stage("simulate", ["simulate", "--students", str(args.students), "--years", str(args.years),
                                              "--seed", "7", "--out", str(sim), "--json"], work / "simulate.log"))
    rows = sum(1 for _ in sim.glob("deliveries/*/*.csv"))
    if not (args.reuse_home and home.exists()):
        if home.exists():
            shutil.rmtree(home)
        results.append(run_stage("ingest", ["ingest", str(sim / "deliveries"), "--home", str(home), "--json"],
                                 work / "ingest.log"))
    results.append(run_stage("link", ["link", "--home", str(home), "--json"], work / "link.log"))
    first_year = json.loads((sim / "summary.json").read_text())["first_year"]
    rnd = args.round or f"{first_year + args.years - 1}-T1-mid"
    results.append(run_stage("features", ["features", "--round", rnd, "--home", str(home), "--json"], work / "features.log"))
    link_features = sum(r["seconds"] for r in results if r["stage"] in ("link", "features"))  # type: ignore[misc]
    summary = {
        "students": args.students, "years": args.years, "round": rnd, "files": rows, "stages": results,
        "link_plus_features_seconds": round(link_features, 1),
        "link_plus_features_peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in results if r["stage"] in ("link", "features")),
    }
    try:
        ingest = json.loads((work / "ingest.log").read_text().split("\n\tCommand being timed")[0])
        summary["rows_ingested"] = ingest["totals"]["received"]
    except (ValueError, KeyError):
        pass
    try:  # where linkage spends its time, step by step
        linked = json.loads((work / "link.log").read_text().split("\n\tCommand being timed")[0])
        summary["link_step_seconds"] = linked["link"]["step_seconds"]
        summary["link_nodes"] = linked["link"]["nodes"]
    except (ValueError, KeyError):
        pass
    (args.out_dir / f"pipeline_{args.students}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
