"""Action-aware training measured with the real pipeline (issue 15, part 6b): LightGBM, not a profile model.

    .venv/bin/python -m benchmarks.bench_action_training [--seeds 11 5 23] [--students 10000] [--years 4]
                                                         [--reps 1000] [--reference] [--work DIR] [--out FILE]

benchmarks/bench_loop.py measures the figure "training with action-aware outcomes shows smaller bias
in the predicted risk of treated-profile pupils than naive retraining" with a model of the risk by
profile fitted on the simulator's own rows. Here the same world (schools acting strongly from the
first term: capacity 0.2, uptake 1, holdout 0.3, effects 3; bench_loop's `training` world, with the
four years the default temporal folds need) goes through the pipeline as a deployment would run it:

    simulate --interventions -> ingest (deliveries, then the assignment folder) -> link -> trainset
    -> train (naive: every outcome)   and   train --actions (training/actions.py)
    -> both models' published (calibrated) score, `RiskModel.risk_score`, on the test fold's rows

The treated profile and the truth are bench_loop's: the eligible pupils of a term (every row of
truth/interventions.parquet: the school's top share, served or held out), scored at the term's mid
round, against `p_dropout_if_not`, their probability of dropping out had nobody acted on them that
term. A row of the test fold is tied to the simulator's person through its census record (as
simulator/evaluate.py `ceiling_table` does). Bias = mean(score - truth) over those rows; intervals:
bootstrap by student over the scored pupils (the two models fixed: the intervals say how precisely
this test fold measures each model's bias, not how the bias would vary over refits; the three seeds
show that). Both models train with one thread (deterministic). `--reference` adds a third model,
trained on the same seed's world where nobody acts; `by_history` splits every bias between the
eligible pupils acted on before (whose truth keeps what is left of that action) and the first-timers.
Figures and their reading: simulator/PROCESS.md §2b. Prints JSON (and writes it to --out).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

FIRST_YEAR = 2563
# bench_loop's training world: strong actions on a fifth of each school, every term from the first.
WORLD = {"from_year": FIRST_YEAR, "capacity_share": 0.2, "uptake": 1.0, "holdout_share": 0.3,
         "cct_effect_per_poverty": 3.0, "home_visit_effect_per_disengagement": 3.0,
         "counselling_effect_per_disengagement": 3.0}


def build_home(sim: Path, home_root: Path, seed: int, students: int, years: int, acting: bool = True) -> Any:
    """Simulate the acting world (or, `acting=False`, the same seed where nobody acts), then ingest,
    link and build the default training set."""
    from features.home import EwsHome
    from features.ingest.actions import ingest_assignment
    from features.ingest.pipeline import ingest_path
    from features.linkage.link import link
    from features.pointintime.pipeline import TrainsetConfig, build_trainset
    from simulator.api import simulate
    from simulator.config import InterventionConfig, SimulationConfig

    cfg = SimulationConfig.small(students=students, years=years, seed=seed)
    simulate(cfg.model_copy(update={"interventions": InterventionConfig(**WORLD)}) if acting else cfg, sim)
    home = EwsHome(root=home_root).ensure()
    ingest_path(sim / "deliveries", home)
    if acting:
        ingest_assignment(sim / "actions", home)
    link(home)
    build_trainset(home, TrainsetConfig())
    return home


def persons_of(home: Any, truth: Path, round_ids: list[str]) -> pd.DataFrame:
    """(student_key, round_id, person_id) of the rounds' scored population, through each row's census
    record (the join simulator/evaluate.py `ceiling_table` makes). Evaluation only."""
    from features.calendar import parse_round
    from features.db import scalar
    from features.pointintime.labels import population_sql
    from features.pointintime.pipeline import connect_warehouse
    from simulator.evaluate import attach_truth

    con = connect_warehouse(home)
    try:
        attach_truth(con, truth)
        cutoff = scalar(con, "SELECT max(known_at) FROM wh.src_dmc_census")
        parts = [f"""SELECT p.student_key, '{rid}' AS round_id, tr.person_id
                     FROM ({population_sql(home.calendar, parse_round(rid), min(home.calendar.as_of(rid), cutoff))}) p
                     JOIN truth_records tr USING (delivery_id, source_file, source_line)""" for rid in round_ids]
        return con.sql(" UNION ALL ".join(parts)).fetchdf().drop_duplicates(["student_key", "round_id"])
    finally:
        con.close()


def bootstrap_biases(student: np.ndarray, errors: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """(reps, k) mean errors per column of `errors` over students drawn with replacement."""
    codes, idx = np.unique(student, return_inverse=True)
    sums = np.stack([np.bincount(idx, weights=errors[:, j], minlength=len(codes)) for j in range(errors.shape[1])], axis=1)
    rows = np.bincount(idx, minlength=len(codes)).astype(float)
    rng = np.random.default_rng(seed)
    out = np.empty((reps, errors.shape[1]))
    for b in range(reps):
        w = rng.multinomial(len(codes), np.full(len(codes), 1.0 / len(codes)))
        out[b] = (w @ sums) / (w @ rows)
    return out


def reference_model(home: Any, num_threads: int = 1) -> Any:
    """The model trained on the same seed's world where nobody acts: the best an action-aware
    training could hope for, so what is left of its bias is the model's own, not the actions'."""
    from training.config import ModelConfig, TrainConfig
    from training.train import train

    return train(home, TrainConfig(model=ModelConfig(num_threads=num_threads), shap_sample_rows=300)).result.model


def measure(sim: Path, home: Any, reps: int, seed: int, num_threads: int = 1,
            reference: Any | None = None) -> dict[str, Any]:
    """Train naive and action-aware, score the test fold with both (and with `reference`, a model
    trained where nobody acts, if given), compare on the eligible pupils."""
    from training.config import ModelConfig, TrainConfig
    from training.train import train

    cfg = TrainConfig(model=ModelConfig(num_threads=num_threads), shap_sample_rows=300)
    t0 = time.perf_counter()
    naive = train(home, cfg)
    t1 = time.perf_counter()
    aware = train(home, cfg, actions=True)
    t2 = time.perf_counter()
    split = naive.result.split
    assert split == aware.result.split, "leaving rows out must not move the folds"
    out = compare(sim, home, split.test, naive.result.model, aware.result.model, reference, reps, seed)
    out["aware_rows_left_out"] = int(sum(naive.result.fold_rows.values()) - sum(aware.result.fold_rows.values()))
    out["train_seconds"] = {"naive": round(t1 - t0, 1), "aware": round(t2 - t1, 1)}
    return out


def compare(sim: Path, home: Any, test_rounds: Sequence[str], naive: Any, aware: Any, reference: Any | None,
            reps: int, seed: int) -> dict[str, Any]:
    """The three models' published scores (`RiskModel`s; `reference` may be None) on the eligible
    pupils of the test fold's mid round, against the truth."""
    from training.data import load_trainset

    ts = load_trainset(home)
    test = ts.frame[ts.frame["round_id"].astype(str).isin(test_rounds)].reset_index(drop=True)
    scores = {"naive": naive.risk_score(test), "aware": aware.risk_score(test)}
    scores["reference"] = reference.risk_score(test) if reference is not None else np.full(len(test), np.nan)

    # the treated profile: eligible pupil-terms of the truth, at the term's mid round (as bench_loop)
    mid = [r for r in test_rounds if r.endswith("-mid")] or list(test_rounds)
    persons = persons_of(home, sim / "truth", mid)
    t = pd.read_parquet(sim / "truth" / "interventions.parquet",
                        columns=["round_id", "person_id", "arm", "treated", "carried_logit", "p_dropout_if_not",
                                 "p_dropout_if_acted"])
    t["term_of"] = t["round_id"].str[:7]
    rows = test.assign(**scores, term_of=test["round_id"].astype(str).str[:7])
    rows = rows[rows["round_id"].astype(str).isin(mid)].merge(persons, on=["student_key", "round_id"])
    e = rows.merge(t.drop(columns="round_id"), on=["person_id", "term_of"])
    truth = e["p_dropout_if_not"].to_numpy()
    realised = np.where(e["treated"], e["p_dropout_if_acted"], e["p_dropout_if_not"])
    err = np.stack([e["naive"] - truth, e["aware"] - truth, e["reference"] - truth], axis=1)
    boot = bootstrap_biases(e["student_key"].astype(str).to_numpy(), err, reps, seed)
    lo, hi = np.quantile(boot, [0.025, 0.975], axis=0)
    gap = np.abs(boot[:, 0]) - np.abs(boot[:, 1])  # > 0: the action-aware model is closer to the truth
    bias = err.mean(axis=0)
    # the rest of the same round, against the truth of the world as it was (truth/rounds.parquet
    # p_dropout): how well each model is calibrated where nobody acted this term
    r = pd.read_parquet(sim / "truth" / "rounds.parquet", columns=["round_id", "person_id", "p_dropout"])
    others = rows[~rows.set_index(["person_id", "term_of"]).index.isin(e.set_index(["person_id", "term_of"]).index)]
    others = others.merge(r, on=["round_id", "person_id"])
    pct = lambda x: round(100 * float(x), 2)  # noqa: E731 (percentage points)
    new = (e["carried_logit"] == 0).to_numpy()
    by_history: dict[str, dict[str, Any]] = {}
    for group, m in (("first_time", new), ("acted_before", ~new)):
        by_history[group] = {"rows": int(m.sum()), "true_mean_risk_if_not_pct": pct(truth[m].mean())}
        for j, name in enumerate(("naive", "aware", "reference")):
            by_history[group][f"{name}_bias_pts"] = pct(err[m, j].mean())
    return {
        "test_rounds": list(test_rounds), "scored_rounds": mid, "trainset_rows": int(len(ts.frame)),
        "eligible_rows": int(len(e)), "eligible_students": int(e["student_key"].nunique()),
        "served_share": round(float(e["arm"].eq("served").mean()), 3),
        "true_mean_risk_if_not_pct": pct(truth.mean()), "true_mean_risk_realised_pct": pct(realised.mean()),
        "naive_mean_score_pct": pct(e["naive"].mean()), "aware_mean_score_pct": pct(e["aware"].mean()),
        "naive_bias_pts": pct(bias[0]), "naive_low": pct(lo[0]), "naive_high": pct(hi[0]),
        "aware_bias_pts": pct(bias[1]), "aware_low": pct(lo[1]), "aware_high": pct(hi[1]),
        "abs_bias_reduction_pts": pct(abs(bias[0]) - abs(bias[1])),
        "abs_bias_reduction_low": pct(np.quantile(gap, 0.025)), "abs_bias_reduction_high": pct(np.quantile(gap, 0.975)),
        "other_rows": int(len(others)), "other_true_mean_pct": pct(others["p_dropout"].mean()),
        "other_naive_mean_pct": pct(others["naive"].mean()), "other_aware_mean_pct": pct(others["aware"].mean()),
        "reference_bias_pts": pct(bias[2]) if reference is not None else None,
        "reference_low": pct(lo[2]) if reference is not None else None,
        "reference_high": pct(hi[2]) if reference is not None else None,
        "other_reference_mean_pct": pct(others["reference"].mean()) if reference is not None else None,
        # pupils acted on before carry what is left of it (fade_per_term) in p_dropout_if_not too; those
        # never acted on before (carried_logit 0) show each model's bias free of it
        "by_history": by_history, "reps": reps,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[11, 5, 23])
    p.add_argument("--students", type=int, default=10_000)
    p.add_argument("--years", type=int, default=4, help="Four: the default folds need a test, a calibration and a training year.")
    p.add_argument("--reps", type=int, default=1000, help="Bootstrap replicates.")
    p.add_argument("--work", type=Path, default=None, help="Folder for the worlds and homes (default: a temporary one).")
    p.add_argument("--out", type=Path, default=Path("bench-out/action_training.json"))
    p.add_argument("--reference", action="store_true",
                   help="Also train on the same seed's world where nobody acts and score the same pupils with it "
                        "(the bias a model has on them with no action at all; doubles the time).")
    p.add_argument("--plan", action="store_true", help="Print the resolved arguments and exit without measuring.")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import os

    a = parser().parse_args(argv)
    if a.plan:
        print(json.dumps({"benchmark": "action_training", **vars(a)}, default=str))
        return {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result: dict[str, Any] = {"students": a.students, "years": a.years, "world": WORLD, "seeds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        for seed in a.seeds:
            w = work / f"seed{seed}"
            t0 = time.perf_counter()
            home = build_home(w / "sim", w / "home", seed, a.students, a.years)
            ref = None
            if a.reference:
                ref = reference_model(build_home(w / "sim-nobody-acts", w / "home-nobody-acts", seed, a.students, a.years,
                                                 acting=False))
            r = measure(w / "sim", home, a.reps, seed, reference=ref)
            r["pipeline_seconds"] = round(time.perf_counter() - t0, 1)
            result["seeds"][str(seed)] = r
            print(json.dumps({seed: r}, default=float), flush=True)
    text = json.dumps(result, indent=1, default=float)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
