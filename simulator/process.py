"""The generating process of one term: the competing-exit hazards, the shocks and the ceiling.

Pure functions of a `Population` (population.py) and the process coefficients
(config.ProcessConfig): no random draws here, so the driver (province.py) decides when the
randomness happens. A term step, as the driver runs it:

  census snapshot (DMC rows for OBEC pupils, other_enrolment rows for other systems, truth status)
  -> latent engagement moves (AR(1)) -> shocks arrive at random dates within the term
     (`shock_probs`)
  -> the ceiling for the term's two scoring rounds (`future_shock_probs` of the shocks still to come,
     then `ceiling`: exact, over the 2^K shock sets)
  -> term-end draw of the competing exits (multinomial over `base_logits` + `shock_class_effects`:
     stay, dropout, transfer, ...)
  -> records of the term (records.py) -> year end: progression, repetition, school change.

PROCESS.md documents the equations; config.ProcessConfig holds every coefficient. `Calib` gathers
the counters the calibration and ceiling reports (calibration.py) are made of.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.ids import GRADES
from simulator.config import ProcessConfig
from simulator.population import EXTREME_POOR, G_K3, G_M3, G_M4, G_M6, G_P6, TYPICAL_AGE, Population
from simulator.world import KIND_EXTENDED, KIND_PRIMARY, N_SHOCKS

# competing outcomes at a term end
CLASSES = ("stay", "dropout", "transfer", "other_school", "vocational", "non_formal", "work_training",
           "death", "abroad", "completed")
C_STAY, C_DROP, C_TRANSFER, C_OTHER, C_VOC, C_NFE, C_EWE, C_DEATH, C_ABROAD, C_DONE = range(10)
N_CLASSES = len(CLASSES)


@dataclass
class Calib:
    """Counters gathered across provinces for calibration.json and the ceiling report."""

    # annual: [grade, poor(0/1), (enrolled, dropped)] from one June census to the next
    annual: np.ndarray = field(default_factory=lambda: np.zeros((15, 2, 2), dtype=np.int64))
    term_drop: np.ndarray = field(default_factory=lambda: np.zeros((2, 2), dtype=np.int64))  # term, (n, dropped)
    exits: np.ndarray = field(default_factory=lambda: np.zeros(N_CLASSES, dtype=np.int64))
    province_poor: dict[str, tuple[int, int]] = field(default_factory=dict)
    # ceiling: histogram of p on the logit scale per round type, positives and negatives
    bins: np.ndarray = field(default_factory=lambda: np.linspace(-16, 8, 24001))
    hist: dict[str, np.ndarray] = field(default_factory=dict)
    psum: dict[str, float] = field(default_factory=dict)
    ysum: dict[str, int] = field(default_factory=dict)
    nrows: dict[str, int] = field(default_factory=dict)
    per_round: dict[str, list[float]] = field(default_factory=dict)  # round_id -> [n, sum p, sum y]
    gcode_changes: int = 0
    tzd_cases: int = 0
    returns: int = 0

    def add_round(self, round_id: str, kind: str, p: np.ndarray, y: np.ndarray) -> None:
        lg = np.log(np.clip(p, 1e-12, 1 - 1e-12) / np.clip(1 - p, 1e-12, None))
        b = np.clip(np.searchsorted(self.bins, lg), 0, len(self.bins))
        h = self.hist.setdefault(kind, np.zeros((len(self.bins) + 1, 2), dtype=np.int64))
        np.add.at(h, (b, y.astype(np.int64)), 1)
        self.psum[kind] = self.psum.get(kind, 0.0) + float(p.sum())
        self.ysum[kind] = self.ysum.get(kind, 0) + int(y.sum())
        self.nrows[kind] = self.nrows.get(kind, 0) + len(p)
        r = self.per_round.setdefault(round_id, [0, 0.0, 0])
        r[0] += len(p)
        r[1] += float(p.sum())
        r[2] += int(y.sum())


def auc_from_hist(h: np.ndarray) -> float:
    """ROC-AUC from score-bin counts (ties inside a bin count one half)."""
    neg, pos = h[:, 0].astype(float), h[:, 1].astype(float)
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def shock_probs(pop: Population, idx: np.ndarray, cday: int) -> np.ndarray:
    pc = pop.pc
    poor = pop.income[idx] <= EXTREME_POOR
    base = np.array(pc.shock_prob)[None, :] * np.where(poor[:, None], np.array(pc.shock_poverty_mult)[None, :], 1.0)
    age = pop.age_years(idx, cday)
    preg = np.where(age >= 15, pc.pregnancy_prob_15_up, np.where(age >= 13, pc.pregnancy_prob_13_14, 0.0))
    preg = np.where((pop.sex[idx] == 1) & ~pop.preg[idx], preg, 0.0)
    base[:, 3] = preg * np.where(poor, pc.shock_poverty_mult[3], 1.0)
    return np.clip(base, 0, 0.9)


def future_shock_probs(sp: np.ndarray, as_of: int, start: int, end: int) -> np.ndarray:
    """P(shock k arrives after the as-of date and by term end | it has not arrived by the as-of date).

    The driver draws a shock's day uniformly over the term's days start .. end - 1 (int32 floor of
    start + U(0,1)·(end − start)) and counts it known when day <= as_of, so the share of the term's
    arrival days already past is f = (as_of − start + 1) / (end − start): the as-of day itself counts.
    Then q = p(1 − f) / (1 − p·f).
    """
    f = min(max((as_of - start + 1) / (end - start), 0.0), 1.0)
    return sp * (1 - f) / np.maximum(1 - sp * f, 1e-9)


def base_logits(pop: Population, idx: np.ndarray, term: int, cday: int) -> np.ndarray:
    """Logits of every competing outcome before this term's shocks (n x classes; stay = 0)."""
    pc = pop.pc
    n = len(idx)
    g = pop.grade[idx]
    gl = np.array([(pc.grade_logit_t1 if term == 1 else pc.grade_logit_t2)[x] for x in GRADES])
    pov = pop.poverty()[idx]
    age = pop.age_years(idx, cday)
    overage = np.clip(age - TYPICAL_AGE[g], 0, 6)
    sch = pop.school[idx]
    care_np = pop.caretaker[idx] >= 3
    drop = (gl[g] + pc.beta_poverty * pov + pc.beta_cct_dims * pop.dims[idx].sum(axis=1)
            + pc.beta_caretaker_not_parent * care_np + pc.beta_travel_per_10min * pop.travel[idx] / 10.0
            + pc.beta_remote_school * pop.geo.school_remote[sch] + pc.beta_small_school * pop.geo.school_small[sch]
            + pop.prov.effect + pc.beta_non_thai * pop.non_thai[idx] + pc.beta_disability * (pop.disab[idx] > 0)
            + pc.beta_chronic_illness * pop.chronic[idx] + pc.beta_overage_per_year * overage
            + pc.beta_repeated * (pop.repeated[idx] > 0) + pc.beta_engagement * pop.e[idx]
            + pc.beta_past_pregnancy * pop.preg[idx]
            + pop.school_effect[sch] + interaction_logits(pop, idx, term))
    L = np.full((n, N_CLASSES), -np.inf)
    L[:, C_STAY] = 0.0
    L[:, C_DROP] = drop
    L[:, C_TRANSFER] = pc.transfer_logit
    year_end = term == 2
    L[:, C_OTHER] = np.where(year_end & (g == G_K3), pc.other_school_logit_k3, pc.other_school_logit)
    L[:, C_VOC] = np.where(year_end & (g == G_M3), pc.vocational_logit_m3,
                           np.where((g == G_M4) | (g == G_M4 + 1), pc.vocational_logit_upper, -np.inf))
    L[:, C_NFE] = np.where(age >= 13, pc.nfe_logit + pc.nfe_overage_per_year * overage - 0.3 * pop.e[idx], -np.inf)
    L[:, C_EWE] = np.where(age >= 15, pc.ewe_logit, -np.inf)
    L[:, C_DEATH] = pc.death_logit
    L[:, C_ABROAD] = np.where(pop.non_thai[idx], pc.abroad_logit_non_thai, pc.abroad_logit_thai)
    if year_end:
        m6 = g == G_M6
        L[m6, C_DONE] = 0.0
        L[m6, C_STAY] = -pc.completed_logit_m6
    return L


def next_school_km(pop: Population, idx: np.ndarray) -> np.ndarray:
    """Km to the school of the next grade when the year end means a move to a secondary school, else 0.

    P6 -> M1 moves a pupil of a primary school (an extended-opportunity school keeps its own), M3 -> M4
    a pupil of an extended-opportunity school (a secondary school keeps its own). Secondary schools
    stand in the district town, so the current school's distance to it is the new journey's length.
    """
    g = pop.grade[idx]
    kind = pop.geo.school_kind[pop.school[idx]]
    moves = ((g == G_P6) & (kind == KIND_PRIMARY)) | ((g == G_M3) & (kind == KIND_EXTENDED))
    return np.where(moves, pop.geo.school_distance[pop.school[idx]], 0.0)


def interaction_logits(pop: Population, idx: np.ndarray, term: int) -> np.ndarray:
    """The non-additive part of the dropout logit (config: beta_poverty_transition ... beta_cct_grant_lost).

    Poverty x transition (P6 -> M1, M3 -> M4: a new school's uniform, fees and journey) and distance
    x the move to a secondary school act at those year ends only; the lost CCT grant acts on
    extremely poor children whose attendance last term broke the grant's condition. Everything here
    is known at the term's start, so the ceiling stays exact.
    """
    pc = pop.pc
    g = pop.grade[idx]
    out = np.zeros(len(idx))
    if term == 2:
        transition = (g == G_P6) | (g == G_M3)  # the moves to a new (secondary) school; K3 -> P1 stays put
        out += np.where(transition, pc.beta_poverty_transition * np.maximum(pop.poverty()[idx], 0.0), 0.0)
        out += pc.beta_distance_transition_per_10km * next_school_km(pop, idx) / 10.0
    lost = (pop.income[idx] <= EXTREME_POOR) & (pop.att_last[idx] < pc.cct_attendance_condition)
    out += pc.beta_cct_grant_lost * lost
    return out


def shock_class_effects(pc: ProcessConfig) -> np.ndarray:
    """Added to the class logits by each shock that arrives (shocks x classes)."""
    S = np.zeros((N_SHOCKS, N_CLASSES))
    S[:, C_DROP] = pc.shock_hazard
    S[0, C_TRANSFER], S[2, C_TRANSFER] = 0.6, 0.4
    S[0, C_ABROAD] = pc.abroad_parent_migration
    S[3, C_NFE], S[2, C_NFE] = 1.0, 0.3
    S[2, C_EWE] = 0.5
    return S


def softmax(L: np.ndarray) -> np.ndarray:
    """Row-wise class probabilities from logits (-inf = impossible class)."""
    m = L.max(axis=1, keepdims=True)
    e = np.exp(L - m)
    return e / e.sum(axis=1, keepdims=True)


def ceiling(L: np.ndarray, known: np.ndarray, q_future: np.ndarray, S: np.ndarray) -> np.ndarray:
    """P(dropout at term end | state, shocks known by the as-of date), exact over the 2^K futures.

    With exp(L) computed once, each future-shock set c only rescales the classes' weights:
    P(dropout | c) = exp(L_drop + s_c,drop) / sum_j exp(L_j + s_c,j), a matrix-vector product. `S` is the process's `shock_class_effects`.
    """
    n = len(L)
    m = L.max(axis=1, keepdims=True)
    expL = np.exp(L - m)  # -inf classes give 0
    # W[:, c]: probability of shock set c by term end (bit k of c = shock k; a known shock has
    # probability 1), built shock by shock: appending the "arrives" half after the "does not" half at
    # step k puts shock k in bit k, so shock 0 is the least significant bit.
    W = np.ones((n, 1))
    for k in range(N_SHOCKS):
        a1 = np.where(known[:, k], 1.0, q_future[:, k])
        W = np.concatenate([W * (1.0 - a1)[:, None], W * a1[:, None]], axis=1)
    # combos[c] must read the bits the same way W wrote them (bit k = shock k). Reading shock 0 from
    # the most significant bit instead paired each set's probability with another set's effects
    # (parent migration with pregnancy, illness with debt): tests/unit/test_simulator_ceiling.py
    # enumerates the sets one by one to hold the two together.
    combos = np.array([[(c >> k) & 1 for k in range(N_SHOCKS)] for c in range(2**N_SHOCKS)], float)
    scale = np.exp(combos @ S)  # (combos, classes)
    denom = expL @ scale.T  # (n, combos)
    return expL[:, C_DROP] * (W * scale[None, :, C_DROP] / denom).sum(axis=1)
