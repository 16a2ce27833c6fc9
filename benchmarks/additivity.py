"""Where the model's shortfall comes from, and whether trees have anything to add, measured with the
observable ceiling as a soft target.

    python -m benchmarks.additivity --home H --truth SIM/truth [--threads 2]

H is a home with a training set (`ews trainset`), SIM the simulator's folder of that world. Issue 12
asks LightGBM to beat logistic regression by a margin whose interval excludes 0, and to reach 90% of
the observable ceiling's PR-AUC. Neither model can beat the best function of the features it is
given; this benchmark measures how good that best function is, in three families:

* the **additive projection**: the project's logistic baseline (training/baselines.py, the same
  features, imputation and one-hot coding) fitted to `p_observable` itself (fractional response:
  each row twice, as a dropout weighted p and as a stayer weighted 1 - p);
* the **tree projection**: LightGBM with the model's settings (7 leaves, monotone constraints) and the
  `cross_entropy` objective, fitted to `p_observable` (up to 20,000 rounds: a soft target needs many
  more than a label);
* the **flexible projection**: the same with 31-leaf unconstrained trees (whatever the model's
  settings allow or not).

Trees are early-stopped on a fifth of the students. All learn from the rows the published booster
learns from (`training.pipeline.learned_rows`), with the ceiling's soft target in place of the 0/1
label: the label's noise is gone, so what is left is what each family *can* express with these
features. Then, on the test fold, against the labels:

  ceiling - flexible projection   what the features miss of what the records reveal;
  flexible - tree projection      what the model's settings (leaves, monotone constraints) cost;
  tree - additive projection      what non-additivity in the features is worth to the model's family
                                  (the most it could gain over logistic regression with unlimited labels);
  tree projection - LightGBM      what learning from 0/1 labels of this many rows costs.

Each with a paired 95% student-level bootstrap interval (the replicates `ews train` uses), beside the
trained model's and the logistic baseline's own figures (`training.pipeline.train_and_evaluate`, as
`ews train` fits them). Also the share of the ceiling's log-odds variance on the test fold each
projection reproduces (R^2 of the logits). Nothing is logged or registered; outside `make bench`
(a full training run, minutes). training/DECISIONS.md quotes it (issue 12) from
`make figures --only additivity` (benchmarks/figures.py), which runs it on three seeds' worlds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.folds import world_parser

PROJECTIONS = ("flexible_projection", "tree_projection", "additive_projection")
SCORES = ("p_observable", *PROJECTIONS, "risk_score", "baseline_logistic")
DIFFERENCES = (("p_observable", "flexible_projection"), ("flexible_projection", "tree_projection"),
               ("tree_projection", "additive_projection"),
               ("tree_projection", "risk_score"), ("risk_score", "baseline_logistic"),
               ("p_observable", "risk_score"))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def additive_projection(learn: pd.DataFrame, target: np.ndarray, seed: int,
                        features: tuple[str, ...] | None = None) -> Any:
    """The logistic baseline's pipeline fitted to a soft target (fractional response: the log-likelihood
    of p as a weighted pair of rows is the cross-entropy of the target, so the fit is the additive
    function of the features closest to the target's logit). `features`: the baseline's by default."""
    from training.baselines import FEATURE_NAMES, logistic_input, logistic_pipeline

    features = features or FEATURE_NAMES
    x = logistic_input(learn, features)
    both = pd.concat([x, x], ignore_index=True)
    y = np.r_[np.ones(len(x)), np.zeros(len(x))]
    w = np.r_[target, 1.0 - target]
    return logistic_pipeline(seed, features).fit(both, y, lr__sample_weight=w)


# A soft target needs far more rounds than a 0/1 label: at the model's learning rate 5,000 rounds did
# not early-stop on seed 2. A faster rate (0.2) stopped sooner but ranked the top worse (PR-AUC 0.315
# against 0.340 at 5,000 rounds of 0.05), so the projections keep the model's rate under a larger cap.
PROJECTION_MAX_TREES = 20_000
# The flexible projection: larger trees, smaller leaves, no monotone constraints -- the best tree
# function of the features this budget finds, whatever the model's settings allow.
FLEXIBLE = {"num_leaves": 31, "min_child_samples": 50}


def tree_projection(learn: pd.DataFrame, target: np.ndarray, cfg: Any, threads: int,
                    flexible: bool = False) -> tuple[Any, Any, int]:
    """LightGBM fitted to a soft target (`cross_entropy`): the model's settings (monotone constraints
    included) or, `flexible`, larger unconstrained trees; early-stopped on a fifth of the students
    (seeded by the model's seed)."""
    import lightgbm as lgb

    from training.model import FeatureSet, crossfit_groups, lgb_params

    features = FeatureSet.learn(learn)
    x = features.encode(learn)
    held = crossfit_groups(learn["student_key"].astype(str).to_numpy(), 5, cfg.model.seed) == 0
    model = cfg.model.model_copy(update=FLEXIBLE if flexible else {})
    params = {**lgb_params(model, features.names, monotone=False if flexible else None),
              "objective": "cross_entropy", "metric": "cross_entropy", "num_threads": threads}
    cats = features.categorical_indices
    fit = lgb.Dataset(x[~held], label=target[~held], feature_name=list(features.names), categorical_feature=cats)
    val = lgb.Dataset(x[held], label=target[held], reference=fit)
    booster = lgb.train(params, fit, num_boost_round=PROJECTION_MAX_TREES, valid_sets=[val],
                        callbacks=[lgb.early_stopping(cfg.model.early_stopping_rounds, verbose=False)])
    return booster, features, booster.best_iteration


def main(argv: list[str] | None = None) -> None:
    ap = world_parser(__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)

    # The entry point's job (ews.cli): training never imports the simulator, the benchmark may.
    from ews.cli import _simulator_truth
    from features.evaluation import install_truth_evaluator
    from features.home import EwsHome
    from training.baselines import logistic_input
    from training.bootstrap import interval, student_weights
    from training.config import TrainConfig
    from training.data import load_trainset
    from training.metrics import rank_metrics, within_grade_rank_metrics
    from training.pipeline import learned_rows, split_trainset, train_and_evaluate
    from training.train import truth_for_rounds

    install_truth_evaluator(_simulator_truth)
    home = EwsHome(root=args.home)
    ts = load_trainset(home)
    cfg = TrainConfig.model_validate({"model": {**TrainConfig().model.model_dump(), "num_threads": args.threads}})
    split, folds = split_trainset(ts, cfg)
    learn = learned_rows(folds, cfg)
    truth = truth_for_rounds(home, args.truth, sorted(set(learn["round_id"].astype(str)) | set(split.test)))
    learn = learn.merge(truth[["student_key", "round_id", "p_observable"]], on=["student_key", "round_id"],
                        how="inner", validate="one_to_one")
    target = learn["p_observable"].to_numpy(dtype=float)

    t = time.perf_counter()
    result = train_and_evaluate(ts, cfg, truth[truth["round_id"].isin(split.test)])
    model_s = time.perf_counter() - t
    test = result.test
    if test["p_observable"].isna().any():
        raise SystemExit("some test rows have no observable ceiling in the truth folder")
    t = time.perf_counter()
    additive = additive_projection(learn, target, cfg.model.seed)
    rows = folds["test"]  # the test rows with their features (TrainResult.test keeps keys, slices and scores)
    projected = pd.DataFrame({"student_key": rows["student_key"].to_numpy(), "round_id": rows["round_id"].to_numpy(),
                              "additive_projection": additive.predict_proba(logistic_input(rows))[:, 1]})
    trees = {}
    for name, flexible in (("tree_projection", False), ("flexible_projection", True)):
        booster, features, trees[name] = tree_projection(learn, target, cfg, args.threads, flexible)
        projected[name] = booster.predict(features.encode(rows), num_iteration=trees[name])
    test = test.merge(projected, on=["student_key", "round_id"], how="left", validate="one_to_one")
    if test[list(PROJECTIONS)].isna().any().any():
        raise SystemExit("some scored test rows are missing from the training set's test fold")
    projections_s = time.perf_counter() - t

    y = test["label"].to_numpy(dtype=float)
    grade = test["grade_level"].to_numpy()
    weights = student_weights(test["student_key"].astype(str).to_numpy(), cfg.intervals.n_boot, cfg.intervals.seed)
    ones = np.ones((1, len(test)))
    point: dict[str, dict[str, float]] = {}
    reps: dict[str, dict[str, np.ndarray]] = {}
    for name in SCORES:
        s = test[name].to_numpy(dtype=float)
        auc, ap_ = rank_metrics(y, s, ones)
        wauc, wap = within_grade_rank_metrics(y, s, grade, ones)
        point[name] = {"roc_auc": float(auc[0]), "pr_auc": float(ap_[0]),
                       "within_grade_roc_auc": float(wauc[0]), "within_grade_pr_auc": float(wap[0])}
        r_auc, r_ap = rank_metrics(y, s, weights)
        r_wauc, r_wap = within_grade_rank_metrics(y, s, grade, weights)
        reps[name] = {"roc_auc": r_auc, "pr_auc": r_ap, "within_grade_roc_auc": r_wauc, "within_grade_pr_auc": r_wap}
    ceiling_logit = _logit(test["p_observable"].to_numpy())
    out: dict[str, Any] = {
        "home": str(args.home), "test_rounds": list(split.test), "test_rows": len(test), "test_dropouts": int(y.sum()),
        "learned_rows": len(learn), "projection_trees": trees, "model_s": round(model_s, 1),
        "projections_s": round(projections_s, 1), "scores": {}, "differences": {}, "logit_r2": {},
    }
    for name in SCORES:
        out["scores"][name] = {m: {"point": v, "ci95": list(interval(reps[name][m]))} for m, v in point[name].items()}
        out["scores"][name]["pr_auc_share_of_ceiling"] = point[name]["pr_auc"] / point["p_observable"]["pr_auc"]
    for a, b in DIFFERENCES:
        out["differences"][f"{a} - {b}"] = {m: {"point": point[a][m] - point[b][m],
                                                "ci95": list(interval(reps[a][m] - reps[b][m]))} for m in point[a]}
    for name in (*PROJECTIONS, "risk_score", "baseline_logistic"):
        resid = ceiling_logit - _logit(test[name].to_numpy())
        out["logit_r2"][name] = float(1 - np.var(resid - resid.mean()) / np.var(ceiling_logit))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.home}: test fold {', '.join(split.test)}, {len(test):,} rows, {int(y.sum())} dropouts; "
          f"projections learned from {len(learn):,} rows (trees: {trees})")
    for name in SCORES:
        s = out["scores"][name]
        print(f"  {name:20s} " + "  ".join(f"{m} {s[m]['point']:.4f} [{s[m]['ci95'][0]:.4f}, {s[m]['ci95'][1]:.4f}]"
                                            for m in point[name])
              + f"  PR-AUC share {100 * s['pr_auc_share_of_ceiling']:.1f}%")
    for key, d in out["differences"].items():
        print(f"  {key:42s} " + "  ".join(f"{m} {d[m]['point']:+.4f} [{d[m]['ci95'][0]:+.4f}, {d[m]['ci95'][1]:+.4f}]"
                                          for m in d))
    print("  R^2 of the ceiling's logit: " + ", ".join(f"{k} {v:.3f}" for k, v in out["logit_r2"].items()))


if __name__ == "__main__":
    main()
