"""The M6 rule of the labels and the not-found list (issue 11), before and after, against the truth.

    .venv/bin/python -m benchmarks.bench_m6_rule HOME TRUTH [--reps 1000]

HOME: an ingested and linked home of a simulated world (`ews simulate --out W/sim --students 20000
--years 4 --seed 2`, `ews ingest W/sim/deliveries --home W/home`, `ews link --home W/home`); TRUTH:
W/sim/truth. "before" is the rule that read a มส in M6's term-2 final marks as "cannot have
completed" (only marks without a มส made a completion untold); "after" is `labels.M6_COMPLETION`
(any term-2 final marks, no exits row: completed or left, `unknown`). Prints, as JSON, label
precision and recall per grade band with 95% intervals (1,000 bootstrap replicates by student),
the rows the rule moved and what they truly were, and the not-found list's precision and recall.
Evaluation only (simulator truth); one world takes a few minutes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from features.home import EwsHome
from features.pointintime.labels import EVIDENCE, M6_COMPLETION
from features.pointintime.pipeline import connect_warehouse
from simulator.evaluate import evaluate_labels


def old_where(d):  # the rule before issue 11's M6 change: the marks must hold no มส
    return M6_COMPLETION.where(d).replace("t.assessment = 'final' AND t.term = 2 AND",
                                          "t.assessment = 'final' AND t.term = 2 AND t.n_mark_ms = 0 AND")


OLD = tuple(dataclasses.replace(e, where=old_where) if e is M6_COMPLETION else e for e in EVIDENCE)


def stats(con, reps: int) -> dict:
    out = {}
    per = con.execute("""
        SELECT g_grade_band, person_id,
               count(*) FILTER (WHERE dropout = 1) AS lab,
               count(*) FILTER (WHERE dropout = 1 AND true_dropout = 1) AS tp,
               count(*) FILTER (WHERE dropout IS NOT NULL AND true_dropout = 1) AS pos,
               count(*) FILTER (WHERE dropout IS NULL) AS unk, count(*) AS n
        FROM label_eval GROUP BY ALL ORDER BY 1, 2""").fetch_df()
    rng = np.random.default_rng(0)
    for band, g in [("all", per), *per.groupby("g_grade_band")]:
        lab, tp, pos = (g[c].to_numpy(float) for c in ("lab", "tp", "pos"))
        draw = rng.integers(0, len(g), (reps, len(g)))
        with np.errstate(invalid="ignore", divide="ignore"):
            p = tp[draw].sum(1) / lab[draw].sum(1)
            r = tp[draw].sum(1) / pos[draw].sum(1)
        out[band] = {
            "labelled_dropouts": int(lab.sum()), "false_dropouts": int(lab.sum() - tp.sum()),
            "true_dropouts_labelled": int(pos.sum()), "unknown_rows": int(g["unk"].sum()), "rows": int(g["n"].sum()),
            "precision": tp.sum() / lab.sum(), "precision_ci": [float(np.nanquantile(p, .025)), float(np.nanquantile(p, .975))],
            "recall": tp.sum() / pos.sum(), "recall_ci": [float(np.nanquantile(r, .025)), float(np.nanquantile(r, .975))],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("home", type=Path)
    ap.add_argument("truth", type=Path)
    ap.add_argument("--reps", type=int, default=1000)
    a = ap.parse_args()
    home = EwsHome(root=a.home)
    con = connect_warehouse(home)
    res = {}
    for name, ev in (("before", OLD), ("after", EVIDENCE)):
        evaluate_labels(con, a.truth, evidence=ev)
        con.execute(f"CREATE OR REPLACE TEMP TABLE eval_{name} AS SELECT * FROM label_eval")
        res[name] = stats(con, a.reps)
    # the rows the rule moved, and what they truly were
    moved = con.execute("""
        SELECT b.g_grade_band, b.dropout AS before, a.dropout AS after, b.true_dropout, count(*) AS rows,
               count(DISTINCT b.person_id) AS pupils
        FROM eval_before b JOIN eval_after a USING (round_id, person_id)
        WHERE b.dropout IS DISTINCT FROM a.dropout GROUP BY ALL ORDER BY ALL""").fetch_df()
    res["moved"] = moved.to_dict(orient="records")
    # the not-found list (shares the rule): precision and recall before and after
    from simulator.evaluate_notfound import evaluate_notfound
    for name, ev in (("before", OLD), ("after", EVIDENCE)):
        q = evaluate_notfound(con, a.truth, bootstrap=a.reps, evidence=ev).overall
        res[f"notfound_{name}"] = {"listed": q.listed, "truly_out": q.truly_out,
                                   "precision": [q.precision.value, q.precision.low, q.precision.high],
                                   "recall": [q.recall.value, q.recall.low, q.recall.high]}
    con.close()
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
