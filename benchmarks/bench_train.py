"""Benchmark training: 2M labelled rows, fit + calibration + evaluation + registration, time and peak RSS.

    python -m benchmarks.bench_train --home H                 # grow H's newest training set to 2M rows
    python -m benchmarks.bench_train --home H --rows 2000000 --threads 2 --no-register
    python -m benchmarks.bench_train --synthetic              # no simulated home: catalogue-shaped rows

How 2M rows are made from a smaller real training set (the simulator's, via `ews trainset`): each
round's rows are resampled with replacement up to round_rows * (rows / total) and given new
student keys ("<key>~<copy>") and small jitter on every float feature (x * (1 + N(0, 0.02)), rates
clipped to [0, 1]); labels, categories, schools and group columns are kept, so the temporal split,
the baselines and the fairness audit run exactly as on real data. The figures measure cost, not
quality: resampled rows repeat students, so the metrics are optimistic and are not reported.

Writes bench-out/train-<rows>.json: seconds per stage, total, peak RSS (MB), threads, rows per fold.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.home import EwsHome
from features.pointintime.spec import BY_NAME, FEATURE_NAMES
from features.pointintime.trainset import save_trainset_manifest
from training.config import ModelConfig, TrainConfig
from training.data import Trainset, load_trainset
from training.pipeline import train_and_evaluate


def grow(frame: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    """Resample each round up to its share of `rows`, with new keys and jittered floats."""
    rng = np.random.default_rng(seed)
    factor = rows / len(frame)
    parts = []
    for _, g in frame.groupby("round_id", sort=True):
        n = int(round(len(g) * factor))
        idx = rng.integers(0, len(g), n)
        part = g.iloc[idx].reset_index(drop=True)
        part["student_key"] = part["student_key"].astype(str) + "~" + pd.Series(np.arange(n) // len(g)).astype(str)
        for name in FEATURE_NAMES:
            if BY_NAME[name].dtype != "float":
                continue
            x = part[name].to_numpy(dtype=float, na_value=np.nan)
            x = x * (1 + rng.normal(0, 0.02, n))
            if name.startswith("att_rate") or name.endswith("_rate"):
                x = np.clip(x, 0, 1)
            part[name] = x
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME holding a simulated training set.")
    ap.add_argument("--trainset", default=None)
    ap.add_argument("--synthetic", action="store_true", help="Use simulator.synthetic rows instead of a home.")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-register", action="store_true", help="Skip MLflow logging and the model card.")
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    args = ap.parse_args()

    t0 = time.perf_counter()
    home = EwsHome(root=Path(tempfile.mkdtemp(prefix="bench-train-")))
    if args.synthetic:
        from simulator.synthetic import synthetic_frame, write_synthetic_trainset

        ts0 = load_trainset(home, write_synthetic_trainset(home, synthetic_frame(20_000, seed=1)))
        source = "simulator.synthetic (20k students x 10 rounds)"
    else:
        if args.home is None:
            ap.error("--home or --synthetic")
        ts0 = load_trainset(EwsHome.from_env(args.home), args.trainset)
        source = f"{args.home} {ts0.name} ({len(ts0.frame):,} rows)"
    base = ts0.frame
    frame = grow(base, args.rows)
    t_grow = time.perf_counter() - t0
    name = f"bench-{args.rows}"
    folder = home.trainsets_dir / name
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "data.parquet", index=False)
    # The source's typed manifest under the grown set's name and size; the save also sets LATEST.
    save_trainset_manifest(home.trainsets_dir, ts0.manifest.model_copy(update={"name": name, "rows": len(frame)}))
    del frame, base, ts0

    cfg = TrainConfig(model=ModelConfig(num_threads=args.threads))
    t1 = time.perf_counter()
    ts: Trainset = load_trainset(home, name)
    t_load = time.perf_counter() - t1
    result = train_and_evaluate(ts, cfg)
    t_register = 0.0
    if not args.no_register:
        from training.registry import log_training_run

        t2 = time.perf_counter()
        log_training_run(home, result, cfg)
        t_register = time.perf_counter() - t2
    total = time.perf_counter() - t1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "rows": len(ts.frame), "source": source, "threads": args.threads, "grow_s": round(t_grow, 1),
        "load_s": round(t_load, 1), "stages_s": {k: round(v, 1) for k, v in result.timings.items()},
        "register_s": round(t_register, 1), "total_s": round(total, 1), "peak_rss_mb": round(peak_mb),
        "fold_rows": result.fold_rows, "best_iteration": result.best_iteration,
        "target": "<= 600 s for 2M labelled rows incl. calibration and evaluation",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train-{args.rows}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
