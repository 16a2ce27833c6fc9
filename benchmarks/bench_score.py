"""Benchmark: a scoring round at scale - scores, exact SHAP for everyone, reasons - on the champion.

    .venv/bin/python -m benchmarks.bench_score --home PATH --round R [--rows 1000000]

`make bench` builds a home with a champion and a published round and passes them.
The round's stored feature rows (a published snapshot) are repeated to --rows, then timed:
model matrix, raw margin + calibration, fast TreeSHAP (serving.fastshap) for every row, then the
published logit's scale, group sums and reason sentences (column-wise; bench_reasons compares renderers). shap.TreeExplainer explains a sample of the same rows to compare throughput
and values (max |difference| must be <= 1e-9). Feature building over the warehouse is measured
separately by `ews score` (its `seconds.features`) and is not part of this figure.
Writes bench-out/score_<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME with a champion and a published round.")
    ap.add_argument("--round", dest="round_id", help="The published round whose feature rows are repeated.")
    ap.add_argument("--rows", type=int, default=1_000_000, help="Rows to score and explain.")
    ap.add_argument("--compare-rows", type=int, default=2000, help="Rows explained by shap.TreeExplainer too.")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    if a.plan:
        print(json.dumps({"benchmark": "score", **vars(a)}, default=str))
        return
    if a.home is None or a.round_id is None:
        ap.error("--home and --round are required (`make bench` builds a home and passes them)")

    from features.home import EwsHome
    from features.pointintime.spec import FEATURE_NAMES
    from serving.model import shap_tables, to_published_scale
    from serving.reasons import group_matrix, render_reasons
    from serving.snapshot import published

    home = EwsHome(root=a.home.resolve())
    from training.registry import load_model

    model = load_model(home).model
    ref = published(home, a.round_id)
    if ref is None:
        raise SystemExit(f"round {a.round_id} is not published in {home.root}: run `ews score --round {a.round_id}` first")
    inputs = ref.manifest.columns.model_inputs
    base = ref.students(list(inputs.values())).to_pandas()
    base.columns = list(inputs)
    reps = -(-a.rows // len(base))
    frame = pd.concat([base] * reps, ignore_index=True).iloc[: a.rows]
    t = {}
    t0 = time.perf_counter()
    x = model.encode(frame)
    t["matrix"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    margin = model.raw_margin(x)
    score = model.risk_score_from_margin(margin)
    model.thresholds_.assign(score)
    t["score"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tables = shap_tables(model)
    t["shap_tables"] = time.perf_counter() - t0
    from serving.fastshap import tree_shap

    tree_shap(tables, x[:100])  # compile (cached on disk after the first run)
    t0 = time.perf_counter()
    contrib = np.zeros((len(x), len(FEATURE_NAMES) + 1))
    for lo in range(0, len(x), 200_000):
        tree_shap(tables, x[lo:lo + 200_000], out=contrib[lo:lo + 200_000])
    t["shap_all"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pub, _ = to_published_scale(model, contrib, score)
    render_reasons(pub[:, :-1] @ group_matrix(for_reasons=True))
    del pub
    t["reasons"] = time.perf_counter() - t0
    additivity = float(np.abs(contrib.sum(axis=1) - margin).max())

    import shap

    n = min(a.compare_rows, len(x))
    explainer = shap.TreeExplainer(model.booster_)
    t0 = time.perf_counter()
    ref_vals = np.asarray(explainer.shap_values(x[:n]))
    t_shap = time.perf_counter() - t0
    ref_vals = ref_vals[-1] if ref_vals.ndim == 3 else ref_vals
    diff = float(np.abs(ref_vals - contrib[:n, :-1]).max())
    t0 = time.perf_counter()
    tree_shap(tables, x[:n])
    t_fast_n = time.perf_counter() - t0
    total = sum(v for k, v in t.items())
    out = {
        "round": a.round_id, "base_rows": len(base), "rows": len(x), "trees": model.booster_.num_trees(),
        "seconds": {k: round(v, 2) for k, v in t.items()},
        "total_seconds_excluding_feature_sql": round(total, 1),
        "fast_treeshap_rows_per_s": round(len(x) / t["shap_all"]),
        "shap_treeexplainer_rows_per_s": round(n / t_shap), "fast_on_same_rows_rows_per_s": round(n / t_fast_n),
        "max_abs_diff_vs_treeexplainer": diff, "max_additivity_error": additivity,
        "extrapolated_8M_minutes": round(total * 8_000_000 / len(x) / 60, 1),
    }
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / f"score_{a.rows}.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
