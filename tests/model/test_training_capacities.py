"""Any top-k capacity trains: metric names come from one place (`training.metrics.at_k`), so a
capacity outside the default 5/10/20% has a name and a direction wherever a metric is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.home import EwsHome
from training.config import GateConfig, ModelConfig, TrainConfig
from training.metrics import at_k, greater_is_better
from simulator.synthetic import synthetic_frame, truth_frame, write_synthetic_trainset


def test_a_capacity_of_15_percent_trains_and_names_its_metrics(tmp_path: Path) -> None:
    from training.data import load_trainset
    from training.pipeline import train_and_evaluate

    frame = synthetic_frame(500, seed=5)
    home = EwsHome(root=tmp_path)
    ts = load_trainset(home, write_synthetic_trainset(home, frame))
    cfg = TrainConfig(model=ModelConfig(num_threads=1, n_estimators=30), capacities=(0.05, 0.15),
                      shap_sample_rows=100)
    # With the simulator's truth the ceiling and gap metrics are derived too (where it used to crash).
    result = train_and_evaluate(ts, cfg, truth_frame(frame))
    for metric in ("precision", "recall", "school_precision", "school_recall"):
        name = at_k(metric, 0.15)
        assert name in result.metrics and f"ceiling_{name}" in result.metrics and f"gap_{name}" in result.metrics
        assert f"round_type.mid.{name}" in result.metrics
    assert "precision_at_10pct" not in result.metrics  # only the configured capacities


def test_a_capacity_of_15_percent_goes_through_the_registry_and_its_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training import registry
    from training.train import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = EwsHome(root=tmp_path)
    write_synthetic_trainset(home, synthetic_frame(400, seed=7), name="ts-a")
    cfg = TrainConfig(model=ModelConfig(num_threads=1, n_estimators=30), capacities=(0.15,), shap_sample_rows=100,
                      gate=GateConfig(metric=at_k("precision", 0.15), max_ece=0.5))
    first = train(home, cfg, trainset="ts-a", variants=True)
    assert first.summary()["metrics"][at_k("precision", 0.15)] is not None
    train(home, cfg, trainset="ts-a")
    decision = registry.evaluate_gate(home, cfg=cfg)
    assert decision.checks["metric"] == "precision_at_15pct" and decision.checks["candidate"] is not None


def test_top_k_names_and_directions() -> None:
    assert at_k("precision", 0.1) == "precision_at_10pct"
    assert at_k("school_recall", 0.15) == "school_recall_at_15pct"
    assert greater_is_better("precision_at_15pct") and greater_is_better("baselines.abc_rule.school_recall_at_15pct")
    assert not greater_is_better("gap_precision_at_15pct")
    with pytest.raises(KeyError):
        at_k("fnr", 0.1)
    with pytest.raises(KeyError):
        greater_is_better("wobble_at_15pct")


def test_a_gate_metric_the_capacities_do_not_measure_is_refused_when_the_config_is_read() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="precision_at_15pct"):
        TrainConfig(gate=GateConfig(metric="precision_at_15pct"))  # default capacities: 5, 10, 20%
    assert TrainConfig(capacities=(0.15,), gate=GateConfig(metric="precision_at_15pct")).gate.metric == "precision_at_15pct"
