"""Promotions and rollbacks that die at their K-th crash point: the registry's fault injection.

    python -m tests.support.crash_registry build HOME      a tiny registry: v1 champion, v2 challenger
    python -m tests.support.crash_registry HOME promote|rollback K

`training.registry.journal` calls a probe before the journal is written, before each registry
write and before the done mark; the runner passes one that ends the process with `os._exit` at
the K-th call, as abrupt as a power cut (no cleanup, no finally blocks). Exit status 0 means the
change has fewer than K+1 crash points and ran to the end. `crash_in_child` runs the same in a
forked child of the test process (a real process, killed for real, without paying the imports
again); the registry is built in its own process so the test process never starts LightGBM's
threads before it forks.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import shutil
import sys
from pathlib import Path

from features.home import EwsHome
from training.registry.journal import Probe

KILLED = 137
OVERRIDE = "crash test: promote regardless of the gate"


def die_at(k: int) -> Probe:
    calls = 0

    def probe(name: str) -> None:
        nonlocal calls
        if calls == k:
            os._exit(KILLED)
        calls += 1
    return probe


def build(home: EwsHome) -> None:
    """v1 (2 trees) champion, v2 (20 trees) challenger whose own gate demands an impossible ECE, so
    promoting it takes an override: the longest promotion (two more tags). The training set is
    removed afterwards: the gate then compares logged figures, which keeps each promotion cheap."""
    from simulator.synthetic import synthetic_frame, write_synthetic_trainset
    from training.config import FairnessConfig, GateConfig, ModelConfig, TrainConfig
    from training.train import train

    write_synthetic_trainset(home, synthetic_frame(300, seed=5), name="ts-synthetic-a")
    for trees, gate in ((2, GateConfig(max_ece=0.5)), (20, GateConfig(max_ece=1e-9))):
        cfg = TrainConfig(model=ModelConfig(num_threads=1, n_estimators=trees), shap_sample_rows=50, gate=gate,
                          fairness=FairnessConfig(gate_attributes=()))
        train(home, cfg, trainset="ts-synthetic-a")
    shutil.rmtree(home.trainsets_dir)


def change(home: EwsHome, op: str, k: int) -> None:
    from training.registry import promote, rollback

    if op == "promote":
        promote(home, override_reason=OVERRIDE, probe=die_at(k))
    else:
        rollback(home, probe=die_at(k))


_CONTEXT: multiprocessing.context.BaseContext | None = None


def _context() -> multiprocessing.context.BaseContext:
    # A fork server: a fresh process that imports MLflow and the registry once and forks a child per
    # case. Forking the test process itself deadlocks (a lock held by one of its threads at fork).
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tests.support.crash_registry", "training.registry", "mlflow", "mlflow.lightgbm"])
        _CONTEXT = ctx
    return _CONTEXT


def _child(root: str, op: str, k: int) -> None:
    change(EwsHome(root=Path(root)), op, k)


def crash_in_child(home: EwsHome, op: str, k: int, timeout: float = 600) -> int:
    """Run `change` in a child of the fork server; its exit status (KILLED, 0, or 1 on an error)."""
    p = _context().Process(target=_child, args=(str(home.root), op, k))
    p.start()
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise AssertionError(f"{op} at crash point {k} hung for {timeout:.0f} s")
    return int(p.exitcode)


def main(argv: list[str]) -> None:
    if argv[0] == "build":
        build(EwsHome.from_env(Path(argv[1])))
        return
    home_dir, op, k = argv
    change(EwsHome.from_env(Path(home_dir)), op, int(k))


if __name__ == "__main__":
    main(sys.argv[1:])
