"""The warehouse: one DuckDB file under EWS_HOME holding accepted rows, quarantine, repairs, the log.

Table names are a contract with later stages (linkage, point-in-time features):
  src_<source>    accepted rows: delivery_id, source_file, source_line, known_at, then the
                  contract's non-identity columns, typed; `student_id` is replaced, in place, by
                  id_token (keyed HMAC of the normalised ID; NULL when missing) and id_kind, and
                  `birth_date` by `birth_month` (the first of the month; the exact date is in the vault)
  quarantine      one row per problem (a row with several problems has several entries)
  repairs         every value changed on the way in (BE/CE years; invalid details set to NULL)
  ingested_files  per-file accounting: received = accepted + quarantined
  deliveries      one row per ingested delivery, with the hash of its manifest
"""

from __future__ import annotations

from datetime import date, datetime

import duckdb
from pydantic import BaseModel

from features.contract import SOURCES, Column, Source
from features.db import session
from features.home import EwsHome

SQL_TYPES: dict[str, str] = {
    "date": "DATE", "year_month": "DATE", "be_year": "INTEGER", "int": "INTEGER", "float": "DOUBLE",
    "flag": "BOOLEAN", "enum": "VARCHAR", "text": "VARCHAR", "grade": "VARCHAR",
    "school_code": "VARCHAR", "tambon_code": "VARCHAR",
}
META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("delivery_id", "VARCHAR"), ("source_file", "VARCHAR"), ("source_line", "BIGINT"), ("known_at", "DATE"),
)


def table_name(source: Source) -> str:
    return f"src_{source.name}"


def has_student_id(source: Source) -> bool:
    return "student_id" in source.column_names


def warehouse_columns(source: Source) -> list[tuple[str, str]]:
    """(name, SQL type) of src_<source>, in order."""
    cols: list[tuple[str, str]] = list(META_COLUMNS)
    for c in source.columns:
        if c.name == "student_id":
            cols += [("id_token", "VARCHAR"), ("id_kind", "VARCHAR")]
        elif not c.identity:
            cols.append((c.stored_name, SQL_TYPES[c.kind]))
    return cols


def stored_columns(source: Source) -> list[Column]:
    """Contract columns that reach the warehouse as themselves (not identity, not month-only)."""
    return [c for c in source.columns if not c.identity and c.month_only_as is None]


def check_no_exact_birth_date(con: duckdb.DuckDBPyConnection, database: str, path: object) -> None:
    """Refuse a warehouse built before the birth date moved to the identity vault: its `src_*`
    tables still hold `birth_date` to the day, and new rows (with `birth_month`) cannot join them.

    Raises ValueError naming the warehouse, the tables and what to do."""
    old = [r[0] for r in con.execute(
        "SELECT DISTINCT table_name FROM duckdb_columns() WHERE database_name = ? AND column_name = 'birth_date' "
        "AND starts_with(table_name, 'src_') ORDER BY 1", [database]).fetchall()]
    if old:
        raise ValueError(
            f"the warehouse {path} was built before the birth date moved to the identity vault "
            f"({', '.join(old)} still hold birth_date): rebuild it from the deliveries - `ews ingest DIR "
            "--home NEW_HOME`, then `ews link --home NEW_HOME` (keep the home's keys/ folder to keep its student keys)"
        )


def schema_ddl(prefix: str = "") -> list[str]:
    """CREATE TABLE IF NOT EXISTS statements for the whole warehouse (`prefix` e.g. 'wh.')."""
    out = []
    for s in SOURCES.values():
        cols = ", ".join(f'"{n}" {t}' for n, t in warehouse_columns(s))
        out.append(f"CREATE TABLE IF NOT EXISTS {prefix}{table_name(s)} ({cols})")
    out += [
        f"""CREATE TABLE IF NOT EXISTS {prefix}quarantine (delivery_id VARCHAR, source_file VARCHAR,
            source_line BIGINT, column_name VARCHAR, rule VARCHAR, reason VARCHAR, value VARCHAR)""",
        f"""CREATE TABLE IF NOT EXISTS {prefix}repairs (delivery_id VARCHAR, source_file VARCHAR,
            source_line BIGINT, column_name VARCHAR, raw_value VARCHAR, repaired_value VARCHAR, rule VARCHAR)""",
        f"""CREATE TABLE IF NOT EXISTS {prefix}ingested_files (delivery_id VARCHAR, source_file VARCHAR,
            source VARCHAR, sha256 VARCHAR, encoding VARCHAR, received BIGINT, accepted BIGINT,
            quarantined BIGINT, repaired BIGINT, ingested_at TIMESTAMP)""",
        f"""CREATE TABLE IF NOT EXISTS {prefix}deliveries (delivery_id VARCHAR PRIMARY KEY, system VARCHAR,
            delivered_on DATE, folder VARCHAR, manifest_sha256 VARCHAR, ingested_at TIMESTAMP)""",
    ]
    return out


def connect(home: EwsHome, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (read-only by default: several readers may share it).

    A read-only open of a warehouse that does not exist yet fails with FileNotFoundError naming it.
    A writable open creates the home and the warehouse's tables; it spills into the vault's scratch
    folder, like staging, because it may hold rows not yet stripped of raw identifiers.
    """
    if read_only and not home.warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {home.warehouse}: run `ews ingest` first")
    if read_only:
        return session(home, database=home.warehouse, read_only=True)
    home.ensure()
    con = session(home, database=home.warehouse, spill=home.ingest_spill_dir, keep_order=False)
    for ddl in schema_ddl():
        con.execute(ddl)
    return con


class FileAccounting(BaseModel):
    """One delivered file's accounting, as stored in `ingested_files`."""

    delivery_id: str
    source_file: str
    source: str
    sha256: str
    encoding: str
    received: int
    accepted: int
    quarantined: int
    repaired: int
    ingested_at: datetime


class DeliveryRecord(BaseModel):
    delivery_id: str
    system: str
    delivered_on: date
    folder: str
    manifest_sha256: str
    ingested_at: datetime


def file_accounting(home: EwsHome, delivery_id: str | None = None) -> list[FileAccounting]:
    """Per-file accounting of everything ingested (or of one delivery), oldest first."""
    if not home.warehouse.exists():
        return []
    con = connect(home)
    try:
        sql = "SELECT * FROM ingested_files"
        params: list[str] = []
        if delivery_id is not None:
            sql += " WHERE delivery_id = ?"
            params.append(delivery_id)
        sql += " ORDER BY ingested_at, delivery_id, source_file"
        try:
            cur = con.execute(sql, params)
        except duckdb.CatalogException:
            return []
        names = [d[0] for d in cur.description]
        return [FileAccounting(**dict(zip(names, row))) for row in cur.fetchall()]
    finally:
        con.close()
