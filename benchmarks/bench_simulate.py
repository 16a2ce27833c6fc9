"""Benchmark `ews simulate`: wall time and peak memory of a run in a child process.

    python -m benchmarks.bench_simulate --students 100000 [--years 6] [--out-dir bench-out]

The child runs the simulator's Python API; peak RSS comes from getrusage(RUSAGE_CHILDREN)
(the largest child), so this process's own memory is not counted. A JSON record goes to
bench-out/simulate_<students>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, json
from pathlib import Path
from simulator import simulate, SimulationConfig, WorldConfig
cfg = SimulationConfig(world=WorldConfig(students=int(sys.argv[1]), years=int(sys.argv[2]), seed=7))
s = simulate(cfg, Path(sys.argv[3]))
print(json.dumps({"seconds_inside": s.seconds, "rows": s.rows_by_source, "ceiling": {k: v.get("roc_auc") for k, v in s.ceiling.items() if isinstance(v, dict) and "roc_auc" in v}, "calibration": {k: v["simulated"] for k, v in s.calibration["checks"].items()}, "persons": s.persons}))
"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=100_000)
    ap.add_argument("--years", type=int, default=6)
    ap.add_argument("--out-dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--keep", action="store_true", help="keep the simulated files (default: delete)")
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.plan:
        print(json.dumps({"benchmark": "simulate", **vars(args)}, default=str))
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ews-bench-sim-") as tmp:
        target = Path(tmp) / "sim" if not args.keep else args.out_dir / f"sim_{args.students}"
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", CHILD, str(args.students), str(args.years), str(target)],
                             capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.stderr.write(res.stderr)
            raise SystemExit(res.returncode)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    record = {
        "benchmark": "simulate", "students": args.students, "years": args.years, "wall_seconds": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1), "output_mb": round(size / 2**20, 1),
        "load_average_1min_at_end": os.getloadavg()[0], "cpus": os.cpu_count(), "python": platform.python_version(),
        **json.loads(res.stdout.strip().splitlines()[-1]),
    }
    path = args.out_dir / f"simulate_{args.students}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
