"""Training that knows about actions (issue 15, part 6b): leave out the outcomes an action changed.

Where it sits: between loading the training set and fitting (training/train.py `train`), only when
an assignment is given (`ews train --actions`; features/assignment.py reads it from the warehouse). A pupil the
schools served drops out less *because of the action*; trained on that outcome, the model learns
that the profiles schools act on are safe, and the next list stops naming them. So the rows of a
pupil served or acted on in a round's term, and in the `terms_after` terms that follow (an effect
fades, it does not stop at the term's end), are left out. Pupils held out at random keep their rows:
they are the untreated of the same profiles, so the model still sees who is at risk.

Without an assignment nothing changes (the default training set, the default model).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from features.pointintime.trainset import Trainset
from training.config import ActionAwareConfig


def term_index(academic_year: pd.Series | np.ndarray, term: pd.Series | np.ndarray) -> np.ndarray:
    """Terms counted from year 0: (2566, 2) -> 2566 * 2 + 1; consecutive terms differ by one."""
    return np.asarray(academic_year, dtype=np.int64) * 2 + np.asarray(term, dtype=np.int64) - 1


def acted_rows(frame: pd.DataFrame, assignment: pd.DataFrame, terms_after: int) -> np.ndarray:
    """Mask of training rows (student_key, round_id) whose outcome an action may have changed: the
    pupil was served (arm 'served') or acted on in the row's term or up to `terms_after` terms before."""
    rid = frame["round_id"].astype(str).str.extract(r"^(\d{4})-T([12])-")
    row_term = term_index(rid[0].astype(int), rid[1].astype(int))
    hit = assignment[assignment["arm"].eq("served") | assignment["treated"].astype(bool)]
    acted = pd.DataFrame({"student_key": hit["student_key"].astype(str),
                          "t": term_index(hit["academic_year"], hit["term"])}).drop_duplicates()
    # one (pupil, term) per row: is any acted term within [row term - terms_after, row term]?
    rows = pd.DataFrame({"student_key": frame["student_key"].astype(str).to_numpy(), "row_term": row_term,
                         "i": np.arange(len(frame))})
    m = rows.merge(acted, on="student_key")
    m = m[(m["t"] <= m["row_term"]) & (m["t"] >= m["row_term"] - terms_after)]
    out = np.zeros(len(frame), dtype=bool)
    out[m["i"].to_numpy()] = True
    return out


def without_acted(ts: Trainset, assignment: pd.DataFrame, cfg: ActionAwareConfig) -> tuple[Trainset, int]:
    """The training set without the rows an action changed (cfg.outcomes = 'drop'), and how many left."""
    if cfg.outcomes == "keep":
        return ts, 0
    mask = acted_rows(ts.frame, assignment, cfg.terms_after)
    if not mask.any():
        return ts, 0
    return dataclasses.replace(ts, frame=ts.frame[~mask].reset_index(drop=True)), int(mask.sum())
