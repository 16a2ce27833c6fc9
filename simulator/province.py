"""One province followed term by term: the driver that runs the population, the process and the records.

`ProvinceSim` is the top of three layers: `Population` (population.py: who the children are),
`Records` (records.py: the rows delivered about them) and, here, the term step that asks the
process (process.py) for the hazards and the ceiling, draws the term's outcomes and applies them:

  census (entrants, returners, truth status, census rows) -> engagement moves -> shocks arrive
  -> ceiling at the term's two rounds -> term-end draw of the competing exits -> records of the term
  -> consequences of the shocks -> outcomes applied -> TZD quarters -> (term 2) year end.

All work is vectorised over the children of a province (numpy arrays, no Python loop over children).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from features.contract import OTHER_LEVELS
from features.ids import BE_OFFSET, GRADES
from simulator.config import SimulationConfig
from simulator.faults import NameBook
from simulator.population import (
    EXTREME_POOR, G_K3, G_M1, G_M3, G_M4, G_M6, G_P1, G_P6, LEVEL_INDEX, NEVER, STATUS, ST_ABROAD, ST_DEAD, ST_DONE,
    ST_NONE, ST_OBEC, ST_OTHER, ST_OUT, ST_WORK, as_dt64, day, sigmoid,
)
from simulator.process import (
    C_ABROAD, C_DEATH, C_DONE, C_DROP, C_EWE, C_NFE, C_OTHER, C_STAY, C_TRANSFER, C_VOC, CLASSES, N_CLASSES, Calib,
    base_logits, ceiling, future_shock_probs, shock_class_effects, shock_probs, softmax,
)
from simulator.interventions import ProvinceInterventions
from simulator.observable import ObservedHistory, SchoolHistory, TermObservations, observable_ceiling, observable_features
from simulator.records import Records, cat, const
from simulator.scenarios import (
    DataBreak, EconomicShock, ProcessChange, dropout_logit_by_grade, hits_province, income_after_shock,
)
from simulator.schedule import Schedule
from simulator.truth import TruthWriter
from simulator.world import (
    KIND_AFFILIATION, KIND_BPP, KIND_EXTENDED, KIND_LAO, KIND_NFE, KIND_OPEC, KIND_OVEC, KIND_SECONDARY, N_SHOCKS,
    Province,
)
from simulator.writers import DeliveryWriter

# system of a child at a census (truth): none, OBEC, then KIND_OVEC.. KIND_BPP, then EWE
TRUTH_SYSTEMS = ("", "OBEC", "", "", "OVEC", "NFE", "LAO", "OPEC", "BPP", "EWE")


class ProvinceSim(Records):
    """Simulates one province for the whole run and streams its rows and truth."""

    def __init__(self, config: SimulationConfig, prov: Province, schedule: Schedule, writer: DeliveryWriter,
                 truth: TruthWriter, names: NameBook, calib: Calib) -> None:
        super().__init__(config, prov, schedule, writer, truth, names, calib)
        self._prev_june: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._drop_shift: np.ndarray | None = None  # a ProcessChange scenario's dropout logit by grade
        self.interventions: ProvinceInterventions | None = None  # schools acting on the list (made in run())

    def enter_first_pupils(self) -> None:
        """The pupils of the first census enter; school sizes (and so small schools) follow from them."""
        w = self.cfg.world
        # first census: initial pupils enter
        first = self.entry_year == w.first_year
        self.enter(np.flatnonzero(first), day(self.cal.census_date(w.first_year, 1)))
        counts = np.bincount(self.school[first], minlength=len(self.geo.school_code))
        self.geo.school_small[:] = (counts <= 120) & (self.geo.school_kind <= KIND_SECONDARY)
        self.school_students = counts
        p = self.poverty()[first]
        self.calib.province_poor[self.prov.name_en] = (int(first.sum()), int((p >= 0).sum()))

    def enter(self, idx: np.ndarray, census_day: int) -> None:
        """New pupils join OBEC at a census: a school near home, and the welfare links they already have."""
        self.status[idx] = ST_OBEC
        self.entered_on[idx] = census_day
        self.place(idx)
        self.emit_static_links(idx, census_day)

    def census(self, year: int, term: int) -> None:
        """Enter new pupils and returners, then write the census rows and the truth status."""
        cday = day(self.cal.census_date(year, term))
        if term == 1 and year > self.cfg.world.first_year:
            new = np.flatnonzero((self.entry_year == year) & (self.status == ST_NONE))
            self.enter(new, cday)
        ret = np.flatnonzero((self.return_day <= cday) & (self.status == ST_OUT))
        if len(ret):
            to_school = ret[self.return_to[ret] == ST_OBEC]
            self.status[to_school] = ST_OBEC
            self.place(to_school)
            self.calib.returns += len(to_school)
            to_nfe = ret[self.return_to[ret] == ST_OTHER]
            self.move_other(to_nfe, KIND_NFE, cday)
            to_work = ret[self.return_to[ret] == ST_WORK]
            self.status[to_work] = ST_WORK
            self.other_since[to_work] = cday
            self.drop_day[ret] = NEVER
            self.return_day[ret] = NEVER
        entered = np.flatnonzero(self.status != ST_NONE)
        st = self.status[entered]
        n_e = len(entered)
        ob, ot = st == ST_OBEC, st == ST_OTHER
        sys_code = np.zeros(n_e, dtype=np.int32)
        sys_code[ob] = 1
        sys_code[ot] = self.other_kind[entered[ot]] + 1  # KIND_OVEC.. -> index in TRUTH_SYSTEMS
        sys_code[st == ST_WORK] = len(TRUTH_SYSTEMS) - 1
        sch = np.where(ob, self.school[entered], np.where(ot, self.other_school[entered], -1))
        lvl = np.where(ob, self.grade[entered], np.where(ot, self.other_level[entered], -1))
        self.truth.append("census_status", pa.table({
            "person_id": self.pid[entered], "academic_year": np.full(n_e, year, np.int16),
            "term": np.full(n_e, term, np.int8), "census_date": pa.array(np.full(n_e, cday).astype("datetime64[D]")),
            "status": cat(STATUS, st), "system": cat(TRUTH_SYSTEMS, sys_code),
            "school_code": self.school_codes.take(pa.array(sch, mask=sch < 0)),
            "grade_or_level": pa.array(list(OTHER_LEVELS)).take(pa.array(lvl, mask=lvl < 0)),
            "extremely_poor": self.income[entered] <= EXTREME_POOR,
        }))
        # calibration: annual transitions June -> June
        if term == 1:
            if self._prev_june is not None:
                pidx, pgrade, ppoor = self._prev_june
                dropped = self.status[pidx] == ST_OUT
                np.add.at(self.calib.annual, (pgrade, ppoor.astype(np.int64), 0), 1)
                np.add.at(self.calib.annual, (pgrade, ppoor.astype(np.int64), 1), dropped.astype(np.int64))
            ob_idx = np.flatnonzero(self.status == ST_OBEC)
            self._prev_june = (ob_idx, self.grade[ob_idx].astype(np.int64), self.income[ob_idx] <= EXTREME_POOR)
        # DMC rows
        idx = np.flatnonzero(self.status == ST_OBEC)
        self.emit_census_rows(idx, year, term, cday)
        oidx = np.flatnonzero(self.status == ST_OTHER)
        if len(oidx):
            ids, mask = self.ids_at(oidx, cday, 180)
            cols = {
                "record_date": np.full(len(oidx), cday).astype("datetime64[D]"),
                "system": np.array(KIND_AFFILIATION)[self.other_kind[oidx]],
                "school_code": self.school_codes.take(pa.array(self.other_school[oidx])),
                "student_id": ids, "first_name": self.first[oidx], "last_name": self.last[oidx],
                "sex": np.where(self.sex[oidx] == 1, "F", "M"), "birth_date": as_dt64(self.birth[oidx]),
                "level": np.array(OTHER_LEVELS)[self.other_level[oidx]],
            }
            self.emit(("other_enrolment", year, term), "other_enrolment", cols, oidx, mask)

    def apply_scenario(self, year: int, term: int) -> None:
        """Switch on the scenario's changes from its first term (no random draws: see scenarios.py)."""
        sc = self.cfg.scenario
        if sc is None or not sc.active(year, term):
            return
        shocks = [c for c in sc.of_kind(EconomicShock) if hits_province(c, self.prov.code)]
        if sc.starts(year, term):
            for c in shocks:
                self.income = income_after_shock(self.income, c.income_factor)
                # the fall is the household's new usual income: it must not fade like a shock's mark
                self.income_usual = income_after_shock(self.income_usual, c.income_factor)
        self._att_shift = float(sum(c.attendance_logit for c in shocks))
        changes = sc.of_kind(ProcessChange)
        self._drop_shift = dropout_logit_by_grade(changes) if changes else None
        self._breaks = sc.of_kind(DataBreak)

    def term(self, year: int, term: int) -> None:
        cal = self.cal
        rng = self.rng
        pc = self.pc
        tc = cal.term(term)
        S, E = day(tc.starts.in_year(year)), day(tc.ends.in_year(year))
        cday = day(cal.census_date(year, term))
        self.census(year, term)
        if self.cfg.scenario is not None:
            self.apply_scenario(year, term)
        idx = np.flatnonzero(self.status == ST_OBEC)
        n = len(idx)
        # engagement moves; poverty pulls its mean
        rho = pc.engagement_rho
        mean = pc.engagement_poverty * self.poverty()[idx] + 0.3 * self.ability[idx]
        self.e[idx] = (mean + rho * (self.e[idx] - mean) + math.sqrt(1 - rho**2) * rng.normal(0, 1, n)).astype(np.float32)
        # shocks
        sp = shock_probs(self, idx, cday)
        arrived = rng.random((n, N_SHOCKS)) < sp
        # arrival days uniform over S .. E - 1 (the floor of a uniform): future_shock_probs relies on it
        sday = (S + rng.random((n, N_SHOCKS)) * (E - S)).astype(np.int32)
        sday = np.where(arrived, sday, NEVER)
        effects = shock_class_effects(pc)
        L = base_logits(self, idx, term, cday)
        if self._drop_shift is not None:
            L[:, C_DROP] += self._drop_shift[self.grade[idx]]
        plan = None
        iv = self.interventions
        if iv is not None and iv.active(year, term):
            plan = iv.plan(self, year, term, idx, cday)
            L_if_not = L.copy()
            L_if_not[:, C_DROP] += plan.shift_if_not
            L[:, C_DROP] += plan.shift
        # the dropout log-odds without the latent engagement and the school's unrecorded climate:
        # the structural part records state (the climate is known only through the school's past)
        u_school = self.school_effect[self.school[idx]]
        structural = L[:, C_DROP] - pc.beta_engagement * self.e[idx] - u_school
        # the ceiling at both rounds of the term
        rounds = []
        for kind in ("early", "mid"):
            rid = f"{year}-T{term}-{kind}"
            a = day(cal.as_of(rid))
            known = sday <= a
            rounds.append((rid, kind, a, ceiling(L, known, future_shock_probs(sp, a, S, E), effects)))
        # the term-end draw with the shocks that really arrived
        probs = softmax(L + arrived.astype(float) @ effects)
        u = rng.random(n)
        outcome = (u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
        outcome = np.minimum(outcome, N_CLASSES - 1)
        if plan is not None:
            # both potential outcomes of every pupil, drawn with the same uniform as the realised one
            L_if_acted = L_if_not.copy()
            L_if_acted[:, C_DROP] += plan.shift_if_acted - plan.shift_if_not
            p_if = [softmax(x + arrived.astype(float) @ effects) for x in (L_if_not, L_if_acted)]
            o_if = [np.minimum((u[:, None] > np.cumsum(q, axis=1)).sum(axis=1), N_CLASSES - 1) for q in p_if]
            self.truth.append("interventions", iv.after_term(
                self, plan, idx, (p_if[0][:, C_DROP], p_if[1][:, C_DROP]), (o_if[0], o_if[1]), outcome, C_DROP))
        # leave dates: about half of the in-term leavers go in the last month of the term
        leaver = outcome != C_STAY
        leave = np.full(n, E, dtype=np.int32)
        early = leaver & np.isin(outcome, [C_DROP, C_TRANSFER, C_NFE, C_EWE, C_ABROAD, C_DEATH]) & (rng.random(n) < 0.45)
        if term == 2:
            early &= ~np.isin(self.grade[idx], [G_K3, G_P6, G_M3, G_M6])
        leave[early] = E - rng.integers(1, 30, int(early.sum()))
        if self.observed is None:
            self.observed = ObservedHistory.empty(self.n)
        if self.school_past is None:
            self.school_past = SchoolHistory()
        school_past = self.school_past
        schools = len(self.geo.school_code)
        self.term_obs = TermObservations(n)
        self.records_of_term(year, term, idx, S, E, cday, arrived, sday, outcome, leave)
        self.calib.term_drop[term - 1, 0] += n
        self.calib.term_drop[term - 1, 1] += int((outcome == C_DROP).sum())
        np.add.at(self.calib.exits, outcome, 1)
        for rid, kind, a, p in rounds:
            y = (outcome == C_DROP).astype(np.int8)
            # after the term's records: what they revealed by the as-of date (simulator/observable.py)
            school_signal = school_past.log_ratio(a, schools, pc.school_effect_sd)[self.school[idx]]
            p_obs = observable_ceiling(p, observable_features(self.term_obs, self.observed, idx, a, structural, N_SHOCKS,
                                                              school_signal))
            self.calib.add_round(rid, kind, p, y)
            self.truth.append("rounds", pa.table({
                "round_id": const(rid, n), "round_type": const(kind, n),
                "academic_year": np.full(n, year, np.int16), "term": np.full(n, term, np.int8),
                "as_of": pa.array(np.full(n, a).astype("datetime64[D]")), "person_id": self.pid[idx],
                "grade": cat(GRADES, self.grade[idx]), "school_code": self.school_codes.take(pa.array(self.school[idx])),
                "extremely_poor": self.income[idx] <= EXTREME_POOR,
                "p_dropout": p, "p_observable": p_obs, "dropout": y, "exit_type": cat(CLASSES, outcome),
            }))
        self.observed.close_term(idx, self.term_obs)
        # the term's dropouts become known with its horizon census; expected = the early round's ceilings
        # without the school's climate (rare-event approximation: p·exp(−u))
        horizon = ("dmc_census", year, 2) if term == 1 else ("dmc_census", year + 1, 1)
        school_past.add_term(self.delivered_day(horizon), self.school[idx], outcome == C_DROP,
                                  rounds[0][3] * np.exp(-u_school), schools)
        self.term_obs = None
        for k, name in enumerate(pc.shock_names):
            hit = np.flatnonzero(arrived[:, k])
            if len(hit):
                self._shock_rows.append(pa.table({
                    "person_id": self.pid[idx[hit]], "academic_year": np.full(len(hit), year, np.int16),
                    "term": np.full(len(hit), term, np.int8), "shock": pa.array(np.full(len(hit), name)),
                    "arrived_on": pa.array(sday[hit, k].astype("datetime64[D]"))}))
        # consequences of shocks that persist
        # the marks of earlier shocks fade (on the history stream: the run's own draws do not move),
        # then this term's shocks leave theirs
        self.recover(idx, self.history_rng)
        self.shock_consequences(idx, arrived, rng)
        self.apply_outcomes(year, term, idx, outcome, leave, E)
        self.tzd_quarters(S, day(cal.term(2 if term == 1 else 1).starts.in_year(year if term == 1 else year + 1)))
        if term == 2:
            self.year_end(year, idx, outcome)

    def apply_outcomes(self, year: int, term: int, idx: np.ndarray, outcome: np.ndarray, leave: np.ndarray, E: int) -> None:
        ii = idx[outcome == C_DROP]
        self.status[ii] = ST_OUT
        self.drop_day[ii] = leave[outcome == C_DROP]
        tr = idx[outcome == C_TRANSFER]
        to = getattr(self, "_transfer_to", {})
        self.school[tr] = np.array([to.get(int(i), self.school[i]) for i in tr], dtype=np.int32) if len(tr) else self.school[tr]
        self.set_travel(tr)
        ot = idx[outcome == C_OTHER]
        dest = getattr(self, "_other_to", {})
        for kd in (KIND_LAO, KIND_OPEC, KIND_BPP):
            sel = np.array([dest.get(int(i), (KIND_LAO, -1))[0] == kd for i in ot], dtype=bool) if len(ot) else np.zeros(0, bool)
            sch = np.array([dest.get(int(i), (KIND_LAO, -1))[1] for i in ot[sel]], dtype=np.int32)
            nxt = np.minimum(self.grade[ot[sel]] + (term == 2), G_M6)
            self.move_other(ot[sel], kd, E, level=nxt, school=sch)
        self.move_other(idx[outcome == C_VOC], KIND_OVEC, E)
        self.move_other(idx[outcome == C_NFE], KIND_NFE, E)
        w = idx[outcome == C_EWE]
        self.status[w] = ST_WORK
        self.other_since[w] = E
        self.status[idx[outcome == C_DEATH]] = ST_DEAD
        self.status[idx[outcome == C_ABROAD]] = ST_ABROAD
        self.status[idx[outcome == C_DONE]] = ST_DONE
        self._transfer_to, self._other_to = {}, {}

    def year_end(self, year: int, idx: np.ndarray, outcome: np.ndarray) -> None:
        """Progression or repetition of the pupils who stayed; school change at P6->M1 and M3->M4."""
        rng = self.rng
        pc = self.pc
        stay = idx[(outcome == C_STAY) | (outcome == C_TRANSFER)]
        g = self.grade[stay]
        rep = (g >= G_P1) & (rng.random(len(stay)) < sigmoid(pc.repeat_logit - 0.7 * self.e[stay] - 0.4 * self.ability[stay]
                                                             + pc.repeat_ms_logit * self.ms_fail[stay]))
        rep |= g == G_M6  # an M6 pupil who neither completed nor left repeats
        up = stay[~rep]
        self.repeated[stay[rep]] += 1
        self.grade[up] = np.minimum(self.grade[up] + 1, G_M6)
        moved = up[(self.grade[up] == G_M1) | (self.grade[up] == G_M4)]
        # pupils of extended-opportunity schools stay there for M1-M3
        keep = (self.grade[moved] == G_M1) & (self.geo.school_kind[self.school[moved]] == KIND_EXTENDED)
        self.place(moved[~keep])
        # other systems move up a level; OVEC PVC3, NFE after two years and M6 complete
        oth = np.flatnonzero(self.status == ST_OTHER)
        lv = self.other_level[oth]
        done = (lv == LEVEL_INDEX["PVC3"]) | (lv == LEVEL_INDEX["M6"]) | (
            (self.other_kind[oth] == KIND_NFE) & (self.other_since[oth] < day(self.cal.census_date(year - 1, 2))))
        self.status[oth[done]] = ST_DONE
        adv = oth[~done & (self.other_kind[oth] != KIND_NFE)]
        self.other_level[adv] += 1

    def run(self, progress: Callable[[int], None] | None = None) -> None:
        w = self.cfg.world
        self.init_people()
        if self.cfg.interventions is not None:
            self.interventions = ProvinceInterventions(self.cfg.interventions, w.seed, self.prov.index, self.n,
                                                       len(self.geo.school_code))
        self.enter_first_pupils()
        self.write_registry()
        for y in range(w.first_year, w.first_year + w.years):
            for t in (1, 2):
                self.term(y, t)
            # EWE record on 31 March, after the year-end exits
            self.ewe_rows(day(dt.date(y - BE_OFFSET + 1, 3, 31)))
            if progress:
                progress(1)
        self.census(w.first_year + w.years, 1)  # the label census of the last rounds
        self.write_people()
        self.writer.flush_records()
