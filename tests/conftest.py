"""Shared fixtures: one small simulated province, ingested and linked once per test session.

Everything is produced by the project's own simulator with a fixed seed, so tests read like
specifications over a known world whose truth is available for comparison.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

SEED = 11
STUDENTS = 1500
YEARS = 3


@dataclass(frozen=True)
class SmallWorld:
    sim: Path  # simulator output: deliveries/ and truth/
    home: Path  # EWS_HOME with every delivery ingested and linked

    @property
    def deliveries(self) -> Path:
        return self.sim / "deliveries"

    @property
    def truth(self) -> Path:
        return self.sim / "truth"


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulator.api import simulate
    from simulator.config import SimulationConfig

    out = tmp_path_factory.mktemp("sim")
    simulate(SimulationConfig.small(students=STUDENTS, years=YEARS, seed=SEED), out)
    return out


@pytest.fixture(scope="session")
def small_world(simulated: Path, tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    """Read-only for tests: copy it (`copy_world`) before changing anything."""
    from features.home import EwsHome
    from features.ingest.pipeline import ingest_path
    from features.linkage.link import link

    home = EwsHome(root=tmp_path_factory.mktemp("home"))
    ingest_path(simulated / "deliveries", home)
    link(home)
    return SmallWorld(sim=simulated, home=home.root)


def copy_world(world: SmallWorld, dest: Path) -> SmallWorld:
    shutil.copytree(world.home, dest / "home")
    return SmallWorld(sim=world.sim, home=dest / "home")
