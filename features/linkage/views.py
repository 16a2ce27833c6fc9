"""How a source's rows get their student: the ONE place the rule is written.

Rows with an id token take the token's key (`token_keys`); only the few rows without one look up
their own record key (`record_keys`), so the common case is one join on a single column rather
than a three-column join per row. `create_linked_views` (link.py) makes it the view
`linked_<source>` every query reads; the feature compiler uses `linked_select(..., students=...)`
where a query needs the rows of a few students only. Kept apart from link.py so that the compiler
imports the rule without the linker.
"""

from __future__ import annotations


def linked_select(source: str, schema: str | None = None, students: str | None = None) -> str:
    """Every row of `src_<source>` with its `student_key` and the run's integer `sid` (both NULL for
    a row linkage has not seen yet); `schema` qualifies the tables (None: unqualified, as inside the
    warehouse's own view).

    `students` names a relation with a `sid` column: then only those students' rows. Their keys
    are found first and the source joined to them, so a question about a few hundred pupils of a
    national warehouse reads those pupils' rows, where a filter on the view's `sid` joins every row
    of the source to every key before it drops them (DuckDB does not push a semi join through the
    view's join: 8M-pupil round, docs/ARCHITECTURE.md "Where a national round's preparation goes").
    """
    q = f"{schema}." if schema else ""
    tokens, records, join = f"{q}token_keys", f"{q}record_keys", "LEFT JOIN"
    if students is not None:
        keep = f"WHERE sid IN (SELECT sid FROM {students})"
        tokens, records, join = f"(SELECT * FROM {tokens} {keep})", f"(SELECT * FROM {records} {keep})", "JOIN"
    return (f"SELECT tk.student_key, tk.sid, s.*\n"
            f"            FROM {q}src_{source} s {join} {tokens} tk ON tk.id_token = s.id_token\n"
            f"            WHERE s.id_token IS NOT NULL\n"
            f"            UNION ALL\n"
            f"            SELECT rk.student_key, rk.sid, s.*\n"
            f"            FROM {q}src_{source} s {join} {records} rk ON rk.delivery_id = s.delivery_id\n"
            f"                 AND rk.source_file = s.source_file AND rk.source_line = s.source_line\n"
            f"            WHERE s.id_token IS NULL")
