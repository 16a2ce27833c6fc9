"""A pupil's printable sheet reads the pupil's row as Python values (`LoadedRound.row`), as an
explanation does, not through one-row DataFrames: on a simulated world's published rounds, every
pupil's sheet is, character for character, the sheet read through the frames."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.home import EwsHome
from serving.sheet import history_point, pupil_sheet, sheet_for
from serving.snapshot import published
from serving.store import LIST_COLUMNS, LoadedRound, load_round
from tests.support.worlds import ScoredWorld


def _text(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else v


def _through_frames(rnd: LoadedRound, rounds: list[LoadedRound], key: str) -> str:
    """The sheet as it was read before: one-row frames, NaN and NA as None."""
    i = rnd.row_of(key)
    assert i is not None
    one = np.array([i], dtype=np.int64)
    row = {k: _text(v) for k, v in rnd.frame(LIST_COLUMNS, one).iloc[0].items()}
    values = {k: _text(v) for k, v in rnd.values_frame(one).iloc[0].items()}
    history = []
    for other in sorted(rounds, key=lambda x: x.manifest.as_of):
        j = other.row_of(key)
        if j is None or other.manifest.as_of > rnd.manifest.as_of:
            continue
        shown = other.values_frame(np.array([j], dtype=np.int64), ("att_rate_term", "att_rate_12m", "gpa_last"))
        history.append(history_point(other.round_id, other.cell("risk_score", j),
                                     {f: shown[f].iat[0] for f in shown.columns}))
    return pupil_sheet(name=None, student_key=key, school_name=row.get("school_name"),
                       school_code=str(row["school_code"]), grade=row.get("grade"), room=row.get("room"),
                       round_id=rnd.round_id, snapshot_hash=rnd.ref.hash, row=row, values=values, history=history,
                       actions=[])


def test_every_pupils_sheet_read_as_python_values_is_the_sheet_read_through_one_row_frames(
        scored_world: ScoredWorld) -> None:
    home = EwsHome(root=scored_world.root)
    rounds = []
    for round_id in (scored_world.round_id, scored_world.census_round):
        ref = published(home, round_id)
        assert ref is not None
        rounds.append(load_round(ref))
    later = max(rounds, key=lambda x: x.manifest.as_of)
    keys = later.student_keys()
    unscored = sum(1 for k in keys if later.cell("risk_score", later.row_of(k)) is None)
    with_history = sum(1 for k in keys if all(r.row_of(k) is not None for r in rounds))
    assert len(keys) > 500 and unscored > 0 and with_history > 0.5 * len(keys)
    for key in keys:
        assert sheet_for(later, rounds, key, None, []) == _through_frames(later, rounds, key), key
