"""The service notices a new champion without a restart: `serving.store.ChampionWatch` swaps the
model when the release marker moves (a promotion in this home) or, at the latest, at the next poll
of the registry (a promotion made elsewhere), and keeps versions it loaded for a rollback."""

from __future__ import annotations

import time
from dataclasses import dataclass

from serving.store import ChampionWatch


@dataclass(frozen=True)
class _Lineage:
    version: int


@dataclass(frozen=True)
class _Loaded:
    lineage: _Lineage


class _Registry:
    def __init__(self) -> None:
        self.alias, self.marker, self.loads, self.asks = 1, None, [], 0

    def version_now(self) -> int:
        self.asks += 1
        return self.alias

    def load(self, v: int) -> _Loaded:
        self.loads.append(v)
        return _Loaded(_Lineage(v))

    def promote(self, v: int) -> None:
        self.alias, self.marker = v, time.time_ns()


def _watch(reg: _Registry, poll: float) -> ChampionWatch:
    return ChampionWatch(_Loaded(_Lineage(1)), reg.version_now, reg.load, lambda: reg.marker, poll_seconds=poll)


def test_a_promotion_in_this_home_is_served_on_the_next_request_and_a_rollback_reuses_the_old_model() -> None:
    reg = _Registry()
    watch = _watch(reg, poll=3600)
    assert watch.current().lineage.version == 1 and reg.asks == 0  # nothing moved: no registry query
    reg.promote(2)
    assert watch.current().lineage.version == 2
    assert watch.current().lineage.version == 2 and reg.loads == [2]  # loaded once
    reg.promote(1)  # rollback
    assert watch.current().lineage.version == 1 and reg.loads == [2]  # version 1 kept from start-up


def test_a_promotion_made_elsewhere_is_noticed_at_the_next_poll_only() -> None:
    reg = _Registry()
    watch = _watch(reg, poll=0.2)
    reg.alias = 3  # changed on a shared registry: no marker here
    assert watch.current().lineage.version == 1
    time.sleep(0.25)
    assert watch.current().lineage.version == 3 and reg.loads == [3]


def test_an_unreachable_registry_keeps_the_champion_being_served() -> None:
    reg = _Registry()

    def broken() -> int:
        raise OSError("registry down")

    watch = ChampionWatch(_Loaded(_Lineage(1)), broken, reg.load, lambda: time.time_ns(), poll_seconds=0)
    assert watch.current().lineage.version == 1 and reg.loads == []
