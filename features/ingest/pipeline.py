"""Ingest deliveries: pre-pass, staging and validation, identity vault, one warehouse transaction.

Order of work for one delivery, and why:
1. look the delivery up: a delivery_id seen before is hashed; the same content again is
   "already ingested" (no change), other content is refused.
2. the structural pre-pass of every file (features.ingest.reader, which also hashes the bytes it
   checks): file-level refusals happen before anything is written, so a refused delivery leaves
   the warehouse byte-for-byte as it was. In `ingest_path` the next delivery's pre-pass runs in a
   helper thread while DuckDB does steps 3-5 of the current one (Python and DuckDB on both cores).
3. staging in an in-memory DuckDB (it still holds raw IDs and names; it spills only into the
   vault's scratch folder): load, then ONE typed pass per file that types every column and flags
   the rows where any check fails or any repair applies; validate's exact per-column queries run
   only on those flagged rows. IDs are normalised and form-checked once per distinct raw ID per
   session, and tokenised (keyed HMAC, in DuckDB) once per distinct ID per session. Each problem
   is then judged by the contract (`Column.on_invalid`): a row that cannot say who, where/when or
   what it reports is quarantined; an invalid detail of any other row is set to NULL and logged
   as a repair.
4. the vault: that delivery's rows replaced (a crashed earlier attempt leaves nothing behind):
   the IDs' tokens, the names and the exact birth dates (the warehouse keeps the birth month).
5. ONE transaction on the warehouse for all accepted rows, quarantine, repairs and the log.
   A crash before COMMIT leaves the warehouse as it was; a re-run then succeeds.

One `ingest_path` call keeps one connection (warehouse and vault attached once) for all its
deliveries: each delivery is still its own pair of transactions, made durable by DuckDB's
write-ahead log at COMMIT; the warehouse and vault files are checkpointed once, at the end.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from features.contract import SOURCES, Source, other_identity, rule_on_invalid
from features.db import session as duckdb_session
from features.debris import sweep_debris
from features.home import EwsHome
from features.ids import sql_id_kind
from features.ingest import reader, validate, vault
from features.ingest.delivery import Delivery, DeliveryRefused, discover
from features.ingest.validate import lit, q
from features.ingest.warehouse import (
    FileAccounting, check_no_exact_birth_date, has_student_id, schema_ddl, table_name, warehouse_columns,
)
from features.pseudonym import hmac_pads, id_token, id_token_sql

NAME_COLUMNS = ("prefix", "first_name", "last_name")
BIRTH_COLUMN = "birth_date"  # exact date to vault.birth_records; the warehouse keeps `birth_month`

Progress = Callable[[int, int, str], None]  # (deliveries done, total, what is happening)
# A probe is called with the name of each point where a crash must leave the warehouse as it was
# ("after_vault", "mid_warehouse"); production passes nothing, a crash test passes a hook that
# kills the process there (tests/support/crash_ingest.py).
Probe = Callable[[str], None]


def no_probe(name: str) -> None:
    """The production probe: nothing happens."""


class ReasonCount(BaseModel):
    column_name: str | None
    rule: str
    count: int
    example: str


class FileReport(BaseModel):
    source_file: str
    source: str
    received: int
    accepted: int
    quarantined: int
    repaired: int
    encoding: str
    top_reasons: list[ReasonCount] = []  # of quarantined rows
    top_repairs: list[ReasonCount] = []  # of values set to NULL in accepted rows


class DeliveryReport(BaseModel):
    delivery_id: str
    folder: str
    status: Literal["ingested", "already_ingested", "refused"]
    message: str | None = None
    files: list[FileReport] = []


class Totals(BaseModel):
    deliveries: int = 0
    ingested: int = 0
    already_ingested: int = 0
    refused: int = 0
    files: int = 0
    received: int = 0
    accepted: int = 0
    quarantined: int = 0
    repaired: int = 0


class IngestReport(BaseModel):
    deliveries: list[DeliveryReport] = []

    @property
    def ok(self) -> bool:
        return all(d.status != "refused" for d in self.deliveries)

    def totals(self) -> Totals:
        t = Totals(deliveries=len(self.deliveries))
        for d in self.deliveries:
            setattr(t, d.status, getattr(t, d.status) + 1)
            for f in d.files:
                t.files += 1
                t.received += f.received
                t.accepted += f.accepted
                t.quarantined += f.quarantined
                t.repaired += f.repaired
        return t


def ingest_path(path: Path, home: EwsHome, progress: Progress | None = None,
                probe: Probe = no_probe) -> IngestReport:
    """Ingest one delivery folder or every delivery inside `path` (ordered; see delivery.py).

    Each delivery is all-or-nothing; a refused delivery is reported and the next one goes on.
    Raises DeliveryRefused only when `path` itself holds no delivery."""
    sweep_debris(home, "ingest")  # scratch a killed ingest left in the vault
    deliveries, refused = discover(Path(path))
    report = IngestReport(
        deliveries=[DeliveryReport(delivery_id=f.name, folder=str(f), status="refused", message=m) for f, m in refused]
    )
    session = _Session(home, probe)
    try:
        for i, d in enumerate(deliveries):
            if progress:
                progress(i, len(deliveries), d.delivery_id)
            try:
                report.deliveries.append(session.ingest(d, deliveries[i + 1] if i + 1 < len(deliveries) else None))
            except DeliveryRefused as exc:
                report.deliveries.append(
                    DeliveryReport(delivery_id=d.delivery_id, folder=str(d.folder), status="refused", message=str(exc))
                )
    finally:
        session.close()
    if progress:
        progress(len(deliveries), len(deliveries), "done")
    return report


def ingest_delivery(d: Delivery, home: EwsHome, probe: Probe = no_probe) -> DeliveryReport:
    """Ingest one delivery (see the module docstring for the order of work)."""
    session = _Session(home, probe)
    try:
        return session.ingest(d)
    finally:
        session.close()


def _read_delivery(d: Delivery, scratch: Path) -> list[reader.ReadResult]:
    """The structural pre-pass of every file of `d` (features.ingest.reader), clean copies written
    into `scratch` (emptied first). Raises DeliveryRefused naming the file and line."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    reads: list[reader.ReadResult] = []
    for f in d.files:
        src = SOURCES[f.source]
        try:
            reads.append(reader.read_file(f.path, scratch, expected=src.column_names,
                                          keep_text=not any(c.identity for c in src.columns)))
        except reader.FileRefused as exc:
            raise DeliveryRefused(f"{d.delivery_id}/{exc}") from None
    return reads


ReadAhead = tuple[Delivery, "Future[list[reader.ReadResult]]"]


def _drop_read_ahead(ahead: ReadAhead, home: EwsHome) -> None:
    """Wait for an unused read-ahead and remove what it wrote (its error, if any, is not ours)."""
    try:
        ahead[1].result()
    except BaseException:  # noqa: BLE001 - the delivery is not being ingested: its refusal is moot
        pass
    shutil.rmtree(home.ingest_scratch_dir(ahead[0].delivery_id), ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    # DuckDB messages can quote a line of the file; the first line never does.
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


class _Staged:
    """One file after staging: relation names in the in-memory staging database and its accounting."""

    def __init__(self, i: int, source: Source, read: reader.ReadResult, name: str):
        self.i, self.source, self.read, self.name = i, source, read, name
        self.raw = f"stg.raw_{i}"  # the delivered columns (VARCHAR), in file order
        self.rows = f"stg.rows_{i}"  # __line + delivered columns (VARCHAR)
        self.idm = f"stg.idm_{i}"  # distinct raw student IDs: normalised form, form check, token, kind
        self.typed = f"stg.typed_{i}"  # the one typed pass; after validation: accepted rows only
        self.sub = f"stg.sub_{i}"  # the raw rows flagged by the typed pass (problem or repair)
        self.bad = f"stg.bad_{i}"  # distinct quarantined lines
        self.problems = f"stg.problems_{i}"
        self.repairs = f"stg.repairs_{i}"
        self.nulled = f"stg.nulled_{i}"  # values set to NULL in accepted rows, one row per value
        self.accepted = self.quarantined = self.repaired = 0
        self.has_problems = self.has_repairs = self.has_nulled = False
        self.top: list[ReasonCount] = []
        self.top_repairs: list[ReasonCount] = []


_REGISTRIES = {"school_code": "sess.school_code", "tambon_code": "sess.tambon_code"}
_REGISTRY_OF = {"areas": "tambon_code", "schools": "school_code"}


class _Session:
    """The work of one `ingest_path` call: ONE in-memory DuckDB connection for staging (it holds
    raw IDs and names, so it spills only into the vault's scratch folder), with the warehouse and
    the vault attached once. Each delivery is still staged on its own, written to the vault in its
    own transaction and to the warehouse in ONE transaction; DuckDB's write-ahead log makes each
    COMMIT durable, and the checkpoint into the database files happens once, when the session
    closes (or when the log grows large), not after every delivery.

    The warehouse is attached only when it exists or a delivery is committed: a session whose
    deliveries are all refused or already ingested never creates or changes it."""

    def __init__(self, home: EwsHome, probe: Probe = no_probe) -> None:
        self.home = home
        self.probe = probe
        self.con: duckdb.DuckDBPyConnection | None = None
        self.wh = False  # warehouse attached as `wh`
        self.vault = False  # vault attached as `vault`
        self.pads: tuple[bytes, bytes] | None = None  # the pseudonym key's HMAC pads (secret)
        self.pool: ThreadPoolExecutor | None = None  # one helper thread for the read-ahead
        self.ahead: ReadAhead | None = None  # the next delivery's pre-pass, running or done
        self.has_log = False  # the warehouse has its `deliveries` table

    def _student_no_token_sql(self) -> str:
        """The school's student number, stored as a keyed token: linkage only compares it within a
        school (equal numbers stay equal tokens), and the number itself identifies a child to
        anyone with the school's register, so it stays out of the pseudonymous warehouse."""
        salt = hmac.new(self.home.pseudonym_key(), b"student_no:", hashlib.sha256).hexdigest()
        return f"CASE WHEN t.student_no IS NULL THEN NULL ELSE left(sha256({lit(salt)} || t.student_no), 24) END"

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            vault.prepare(self.home)
            # In memory: staging never leaves RAM except as spill inside the vault.
            con = duckdb_session(self.home, spill=self.home.ingest_spill_dir, keep_order=False)
            # Session state (in memory): the registries, and the tokens of the IDs seen so far.
            con.execute("ATTACH ':memory:' AS sess")
            for kind in _REGISTRIES:
                con.execute(f"CREATE TABLE {_REGISTRIES[kind]} (code VARCHAR, pending BOOLEAN)")
            con.execute("CREATE TABLE sess.tokens (norm VARCHAR, tok VARCHAR, kind VARCHAR, in_vault BOOLEAN)")
            # Every distinct raw student ID string seen so far: its normalised form, form check,
            # token and kind (the last two NULL unless the form is valid), computed once.
            con.execute("CREATE TABLE sess.ids (raw VARCHAR, norm VARCHAR, bad_form BOOLEAN, tok VARCHAR, "
                        "kind VARCHAR)")
            self.con = con
            if self.home.warehouse.exists():
                self._attach_warehouse()
        return self.con

    def _attach_warehouse(self) -> None:
        assert self.con is not None
        try:
            self.con.execute(f"ATTACH {lit(str(self.home.warehouse))} AS wh")
        except duckdb.Error as exc:
            raise DeliveryRefused(f"the warehouse {self.home.warehouse} cannot be opened ({_first_line(exc)})") from None
        try:
            check_no_exact_birth_date(self.con, "wh", self.home.warehouse)
        except ValueError as exc:
            # Detached again (and not marked attached), so every later delivery of this run meets
            # the same check instead of being loaded into the old warehouse.
            self.con.execute("DETACH wh")
            raise DeliveryRefused(str(exc)) from None
        self.wh = True
        # The registries other sources are checked against: every school and tambon ingested so far.
        for kind, src in (("school_code", "schools"), ("tambon_code", "areas")):
            if self._has_table("wh", f"src_{src}"):
                self.con.execute(f"INSERT INTO {_REGISTRIES[kind]} SELECT DISTINCT {kind}, false FROM wh.src_{src}")

    def _has_table(self, db: str, table: str) -> bool:
        assert self.con is not None
        return bool(self.con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [db, table]
        ).fetchall())

    def _read_ahead(self, d: Delivery) -> None:
        """Start the pre-pass of `d` in the helper thread, unless `d` was ingested before (that
        answer needs the warehouse, so it is asked here, in the thread that owns the connection)."""
        try:
            if self._lookup(d.delivery_id) is not None:
                return
        except DeliveryRefused:
            return  # `d` meets the same refusal in its own turn
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read-ahead")
        self.ahead = (d, self.pool.submit(_read_delivery, d, self.home.ingest_scratch_dir(d.delivery_id)))

    def close(self) -> None:
        if self.ahead is not None:
            _drop_read_ahead(self.ahead, self.home)
            self.ahead = None
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        if self.con is not None:
            try:
                self.con.close()  # checkpoints the attached warehouse and vault
            finally:
                self.con = None
                if self.vault:
                    vault.secure(self.home)

    # -- one delivery -----------------------------------------------------------------------

    def _lookup(self, delivery_id: str) -> str | None:
        """The stored manifest hash of a delivery, if it was ingested before."""
        con = self._connect()
        if not self.wh:
            if not self.home.warehouse.exists():
                return None
            self._attach_warehouse()
        if not self.has_log:
            self.has_log = self._has_table("wh", "deliveries")
            if not self.has_log:
                return None
        row = con.execute("SELECT manifest_sha256 FROM wh.deliveries WHERE delivery_id = ?", [delivery_id]).fetchall()
        return row[0][0] if row else None

    def _accounting(self, delivery_id: str) -> list[FileAccounting]:
        assert self.con is not None
        cur = self.con.execute(
            "SELECT * FROM wh.ingested_files WHERE delivery_id = ? ORDER BY ingested_at, delivery_id, source_file",
            [delivery_id],
        )
        names = [c[0] for c in cur.description]
        return [FileAccounting(**dict(zip(names, row))) for row in cur.fetchall()]

    def ingest(self, d: Delivery, next_delivery: Delivery | None = None) -> DeliveryReport:
        """Ingest `d`. While DuckDB stages and commits it, the pre-pass of `next_delivery` (when
        given and not ingested before) runs in a helper thread: the pre-pass is Python and numpy
        on one core, staging is DuckDB, and the two share no state (the pre-pass only reads the
        delivered files and writes into that delivery's own scratch folder)."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[0] is not d:
            _drop_read_ahead(ahead, self.home)  # not the delivery read ahead (a caller's choice)
            ahead = None
        stored = self._lookup(d.delivery_id)
        if stored is not None and ahead is not None:
            _drop_read_ahead(ahead, self.home)  # ingested meanwhile by another run: not read here
            ahead = None
        # A new delivery's files are hashed by the pre-pass that reads them (one pass over the
        # bytes, and the hash stored is that of the bytes checked); only a delivery_id seen before
        # is hashed up front, to tell the same content from a different one.
        if stored is not None and stored == d.manifest_sha256({f.name: reader.sha256_file(f.path) for f in d.files}):
            return DeliveryReport(
                delivery_id=d.delivery_id, folder=str(d.folder), status="already_ingested",
                message="already ingested (same content); nothing changed",
                files=[FileReport(source_file=a.source_file, source=a.source, received=a.received,
                                  accepted=a.accepted, quarantined=a.quarantined, repaired=a.repaired,
                                  encoding=a.encoding) for a in self._accounting(d.delivery_id)],
            )
        if stored is not None:
            raise DeliveryRefused(
                f"{d.delivery_id}: a delivery with this delivery_id was already ingested with different "
                "content; deliver corrections under a new delivery_id"
            )
        con = self._connect()
        scratch = self.home.ingest_scratch_dir(d.delivery_id)
        con.execute("CREATE SCHEMA stg")
        committed = False
        try:
            reads = ahead[1].result() if ahead is not None else _read_delivery(d, scratch)
            if next_delivery is not None:
                self._read_ahead(next_delivery)
            manifest_sha = d.manifest_sha256({f.name: r.sha256 for f, r in zip(d.files, reads)})
            staged = []
            for i, (f, r) in enumerate(zip(d.files, reads)):
                s = _Staged(i, SOURCES[f.source], r, f.name)
                self._load(d, s)
                self._validate(d, s)
                staged.append(s)
            self._commit(d, staged, manifest_sha)
            committed = True
            self._write_quarantine_report(d.delivery_id, staged)
            return DeliveryReport(
                delivery_id=d.delivery_id, folder=str(d.folder), status="ingested",
                files=[FileReport(source_file=s.name, source=s.source.name, received=s.read.received,
                                  accepted=s.accepted, quarantined=s.quarantined, repaired=s.repaired,
                                  encoding=s.read.encoding, top_reasons=s.top, top_repairs=s.top_repairs)
                       for s in staged],
            )
        finally:
            try:
                # This delivery's registry rows count for later deliveries only once committed.
                for t in _REGISTRIES.values():
                    con.execute(f"UPDATE {t} SET pending = false WHERE pending" if committed
                                else f"DELETE FROM {t} WHERE pending")
                con.execute("DROP SCHEMA IF EXISTS stg CASCADE")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _load(self, d: Delivery, s: _Staged) -> None:
        con = self.con
        assert con is not None
        r = s.read
        cols = "{" + ", ".join(f"{lit(c)}: 'VARCHAR'" for c in r.header) + "}"
        new_line = f", new_line = {lit(r.new_line)}" if r.new_line else ""
        # Staging relies on rowid following the file's order; nothing else needs order.
        con.execute("SET preserve_insertion_order = true")
        try:
            con.execute(
                f"CREATE TABLE {s.raw} AS SELECT * FROM read_csv({lit(str(r.read_path))}, columns = {cols}, "
                f"header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, "
                f"strict_mode = true, null_padding = false, max_line_size = {4 * reader.MAX_LINE_BYTES + 16}{new_line})"
            )
        except duckdb.Error as exc:
            raise DeliveryRefused(
                f"{d.delivery_id}/{s.name}: the file could not be read as CSV ({_first_line(exc)})"
            ) from None
        finally:
            con.execute("SET preserve_insertion_order = false")
        n = con.execute(f"SELECT count(*) FROM {s.raw}").fetchall()[0][0]
        if n != r.readable:
            # Never guess: a mismatch means the line numbers could be wrong, so nothing is loaded.
            raise DeliveryRefused(
                f"{d.delivery_id}/{s.name}: the CSV reader found {n} rows where the structural check "
                f"found {r.readable}; the file's quoting or line endings are ambiguous. Save it again "
                "as standard CSV (UTF-8, one line ending style)"
            )
        if len(r.bp_rowid):
            bp = pa.table({"k": pa.array(r.bp_rowid, pa.int64()), "off": pa.array(r.bp_offset, pa.int64())})
            con.register("bp_arrow", bp)
            try:
                con.execute(
                    f"CREATE TABLE {s.rows} AS SELECT r.rowid + 2 + coalesce(b.off, 0) AS __line, r.* "
                    f"FROM {s.raw} r ASOF LEFT JOIN bp_arrow b ON r.rowid >= b.k"
                )
            finally:
                con.unregister("bp_arrow")
            con.execute(f"DROP TABLE {s.raw}")
        else:
            con.execute(f"CREATE VIEW {s.rows} AS SELECT rowid + 2 AS __line, * FROM {s.raw}")

    def _id_map(self, s: _Staged) -> None:
        """The file's distinct raw IDs with their normalised form, form check, token and kind.

        Each distinct raw ID string is normalised and form-checked once per session, and each
        new well-formed normalised ID tokenised once (keyed HMAC in DuckDB's sha256, see
        features.pseudonym.id_token_sql): a monthly file repeats last month's IDs, so most of its
        IDs are found in the session's `sess.ids` and only the new ones are worked on."""
        con = self.con
        assert con is not None
        if self.pads is None:
            self.pads = hmac_pads(self.home.pseudonym_key())
            # The SQL form must give features.pseudonym.id_token's tokens exactly; checked once.
            probe = con.execute(f"SELECT {id_token_sql('$x')}", self._pad_params(x="G123456789012")).fetchall()
            assert probe[0][0] == id_token(self.home.pseudonym_key(), "G123456789012")
        # The raw IDs new to this session (usually few: last month's file had the same pupils).
        new = f"stg.idn_{s.i}"
        con.execute(f"CREATE TABLE {new} AS " + validate.id_map_sql(
            f"(SELECT r.student_id FROM {s.rows} r ANTI JOIN sess.ids i ON i.raw = r.student_id)"))
        con.execute(
            f"INSERT INTO sess.tokens SELECT norm, {id_token_sql('norm')}, {sql_id_kind('norm')}, false FROM "
            f"(SELECT DISTINCT __norm AS norm FROM {new} WHERE __norm IS NOT NULL AND NOT __bad_form) n "
            "ANTI JOIN sess.tokens t ON t.norm = n.norm",
            self._pad_params(),
        )
        con.execute(
            f"INSERT INTO sess.ids SELECT i.__raw, i.__norm, i.__bad_form, t.tok, t.kind "
            f"FROM {new} i LEFT JOIN sess.tokens t ON t.norm = i.__norm AND NOT i.__bad_form"
        )
        con.execute(f"DROP TABLE {new}")
        # The file's part of the session's map: the typed pass joins it with the hash table on
        # this small side, so its rows come out in file order, as they always have.
        con.execute(
            f"CREATE TABLE {s.idm} AS SELECT raw AS __raw, norm AS __norm, bad_form AS __bad_form, tok AS __tok, "
            f"kind AS __kind FROM sess.ids i SEMI JOIN {s.rows} r ON i.raw = r.student_id"
        )

    def _pad_params(self, **extra: str) -> dict[str, object]:
        assert self.pads is not None
        return {"inner": self.pads[0], "outer": self.pads[1], **extra}

    def _validate(self, d: Delivery, s: _Staged) -> None:
        con = self.con
        assert con is not None
        src, r = s.source, s.read
        has_id = has_student_id(src)
        if has_id:
            self._id_map(s)
        # 1. One pass: typed values, one flag per column check / repair / row rule, row hash.
        sql, flags = validate.typed_pass_sql(src, s.rows, _REGISTRIES, r.header, s.idm if has_id else None)
        con.execute(f"CREATE TABLE {s.typed} AS {sql}")
        # 2. Which flags are raised anywhere, and whether two rows share a hash (one scan).
        stats = con.execute(
            "SELECT " + ", ".join([f"count(*) FILTER (WHERE {f})" for f, _, _ in flags]
                                  + ["count(*)", "count(DISTINCT __h)"]) + f" FROM {s.typed}"
        ).fetchall()[0]
        raised = [flag for flag, n in zip(flags, stats) if n]
        n_rows, n_hashes = stats[-2], stats[-1]
        # 3. The exact problems and repairs (validate's per-column queries, unchanged), run only
        #    for the raised flags and only on the flagged rows.
        queries: list[str] = []
        bad_cols = {name for _, kind, name in raised if kind == "column"}
        rep_cols = {name for _, kind, name in raised if kind == "repair"}
        sub_flags = [f for f, kind, _ in raised if kind in ("column", "repair")]
        if sub_flags:
            con.execute(f"CREATE TABLE {s.sub} AS SELECT r.* FROM {s.rows} r SEMI JOIN "
                        f"(SELECT __line FROM {s.typed} WHERE {' OR '.join(sub_flags)}) f ON r.__line = f.__line")
            if bad_cols:
                only = replace(src, columns=tuple(c for c in src.columns if c.name in bad_cols))
                queries += validate.column_problems_sql(only, s.sub, _REGISTRIES)
        rules = {name for _, kind, name in raised if kind == "rule"}
        if rules:
            only = replace(src, row_rules=tuple(x for x in src.row_rules if x.name in rules))
            queries += validate.row_rule_sql(only, s.typed)
        if n_hashes < n_rows:
            queries.append(validate.duplicates_from_hash_sql(s.rows, s.typed, r.header))
        cols = "__line BIGINT, column_name VARCHAR, rule VARCHAR, reason VARCHAR, value VARCHAR"
        if queries:
            con.execute(f"CREATE TABLE {s.problems} ({cols})")
            con.execute(f"INSERT INTO {s.problems} " + " UNION ALL ".join(f"({x})" for x in queries))
        else:
            con.execute(f"CREATE TABLE {s.problems} ({cols})")
        if len(r.bad_lines):
            tbl = pa.table({
                "line": pa.array(r.bad_lines, pa.int64()), "code": pa.array(r.bad_codes, pa.int8()),
                "nfields": pa.array(r.bad_fields, pa.int64()),
                "text": pa.array(r.bad_text if r.bad_text is not None else [None] * len(r.bad_lines), pa.string()),
            })
            con.register("bad_arrow", tbl)
            rules_sql = " ".join(f"WHEN {k} THEN {lit(v[0])}" for k, v in reader.STRUCTURAL_RULES.items())
            reasons = " ".join(
                f"WHEN {k} THEN " + (
                    f"'the line has ' || nfields || ' fields, the header has {len(r.header)}'" if k == 1 else lit(v[1])
                ) for k, v in reader.STRUCTURAL_RULES.items()
            )
            withheld = "" if r.bad_text is not None else f" || '; ' || {lit(validate.WITHHELD)}"
            try:
                con.execute(
                    f"INSERT INTO {s.problems} SELECT line, NULL, CASE code {rules_sql} END, "
                    f"(CASE code {reasons} END){withheld}, text FROM bad_arrow"
                )
            finally:
                con.unregister("bad_arrow")
        has_problems = bool(queries) or bool(len(r.bad_lines))
        # 4. Which problems cost the row and which only the value (the contract's `on_invalid`):
        #    a row is quarantined when any of its problems is not repairable; the repairable
        #    problems of the other rows become values set to NULL, logged as repairs.
        nulled = self._judge(s) if has_problems else False
        # 5. The typed table keeps the accepted rows only: every later step reads it as it is.
        if has_problems:
            con.execute(f"CREATE TABLE {s.bad} AS SELECT DISTINCT __line FROM {s.problems}")
            s.quarantined = con.execute(f"SELECT count(*) FROM {s.bad}").fetchall()[0][0]
            con.execute(f"DELETE FROM {s.typed} WHERE __line IN (SELECT __line FROM {s.bad})")
            s.accepted = con.execute(f"SELECT count(*) FROM {s.typed}").fetchall()[0][0]
        else:
            s.quarantined, s.accepted = 0, n_rows
        if s.accepted + s.quarantined != r.received:
            raise DeliveryRefused(
                f"{d.delivery_id}/{s.name}: internal accounting error (received {r.received}, accepted "
                f"{s.accepted}, quarantined {s.quarantined}); nothing was loaded. Please report this."
            )
        s.has_repairs = False
        parts: list[str] = []
        if nulled:
            parts.append(f"SELECT __line, column_name, raw_value, NULL AS repaired_value, rule FROM {s.nulled}")
        if rep_cols:
            only = replace(src, columns=tuple(c for c in src.columns if c.name in rep_cols))
            union = " UNION ALL ".join(validate.repairs_sql(only, s.sub))
            anti = f" ANTI JOIN {s.bad} b ON x.__line = b.__line" if has_problems else ""
            # A year converted in a value that was then set to NULL is logged once, as nulled.
            anti += (f" ANTI JOIN {s.nulled} n ON x.__line = n.__line AND x.column_name = n.column_name"
                     if nulled else "")
            parts.append(f"SELECT x.* FROM ({union}) x{anti}")
        if parts:
            con.execute(f"CREATE TABLE {s.repairs} AS " + " UNION ALL ".join(f"({x})" for x in parts))
            s.repaired = con.execute(f"SELECT count(DISTINCT __line) FROM {s.repairs}").fetchall()[0][0]
            s.has_repairs = True
        if has_problems:
            s.top = [
                ReasonCount(column_name=c, rule=ru, count=n, example=ex)
                for c, ru, n, ex in con.execute(
                    f"SELECT column_name, rule, count(*) AS n, min(reason) FROM {s.problems} "
                    "GROUP BY ALL ORDER BY n DESC, rule LIMIT 5"
                ).fetchall()
            ]
            has_problems = bool(s.quarantined)
        if nulled:
            s.top_repairs = [
                ReasonCount(column_name=c, rule=ru, count=n, example=ex)
                for c, ru, n, ex in con.execute(
                    f"SELECT column_name, rule, count(*) AS n, min(reason) FROM {s.nulled} "
                    "GROUP BY ALL ORDER BY n DESC, rule LIMIT 5"
                ).fetchall()
            ]
        s.has_nulled = nulled
        s.has_problems = has_problems
        # The registry grows with this delivery's accepted registry rows (schools reference areas).
        if src.name in _REGISTRY_OF:
            kind = _REGISTRY_OF[src.name]
            con.execute(f"INSERT INTO {_REGISTRIES[kind]} SELECT DISTINCT {q(kind)}, true FROM {s.typed}")

    def _judge(self, s: _Staged) -> bool:
        """Split the file's problems: those of rows that stay quarantined remain in `s.problems`;
        the repairable problems of every other row become `s.nulled` (one row per value set to
        NULL, with its reason) and those values are set to NULL in the typed table. Returns
        whether any value was set to NULL.

        A problem is repairable by the contract's `on_invalid` of its column (a row rule: of the
        columns it blames): "null" always, "null_if_id" when the row's student ID is valid (a
        citizen ID with its check digit, or a G-code), "null_if_named" when the row names the child
        another way (`other_identity`), never for "quarantine", a duplicate line or a structural
        problem."""
        con = self.con
        assert con is not None
        src = s.source
        has_id = has_student_id(src)
        ident = "(t.__kind IN ('thai', 'non_thai', 'gcode'))" if has_id else "false"
        alt = other_identity(src)
        named = " OR ".join("(" + " AND ".join(f"t.{q(c)} IS NOT NULL" for c in a) + ")" for a in alt) or "false"
        ok_by = {"null": "true", "null_if_id": ident, "null_if_named": f"({named})"}
        when: list[str] = []
        for rule in src.row_rules:
            how = rule_on_invalid(src, rule)
            if how != "quarantine":
                ok = ok_by[how]
                when.append(f"WHEN p.rule = {lit(rule.name)} AND p.column_name = {lit(', '.join(rule.columns))} "
                            f"THEN {ok}")
        rule_names = {rule.name for rule in src.row_rules}
        for c in src.columns:
            if c.on_invalid != "quarantine":
                ok = ok_by[c.on_invalid]
                # A column's own checks; never a duplicate, a structural problem or a row rule.
                when.append(f"WHEN p.column_name = {lit(c.name)} AND p.rule NOT IN "
                            f"({', '.join(lit(x) for x in sorted(rule_names | {'duplicate'}))}) THEN {ok}")
        if not when:
            return False
        need = ["__line", *(["__kind"] if has_id else []), *(q(c) for a in alt for c in a)]
        join = f" LEFT JOIN (SELECT {', '.join(need)} FROM {s.typed}) t ON t.__line = p.__line"
        judged = f"stg.judged_{s.i}"
        con.execute(f"CREATE TABLE {judged} AS SELECT p.*, coalesce(CASE {' '.join(when)} ELSE false END, false) "
                    f"AS __fix FROM {s.problems} p{join}")
        keep = f"SELECT DISTINCT __line FROM {judged} WHERE NOT __fix"
        # The values to set to NULL: a column's own problem, or each column a broken rule blames
        # (one entry per value even when both happened).
        blamed = " UNION ALL ".join(
            [f"SELECT {lit(rule.name)} AS rule, {lit(c)} AS target" for rule in src.row_rules for c in rule.columns]
            or ["SELECT NULL::VARCHAR AS rule, NULL::VARCHAR AS target"]
        )
        con.execute(
            f"CREATE TABLE stg.nv_{s.i} AS SELECT p.__line, coalesce(b.target, p.column_name) AS column_name, "
            f"'null_' || min(p.rule) AS rule, min(p.reason) AS reason FROM {judged} p "
            f"LEFT JOIN ({blamed}) b ON b.rule = p.rule "
            f"WHERE p.__fix AND p.__line NOT IN ({keep}) GROUP BY ALL"
        )
        con.execute(f"DELETE FROM {s.problems} WHERE __line NOT IN ({keep})")
        con.execute(f"DROP TABLE {judged}")
        cols = [r[0] for r in con.execute(f"SELECT DISTINCT column_name FROM stg.nv_{s.i} ORDER BY 1").fetchall()]
        if not cols:
            con.execute(f"DROP TABLE stg.nv_{s.i}")
            return False
        # The value as delivered, for the repair log (as the quarantine shows values: never personal data).
        raw = " ".join(
            f"WHEN {lit(c)} THEN {'NULL' if src.column(c).personal else f'left(r.{q(c)}, 500)'}" for c in cols
        )
        con.execute(
            f"CREATE TABLE {s.nulled} AS SELECT n.__line, n.column_name, n.rule, n.reason, "
            f"CASE n.column_name {raw} END AS raw_value FROM stg.nv_{s.i} n JOIN {s.rows} r ON r.__line = n.__line"
        )
        con.execute(f"DROP TABLE stg.nv_{s.i}")
        for c in cols:
            # The student ID lives in the typed table as its normalised form, token and kind; with
            # all three NULL the row is stored like one delivered without an ID.
            what = "__norm = NULL, __tok = NULL, __kind = NULL" if c == "student_id" else f"{q(c)} = NULL"
            con.execute(f"UPDATE {s.typed} SET {what} WHERE __line IN "
                        f"(SELECT __line FROM {s.nulled} WHERE column_name = {lit(c)})")
        return True

    def _commit(self, d: Delivery, staged: list[_Staged], manifest_sha: str) -> None:
        con = self.con
        assert con is not None
        if not self.wh:
            self._attach_warehouse()  # creates the warehouse file
        if not self.vault:
            con.execute(f"ATTACH {lit(str(self.home.vault))} AS vault")
            self.vault = True
            vault.secure(self.home)
        did = lit(d.delivery_id)
        # 1. The vault, replacing whatever an earlier crashed attempt left for this delivery.
        with_id = [s for s in staged if has_student_id(s.source)]
        if with_id:
            # The distinct IDs of the accepted rows that this session has not stored yet. Only the
            # session's few new tokens are held in a hash table; the accepted rows stream past it.
            union = " UNION ALL ".join(f"SELECT __norm FROM {s.typed}" for s in with_id)
            con.execute(
                "CREATE TABLE stg.vault_ids AS SELECT DISTINCT t.tok, t.norm FROM "
                f"(SELECT tok, norm FROM sess.tokens WHERE NOT in_vault) t JOIN ({union}) u ON t.norm = u.__norm"
            )
        con.execute("BEGIN")
        try:
            for ddl in vault.VAULT_DDL:
                con.execute(ddl.format(db="vault"))
            con.execute(f"DELETE FROM vault.name_records WHERE delivery_id = {did}")
            con.execute(f"DELETE FROM vault.birth_records WHERE delivery_id = {did}")
            if with_id:
                con.execute("INSERT INTO vault.id_tokens SELECT tok, norm FROM stg.vault_ids ON CONFLICT DO NOTHING")
                in_vault = ("UPDATE sess.tokens SET in_vault = true WHERE NOT in_vault "
                            "AND norm IN (SELECT norm FROM stg.vault_ids)")
            else:
                in_vault = None
            for s in staged:
                if "first_name" not in s.source.column_names:
                    continue
                names = ", ".join(f"t.{q(c)}" if c in s.source.column_names else "NULL" for c in NAME_COLUMNS)
                con.execute(
                    f"INSERT INTO vault.name_records SELECT {did}, {lit(s.name)}, t.__line, {lit(s.source.name)}, "
                    f"t.__tok, {names} FROM {s.typed} t"
                )
            for s in staged:
                # The exact birth date (the warehouse keeps its month): linkage matches on it.
                if BIRTH_COLUMN not in s.source.column_names:
                    continue
                con.execute(
                    f"INSERT INTO vault.birth_records SELECT {did}, {lit(s.name)}, t.__line, {lit(s.source.name)}, "
                    f"t.__tok, t.{q(BIRTH_COLUMN)} FROM {s.typed} t WHERE t.{q(BIRTH_COLUMN)} IS NOT NULL"
                )
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        if in_vault:
            con.execute(in_vault)
        vault.secure(self.home)
        self.probe("after_vault")
        # 2. The warehouse: one transaction for everything of this delivery.
        con.execute("BEGIN")
        try:
            for ddl in schema_ddl("wh."):
                con.execute(ddl)
            known = f"DATE {lit(d.manifest.delivered_on.isoformat())}"
            for n, s in enumerate(staged):
                src = s.source
                target = [c for c, _ in warehouse_columns(src)]
                select = [did, lit(s.name), "t.__line", known]
                for c in src.columns:
                    if c.name == "student_id":
                        select += ["t.__tok", "coalesce(t.__kind, 'missing')"]
                    elif c.name == "student_no":
                        select.append(self._student_no_token_sql())
                    elif c.month_only_as:
                        # The day stays in the vault: the warehouse keeps the first of the month.
                        select.append(f"CAST(date_trunc('month', t.{q(c.name)}) AS DATE)")
                    elif not c.identity:
                        select.append(f"t.{q(c.name)}")
                con.execute(
                    f"INSERT INTO wh.{table_name(src)} ({', '.join(q(c) for c in target)}) "
                    f"SELECT {', '.join(select)} FROM {s.typed} t"
                )
                if n == 0:
                    self.probe("mid_warehouse")
                if s.has_problems:
                    con.execute(
                        f"INSERT INTO wh.quarantine SELECT {did}, {lit(s.name)}, __line, column_name, rule, reason, value "
                        f"FROM {s.problems}"
                    )
                if s.has_repairs:
                    con.execute(
                        f"INSERT INTO wh.repairs SELECT {did}, {lit(s.name)}, __line, column_name, raw_value, "
                        f"repaired_value, rule FROM {s.repairs}"
                    )
                con.execute(
                    "INSERT INTO wh.ingested_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
                    [d.delivery_id, s.name, src.name, s.read.sha256, s.read.encoding, s.read.received,
                     s.accepted, s.quarantined, s.repaired],
                )
            con.execute(
                "INSERT INTO wh.deliveries VALUES (?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
                [d.delivery_id, d.manifest.system, d.manifest.delivered_on, str(d.folder), manifest_sha],
            )
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise

    def _write_quarantine_report(self, delivery_id: str, staged: list[_Staged]) -> None:
        """A CSV of the delivery's quarantine for the data officer (no personal data in it): the
        rows just committed to the warehouse's `quarantine` table, and the values set to NULL in
        accepted rows (`action` says which)."""
        assert self.con is not None
        out = self.home.quarantine_report(delivery_id)
        union = " UNION ALL ".join(
            [f"SELECT {lit(s.name)} AS source_file, __line AS source_line, column_name, rule, reason, value, "
             f"'row quarantined' AS action FROM {s.problems}" for s in staged]
            + [f"SELECT {lit(s.name)}, __line, column_name, rule, reason, raw_value, "
               f"'value set to NULL; row kept' FROM {s.nulled}" for s in staged if s.has_nulled]
        )
        self.con.execute(
            f"COPY (SELECT * FROM ({union}) ORDER BY source_file, source_line, column_name) "
            f"TO {lit(str(out))} (HEADER, DELIMITER ',')"
        )


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
