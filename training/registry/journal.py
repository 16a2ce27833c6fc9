"""The release journal: a change of champion as one recorded transaction.

Promotion and rollback are several MLflow writes (version tags, aliases, the history and stack
tags); MLflow has no transaction over them. So a change is first written whole, as the list of its
writes with their final values, to `EWS_HOME/mlflow/release-journal.json` (temp file + atomic
rename), then applied, then marked done (renamed to `release-journal.done.json`, kept for the
audit). Every write is idempotent (a tag or alias set to a value fixed in the journal, an alias
dropped only while it still names the version), so a crash anywhere leaves either no journal (nothing
happened) or a pending one that the next registry command replays to the end: the champion alias,
the history and the stack always end up agreeing, and the change is recorded exactly once.

Sits under `training.registry.release` (which builds the entries) and `store.client_for` (which
finishes a pending entry before any registry command works on the store). A file lock serialises
changes between processes; the OS drops it when a process dies, so a crash never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from features.home import EwsHome

log = logging.getLogger(__name__)

JOURNAL_NAME = "release-journal.json"
DONE_NAME = "release-journal.done.json"
LOCK_NAME = ".release.lock"

# A probe is called with the name of each point where a crash must be survivable: before the
# journal is written, before each write ("write 0", "write 1", ...) and before the done mark. The
# crash tests (tests/support/crash_registry.py) pass one that kills the process; production's does nothing.
Probe = Callable[[str], None]


def no_probe(name: str) -> None:
    """The production probe: nothing happens."""


WriteKind = Literal["version_tag", "model_tag", "alias", "drop_alias"]


@dataclass(frozen=True)
class Write:
    """One idempotent registry write. `version_tag`: (version, key, value); `model_tag`: (key, value);
    `alias`: (alias, version); `drop_alias`: (alias, version) — removed only while it names `version`."""

    kind: WriteKind
    args: tuple[str, ...]

    def apply(self, client: Any, name: str) -> None:
        if self.kind == "version_tag":
            version, key, value = self.args
            client.set_model_version_tag(name, version, key, value)
        elif self.kind == "model_tag":
            key, value = self.args
            client.set_registered_model_tag(name, key, value)
        elif self.kind == "alias":
            alias, version = self.args
            client.set_registered_model_alias(name, alias, version)
        elif self.kind == "drop_alias":
            alias, version = self.args
            # Conditional, so a replay after the drop (or after training set a new challenger) is harmless.
            if str(client.get_registered_model(name).aliases.get(alias, "")) == version:
                client.delete_registered_model_alias(name, alias)
        else:  # pragma: no cover - the Literal type rules it out
            raise ValueError(f"unknown journal write {self.kind!r}")


@dataclass
class Entry:
    """One change of champion: what it is (for the operator's re-run) and its writes, in order."""

    op: Literal["promote", "rollback", "register"]
    model: str
    writes: list[Write]
    summary: dict[str, Any] = field(default_factory=dict)  # op-specific facts: versions, gate decision
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Finished by a later command after a crash; `reported` once promote/rollback told the operator.
    recovered: bool = False
    reported: bool = False

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "op": self.op, "model": self.model, "summary": self.summary,
                           "recovered": self.recovered, "reported": self.reported,
                           "writes": [{"kind": w.kind, "args": list(w.args)} for w in self.writes]},
                          ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, text: str, source: Path) -> Entry:
        try:
            d = json.loads(text)
            return cls(op=d["op"], model=d["model"], summary=d.get("summary", {}), id=d["id"],
                       recovered=bool(d.get("recovered")), reported=bool(d.get("reported")),
                       writes=[Write(kind=w["kind"], args=tuple(str(a) for a in w["args"])) for w in d["writes"]])
        except (ValueError, KeyError, TypeError) as exc:
            # Written by atomic rename, so a torn file means someone edited it by hand: stop, do not guess.
            raise RuntimeError(f"{source}: unreadable release journal ({exc}); inspect it and the registry by hand") from exc


def journal_path(home: EwsHome) -> Path:
    return home.mlflow_dir / JOURNAL_NAME


def last_change_marker(home: EwsHome) -> float | None:
    """When the last change of champion made in this home was done (the done record's mtime), or
    None: a stat a running service can afford on every request to notice a promotion at once."""
    try:
        return (home.mlflow_dir / DONE_NAME).stat().st_mtime_ns / 1e9
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def release_lock(home: EwsHome) -> Iterator[None]:
    """Exclusive across processes for one change of champion (released by the OS if we die)."""
    home.mlflow_dir.mkdir(parents=True, exist_ok=True)
    with open(home.mlflow_dir / LOCK_NAME, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _apply(home: EwsHome, client: Any, entry: Entry, probe: Probe) -> None:
    for i, w in enumerate(entry.writes):
        probe(f"write {i}")
        w.apply(client, entry.model)
    probe("done")
    os.replace(journal_path(home), home.mlflow_dir / DONE_NAME)


def _finish(home: EwsHome, client: Any) -> Entry | None:
    """Under the lock: replay a pending entry to the end. Returns it, or None if none was pending."""
    path = journal_path(home)
    if not path.exists():
        return None
    entry = Entry.from_json(path.read_text(encoding="utf-8"), path)
    log.warning("finishing the %s interrupted by a crash (journal %s, %d writes)", entry.op, entry.id, len(entry.writes))
    if not entry.recovered:
        # Flagged before replaying, so the done record says a later command finished it, and the
        # operator's re-run of promote/rollback reports it instead of acting a second time.
        entry.recovered = True
        _write_atomic(path, entry.to_json())
    _apply(home, client, entry, no_probe)
    return entry


def finish_pending(home: EwsHome, client: Any) -> Entry | None:
    """Finish a change of champion a crash interrupted (the next registry command calls this).
    Cheap when there is none: one stat, no lock."""
    if not journal_path(home).exists():
        return None
    with release_lock(home):
        return _finish(home, client)


def take_recovered(home: EwsHome, client: Any, op: str) -> Entry | None:
    """For the re-run of `op` after a crash: finish a pending entry, then return the last change
    of champion if it was an `op` finished after a crash (by this call or by any registry command
    since) and not yet reported; it is marked reported, so it is returned once."""
    with release_lock(home):
        _finish(home, client)
        done = home.mlflow_dir / DONE_NAME
        if not done.exists():
            return None
        entry = Entry.from_json(done.read_text(encoding="utf-8"), done)
        if entry.op != op or not entry.recovered or entry.reported:
            return None
        entry.reported = True
        _write_atomic(done, entry.to_json())
        return entry


def commit(home: EwsHome, client: Any, build: Callable[[Any], Entry | None], probe: Probe = no_probe) -> Entry | None:
    """Under the lock: finish any pending entry, build the new one from the registry as it now is
    (`build` may return None: nothing to change), journal it, apply it, mark it done."""
    with release_lock(home):
        _finish(home, client)
        entry = build(client)
        if entry is None:
            return None
        probe("journal")
        _write_atomic(journal_path(home), entry.to_json())
        _apply(home, client, entry, probe)
        return entry
