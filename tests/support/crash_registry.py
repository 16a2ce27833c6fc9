"""Run one promotion or rollback that dies at its K-th crash point: the registry's fault injection.

    python -m tests.support.crash_registry HOME promote|rollback K

`training.registry.journal` calls a probe before the journal is written, before each registry
write and before the done mark; this runner passes one that ends the process with `os._exit` at
the K-th call, as abrupt as a power cut (no cleanup, no finally blocks). Exit status 0 means the
change has fewer than K+1 crash points and ran to the end. Its own process, so the kill is real.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from features.home import EwsHome
from training.registry import promote, rollback
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


def main(argv: list[str]) -> None:
    home_dir, op, k = argv
    home = EwsHome.from_env(Path(home_dir))
    if op == "promote":
        promote(home, override_reason=OVERRIDE, probe=die_at(int(k)))
    else:
        rollback(home, probe=die_at(int(k)))


if __name__ == "__main__":
    main(sys.argv[1:])
