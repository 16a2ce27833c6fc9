"""Benchmark ingestion: rows/s and peak memory on a synthetic delivery (or a folder you give).

    python -m benchmarks.bench_ingest --rows 5000000           # attendance rows (+ grades, 40%)
    python -m benchmarks.bench_ingest --folder DELIVERIES_DIR  # e.g. the simulator's output
    python -m benchmarks.bench_ingest --folder DELIVERIES_DIR --home NEW_HOME  # keep the home
    python -m benchmarks.bench_ingest --folder DELIVERIES_DIR --first 20       # its first 20 deliveries

The result records wall and CPU seconds (all threads) and the load average before and after:
on a shared machine the wall time depends on the load, the CPU time much less.

Issue 14's figure (ingest >= 150k rows/s at 1M) is measured on `make bench`'s 1M world (the same
seed and years as benchmarks.bench_pipeline), with a fixed key so two homes can be compared:

    ews simulate --out /work/bench1m/sim --students 1000000 --years 6 --seed 7
    EWS_PSEUDONYM_KEY_FILE=KEY python -m benchmarks.bench_ingest --folder /work/bench1m/sim/deliveries --first 20
    EWS_PSEUDONYM_KEY_FILE=KEY python -m benchmarks.bench_ingest --folder /work/bench1m/sim/deliveries --home NEW_HOME
    python -m benchmarks.ingest_compare HOME_MAIN NEW_HOME    # outputs unchanged

Where the time goes, statement by statement: benchmarks.profile_ingest. Measured figures and what
they depend on: docs/ARCHITECTURE.md, "Ingest throughput".

Writes bench-out/ingest-<label>.json. The synthetic generator is vectorised (numpy + pandas) and
includes a small share of faults (bad days, unknown schools, BE months, duplicates) so the
quarantine and repair paths are measured too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.ids import citizen_id_check_digit


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n valid citizen IDs from about n/10 children (vectorised check digits)."""
    kids = rng.integers(10**10, 10**11, max(n // 10, 1))
    first12 = np.char.add("1", kids.astype(str))
    d = np.stack([(kids // 10 ** (10 - i)) % 10 for i in range(11)], axis=1)
    total = 13 * 1 + (d * np.arange(12, 1, -1)).sum(axis=1)
    check = (11 - total % 11) % 10
    assert citizen_id_check_digit(first12[0]) == check[0]
    ids = np.char.add(first12, check.astype(str))
    return ids[rng.integers(0, len(ids), n)]


def synth(folder: Path, rows: int, seed: int = 0) -> int:
    from simulator.samples import registry_rows, write_delivery

    rng = np.random.default_rng(seed)
    reg = registry_rows()
    write_delivery(folder / "reg", "bench-reg", reg, delivered_on="2025-01-01")
    schools = np.array([r["school_code"] for r in reg["schools"]] + ["9999999999"])
    sid = _ids(rng, rows)
    student_no = pd.Series(sid).str[-8:].to_numpy()  # the school's own pupil number: stable per pupil
    present = rng.integers(10, 19, rows)
    att = pd.DataFrame({
        "year_month": np.where(rng.random(rows) < 0.01, "2568-06", "2025-06"),
        "school_code": schools[np.where(rng.random(rows) < 0.002, 2, rng.integers(0, 2, rows))],
        "student_id": sid,
        "student_no": student_no,
        "school_days": 20,
        "days_present": present,
        "days_leave": 1,
        "days_absent": 19 - present + (rng.random(rows) < 0.001),
    })
    d = folder / "data"
    d.mkdir(parents=True)
    att.to_csv(d / "attendance.csv", index=False, lineterminator="\n")
    g = rows * 2 // 5
    grades = pd.DataFrame({
        "academic_year": np.where(rng.random(g) < 0.01, "2025", "2568"), "term": rng.integers(1, 3, g),
        "school_code": schools[rng.integers(0, 2, g)], "student_id": sid[:g],
        "student_no": student_no[:g],
        "assessment": "final", "assessed_on": "2025-09-30", "gpa": np.round(rng.random(g) * 4, 2),
        "n_subjects": 8, "n_mark_0": rng.integers(0, 3, g), "n_mark_r": 0, "n_mark_ms": 0, "n_mark_mp": 0,
    })
    grades.to_csv(d / "grades.csv", index=False, lineterminator="\n")
    (d / "delivery.json").write_text(json.dumps({"delivery_id": "bench-data", "system": "bench", "delivered_on": "2025-10-01"}))
    return rows + g


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="Synthetic attendance rows (grades add 40%%).")
    ap.add_argument("--folder", type=Path, help="Ingest this folder of deliveries instead of a synthetic one.")
    ap.add_argument("--first", type=int, default=None, metavar="N",
                    help="With --folder: ingest only its first N delivery folders (by name, the simulator's date order).")
    ap.add_argument("--home", type=Path, help="Ingest into this (new) home and keep it (default: a temporary one).")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.plan:
        print(json.dumps({"benchmark": "ingest", **vars(args)}, default=str))
        return
    from features.home import EwsHome
    from features.ingest.pipeline import ingest_path

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if args.folder and args.first:
            # The first N deliveries, linked into a folder of their own: the same files, no copy.
            folder, label = work / "first", f"{args.folder.name}-first{args.first}"
            folder.mkdir()
            for sub in sorted(p for p in args.folder.iterdir() if p.is_dir() and not p.name.startswith("."))[:args.first]:
                (folder / sub.name).symlink_to(sub.resolve(), target_is_directory=True)
        elif args.folder:
            folder, label = args.folder, args.folder.name
        else:
            folder, label = work / "in", f"{args.rows}"
            t0 = time.perf_counter()
            synth(folder, args.rows)
            print(f"generated in {time.perf_counter() - t0:.1f}s")
        size = sum(p.stat().st_size for p in folder.glob("*/*.csv")) + sum(p.stat().st_size for p in folder.glob("*.csv"))
        if args.home and args.home.exists():
            raise SystemExit(f"{args.home} exists: give a new home")
        home = EwsHome.from_env(args.home) if args.home else EwsHome(root=work / "home")
        load_before = os.getloadavg()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        report = ingest_path(folder, home)
        secs = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        tot = report.totals()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result = {
            "label": label, "rows_received": tot.received, "accepted": tot.accepted,
            "quarantined": tot.quarantined, "repaired": tot.repaired, "csv_bytes": size,
            "seconds": round(secs, 2), "rows_per_second": round(tot.received / secs),
            "cpu_seconds": round(cpu, 1), "rows_per_cpu_second": round(tot.received / cpu),
            # Cores kept busy on average (2 at most here): wall = CPU / this, so a loaded machine
            # shows up as a lower figure rather than as slower code.
            "cpu_per_wall_second": round(cpu / secs, 2),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "mb_per_second": round(size / 1e6 / secs, 1), "peak_rss_mb": round(peak_mb),
            "warehouse_mb": round(home.warehouse.stat().st_size / 1e6, 1),
        }
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"ingest-{label}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
