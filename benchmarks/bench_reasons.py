"""Benchmark: rendering the reasons of a round, column-wise against per row, at equal text.

    .venv/bin/python -m benchmarks.bench_reasons --home PATH --round R [--rows 1000000] [--sample 100000]

The published round's scored pupils are explained once (fast TreeSHAP, then the published logit's
scale); their contributions are tiled to --rows, because rendering cost does not depend on which
pupil a row is. Timed on the same rows:
  column_wise   serving.reasons.render_reasons on all --rows (what `ews score` runs now);
  per_row       the per-row reference of the same rules (tests/support/reasons_oracle.py) on
                --sample rows, scaled to --rows; its text must equal column_wise's (mismatches are
                counted and must be 0);
  before        the loop `ews score` ran before (commit a6a45e5: a dict of values per pupil, then
                top_reasons per pupil, one feature's value in each sentence), on --sample rows,
                scaled to --rows. Kept here, frozen, as the baseline of the issue's "8x".
It also reports, for the round itself (not tiled), the share of flagged pupils (at-risk or
problem) whose first reason is each group, under the old rules and the new, and the share of
flagged pupils with no reason ("(none)"), each as [share, 95% bootstrap interval by student]. Writes bench-out/reasons_<rows>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="EWS_HOME with a champion and a published round.")
    ap.add_argument("--round", dest="round_id", help="The published round whose pupils are explained.")
    ap.add_argument("--rows", type=int, default=1_000_000, help="Rows whose reasons are rendered column-wise.")
    ap.add_argument("--sample", type=int, default=100_000, help="Rows rendered per row (scaled to --rows).")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return ap


# --- the renderer `ews score` used before, frozen (serving/reasons.py at a6a45e5) ------------------

def _before_value(feature: str, value: Any, lang: str) -> str:
    from features.pointintime.spec import BY_NAME

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "ไม่มีข้อมูล" if lang == "th" else "no data"
    dtype = BY_NAME[feature].dtype
    if dtype == "bool":
        return ("ใช่" if bool(value) else "ไม่ใช่") if lang == "th" else ("yes" if bool(value) else "no")
    if dtype == "category":
        return str(value)
    v = float(value)
    if feature == "att_trend_3m":
        return f"{v * 100:+.0f} จุด" if lang == "th" else f"{v * 100:+.0f} points"
    if "rate" in feature:
        return f"{v:.0%}"
    if dtype == "int" or v.is_integer():
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def _before_sentence(group: str, feature: str, value: Any, c: float, lang: str) -> str:
    from features.pointintime.spec import BY_NAME, GROUPS

    mult, f = math.exp(c), BY_NAME[feature]
    if lang == "th":
        way = "เพิ่มความเสี่ยง" if c > 0 else "ลดความเสี่ยง"
        return f"{GROUPS[group][1]}: {f.th} {_before_value(feature, value, 'th')} — {way} (โอกาส ×{mult:.2f})"
    way = "raises risk" if c > 0 else "lowers risk"
    return f"{GROUPS[group][0]}: {f.en} {_before_value(feature, value, 'en')} — {way} (odds ×{mult:.2f})"


_BEFORE_ROUND_LEVEL = frozenset({"term", "is_mid_round"})


def _before_matrix() -> np.ndarray:
    from features.pointintime.spec import FEATURES, GROUPS

    names = list(GROUPS)
    g = np.zeros((len(FEATURES), len(names)))
    for i, f in enumerate(FEATURES):
        if f.name not in _BEFORE_ROUND_LEVEL:
            g[i, names.index(f.group)] = 1.0
    return g


def _before_top(contrib: np.ndarray, gc: np.ndarray, values: dict[str, Any], k: int = 3) -> list[dict[str, Any]]:
    from features.pointintime.spec import FEATURE_NAMES, FEATURES, GROUPS

    names = list(GROUPS)
    out: list[dict[str, Any]] = []
    for gi in np.argsort(-gc, kind="stable"):
        c = float(gc[gi])
        if abs(c) < 0.02 or c <= 0:
            continue
        group = names[gi]
        idx = [i for i, f in enumerate(FEATURES) if f.group == group and f.name not in _BEFORE_ROUND_LEVEL]
        best = max(idx, key=lambda i: contrib[i] * math.copysign(1.0, c))
        feat = FEATURE_NAMES[best]
        v = values.get(feat)
        out.append({"group": group, "th": _before_sentence(group, feat, v, c, "th"),
                    "en": _before_sentence(group, feat, v, c, "en")})
        if len(out) == k:
            break
    return out


def _before_render(raw: np.ndarray, values: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str | None]]:
    """Today's loop as score_frame ran it (raw-margin contributions, a values dict per pupil)."""
    gc = raw @ _before_matrix()
    th, en, first = [], [], []
    for k, vals in enumerate(values):
        rs = _before_top(raw[k], gc[k], vals)
        th.append(" | ".join(r["th"] for r in rs))
        en.append(" | ".join(r["en"] for r in rs))
        first.append(rs[0]["group"] if rs else None)
    return th, en, first


def _shares(first: list[str | None], replicates: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Share of pupils whose first reason is each group: [share, 2.5%, 97.5%] over a bootstrap of
    pupils (one row per pupil in a round, so resampling rows resamples students)."""
    n = len(first)
    if not n:
        return {}
    labels = np.array(["(none)" if g is None else g for g in first], dtype=object)
    counts = Counter(labels.tolist())
    draws = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    out = {}
    for g, c in counts.most_common():
        boot = (labels == g)[draws].mean(axis=1)
        out[g] = [round(c / n, 4), round(float(np.quantile(boot, 0.025)), 4), round(float(np.quantile(boot, 0.975)), 4)]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    if a.plan:
        print(json.dumps({"benchmark": "reasons", "plan": True, **{k: v for k, v in vars(a).items() if k != "plan"}},
                         default=str))
        return
    if a.home is None or a.round_id is None:
        ap.error("--home and --round are required (`make bench` builds a home and passes them)")

    from features.home import EwsHome
    from features.pointintime.spec import FEATURE_NAMES
    from serving.fastshap import tree_shap
    from serving.model import shap_tables, to_published_scale
    from serving.reasons import GROUP_NAMES, group_matrix, rank_reasons, render_reasons
    from serving.snapshot import published
    from tests.support.reasons_oracle import reasons_of_row
    from training.registry import load_model

    home = EwsHome(root=a.home.resolve())
    model = load_model(home).model
    ref = published(home, a.round_id)
    if ref is None:
        raise SystemExit(f"round {a.round_id} is not published in {home.root}: run `ews score --round {a.round_id}` first")
    inputs = ref.manifest.columns.model_inputs
    t = ref.students(["scored", "risk_group", *inputs.values()]).to_pandas()
    t = t[t["scored"]].reset_index(drop=True)
    frame = t[list(inputs.values())].copy()
    frame.columns = list(inputs)
    x = model.encode(frame)
    raw = tree_shap(shap_tables(model), x)
    score = model.risk_score_from_margin(model.raw_margin(x))
    pub, residual = to_published_scale(model, raw, score)
    reason_gc = pub[:, :-1] @ group_matrix(for_reasons=True)

    # the round itself: first reasons of flagged pupils, before and after
    flagged = (t["risk_group"] != "normal").to_numpy()
    values = frame[list(FEATURE_NAMES)].to_dict("records")
    _, _, first_before = _before_render(raw[:, :-1], values)
    order, count = rank_reasons(reason_gc)
    first_after = [GROUP_NAMES[order[i, 0]] if count[i] else None for i in range(len(t))]
    pick = np.flatnonzero(flagged)

    # tiled to --rows: the rendering cost of a round that size
    tile = np.resize(np.arange(len(t)), a.rows)
    gc_all = reason_gc[tile]
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    th, en = render_reasons(gc_all)
    timing["column_wise"] = time.perf_counter() - t0
    m = min(a.sample, a.rows)
    t0 = time.perf_counter()
    ref_text = [reasons_of_row(row) for row in gc_all[:m]]
    timing["per_row"] = (time.perf_counter() - t0) * a.rows / m
    mismatches = sum(1 for i, (rth, ren) in enumerate(ref_text) if rth != th[i] or ren != en[i])
    raw_all = raw[tile[:m], :-1]
    t0 = time.perf_counter()
    vals_all = frame.iloc[tile[:m]][list(FEATURE_NAMES)].to_dict("records")  # score_frame built this per round
    _before_render(raw_all, vals_all)
    timing["before"] = (time.perf_counter() - t0) * a.rows / m

    out = {
        "round": a.round_id, "round_scored": len(t), "round_flagged": int(flagged.sum()), "rows": a.rows,
        "sample_rows": m, "seconds": {k: round(v, 2) for k, v in timing.items()},
        "speedup_vs_before": round(timing["before"] / timing["column_wise"], 1),
        "speedup_vs_per_row_reference": round(timing["per_row"] / timing["column_wise"], 1),
        "text_mismatches_vs_per_row_reference": mismatches,
        "max_additivity_error_published_logit": float(np.abs(residual).max()) if len(residual) else 0.0,
        "first_reason_share_of_flagged": {
            "before": _shares([first_before[i] for i in pick]), "after": _shares([first_after[i] for i in pick])},
    }
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / f"reasons_{a.rows}.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
