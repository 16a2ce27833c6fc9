"""Immutable round snapshots: written once under their content hash, published by a pointer swap.

Layout under EWS_HOME/rounds/:
  <round_id>/<hash>/manifest.json   model version, training-set and delivery fingerprints, config,
                                    thresholds, counts (no wall-clock time: the hash must repeat)
  <round_id>/<hash>/students.parquet one row per enrolled student: keys, area, features, score,
                                    group, every SHAP contribution, reasons
  <round_id>/PUBLISHED              the hash being served (replaced with os.replace)
  <round_id>/history.jsonl          when each hash was published (outside the hash on purpose)

A crash before the pointer swap leaves the previous snapshot served; the snapshot folder itself
appears in one rename, so a half-written folder is never under a hash name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from features.pointintime.pipeline import file_sha256
from features.home import EwsHome
from features.parquet import write_parquet

POINTER = "PUBLISHED"
MANIFEST = "manifest.json"
STUDENTS = "students.parquet"


@dataclass(frozen=True)
class SnapshotRef:
    round_id: str
    hash: str
    folder: Path

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))

    def students(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.folder / STUDENTS, columns=columns)


def _canonical(obj: dict[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2, default=str)


def write_snapshot(home: EwsHome, round_id: str, manifest: dict[str, Any], students: pa.Table) -> SnapshotRef:
    """Write the snapshot under its content hash (idempotent) without publishing it."""
    round_dir = home.rounds_dir / round_id
    round_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=round_dir))
    try:
        # Written so that equal tables give equal bytes (whatever the chunking of the query
        # result), so the file hash is a content hash and rescoring reproduces the snapshot.
        write_parquet(students, tmp / STUDENTS)
        body = dict(manifest, students_sha256=file_sha256(tmp / STUDENTS), rows=students.num_rows)
        text = _canonical(body)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        body["snapshot_hash"] = digest
        (tmp / MANIFEST).write_text(_canonical(body), encoding="utf-8")
        final = round_dir / digest
        if final.exists():
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SnapshotRef(round_id, digest, final)


def publish(home: EwsHome, ref: SnapshotRef) -> None:
    """Point the round at this snapshot in one atomic rename."""
    round_dir = home.rounds_dir / ref.round_id
    tmp = round_dir / f".{POINTER}.tmp"
    tmp.write_text(ref.hash + "\n", encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, round_dir / POINTER)
    with open(round_dir / "history.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"hash": ref.hash, "published_at": dt.datetime.now(dt.UTC).isoformat()}) + "\n")


def published(home: EwsHome, round_id: str) -> SnapshotRef | None:
    pointer = home.rounds_dir / round_id / POINTER
    if not pointer.exists():
        return None
    digest = pointer.read_text(encoding="utf-8").strip()
    folder = home.rounds_dir / round_id / digest
    if not (folder / MANIFEST).exists():
        return None
    return SnapshotRef(round_id, digest, folder)


def published_rounds(home: EwsHome) -> list[SnapshotRef]:
    """Every published round, oldest round id first."""
    if not home.rounds_dir.exists():
        return []
    refs = [published(home, d.name) for d in sorted(home.rounds_dir.iterdir()) if d.is_dir()]
    return [r for r in refs if r is not None]


def snapshots_of(home: EwsHome, round_id: str) -> list[SnapshotRef]:
    """Every snapshot written for a round, published or not."""
    d = home.rounds_dir / round_id
    if not d.exists():
        return []
    return [SnapshotRef(round_id, p.name, p) for p in sorted(d.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists()]
