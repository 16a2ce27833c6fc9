"""DuckDB sessions and helpers that always finish their results.

`session(home, ...)` is the one way the service opens DuckDB: every session gets the deployment's
memory limit and threads (`home.duckdb`) and spills under the home, so ingestion, linkage, the
feature pipeline and the service's name lookup cannot drift apart in how they use the machine.

DuckDB 2.0 refuses new work on a connection while a result from `execute()` is unfinished, and
`fetchone()` does not finish it. `scalar` and `one` fetch fully, so callers cannot trip on that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from features.home import EwsHome


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def session(
    home: EwsHome,
    *,
    database: Path | None = None,
    read_only: bool = False,
    attach: Mapping[str, tuple[Path, bool]] | None = None,
    spill: Path | None = None,
    keep_order: bool = True,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB session on `database` (default: in memory) with the deployment's resources.

    attach: alias -> (database file, read_only), attached in that order.
    spill: where DuckDB spills (default home.spill_dir); sessions that hold raw IDs or names pass a
        folder inside the vault, so nothing identifying lands beside the pseudonymous data.
    keep_order: DuckDB's preserve_insertion_order; only work that does not rely on row order
        turns it off (it lets big inserts stream with less memory).
    """
    spill = spill or home.spill_dir
    if not read_only:  # a read-only look at a file creates nothing under the home
        spill.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(database) if database else ":memory:", read_only=read_only)
    # SET, not connect(config=...): DuckDB refuses a second connection to an open database file
    # whose connect-time configuration differs, and tests open the warehouse directly too.
    con.execute(f"SET memory_limit = '{home.duckdb.memory_limit}'")
    con.execute(f"SET threads = {int(home.duckdb.threads)}")
    con.execute(f"SET temp_directory = {_quote(spill)}")
    if home.duckdb.max_spill:  # validated by DuckDBSettings' pattern: a size, nothing else
        con.execute(f"SET max_temp_directory_size = '{home.duckdb.max_spill}'")
    con.execute(f"SET preserve_insertion_order = {'true' if keep_order else 'false'}")
    for alias, (path, ro) in (attach or {}).items():
        con.execute(f"ATTACH {_quote(path)} AS {alias}{' (READ_ONLY)' if ro else ''}")
    return con


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None
