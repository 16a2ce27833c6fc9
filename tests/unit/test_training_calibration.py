"""Calibration maps a miscalibrated score to probabilities; thresholds follow capacity."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import ece
from training.model import Calibrator, choose_thresholds


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 12, n)
    y = (rng.random(n) < p).astype(int)
    return np.sqrt(p), y  # overconfident: sqrt inflates every probability


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_fitted_on_one_fold_lowers_ece_on_another(method: str) -> None:
    raw_fit, y_fit = _miscalibrated(20_000, 1)
    raw_new, y_new = _miscalibrated(20_000, 2)
    cal = Calibrator(method).fit(raw_fit, y_fit)
    before, after = ece(y_new, raw_new), ece(y_new, cal.transform(raw_new))
    assert before > 0.1
    assert after < 0.01


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_a_calibrator_survives_a_round_trip_through_json(method: str) -> None:
    raw, y = _miscalibrated(5000, 3)
    cal = Calibrator(method).fit(raw, y)
    back = Calibrator.from_dict(cal.to_dict())
    assert np.allclose(back.transform(raw), cal.transform(raw))


def test_platt_calibration_keeps_the_ranking() -> None:
    raw, y = _miscalibrated(5000, 4)
    out = Calibrator("platt").fit(raw, y).transform(raw)
    assert (np.argsort(out, kind="stable") == np.argsort(raw, kind="stable")).all()


def test_thresholds_give_about_the_capacity_shares_and_observed_rates() -> None:
    rng = np.random.default_rng(0)
    s = rng.random(10_000)
    y = (rng.random(10_000) < s).astype(int)
    th = choose_thresholds(s, y, 0.05, 0.15)
    assert th.observed["problem"]["share"] == pytest.approx(0.05, abs=0.002)
    assert th.observed["at_risk"]["share"] == pytest.approx(0.15, abs=0.002)
    assert th.observed["problem"]["dropout_rate"] > th.observed["at_risk"]["dropout_rate"] > th.observed["normal"]["dropout_rate"]
    assert set(th.assign(s)) == {"problem", "at_risk", "normal"}


def test_a_plateau_of_tied_scores_is_not_swallowed_whole() -> None:
    # 30% of students share the score 0.5: the "problem" cut must not flag all of them for a 5% target.
    s = np.concatenate([np.full(300, 0.5), np.linspace(0.6, 0.9, 40), np.linspace(0, 0.4, 660)])
    th = choose_thresholds(s, np.zeros(1000), 0.05, 0.15)
    assert th.observed["problem"]["share"] == pytest.approx(0.04)
