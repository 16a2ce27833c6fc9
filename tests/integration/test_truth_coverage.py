"""The simulator's truth reaches every labelled row of a training set. Every measurement against
the truth (the ceilings, the fairness gate on true probabilities, `benchmarks.additivity`) joins it
on (student_key, round_id); a row the truth does not reach drops out of those joins unseen. A round
whose census came after its as-of date is the case that once dropped: seed 5's world has one (the
2564 term-2 census, 23 days late), and 100,000-pupil worlds lost whole rounds to it."""

from __future__ import annotations

import pytest

from tests.conftest import TrainedWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_truth_reaches_every_labelled_row_a_round_whose_census_came_late_included(
        seeded_trained: TrainedWorld) -> None:
    from ews.cli import _register
    from features.calendar import parse_round
    from features.db import scalar
    from features.evaluation import truth_evaluator
    from features.home import EwsHome
    from features.pointintime.pipeline import connect_warehouse
    from training.data import load_trainset

    _register()
    home = EwsHome(root=seeded_trained.world.home)
    cal = home.calendar
    frame = load_trainset(home).frame
    frame = frame[frame["label"].notna()]
    rounds = sorted(set(frame["round_id"].astype(str)))
    con = connect_warehouse(home)
    try:
        truth = truth_evaluator().ceiling_table(con, seeded_trained.world.truth, rounds).to_pandas()
        late = []
        for rid in rounds:
            r = parse_round(rid)
            first = scalar(con, "SELECT min(known_at) FROM wh.src_dmc_census WHERE census_date = "
                                f"DATE '{cal.census_date(r.academic_year, r.term).isoformat()}'")
            if first > cal.as_of(rid):
                late.append(rid)
    finally:
        con.close()
    joined = frame[["student_key", "round_id"]].astype(str).merge(
        truth[["student_key", "round_id", "p_true"]], on=["student_key", "round_id"], how="left", validate="one_to_one")
    unreached = joined[joined["p_true"].isna()].groupby("round_id").size()
    assert unreached.empty, f"rows the truth does not reach, per round: {unreached.to_dict()} (late censuses: {late})"
    if seeded_trained.world.summary["seed"] == 5:
        assert late, "seed 5's world was expected to hold a round whose census came after its as-of date"
