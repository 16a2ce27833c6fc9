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

import os
import shutil
import sys
import traceback
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


def crash_in_child(home: EwsHome, op: str, k: int) -> int:
    """Run `change` in a forked child; its exit status (KILLED, 0, or 1 on an error)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the test process
        try:
            change(home, op, k)
            code = 0
        except BaseException:  # noqa: BLE001 - reported by the exit status
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> None:
    if argv[0] == "build":
        build(EwsHome.from_env(Path(argv[1])))
        return
    home_dir, op, k = argv
    change(EwsHome.from_env(Path(home_dir)), op, int(k))


if __name__ == "__main__":
    main(sys.argv[1:])
