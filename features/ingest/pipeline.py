"""Ingest deliveries: pre-pass, staging and validation, identity vault, one warehouse transaction.

Order of work for one delivery, and why:
1. hash the files and look the delivery up: the same content again is "already ingested" (no
   change); the same delivery_id with other content is refused.
2. the structural pre-pass of every file (features.ingest.reader): file-level refusals happen
   before any database is opened, so a refused delivery leaves the warehouse byte-for-byte as it was.
3. staging in a scratch DuckDB inside the vault folder (it still holds raw IDs and names): load,
   validate set-based (features.ingest.validate), compute tokens over distinct IDs only.
4. the vault: that delivery's rows replaced (a crashed earlier attempt leaves nothing behind).
5. ONE transaction on the warehouse for all accepted rows, quarantine, repairs and the log.
   A crash before COMMIT leaves the warehouse as it was; a re-run then succeeds.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from features.contract import SOURCES, Source
from features.home import EwsHome
from features.ids import sql_id_kind
from features.ingest import reader, validate, vault
from features.ingest.delivery import Delivery, DeliveryRefused, discover
from features.ingest.validate import lit, q
from features.ingest.warehouse import (
    configure, has_student_id, schema_ddl, table_name, warehouse_columns,
)
from features.pseudonym import id_token

CRASH_ENV = "EWS_INGEST_CRASH_AT"  # test hook: "after_vault" or "mid_warehouse" kills the process
NAME_COLUMNS = ("prefix", "first_name", "last_name")

Progress = Callable[[int, int, str], None]  # (deliveries done, total, what is happening)


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
    top_reasons: list[ReasonCount] = []


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


def ingest_path(path: Path, home: EwsHome, progress: Progress | None = None) -> IngestReport:
    """Ingest one delivery folder or every delivery inside `path` (ordered; see delivery.py).

    Each delivery is all-or-nothing; a refused delivery is reported and the next one goes on.
    Raises DeliveryRefused only when `path` itself holds no delivery."""
    deliveries, refused = discover(Path(path))
    report = IngestReport(
        deliveries=[DeliveryReport(delivery_id=f.name, folder=str(f), status="refused", message=m) for f, m in refused]
    )
    for i, d in enumerate(deliveries):
        if progress:
            progress(i, len(deliveries), d.delivery_id)
        try:
            report.deliveries.append(ingest_delivery(d, home))
        except DeliveryRefused as exc:
            report.deliveries.append(
                DeliveryReport(delivery_id=d.delivery_id, folder=str(d.folder), status="refused", message=str(exc))
            )
    if progress:
        progress(len(deliveries), len(deliveries), "done")
    return report


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as a power cut: no cleanup, no rollback


def _lookup(home: EwsHome, delivery_id: str) -> str | None:
    """The stored manifest hash of a delivery, if it was ingested before."""
    if not home.warehouse.exists():
        return None
    try:
        con = duckdb.connect(str(home.warehouse), read_only=True)
    except duckdb.Error as exc:
        raise DeliveryRefused(f"the warehouse {home.warehouse} cannot be opened ({_first_line(exc)})") from None
    try:
        row = con.execute("SELECT manifest_sha256 FROM deliveries WHERE delivery_id = ?", [delivery_id]).fetchall()
    except duckdb.CatalogException:
        return None
    finally:
        con.close()
    return row[0][0] if row else None


def _first_line(exc: BaseException) -> str:
    # DuckDB messages can quote a line of the file; the first line never does.
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


class _Staged:
    """One file after staging: relation names in the scratch database and its accounting."""

    def __init__(self, i: int, source: Source, read: reader.ReadResult, name: str):
        self.i, self.source, self.read, self.name = i, source, read, name
        self.rows = f"stg.rows_{i}"  # __line + delivered columns (VARCHAR)
        self.bad = f"stg.bad_{i}"  # distinct quarantined lines
        self.problems = f"stg.problems_{i}"
        self.repairs = f"stg.repairs_{i}"
        self.accepted = self.quarantined = self.repaired = 0
        self.top: list[ReasonCount] = []

    def typed(self) -> str:
        return f"({validate.typed_select_sql(self.source, self.rows)})"

    def accepted_typed(self) -> str:
        return f"(SELECT t.* FROM {self.typed()} t ANTI JOIN {self.bad} b ON t.__line = b.__line)"


def ingest_delivery(d: Delivery, home: EwsHome) -> DeliveryReport:
    """Ingest one delivery (see the module docstring for the order of work)."""
    hashes = {f.name: reader.sha256_file(f.path) for f in d.files}
    manifest_sha = d.manifest_sha256(hashes)
    stored = _lookup(home, d.delivery_id)
    if stored == manifest_sha:
        from features.ingest.warehouse import file_accounting

        return DeliveryReport(
            delivery_id=d.delivery_id, folder=str(d.folder), status="already_ingested",
            message="already ingested (same content); nothing changed",
            files=[FileReport(source_file=a.source_file, source=a.source, received=a.received,
                              accepted=a.accepted, quarantined=a.quarantined, repaired=a.repaired,
                              encoding=a.encoding) for a in file_accounting(home, d.delivery_id)],
        )
    if stored is not None:
        raise DeliveryRefused(
            f"{d.delivery_id}: a delivery with this delivery_id was already ingested with different "
            "content; deliver corrections under a new delivery_id"
        )
    vault.prepare(home)
    scratch = home.vault_dir / "tmp" / f"{d.delivery_id}.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        reads: list[reader.ReadResult] = []
        for f in d.files:
            src = SOURCES[f.source]
            try:
                r = reader.read_file(f.path, scratch, expected=src.column_names,
                                     keep_text=not any(c.identity for c in src.columns))
            except reader.FileRefused as exc:
                raise DeliveryRefused(f"{d.delivery_id}/{exc}") from None
            if r.sha256 != hashes[f.name]:
                raise DeliveryRefused(f"{d.delivery_id}/{f.name}: the file changed while it was being read")
            reads.append(r)
        staged = _stage(d, home, scratch, reads)
        _commit(d, home, scratch, staged, manifest_sha)
        _write_quarantine_report(home, d.delivery_id)
        return DeliveryReport(
            delivery_id=d.delivery_id, folder=str(d.folder), status="ingested",
            files=[FileReport(source_file=s.name, source=s.source.name, received=s.read.received,
                              accepted=s.accepted, quarantined=s.quarantined, repaired=s.repaired,
                              encoding=s.read.encoding, top_reasons=s.top) for s in staged],
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _stage(d: Delivery, home: EwsHome, scratch: Path, reads: list[reader.ReadResult]) -> list[_Staged]:
    con = duckdb.connect(str(scratch / "stg.duckdb"))
    try:
        configure(con, home, keep_order=True)
        has_wh = home.warehouse.exists()
        if has_wh:
            try:
                con.execute(f"ATTACH {lit(str(home.warehouse))} AS wh (READ_ONLY)")
            except duckdb.Error as exc:
                raise DeliveryRefused(f"the warehouse cannot be opened ({_first_line(exc)})") from None
        registries = {"school_code": "stg.reg_school_code", "tambon_code": "stg.reg_tambon_code"}
        for kind, src, col in (("school_code", "schools", "school_code"), ("tambon_code", "areas", "tambon_code")):
            con.execute(f"CREATE TABLE {registries[kind]} (code VARCHAR)")
            if has_wh and _has_table(con, "wh", f"src_{src}"):
                con.execute(f"INSERT INTO {registries[kind]} SELECT DISTINCT {col} FROM wh.src_{src}")
        con.execute("CREATE TABLE stg.norms (norm VARCHAR)")
        staged = []
        for i, (f, r) in enumerate(zip(d.files, reads)):
            s = _Staged(i, SOURCES[f.source], r, f.name)
            _load(con, d, s)
            _validate(con, d, s, registries)
            staged.append(s)
        _tokens(con, home)
        if has_wh:
            con.execute("DETACH wh")
        return staged
    finally:
        con.close()


def _has_table(con: duckdb.DuckDBPyConnection, db: str, table: str) -> bool:
    return bool(con.execute(
        "SELECT 1 FROM duckdb_tables() WHERE database_name = ? AND table_name = ?", [db, table]
    ).fetchall())


def _load(con: duckdb.DuckDBPyConnection, d: Delivery, s: _Staged) -> None:
    r = s.read
    cols = "{" + ", ".join(f"{lit(c)}: 'VARCHAR'" for c in r.header) + "}"
    new_line = f", new_line = {lit(r.new_line)}" if r.new_line else ""
    try:
        con.execute(
            f"CREATE TABLE stg.raw_{s.i} AS SELECT * FROM read_csv({lit(str(r.read_path))}, columns = {cols}, "
            f"header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, "
            f"strict_mode = true, null_padding = false, max_line_size = {4 * reader.MAX_LINE_BYTES + 16}{new_line})"
        )
    except duckdb.Error as exc:
        raise DeliveryRefused(
            f"{d.delivery_id}/{s.name}: the file could not be read as CSV ({_first_line(exc)})"
        ) from None
    n = con.execute(f"SELECT count(*) FROM stg.raw_{s.i}").fetchall()[0][0]
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
        con.execute(f"CREATE TABLE stg.bp_{s.i} AS SELECT * FROM bp_arrow")
        con.unregister("bp_arrow")
        con.execute(
            f"CREATE TABLE {s.rows} AS SELECT r.rowid + 2 + coalesce(b.off, 0) AS __line, r.* "
            f"FROM stg.raw_{s.i} r ASOF LEFT JOIN stg.bp_{s.i} b ON r.rowid >= b.k"
        )
        con.execute(f"DROP TABLE stg.raw_{s.i}")
    else:
        con.execute(f"CREATE VIEW {s.rows} AS SELECT rowid + 2 AS __line, * FROM stg.raw_{s.i}")
        s.rows = f"(SELECT rowid + 2 AS __line, * FROM stg.raw_{s.i})"  # usable from another connection


def _validate(con: duckdb.DuckDBPyConnection, d: Delivery, s: _Staged, registries: dict[str, str]) -> None:
    src, r = s.source, s.read
    con.execute(
        f"CREATE TABLE {s.problems} (__line BIGINT, column_name VARCHAR, rule VARCHAR, reason VARCHAR, value VARCHAR)"
    )
    for sql in validate.column_problems_sql(src, s.rows, registries):
        con.execute(f"INSERT INTO {s.problems} {sql}")
    for sql in validate.row_rule_sql(src, s.typed()):
        con.execute(f"INSERT INTO {s.problems} {sql}")
    con.execute(f"INSERT INTO {s.problems} {validate.duplicates_sql(s.rows, r.header)}")
    if len(r.bad_lines):
        tbl = pa.table({
            "line": pa.array(r.bad_lines, pa.int64()), "code": pa.array(r.bad_codes, pa.int8()),
            "nfields": pa.array(r.bad_fields, pa.int64()),
            "text": pa.array(r.bad_text if r.bad_text is not None else [None] * len(r.bad_lines), pa.string()),
        })
        con.register("bad_arrow", tbl)
        rules = " ".join(f"WHEN {k} THEN {lit(v[0])}" for k, v in reader.STRUCTURAL_RULES.items())
        reasons = " ".join(
            f"WHEN {k} THEN " + (
                f"'the line has ' || nfields || ' fields, the header has {len(r.header)}'" if k == 1 else lit(v[1])
            ) for k, v in reader.STRUCTURAL_RULES.items()
        )
        withheld = "" if r.bad_text is not None else f" || '; ' || {lit(validate.WITHHELD)}"
        con.execute(
            f"INSERT INTO {s.problems} SELECT line, NULL, CASE code {rules} END, "
            f"(CASE code {reasons} END){withheld}, text FROM bad_arrow"
        )
        con.unregister("bad_arrow")
    con.execute(f"CREATE TABLE {s.bad} AS SELECT DISTINCT __line FROM {s.problems}")
    s.quarantined = con.execute(f"SELECT count(*) FROM {s.bad}").fetchall()[0][0]
    s.accepted = con.execute(f"SELECT count(*) FROM {s.rows} t ANTI JOIN {s.bad} b ON t.__line = b.__line").fetchall()[0][0]
    if s.accepted + s.quarantined != r.received:
        raise DeliveryRefused(
            f"{d.delivery_id}/{s.name}: internal accounting error (received {r.received}, accepted "
            f"{s.accepted}, quarantined {s.quarantined}); nothing was loaded. Please report this."
        )
    rep = validate.repairs_sql(src, s.rows)
    if rep:
        union = " UNION ALL ".join(rep)
        con.execute(f"CREATE TABLE {s.repairs} AS SELECT x.* FROM ({union}) x ANTI JOIN {s.bad} b ON x.__line = b.__line")
        s.repaired = con.execute(f"SELECT count(DISTINCT __line) FROM {s.repairs}").fetchall()[0][0]
    else:
        con.execute(f"CREATE TABLE {s.repairs} (__line BIGINT, column_name VARCHAR, raw_value VARCHAR, repaired_value VARCHAR, rule VARCHAR)")
    s.top = [
        ReasonCount(column_name=c, rule=ru, count=n, example=ex)
        for c, ru, n, ex in con.execute(
            f"SELECT column_name, rule, count(*) AS n, min(reason) FROM {s.problems} "
            "GROUP BY ALL ORDER BY n DESC, rule LIMIT 5"
        ).fetchall()
    ]
    # The registry grows with this delivery's accepted registry rows (schools reference areas).
    if src.name in ("areas", "schools"):
        kind = "tambon_code" if src.name == "areas" else "school_code"
        con.execute(f"INSERT INTO {registries[kind]} SELECT DISTINCT {q(kind)} FROM {s.accepted_typed()}")
    if has_student_id(src):
        con.execute(f"INSERT INTO stg.norms SELECT DISTINCT __norm FROM {s.accepted_typed()} WHERE __norm IS NOT NULL")


def _tokens(con: duckdb.DuckDBPyConnection, home: EwsHome) -> None:
    """HMAC tokens over DISTINCT normalised IDs (one per child, not per row), kind in SQL."""
    norms = con.sql("SELECT DISTINCT norm FROM stg.norms").to_arrow_table().column(0).to_pylist()
    key = home.pseudonym_key()
    tbl = pa.table({"norm": pa.array(norms, pa.string()),
                    "id_token": pa.array([id_token(key, n) for n in norms], pa.string())})
    con.register("tok_arrow", tbl)
    con.execute(f"CREATE TABLE stg.tokens AS SELECT norm, id_token, {sql_id_kind('norm')} AS id_kind FROM tok_arrow")
    con.unregister("tok_arrow")


def _commit(d: Delivery, home: EwsHome, scratch: Path, staged: list[_Staged], manifest_sha: str) -> None:
    try:
        con = duckdb.connect(str(home.warehouse))
    except duckdb.Error as exc:
        raise DeliveryRefused(f"the warehouse {home.warehouse} cannot be opened for writing ({_first_line(exc)})") from None
    try:
        configure(con, home)
        con.execute(f"ATTACH {lit(str(scratch / 'stg.duckdb'))} AS stg (READ_ONLY)")
        con.execute(f"ATTACH {lit(str(home.vault))} AS vault")
        vault.secure(home)
        did = lit(d.delivery_id)
        # 1. The vault, replacing whatever an earlier crashed attempt left for this delivery.
        con.execute("BEGIN")
        for ddl in vault.VAULT_DDL:
            con.execute(ddl.format(db="vault"))
        con.execute(f"DELETE FROM vault.name_records WHERE delivery_id = {did}")
        con.execute("INSERT INTO vault.id_tokens SELECT id_token, norm FROM stg.tokens ON CONFLICT DO NOTHING")
        for s in staged:
            if "first_name" not in s.source.column_names:
                continue
            names = ", ".join(f"t.{q(c)}" if c in s.source.column_names else "NULL" for c in NAME_COLUMNS)
            con.execute(
                f"INSERT INTO vault.name_records SELECT {did}, {lit(s.name)}, t.__line, {lit(s.source.name)}, "
                f"tok.id_token, {names} FROM {s.accepted_typed()} t LEFT JOIN stg.tokens tok ON tok.norm = t.__norm"
            )
        con.execute("COMMIT")
        vault.secure(home)
        _crash_point("after_vault")
        # 2. The warehouse: one transaction for everything of this delivery.
        con.execute("BEGIN")
        for ddl in schema_ddl():
            con.execute(ddl)
        known = f"DATE {lit(d.manifest.delivered_on.isoformat())}"
        for n, s in enumerate(staged):
            src = s.source
            target = [c for c, _ in warehouse_columns(src)]
            select = [did, lit(s.name), "t.__line", known]
            for c in src.columns:
                if c.name == "student_id":
                    select += ["tok.id_token", "coalesce(tok.id_kind, 'missing')"]
                elif not c.identity:
                    select.append(f"t.{q(c.name)}")
            join = " LEFT JOIN stg.tokens tok ON tok.norm = t.__norm" if has_student_id(src) else ""
            con.execute(
                f"INSERT INTO {table_name(src)} ({', '.join(q(c) for c in target)}) "
                f"SELECT {', '.join(select)} FROM {s.accepted_typed()} t{join}"
            )
            if n == 0:
                _crash_point("mid_warehouse")
            con.execute(
                f"INSERT INTO quarantine SELECT {did}, {lit(s.name)}, __line, column_name, rule, reason, value "
                f"FROM {s.problems}"
            )
            con.execute(
                f"INSERT INTO repairs SELECT {did}, {lit(s.name)}, __line, column_name, raw_value, repaired_value, rule "
                f"FROM {s.repairs}"
            )
            con.execute(
                "INSERT INTO ingested_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
                [d.delivery_id, s.name, src.name, s.read.sha256, s.read.encoding, s.read.received,
                 s.accepted, s.quarantined, s.repaired],
            )
        con.execute(
            "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
            [d.delivery_id, d.manifest.system, d.manifest.delivered_on, str(d.folder), manifest_sha],
        )
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    finally:
        try:
            con.execute("DETACH stg")
        except duckdb.Error:
            pass
        con.close()
        vault.secure(home)


def _write_quarantine_report(home: EwsHome, delivery_id: str) -> None:
    """A CSV of the delivery's quarantine for the data officer (no personal data in it)."""
    out = home.quarantine_dir / f"{delivery_id}.csv"
    con = duckdb.connect(str(home.warehouse), read_only=True)
    try:
        con.execute(
            f"COPY (SELECT source_file, source_line, column_name, rule, reason, value FROM quarantine "
            f"WHERE delivery_id = {lit(delivery_id)} ORDER BY source_file, source_line, column_name) "
            f"TO {lit(str(out))} (HEADER, DELIMITER ',')"
        )
    finally:
        con.close()
