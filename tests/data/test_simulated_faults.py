"""The simulator is as unhelpful as real schools, at the rates its FaultConfig says (issue 11.6).

Each knob's realised rate is compared with the configured one within a sampling interval, on a
small world whose rates are set high (and whose rare exits are made common) so that every check has
the power to fail: a knob that were ignored would sit 5 or more standard errors away. The world is
big enough (two amphoe) to hold Border Patrol Police schools. Two seeds.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.calendar import SchoolCalendar
from simulator import SimulationConfig, simulate
from simulator.config import FaultConfig, ProcessConfig, WorldConfig
from simulator.faults import FAULT_BITS

# |realised - expected| within this many standard errors: ~6e-5 two-sided per check, so the two
# dozen checks of this file pass together on a correct simulator with probability > 0.998
Z = 4.0
# a check needs enough events that a rate of 0 (the knob ignored) would be far outside the interval
MIN_EVENTS = 60

EXIT_KNOBS = {  # exit class in truth/rounds.parquet (destination system for other_school) -> knob
    ("vocational", None): "exit_missing_vocational",
    ("non_formal", None): "exit_missing_non_formal",
    ("work_training", None): "exit_missing_work_training",
    ("abroad", None): "exit_missing_abroad",
    ("death", None): "exit_missing_death",
    ("transfer", None): "exit_missing_transfer_obec",
    ("other_school", "LAO"): "exit_missing_transfer_lao",
    ("other_school", "OPEC"): "exit_missing_transfer_opec",
    ("other_school", "BPP"): "exit_missing_transfer_bpp",
    ("completed", None): "exit_missing_completed",
}
RATES = {knob: 0.3 + 0.04 * i for i, knob in enumerate(EXIT_KNOBS.values())}
FAULTS = FaultConfig(**RATES, census_refused_school=0.2, impossible_value=0.01, malformed_delivery=0.0)
# rare exits made common, so each knob is judged on enough leavers
PROCESS = ProcessConfig(death_logit=-4.6, abroad_logit_thai=-5.0, other_school_logit=-3.3, ewe_logit=-3.8,
                        nfe_logit=-4.2)


def _days(values: object) -> np.ndarray:
    return np.asarray(pd.to_datetime(pd.Series(values))).astype("datetime64[D]")


def within(k: int, n: int, rate: float) -> bool:
    return abs(k - n * rate) <= Z * np.sqrt(n * rate * (1 - rate))


@pytest.fixture(scope="module", params=[3, 4])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"faulty_world_{request.param}")
    simulate(SimulationConfig(world=WorldConfig(students=14_000, years=1, seed=request.param),
                              process=PROCESS, faults=FAULTS), out)
    return out


def _truth(world: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(world / "truth" / f"{name}.parquet")


def _term_of(days: pd.Series, years: list[int]) -> pd.DataFrame:
    """(academic_year, term) of the term each date falls in (up to the next term's start)."""
    cal = SchoolCalendar()
    starts = sorted((cal.term(t).starts.in_year(y), y, t) for y in years for t in (1, 2))
    first = np.array([s[0] for s in starts], dtype="datetime64[D]")
    i = np.searchsorted(first, _days(days), side="right") - 1
    assert (i >= 0).all()
    return pd.DataFrame({"academic_year": [starts[k][1] for k in i], "term": [starts[k][2] for k in i]})


@pytest.mark.slow
def test_each_exit_type_loses_its_exit_row_at_its_configured_rate(world: Path) -> None:
    rounds = _truth(world, "rounds")
    leavers = rounds[(rounds.round_type == "early") & ~rounds.exit_type.isin(["stay", "dropout"])]
    leavers = leavers[["person_id", "academic_year", "term", "exit_type"]].astype({"exit_type": str})
    # where an other_school leaver went: the system at the next census
    census = _truth(world, "census_status")
    nxt = leavers.assign(academic_year=np.where(leavers.term == 1, leavers.academic_year, leavers.academic_year + 1),
                         term=np.where(leavers.term == 1, 2, 1))
    dest = nxt.merge(census[["person_id", "academic_year", "term", "system"]], how="left",
                     on=["person_id", "academic_year", "term"])
    leavers["system"] = dest["system"].astype(str).to_numpy()
    om = _truth(world, "omissions")
    om = om[om.reason == "exit_row_missing"].reset_index(drop=True)
    assert (om.source == "exits").all()
    om = pd.concat([om[["person_id"]], _term_of(om.describes, sorted(rounds.academic_year.unique()))], axis=1)
    missing = leavers.merge(om.drop_duplicates().assign(missing=True), how="left",
                            on=["person_id", "academic_year", "term"]).missing.fillna(False).to_numpy(bool)
    assert missing.sum() == len(om)  # every omission belongs to one leaver
    for (exit_type, system), knob in EXIT_KNOBS.items():
        sel = (leavers.exit_type == exit_type).to_numpy().copy()
        if system is not None:
            sel &= (leavers.system == system).to_numpy()
        n, k = int(sel.sum()), int(missing[sel].sum())
        assert n >= MIN_EVENTS, (knob, n)
        assert within(k, n, RATES[knob]), (knob, k, n, RATES[knob])
    # dropouts are the school's own business (ProcessConfig.dropout_exit_recorded), never an omission
    assert not missing[(leavers.exit_type == "dropout").to_numpy()].any()


def _census_of(days: pd.Series, census_days: np.ndarray) -> np.ndarray:
    """The census each delivery date belongs to: the latest census on or before it."""
    i = np.searchsorted(census_days, _days(days), side="right") - 1
    assert (i >= 0).all()
    return census_days[i]


@pytest.mark.slow
def test_a_refused_census_file_drops_exactly_its_schools_pupils_at_the_configured_rate(world: Path) -> None:
    census = _truth(world, "census_status")
    obec = census[census.status == "obec"]
    census_days = np.unique(_days(obec.census_date))
    om = _truth(world, "omissions")
    refused = om[om.reason == "census_refused"]
    # per (school, census): refused with the configured probability
    pairs = obec[["school_code", "census_date"]].drop_duplicates()
    hit = refused[["school_code", "describes"]].drop_duplicates()
    assert len(pairs) >= 150
    assert within(len(hit), len(pairs), FAULTS.census_refused_school), (len(hit), len(pairs))
    # a refused school's pupils are in no file of that census; every other pupil is
    deliveries = pd.DataFrame(json.loads((world / "truth" / "deliveries.json").read_text()))
    dmc = deliveries[deliveries.sources.map(lambda s: s == ["dmc_census"])]
    of_census = dict(zip(dmc.delivery_id, _census_of(dmc.nominal_on, census_days)))
    records = _truth(world, "records")
    records = records[records.delivery_id.isin(list(of_census))]
    delivered = set(zip(records.person_id, _days(records.delivery_id.astype(str).map(of_census))))
    lost = set(zip(refused.person_id, _days(refused.describes)))
    expected = set(zip(obec.person_id, _days(obec.census_date)))
    assert lost and lost <= expected
    assert delivered == expected - lost


@pytest.mark.slow
def test_census_rows_carry_one_impossible_field_at_the_configured_rate(world: Path) -> None:
    records = _truth(world, "records")
    census_rows = records[records.source_file == "dmc_census.csv"]
    bad = (census_rows.fault_mask.to_numpy() & FAULT_BITS["impossible_value"]) > 0
    # duplicates copy their original's mask: judge the originals only
    original = (census_rows.fault_mask.to_numpy() & FAULT_BITS["duplicate_row"]) == 0
    assert within(int(bad[original].sum()), int(original.sum()), FAULTS.impossible_value)


@pytest.mark.slow
def test_other_systems_deliver_their_census_later_than_dmc(world: Path) -> None:
    # the lags themselves live with the delivery schedule; the simulator only has to honour them
    deliveries = pd.DataFrame(json.loads((world / "truth" / "deliveries.json").read_text()))
    census_days = np.unique(_days(_truth(world, "census_status").census_date))
    first = {}
    for source in ("dmc_census", "other_enrolment"):
        d = deliveries[deliveries.sources.map(lambda s, src=source: s == [src])]
        first[source] = pd.Series(pd.to_datetime(d.nominal_on).to_numpy(), index=_census_of(d.nominal_on, census_days)
                                  ).groupby(level=0).min()
    assert len(first["other_enrolment"]) >= 2
    both = pd.concat(first, axis=1).dropna()
    assert (both.other_enrolment > both.dmc_census).all(), both
    assert (both.dmc_census - both.index.to_series() >= pd.Timedelta(dt.timedelta(days=1))).all()


@pytest.mark.slow
def test_switching_every_fault_off_leaves_the_world_and_its_ceiling_unchanged(tmp_path: Path) -> None:
    # the knobs above draw from the fault stream only: the children, their outcomes and the ceiling
    # must not depend on how unhelpful the schools are. The observable ceiling is the one column that
    # may move: a screening that never arrives is not seen (simulator/PROCESS.md §3b) and the
    # per-province fit behind it sees that, so the true process is what is compared.
    for seed in (11, 5):
        world = WorldConfig(students=1500, years=1, seed=seed)
        faulty_out, clean_out = tmp_path / f"faulty{seed}", tmp_path / f"clean{seed}"
        simulate(SimulationConfig(world=world, faults=FAULTS), faulty_out)
        simulate(SimulationConfig(world=world, faults=FaultConfig(**{k: 0.0 for k in FaultConfig.model_fields})),
                 clean_out)
        for name in ("rounds", "census_status", "persons"):
            faulty, clean = (pd.read_parquet(w / "truth" / f"{name}.parquet") for w in (faulty_out, clean_out))
            observable = [c for c in faulty.columns if c == "p_observable"]
            pd.testing.assert_frame_equal(faulty.drop(columns=observable), clean.drop(columns=observable))
        om = pd.read_parquet(faulty_out / "truth" / "omissions.parquet")
        assert {"exit_row_missing", "census_refused", "missing_screening"} <= set(om.reason)
