"""Ingest the schools' assignment: assignment.csv and actions.csv into the warehouse, IDs tokenised.

Where it sits: beside the delivery pipeline (`features.ingest.pipeline`), called by `ews ingest DIR`
when DIR is an assignment folder (`is_assignment_folder`). The two files are declared in the source
contract (`features.contract.ACTION_SOURCES`: columns, types, roles, delivery schedule); a folder may
hold either or both, and a `delivery.json` naming the day they were delivered (else the day of
ingest is the day they became known). For each file:

1. refused whole when it cannot be read as the contract's CSV (missing column, not UTF-8): a
   `DeliveryRefused` naming the file and the column, nothing written;
2. each row checked against the contract: a row with any invalid value (every column says who,
   where/when or what) is quarantined with its file, line, field and reason (a personal value is
   never quoted); received = accepted + quarantined, in `ingested_files` like every source, the
   problems in `quarantine` and in the quarantine report CSV;
3. the student ID normalised and replaced by its keyed token (`features.pseudonym.id_token`, the
   same token every other source's ID gets, so `token_keys` maps it to the `student_key` linkage
   gave); the ID itself is never written;
4. one transaction appends the rows not already held (`src_assignment`, `src_actions`): the same
   file again is recognised by its hash and changes nothing; a file that grew adds only its new rows.

The delivery id (`assignment-<hash>`) is not entered in `deliveries`: the assignment is no evidence
for labels or features, and must not move the warehouse's latest delivery (monitoring's cutoff).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import duckdb
import pandas as pd
from pydantic import ValidationError

from features.calendar import parse_round
from features.contract import ACTION_SOURCES, SOURCES, Column, Source
from features.home import EwsHome
from features.ids import be_to_ce, id_kind, is_valid_school_code, looks_like_be, normalise_id
from features.ingest.delivery import MANIFEST, DeliveryRefused, Manifest
from features.ingest.pipeline import DeliveryReport, FileReport, ReasonCount
from features.ingest.validate import ID_FORM_RE
from features.ingest.warehouse import connect
from features.pseudonym import id_token

ASSIGNMENT_TABLES = {name: f"src_{name}" for name in ACTION_SOURCES}
_SQL = {"date": "DATE"}
_ID_FORM = re.compile(ID_FORM_RE)  # the delivery pipeline's `id_form` check
META = ("delivery_id", "source_file", "source_line", "known_at")


def is_assignment_folder(path: Path) -> bool:
    """A folder holding assignment.csv or actions.csv (and no file of a delivery's sources)."""
    return (path.is_dir() and any((path / s.file_name).is_file() for s in ACTION_SOURCES.values())
            and not any((path / s.file_name).is_file() for s in SOURCES.values()))


def stored_columns(source: Source) -> list[tuple[str, str]]:
    """(name, SQL type) of src_<source>: the bookkeeping, then the columns with the ID as its token."""
    cols = [("delivery_id", "VARCHAR"), ("source_file", "VARCHAR"), ("source_line", "BIGINT"), ("known_at", "DATE")]
    for c in source.columns:
        if c.name == "student_id":
            cols += [("id_token", "VARCHAR"), ("id_kind", "VARCHAR")]
        else:
            cols.append((c.name, _SQL.get(c.kind, "VARCHAR")))
    return cols


def table_ddl(prefix: str = "") -> list[str]:
    """CREATE TABLE IF NOT EXISTS for the assignment's tables (`prefix` e.g. 'wh.')."""
    return [f"CREATE TABLE IF NOT EXISTS {prefix}{ASSIGNMENT_TABLES[s.name]} "
            f"({', '.join(f'{n} {t}' for n, t in stored_columns(s))})" for s in ACTION_SOURCES.values()]


def _problem(c: Column, value: str, schools: set[str] | None) -> tuple[str, str] | None:
    """(rule, reason) of the first check `value` fails in column `c`, or None."""
    if value == "":
        return "missing", "required value is empty"
    if c.kind == "round_id":
        try:
            parse_round(value)
        except ValueError:
            return "form", "not a round such as 2568-T1-early"
    elif c.kind == "school_code":
        if not is_valid_school_code(value):
            return "form", "not a 10-digit school code"
        if schools is not None and value not in schools:
            return "registry", "school code not in the school registry"
    elif c.kind == "student_id":
        if not _ID_FORM.fullmatch(normalise_id(value) or ""):
            return "id_form", "not a citizen ID or G-code (letters other than a leading G, or over 20 characters)"
    elif c.kind == "enum" and value not in c.allowed:
        return "allowed", f"not one of {', '.join(c.allowed)}"
    elif c.kind == "date" and _ce_date(value) is None:
        return "form", "not a date YYYY-MM-DD"
    return None


def _ce_date(value: str) -> str | None:
    """The date as CE text YYYY-MM-DD (a Buddhist-Era year converted, like every source's), or None."""
    if len(value) >= 4 and value[:4].isdigit() and looks_like_be(int(value[:4])):
        value = f"{be_to_ce(int(value[:4])):04d}{value[4:]}"
    try:
        return dt.date.fromisoformat(value).isoformat() if len(value) == 10 else None
    except ValueError:
        return None


def _read(path: Path, source: Source) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DeliveryRefused(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except pd.errors.ParserError as exc:
        raise DeliveryRefused(f"{path}: not a CSV file the contract describes ({str(exc).splitlines()[0]})") from None
    missing = [c for c in source.column_names if c not in df.columns]
    if missing:
        raise DeliveryRefused(f"{path}: missing column(s) {', '.join(missing)} (the contract's {source.file_name}: "
                              f"{', '.join(source.column_names)})")
    return df[list(source.column_names)]


def _check(df: pd.DataFrame, source: Source, schools: set[str] | None) -> pd.DataFrame:
    """One row per problem: line (header = 1), column_name, rule, reason, value (NULL for personal data)."""
    out = []
    for c in source.columns:
        values = df[c.name].str.strip()
        # each distinct value checked once (a round, a school: a few thousand values for any size)
        verdict = {v: _problem(c, v, schools) for v in values.unique()}
        for i in values.index[values.map(lambda v: verdict[v] is not None)]:
            rule, reason = verdict[values[i]]  # type: ignore[misc]
            out.append((int(i) + 2, c.name, rule, reason, None if c.personal else values[i]))
    return pd.DataFrame(out, columns=["line", "column_name", "rule", "reason", "value"])


def _known_at(folder: Path) -> dt.date:
    """The day the files became known: delivery.json's `delivered_on`, else today (the day of ingest)."""
    path = folder / MANIFEST
    if not path.exists():
        return dt.date.today()
    try:
        return Manifest.model_validate_json(path.read_bytes()).delivered_on
    except ValidationError as exc:
        raise DeliveryRefused(f"{path}: invalid ({exc.errors()[0]['msg']}); expected "
                              '{"delivery_id": "...", "system": "...", "delivered_on": "YYYY-MM-DD"}') from None


def ingest_assignment(folder: Path, home: EwsHome) -> DeliveryReport:
    """Load an assignment folder's files into the warehouse; the report has one entry per file."""
    present = [s for s in ACTION_SOURCES.values() if (folder / s.file_name).is_file()]
    if not present:
        raise DeliveryRefused(f"{folder}: no {' or '.join(s.file_name for s in ACTION_SOURCES.values())}")
    frames = {s.name: _read(folder / s.file_name, s) for s in present}  # refuse before writing anything
    hashes = {s.name: hashlib.sha256((folder / s.file_name).read_bytes()).hexdigest() for s in present}
    delivery_id = "assignment-" + hashlib.sha256("".join(hashes[s.name] for s in present).encode()).hexdigest()[:16]
    known_at = _known_at(folder)
    key = home.pseudonym_key()
    con = connect(home, read_only=False)
    try:
        for ddl in table_ddl():
            con.execute(ddl)
        schools = {r[0] for r in con.execute("SELECT DISTINCT school_code FROM src_schools").fetchall()} or None
        seen = {r[0] for r in con.execute("SELECT sha256 FROM ingested_files WHERE source IN (?, ?)",
                                          list(ACTION_SOURCES)).fetchall()}
        if all(hashes[s.name] in seen for s in present):
            return DeliveryReport(delivery_id=delivery_id, folder=str(folder), status="already_ingested")
        files: list[FileReport] = []
        con.execute("BEGIN")
        try:
            for s in present:
                if hashes[s.name] in seen:
                    continue
                files.append(_load(con, s, frames[s.name], folder / s.file_name, delivery_id, known_at, key,
                                   hashes[s.name], schools))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        _write_quarantine_report(con, home, delivery_id)
    finally:
        con.close()
    return DeliveryReport(delivery_id=delivery_id, folder=str(folder), status="ingested", files=files)


def _load(con: duckdb.DuckDBPyConnection, s: Source, df: pd.DataFrame, path: Path, delivery_id: str,
          known_at: dt.date, key: bytes, sha: str, schools: set[str] | None) -> FileReport:
    problems = _check(df, s, schools)
    bad = set(problems["line"] - 2)
    ok = df.drop(index=list(bad)).apply(lambda col: col.str.strip())
    # A Buddhist-Era year in a date is converted and logged (`repairs`), as for every source.
    fixes = []
    for c in s.columns:
        if c.kind == "date":
            fixed = ok[c.name].map(_ce_date)
            changed = fixed.ne(ok[c.name])
            fixes += [(int(i) + 2, c.name, ok.at[i, c.name], fixed[i]) for i in ok.index[changed]]
            ok[c.name] = fixed
    ids = ok["student_id"].map(normalise_id)
    tokens = {i: id_token(key, i) for i in ids.unique()}
    rows = ok.drop(columns="student_id").assign(
        delivery_id=delivery_id, source_file=path.name, source_line=ok.index.to_numpy() + 2, known_at=known_at,
        id_token=ids.map(tokens), id_kind=ids.map(id_kind))
    names = [n for n, _ in stored_columns(s)]
    rows = rows[names]
    table = ASSIGNMENT_TABLES[s.name]
    facts = [n for n in names if n not in META and n != "id_kind"]
    con.register("_incoming", rows)
    try:
        # Append-only and idempotent by row: a fact already held (from an earlier, shorter file) is not
        # added again; the first delivery's line and date stay its record.
        cast = ", ".join(f"CAST({n} AS {t}) AS {n}" for n, t in stored_columns(s))
        con.execute(f"""INSERT INTO {table} SELECT * FROM (SELECT {cast} FROM _incoming) i
                        WHERE NOT EXISTS (SELECT 1 FROM {table} h WHERE {' AND '.join(f'h.{n} = i.{n}' for n in facts)})
                        QUALIFY row_number() OVER (PARTITION BY {', '.join(facts)} ORDER BY source_line) = 1""")
    finally:
        con.unregister("_incoming")
    if len(problems):
        q = problems.assign(delivery_id=delivery_id, source_file=path.name)
        con.register("_problems", q)
        try:
            con.execute("INSERT INTO quarantine SELECT delivery_id, source_file, line, column_name, rule, reason, value "
                        "FROM _problems")
        finally:
            con.unregister("_problems")
    if fixes:
        con.executemany("INSERT INTO repairs VALUES (?, ?, ?, ?, ?, ?, 'be_year_to_ce')",
                        [[delivery_id, path.name, line, col, raw, new] for line, col, raw, new in fixes])
    repaired = len({line for line, *_ in fixes})
    con.execute("INSERT INTO ingested_files VALUES (?, ?, ?, ?, 'utf-8', ?, ?, ?, ?, current_timestamp::TIMESTAMP)",
                [delivery_id, path.name, s.name, sha, len(df), len(ok), len(bad), repaired])
    top = (problems.groupby(["column_name", "rule"], sort=False)
           .agg(count=("line", "size"), line=("line", "first"), reason=("reason", "first")).reset_index()
           .sort_values("count", ascending=False, kind="stable"))
    return FileReport(source_file=path.name, source=s.name, received=len(df), accepted=len(ok), quarantined=len(bad),
                      repaired=repaired, encoding="utf-8",
                      top_reasons=[ReasonCount(column_name=r.column_name, rule=r.rule, count=int(r.count),
                                               example=f"line {int(r.line)}: {r.reason}")
                                   for r in top.head(8).itertuples()])


def _write_quarantine_report(con: duckdb.DuckDBPyConnection, home: EwsHome, delivery_id: str) -> None:
    """The delivery's quarantine as a CSV for the data officer (no personal data in it)."""
    n = con.execute("SELECT count(*) FROM quarantine WHERE delivery_id = ?", [delivery_id]).fetchone()
    if not n or not n[0]:
        return
    out = home.quarantine_report(delivery_id)
    tmp = out.with_name(f".{out.name}.tmp")
    con.execute(f"COPY (SELECT source_file, source_line, column_name, rule, reason, value, 'row quarantined' AS action "
                f"FROM quarantine WHERE delivery_id = '{delivery_id}' ORDER BY source_file, source_line, column_name) "
                f"TO '{tmp}' (HEADER, DELIMITER ',')")
    tmp.replace(out)
