"""Session worlds built once per test run, not once per xdist worker or per re-set-up.

Why: `make test` runs two xdist workers, and each worker is its own pytest session, so every
session-scoped world used to be built by both. A parametrised session fixture (the seeded worlds)
is also torn down and set up again whenever pytest's ordering alternates between its parameters, so
the same seed's world could be built three times in one run. Here a rung is built under an exclusive
file lock in a folder every worker of the run shares (the run's base temp's parent under xdist, the
base temp itself without it); the first worker to need it builds it and pickles what the fixture
returns, and everyone after reads that. Rungs stay read-only, as the ladder requires, so sharing
them across workers changes nothing a test can see. A build that failed half-way leaves no marker,
and the next one starts from an empty folder.
"""

from __future__ import annotations

import fcntl
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def shared_root(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The folder this run's workers share: under xdist each worker's base temp is `popen-gwN` inside
    the run's own numbered folder, so the parent is this run's and no other's."""
    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "shared-worlds"
    root.mkdir(exist_ok=True)
    return root


def build_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
               build: Callable[[Path], T]) -> T:
    """`build(folder)` run once per test run for `name`; every later call returns its (unpickled) result."""
    root = shared_root(tmp_path_factory, worker_id)
    folder, done = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the build raises
        if done.exists():
            return pickle.loads(done.read_bytes())
        if folder.exists():  # an earlier build of this rung failed: start clean
            shutil.rmtree(folder)
        folder.mkdir()
        result = build(folder)
        partial = root / f"{name}.pickle.partial"
        partial.write_bytes(pickle.dumps(result))
        partial.replace(done)
        return result
