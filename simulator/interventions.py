"""Schools act on their list: who is served, what is done, what it changes, and the truth of it (issue 15.5).

Where it sits: inside a province's term step (province.py), between the hazard's logits and the
term-end draw. Off unless `SimulationConfig.interventions` is set; then, from its first term on, at
each term's early round:

  the school ranks its pupils on what it sees (`standin_risk_index`: its own attendance record,
  over-age, repetition, the CCT screening it filled in, the carer) -> the top ceil(capacity x pupils)
  are eligible -> a randomised holdout (pupils each term, or schools once) is not served -> a served
  pupil gets the action the school's rule picks (`choose_action`) and receives it with chance `uptake`
  -> the action changes the dropout logit by a heterogeneous effect (`effect_logit`: CCT helps in
  proportion to poverty, a home visit or counselling in proportion to disengagement; nobody else)
  that fades term after term (`fade_per_term`).

The truth (`truth/interventions.parquet`, one row per eligible pupil and term) holds both potential
outcomes: the probability of dropping out by the term's end with and without the action, given the
shocks that really arrived, and the draw of each with the same uniform (so `dropout_if_acted` and
`dropout_if_not` are the two outcomes of one child). The delivery (`OUT/actions/`, beside
`deliveries/`, never mixed into a source delivery) is what the schools would have recorded: the
eligible list with its arm (`assignment.csv`) and the actions in the action record's catalogue codes
(`actions.csv`). The simulator does not import the pipeline: `ACTION_CODES` copies the three codes
it uses from serving/actions.py's catalogue (tests/unit/test_simulator_interventions.py holds them
equal).

Its random numbers come from a stream of their own ([seed, province, 7]), so the world's own draws
do not move: every file is byte-identical to the world without interventions up to the first term in
which schools act.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from simulator.config import InterventionConfig
from simulator.population import EXTREME_POOR, TYPICAL_AGE, day

if TYPE_CHECKING:
    from simulator.province import ProvinceSim

# Catalogue codes of serving/actions.py the simulated schools use (copied as data: the simulator
# never imports serving). Index = the int8 code in the arrays below.
ACTION_CODES: tuple[str, ...] = ("cct_application", "home_visit", "counselling")
A_CCT, A_HOME_VISIT, A_COUNSELLING = range(3)
NO_ACTION = -1
ARMS = ("served", "holdout")
ASSIGNMENT_COLUMNS = ("round_id", "school_code", "student_id", "arm")
ACTION_COLUMNS = ("round_id", "school_code", "student_id", "action", "status", "recorded_on")


def standin_risk_index(att_last: np.ndarray, overage_years: np.ndarray, repeated: np.ndarray,
                       extremely_poor: np.ndarray, carer_not_parent: np.ndarray) -> np.ndarray:
    """The school's own ranking, on what it records: higher = acted on first.

    Attendance last term weighs most (a school sees it every day); then its CCT screening (extremely
    poor), over-age, an earlier repetition, a child not cared for by a parent. A rule, not a model:
    the simulator must not import the pipeline, and a school without the service ranks this way.
    """
    return (4.0 * (1.0 - att_last) + 1.0 * extremely_poor + 0.5 * np.clip(overage_years, 0, 3)
            + 0.5 * (repeated > 0) + 0.5 * carer_not_parent)


def top_share_per_school(school: np.ndarray, index: np.ndarray, share: float, tiebreak: np.ndarray) -> np.ndarray:
    """Mask of the ceil(share x n_s) highest `index` pupils of each school s (ties broken by `tiebreak`)."""
    order = np.lexsort((tiebreak, -index, school))
    s_sorted = school[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    cap = np.repeat(np.ceil(share * sizes).astype(np.int64), sizes)
    out = np.zeros(len(order), dtype=bool)
    out[order] = rank < cap
    return out


def choose_action(extremely_poor: np.ndarray, att_last: np.ndarray, attendance_condition: float) -> np.ndarray:
    """The school's rule: a CCT application for an extremely poor child, a home visit for one who
    misses school, counselling otherwise (codes A_*)."""
    return np.where(extremely_poor, A_CCT, np.where(att_last < attendance_condition, A_HOME_VISIT, A_COUNSELLING)).astype(np.int8)


def effect_logit(action: np.ndarray, poverty: np.ndarray, engagement: np.ndarray, ic: InterventionConfig) -> np.ndarray:
    """The true change of the dropout logit an action makes in the term it is received (<= 0).

    Heterogeneous by the cause of the risk: a CCT grant helps a poor child by need (max(pov, 0)),
    a home visit or counselling helps a disengaged one (max(-e, 0)); an engaged child just above the
    poverty line, or one whose risk is a shock, gains nothing.
    """
    need = np.maximum(poverty, 0.0)
    disengaged = np.maximum(-engagement, 0.0)
    return -np.select(
        [action == A_CCT, action == A_HOME_VISIT, action == A_COUNSELLING],
        [ic.cct_effect_per_poverty * need, ic.home_visit_effect_per_disengagement * disengaged,
         ic.counselling_effect_per_disengagement * disengaged], 0.0)


@dataclass
class TermPlan:
    """What the schools decided at a term's early round (rows = the term's OBEC pupils, `idx` order)."""

    round_id: str
    as_of: int
    eligible: np.ndarray  # bool
    holdout: np.ndarray  # bool (eligible only)
    would_take_up: np.ndarray  # bool (drawn for every eligible pupil, held out or not)
    treated: np.ndarray  # bool: served and took it up
    action: np.ndarray  # int8 code, NO_ACTION where not eligible
    effect: np.ndarray  # full logit effect of the action (eligible rows; 0 elsewhere)
    shift_if_not: np.ndarray  # logit shift without this term's action (what is left of earlier ones)
    shift_if_acted: np.ndarray  # logit shift with it: the stronger of the new action and what is left

    @property
    def shift(self) -> np.ndarray:
        """The realised shift of the dropout logit."""
        return np.where(self.treated, self.shift_if_acted, self.shift_if_not)


class ProvinceInterventions:
    """The interventions of one province: the effects still fading, the holdout schools, the rows."""

    def __init__(self, ic: InterventionConfig, seed: int, province_index: int, n: int, n_schools: int) -> None:
        self.ic = ic
        self.rng = np.random.default_rng([seed, province_index, 7])
        self.effect_left = np.zeros(n)  # logit shift left of the last action, at the next term
        self.holdout_school = self.rng.random(n_schools) < ic.holdout_share if ic.holdout_unit == "school" else None
        self.assignment: list[tuple[str, ...]] = []
        self.actions: list[tuple[str, ...]] = []

    def active(self, year: int, term: int) -> bool:
        return (year, term) >= (self.ic.from_year, self.ic.from_term)

    def plan(self, sim: ProvinceSim, year: int, term: int, idx: np.ndarray, cday: int) -> TermPlan:
        """Rank, select, randomise and choose the actions of this term (no effect on the world yet)."""
        ic, rng = self.ic, self.rng
        n = len(idx)
        rid = f"{year}-T{term}-early"
        as_of = day(sim.cal.as_of(rid))
        poor = sim.income[idx] <= EXTREME_POOR
        att = sim.att_last[idx]
        index = standin_risk_index(att, sim.age_years(idx, cday) - TYPICAL_AGE[sim.grade[idx]], sim.repeated[idx], poor,
                                   sim.caretaker[idx] >= 3)
        tiebreak = rng.random(n)
        eligible = top_share_per_school(sim.school[idx], index, ic.capacity_share, tiebreak)
        if self.holdout_school is None:
            holdout = eligible & (rng.random(n) < ic.holdout_share)
        else:
            holdout = eligible & self.holdout_school[sim.school[idx]]
        would = eligible & (rng.random(n) < ic.uptake)
        action = np.where(eligible, choose_action(poor, att, sim.pc.cct_attendance_condition), NO_ACTION).astype(np.int8)
        effect = np.where(eligible, effect_logit(action, sim.poverty()[idx], sim.e[idx], ic), 0.0)
        left = self.effect_left[idx]
        treated = eligible & ~holdout & would
        return TermPlan(rid, as_of, eligible, holdout, would, treated, action, effect, left,
                        np.where(eligible, np.minimum(effect, left), left))

    def after_term(self, sim: ProvinceSim, plan: TermPlan, idx: np.ndarray, probs_if: tuple[np.ndarray, np.ndarray],
                   outcome_if: tuple[np.ndarray, np.ndarray], outcome: np.ndarray, drop_class: int) -> pa.Table:
        """Fade the effects, keep the delivery rows, and return the truth rows of the eligible pupils."""
        self.effect_left[idx] = plan.shift * self.ic.fade_per_term
        e = np.flatnonzero(plan.eligible)
        ids, _ = sim.ids_at(idx[e], plan.as_of, 180)
        schools = sim.school_codes.to_numpy(zero_copy_only=False)[sim.school[idx[e]]]
        served = ~plan.holdout[e]
        days = plan.as_of + self.rng.integers(3, 28, len(e))
        for j in range(len(e)):
            sid = ids[j].decode() if isinstance(ids[j], bytes) else str(ids[j])
            self.assignment.append((plan.round_id, str(schools[j]), sid, ARMS[0] if served[j] else ARMS[1]))
            if served[j]:
                status = "done" if plan.treated[e[j]] else "planned"
                self.actions.append((plan.round_id, str(schools[j]), sid, ACTION_CODES[plan.action[e[j]]], status,
                                     str(np.datetime64(int(days[j]), "D"))))
        n = len(e)
        return pa.table({
            "round_id": pa.array([plan.round_id] * n, pa.string()),
            "as_of": pa.array(np.full(n, plan.as_of).astype("datetime64[D]")),
            "person_id": sim.pid[idx[e]], "school_code": pa.array(schools.astype(str), pa.string()),
            "arm": pa.array(np.where(served, ARMS[0], ARMS[1]), pa.string()),
            "would_take_up": plan.would_take_up[e], "treated": plan.treated[e],
            "action": pa.array(np.array(ACTION_CODES)[plan.action[e]], pa.string()),
            "effect_logit": plan.effect[e], "carried_logit": plan.shift_if_not[e],
            "p_dropout_if_acted": probs_if[1][e], "p_dropout_if_not": probs_if[0][e],
            "dropout_if_acted": (outcome_if[1][e] == drop_class), "dropout_if_not": (outcome_if[0][e] == drop_class),
            "dropout": outcome[e] == drop_class,
        })


def write_actions_delivery(out: Path, assignment: list[tuple[str, ...]], actions: list[tuple[str, ...]]) -> None:
    """OUT/actions/assignment.csv and actions.csv (UTF-8, header first), written whole at the end."""
    folder = out / "actions"
    folder.mkdir(parents=True, exist_ok=True)
    for name, cols, rows in (("assignment.csv", ASSIGNMENT_COLUMNS, assignment), ("actions.csv", ACTION_COLUMNS, actions)):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        tmp.replace(folder / name)


def true_effects(truth_dir: Path) -> dict[str, float]:
    """The true average effects over the eligible pupil-terms of truth/interventions.parquet.

    `itt`: of being served rather than held out (an eligible pupil's expected change of dropout
    probability, counting that some would not take the action up) — what a holdout comparison
    estimates. `att`: of the action among those who took it up. `share_benefiting`: eligible
    pupils whose action would change their probability by more than 0.1 point.
    """
    t = pq.read_table(truth_dir / "interventions.parquet").to_pandas()
    if t.empty:
        return {"itt": math.nan, "att": math.nan, "share_benefiting": math.nan, "eligible": 0}
    diff = t["p_dropout_if_acted"] - t["p_dropout_if_not"]
    took = t["would_take_up"]
    return {"itt": float((diff * took).mean()), "att": float(diff[took].mean()) if took.any() else math.nan,
            "share_benefiting": float((diff < -0.001).mean()), "eligible": int(len(t))}
