"""Temporal folds: which rounds train the model, which calibrate it, which test it.

A pure function of the configuration and of the rounds' dates — no data is read — so it is
tested with no data at all. The rule mirrors deployment: on a round's as-of date you only know
the labels whose horizon census has been delivered by then.

  test fold         the latest `test_rounds` rounds by as-of date (all labelled in the training set)
  calibration fold  the latest `calibration_rounds` rounds whose labels were known by the test
                    fold's first as-of date (so a model + calibrator could have been built then),
                    extended back to hold the test fold's term and both terms where it can (`_cover_terms`)
  training fold     every round whose labels were known by the calibration fold's first as-of date

Worked example (default calendar, horizon = next census, label delay 14 days, one-term folds:
test_rounds = calibration_rounds = 2; by default the calibration fold is a school year, 4 rounds), rounds 2566-2568:
  test        = 2568-T1-early (as-of 2025-07-01), 2568-T1-mid (2025-08-20)
  calibration : labels known by 2025-07-01? 2567-T2-* -> horizon census 2025-06-10 (2568 T1)
                + 14 days = 2025-06-24 <= 2025-07-01, yes -> 2567-T2-early (2024-12-01), 2567-T2-mid;
                that is term 2 only and the test fold is term 1, so the latest labelled term-1 year
                joins: 2567-T1-early (2024-07-01), 2567-T1-mid
  training    : labels known by 2024-07-01? 2566-T2-* -> census 2024-06-10 + 14 = 2024-06-24, yes;
                so 2566-T1-*, 2566-T2-* (four rounds).
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


def _term(r: RoundDates) -> int | None:
    try:
        return parse_round(r.round_id).term
    except ValueError:  # ids that are not rounds of the calendar (synthetic tests): no term rule
        return None


def _training_rounds(known: list[RoundDates], calibration: list[RoundDates]) -> list[RoundDates]:
    cal_as_of = min(r.as_of for r in calibration)
    cal_ids = {r.round_id for r in calibration}
    return [r for r in known if r.round_id not in cal_ids and r.label_known <= cal_as_of]


def _cover_terms(calibration: list[RoundDates], known: list[RoundDates], test: list[RoundDates],
                 min_train_rounds: int) -> list[RoundDates]:
    """The calibration fold, extended back in time to hold the test fold's term and, where training
    rounds remain, both terms.

    Dropout rates differ several-fold between terms, and a calibrator fitted on one term's rounds
    miscalibrates the other's: a late census once left a 3-year world's latest four labelled rounds
    all in term 1 while the test fold was term 2, and the model under-predicted threefold (O/E 3.2).
    Fallback, documented: the latest labelled year's rounds (every round type) of a missing term join
    the fold, which leaves fewer training rounds. The test fold's term is required (an error when no
    labelled round of it exists before the test fold); the other term joins only while at least
    `min_train_rounds` training rounds remain."""
    terms = [_term(r) for r in (*calibration, *known, *test)]
    if None in terms:
        return calibration
    test_terms = {_term(r) for r in test}
    for term in sorted({_term(r) for r in known} - {_term(r) for r in calibration}, key=lambda t: t not in test_terms):
        of_term = [r for r in known if _term(r) == term]
        latest_year = parse_round(of_term[-1].round_id).academic_year
        extended = sorted({*calibration, *(r for r in of_term if parse_round(r.round_id).academic_year == latest_year)},
                          key=lambda r: (r.as_of, r.round_id))
        if term in test_terms or len(_training_rounds(known, extended)) >= min_train_rounds:
            calibration = extended
    missing = sorted(test_terms - {_term(r) for r in calibration})
    if missing:
        raise ValueError(f"no round of term {missing[0]} has labels known by {test[0].as_of}: the test fold is term "
                         f"{missing[0]} and nothing could calibrate it; build a training set over more years")
    return calibration


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
    calibration = _cover_terms(known_by_test[-cfg.calibration_rounds:], known_by_test, test, cfg.min_train_rounds)
    cal_as_of = calibration[0].as_of
    train = _training_rounds(known_by_test, calibration)
    if len(train) < cfg.min_train_rounds:
        raise ValueError(
            f"only {len(train)} rounds have labels known by {cal_as_of} (the calibration fold's as-of); "
            f"need {cfg.min_train_rounds}: build a training set over more years")
    return TemporalSplit(
        train=tuple(r.round_id for r in train), calibration=tuple(r.round_id for r in calibration),
        test=tuple(r.round_id for r in test), test_as_of=test_as_of, calibration_as_of=cal_as_of,
    )
