"""DuckDB helpers that always finish their results.

DuckDB 2.0 refuses new work on a connection while a result from `execute()` is unfinished, and
`fetchone()` does not finish it. These helpers fetch fully, so callers cannot trip on that.
"""

from __future__ import annotations

from typing import Any

import duckdb


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None


def one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> tuple[Any, ...] | None:
    rows = con.execute(sql, params or []).fetchall()
    return rows[0] if rows else None
