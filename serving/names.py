"""Students' names, from the identity vault, for the lists of the student's own school only.

Names never enter a snapshot, a log or the warehouse. The service reads them once at start-up for
the students of the published rounds: vault name records of DMC census rows, matched to a
student_key through the warehouse's token_keys (rows with an ID) or record_keys (rows without),
keeping the most recently delivered spelling.
"""

from __future__ import annotations

import pyarrow as pa

from features.db import session
from features.home import EwsHome


def load_names(home: EwsHome, student_keys: list[str]) -> dict[str, str]:
    """student_key -> 'prefix first last' for the given students (missing when unknown)."""
    if not student_keys or not home.vault.exists() or not home.warehouse.exists():
        return {}
    # Names pass through this session: whatever it spills stays inside the vault.
    con = session(home, attach={"wh": (home.warehouse, True), "vault": (home.vault, True)},
                  spill=home.vault_tmp_dir)
    try:
        con.register("wanted", pa.table({"student_key": pa.array(student_keys, pa.string())}))
        rows = con.execute("""
            WITH n AS (
                SELECT coalesce(rk.student_key, tk.student_key) AS student_key,
                       concat_ws(' ', nullif(v.prefix, ''), v.first_name, v.last_name) AS full_name,
                       v.delivery_id, v.source_line
                FROM vault.name_records v
                LEFT JOIN wh.token_keys tk ON tk.id_token = v.id_token
                LEFT JOIN wh.record_keys rk ON rk.delivery_id = v.delivery_id
                     AND rk.source_file = v.source_file AND rk.source_line = v.source_line
                WHERE v.source = 'dmc_census'
            )
            SELECT student_key, arg_max(full_name, (delivery_id, source_line))
            FROM n JOIN wanted USING (student_key) GROUP BY student_key
        """).fetchall()
    finally:
        con.close()
    return {k: v for k, v in rows if v}
