"""The schools' assignment: who was eligible for an action, served or held out at random, and acted on.

Where it sits: beside the warehouse, read by monitoring (monitoring/effects.py: judge the model on
the untreated, estimate the effect of acting from the holdout) and by training (training/actions.py:
leave out the outcomes an action changed). A deployment running a randomised holdout keeps it as
two CSV files in one folder; the simulator writes the same (OUT/actions/, simulator/PROCESS.md §2b):

    assignment.csv  round_id, school_code, student_id, arm (served | holdout)
    actions.csv     round_id, school_code, student_id, action, status, recorded_on

The action codes are the action record's catalogue (serving/actions.py); a status of done,
referred or closed means the action was received. Student IDs become `student_key` here, with
the deployment's pseudonym key and the warehouse's `token_keys` (what linkage made of every
delivered ID), so nothing downstream holds an ID.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.calendar import parse_round
from features.ids import normalise_id
from features.pseudonym import id_token

if TYPE_CHECKING:
    import duckdb

    from features.home import EwsHome

SERVED, HOLDOUT = "served", "holdout"
RECEIVED = ("done", "referred", "closed")
COLUMNS = {"assignment.csv": ("round_id", "school_code", "student_id", "arm"),
           "actions.csv": ("round_id", "school_code", "student_id", "action", "status")}


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (an assignment folder holds assignment.csv and actions.csv)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(COLUMNS[name]) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if "arm" in df.columns:
        bad = df.index[~df["arm"].isin([SERVED, HOLDOUT])]
        if len(bad):
            raise ValueError(f"{path}: row {bad[0] + 2}, field arm: {df.loc[bad[0], 'arm']!r} is not served or holdout")
    for rid in df["round_id"].unique():  # a few distinct rounds, however many rows
        try:
            parse_round(rid)
        except ValueError:
            i = int(df.index[df["round_id"] == rid][0])
            raise ValueError(f"{path}: row {i + 2}, field round_id: {rid!r} is not a round such as 2568-T1-early") from None
    return df


def read_assignment(home: EwsHome, con: duckdb.DuckDBPyConnection, folder: Path) -> pd.DataFrame:
    """One row per pupil and term: student_key, academic_year, term, school_code, arm ('' when acted
    on outside the design), treated (an action received). A pupil served and held out in one term
    counts as served. `con` has the warehouse attached as `wh`. IDs linkage never saw are dropped and
    counted in `attrs["unmatched"]`."""
    a, acts = _read(folder, "assignment.csv"), _read(folder, "actions.csv")
    key = home.pseudonym_key()
    ids = sorted(set(a["student_id"]) | set(acts["student_id"]))
    tokens = pd.DataFrame({"student_id": ids, "id_token": [id_token(key, normalise_id(i) or "") for i in ids]})
    con.register("_assignment_tokens", tokens)
    try:
        keys = con.execute("SELECT t.student_id, k.student_key FROM _assignment_tokens t "
                           "JOIN wh.token_keys k USING (id_token)").fetch_df().drop_duplicates("student_id")
    finally:
        con.unregister("_assignment_tokens")

    def with_term(df: pd.DataFrame) -> pd.DataFrame:
        parsed = {rid: parse_round(rid) for rid in df["round_id"].unique()}
        return df.assign(academic_year=df["round_id"].map(lambda x: parsed[x].academic_year),
                         term=df["round_id"].map(lambda x: parsed[x].term))

    a = with_term(a).merge(keys, on="student_id")
    unmatched = len(set(ids) - set(keys["student_id"]))
    done = with_term(acts[acts["status"].isin(RECEIVED)]).merge(keys, on="student_id")
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
