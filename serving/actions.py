"""The action record: what a school or area team did for a pupil the list named (issue 15, part 1).

Where it sits: after serving (a school reads its list, then records what it did). The service's
routes call `ActionStore.record` / `.for_pupil` / `.latest_by_student`; `ews actions list|export|
verify` read the same store, and `export` copies it into the warehouse (`actions` table) so analysts
can join actions to outcomes.

What is recorded: a fixed Thai/English catalogue (`CATALOGUE`: the student-care system's and EEF's
practice, and the Thailand Zero Dropout case path declared once as `TZD_PATH`), a status
(`STATUSES`), an outcome when a case is closed (`OUTCOMES`), a follow-up due date; who (token id and
role), when, which pupil (student_key), the round whose list prompted it and what that list showed
(the snapshot hash, score and group; the access-log line of the list this token was served). No free
text by default (record *that* an interaction happened); a deployment that enables notes
(`actions.notes = true` in deployment.toml) keeps them in the identity vault (owner-only), never here.

The store is append-only: EWS_HOME/serving/actions.sqlite (WAL, several service workers write), with
triggers refusing UPDATE and DELETE, and a hash chain (each entry's hash covers the previous one) so
an edit made around the triggers is found by `ews actions verify`. An update is a new entry whose
`refers_to` names the earlier one; the latest entry of a pupil is their current state.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import secrets
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator, model_validator

from features.home import EwsHome
from serving.access import Principal, open_wal

if TYPE_CHECKING:
    from serving.store import LoadedRound


# ---------------------------------------------------------------------------------------------
# The catalogue, declared once


@dataclass(frozen=True)
class ActionKind:
    code: str
    th: str
    en: str
    path: str  # "care": the student-care system / EEF; "tzd": the Thailand Zero Dropout case path


CATALOGUE: tuple[ActionKind, ...] = (
    ActionKind("home_visit", "เยี่ยมบ้าน", "Home visit", "care"),
    ActionKind("counselling", "ให้คำปรึกษา", "Counselling", "care"),
    ActionKind("learning_support", "สอนเสริม/ซ่อมเสริม", "Learning support", "care"),
    ActionKind("parent_meeting", "ประชุม/พบผู้ปกครอง", "Parent meeting", "care"),
    ActionKind("cct_application", "เสนอขอทุนเสมอภาค (กสศ.)", "CCT application (EEF)", "care"),
    ActionKind("scholarship_application", "เสนอขอทุนการศึกษา", "Scholarship application", "care"),
    ActionKind("transport_help", "ช่วยเหลือการเดินทาง", "Transport help", "care"),
    ActionKind("meal_material_help", "ช่วยเหลืออาหาร/อุปกรณ์การเรียน", "Meals or school materials", "care"),
    ActionKind("referral_health", "ส่งต่อหน่วยงานสาธารณสุข", "Referral to health services", "care"),
    ActionKind("referral_social", "ส่งต่อ พม. (พัฒนาสังคมฯ)", "Referral to social development (MSDHS)", "care"),
    ActionKind("referral_police", "ส่งต่อตำรวจ", "Referral to police", "care"),
    ActionKind("tzd_identified", "พบตัว/ระบุตัวเด็ก (TZD)", "TZD: identified", "tzd"),
    ActionKind("tzd_care_plan", "วางแผนช่วยเหลือรายบุคคล (TZD)", "TZD: care plan", "tzd"),
    ActionKind("tzd_follow_up", "ติดตามผล (TZD)", "TZD: follow-up", "tzd"),
    ActionKind("tzd_closed", "ปิดกรณี (TZD)", "TZD: closed", "tzd"),
)
BY_CODE: dict[str, ActionKind] = {a.code: a for a in CATALOGUE}
# The TZD case path, in order (identify -> care plan -> follow-up -> close with an outcome).
TZD_PATH: tuple[str, ...] = tuple(a.code for a in CATALOGUE if a.path == "tzd")

STATUSES: dict[str, tuple[str, str]] = {
    "planned": ("วางแผนแล้ว", "planned"),
    "done": ("ดำเนินการแล้ว", "done"),
    "referred": ("ส่งต่อแล้ว", "referred"),
    "closed": ("ปิดกรณีแล้ว", "closed"),
}
OUTCOMES: dict[str, tuple[str, str]] = {
    "returned_to_school": ("กลับเข้าเรียน", "returned to school"),
    "non_formal_learning": ("เรียนการศึกษานอกระบบ (กศน.)", "non-formal learning"),
    "work_training": ("ฝึกอาชีพ", "work training"),
    "stays_in_school": ("ยังเรียนต่อในโรงเรียน", "stays in school"),
    "other": ("อื่น ๆ", "other"),
}
# A pupil counts as contacted once any entry has a status other than "planned" (a plan is not yet
# contact); the `not_contacted` filter lists the others.
CONTACT_STATUSES = frozenset({"done", "referred", "closed"})
MAX_NOTE_CHARS = 2000
MAX_DUE_DAYS = 366 * 2


def catalogue_json() -> dict[str, Any]:
    """The catalogue as the web page and API clients read it (Thai first)."""
    return {
        "actions": [{"code": a.code, "th": a.th, "en": a.en, "path": a.path} for a in CATALOGUE],
        "tzd_path": list(TZD_PATH),
        "statuses": [{"code": c, "th": th, "en": en} for c, (th, en) in STATUSES.items()],
        "outcomes": [{"code": c, "th": th, "en": en} for c, (th, en) in OUTCOMES.items()],
    }


# ---------------------------------------------------------------------------------------------
# Input and errors


class ActionError(Exception):
    """A request the caller can fix: 400/422 (names the field), 403 (not yours), 404."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ActionInput(BaseModel):
    """What a caller posts. Everything else (who, when, the pupil, the list it saw) the service adds."""

    model_config = ConfigDict(extra="forbid")
    action: str
    status: str
    outcome: str | None = None
    follow_up_due: dt.date | None = None
    refers_to: str | None = None
    note: str | None = None

    @field_validator("action", "status", "outcome")
    @classmethod
    def _in_catalogue(cls, v: str | None, info: ValidationInfo) -> str | None:
        allowed = {"action": BY_CODE, "status": STATUSES, "outcome": OUTCOMES}[info.field_name]
        if v is not None and v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v

    @field_validator("refers_to")
    @classmethod
    def _refers(cls, v: str | None) -> str | None:
        if v is not None and not (len(v) == 16 and all(c in "0123456789abcdef" for c in v)):
            raise ValueError("must be the 16-hex entry_id of an earlier entry")
        return v

    @field_validator("note")
    @classmethod
    def _note(cls, v: str | None) -> str | None:
        if v is not None and len(v) > MAX_NOTE_CHARS:
            raise ValueError(f"at most {MAX_NOTE_CHARS} characters")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ActionInput:
        if self.outcome is not None and self.status != "closed":
            raise ValueError("outcome: only a closed case has an outcome (status closed)")
        if self.action == "tzd_closed" and (self.status != "closed" or self.outcome is None):
            raise ValueError("outcome: the TZD close step needs status closed and an outcome")
        return self


def parse_input(body: Any) -> ActionInput:
    """The posted body, or an ActionError (422) naming the first bad field."""
    if not isinstance(body, dict):
        raise ActionError(422, "the body must be a JSON object: {action, status, ...}", None)
    try:
        return ActionInput.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = str(err["msg"]).removeprefix("Value error, ")
        if field is None and ":" in msg:  # a cross-field rule names its field first
            field, msg = msg.split(":", 1)
            msg = msg.strip()
        if err["type"] == "extra_forbidden":
            msg = "unknown field (free text is not recorded; the catalogue codes are)"
        raise ActionError(422, f"field {field}: {msg}", field) from None


def check_due(inp: ActionInput, today: dt.date) -> None:
    if inp.follow_up_due is not None and not (today - dt.timedelta(days=1) <= inp.follow_up_due
                                              <= today + dt.timedelta(days=MAX_DUE_DAYS)):
        raise ActionError(422, "field follow_up_due: must be from today to two years ahead", "follow_up_due")


# ---------------------------------------------------------------------------------------------
# The pupil an action is about, and who may record it


@dataclass(frozen=True)
class Pupil:
    """A pupil as the round whose list prompted the action shows them."""

    student_key: str
    school_code: str | None
    tambon_code: str | None
    round_id: str
    snapshot_hash: str
    risk_score: float | None
    risk_group: str | None


def check_student_key(student_key: str) -> str:
    """The key rule of every route (serving.views): 8-128 letters and digits; 400 otherwise."""
    from serving.views import RequestError

    if not isinstance(student_key, str) or not (8 <= len(student_key) <= 128) or not student_key.isalnum():
        raise RequestError(400, "student key must be 8-128 letters and digits")
    return student_key


def pupil_in_round(rnd: LoadedRound, student_key: str) -> Pupil | None:
    """The pupil on this round's list (any school), or None when the round does not list them."""
    i = rnd.row_of(student_key) if isinstance(student_key, str) else None
    if i is None:
        return None

    def text(v: Any) -> str | None:
        return None if v is None or v != v else str(v)  # NaN != NaN

    score = rnd.cell("risk_score", i)
    return Pupil(student_key=student_key, school_code=text(rnd.cell("school_code", i)),
                 tambon_code=text(rnd.cell("tambon_code", i)), round_id=rnd.round_id, snapshot_hash=rnd.ref.hash,
                 risk_score=None if score is None or score != score else float(score),
                 risk_group=text(rnd.cell("risk_group", i)))


def may_record(who: Principal, pupil: Pupil | None) -> None:
    """A school token records for its own pupils (on its list of that round), an area token for the
    pupils of its areas; every other role reads only. Raises ActionError 403/404."""
    if who.role not in ("school", "area"):
        raise ActionError(403, f"role {who.role} may read actions but not record them")
    if pupil is None or pupil.school_code is None or not who.covers_school(pupil.school_code, pupil.tambon_code):
        # Same answer for "no such pupil" and "not yours" when reading; recording says it plainly.
        raise ActionError(403, "this token may record actions only for pupils on its own list of that round")


def may_read(who: Principal, pupil: Pupil | None) -> None:
    if who.role == "monitoring" or pupil is None or pupil.school_code is None \
            or not who.covers_school(pupil.school_code, pupil.tambon_code):
        raise ActionError(404, "no student with that key visible to this token in that round")


# ---------------------------------------------------------------------------------------------
# The store

# Hashed, in this order: every column but seq and hash (seq is the row's place, prev_hash chains it).
FIELDS: tuple[str, ...] = (
    "entry_id", "refers_to", "at", "token_id", "role", "student_key", "school_code", "tambon_code", "round_id",
    "snapshot_hash", "risk_score", "risk_group", "served_log_id", "action", "status", "outcome", "follow_up_due",
    "has_note", "prev_hash",
)
GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL UNIQUE, refers_to TEXT, at TEXT NOT NULL,
    token_id TEXT NOT NULL, role TEXT NOT NULL, student_key TEXT NOT NULL, school_code TEXT, tambon_code TEXT,
    round_id TEXT NOT NULL, snapshot_hash TEXT NOT NULL, risk_score REAL, risk_group TEXT, served_log_id INTEGER,
    action TEXT NOT NULL, status TEXT NOT NULL, outcome TEXT, follow_up_due TEXT, has_note INTEGER NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_school ON entries (school_code, seq);
CREATE INDEX IF NOT EXISTS entries_student ON entries (student_key, seq);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the action record is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the action record is append-only'); END;
"""
_NOTES_SCHEMA = "CREATE TABLE IF NOT EXISTS notes (entry_id TEXT PRIMARY KEY, student_key TEXT NOT NULL, note TEXT NOT NULL)"


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 of the entry's fields (canonical JSON, fixed order), the previous hash among them."""
    payload = json.dumps([entry.get(f) for f in FIELDS], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _payload_prefix(entry: dict[str, Any]) -> str:
    """`entry_hash`'s JSON payload up to the previous hash (its last field), which only the write
    lock knows."""
    assert FIELDS[-1] == "prev_hash"
    return json.dumps([entry.get(f) for f in FIELDS[:-1]], ensure_ascii=False, separators=(",", ":"))[:-1] + ","


def _chain_hash(prefix: str, prev_hash: str) -> str:
    """SHA-256 of the payload `_payload_prefix` began, closed with the previous hash: `entry_hash`."""
    return hashlib.sha256((prefix + json.dumps(prev_hash) + "]").encode("utf-8")).hexdigest()


# Commits of one process between WAL checkpoints (SQLite's own default is 1,000 pages; an entry
# writes a few pages across the table and its indexes).
CHECKPOINT_EVERY = 200


class _Checkpointer:
    """A daemon thread that checkpoints the WAL (PASSIVE: never waits for readers or writers) when
    the store's writer wakes it, so no writer syncs the database while holding the write lock."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="actions-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        con = _connect(self._path)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopped:
                    return
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:  # busy or locked: the next wake tries again
                    pass
        finally:
            con.close()


def _connect(path: Path) -> sqlite3.Connection:
    con = open_wal(path, timeout=30)
    con.execute("PRAGMA busy_timeout=30000")
    return con


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ActionStore:
    """The action record of one deployment, for one process (one connection, a lock for its threads)."""

    def __init__(self, home: EwsHome) -> None:
        self.home = home
        self.path = home.actions_db
        self._con = _connect(self.path)
        self._con.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the reading connection, shared by this process's threads
        # Writing has a connection of its own, so a long read (a school's entries for its list) never
        # holds a writer up, and its critical section is one statement (`_append`): under the lock a
        # writer that the OS deschedules stalls every other writer, so the less it does there the
        # shorter the tail (benchmarks/bench_actions.py).
        self._wcon = _connect(self.path)
        self._wcon.create_function("ews_chain_hash", 2, _chain_hash, deterministic=True)
        # No checkpoint inside a commit (it copies the WAL into the database and syncs both, tens of
        # ms on a busy disk, with the write lock held): a thread of this store checkpoints instead.
        self._wcon.execute("PRAGMA wal_autocheckpoint=0")
        self._wlock = threading.Lock()
        self._commits = 0
        self._checkpointer: _Checkpointer | None = None
        # Writers of several processes queue on this lock file: flock wakes the next writer the
        # moment the lock is free, where sqlite's busy handler sleeps in steps of up to 100 ms
        # (p99 110 ms at 20 writers, benchmarks/bench_actions.py).
        self._lockfile = open(self.path.with_name(self.path.name + ".lock"), "a+b")  # noqa: SIM115 - held for the store's life

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._con.close()
        self._wcon.close()
        self._lockfile.close()

    # -- writing ---------------------------------------------------------------------------------

    def record(self, who: Principal, pupil: Pupil | None, inp: ActionInput, today: dt.date | None = None) -> dict[str, Any]:
        """Append one entry (after the permission and field checks) and return it."""
        may_record(who, pupil)
        assert pupil is not None
        check_due(inp, today or dt.date.today())
        if inp.note is not None and not self.home.actions.notes:
            raise ActionError(422, "field note: free-text notes are disabled in this deployment "
                                   "(deployment.toml [actions] notes = true keeps them in the identity vault)", "note")
        served = self._served_log_id(who, pupil)
        entry: dict[str, Any] = {
            "entry_id": secrets.token_hex(8), "refers_to": inp.refers_to, "at": _now(),
            "token_id": who.token_id, "role": who.role, "student_key": pupil.student_key,
            "school_code": pupil.school_code, "tambon_code": pupil.tambon_code, "round_id": pupil.round_id,
            "snapshot_hash": pupil.snapshot_hash, "risk_score": pupil.risk_score, "risk_group": pupil.risk_group,
            "served_log_id": served, "action": inp.action, "status": inp.status, "outcome": inp.outcome,
            "follow_up_due": inp.follow_up_due.isoformat() if inp.follow_up_due else None,
            "has_note": int(inp.note is not None),
        }
        if inp.refers_to is not None:
            # Checked before the write lock: the record is append-only, so an entry seen now is there
            # when this one is appended.
            with self._lock:
                row = self._con.execute("SELECT student_key FROM entries WHERE entry_id = ?", [inp.refers_to]).fetchone()
            if row is None or row[0] != pupil.student_key:
                raise ActionError(422, "field refers_to: no earlier entry of this pupil has that id", "refers_to")
        entry["prev_hash"], entry["hash"] = self._append(entry)
        if inp.note is not None:
            self._write_note(entry["entry_id"], pupil.student_key, inp.note)
        return public(entry)

    def _append(self, entry: dict[str, Any]) -> tuple[str, str]:
        """Insert `entry` (every field but prev_hash and hash) at the head of the chain: (prev_hash, hash).

        One statement in autocommit: a write statement takes SQLite's write lock before it reads,
        so the head it chains onto is the head it appends after (two workers can never chain onto
        the same entry, also without the lock file, e.g. on NFS). The hash's payload is built
        before the lock; only the previous hash is spliced in, by `ews_chain_hash` (equal to
        `entry_hash`)."""
        prefix = _payload_prefix(entry)
        names = [f for f in FIELDS if f != "prev_hash"]
        head = f"coalesce((SELECT hash FROM entries ORDER BY seq DESC LIMIT 1), '{GENESIS}')"
        sql = (f"INSERT INTO entries ({', '.join(names)}, prev_hash, hash) "
               f"SELECT {', '.join('?' * len(names))}, h, ews_chain_hash(?, h) FROM (SELECT {head} AS h) "
               "RETURNING prev_hash, hash")
        values = [entry[f] for f in names] + [prefix]
        with self._wlock:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            try:
                prev, digest = self._wcon.execute(sql, values).fetchone()
            finally:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)
            self._commits += 1
            due = self._commits % CHECKPOINT_EVERY == 0
        if due:
            if self._checkpointer is None:
                self._checkpointer = _Checkpointer(self.path)
            self._checkpointer.wake()
        return prev, digest

    def _write_note(self, entry_id: str, student_key: str, note: str) -> None:
        with closing(_connect(self.home.action_notes_db)) as con:
            con.execute(_NOTES_SCHEMA)
            con.execute("INSERT INTO notes VALUES (?, ?, ?)", [entry_id, student_key, note])
        os.chmod(self.home.action_notes_db, 0o600)

    def _served_log_id(self, who: Principal, pupil: Pupil) -> int | None:
        """The access-log line of the latest list or explanation of this round this token was
        served that held the pupil (its school's list, its area's list, its own explanation, or the
        not-found cases of that census for a TZD case)."""
        if not self.home.access_db.exists():
            return None
        targets = [t for t in (pupil.school_code, pupil.student_key) if t]
        if pupil.tambon_code:
            targets += [pupil.tambon_code[:n] for n in (2, 4, 6)]
        with closing(sqlite3.connect(self.home.access_db, timeout=10)) as con:
            row = con.execute(
                f"SELECT max(rowid) FROM access_log WHERE token_id = ? AND round_id = ? AND target IN "
                f"({', '.join('?' * len(targets))}) AND (action LIKE 'school_list%' OR action IN ('area_list', 'explanation', 'notfound_cases'))",
                [who.token_id, pupil.round_id, *targets]).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- reading ---------------------------------------------------------------------------------

    def _rows(self, where: str, params: list[Any]) -> list[dict[str, Any]]:
        cols = ["seq", *FIELDS, "hash"]
        with self._lock:
            rows = self._con.execute(f"SELECT {', '.join(cols)} FROM entries {where} ORDER BY seq", params).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def for_pupil(self, who: Principal, pupil: Pupil | None) -> list[dict[str, Any]]:
        """Every entry of a pupil the caller covers, oldest first (notes for the pupil's own school)."""
        may_read(who, pupil)
        assert pupil is not None
        out = [public(e) for e in self._rows("WHERE student_key = ?", [pupil.student_key])]
        if who.sees_names and self.home.actions.notes and any(e["has_note"] for e in out):
            notes = self._notes(pupil.student_key)
            for e in out:
                if e["has_note"]:
                    e["note"] = notes.get(e["entry_id"])
        return out

    def _notes(self, student_key: str) -> dict[str, str]:
        if not self.home.action_notes_db.exists():
            return {}
        with closing(_connect(self.home.action_notes_db)) as con:
            return dict(con.execute("SELECT entry_id, note FROM notes WHERE student_key = ?", [student_key]).fetchall())

    def for_school(self, school_code: str) -> list[dict[str, Any]]:
        return [public(e) for e in self._rows("WHERE school_code = ?", [school_code])]

    def latest_by_student(self, school_code: str) -> dict[str, dict[str, Any]]:
        """Per pupil of a school: the latest entry's action, status and due date, how many entries,
        whether any was a contact (`CONTACT_STATUSES`)."""
        out: dict[str, dict[str, Any]] = {}
        for e in self._rows("WHERE school_code = ?", [school_code]):
            cur = out.get(e["student_key"])
            contacted = e["status"] in CONTACT_STATUSES or bool(cur and cur["contacted"])
            out[e["student_key"]] = {**summary(e), "actions_count": (cur["actions_count"] if cur else 0) + 1,
                                     "contacted": contacted}
        return out

    def revision(self, school_code: str) -> str:
        """Changes whenever an action is recorded for a pupil of this school (list caches key on it)."""
        with self._lock:
            row = self._con.execute("SELECT max(seq) FROM entries WHERE school_code = ?", [school_code]).fetchone()
        return f"actions:{row[0] or 0}"

    def all_entries(self) -> list[dict[str, Any]]:
        return self._rows("", [])


def actions_revision(home: EwsHome, school_code: str) -> str:
    """`ActionStore.revision` without a long-lived store (one short connection)."""
    if not home.actions_db.exists():
        return "actions:0"
    with closing(sqlite3.connect(home.actions_db, timeout=10)) as con:
        row = con.execute("SELECT max(seq) FROM entries WHERE school_code = ?", [school_code]).fetchone()
    return f"actions:{row[0] or 0}"


def public(e: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API answers it: the stored fields and the Thai/English labels."""
    kind = BY_CODE.get(e["action"])
    st = STATUSES.get(e["status"], (None, None))
    oc = OUTCOMES.get(e["outcome"], (None, None)) if e.get("outcome") else (None, None)
    return {k: e.get(k) for k in (*FIELDS, "hash") if k != "prev_hash"} | {
        "has_note": bool(e["has_note"]),
        "action_th": kind.th if kind else None, "action_en": kind.en if kind else None,
        "status_th": st[0], "status_en": st[1], "outcome_th": oc[0], "outcome_en": oc[1],
    }


def summary(e: dict[str, Any]) -> dict[str, Any]:
    kind = BY_CODE.get(e["action"])
    return {"action": e["action"], "action_th": kind.th if kind else None, "action_status": e["status"],
            "action_status_th": STATUSES.get(e["status"], ("",))[0], "follow_up_due": e["follow_up_due"],
            "action_at": e["at"]}


# ---------------------------------------------------------------------------------------------
# The school list with actions


LIST_FIELDS: tuple[str, ...] = ("action", "action_th", "action_status", "action_status_th", "follow_up_due",
                                "action_at", "actions_count", "contacted")


def annotate(rows: list[dict[str, Any]], latest: dict[str, dict[str, Any]], not_contacted: bool = False) -> list[dict[str, Any]]:
    """Each list row with its pupil's latest action, status and due date (None when none yet);
    with `not_contacted`, only the pupils nobody has contacted yet (ranks kept as listed)."""
    empty = dict.fromkeys(LIST_FIELDS) | {"actions_count": 0, "contacted": False}
    out = []
    for r in rows:
        a = latest.get(r["student_key"], empty)
        if not_contacted and a["contacted"]:
            continue
        out.append({**r, **{k: a[k] for k in LIST_FIELDS}})
    return out


# ---------------------------------------------------------------------------------------------
# Verification and export


@dataclass(frozen=True)
class Verdict:
    entries: int
    ok: bool
    problem: str | None  # the first break: which entry, what is wrong


def verify(home: EwsHome) -> Verdict:
    """Walk the chain: each entry's hash must be its fields' hash and the next entry's prev_hash."""
    if not home.actions_db.exists():
        return Verdict(0, True, None)
    cols = ["seq", *FIELDS, "hash"]
    with closing(sqlite3.connect(home.actions_db, timeout=10)) as con:
        rows = con.execute(f"SELECT {', '.join(cols)} FROM entries ORDER BY seq").fetchall()
    prev = GENESIS
    for n, r in enumerate(rows):
        e = dict(zip(cols, r, strict=True))
        if e["prev_hash"] != prev:
            return Verdict(len(rows), False, f"entry seq {e['seq']} ({e['entry_id']}): does not follow the entry "
                                             f"before it (an entry was removed or reordered)")
        if entry_hash(e) != e["hash"]:
            return Verdict(len(rows), False, f"entry seq {e['seq']} ({e['entry_id']}): its fields do not match "
                                             f"its hash (edited after it was recorded)")
        prev = e["hash"]
        del n
    return Verdict(len(rows), True, None)


EXPORT_COLUMNS: tuple[str, ...] = ("seq", *(f for f in FIELDS if f != "prev_hash"), "hash")


def read_entries(home: EwsHome) -> list[dict[str, Any]]:
    if not home.actions_db.exists():
        return []
    with closing(sqlite3.connect(home.actions_db, timeout=10)) as con:
        rows = con.execute(f"SELECT {', '.join(EXPORT_COLUMNS)} FROM entries ORDER BY seq").fetchall()
    return [dict(zip(EXPORT_COLUMNS, r, strict=True)) for r in rows]


def to_csv(entries: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(EXPORT_COLUMNS)
    for e in entries:
        w.writerow(["" if e[c] is None else e[c] for c in EXPORT_COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def export(home: EwsHome, out: Path | None = None) -> int:
    """Copy the record into the warehouse as table `actions` (replaced whole, in one transaction),
    and write it as CSV to `out` if given (temp file + rename). Returns the number of entries."""
    import pandas as pd

    from features.db import session

    entries = read_entries(home)
    frame = pd.DataFrame(entries, columns=list(EXPORT_COLUMNS))
    frame["at"] = pd.to_datetime(frame["at"], utc=True, format="ISO8601")
    frame["follow_up_due"] = pd.to_datetime(frame["follow_up_due"], format="ISO8601").dt.date
    with closing(session(home, database=home.warehouse)) as con:
        con.register("actions_frame", frame)
        con.execute("BEGIN")
        con.execute("CREATE OR REPLACE TABLE actions AS SELECT * FROM actions_frame")
        con.execute("COMMIT")
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(to_csv(entries))
        os.replace(tmp, out)
    return len(entries)
