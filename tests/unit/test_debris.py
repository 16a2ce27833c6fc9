"""What a killed `ews score` or `ews ingest` leaves behind (temp snapshot folders, temp files,
vault scratch with raw IDs) is removed when the next writer starts — only when old enough and
never a live process's scratch — and each removal is logged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from features.debris import MIN_AGE_SECONDS, sweep_debris
from features.home import EwsHome


def _age(p: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(p, (t, t))
    return p


def _file(p: Path, old: bool) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("x")
    return _age(p, MIN_AGE_SECONDS * 2 if old else 5)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_scores_old_debris_goes_and_a_running_writers_fresh_temp_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = EwsHome(root=tmp_path)
    snap = home.rounds_dir / "2568-T1-early" / ".tmp-abc"
    _file(snap / "students.parquet", old=True)
    _age(snap, MIN_AGE_SECONDS * 2)
    pointer = _file(home.rounds_dir / "2568-T1-early" / ".PUBLISHED.tmp", old=True)
    feature = _file(home.features_dir / "2568-T1-early.parquet.tmp", old=True)
    fresh = _file(home.features_dir / "2568-T1-mid.parquet.tmp", old=False)
    kept = _file(home.rounds_dir / "2568-T1-early" / "PUBLISHED", old=True)  # not debris
    # a round's prepared rows (serving/scoring.py): a killed run's go, a live run's stay however old
    prepared = _age(_file(home.spill_dir / f".round-2568-T1-early-{_dead_pid()}-x1y2" / "chunk=0" / "a.parquet",
                          old=True).parent.parent, MIN_AGE_SECONDS * 2)
    live = _age(_file(home.spill_dir / f".round-2568-T1-mid-{os.getpid()}-z3w4" / "chunk=0" / "a.parquet",
                      old=True).parent.parent, MIN_AGE_SECONDS * 2)
    with caplog.at_level(logging.WARNING, logger="features.debris"):
        removed = sweep_debris(home, "score")
    assert set(removed) == {snap, pointer, feature, prepared}
    assert not snap.exists() and not pointer.exists() and not feature.exists() and not prepared.exists()
    assert fresh.exists() and kept.exists() and live.exists()
    assert sum("debris of a killed score run" in r.getMessage() for r in caplog.records) == 4


def test_a_killed_ingests_vault_scratch_goes_unless_its_process_still_runs(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path)
    dead = home.vault_tmp_dir / f"delivery-1.{_dead_pid()}"
    live = home.vault_tmp_dir / f"delivery-2.{os.getpid()}"  # this process: alive
    for d in (dead, live):
        _file(d / "ids.parquet", old=True)
        _age(d, MIN_AGE_SECONDS * 2)
    leftover = _file(home.vault_dir / "identity.duckdb.tmp", old=True)
    spill = _file(home.ingest_spill_dir / "duckdb_temp_block", old=True)  # DuckDB's own spill: not ours to judge
    assert set(sweep_debris(home, "ingest")) == {dead, leftover}
    assert live.exists() and spill.exists() and not dead.exists()
    assert sweep_debris(home, "ingest") == []  # a second start finds nothing
