"""The harder world's non-additive hazard terms (`simulator.process.interaction_logits`), child by child.

Six made-up children on a stub population: each term acts where PROCESS.md §2.4 says and nowhere else.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from features.ids import GRADES
from simulator.config import ProcessConfig
from simulator.population import EXTREME_POOR, Population
from simulator.process import interaction_logits, next_school_km
from simulator.world import KIND_EXTENDED, KIND_PRIMARY, KIND_SECONDARY

PC = ProcessConfig()
G = {g: i for i, g in enumerate(GRADES)}
# schools 0..2: a primary 30 km from town, an extended-opportunity school 20 km, a secondary school in town
GEO = SimpleNamespace(school_kind=np.array([KIND_PRIMARY, KIND_EXTENDED, KIND_SECONDARY]),
                      school_distance=np.array([30.0, 20.0, 0.0]))


def stub(grade: list[str], school: list[int], income: list[float], attendance: list[float]) -> SimpleNamespace:
    pop = SimpleNamespace(pc=PC, geo=GEO, grade=np.array([G[g] for g in grade]), school=np.array(school),
                          income=np.array(income, dtype=float), att_last=np.array(attendance))
    pop.poverty = lambda: Population.poverty(pop)  # the population's own definition of pov
    return pop


def test_the_distance_counts_only_for_pupils_whose_year_end_means_a_new_school() -> None:
    pop = stub(["P6", "P6", "M3", "M3", "P5", "M1"], [0, 1, 1, 2, 0, 1], [9000.0] * 6, [1.0] * 6)
    # P6 in a primary school moves; P6 in an extended school stays for M1; M3 in an extended school
    # moves; M3 in a secondary school stays; P5 and M1 have no transition
    assert next_school_km(pop, np.arange(6)).tolist() == [30.0, 0.0, 20.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("term", [1, 2])
def test_poverty_and_distance_act_at_the_year_end_of_a_transition_only(term: int) -> None:
    poor = EXTREME_POOR / np.e  # pov = 1
    pop = stub(["P6", "P6", "M3", "P5"], [0, 0, 2, 0], [poor, 9000.0, poor, poor], [1.0] * 4)
    out = interaction_logits(pop, np.arange(4), term)
    if term == 1:
        assert out.tolist() == [0.0] * 4
    else:
        km = PC.beta_distance_transition_per_10km * 3.0
        expected = [PC.beta_poverty_transition + km, km, PC.beta_poverty_transition, 0.0]
        assert np.allclose(out, expected, rtol=0, atol=1e-12)


def test_the_cct_grant_is_lost_only_by_poor_children_below_the_attendance_condition() -> None:
    c = PC.cct_attendance_condition
    pop = stub(["P3"] * 4, [0] * 4, [EXTREME_POOR, EXTREME_POOR, EXTREME_POOR + 10, EXTREME_POOR],
               [c - 0.01, c, c - 0.2, 1.0])
    assert interaction_logits(pop, np.arange(4), 1).tolist() == [PC.beta_cct_grant_lost, 0.0, 0.0, 0.0]
