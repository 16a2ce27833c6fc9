"""Who may read what: bearer tokens with roles and scopes, and the access log of student-data reads.

Stored in EWS_HOME/serving/access.sqlite (owner-only). A token is shown once, at creation; only its
SHA-256 is kept. It reads `ews_<token id>_<secret>`: the id finds the row, the hash decides. The
token id (never the token) is what the access log records.

Roles:
  school   one school code: its own students, with names and rooms
  area     area codes (tambon 6 digits, amphoe 4, province 2): summaries and pseudonymous lists
  analyst  ad-hoc scoring, summaries and pseudonymous lists everywhere
  auditor  read-only and pseudonymous: lists, explanations, audit replay, summaries
  admin    everything above except names (names are for the student's own school only)
  Only school tokens see sensitive values and exact quasi-identifiers; the other roles see the
  coarsened, k-anonymous view of `serving.disclosure` (docs/PRIVACY.md).
  monitoring  the /metrics scrape only (counts by route template; no student data)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from features.home import EwsHome

Role = Literal["school", "area", "analyst", "auditor", "admin", "monitoring"]
ROLES: tuple[str, ...] = ("school", "area", "analyst", "auditor", "admin", "monitoring")
_PREFIX = "ews"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL, role TEXT NOT NULL,
    school_code TEXT, areas TEXT NOT NULL, label TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS access_log (
    at TEXT NOT NULL, token_id TEXT NOT NULL, role TEXT NOT NULL, action TEXT NOT NULL,
    round_id TEXT, target TEXT, students INTEGER NOT NULL, snapshot_hash TEXT
);
"""
_LOG_COLUMNS = ("at", "token_id", "role", "action", "round_id", "target", "students", "snapshot_hash")


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid token."""

    token_id: str
    role: str
    school_code: str | None
    areas: tuple[str, ...]
    label: str = ""

    @property
    def sees_names(self) -> bool:
        return self.role == "school"

    @property
    def sees_everything(self) -> bool:
        """Every value of a pupil (sensitive screening values, exact age, the school of a small
        class): only the pupil's own school. Every other role sees what `serving.disclosure`
        leaves (docs/PRIVACY.md)."""
        return self.role == "school"

    def may(self, action: str) -> bool:
        allowed = {
            "list": ("school", "area", "analyst", "auditor", "admin"),
            "summary": ("school", "area", "analyst", "auditor", "admin"),
            "explain": ("school", "area", "analyst", "auditor", "admin"),
            "replay": ("auditor", "admin"),
            "score": ("analyst", "admin"),
            "monitoring": ("analyst", "admin"),
            "uplift": ("analyst", "auditor", "admin"),  # issue 15.6c: aggregates of the randomised arms
            "metrics": ("monitoring", "admin"),
            # issue 15: the action record (serving.actions checks the pupil's school or area)
            "actions": ("school", "area", "analyst", "auditor", "admin"),
            "record_action": ("school", "area"),
            "sheet": ("school",),
        }
        return self.role in allowed.get(action, ())

    def covers_school(self, school_code: str, tambon_code: str | None) -> bool:
        """May this caller see students of this school?"""
        if self.role == "school":
            return school_code == self.school_code
        if self.role == "area":
            return tambon_code is not None and any(tambon_code.startswith(a) for a in self.areas)
        # Named, not "everyone else": a monitoring token (or a role added later) covers no school.
        return self.role in ("analyst", "auditor", "admin")

    def covers_area(self, area_code: str) -> bool:
        """May this caller see the area `area_code` as a whole (or part of it)?"""
        if self.role == "area":
            return any(area_code.startswith(a) for a in self.areas)
        return self.role in ("analyst", "auditor", "admin")


class TokenInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_id: str
    role: str
    school_code: str | None
    areas: list[str]
    label: str
    created_at: str
    revoked_at: str | None


def db_path(home: EwsHome) -> Path:
    return home.access_db


def open_wal(path: Path, timeout: float) -> sqlite3.Connection:
    """A SQLite file several service workers write (WAL, autocommit), in an owner-only folder. The
    connection may be shared by a worker's threads: its caller serialises use with a lock."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
    con = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _connect(home: EwsHome) -> sqlite3.Connection:
    # One connection per worker is shared by the server's threads; a lock in TokenStore serialises use.
    con = open_wal(db_path(home), timeout=10)
    con.executescript(_SCHEMA)
    # Logs written before the served snapshot was recorded (issue 15) lack its column.
    if "snapshot_hash" not in {r[1] for r in con.execute("PRAGMA table_info(access_log)")}:
        con.execute("ALTER TABLE access_log ADD COLUMN snapshot_hash TEXT")
    return con


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def is_ascii_digits(code: str) -> bool:
    """0-9 only: `str.isdigit()` also accepts Thai (๐-๙) and other Unicode digits."""
    return code.isascii() and code.isdigit()


def validate_scope(role: str, school: str | None, areas: list[str]) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "school":
        if not school or not (len(school) == 10 and is_ascii_digits(school)):
            raise ValueError("a school token needs --school with a 10-digit school code")
        if areas:
            raise ValueError("a school token takes no --area")
    elif school:
        raise ValueError("--school is only for role school")
    if role == "area":
        if not areas:
            raise ValueError("an area token needs at least one --area (tambon 6, amphoe 4 or province 2 digits)")
        for a in areas:
            if not (is_ascii_digits(a) and len(a) in (2, 4, 6)):
                raise ValueError(f"area code {a!r} is not a 2-digit province, 4-digit amphoe or 6-digit tambon code")
    elif areas:
        raise ValueError("--area is only for role area")


def create_token(home: EwsHome, role: str, school: str | None = None, areas: list[str] | None = None,
                 label: str = "") -> tuple[str, TokenInfo]:
    """(the token, to show once; its stored description)."""
    areas = list(areas or [])
    validate_scope(role, school, areas)
    token_id = secrets.token_hex(4)
    token = f"{_PREFIX}_{token_id}_{secrets.token_urlsafe(24)}"
    with closing(_connect(home)) as con:
        con.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    [token_id, _sha(token), role, school, json.dumps(areas), label, _now()])
    return token, TokenInfo(token_id=token_id, role=role, school_code=school, areas=areas, label=label,
                            created_at=_now(), revoked_at=None)


def list_tokens(home: EwsHome) -> list[TokenInfo]:
    with closing(_connect(home)) as con:
        rows = con.execute("SELECT token_id, role, school_code, areas, label, created_at, revoked_at FROM tokens "
                           "ORDER BY created_at, token_id").fetchall()
    return [TokenInfo(token_id=r[0], role=r[1], school_code=r[2], areas=json.loads(r[3]), label=r[4],
                      created_at=r[5], revoked_at=r[6]) for r in rows]


def revoke_token(home: EwsHome, token_id: str) -> bool:
    with closing(_connect(home)) as con:
        cur = con.execute("UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", [_now(), token_id])
        return cur.rowcount == 1


class TokenStore:
    """Token checks and access-log writes for one service worker (one sqlite connection)."""

    def __init__(self, home: EwsHome) -> None:
        self.home = home
        self._con = _connect(home)
        self._lock = threading.Lock()

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        parts = token.split("_", 2)  # the secret itself may contain "_"
        if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 8:
            return None
        with self._lock:
            row = self._con.execute(
                "SELECT token_sha256, role, school_code, areas, label, revoked_at FROM tokens WHERE token_id = ?", [parts[1]]
            ).fetchone()
        if row is None or row[5] is not None or not hmac.compare_digest(row[0], _sha(token)):
            return None
        return Principal(token_id=parts[1], role=row[1], school_code=row[2], areas=tuple(json.loads(row[3])), label=row[4])

    def log(self, who: Principal, action: str, round_id: str | None, target: str | None, students: int,
            snapshot_hash: str | None = None) -> None:
        """One line per read of student data: who (token id), when, what (action, round, target) and
        which published snapshot it was served (so a recorded action links to the list seen)."""
        with self._lock:
            self._con.execute(f"INSERT INTO access_log ({', '.join(_LOG_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              [_now(), who.token_id, who.role, action, round_id, target, int(students), snapshot_hash])

    def close(self) -> None:
        self._con.close()


def read_access_log(home: EwsHome, limit: int = 1000) -> list[dict[str, object]]:
    with closing(_connect(home)) as con:
        rows = con.execute(f"SELECT rowid, {', '.join(_LOG_COLUMNS)} FROM access_log ORDER BY rowid DESC LIMIT ?",
                           [limit]).fetchall()
    return [dict(zip(("log_id", *_LOG_COLUMNS), r, strict=True)) for r in rows]
