"""The harder world's hazard is not additive, and the interaction shows in what happens (issue 12.3).

The additive prediction is the same world with the interaction switched off
(`beta_poverty_transition = 0`). Both runs draw the same random numbers, and the interaction acts
only at the year end of P6 and M3, so up to the first year end the two worlds hold the same
children in the same state: at that year end's rounds each child has the harder world's ceiling p
and the additive world's p, side by side. The dropouts that happen among poor children at a
transition grade must exceed what the additive p expects beyond its sampling error; everywhere
else the two p are identical; and the harder world's own ceiling still expects what happens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator import SimulationConfig, simulate
from simulator.config import ProcessConfig, WorldConfig
from tests.support.ceiling import Z_LIMIT, ceiling_z

STUDENTS = 50_000  # ~3,500 poor P6/M3 pupils at the first year end: the interaction sits ~6 SE out (z 4.5-5.7 at 30,000)


def _year_end_rounds(out: Path) -> pd.DataFrame:
    r = pd.read_parquet(out / "truth" / "rounds.parquet")
    return r[(r.term == 2) & (r.academic_year == r.academic_year.min())].astype({"grade": str, "round_type": str})


@pytest.mark.slow
@pytest.mark.parametrize("seed", [5, 23])
def test_poor_children_at_a_transition_leave_more_often_than_the_additive_hazard_predicts(tmp_path: Path, seed: int) -> None:
    world = WorldConfig(students=STUDENTS, years=1, seed=seed)
    simulate(SimulationConfig(world=world), tmp_path / "harder")
    simulate(SimulationConfig(world=world, process=ProcessConfig(beta_poverty_transition=0.0)), tmp_path / "additive")
    harder, additive = _year_end_rounds(tmp_path / "harder"), _year_end_rounds(tmp_path / "additive")
    both = harder.merge(additive[["round_id", "person_id", "p_dropout"]], on=["round_id", "person_id"],
                        suffixes=("", "_additive"), validate="one_to_one")
    assert len(both) == len(harder) == len(additive)  # the same children at the same rounds
    poor_transition = (both.extremely_poor & both.grade.isin(["P6", "M3"])).to_numpy()
    p, p_add, y = both.p_dropout.to_numpy(), both.p_dropout_additive.to_numpy(), both.dropout.to_numpy()
    # the interaction touches poor children at a transition and nobody else
    assert np.array_equal(p[~poor_transition], p_add[~poor_transition])
    assert (p[poor_transition] >= p_add[poor_transition]).all()
    for kind in ("early", "mid"):  # the two round types share one draw: judged apart
        sel = poor_transition & (both.round_type == kind).to_numpy()
        assert p_add[sel].sum() >= 50  # enough expected dropouts for the normal approximation
        # what happened, against the additive expectation: far beyond its sampling error
        assert ceiling_z(p_add[sel], y[sel]) > Z_LIMIT, (kind, y[sel].sum(), p_add[sel].sum())
        # and against the harder world's own ceiling: within it
        assert abs(ceiling_z(p[sel], y[sel])) < Z_LIMIT, (kind, y[sel].sum(), p[sel].sum())
