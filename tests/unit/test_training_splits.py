"""Temporal splits: a pure function of configuration and round dates, tested with no data at all."""

from __future__ import annotations

import datetime as dt

import pytest

from training.config import SplitConfig
from training.splits import RoundDates, round_dates, temporal_split

# The module docstring's worked example uses one-term folds; the mechanics are the same for any size.
ONE_TERM_FOLDS = SplitConfig(test_rounds=2, calibration_rounds=2)


THREE_YEARS = [f"{y}-T{t}-{k}" for y in (2566, 2567, 2568) for t in (1, 2) for k in ("early", "mid")][:-2]
# The default folds (a school year of calibration) need labels that are a term older: four years.
FOUR_YEARS = [f"{y}-T{t}-{k}" for y in (2565, 2566, 2567, 2568) for t in (1, 2) for k in ("early", "mid")][:-2]


def test_the_worked_example_in_the_module_docstring_holds() -> None:
    split = temporal_split(round_dates(THREE_YEARS), ONE_TERM_FOLDS)
    assert split.test == ("2568-T1-early", "2568-T1-mid")
    assert split.test_as_of == dt.date(2025, 7, 1)
    assert split.calibration == ("2567-T1-early", "2567-T1-mid")
    assert split.calibration_as_of == dt.date(2024, 7, 1)
    assert split.train == ("2566-T1-early", "2566-T1-mid")
    assert split.refit_only == ("2566-T2-early", "2566-T2-mid")


def test_labels_are_known_when_the_last_evidence_source_is_due_by_the_delivery_schedule() -> None:
    # A 10 June horizon census: the TZD quarter ending 30 June is overdue 30 days later, after the
    # DMC census (+21), other systems (+42), exits and EWE; a 10 November one waits for 31 December.
    dates = {r.round_id: r.label_known for r in round_dates(["2567-T2-early", "2567-T1-mid"])}
    assert dates == {"2567-T2-early": dt.date(2025, 7, 30), "2567-T1-mid": dt.date(2025, 1, 30)}


def test_every_training_and_calibration_label_was_known_before_the_fold_after_it() -> None:
    dates = {r.round_id: r for r in round_dates(FOUR_YEARS)}
    split = temporal_split(dates.values(), SplitConfig())
    assert all(dates[r].label_known <= split.calibration_as_of for r in split.train)
    assert all(dates[r].label_known <= split.test_as_of for r in split.calibration)
    assert not set(split.train) & set(split.calibration)
    assert not (set(split.train) | set(split.calibration)) & set(split.test)


def test_refit_only_rounds_are_every_round_labelled_by_the_test_as_of_that_no_fold_holds() -> None:
    dates = {r.round_id: r for r in round_dates(FOUR_YEARS)}
    split = temporal_split(dates.values(), SplitConfig())
    placed = {*split.train, *split.calibration, *split.test}
    known_by_test = {r for r, d in dates.items() if d.label_known <= split.test_as_of and r not in split.test}
    assert set(split.refit_only) == known_by_test - placed
    assert split.refit_only  # the default folds leave the term between the folds out of stage A
    # each was labelled too late for stage A's early stopping on the calibration fold, in time for the test's as-of
    assert all(split.calibration_as_of < dates[r].label_known <= split.test_as_of for r in split.refit_only)
    assert not set(split.refit_only) & placed


def test_a_label_delay_can_push_label_dates_later_but_never_earlier_than_the_schedule() -> None:
    assert round_dates(THREE_YEARS, label_delay_days=0) == round_dates(THREE_YEARS)
    late = round_dates(THREE_YEARS, label_delay_days=240)
    scheduled = {r.round_id: r.label_known for r in round_dates(THREE_YEARS)}
    assert all(r.label_known > scheduled[r.round_id] for r in late)
    # 2567-T1's census 2024-11-10 + 240 days = 2025-07-08, after the test as-of 2025-07-01: the
    # calibration fold moves back, reaching to 2566-T1 for the test fold's term (`_cover_terms`), and
    # nothing is known early enough to train on.
    with pytest.raises(ValueError, match="labels known by 2023-07-01"):
        temporal_split(late, ONE_TERM_FOLDS)


def test_the_order_of_the_input_does_not_matter() -> None:
    rounds = round_dates(FOUR_YEARS)
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


def test_one_year_horizon_labels_are_known_when_the_evidence_of_the_census_a_year_later_is_due() -> None:
    (r,) = round_dates(["2567-T1-early"], horizon="one_year")
    assert r.label_known == dt.date(2025, 7, 30)  # census 2025-06-10; its TZD quarter overdue 30 days after 30 June


def test_the_day_the_warehouse_had_the_evidence_decides_over_the_schedule() -> None:
    # a manifest round records when its labels actually became final (here earlier than the schedule's
    # overdue day, as when every source arrived on time); a round without one falls back on the schedule
    (actual, planned) = round_dates([{"round_id": "2567-T1-mid", "label_known_on": "2025-01-15"},
                                     {"round_id": "2567-T2-mid", "label_known_on": None}])
    assert actual.label_known == dt.date(2025, 1, 15)
    assert planned.label_known == dt.date(2025, 7, 30)
    (late,) = round_dates([{"round_id": "2567-T1-mid", "label_known_on": "2025-01-15"}], label_delay_days=240)
    assert late.label_known == dt.date(2025, 7, 8)
def test_a_calibration_fold_without_the_test_folds_term_reaches_back_for_it() -> None:
    # A late census left no labelled 2564-T2 rounds: the latest known rounds before the term-2 test
    # fold are term 1 (the demo world's case, where the model under-predicted threefold). Four years,
    # because labels wait for every evidence source (a 3-year world leaves nothing to train on).
    ids = [r for r in (f"{y}-T{t}-{k}" for y in (2562, 2563, 2564, 2565) for t in (1, 2) for k in ("early", "mid"))
           if not r.startswith("2564-T2")]
    split = temporal_split(round_dates(ids), SplitConfig())
    assert split.test == ("2565-T2-early", "2565-T2-mid")
    assert split.calibration == ("2563-T2-early", "2563-T2-mid", "2564-T1-early", "2564-T1-mid")
    assert split.train == ("2562-T1-early", "2562-T1-mid", "2562-T2-early", "2562-T2-mid")


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
