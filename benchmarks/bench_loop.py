"""Closing the loop on the simulator (issue 15, parts 5-6): the figures, against the truth.

    .venv/bin/python -m benchmarks.bench_loop [--seeds 11 5 23] [--work DIR] [--reps 500] [--out FILE]

Three worlds per seed, simulator only (the pipeline is exercised by the tests; here the outcomes,
assignment and truth come straight from the simulator's files, so the figures isolate the methods):

* effect: 8,000 pupils x 3 years, schools acting every term with the default settings
  (simulator/config.py `InterventionConfig`). The holdout estimate of the effect of being served
  (monitoring/effects.py, bootstrap by student) against the true average effect
  (simulator.interventions.true_effects), and the comparison without a holdout (acted on vs the rest).
* calibration: 8,000 x 2, schools acting strongly from the last term (capacity 0.3, effects 2.5):
  observed / expected dropouts of a model that is calibrated for a world nobody acts in, on every
  pupil and on the untreated (exact Poisson intervals, as monitoring judges them).
* uplift: on the effect world, each school serves half of its eligible list per round by risk
  (the truth's probability without action), by the benefit estimated per cell (action x poverty x
  term) from the holdout (monitoring/uplift.py), by the true benefit, or at random: expected
  dropouts averted.
* training: 10,000 x 2, acting strongly from the first term (capacity 0.2, uptake 1, effects 3):
  a model of the risk by profile (eligibility x term x poverty) fitted on every outcome (naive) and
  without the acted ones (training/actions.py), its mean error on the eligible pupils against their
  probability of dropping out had nobody acted; intervals: bootstrap by student.

Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FIRST_YEAR = 2563


def _simulate(folder: Path, seed: int, students: int, years: int, **iv: Any) -> Path:
    from simulator.api import simulate
    from simulator.config import InterventionConfig, SimulationConfig

    cfg = SimulationConfig.small(students=students, years=years, seed=seed)
    simulate(cfg.model_copy(update={"interventions": InterventionConfig(**iv)}), folder)
    return folder / "truth"


def effect_figures(truth: Path, reps: int) -> dict[str, Any]:
    from monitoring.effects import holdout_effect
    from simulator.interventions import true_effects

    t = pd.read_parquet(truth / "interventions.parquet")
    itt, per = holdout_effect(t["dropout"].to_numpy(), t["arm"].eq("served").to_numpy(),
                              t["person_id"].astype(str).to_numpy(), t["treated"].to_numpy(), reps=reps)
    r = pd.read_parquet(truth / "rounds.parquet", columns=["round_id", "person_id", "dropout"])
    m = r[r["round_id"].str.endswith("early")].merge(t[["round_id", "person_id", "treated"]],
                                                      on=["round_id", "person_id"], how="left")
    naive, _ = holdout_effect(m["dropout"].to_numpy(), m["treated"].fillna(False).astype(bool).to_numpy(),
                              m["person_id"].astype(str).to_numpy(), reps=reps)
    true = true_effects(truth)
    return {"true": true, "holdout_itt": itt.model_dump(), "holdout_per_treated": per.model_dump() if per else None,
            "itt_covered": itt.low <= true["itt"] <= itt.high,
            "without_holdout": naive.model_dump(), "without_holdout_covers": naive.low <= true["itt"] <= naive.high}


def calibration_figures(truth: Path) -> dict[str, Any]:
    from monitoring.effects import with_actions
    from monitoring.outcomes import observed_to_expected_interval

    rid = f"{FIRST_YEAR + 1}-T2"
    t = pd.read_parquet(truth / "interventions.parquet")
    t = t[t["round_id"] == f"{rid}-early"]
    r = pd.read_parquet(truth / "rounds.parquet")
    r = r[r["round_id"] == f"{rid}-mid"].merge(t[["person_id", "arm", "p_dropout_if_not"]], on="person_id", how="left")
    rows = pd.DataFrame({"student_key": r["person_id"].astype(str), "school_code": r["school_code"],
                         "dropout": r["dropout"].astype(float),
                         "risk_score": np.where(r["arm"].notna(), r["p_dropout_if_not"], r["p_dropout"])})
    a = pd.DataFrame({"student_key": t["person_id"].astype(str), "arm": t["arm"], "treated": t["treated"]})
    judged, _ = with_actions(rows, a)
    out = {}
    for name, f in (("every_pupil", rows), ("untreated", judged)):
        o, e = int(f["dropout"].sum()), float(f["risk_score"].sum())
        lo, hi = observed_to_expected_interval(o, e)
        out[name] = {"rows": len(f), "observed": o, "expected": round(e, 1), "oe": round(o / e, 3),
                     "low": round(lo, 3), "high": round(hi, 3)}
    return out


def uplift_figures(truth: Path, share: float = 0.5) -> dict[str, Any]:
    """Each school serves half of its eligible list per round, chosen by one ranking or another:
    the expected dropouts averted (truth: would_take_up x (p_if_not - p_if_acted))."""
    from monitoring.uplift import cell_uplift, net_benefit_at_capacity

    t = pd.read_parquet(truth / "interventions.parquet")
    r = pd.read_parquet(truth / "rounds.parquet", columns=["round_id", "person_id", "extremely_poor", "term"])
    t = t.merge(r, on=["round_id", "person_id"])
    benefit = ((t["p_dropout_if_not"] - t["p_dropout_if_acted"]) * t["would_take_up"]).to_numpy()
    cells = ["action", "extremely_poor", "term"]
    estimated = t.join(cell_uplift(t, cells, min_rows=20), on=cells)["uplift"].fillna(0.0).to_numpy()
    key = (t["round_id"] + "|" + t["school_code"]).to_numpy()
    rankings = {"risk_without_action": t["p_dropout_if_not"].to_numpy(), "estimated_uplift_by_cell": estimated,
                "true_uplift": benefit, "random": np.random.default_rng(0).random(len(t))}
    out: dict[str, Any] = {name: round(net_benefit_at_capacity(key, rank, benefit, share), 2) for name, rank in rankings.items()}
    out["view"] = uplift_view_figures(t, benefit, share)
    return out


def uplift_view_figures(t: pd.DataFrame, benefit: np.ndarray, share: float) -> dict[str, Any]:
    """The analysts' uplift view as `ews monitor --actions` computes it (monitoring/uplift.py), on the
    truth's eligible rows (risk: the probability without action, as a calibrated model would give;
    cells from the school's rule inputs), against the truth: the dropouts each of its two rankings
    really averts, and whether the view's interval covers it."""
    from monitoring.uplift import UpliftConfig, capacity_choices, cell_columns, uplift_view

    cfg = UpliftConfig(capacity_share=share)
    rows = pd.DataFrame({"student_key": t["person_id"].astype(str).to_numpy(),
                         "school_code": (t["round_id"] + "|" + t["school_code"]).to_numpy(),
                         "dropout": t["dropout"].astype(float).to_numpy(), "risk_score": t["p_dropout_if_not"].to_numpy(),
                         "risk_group": np.where(t["p_dropout_if_not"] >= t["p_dropout_if_not"].median(), "problem", "at_risk"),
                         "extremely_poor": t["extremely_poor"].to_numpy(),
                         "att_below_cct_85": t["action"].eq("home_visit").to_numpy(), "arm": t["arm"].to_numpy()})
    view = uplift_view(rows, cfg, "all acting rounds")
    # the same choices the view made (same rows, folds and seed), to price them with the truth
    e = pd.concat([rows, cell_columns(rows, cfg.cells).add_prefix("cell_")], axis=1)
    by_risk, by_benefit = capacity_choices(e, rows["student_key"].to_numpy(), [f"cell_{c}" for c in cfg.cells], cfg,
                                           np.random.default_rng(cfg.seed))
    c = view.capacity
    assert c is not None
    true = {"risk": float(benefit[by_risk].sum()), "estimated_benefit": float(benefit[by_benefit].sum())}
    return {"cells_shown": sum(not x.suppressed for x in view.cells), "cells_suppressed": sum(x.suppressed for x in view.cells),
            "by_risk": c.by_risk.model_dump(), "by_benefit": c.by_benefit.model_dump(), "true_averted": true,
            "by_risk_covers": c.by_risk.low <= true["risk"] <= c.by_risk.high,
            "by_benefit_covers": c.by_benefit.low <= true["estimated_benefit"] <= c.by_benefit.high,
            "difference": [c.benefit_minus_risk, c.low, c.high],
            "true_difference": true["estimated_benefit"] - true["risk"]}


def training_figures(truth: Path, reps: int, seed: int) -> dict[str, Any]:
    from training.actions import acted_rows

    t = pd.read_parquet(truth / "interventions.parquet")
    r = pd.read_parquet(truth / "rounds.parquet", columns=["round_id", "academic_year", "term", "person_id",
                                                           "extremely_poor", "dropout"])
    r = r[r["round_id"].str.endswith("mid")]
    t = t.assign(academic_year=t["round_id"].str[:4].astype(int), term=t["round_id"].str[6].astype(int))
    frame = pd.DataFrame({"student_key": r["person_id"].astype(str).to_numpy(), "round_id": r["round_id"].to_numpy(),
                          "academic_year": r["academic_year"].astype(int).to_numpy(), "term": r["term"].astype(int).to_numpy(),
                          "extremely_poor": r["extremely_poor"].to_numpy(), "label": r["dropout"].to_numpy()})
    frame = frame.merge(t.assign(student_key=t["person_id"].astype(str))[
        ["student_key", "academic_year", "term", "p_dropout_if_not"]], on=["student_key", "academic_year", "term"], how="left")
    frame["eligible"] = frame["p_dropout_if_not"].notna()
    assignment = pd.DataFrame({"student_key": t["person_id"].astype(str), "academic_year": t["academic_year"],
                               "term": t["term"], "arm": t["arm"], "treated": t["treated"]})
    frame["acted"] = acted_rows(frame, assignment, 0)
    cells = ["eligible", "term", "extremely_poor"]

    def biases(f: pd.DataFrame) -> tuple[float, float]:
        target = f[f["eligible"]]
        out = []
        for rows in (f, f[~f["acted"]]):
            pred = target.join(rows.groupby(cells)["label"].mean().rename("pred"), on=cells)["pred"]
            out.append(float((pred - target["p_dropout_if_not"]).mean()))
        return out[0], out[1]

    naive, aware = biases(frame)
    students = frame["student_key"].unique()
    groups = frame.groupby("student_key").indices
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(reps):
        pick = rng.choice(students, len(students))
        boot.append(biases(frame.iloc[np.concatenate([groups[s] for s in pick])]))
    b = np.array(boot)
    lo, hi = np.quantile(b, [0.025, 0.975], axis=0)
    return {"eligible_rows": int(frame["eligible"].sum()), "acted_rows": int(frame["acted"].sum()),
            "true_mean_risk_eligible": float(frame.loc[frame["eligible"], "p_dropout_if_not"].mean()),
            "naive_bias": naive, "naive_low": float(lo[0]), "naive_high": float(hi[0]),
            "aware_bias": aware, "aware_low": float(lo[1]), "aware_high": float(hi[1])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 5, 23])
    p.add_argument("--work", type=Path, default=None, help="Folder for the simulated worlds (default: a temporary one).")
    p.add_argument("--reps", type=int, default=500, help="Bootstrap replicates.")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    strong = {"cct_effect_per_poverty": 2.5, "home_visit_effect_per_disengagement": 2.5,
              "counselling_effect_per_disengagement": 2.5}
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        for seed in a.seeds:
            w = work / f"seed{seed}"
            result[str(seed)] = {
                "effect": effect_figures(_simulate(w / "effect", seed, 8000, 3, from_year=FIRST_YEAR), a.reps),
                "uplift": uplift_figures(w / "effect" / "truth"),
                "calibration": calibration_figures(_simulate(
                    w / "calibration", seed, 8000, 2, from_year=FIRST_YEAR + 1, from_term=2, capacity_share=0.3,
                    uptake=0.9, holdout_share=0.25, **strong)),
                "training": training_figures(_simulate(
                    w / "training", seed, 10000, 2, from_year=FIRST_YEAR, capacity_share=0.2, uptake=1.0,
                    holdout_share=0.3, **{k: 3.0 for k in strong}), min(a.reps, 200), seed),
            }
    text = json.dumps(result, indent=1, default=float)
    if a.out:
        a.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
