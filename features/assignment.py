"""The schools' assignment: who was eligible for an action, served or held out at random, and acted on.

Where it sits: read from the warehouse by monitoring (monitoring/effects.py: judge the model on the
untreated, estimate the effect of acting from the holdout) and by training (training/actions.py:
leave out the outcomes an action changed). A deployment running a randomised holdout keeps it as
two CSV files (the simulator writes the same, OUT/actions/, simulator/PROCESS.md §2b), declared in
the source contract (`features.contract.ACTION_SOURCES`) and delivered like any source:

    assignment.csv  round_id, school_code, student_id, arm (served | holdout)
    actions.csv     round_id, school_code, student_id, action, status, recorded_on

`ews ingest FOLDER` (features/ingest/actions.py) validates them, quarantines bad rows and keeps
them in `src_assignment` / `src_actions` with each student ID replaced by its keyed token, the same
token every source's ID gets; here the tokens become `student_key` through linkage's `token_keys`,
so no ID leaves ingest. The action codes are the action record's catalogue (serving/actions.py); a
status of done, referred or closed means the action was received.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from features.calendar import parse_round
from features.contract import ACTION_STATUSES, ARMS

if TYPE_CHECKING:
    import duckdb

SERVED, HOLDOUT = ARMS
RECEIVED = tuple(s for s in ACTION_STATUSES if s != "planned")


def read_assignment(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per pupil and term: student_key, academic_year, term, school_code, arm ('' when acted
    on outside the design), treated (an action received). A pupil served and held out in one term
    counts as served. `con` has the warehouse attached as `wh`. Tokens linkage never keyed are
    dropped and counted in `attrs["unmatched"]`. LookupError when no assignment was ingested."""
    from features.ingest.actions import ASSIGNMENT_TABLES

    held = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'wh' AND table_name IN (?, ?)",
        list(ASSIGNMENT_TABLES.values())).fetchall()}
    if ASSIGNMENT_TABLES["assignment"] not in held or not con.execute(
            f"SELECT count(*) FROM wh.{ASSIGNMENT_TABLES['assignment']}").fetchone()[0]:  # type: ignore[index]
        raise LookupError("the warehouse holds no schools' assignment: ingest the folder holding assignment.csv "
                          "and actions.csv first (`ews ingest FOLDER`)")
    a = con.execute(f"SELECT round_id, school_code, id_token, arm FROM wh.{ASSIGNMENT_TABLES['assignment']}").fetch_df()
    acts = (con.execute(f"SELECT round_id, school_code, id_token, action, status FROM wh.{ASSIGNMENT_TABLES['actions']}"
                        ).fetch_df() if ASSIGNMENT_TABLES["actions"] in held else
            pd.DataFrame(columns=["round_id", "school_code", "id_token", "action", "status"]))
    tokens = sorted(set(a["id_token"]) | set(acts["id_token"]))
    con.register("_assignment_tokens", pd.DataFrame({"id_token": tokens}))
    try:
        keys = con.execute("SELECT t.id_token, k.student_key FROM _assignment_tokens t "
                           "JOIN wh.token_keys k USING (id_token)").fetch_df().drop_duplicates("id_token")
    finally:
        con.unregister("_assignment_tokens")

    def with_term(df: pd.DataFrame) -> pd.DataFrame:
        parsed = {rid: parse_round(rid) for rid in df["round_id"].unique()}
        return df.assign(academic_year=df["round_id"].map(lambda x: parsed[x].academic_year),
                         term=df["round_id"].map(lambda x: parsed[x].term))

    a = with_term(a).merge(keys, on="id_token")
    unmatched = len(set(tokens) - set(keys["id_token"]))
    done = with_term(acts[acts["status"].isin(RECEIVED)]).merge(keys, on="id_token")
    cols = ["student_key", "academic_year", "term"]
    out = (a.assign(served=a["arm"].eq(SERVED)).sort_values("served", ascending=False, kind="stable")
           .drop_duplicates(cols)[[*cols, "school_code", "arm"]])
    got = done[cols].drop_duplicates().assign(treated=True)
    out = out.merge(got, on=cols, how="outer")
    out["treated"] = out["treated"].fillna(False).astype(bool)
    out["arm"] = out["arm"].fillna("")
    out["school_code"] = out["school_code"].fillna("")
    out = out.sort_values(cols, kind="stable").reset_index(drop=True)
    out["academic_year"] = out["academic_year"].astype(int)
    out["term"] = out["term"].astype(int)
    out.attrs["unmatched"] = unmatched
    return out
