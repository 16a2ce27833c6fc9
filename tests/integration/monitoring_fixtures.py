"""Worlds for the monitoring tests: one unchanged world, one per scenario and one where schools act
on the list (`interventions`, monitored with its assignment), scored and monitored.
Built once per session by the `monitored_worlds` fixture (tests/conftest.py), whose unchanged world
is the fixture ladder's own simulation (same size, seed and config).

All worlds share the seed, so they are byte-identical up to the scenario's first term (2566 term 2;
the test asserts it for every delivery known by the training cutoff). That is what lets them share
the expensive part: the deliveries known by the cutoff are ingested, linked and trained on once (the
champion was trained before the world changed, as in real life); each world then gets a copy of
that home, ingests the rest of its own deliveries, links, scores round 2566-T2-mid and is monitored.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from features.calendar import SchoolCalendar
from features.home import EwsHome

from tests.support.worlds import SEED, STUDENTS, YEARS, simulate_world

CHANGE_YEAR, CHANGE_TERM = 2566, 2
ROUND = "2566-T2-mid"  # the first mid round after the change: its deliveries and labels are all in
REFERENCE_ROUND = "2564-T2-mid"  # the latest round of the same kind in the training and calibration folds
# (labels known by the cutoff end at 2565-T2, the test fold; calibration is 2564)


@dataclass(frozen=True)
class MonitoredWorld:
    name: str
    sim: Path
    home: EwsHome
    report: object  # monitoring.report.MonitoringReport


def scenarios() -> dict[str, object]:
    from simulator.scenarios import data_break, economic_shock, process_change

    return {
        "unchanged": None,
        "economic_shock": economic_shock(CHANGE_YEAR, CHANGE_TERM),
        "data_break": data_break(CHANGE_YEAR, CHANGE_TERM),
        "process_change": process_change(CHANGE_YEAR, CHANGE_TERM),
    }


def interventions() -> object:
    """The world where schools act on their list from the changed term on (issue 15.5), strongly, with
    a randomised holdout: monitoring must not read the actions' success as a miscalibrated model."""
    from simulator.config import InterventionConfig

    return InterventionConfig(from_year=CHANGE_YEAR, from_term=CHANGE_TERM, capacity_share=0.3, uptake=0.9,
                              holdout_share=0.3, cct_effect_per_poverty=2.5, home_visit_effect_per_disengagement=2.5,
                              counselling_effect_per_disengagement=2.5)


def training_cutoff() -> dt.date:
    """The champion is trained on what was known at the first round of the changed term."""
    return SchoolCalendar().as_of(f"{CHANGE_YEAR}-T{CHANGE_TERM}-early")


def _delivered_on(folder: Path) -> dt.date:
    return dt.date.fromisoformat(json.loads((folder / "delivery.json").read_text(encoding="utf-8"))["delivered_on"])


def shared_deliveries(sims: dict[str, Path], cutoff: dt.date) -> list[str]:
    """Delivery ids delivered by the cutoff; raises if any world's copy differs from the unchanged one."""
    base = sims["unchanged"] / "deliveries"
    ids = sorted(d.name for d in base.iterdir() if d.is_dir() and _delivered_on(d) <= cutoff)
    for name, sim in sims.items():
        for i in ids:
            a, b = base / i, sim / "deliveries" / i
            files = sorted(p.name for p in a.iterdir())
            _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
            if mismatch or errors:
                raise AssertionError(f"{name}: delivery {i} differs before the change ({mismatch or errors})")
    return ids


def build_worlds(root: Path, unchanged: Path | None = None) -> dict[str, MonitoredWorld]:
    """`unchanged`: an existing simulation of the unchanged world (SEED, STUDENTS, YEARS), if any."""
    from features.ingest.actions import ingest_assignment
    from features.ingest.pipeline import ingest_path
    from features.linkage.link import link
    from features.pointintime.pipeline import TrainsetConfig, build_trainset
    from monitoring.report import monitor_round, write_report
    from training.registry import load_model
    from serving.scoring import score_round
    from training.config import ModelConfig, TrainConfig
    from training.train import train

    sims: dict[str, Path] = {}
    for name, sc in scenarios().items():
        if name == "unchanged" and unchanged is not None:
            sims[name] = unchanged
            continue
        sims[name] = simulate_world(root / f"sim-{name}", seed=SEED, students=STUDENTS, years=YEARS, scenario=sc)
    from simulator.api import simulate
    from simulator.config import SimulationConfig

    sims["interventions"] = root / "sim-interventions"
    simulate(SimulationConfig.small(students=STUDENTS, years=YEARS, seed=SEED).model_copy(
        update={"interventions": interventions()}), sims["interventions"])
    cutoff = training_cutoff()
    ids = shared_deliveries(sims, cutoff)

    # What was known at the cutoff: ingested, linked, trained on, and the reference round scored, once.
    prefix = root / "prefix-deliveries"
    prefix.mkdir()
    for i in ids:
        (prefix / i).symlink_to(sims["unchanged"] / "deliveries" / i, target_is_directory=True)
    base = EwsHome(root=root / "home-before").ensure()
    ingest_path(prefix, base)
    link(base)
    build_trainset(base, TrainsetConfig(cutoff=cutoff))
    train(base, TrainConfig(model=ModelConfig(n_estimators=300), shap_sample_rows=300))
    score_round(base, REFERENCE_ROUND, load_model(base))

    worlds: dict[str, MonitoredWorld] = {}
    for name, sim in sims.items():
        home = EwsHome(root=root / f"home-{name}")
        shutil.copytree(base.root, home.root, symlinks=True)
        ingest_path(sim / "deliveries", home)  # the shared deliveries are recognised and skipped
        link(home)
        score_round(home, ROUND, load_model(home))
        if name == "interventions":  # the schools' assignment is delivered like any source
            ingest_assignment(sim / "actions", home)
        report = monitor_round(home, ROUND, actions=name == "interventions")
        write_report(home, report)
        worlds[name] = MonitoredWorld(name=name, sim=sim, home=home, report=report)
    return worlds
