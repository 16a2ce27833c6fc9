"""Temporal folds: which rounds train the model, which calibrate it, which test it.

A pure function of the configuration and of the rounds' dates — no data is read — so it is
tested with no data at all. The rule mirrors deployment: on a round's as-of date you only know
the labels whose horizon census has been delivered by then.

  test fold         the latest `test_rounds` rounds by as-of date (all labelled in the training set)
  calibration fold  the latest `calibration_rounds` rounds whose labels were known by the test
                    fold's first as-of date (so a model + calibrator could have been built then)
  training fold     every round whose labels were known by the calibration fold's first as-of date

Worked example (default calendar, horizon = next census, label delay 14 days, one-term folds:
test_rounds = calibration_rounds = 2; by default the calibration fold is a school year, 4 rounds), rounds 2566-2568:
  test        = 2568-T1-early (as-of 2025-07-01), 2568-T1-mid (2025-08-20)
  calibration : labels known by 2025-07-01? 2567-T2-* -> horizon census 2025-06-10 (2568 T1)
                + 14 days = 2025-06-24 <= 2025-07-01, yes -> 2567-T2-early (2024-12-01), 2567-T2-mid
  training    : labels known by 2024-12-01? 2567-T1-* -> census 2024-11-10 + 14 = 2024-11-24, yes;
                so 2566-T1-*, 2566-T2-*, 2567-T1-* (six rounds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, parse_round
from features.pointintime.labels import Horizon, horizon_census
from training.config import SplitConfig


class RoundDates(BaseModel):
    """A round, the day its features are computed (as_of) and the day its label becomes known."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    round_id: str
    as_of: dt.date
    label_known: dt.date


class TemporalSplit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    train: tuple[str, ...]
    calibration: tuple[str, ...]
    test: tuple[str, ...]
    test_as_of: dt.date
    calibration_as_of: dt.date

    def fold_of(self) -> dict[str, str]:
        out = {r: "train" for r in self.train}
        out.update({r: "calibration" for r in self.calibration})
        out.update({r: "test" for r in self.test})
        return out


def round_dates(
    rounds: Iterable[str | Mapping[str, object]], horizon: Horizon = "next_census",
    label_delay_days: int = 14, cal: SchoolCalendar | None = None,
) -> list[RoundDates]:
    """Dates of each round from the calendar (round ids, or the manifest's round dicts)."""
    cal = cal or SchoolCalendar()
    out = []
    for r in rounds:
        rid = str(r["round_id"]) if isinstance(r, Mapping) else str(r)
        sr = parse_round(rid)
        out.append(RoundDates(
            round_id=rid, as_of=cal.as_of(rid),
            label_known=horizon_census(cal, sr, horizon) + dt.timedelta(days=label_delay_days),
        ))
    return out


def temporal_split(rounds: Iterable[RoundDates], cfg: SplitConfig) -> TemporalSplit:
    """Train / calibration / test rounds; a ValueError that says why when the rounds do not suffice."""
    ordered = sorted(rounds, key=lambda r: (r.as_of, r.round_id))
    if len({r.round_id for r in ordered}) != len(ordered):
        raise ValueError("a round appears twice in the list of rounds")
    if len(ordered) < cfg.test_rounds + cfg.calibration_rounds + cfg.min_train_rounds:
        raise ValueError(
            f"{len(ordered)} labelled rounds are too few for {cfg.test_rounds} test + "
            f"{cfg.calibration_rounds} calibration + {cfg.min_train_rounds} training rounds")
    test = ordered[-cfg.test_rounds:]
    test_as_of = test[0].as_of
    # Calibration: the latest rounds a team could have labelled by the day the test fold was scored.
    known_by_test = [r for r in ordered[: -cfg.test_rounds] if r.label_known <= test_as_of]
    if len(known_by_test) < cfg.calibration_rounds:
        raise ValueError(f"fewer than {cfg.calibration_rounds} rounds have labels known by {test_as_of}")
    calibration = known_by_test[-cfg.calibration_rounds:]
    cal_as_of = calibration[0].as_of
    cal_ids = {r.round_id for r in calibration}
    train = [r for r in known_by_test if r.round_id not in cal_ids and r.label_known <= cal_as_of]
    if len(train) < cfg.min_train_rounds:
        raise ValueError(
            f"only {len(train)} rounds have labels known by {cal_as_of} (the calibration fold's as-of); "
            f"need {cfg.min_train_rounds}: build a training set over more years")
    return TemporalSplit(
        train=tuple(r.round_id for r in train), calibration=tuple(r.round_id for r in calibration),
        test=tuple(r.round_id for r in test), test_as_of=test_as_of, calibration_as_of=cal_as_of,
    )
