"""Boosting from the logistic baseline's log-odds: does it help the booster at a district's label count?

    python -m benchmarks.logistic_margin --home H --truth SIM/truth [--threads 2] [--json]

H is a home with a training set (`ews trainset`), SIM the simulator's folder of that world. At
20,000 pupils LightGBM lands where logistic regression does (training/DECISIONS.md, "Where the
model's shortfall comes from"): the booster spends its ~1,100 dropouts per fold on the main effects
an additive model learns cheaply. A classical remedy is to start the booster from the linear model's
margin (LightGBM's `init_score`) so that its trees only learn what is left: the interactions. This
measures that remedy against the default, with the model's settings (training/config.py), in the
default's two stages:

  stage A   the booster on the training fold, early-stopped on the calibration fold (the hybrid's
            logistic fitted on the training fold too, its log-odds the init score of both folds);
  refit     on the training and calibration folds and the refit-only rounds, the stage-A tree count
            scaled to the rows (`training.model.scaled_trees`), as the published booster is (the
            hybrid's logistic refitted on the same rows).

Test-fold ROC-AUC and PR-AUC of the raw margins (ranking only: no calibrator), the observable
ceiling's beside them, and paired 95% student-level bootstrap intervals of the differences. No
cross-fitted calibration, no bagging: a ranking diagnosis, not the published model. Nothing is logged
or registered; outside `make bench` (a full fit per variant: minutes).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from benchmarks.folds import folds_with_truth, world_parser

PAIRS = (("hybrid_stage_a", "plain_stage_a"), ("hybrid_refit", "plain_refit"), ("hybrid_refit", "logistic_refit"),
         ("plain_refit", "logistic_refit"), ("ceiling", "hybrid_refit"), ("ceiling", "plain_refit"))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def main(argv: list[str] | None = None) -> None:
    ap = world_parser(__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)

    import lightgbm as lgb
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    from training.baselines import fit_logistic, logistic_input
    from training.bootstrap import student_weights
    from training.config import TrainConfig
    from training.metrics import rank_metrics
    from training.model import FeatureSet, lgb_params, scaled_trees

    cfg = TrainConfig()
    folds, test = folds_with_truth(args.home, args.truth, cfg)
    y = test["label"].to_numpy()
    train, calib = folds["train"], folds["calibration"]
    # The published booster's rows in its order (training, refit-only, calibration: RiskModel._crossfit),
    # so that the default's refit is that booster: row order alone moves a 20,000-pupil world's PR-AUC
    # by a few thousandths.
    extra = folds.get("refit_only")
    refit_rows = pd.concat([train, *([extra] if extra is not None and len(extra) else []), calib], ignore_index=True)
    features = FeatureSet.learn(train)
    names = list(features.names)
    params = {**lgb_params(cfg.model, names), "num_threads": args.threads}

    def dataset(frame: pd.DataFrame, init: np.ndarray | None, reference: Any = None) -> Any:
        return lgb.Dataset(features.encode(frame), label=frame["label"].to_numpy(), feature_name=names,
                           categorical_feature=features.categorical_indices, init_score=init, reference=reference)

    def logistic_margins(rows: pd.DataFrame, *frames: pd.DataFrame) -> list[np.ndarray]:
        """The log-odds of the logistic baseline fitted on `rows` (as the pipeline fits it), on each frame."""
        lr = fit_logistic(rows, rows["label"].to_numpy(), cfg.model.seed, cfg.logistic_max_rows)
        return [_logit(lr.predict_proba(logistic_input(f))[:, 1]) for f in frames]

    x_test = features.encode(test)
    scores: dict[str, np.ndarray] = {"ceiling": test["p_observable"].to_numpy()}
    trees: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for mode in ("plain", "hybrid"):
        t = time.perf_counter()
        # init scores of the training, calibration and refit rows, and the margin the test rows add
        # (none in "plain": LightGBM then boosts from the label's average)
        m_train = m_calib = m_refit = None
        m_test: np.ndarray | float = 0.0
        m_test_refit: np.ndarray | float = 0.0
        if mode == "hybrid":
            m_train, m_calib, m_test = logistic_margins(train, train, calib, test)
            m_refit, m_test_refit = logistic_margins(refit_rows, refit_rows, test)
            scores["logistic_refit"] = m_test_refit
        d = dataset(train, m_train)
        stage_a = lgb.train(params, d, num_boost_round=cfg.model.n_estimators, valid_sets=[dataset(calib, m_calib, d)],
                            callbacks=[lgb.early_stopping(cfg.model.early_stopping_rounds, verbose=False)])
        n = int(stage_a.best_iteration or stage_a.current_iteration())
        scores[f"{mode}_stage_a"] = stage_a.predict(x_test, raw_score=True, num_iteration=n) + m_test
        n_refit = scaled_trees(n, len(refit_rows), len(train))
        refit = lgb.train(params, dataset(refit_rows, m_refit), num_boost_round=n_refit)
        scores[f"{mode}_refit"] = refit.predict(x_test, raw_score=True) + m_test_refit
        trees[f"{mode}_stage_a"], trees[f"{mode}_refit"] = n, n_refit
        seconds[mode] = round(time.perf_counter() - t, 1)

    weights = student_weights(test["student_key"].astype(str).to_numpy(), cfg.intervals.n_boot, cfg.intervals.seed)
    reps = {k: rank_metrics(y, s, weights) for k, s in scores.items()}
    ceiling_pr = average_precision_score(y, scores["ceiling"])
    doc: dict[str, Any] = {"test_rows": int(len(y)), "test_dropouts": int(y.sum()), "trees": trees, "seconds": seconds,
                           "scores": {}, "differences": {}}
    for k, s in scores.items():
        pr = float(average_precision_score(y, s))
        doc["scores"][k] = {"roc_auc": round(float(roc_auc_score(y, s)), 4), "pr_auc": round(pr, 4),
                            "pr_auc_share_of_ceiling": round(pr / ceiling_pr, 3)}
    for a, b in PAIRS:
        doc["differences"][f"{a} - {b}"] = {
            m: {"point": round(doc["scores"][a][m] - doc["scores"][b][m], 4),
                "ci95": [round(float(np.nanpercentile(reps[a][i] - reps[b][i], q)), 4) for q in (2.5, 97.5)]}
            for i, m in enumerate(("roc_auc", "pr_auc"))}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"test fold: {doc['test_rows']:,} rows, {doc['test_dropouts']:,} dropouts; trees {trees}; seconds {seconds}")
    for k, m in doc["scores"].items():
        print(f"{k:16s} ROC-AUC {m['roc_auc']:.4f}  PR-AUC {m['pr_auc']:.4f}  ({100 * m['pr_auc_share_of_ceiling']:.1f}% of the ceiling's)")
    for key, d in doc["differences"].items():
        print(f"{key:34s} ROC-AUC {d['roc_auc']['point']:+.4f} {d['roc_auc']['ci95']}  "
              f"PR-AUC {d['pr_auc']['point']:+.4f} {d['pr_auc']['ci95']}")


if __name__ == "__main__":
    main()
