"""Compare what two ingests of the same deliveries wrote: the check that a faster ingest changed nothing.

    python -m benchmarks.ingest_compare HOME_A HOME_B

Both homes must use the same pseudonym key (EWS_PSEUDONYM_KEY_FILE), or every token differs.
Every table ingest writes to the warehouse and the vault is compared as a multiset of rows (ingest timestamps
and folder paths left out) and, separately, in stored order; the quarantine reports byte for byte.
The stored order of `quarantine`, `repairs` and `vault.id_tokens` is not fixed by ingest (parallel
inserts): two runs of the same code differ there, so only their content is required to match.
Exit code 1 when anything else differs.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import duckdb

UNORDERED = {"quarantine", "repairs", "id_tokens"}  # row order not determined by ingest
# What ingest writes (later stages add tables to both databases: those are not compared).
INGEST_TABLES = {"quarantine", "repairs", "ingested_files", "deliveries", "id_tokens", "name_records",
                 "birth_records"}
SKIP_COLUMNS = ("ingested_at", "folder")


def _tables(con: duckdb.DuckDBPyConnection, db: str) -> dict[str, list[tuple[str, str]]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = ? "
        "AND table_name IN (SELECT table_name FROM duckdb_tables() WHERE database_name = ?) "  # not views
        "ORDER BY table_name, column_index", [db, db]).fetchall()
    out: dict[str, list[tuple[str, str]]] = {}
    for t, c, ty in rows:
        if t in INGEST_TABLES or t.startswith("src_"):
            out.setdefault(t, []).append((c, ty))
    return out


def compare(a: Path, b: Path) -> list[str]:
    """Differences between homes `a` and `b` (empty: the same ingest output)."""
    con = duckdb.connect()
    problems: list[str] = []
    for alias, rel in (("wh", "warehouse.duckdb"), ("vault", "vault/identity.duckdb")):
        con.execute(f"ATTACH '{a / rel}' AS {alias}_a (READ_ONLY)")
        con.execute(f"ATTACH '{b / rel}' AS {alias}_b (READ_ONLY)")
        ta, tb = _tables(con, f"{alias}_a"), _tables(con, f"{alias}_b")
        if ta != tb:
            problems.append(f"{alias}: tables or columns differ")
        for t, cols in ta.items():
            if tb.get(t) != cols:
                continue
            keep = ", ".join(f'"{c}"' for c, _ in cols if c not in SKIP_COLUMNS)
            sql = (f"SELECT count(*), sum(hash({keep})::HUGEINT), sum(hash(rowid, {keep})::HUGEINT) "
                   f"FROM {{db}}.{t}")
            ra = con.execute(sql.format(db=f"{alias}_a")).fetchall()[0]
            rb = con.execute(sql.format(db=f"{alias}_b")).fetchall()[0]
            if ra[:2] != rb[:2]:
                problems.append(f"{alias}.{t}: content differs ({ra[0]} vs {rb[0]} rows)")
            elif ra[2] != rb[2] and t not in UNORDERED:
                problems.append(f"{alias}.{t}: same rows in another order")
    qa = {p.name: p for p in (a / "quarantine").glob("*")}
    qb = {p.name: p for p in (b / "quarantine").glob("*")}
    if sorted(qa) != sorted(qb):
        problems.append("quarantine reports: different files")
    for name in sorted(set(qa) & set(qb)):
        if hashlib.sha256(qa[name].read_bytes()).digest() != hashlib.sha256(qb[name].read_bytes()).digest():
            problems.append(f"quarantine report {name} differs")
    return problems


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(__doc__)
    problems = compare(Path(args[0]), Path(args[1]))
    print("\n".join(problems) if problems else "SAME INGEST OUTPUT")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
