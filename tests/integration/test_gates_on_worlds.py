"""The release gates on simulated worlds: risk groups are each round's shares; the fairness gate
passes the simulator's true probabilities and fails a model blind to one group's pupils; the trained
model's calibration passes the gate that a threefold under-prediction of its own scores fails.

Fairness is judged here on every labelled round of a world (about 12,000 rows and 100+ pupils who
dropped out on the smaller seeds): a test fold of one term has too few dropouts per group to tell
anything from noise, which is what the intervals are for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TrainedWorld
from tests.support.worlds import ScoredWorld, xfail_if_seed5_calibration_borderline

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _with_truth(world: TrainedWorld) -> pd.DataFrame:
    """Every labelled row of the world's training set with the simulator's true probability."""
    from ews.cli import _register
    from features.evaluation import truth_evaluator
    from features.home import EwsHome
    from features.pointintime.pipeline import connect_warehouse
    from training.data import load_trainset

    _register()
    home = EwsHome(root=world.world.home)
    frame = load_trainset(home).frame
    con = connect_warehouse(home)
    try:
        truth = truth_evaluator().ceiling_table(con, Path(world.world.truth), sorted(set(frame["round_id"].astype(str))))
    finally:
        con.close()
    return frame.merge(truth.to_pandas()[["student_key", "round_id", "p_true", "true_dropout"]],
                       on=["student_key", "round_id"])


def _audit(frame: pd.DataFrame, score: np.ndarray, outcome: str = "label") -> list[str]:
    from training.config import FairnessConfig
    from training.fairness import audit_table, gate_failures
    from training.model import RiskThresholds

    cfg = FairnessConfig()
    rid = frame["round_id"].astype(str).to_numpy()
    groups = RiskThresholds(0, 0, 0.05, 0.15).assign_by_round(score, rid)
    attrs = pd.DataFrame({a: frame[f"group_{a}"] for a in cfg.attributes})
    table = audit_table(frame[outcome].to_numpy(float), groups != "normal", attrs, cfg, score=score,
                        student_key=frame["student_key"].astype(str).to_numpy())
    return gate_failures(table, cfg)


def test_the_true_probabilities_pass_the_fairness_gate(seeded_trained: TrainedWorld) -> None:
    # Judged on the true outcomes, so the gate is tested apart from the labels: with today's labels
    # (issue 11) non-Thai pupils' untraced moves abroad count as dropouts, and the truth's O/E for
    # that group on seed 5 is 2.16 [1.32, 3.45] against the labels: the gate rightly says the
    # labels and the truth disagree there, which is the labels' fault, not the gate's.
    frame = _with_truth(seeded_trained)
    assert len(frame) > 10_000 and frame["true_dropout"].sum() > 100
    assert _audit(frame, frame["p_true"].to_numpy(), outcome="true_dropout") == []


def test_a_model_blind_to_one_groups_pupils_fails_the_fairness_gate(seeded_trained: TrainedWorld) -> None:
    # The truth, except that girls all get their round's average girl's risk: a model that knows the
    # group's level (so its O/E is right) but nothing that tells one girl from another.
    frame = _with_truth(seeded_trained)
    score = frame["p_true"].to_numpy().copy()
    girls = (frame["group_sex"].astype(str) == "F").to_numpy()
    for _, idx in frame[girls].groupby("round_id").indices.items():
        rows = np.flatnonzero(girls)[idx]
        score[rows] = score[rows].mean()
    failures = _audit(frame, score)
    assert any(f.startswith("sex=F: fnr ratio") and "more missed dropouts" in f for f in failures), failures


def test_the_trained_model_passes_the_calibration_gate_and_a_threefold_under_prediction_fails(
        seeded_trained: TrainedWorld) -> None:
    from features.home import EwsHome
    from training.config import GateConfig, TrainConfig
    from training.data import load_trainset
    from training.metrics import calibration_breaches, calibration_report
    from training.pipeline import split_trainset
    from training.registry import load_model

    gate = GateConfig()
    m = seeded_trained.train_json["metrics"]
    home = EwsHome(root=seeded_trained.world.home)
    loaded = load_model(home)
    _, folds = split_trainset(load_trainset(home), TrainConfig())  # the ladder trains with the default split
    test = folds["test"]
    third = loaded.model.risk_score(test) / 3
    report = calibration_report(test["label"].to_numpy(float), third, test["student_key"].astype(str).to_numpy(),
                                {"term": test["round_id"].astype(str).str.split("-").str[1].to_numpy()})
    assert any(r.startswith("O/E") for r in calibration_breaches(report, gate.oe_band, gate.slope_band, gate.oe_slices))
    # the trained model itself: last, so seed 5's known borderline (tests/support/worlds.py) does not skip the above
    breaches = calibration_breaches(m, gate.oe_band, gate.slope_band, gate.oe_slices)
    xfail_if_seed5_calibration_borderline(seeded_trained.world.summary["seed"], breaches)
    assert breaches == []


def test_every_published_round_puts_the_configured_shares_in_each_group(scored_world: ScoredWorld) -> None:
    rounds = sorted(scored_world.root.glob("rounds/*/*/students.parquet"))
    assert {p.parts[-3] for p in rounds} >= {scored_world.round_id, scored_world.census_round}
    for path in rounds:
        df = pd.read_parquet(path, columns=["scored", "risk_group"])
        groups = df.loc[df["scored"].astype(bool), "risk_group"]
        if groups.empty:
            continue
        n = len(groups)
        # _cut_for_share picks the cut whose share is closest: within one pupil of the target.
        assert abs((groups == "problem").sum() - 0.05 * n) <= 1, path
        assert abs((groups != "normal").sum() - 0.20 * n) <= 1, path
