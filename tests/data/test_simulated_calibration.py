"""Calibration at a moderate size: the published figures within the stated tolerances, on three seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import SimulationConfig, simulate
from simulator.config import WorldConfig


@pytest.mark.slow
@pytest.mark.parametrize("seed", [7, 5, 23])  # three seeds: no figure may rest on one draw (about 3 s each)
def test_calibration_figures_land_within_their_tolerances_at_a_moderate_size(tmp_path: Path, seed: int) -> None:
    summary = simulate(SimulationConfig(world=WorldConfig(students=30_000, years=3, seed=seed)), tmp_path)
    checks = summary.calibration["checks"]
    failed = {k: v for k, v in checks.items() if not v["within"]}
    assert not failed, failed
    assert 0.80 <= summary.ceiling["early"]["roc_auc"] < summary.ceiling["mid"]["roc_auc"] <= 0.95
