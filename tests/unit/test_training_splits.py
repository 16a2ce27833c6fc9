"""Temporal splits: a pure function of configuration and round dates, tested with no data at all."""

from __future__ import annotations

import datetime as dt

import pytest

from training.config import SplitConfig
from training.splits import RoundDates, round_dates, temporal_split

# The module docstring's worked example uses one-term folds; the mechanics are the same for any size.
ONE_TERM_FOLDS = SplitConfig(test_rounds=2, calibration_rounds=2)


THREE_YEARS = [f"{y}-T{t}-{k}" for y in (2566, 2567, 2568) for t in (1, 2) for k in ("early", "mid")][:-2]


def test_the_worked_example_in_the_module_docstring_holds() -> None:
    split = temporal_split(round_dates(THREE_YEARS), ONE_TERM_FOLDS)
    assert split.test == ("2568-T1-early", "2568-T1-mid")
    assert split.test_as_of == dt.date(2025, 7, 1)
    # Two rounds asked for, both term 2: the test fold's term 1 joins (a calibrator must see its term).
    assert split.calibration == ("2567-T1-early", "2567-T1-mid", "2567-T2-early", "2567-T2-mid")
    assert split.calibration_as_of == dt.date(2024, 7, 1)
    assert split.train == ("2566-T1-early", "2566-T1-mid", "2566-T2-early", "2566-T2-mid")


def test_every_training_and_calibration_label_was_known_before_the_fold_after_it() -> None:
    dates = {r.round_id: r for r in round_dates(THREE_YEARS)}
    split = temporal_split(dates.values(), SplitConfig())
    assert all(dates[r].label_known <= split.calibration_as_of for r in split.train)
    assert all(dates[r].label_known <= split.test_as_of for r in split.calibration)
    assert not set(split.train) & set(split.calibration)
    assert not (set(split.train) | set(split.calibration)) & set(split.test)


def test_a_longer_label_delay_pushes_the_calibration_fold_back_a_term() -> None:
    # 2567-T2 labels: census 2025-06-10 + 30 days = 2025-07-10, after the test as-of 2025-07-01.
    # Training then needs labels known by 2024-07-01 (2567-T1-early): 2566-T2's census 2024-06-10
    # + 30 = 2024-07-10 is too late, so only 2566-T1 (census 2023-11-10 + 30) trains.
    split = temporal_split(round_dates(THREE_YEARS, label_delay_days=30), ONE_TERM_FOLDS)
    assert split.calibration == ("2567-T1-early", "2567-T1-mid")
    assert split.train == ("2566-T1-early", "2566-T1-mid")


def test_the_order_of_the_input_does_not_matter() -> None:
    rounds = round_dates(THREE_YEARS)
    assert temporal_split(rounds, SplitConfig()) == temporal_split(list(reversed(rounds)), SplitConfig())


def test_too_few_rounds_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="too few"):
        temporal_split(round_dates(THREE_YEARS[:3]), SplitConfig())


def test_rounds_whose_labels_came_too_late_leave_no_training_fold() -> None:
    d = dt.date(2025, 1, 1)
    rounds = [RoundDates(round_id=f"r{i}", as_of=d + dt.timedelta(days=i), label_known=d + dt.timedelta(days=400))
              for i in range(6)]
    with pytest.raises(ValueError, match="labels known"):
        temporal_split(rounds, ONE_TERM_FOLDS)


def test_a_round_listed_twice_is_an_error() -> None:
    rounds = round_dates(THREE_YEARS)
    with pytest.raises(ValueError, match="twice"):
        temporal_split([*rounds, rounds[0]], SplitConfig())


def test_one_year_horizon_labels_are_known_a_year_after_the_round_census() -> None:
    (r,) = round_dates(["2567-T1-early"], horizon="one_year", label_delay_days=0)
    assert r.label_known == dt.date(2025, 6, 10)


def test_a_calibration_fold_without_the_test_folds_term_reaches_back_for_it() -> None:
    # A late census left no labelled 2564-T2 rounds: the latest four known rounds are all term 1 while
    # the test fold is term 2 (the demo world's case, where the model under-predicted threefold).
    ids = [r for r in (f"{y}-T{t}-{k}" for y in (2563, 2564, 2565) for t in (1, 2) for k in ("early", "mid"))
           if not r.startswith("2564-T2")]
    split = temporal_split(round_dates(ids), SplitConfig())
    assert split.test == ("2565-T2-early", "2565-T2-mid")
    assert split.calibration == ("2563-T2-early", "2563-T2-mid", "2564-T1-early", "2564-T1-mid",
                                 "2565-T1-early", "2565-T1-mid")
    assert split.train == ("2563-T1-early", "2563-T1-mid")


def test_a_test_term_that_no_labelled_round_before_it_shares_is_refused() -> None:
    ids = [f"{y}-T1-{k}" for y in (2563, 2564, 2565) for k in ("early", "mid")] + ["2565-T2-early", "2565-T2-mid"]
    with pytest.raises(ValueError, match="term 2"):
        temporal_split(round_dates(ids), SplitConfig())


@pytest.mark.parametrize("calibration_rounds", [2, 4])
def test_the_calibration_fold_holds_the_test_folds_term_for_any_fold_size(calibration_rounds: int) -> None:
    for cut in range(8, len(THREE_YEARS) + 1):
        rounds = round_dates(THREE_YEARS[:cut])
        try:
            split = temporal_split(rounds, SplitConfig(calibration_rounds=calibration_rounds))
        except ValueError:
            continue
        terms = {r.split("-")[1] for r in split.calibration}
        assert {r.split("-")[1] for r in split.test} <= terms, split
