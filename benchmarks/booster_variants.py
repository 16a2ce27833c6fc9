"""Booster settings weighed on the calibration fold's out-of-fold scores, the test fold printed beside.

    python -m benchmarks.booster_variants --home H --truth SIM/truth [--variants JSON]

H is a home with a training set (`ews trainset`), SIM the simulator's folder of that world. Each
variant is a partial `model` config (training/config.py `ModelConfig`) over the default, fitted on
the training set's folds exactly as `ews train` fits them (training.pipeline, cross-fitted refit
included). A variant is *judged* by the calibration fold's out-of-fold ROC-AUC and PR-AUC (the raw
scores Platt is fitted on: no test row chooses); the test fold's ROC-AUC and PR-AUC, and their gap to
the observable ceiling (`p_observable`), are printed beside it so a reader sees whether the two agree.
Point figures, one line per variant, and under each later variant its out-of-fold figures minus the
first variant's with a paired 95% student-level interval; training/DECISIONS.md quotes them (issue 12,
sessions 8 and 9).

`--group COLUMN` (a training set's group column, e.g. `group_disability`) adds, per variant and per
value of the column, the test fold's O/E of the published (calibrated) score with its 95%
student-level interval, and truth/expected: the simulator's true probabilities summed over the
model's, the model's bias in that group without the outcomes' noise. Variants that differ only in
`seed` show how far one group's O/E moves with the fit alone; the calibration fold's observed/true
per value (printed once) shows what that group's labels in the newest learned year told the model
(session 22).
Nothing is logged or registered. Outside `make bench`: each variant is a full fit (minutes).
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks.folds import folds_with_truth, world_parser


class GroupCalibration(NamedTuple):
    """One group's calibration: O/E of a score with its 95% interval, and truth/expected (true
    probabilities over the score's: its bias without the outcomes' noise; NaN when the score is the
    truth itself)."""

    value: str
    rows: int
    dropouts: int
    oe: float
    oe_low: float
    oe_high: float
    truth_over_expected: float


def group_calibration(values: np.ndarray, y: np.ndarray, score: np.ndarray, p_true: np.ndarray | None,
                      weights: np.ndarray) -> list[GroupCalibration]:
    """Per value of `values` (one per row), in sorted order; `weights` the rows' student-level
    bootstrap weights (`training.bootstrap.student_weights`). `p_true` None: `score` is the truth (O/E
    is then observed/true)."""
    from training.bootstrap import interval, weighted_ratio

    for name, a in (("score", score), ("p_true", p_true)):
        if a is not None and np.isnan(a).any():
            raise ValueError(f"{int(np.isnan(a).sum())} rows have no {name}: is --truth this world's?")
    out = []
    for value in sorted(set(values.tolist())):
        inside = (values == value).astype(np.float64)
        expected = float((score * inside).sum())
        low, high = interval(weighted_ratio(y * inside, score * inside, weights))
        truth = float("nan") if p_true is None else float((p_true * inside).sum()) / expected
        out.append(GroupCalibration(value, int(inside.sum()), int((y * inside).sum()), float((y * inside).sum()) / expected,
                                    low, high, truth))
    return out


DEFAULT_VARIANTS = ('{"default": {}, "leaves15": {"num_leaves": 15, "min_child_samples": 200}, '
                    '"lr025": {"learning_rate": 0.025, "early_stopping_rounds": 300}}')


def main(argv: list[str] | None = None) -> None:
    ap = world_parser(__doc__)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="JSON: name -> partial model config")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--group", help="a group column of the training set: O/E per value on the test fold")
    args = ap.parse_args(argv)

    from training.config import TrainConfig
    from training.pipeline import _fit

    base = TrainConfig()
    folds, test = folds_with_truth(args.home, args.truth, base)
    y, y_cal, p_obs = test["label"].to_numpy(), folds["calibration"]["label"].to_numpy(), test["p_observable"].to_numpy()
    ceil_roc, ceil_pr = roc_auc_score(y, p_obs), average_precision_score(y, p_obs)
    print(f"observable ceiling on the test fold: ROC-AUC {ceil_roc:.4f}, PR-AUC {ceil_pr:.4f}", flush=True)
    # Paired student-level replicates of the calibration fold: each variant's out-of-fold figures
    # minus the first variant's, with a 95% interval (is a difference more than the fold's noise?).
    from training.bootstrap import interval, student_weights
    from training.metrics import rank_metrics

    if args.group and args.group not in test.columns:
        raise SystemExit(f"--group {args.group}: no such column in the training set's test fold")
    test_weights = (student_weights(test["student_key"].astype(str).to_numpy(), base.intervals.n_boot,
                                    base.intervals.seed + 3) if args.group else None)
    if args.group:
        # What each group's labels in the newest learned year told the model: observed over true
        # dropouts in the calibration fold (the published booster is refitted on it, Platt fitted on it).
        from features.home import EwsHome
        from training.train import truth_for_rounds

        cal = folds["calibration"]
        cal = cal.merge(truth_for_rounds(EwsHome(root=args.home), args.truth, sorted(set(cal["round_id"].astype(str)))),
                        on=["student_key", "round_id"], how="left", validate="one_to_one")
        for g in group_calibration(cal[args.group].astype(str).to_numpy(), cal["label"].to_numpy(dtype=float),
                                   cal["p_true"].to_numpy(), None,
                                   student_weights(cal["student_key"].astype(str).to_numpy(), base.intervals.n_boot,
                                                   base.intervals.seed + 4)):
            print(f"calibration fold, {args.group}={g.value}: {g.rows} rows, {g.dropouts} dropout rows, "
                  f"observed/true {g.oe:.3f} [{g.oe_low:.3f}, {g.oe_high:.3f}]", flush=True)

    weights = student_weights(folds["calibration"]["student_key"].astype(str).to_numpy(), base.intervals.n_boot,
                              base.intervals.seed + 2)
    first = None
    for name, over in json.loads(args.variants).items():
        cfg = TrainConfig.model_validate({"model": {**base.model.model_dump(), **over, "num_threads": args.threads}})
        t = time.perf_counter()
        model = _fit(folds, cfg)
        score = model.risk_score(folds["test"])
        oof = model.calibration_raw_
        roc, pr = roc_auc_score(y, score), average_precision_score(y, score)
        print(f"{name:12s} trees stage A {model.stage_a_trees_:4d}, published {model.booster_.current_iteration():4d} | "
              f"calibration fold out-of-fold ROC-AUC {roc_auc_score(y_cal, oof):.4f} PR-AUC {average_precision_score(y_cal, oof):.4f} | "
              f"test ROC-AUC {roc:.4f} (gap {ceil_roc - roc:.4f}) PR-AUC {pr:.4f} ({100 * pr / ceil_pr:.1f}% of the ceiling's) | "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        if args.group:
            for g in group_calibration(test[args.group].astype(str).to_numpy(), y, score,
                                       test["p_true"].to_numpy(), test_weights):
                print(f"{'':12s} {args.group}={g.value}: {g.rows} rows, {g.dropouts} dropout rows, "
                      f"O/E {g.oe:.3f} [{g.oe_low:.3f}, {g.oe_high:.3f}], truth/expected {g.truth_over_expected:.3f}",
                      flush=True)
        point = (roc_auc_score(y_cal, oof), average_precision_score(y_cal, oof))
        reps = rank_metrics(y_cal, oof, weights)
        if first is None:
            first = (name, point, reps)
            continue
        parts = []
        for j, metric in enumerate(("ROC-AUC", "PR-AUC")):
            low, high = interval(reps[j] - first[2][j])
            parts.append(f"{metric} {point[j] - first[1][j]:+.4f} [{low:+.4f}, {high:+.4f}]")
        print(f"{'':12s} out-of-fold minus {first[0]}: {', '.join(parts)}", flush=True)


if __name__ == "__main__":
    main()
