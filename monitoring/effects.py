"""Whether the actions worked, apart from whether the model is off (issue 15, part 6a).

Where it sits: in monitoring's outcome step (report.py `_outcomes`), once a round's labels have
matured. When schools act on the list, the pupils they help drop out less: judged on every pupil,
a calibrated model then looks "miscalibrated" (fewer dropouts than its scores expect) and its
precision falls, which is the actions' success, not the model's failure. So, given the round's
assignment (who was eligible, who was served, who was held out at random, who was acted on):

* the model is judged on the **untreated** pupils only (`untreated_mask`: every pupil not in the
  served arm and with no action done). Pupils left out are chosen by a rule on what the school saw
  and by the draw of the holdout, never by their outcome, so a model calibrated on features stays
  calibrated on the rest, and the held-out eligible pupils keep the top of the list in the judgement;
  a pupil served or acted on in one of the `CARRY_TERMS` terms before is left out too
  (`with_carry_over`: effects fade, they do not stop at the term's end);
* the **effect of acting** is estimated from the randomised holdout (`holdout_effect`): the
  difference in dropout rates, served minus held out (the effect of being served, uptake included),
  with a percentile bootstrap that resamples whole students (or whole schools when schools were
  randomised) within each arm; and per pupil acted on (the difference over the share served who
  received the action).

The assignment is the one a deployment running a holdout delivers (assignment.csv, actions.csv: the
simulator writes them to OUT/actions/, simulator/PROCESS.md §2b), ingested into the warehouse with
its student IDs tokenised (features/ingest/actions.py) and read keyed by student_key
(features/assignment.py), so the report holds aggregates only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import duckdb

SERVED, HOLDOUT = "served", "holdout"


class EffectEstimate(BaseModel):
    """A difference in dropout rates with its interval (fractions, not points; lower is better)."""

    model_config = ConfigDict(extra="forbid")
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    resampled: Literal["student", "school"]


class ActionEffects(BaseModel):
    """What the round's actions changed, and on which pupils the model was judged."""

    model_config = ConfigDict(extra="forbid")
    design: str = Field(description="How the holdout was drawn (pupils or schools), or 'none'.")
    source: str = Field(description="Where the assignment came from.")
    eligible: int
    served: int
    holdout: int
    treated: int = Field(description="Pupils with an action done (received).")
    dropout_rate_served: float | None
    dropout_rate_holdout: float | None
    effect_of_serving: EffectEstimate | None = Field(
        None, description="Dropout rate served minus held out: the effect of being offered an action (uptake included).")
    effect_per_treated: EffectEstimate | None = Field(
        None, description="effect_of_serving / share of the served arm that received the action (Wald).")
    carried: int = Field(0, description="Pupils served or acted on in one of the CARRY_TERMS terms before, left out "
                                        "of the judgement too: an effect fades term by term, it does not vanish.")
    judged_rows: int = Field(0, description="Pupils the model's outcomes were judged on (the untreated).")
    left_out_rows: int = Field(0, description="Pupils left out of the judgement: served, or acted on.")
    note: str = ""


def _cluster_sums(y: np.ndarray, cluster: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: rows and dropouts."""
    _, inv = np.unique(cluster, return_inverse=True)
    return np.bincount(inv).astype(float), np.bincount(inv, weights=y)


def _boot_rates(n: np.ndarray, d: np.ndarray, reps: int, rng: np.random.Generator, block: int = 200) -> np.ndarray:
    """Dropout rate of `reps` cluster resamples (clusters drawn with replacement, as many as there are)."""
    k = len(n)
    out = np.empty(reps)
    for s in range(0, reps, block):
        b = min(block, reps - s)
        idx = rng.integers(0, k, size=(b, k))
        out[s:s + b] = d[idx].sum(axis=1) / np.maximum(n[idx].sum(axis=1), 1.0)
    return out


def holdout_effect(dropout: np.ndarray, served: np.ndarray, cluster: np.ndarray, treated: np.ndarray | None = None,
                   confidence: float = 0.95, reps: int = 2000, seed: int = 0,
                   resampled: Literal["student", "school"] = "student") -> tuple[EffectEstimate, EffectEstimate | None]:
    """Served minus held-out dropout rate over the eligible rows, and the same per pupil acted on.

    `served` is the randomised arm (True = served, False = held out); `cluster` the unit resampled
    together (a student's rows, or a school's when schools were randomised), within each arm.
    `treated` (received the action) gives the effect per treated pupil: the difference over the
    share of the served arm who received it (the holdout receives nothing).
    """
    y = np.asarray(dropout, dtype=float)
    s = np.asarray(served, dtype=bool)
    c = np.asarray(cluster)
    if s.sum() == 0 or (~s).sum() == 0:
        none = EffectEstimate(estimate=None, low=None, high=None, confidence=confidence, resampled=resampled)
        return none, None
    rng = np.random.default_rng(seed)
    n1, d1 = _cluster_sums(y[s], c[s])
    n0, d0 = _cluster_sums(y[~s], c[~s])
    diff = float(y[s].mean() - y[~s].mean())
    boot = _boot_rates(n1, d1, reps, rng) - _boot_rates(n0, d0, reps, rng)
    a = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(boot, [a, 1 - a]))
    itt = EffectEstimate(estimate=diff, low=lo, high=hi, confidence=confidence, resampled=resampled)
    if treated is None:
        return itt, None
    t = np.asarray(treated, dtype=bool)
    share = float(t[s].mean())
    if share <= 0:
        return itt, None
    # the share is a design figure known from the record; its own sampling error is small beside the
    # outcome's and is left out of the interval (said in the field's description)
    per = EffectEstimate(estimate=diff / share, low=lo / share, high=hi / share, confidence=confidence,
                         resampled=resampled)
    return itt, per


def untreated_mask(arm: pd.Series, treated: pd.Series, carried: pd.Series | None = None) -> np.ndarray:
    """Pupils whose outcome no action can have changed: not served, nothing done, and (`carried`)
    nothing served or done in the terms before whose effect may still act.

    `arm` is 'served', 'holdout' or missing (not eligible); `treated` True where an action was done."""
    out = (~arm.eq(SERVED).to_numpy()) & (~treated.fillna(False).astype(bool).to_numpy())
    if carried is not None:
        out &= ~carried.fillna(False).astype(bool).to_numpy()
    return out


# Terms before the monitored one whose actions still count as treatment. Effects fade (in the
# simulator by half a term: simulator/PROCESS.md §2b), so a pupil served last term is not untreated
# this term; two terms leave a quarter of the effect, three an eighth.
CARRY_TERMS = 2


def earlier_terms(year: int, term: int, n: int) -> list[tuple[int, int]]:
    """The `n` terms before (year, term), latest first: (2566, 1), 2 -> [(2565, 2), (2565, 1)]."""
    out, y, t = [], year, term
    for _ in range(n):
        y, t = (y, 1) if t == 2 else (y - 1, 2)
        out.append((y, t))
    return out


def with_carry_over(every_term: pd.DataFrame, year: int, term: int, carry_terms: int = CARRY_TERMS) -> pd.DataFrame:
    """The eligible pupils of (year, term) (student_key, school_code, arm, treated) with `carried`
    True where the pupil was served or acted on in one of the `carry_terms` terms before; pupils
    served before but not eligible now are added (arm '', treated False, carried True).
    `every_term`: features/assignment.py's rows of every term."""
    a = every_term
    now = a[(a["academic_year"] == year) & (a["term"] == term)]
    prev = pd.MultiIndex.from_tuples(earlier_terms(year, term, carry_terms), names=["academic_year", "term"])
    before = a[pd.MultiIndex.from_frame(a[["academic_year", "term"]]).isin(prev)]
    before = set(before.loc[before["arm"].eq(SERVED) | before["treated"].astype(bool), "student_key"])
    out = now.drop(columns=["academic_year", "term"]).reset_index(drop=True)
    out["carried"] = out["student_key"].isin(before)
    extra = sorted(before - set(out["student_key"]))
    if extra:
        out = pd.concat([out, pd.DataFrame({"student_key": extra, "school_code": "", "arm": "", "treated": False,
                                            "carried": True})], ignore_index=True)
    return out


def summarise(students: pd.DataFrame, confidence: float = 0.95, reps: int = 2000, seed: int = 0,
              design: str = "holdout by pupil", source: str = "") -> ActionEffects:
    """The round's `ActionEffects` from matured rows with columns dropout, arm, treated, student_key, school_code."""
    arm = students["arm"]
    eligible = arm.isin([SERVED, HOLDOUT]).to_numpy()
    e = students[eligible]
    served = e["arm"].eq(SERVED).to_numpy()
    treated = students["treated"].fillna(False).astype(bool)
    carried = students["carried"] if "carried" in students.columns else None
    unt = untreated_mask(arm, treated, carried)
    by_school = design.endswith("school")
    itt = per = None
    note = ""
    if served.any() and (~served).any():
        itt, per = holdout_effect(e["dropout"].to_numpy(dtype=float), served,
                                  e["school_code" if by_school else "student_key"].astype(str).to_numpy(),
                                  treated[eligible].to_numpy(), confidence, reps, seed,
                                  "school" if by_school else "student")
    else:
        note = "no randomised holdout in this round: the effect of acting cannot be estimated from it"

    def rate(mask: np.ndarray) -> float | None:
        return round(float(e.loc[mask, "dropout"].mean()), 6) if mask.any() else None

    return ActionEffects(design=design if eligible.any() else "none", source=source, eligible=int(eligible.sum()),
                         served=int(served.sum()), holdout=int((~served).sum()), treated=int(treated.sum()),
                         dropout_rate_served=rate(served), dropout_rate_holdout=rate(~served),
                         effect_of_serving=itt, effect_per_treated=per,
                         carried=0 if carried is None else int(carried.fillna(False).astype(bool).sum()),
                         judged_rows=int(unt.sum()),
                         left_out_rows=int((~unt).sum()), note=note)


def naive_effect(dropout: np.ndarray, treated: np.ndarray) -> float:
    """Dropout rate of pupils acted on minus everyone else's: what a comparison without a holdout
    gives. Acted-on pupils were chosen for their risk, so this is biased upwards (kept to show it
    in the tests and the docs, never reported as the effect)."""
    y = np.asarray(dropout, dtype=float)
    t = np.asarray(treated, dtype=bool)
    return float(y[t].mean() - y[~t].mean()) if t.any() and (~t).any() else math.nan


# ------------------------------------------------------------------------------------------------
# the assignment file


# Where the report says the assignment came from.
ASSIGNMENT_SOURCE = "warehouse: src_assignment, src_actions (ews ingest FOLDER)"


def read_assignment(con: duckdb.DuckDBPyConnection, year: int, term: int) -> pd.DataFrame:
    """The eligible pupils of term (year, term): student_key, school_code, arm, treated
    (features/assignment.py reads the ingested assignment from the warehouse attached as `wh`; a
    round of the same term prompted the actions, which change the term-end outcome both of its
    rounds' labels see)."""
    from features.assignment import read_assignment as read_all

    a = read_all(con)
    out = with_carry_over(a, year, term)
    out.attrs["unmatched"] = a.attrs.get("unmatched", 0)
    return out


def with_actions(joined: pd.DataFrame, assignment: pd.DataFrame, confidence: float = 0.95, design: str = "holdout by pupil",
                 source: str = "", seed: int = 0) -> tuple[pd.DataFrame, ActionEffects]:
    """Matured rows of a round (student_key, school_code, dropout, ...) -> the untreated rows the model
    is judged on, and the round's `ActionEffects` (pure)."""
    a = assignment[[c for c in ("student_key", "arm", "treated", "carried") if c in assignment.columns]]
    j = joined.merge(a, on="student_key", how="left")
    j["arm"] = j["arm"].fillna("")
    j["treated"] = j["treated"].fillna(False).astype(bool)
    if "carried" in j.columns:
        j["carried"] = j["carried"].fillna(False).astype(bool)
    effects = summarise(j, confidence=confidence, design=design, source=source, seed=seed)
    keep = untreated_mask(j["arm"], j["treated"], j["carried"] if "carried" in j.columns else None)
    return joined[keep].reset_index(drop=True), effects


def describe(e: ActionEffects) -> str:
    """One sentence for the verdict's reasons: what acting changed, and on whom the model was judged."""
    est = e.effect_of_serving
    if est is None or est.estimate is None:
        what = f"Actions recorded for {e.treated:,} pupils; {e.note or 'no holdout to estimate their effect from'}."
    else:
        what = (f"Actions: served pupils dropped out {est.estimate * 100:+.2f} points against the held-out ones "
                f"({est.confidence:.0%} interval {est.low * 100:+.2f} to {est.high * 100:+.2f}; {e.served:,} served, "
                f"{e.holdout:,} held out, {e.treated:,} acted on; {e.design}, resampled by {est.resampled}).")
    carried = f" ({e.carried:,} served or acted on in the {CARRY_TERMS} terms before are left out too)" if e.carried else ""
    return what + f" The model's outcomes were judged on the {e.judged_rows:,} untreated pupils{carried}."
