"""Debris of a killed run, swept when the next writer starts.

Every writer publishes by temp file (or folder) + atomic rename, so a kill never leaves a half
artefact in place — but it leaves the temp behind: `rounds/<round>/.tmp-*` folders and
`.PUBLISHED.tmp` of `ews score`, `*.tmp` files of feature and training-set writes, scratch folders
`vault/tmp/<delivery>.<pid>` of `ews ingest` (raw IDs and names: the reason this matters), and
`*.tmp` files in the vault, and `tmp/.round-<round>-<pid>-*` folders of a round's prepared rows
(`ews score`, serving/scoring.py). `ews score` and `ews ingest` call `sweep_debris` first. Only debris
older than `MIN_AGE_SECONDS` goes, and never a scratch folder whose process is still alive: a
writer running now in another process keeps its temp files. Each removal is logged (path only).

In `features` because it is the first room; the writers of later rooms call it with their folders.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from features.home import EwsHome


def prepared_scratch(folder: Path, round_id: str) -> Path:
    """A new scratch folder `<folder>/.round-<round>-<pid>-<random>` for a round's prepared rows
    (`prepare_round`, by `ews score` and `ews features`); the caller removes it. The pid in the name
    lets the next `ews score` tell a killed run's folder from a live one (`sweep_debris`)."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".round-{round_id}-{os.getpid()}-", dir=folder))

log = logging.getLogger(__name__)

# An hour: far longer than any write of one file or snapshot takes, far shorter than between runs.
MIN_AGE_SECONDS = 3600.0
_SCRATCH = re.compile(r"^.+\.(\d+)$")  # vault/tmp/<delivery_id>.<pid> (features.home.ingest_scratch_dir)
_PREPARED = re.compile(r"^\.round-.+-(\d+)-[^-]+$")  # tmp/.round-<round>-<pid>-<random> (`prepared_scratch`)

Writer = Literal["score", "ingest"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _candidates(home: EwsHome, writer: Writer) -> Iterable[Path]:
    if writer == "score":
        if home.rounds_dir.is_dir():
            yield from home.rounds_dir.glob("*/.tmp-*")
            yield from home.rounds_dir.glob("*/*.tmp")
        for folder in (home.features_dir, home.trainsets_dir):
            if folder.is_dir():
                yield from folder.rglob("*.tmp")
        if home.spill_dir.is_dir():
            for p in home.spill_dir.glob(".round-*"):
                m = _PREPARED.match(p.name)
                if p.is_dir() and m and not _pid_alive(int(m.group(1))):
                    yield p
    else:
        if home.vault_dir.is_dir():
            yield from home.vault_dir.glob("*.tmp")
        if home.vault_tmp_dir.is_dir():
            for p in home.vault_tmp_dir.iterdir():
                m = _SCRATCH.match(p.name)
                if p.is_dir() and m and not _pid_alive(int(m.group(1))):
                    yield p


def sweep_debris(home: EwsHome, writer: Writer, min_age: float = MIN_AGE_SECONDS) -> list[Path]:
    """Remove what an earlier, killed run of `writer` left behind (older than `min_age` seconds);
    returns what was removed."""
    now = time.time()
    removed = []
    for p in list(_candidates(home, writer)):
        try:
            age = now - p.lstat().st_mtime
        except FileNotFoundError:
            continue  # gone meanwhile
        if age < min_age:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
        log.warning("removed debris of a killed %s run (%.0f h old): %s", writer, age / 3600, p)
    return removed
