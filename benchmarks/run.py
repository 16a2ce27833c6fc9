"""`make bench`: every benchmark named in the issues, in order, outside CI.

Each benchmark writes JSON to bench-out/; this runner prints them together at the end. Set
EWS_BENCH_SIZES (default "100000 1000000") to choose the sizes of the data-path benchmarks.
A benchmark that fails is reported and the others still run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path


def _run(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        print(f"-- {module}: not present, skipped", flush=True)
        return
    print(f"== {module} {' '.join(args)}", flush=True)
    rc = subprocess.run([sys.executable, "-m", module, *args], check=False).returncode
    if rc:
        print(f"!! {module} exited {rc}", flush=True)


def main() -> None:
    sizes = os.environ.get("EWS_BENCH_SIZES", "100000 1000000").split()
    for n in sizes:
        _run("benchmarks.bench_pipeline", "--students", n, "--years", "6")
    _run("benchmarks.bench_ingest")
    _run("benchmarks.bench_train")
    _run("benchmarks.bench_score")
    _run("benchmarks.bench_serve")
    print("\n== results (bench-out/)")
    for p in sorted(Path("bench-out").glob("*.json")):
        print(f"--- {p.name}\n{json.dumps(json.loads(p.read_text()), indent=1)[:2000]}")


if __name__ == "__main__":
    main()
