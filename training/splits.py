"""Temporal folds: which rounds train the model, which calibrate it, which test it.

A pure function of the configuration and of the rounds' dates — no data is read — so it is
tested with no data at all. The rule mirrors deployment: on a round's as-of date you only know
the labels whose horizon census has been delivered by then.

  test fold         the latest `test_rounds` rounds by as-of date (all labelled in the training set)
  calibration fold  the latest `calibration_rounds` rounds whose labels were known by the test
                    fold's first as-of date (so a model + calibrator could have been built then),
                    extended back to hold the test fold's term and both terms where it can (`_cover_terms`)
  training fold     every round whose labels were known by the calibration fold's first as-of date
  refit-only        the rounds in between: labels known by the test fold's first as-of date but not by
                    the calibration fold's. Stage A (early-stopped on the calibration fold) never sees
                    them; under `model.refit = "crossfit"` the refitted boosters (the out-of-fold ones
                    and the published one) learn from them, as a deployment retraining on the test
                    fold's as-of date would from every label it then holds (training/DECISIONS.md)

Label-known dates: a round's labels are final once the horizon census and every other evidence
source (exits, other systems, EWE, TZD) have been delivered or are overdue. A training set records
the day that actually happened in its warehouse (`label_known_on`), and that decides; without it
the source contract's delivery schedule gives the day every source is overdue
(`labels.label_mature_on`): the TZD quarter holding the horizon census plus 30 days, 30 July for a
10 June census, 30 January for a 10 November one. `SplitConfig.label_delay_days` can only push a
date later, never earlier. The worked example below uses the schedule.

Worked example (default calendar, horizon = next census, one-term folds: test_rounds =
calibration_rounds = 2; by default the calibration fold is a school year, 4 rounds), rounds 2566-2568:
  test        = 2568-T1-early (as-of 2025-07-01), 2568-T1-mid (2025-08-20)
  calibration : labels known by 2025-07-01? 2567-T2-* -> horizon census 2025-06-10, final 2025-07-30:
                no; 2567-T1-* -> census 2024-11-10, final 2025-01-30: yes -> 2567-T1-early, 2567-T1-mid
  training    : labels known by 2024-07-01 (2567-T1-early)? 2566-T2-* -> final 2024-07-30, no;
                2566-T1-* -> final 2024-01-30, yes: 2566-T1-early, 2566-T1-mid.
  refit-only  : 2566-T2-early, 2566-T2-mid (known by 2025-07-01, not by 2024-07-01).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar, parse_round
from features.pointintime.labels import Horizon, horizon_census, label_mature_on
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
    refit_only: tuple[str, ...] = ()

    def fold_of(self) -> dict[str, str]:
        out = {r: "train" for r in self.train}
        out.update({r: "refit_only" for r in self.refit_only})
        out.update({r: "calibration" for r in self.calibration})
        out.update({r: "test" for r in self.test})
        return out


def round_dates(
    rounds: Iterable[str | Mapping[str, object]], horizon: Horizon = "next_census",
    label_delay_days: int | None = None, cal: SchoolCalendar | None = None,
) -> list[RoundDates]:
    """Dates of each round (round ids, or the manifest's round dicts). A round's labels are known on
    the day the warehouse had all their evidence (the manifest's `label_known_on`, what actually
    happened), else on the day the delivery schedule makes every evidence source due or overdue.
    `label_delay_days` (days after the horizon census) may only make a label later, never earlier."""
    cal = cal or SchoolCalendar()
    out = []
    for r in rounds:
        rid = str(r["round_id"]) if isinstance(r, Mapping) else str(r)
        sr = parse_round(rid)
        actual = r.get("label_known_on") if isinstance(r, Mapping) else None
        known = (dt.date.fromisoformat(actual) if isinstance(actual, str) else actual) or label_mature_on(cal, sr, horizon)
        if label_delay_days is not None:
            known = max(known, horizon_census(cal, sr, horizon) + dt.timedelta(days=label_delay_days))
        out.append(RoundDates(round_id=rid, as_of=cal.as_of(rid), label_known=known))
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
    placed = {r.round_id for r in (*train, *calibration)}
    return TemporalSplit(
        train=tuple(r.round_id for r in train), calibration=tuple(r.round_id for r in calibration),
        test=tuple(r.round_id for r in test), test_as_of=test_as_of, calibration_as_of=cal_as_of,
        refit_only=tuple(r.round_id for r in known_by_test if r.round_id not in placed),
    )
