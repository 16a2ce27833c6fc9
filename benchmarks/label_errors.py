"""Benchmark: where the labels go wrong - every false dropout label (and every true dropout labelled
otherwise) of a simulated world, per round, by what the truth says happened and by why the records
missed it.

    .venv/bin/python -m benchmarks.label_errors --home PATH --truth SIM/truth [--horizon next_census]

`--home` is a linked home built from the simulator's deliveries (`ews simulate/ingest/link`),
`--truth` that world's truth folder. The labels are `ews trainset`'s (cutoff: the latest delivery).
For each round: rows labelled, unknown, labelled dropouts, false dropouts and agreement; the false
dropouts split by the truth's exit type (`stay`: the child was in school at the horizon), by grade,
and by the simulator's omission that hid the path (a census row of the horizon census that was
never delivered - `census_refused` - or an exits row never filed). Writes
bench-out/label_errors.json. Evaluation only: it reads the truth, as `ews trainset --truth` does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="A linked EWS_HOME of a simulated world.")
    ap.add_argument("--truth", type=Path, required=True, help="That world's truth folder (SIM/truth).")
    ap.add_argument("--horizon", choices=("next_census", "one_year"), default="next_census")
    ap.add_argument("--out-dir", "--out", dest="out_dir", type=Path, default=Path("bench-out"))
    return ap


def _rows(con: Any, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    from features.calendar import parse_round
    from features.home import EwsHome
    from features.pointintime.labels import horizon_census
    from features.pointintime.pipeline import connect_warehouse
    from simulator.evaluate import evaluate_labels

    home = EwsHome(root=a.home)
    cal = home.calendar
    con = connect_warehouse(home)
    out: dict[str, Any] = {"benchmark": "label_errors", "home": str(a.home), "truth": str(a.truth),
                           "horizon": a.horizon}
    try:
        t0 = time.perf_counter()
        q = evaluate_labels(con, a.truth, cal, horizon=a.horizon)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["overall"] = {"rows": q.rows, "unknown": q.unknown_rows, "rows_compared": q.rows_compared,
                          "agreement": round(q.agreement, 5), "precision": q.precision,
                          "precision_interval": [q.precision_lo, q.precision_hi], "recall": q.recall,
                          "confusion": q.confusion, "states": q.states,
                          "per_group": {g: {v: {"precision": x.precision, "interval": [x.precision_lo, x.precision_hi],
                                                "labelled_dropout_students": x.labelled_dropout_students,
                                                "false_dropouts": x.false_dropouts, "unknown": x.unknown,
                                                "attainable_precision": x.attainable_precision, "judged": x.judged}
                                            for v, x in vals.items()} for g, vals in q.per_group.items()}}
        rounds = [r for (r,) in con.execute("SELECT DISTINCT round_id FROM label_eval ORDER BY 1").fetchall()]
        horizons = ", ".join(f"('{r}', DATE '{horizon_census(cal, parse_round(r), a.horizon)}')" for r in rounds)
        omissions = a.truth / "omissions.parquet"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE label_err AS
            SELECT e.round_id, e.person_id, e.dropout, e.true_dropout, e.label_state, x.grade, x.exit_type,
                   coalesce((SELECT min(o.reason) FROM read_parquet('{omissions}') o
                             WHERE o.person_id = e.person_id AND o.source = 'dmc_census' AND o.describes = h.horizon),
                            (SELECT min(o.reason) FROM read_parquet('{omissions}') o
                             WHERE o.person_id = e.person_id AND o.source = 'exits'
                               AND o.describes BETWEEN x.as_of - INTERVAL 200 DAY AND h.horizon),
                            'none') AS omission
            FROM label_eval e
            JOIN (SELECT * FROM (VALUES {horizons}) v(round_id, horizon)) h USING (round_id)
            JOIN truth_rounds x ON x.person_id = e.person_id AND x.round_id = e.round_id
            WHERE e.dropout IS DISTINCT FROM e.true_dropout AND e.dropout IS NOT NULL""" if rounds else
                    "CREATE OR REPLACE TEMP TABLE label_err AS SELECT NULL::VARCHAR AS round_id WHERE false")
        per_round = _rows(con, """
            SELECT round_id, count(*) AS rows, count(*) FILTER (WHERE dropout IS NULL) AS unknown,
                   count(*) FILTER (WHERE dropout = 1) AS labelled_dropouts,
                   count(*) FILTER (WHERE dropout = 1 AND true_dropout = 0) AS false_dropouts,
                   count(*) FILTER (WHERE dropout = 0 AND true_dropout = 1) AS missed_dropouts,
                   round(avg(CASE WHEN dropout = true_dropout THEN 1.0 ELSE 0.0 END)
                         FILTER (WHERE dropout IS NOT NULL), 5) AS agreement
            FROM label_eval GROUP BY round_id ORDER BY round_id""")
        for key in ("exit_type", "omission", "grade"):
            split = _rows(con, f"""SELECT round_id, {key} AS k, count(*) AS n FROM label_err
                                   WHERE dropout = 1 GROUP BY ALL ORDER BY round_id, n DESC, k""")
            for r in per_round:
                r[f"false_dropouts_by_{key}"] = {s["k"]: s["n"] for s in split if s["round_id"] == r["round_id"]}
        out["per_round"] = per_round
        out["false_dropouts"] = {
            key: {s["k"]: s["n"] for s in _rows(con, f"SELECT {key} AS k, count(*) AS n FROM label_err "
                                                     "WHERE dropout = 1 GROUP BY ALL ORDER BY n DESC, k")}
            for key in ("exit_type", "omission", "grade")}
        out["missed_dropouts_by_omission"] = {s["k"]: s["n"] for s in _rows(
            con, "SELECT omission AS k, count(*) AS n FROM label_err WHERE dropout = 0 GROUP BY ALL ORDER BY n DESC, k")}
    finally:
        con.close()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    path = a.out_dir / "label_errors.json"
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"{'round':<16}{'rows':>9}{'unknown':>9}{'dropouts':>10}{'false':>7}{'missed':>8}{'agree':>9}  false by omission")
    for r in out["per_round"]:
        print(f"{r['round_id']:<16}{r['rows']:>9}{r['unknown']:>9}{r['labelled_dropouts']:>10}{r['false_dropouts']:>7}"
              f"{r['missed_dropouts']:>8}{r['agreement']:>9}  {r['false_dropouts_by_omission']}")
    print(json.dumps({k: out[k] for k in ("false_dropouts", "missed_dropouts_by_omission")}, default=str))
    print(f"overall precision {q.precision} {[q.precision_lo, q.precision_hi]}, agreement {q.agreement:.5f}, "
          f"unknown {q.unknown_rows} of {q.rows}")
    for g, vals in out["overall"]["per_group"].items():
        for v, x in vals.items():
            if x["precision"] is not None:
                lo, hi = x["interval"]
                print(f"  {g:<12}{v:<20}{x['precision']:.4f} [{lo:.4f}, {hi:.4f}]  dropout students "
                      f"{x['labelled_dropout_students']:>6}  false {x['false_dropouts']:>5}  unknown {x['unknown']:>6}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
