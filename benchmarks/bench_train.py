"""Benchmark training: 2M labelled rows, fit + calibration + evaluation + registration, time and peak RSS.

    python -m benchmarks.bench_train --home H                 # grow H's newest training set to 2M rows
    python -m benchmarks.bench_train --home H --rows 2000000 --threads 2 --no-register
    python -m benchmarks.bench_train --synthetic              # no simulated home: catalogue-shaped rows
    python -m benchmarks.bench_train --home H --model '{"lambda_l2": 30}'   # a candidate setting's cost

How 2M rows are made from a smaller real training set (the simulator's, via `ews trainset`): each
round's rows are resampled with replacement up to round_rows * (rows / total) and given new
student keys ("<key>~<copy>") and small jitter on every float feature (x * (1 + N(0, 0.02)), rates
clipped to [0, 1]); labels, categories, schools and group columns are kept, so the temporal split,
the baselines and the fairness audit run exactly as on real data. The figures measure cost, not
quality: resampled rows repeat students, so the metrics are optimistic and are not reported.

Writes bench-out/train-<rows>.json: seconds per stage, total, CPU seconds of the process, peak RSS (MB),
threads, rows per fold, and the machine's load average before and after (a loaded machine's timings
are not an idle one's: say which they are).
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

from features.home import EwsHome
from features.pointintime.spec import BY_NAME, FEATURE_NAMES
from features.pointintime.trainset import TrainsetManifest, file_sha256, save_trainset_manifest


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


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (LightGBM's and numba's threads included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME holding a simulated training set.")
    ap.add_argument("--trainset", default=None)
    ap.add_argument("--synthetic", action="store_true", help="Use simulator.synthetic rows instead of a home.")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, metavar="JSON",
                    help="Partial model config over the default (training/config.py ModelConfig), e.g. a setting "
                         "training/DECISIONS.md weighs; the result is written to train-<rows>-<setting>.json.")
    ap.add_argument("--no-register", action="store_true", help="Skip MLflow logging and the model card.")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    if args.plan:
        print(json.dumps({"benchmark": "train", **vars(args)}, default=str))
        return
    if args.home is None and not args.synthetic:
        ap.error("--home or --synthetic (`make bench` builds a home and passes it)")

    from training.config import ModelConfig, TrainConfig

    try:  # checked before minutes of growing rows: a typo fails here, naming the argument
        overrides = json.loads(args.model) if args.model else {}
        if not isinstance(overrides, dict):
            raise ValueError("not a JSON object")
        ModelConfig(**overrides)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        ap.error(f"--model: {e}")
    # Imported here: training pulls in LightGBM and scikit-learn, which `--help` and `--plan` need not pay for.
    from training.data import Trainset, load_trainset
    from training.pipeline import train_and_evaluate

    t0 = time.perf_counter()
    if args.synthetic:
        from simulator.synthetic import synthetic_frame

        base = synthetic_frame(20_000, seed=1).drop(columns=["p_true"])
        manifest: TrainsetManifest | None = None
        source = "simulator.synthetic (20k students x 10 rounds)"
    else:
        ts0 = load_trainset(EwsHome.from_env(args.home), args.trainset)
        base, manifest, source = ts0.frame, ts0.manifest, f"{args.home} {ts0.name} ({len(ts0.frame):,} rows)"
    frame = grow(base, args.rows)
    t_grow = time.perf_counter() - t0
    home = EwsHome(root=Path(tempfile.mkdtemp(prefix="bench-train-")))
    try:  # the grown set, its MLflow run and model live in a temporary home, removed at the end
        name = f"bench-{args.rows}"
        if manifest is None:
            from simulator.synthetic import write_synthetic_trainset

            write_synthetic_trainset(home, frame, name)
        else:  # the real set's manifest, renamed, with the grown file's row count and hash
            folder = home.trainsets_dir / name
            folder.mkdir(parents=True)
            path = folder / "data.parquet"
            frame.to_parquet(path, index=False)
            save_trainset_manifest(home.trainsets_dir, manifest.model_copy(
                update={"name": name, "rows": len(frame), "file": str(path), "sha256": file_sha256(path)}))
        del frame, base

        cfg = TrainConfig(model=ModelConfig(**{**overrides, "num_threads": args.threads}))
        load_before = os.getloadavg()
        cpu0 = _cpu_seconds()
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
        cpu = _cpu_seconds() - cpu0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {
            "rows": len(ts.frame), "source": source, "threads": args.threads, "grow_s": round(t_grow, 1),
            "load_s": round(t_load, 1), "stages_s": {k: round(v, 1) for k, v in result.timings.items()},
            "register_s": round(t_register, 1), "total_s": round(total, 1), "cpu_s": round(cpu, 1),
            "peak_rss_mb": round(peak_mb),
            "load_average": {"before": [round(x, 2) for x in load_before],
                             "after": [round(x, 2) for x in os.getloadavg()], "cores": os.cpu_count()},
            "fold_rows": result.fold_rows, "best_iteration": result.best_iteration, "model_overrides": overrides,
            "target": "<= 600 s for 2M labelled rows incl. calibration and evaluation",
        }
        args.out_dir.mkdir(parents=True, exist_ok=True)
        setting = "".join(f"-{k}-{v}" for k, v in sorted(overrides.items()))
        path = args.out_dir / f"train-{args.rows}{setting}.json"
        path.write_text(json.dumps(out, indent=2))
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(home.root, ignore_errors=True)


if __name__ == "__main__":
    main()
