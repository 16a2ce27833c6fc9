"""The verdict: a breach alerts; drift or outcomes recommend retraining; data quality alone does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from simulator.config import SimulationConfig
from simulator.scenarios import (
    DataBreak, ProcessChange, Scenario, apply_breaks, data_break, dropout_logit_by_grade, economic_shock,
    income_after_shock,
)
from features.calendar import parse_round
from monitoring.config import MonitorConfig, OutcomeConfig
from monitoring.drift import DriftResult, reference_rounds
from monitoring.outcomes import Outcomes, judge_outcomes
from monitoring.quality import Check
from monitoring.report import decide


def _drift(column: str, score: float, level: str) -> DriftResult:
    return DriftResult(what="feature", column=column, feature_group="poverty", statistic="psi", score=score, level=level,
                       drifted=level == "drift", watch=0.1, drift=0.25)


def _quality(level: str) -> Check:
    return Check(check="quarantine_rate", source="cct_screening", scope="2022-12-20_cct_screening", value=0.9,
                 watch=0.02, drift=0.1, level=level)


def test_no_breach_means_no_alert_and_keep_the_model() -> None:
    v = decide([_quality("ok")], [_drift("income_per_person", 0.02, "ok")], Outcomes(matured=False, note="later"),
               MonitorConfig())
    assert not v.alert and not v.retrain_recommended and v.summary.startswith("No threshold breached")


def test_feature_drift_recommends_retraining_and_names_the_statistic_the_value_and_the_source() -> None:
    v = decide([], [_drift("income_per_person", 1.3, "drift")], Outcomes(matured=False), MonitorConfig())
    assert v.alert and v.retrain_recommended
    assert v.breaches[0].statistic == "psi" and v.breaches[0].value == 1.3 and v.breaches[0].threshold == 0.25
    assert any("cct_screening" in r for r in v.reasons)


def test_a_data_quality_breach_alone_alerts_without_recommending_retraining() -> None:
    v = decide([_quality("drift")], [], Outcomes(matured=False), MonitorConfig())
    assert v.alert and not v.retrain_recommended
    assert any("fix or re-deliver" in r for r in v.reasons)


def test_realised_calibration_outside_its_band_is_an_outcome_breach() -> None:
    rng = np.random.default_rng(3)
    score = rng.uniform(0, 0.1, 4000)
    y = (rng.uniform(size=4000) < score * 3).astype(float)  # three times more dropouts than predicted
    groups = pd.DataFrame({a: ["x"] * 4000 for a in OutcomeConfig().fairness_attributes})
    out = judge_outcomes(y, score, np.array(["s"] * 4000), score > 0.08, groups,
                         {"roc_auc": 0.7, "ece": 0.01, "precision_at_10pct": 0.2}, OutcomeConfig())
    checks = {c.check: c for c in out.checks}
    assert checks["observed_to_expected"].level == "drift" and checks["observed_to_expected"].value > 2.5
    v = decide([], [], out, MonitorConfig())
    assert v.retrain_recommended and "outcomes" in v.summary


def test_the_reference_is_the_latest_training_round_of_the_same_term_and_kind() -> None:
    rounds = ["2563-T1-early", "2563-T2-mid", "2564-T1-mid", "2564-T2-early", "2564-T2-mid"]
    assert reference_rounds(rounds, parse_round("2565-T2-mid"), "latest_same_kind") == ["2564-T2-mid"]
    assert reference_rounds(rounds, parse_round("2565-T2-mid"), "all_same_kind") == ["2563-T2-mid", "2564-T2-mid"]
    assert reference_rounds(rounds, parse_round("2565-T1-early"), "latest_same_kind") == ["2563-T1-early"]
    # no round of the same term and type: the latest of the same type
    assert reference_rounds(["2564-T1-mid", "2564-T2-early"], parse_round("2565-T1-early"), "latest_same_kind") == ["2564-T2-early"]


def test_no_scenario_is_the_default_and_a_scenario_is_typed_config() -> None:
    assert SimulationConfig().scenario is None
    sc = data_break(2565, 2)
    again = Scenario.model_validate_json(sc.model_dump_json())
    assert again == sc and isinstance(again.changes[0], DataBreak)
    assert sc.active(2565, 2) and sc.active(2566, 1) and not sc.active(2565, 1)
    assert economic_shock(2565).starts(2565, 1)


def test_scenario_pieces_are_pure_and_do_what_they_say() -> None:
    assert list(income_after_shock(np.array([4000.0, 300.0], dtype=np.float32), 0.5)) == [2000.0, 200.0]
    shift = dropout_logit_by_grade([ProcessChange(grades=("M1",), dropout_logit=2.0)])
    assert shift.sum() == 2.0
    t = pa.table({"household_size": [4, 2], "income_per_person": [2500, 3000]})
    assert apply_breaks(t, "cct_screening", [DataBreak()]).column("income_per_person").to_pylist() == [10000, 6000]
    emptied = apply_breaks(t, "cct_screening", [DataBreak(change="empty")])
    assert emptied.column("income_per_person").null_count == 2
    assert apply_breaks(t, "grades", [DataBreak()]).equals(t)


def _outcomes_with_one_group_outside_the_band(attribute: str) -> Outcomes:
    """Realised outcomes where group 'b' of `attribute` gets many more false alarms than 'a' (half the
    precision). The release gate no longer judges precision (it conflicts with calibration when base
    rates differ) nor, by default, false alarms: this configuration asks monitoring to judge them."""
    rng = np.random.default_rng(5)
    n = 8000
    score = rng.uniform(0, 0.2, n)
    y = (rng.uniform(size=n) < score).astype(float)
    groups = pd.DataFrame({a: ["x"] * n for a in OutcomeConfig().fairness_attributes})
    groups[attribute] = np.where(np.arange(n) % 2 == 0, "a", "b")
    # group b: many more flags among non-dropouts, so its precision drops far below a's
    flagged = (score > 0.15) | ((groups[attribute] == "b").to_numpy() & (y == 0) & (score > 0.08))
    return judge_outcomes(y, score, np.array(["s"] * n), flagged, groups,
                          {"roc_auc": 0.7, "ece": 0.01, "precision_at_10pct": 0.2},
                          OutcomeConfig(fairness_metrics=("precision", "fpr", "fnr")))


def test_a_realised_fairness_ratio_outside_the_band_on_a_gated_attribute_recommends_retraining() -> None:
    out = _outcomes_with_one_group_outside_the_band("sex")
    assert any(c.check.startswith("fairness.sex.b.precision_ratio") for c in out.checks)
    assert decide([], [], out, MonitorConfig()).retrain_recommended


def test_cct_poverty_fairness_is_reported_but_not_a_breach_like_at_the_release_gate() -> None:
    out = _outcomes_with_one_group_outside_the_band("cct_poverty")
    row = next(r for r in out.fairness if r["attribute"] == "cct_poverty" and r["group"] == "b")
    assert "precision" in row["outside_band"] and row["judged"] is False
    assert not any(c.check.startswith("fairness.") for c in out.checks)


def test_monitoring_judges_realised_fairness_by_the_release_gates_own_rules_unless_configured() -> None:
    from training.config import FairnessConfig

    gate, cfg = FairnessConfig(), OutcomeConfig()
    assert (cfg.fairness_band, cfg.fairness_metrics, cfg.fairness_judged_attributes) == \
        (gate.band, gate.gate_metrics, gate.gate_attributes)
    assert OutcomeConfig(fairness_band=(0.7, 1.4)).fairness_band == (0.7, 1.4)
