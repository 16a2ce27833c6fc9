"""The session's fixture ladder: one small simulated province, each rung built once per session on a
copy of the rung below it.

    simulated -> small_world (ingested + linked) -> trainset_world -> trained (champion) ->
    scored_world (rounds published) -> serving_home (tokens, a monitored round) -> service_url
    (a real `bentoml serve`)

Everything is produced by the project's own simulator and pipeline (tests/support/worlds.py) with a
fixed seed, so tests read like specifications over a known world whose truth is available for
comparison. Each rung is built once per test run, shared by the xdist workers (tests/support/shared.py).
Rungs are read-only: a test that writes gets a copy (`copy_world`, or the function-scoped
`*_copy` fixtures below), so no test sees another test's side effects. Every round a test reads is
published here. Statistical assertions use `seeded_world` / `seeded_trained`: the ladder's world and
two smaller worlds of other seeds. The monitoring scenario worlds reuse the ladder's simulation for
their unchanged world.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import worlds
from tests.support.shared import build_once
from tests.support.worlds import (  # noqa: F401 - re-exported: tests import them from here
    SEED,
    SEEDS,
    STUDENTS,
    YEARS,
    ScoredWorld,
    ServingHome,
    SmallWorld,
    TrainedWorld,
    copy_world,
)


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    return build_once(tmp_path_factory, worker_id, "sim", worlds.simulate_world)


@pytest.fixture(scope="session")
def small_world(simulated: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SmallWorld:
    """Every delivery ingested and linked. Read-only for tests: copy it (`copy_world`) before changing anything."""
    return build_once(tmp_path_factory, worker_id, "linked", lambda d: SmallWorld(
        sim=simulated, home=worlds.ingest_and_link(simulated / "deliveries", d / "home")))


@pytest.fixture(scope="session")
def trainset_world(small_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SmallWorld:
    """The linked world with the default training set (every round with a known census)."""
    def build(folder: Path) -> SmallWorld:
        world = copy_world(small_world, folder)
        worlds.build_training_set(world.home)
        return world

    return build_once(tmp_path_factory, worker_id, "trainset", build)


def _trained_on(world: SmallWorld) -> TrainedWorld:
    """Train with the simulator's truth for the ceiling, on the local store (never a tracking server
    from the environment)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        return TrainedWorld(world=world, train_json=worlds.train_with_truth(world))


@pytest.fixture(scope="session")
def trained(trainset_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedWorld:
    """Version 1 trained with the simulator's truth for the ceiling, registered as champion."""
    return build_once(tmp_path_factory, worker_id, "trained",
                      lambda d: _trained_on(copy_world(trainset_world, d)))


@pytest.fixture(scope="session")
def scored_world(trained: TrainedWorld, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> ScoredWorld:
    """The champion's scores of two rounds, published: a mid-history round and the next census round."""
    return build_once(tmp_path_factory, worker_id, "scored", lambda d: worlds.scored(trained, d))


@pytest.fixture(scope="session")
def serving_home(scored_world: ScoredWorld, tmp_path_factory: pytest.TempPathFactory) -> ServingHome:
    """The home the service runs on: a token per role and the first round's monitoring report.
    The running service writes its access log here; tests only read. One per worker (not shared):
    each worker runs its own service, and a test reading the access log must see only its own requests."""
    return worlds.serving_home(scored_world, tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def service_url(serving_home: ServingHome) -> Iterator[str]:
    with worlds.served(serving_home) as url:
        yield url


# ---------------------------------------------------------------------------------------------
# Copies for tests that write


@pytest.fixture()
def trained_copy(trained: TrainedWorld, tmp_path: Path) -> TrainedWorld:
    return TrainedWorld(world=copy_world(trained.world, tmp_path), train_json=trained.train_json)


@pytest.fixture()
def scored_copy(scored_world: ScoredWorld, tmp_path: Path) -> ScoredWorld:
    """The scored home, copied for a test that scores."""
    return ScoredWorld(world=copy_world(scored_world.world, tmp_path), round_id=scored_world.round_id,
                       census_round=scored_world.census_round)


@pytest.fixture()
def prepared_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of chunks of every round the feature pipeline prepares during the test, in order
    (a spy on `prepare_round` as `features.pointintime.pipeline` calls it): a test of a build in
    chunks checks that it really ran in more than one."""
    import features.pointintime.pipeline as pipeline

    chunks: list[int] = []
    real = pipeline.prepare_round

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        prepared = real(*args, **kwargs)
        chunks.append(len(prepared.chunks))
        return prepared

    monkeypatch.setattr(pipeline, "prepare_round", counted)
    return chunks


# ---------------------------------------------------------------------------------------------
# Three seeds for statistical assertions


@pytest.fixture(scope="session", params=SEEDS, ids=lambda s: f"seed{s}")
def seeded_world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 worker_id: str) -> SmallWorld:
    """An ingested and linked world per seed: the ladder's own world for the ladder's seed, smaller
    worlds (SEED_STUDENTS) for the others."""
    seed = request.param
    if seed == SEED:
        return request.getfixturevalue("small_world")

    def build(folder: Path) -> SmallWorld:
        sim = worlds.simulate_world(folder / "sim", seed=seed, students=worlds.SEED_STUDENTS)
        return SmallWorld(sim=sim, home=worlds.ingest_and_link(sim / "deliveries", folder / "home"))

    return build_once(tmp_path_factory, worker_id, f"seed{seed}", build)


@pytest.fixture(scope="session")
def seeded_trained(seeded_world: SmallWorld, request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> TrainedWorld:
    """`trained` for each seed of `seeded_world`."""
    seed = seeded_world.summary["seed"]
    if seed == SEED:
        return request.getfixturevalue("trained")

    def build(folder: Path) -> TrainedWorld:
        world = copy_world(seeded_world, folder)
        worlds.build_training_set(world.home)
        return _trained_on(world)

    return build_once(tmp_path_factory, worker_id, f"seed{seed}-trained", build)


# ---------------------------------------------------------------------------------------------
# The monitoring worlds: the unchanged world reuses the ladder's simulation


@pytest.fixture(scope="session")
def monitored_worlds(simulated: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict[str, object]:
    from tests.integration.monitoring_fixtures import build_worlds

    def build(folder: Path) -> dict[str, object]:
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("MLFLOW_TRACKING_URI", raising=False)
            return build_worlds(folder, unchanged=simulated)

    return build_once(tmp_path_factory, worker_id, "monitoring", build)
