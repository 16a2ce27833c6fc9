"""A change of champion survives a crash at any point: promote and rollback are each killed (a real
process ending with os._exit) at every crash point — before the journal, between every pair of
registry writes, before the done mark — and the operator's re-run leaves the champion alias, the
top of the stack and the last history entry agreeing, with the change recorded exactly once.

One tiny registry (two versions of a 2- and 20-tree model) is built per module, in its own process;
each case works on a copy of its home, so every crash starts from the same state, and runs in a
child forked by a fork server that imported MLflow once (tests/support/crash_registry.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from features.home import EwsHome
from tests.support.crash_registry import KILLED, OVERRIDE, crash_in_child
from training import registry
from training.registry.journal import journal_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MAX_POINTS = 30  # far above the 8 writes of a promotion: a loop that never ends is a failure


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with version 1 champion and version 2 challenger (built in its own process)."""
    root = tmp_path_factory.mktemp("registry-template")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "tests.support.crash_registry", "build", str(root)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=900)
    return root


def _copy(src: Path, dst: Path) -> EwsHome:
    shutil.copytree(src, dst)
    return EwsHome(root=dst)


def _crash(home: EwsHome, op: str, k: int) -> int:
    return crash_in_child(home, op, k)


def _state(home: EwsHome) -> tuple[int | None, list[int], list[dict]]:
    client = registry.client_for(home)
    rm = client.get_registered_model("dropout-risk")
    champion = rm.aliases.get("champion")
    return (int(champion) if champion is not None else None, json.loads(rm.tags.get(registry.STACK_TAG, "[]")),
            json.loads(rm.tags.get(registry.HISTORY_TAG, "[]")))


def _assert_consistent(home: EwsHome, champion: int) -> list[dict]:
    alias, stack, history = _state(home)
    assert alias == stack[-1] == history[-1]["version"] == champion, (alias, stack, history)
    assert not journal_path(home).exists()
    return history


def _points(tmp_path: Path, src: Path, op: str, check) -> int:  # noqa: ANN001 - check(home, killed: bool)
    """Kill `op` at its 0th, 1st, ... crash point until a run goes through; `check` each case."""
    for k in range(MAX_POINTS):
        home = _copy(src, tmp_path / f"{op}-{k}")
        rc = _crash(home, op, k)
        assert rc in (0, KILLED), f"{op} at crash point {k} failed otherwise (exit {rc})"
        check(home, killed=rc == KILLED)
        if rc == 0:
            return k
    raise AssertionError(f"{op} still killed after {MAX_POINTS} crash points")


def test_a_promotion_killed_at_any_write_is_finished_once_by_the_operators_rerun(template: Path, tmp_path: Path) -> None:
    def check(home: EwsHome, killed: bool) -> None:
        if killed:
            decision = registry.promote(home, override_reason=OVERRIDE)  # the operator's re-run
            assert decision.promoted and decision.candidate == 2, decision.reasons
        history = _assert_consistent(home, champion=2)
        assert [h["version"] for h in history] == [1, 2]  # the promotion recorded exactly once
        assert history[-1]["reason"] == f"override: {OVERRIDE}"
        versions = {v.version: v for v in registry.list_versions(home)}
        assert versions[2].aliases == ["champion"] and versions[1].aliases == []
        assert versions[2].tags["promotion_override"] == OVERRIDE and "promoted_at" in versions[2].tags

    points = _points(tmp_path, template, "promote", check)
    assert points >= 8  # the journal, 7 writes (2 override tags, 2 tags, challenger, champion, stack, history)


def test_a_rollback_killed_at_any_write_is_finished_once_by_the_operators_rerun(template: Path, tmp_path: Path) -> None:
    promoted = _copy(template, tmp_path / "promoted")
    registry.promote(promoted, override_reason=OVERRIDE)
    _assert_consistent(promoted, champion=2)

    def check(home: EwsHome, killed: bool) -> None:
        if killed:
            back = registry.rollback(home)  # the operator's re-run: must not roll back a second time
            assert (back.from_version, back.to_version) == (2, 1)
        history = _assert_consistent(home, champion=1)
        assert [h["version"] for h in history] == [1, 2, 1]
        assert history[-1]["reason"] == "rollback: from version 2"
        assert "rolled_back_at" in {v.version: v for v in registry.list_versions(home)}[2].tags

    assert _points(tmp_path, promoted.root, "rollback", check) >= 4


def test_any_registry_command_finishes_a_pending_change_and_the_rerun_reports_it_once(template: Path, tmp_path: Path) -> None:
    home = _copy(template, tmp_path / "models-first")
    assert _crash(home, "promote", 4) == KILLED  # mid-way: tags written, aliases not yet
    assert journal_path(home).exists()
    assert {v.version: v.aliases for v in registry.list_versions(home)}[2] == ["champion"]  # `ews models` finished it
    _assert_consistent(home, champion=2)
    rerun = registry.promote(home, override_reason=OVERRIDE)
    assert rerun.promoted and "finished_after_crash" in rerun.checks
    with pytest.raises(RuntimeError, match="no challenger"):  # reported once; a third run has nothing to do
        registry.promote(home, override_reason=OVERRIDE)
    assert [h["version"] for h in _assert_consistent(home, champion=2)] == [1, 2]
