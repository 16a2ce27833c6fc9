"""Run one ingestion that is killed at a named point: the fault injection of the crash tests.

    python -m tests.support.crash_ingest FOLDER HOME POINT

Production ingestion calls a no-op probe at each point where a crash must leave the warehouse as
it was; this runner passes a probe that SIGKILLs the process at POINT ("after_vault" or
"mid_warehouse"), as abrupt as a power cut: no cleanup, no rollback. It runs in its own process so
the kill is real and the test process survives it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from features.home import EwsHome
from features.ingest.pipeline import Probe, ingest_path


def kill_at(point: str) -> Probe:
    def probe(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    return probe


def main(argv: list[str]) -> None:
    folder, home, point = argv
    ingest_path(Path(folder), EwsHome.from_env(Path(home)), probe=kill_at(point))


if __name__ == "__main__":
    main(sys.argv[1:])
