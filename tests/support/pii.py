"""A scanner that looks for personal data of the input in files the pipeline wrote.

Database and Parquet files compress their strings, so a byte search could miss a stored ID and
the check could never fail. They are therefore scanned by value: every text column compared
with the set of IDs and names. Other files are searched as text for IDs and full names.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

PERSONAL_COLUMNS = ("student_id", "first_name", "last_name")


@dataclass
class Needles:
    ids: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    full_names: set[str] = field(default_factory=set)


def needles_from_deliveries(deliveries: Path) -> Needles:
    n = Needles()
    for path in deliveries.glob("*/*.csv"):
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                sid = (row.get("student_id") or "").strip()
                if len(sid) >= 13:
                    n.ids.add(sid)
                first, last = (row.get("first_name") or "").strip(), (row.get("last_name") or "").strip()
                if first and last:
                    n.names.update((first, last))
                    n.full_names.add(f"{first} {last}")
    return n


def _scan_table_files(path: Path, needles: Needles, kind: str) -> list[str]:
    con = duckdb.connect()
    con.execute("CREATE TABLE needle (v VARCHAR)")
    con.executemany("INSERT INTO needle VALUES (?)", [(v,) for v in needles.ids | needles.names])
    hits: list[str] = []
    if kind == "duckdb":
        con.execute(f"ATTACH '{path}' AS db (READ_ONLY)")
        cols = con.execute("""
            SELECT table_name, column_name FROM duckdb_columns()
            WHERE database_name = 'db' AND data_type = 'VARCHAR'
        """).fetchall()
        relations = [(f"db.{t}", c) for t, c in cols]
    else:
        rel = f"read_parquet('{path}')"
        cols = con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
        relations = [(rel, c[0]) for c in cols if c[1] == "VARCHAR"]
    for rel, col in relations:
        n = con.execute(f'SELECT count(*) FROM {rel} WHERE "{col}" IN (SELECT v FROM needle)').fetchall()[0][0]
        if n:
            hits.append(f"{path}:{rel}.{col} ({n} values)")
    con.close()
    return hits


def scan(root: Path, needles: Needles, skip: tuple[str, ...] = ("vault",)) -> list[str]:
    """Every place under root (outside `skip` folders) holding an input ID or name."""
    hits: list[str] = []
    text_needles = [s.encode() for s in needles.ids | needles.full_names]
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part in skip for part in path.relative_to(root).parts):
            continue
        if path.suffix == ".duckdb":
            hits += _scan_table_files(path, needles, "duckdb")
        elif path.suffix == ".parquet":
            hits += _scan_table_files(path, needles, "parquet")
        elif path.suffix in (".wal", ".tmp", ".key"):
            continue
        else:
            data = path.read_bytes()
            hits += [f"{path}: contains {s.decode()[:4]}…" for s in text_needles if s in data][:3]
    return hits
