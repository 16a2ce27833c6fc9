"""Who the children of a province are: their households, schools and homes, drawn once and then moved.

`Population` holds one numpy array per attribute of a child (income, engagement, grade, school,
status, IDs, ...), indexed by the child's position in the province. It draws the children and
their households at the start (`init_people`) and knows how to place a child in a school near
home, how far the child travels, and how a child moves to another school system. The hazards that
decide who leaves are in `process.py`; turning the children into delivery rows is `records.py`;
the term-by-term driver is `province.py`.

Every draw goes through one random stream per province (`self.rng`), shared by the layers built on
this class: the order of the draws *is* the simulated world, so the same seed gives the same files.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np

from features.calendar import SchoolCalendar
from features.contract import DISABILITY, NATIONALITY, OTHER_LEVELS
from features.ids import GRADES, GRADE_TYPICAL_AGE
from simulator.config import SimulationConfig
from simulator.faults import NameBook
from simulator.schedule import Schedule
from simulator.world import (
    KIND_BPP, KIND_LAO, KIND_NFE, KIND_OPEC, KIND_OVEC, Geography, Province, SchoolPicker, build_geography,
    citizen_ids, gcodes,
)

if TYPE_CHECKING:
    from simulator.process import Calib

EPOCH = dt.date(1970, 1, 1)  # days are int32 counts since the epoch, vectorised
NEVER = np.int32(2**31 - 1)  # a day that never comes (no ID change, not dropped out, ...)

# person status at a census
STATUS = ("not_entered", "obec", "other_system", "work_training", "out_of_school", "dead", "abroad", "completed")
ST_NONE, ST_OBEC, ST_OTHER, ST_WORK, ST_OUT, ST_DEAD, ST_ABROAD, ST_DONE = range(8)
G = {g: i for i, g in enumerate(GRADES)}
G_K3, G_P1, G_P6, G_M1, G_M3, G_M4, G_M6 = G["K3"], G["P1"], G["P6"], G["M1"], G["M3"], G["M4"], G["M6"]
LEVEL_INDEX = {lv: i for i, lv in enumerate(OTHER_LEVELS)}
EXTREME_POOR = 3000.0

# Typical completed age on 10 June per grade index (K1 3 ... P1 6 ... M6 17): one definition
# shared with the over-age feature, so the process and the data speak of the same over-age.
TYPICAL_AGE = np.array([GRADE_TYPICAL_AGE[g] for g in GRADES])


def day(d: dt.date) -> int:
    return (d - EPOCH).days


def to_date(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


def as_dt64(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def school_effects(geo: Geography, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Each school's climate, its random effect on the dropout logit (config.school_effect_sd).

    Drawn from its own stream, so the children's draws do not move. Centred within each school kind
    of the province, then shifted by -sd^2/2 (the odds of a lognormal effect average exp(sd^2/2)):
    a province has only a few secondary schools, and uncentred effects would move its M3 -> M4
    loss, and with it the calibration figures, by whole percentage points from seed to seed. The
    spread between schools, which is what a model can learn, is untouched.
    """
    u = rng.normal(0.0, sd, len(geo.school_code)) if sd > 0 else np.zeros(len(geo.school_code))
    for kind in np.unique(geo.school_kind):
        same = geo.school_kind == kind
        if same.sum() > 1:
            u[same] -= u[same].mean()
    return u - sd * sd / 2


class Population:
    """The children of one province: drawn at the start, then placed, moved and aged by the driver."""

    def __init__(self, config: SimulationConfig, prov: Province, schedule: Schedule, names: NameBook,
                 calib: Calib) -> None:
        self.cfg = config
        self.pc = config.process
        self.cal: SchoolCalendar = config.calendar
        self.prov = prov
        self.schedule = schedule
        self.names = names
        self.calib = calib
        seed = config.world.seed
        self.rng = np.random.default_rng([seed, prov.index, 1])  # the world and its events
        self.geo: Geography = build_geography(prov, np.random.default_rng([seed, prov.index, 0]),
                                              config.world.students_per_school)
        self.picker = SchoolPicker(self.geo, self.rng)
        self.school_effect = school_effects(self.geo, config.process.school_effect_sd,
                                            np.random.default_rng([seed, prov.index, 4]))
        self.end_day = day(schedule.end_date)

    def init_people(self) -> None:
        """Draw every child of the run (first-census pupils and later entrants) and their households."""
        w = self.cfg.world
        rng = self.rng
        n0 = self.prov.students
        years = w.years
        weights = np.array([.050, .055, .058, .076, .075, .075, .075, .075, .075, .074, .072, .070, .052, .049, .047])
        g0 = rng.choice(15, size=n0, p=weights / weights.sum()).astype(np.int8)
        entry_year = np.full(n0, w.first_year, dtype=np.int32)
        grades = [g0]
        eys = [entry_year]
        for k in range(1, years + 1):
            for gname, share in w.entry_shares.items():
                m = int(round(share * n0))
                grades.append(np.full(m, G[gname], np.int8))
                eys.append(np.full(m, w.first_year + k, np.int32))
        # Candidates: history_pool per pupil; the history keeps as many as there are pupils of each
        # entry grade and year, from the candidates who stayed in school (`keep_who_stayed`).
        before = set(self.__dict__)
        pool = self.pc.history_pool
        self.entry_grade = np.repeat(np.concatenate(grades), pool)
        self.entry_year = np.repeat(np.concatenate(eys), pool)
        n = len(self.entry_grade)
        self.n = n
        self.pid = self.prov.index * 10_000_000 + np.arange(n, dtype=np.int64)
        self.sex = (rng.random(n) < 0.49).astype(np.int8)  # 1 = F
        # over-age: repeaters and late starters (more among the poor: drawn after income below)
        self.income = (self.prov.median_income * np.exp(rng.normal(0, 0.85, n))).astype(np.float32)
        pov = np.clip(np.log(EXTREME_POOR / self.income), -2.5, 3.0)
        over_p1 = np.clip(0.05 + 0.03 * pov, 0.01, 0.2)
        over = (rng.random(n) < over_p1).astype(np.int8) + (rng.random(n) < 0.012).astype(np.int8)
        over[self.entry_grade < G_P1] = 0
        self.repeated = ((over > 0) & (rng.random(n) < 0.7)).astype(np.int8)
        age = np.array([GRADE_TYPICAL_AGE[g] for g in GRADES])[self.entry_grade] + over
        census = np.array([day(self.cal.census_date(int(y), 1)) for y in range(w.first_year, w.first_year + years + 1)])
        cd = census[self.entry_year - w.first_year]
        # born between (census - age - 1 year, census - age years]
        self.birth = (cd - np.round(365.25 * age) - rng.integers(0, 365, n)).astype(np.int32)
        # nationality and IDs
        non_thai = rng.random(n) < self.prov.non_thai_share
        nat_choices = {"north": ["MM"], "west": ["MM"], "central": ["MM", "KH", "LA"], "east": ["KH", "MM"],
                       "northeast": ["LA", "KH"], "south": ["MM"], "bangkok": ["MM", "KH", "LA"]}[self.prov.region]
        nat = np.full(n, NATIONALITY.index("TH"), dtype=np.int8)
        nat[non_thai] = np.array([NATIONALITY.index(c) for c in nat_choices])[rng.integers(0, len(nat_choices), non_thai.sum())]
        unknown = non_thai & (rng.random(n) < 0.05)
        nat[unknown] = NATIONALITY.index("UNKNOWN")
        self.nat = nat
        self.non_thai = non_thai
        gcode = non_thai & (rng.random(n) < 0.7)
        self.gcode = gcode
        thai_ids = citizen_ids(rng, int((~non_thai).sum()), 1, self.prov.code)
        start, end = day(self.schedule.start_date), self.end_day
        span_years = (end - start) / 365.25
        changes = gcode & (rng.random(n) < 1 - (1 - self.pc.gcode_new_id_per_year) ** span_years)
        n_nonthai_ids = int((non_thai & ~gcode).sum() + changes.sum())
        first_digits = rng.choice(np.array([0, 6, 7], dtype=np.uint8), n_nonthai_ids)
        nt_ids = citizen_ids(rng, n_nonthai_ids, first_digits, self.prov.code)
        self.id0 = np.empty(n, dtype="S13")
        self.id0[~non_thai] = thai_ids
        self.id0[gcode] = gcodes(rng, int(gcode.sum()), self.prov.code)
        k = int((non_thai & ~gcode).sum())
        self.id0[non_thai & ~gcode] = nt_ids[:k]
        self.id1 = np.full(n, b"", dtype="S13")
        self.id1[changes] = nt_ids[k:]
        entry_day = cd
        self.id1_from = np.full(n, NEVER, dtype=np.int32)
        lo = np.maximum(entry_day[changes], start)
        self.id1_from[changes] = (lo + rng.random(int(changes.sum())) * np.maximum(end - lo, 1)).astype(np.int32)
        # disability, health, household
        dis = rng.random(n) < 0.018
        self.disab = np.zeros(n, dtype=np.int8)
        self.disab[dis] = rng.choice(np.arange(1, len(DISABILITY)), int(dis.sum()),
                                     p=np.array([.08, .1, .22, .12, .25, .05, .05, .08, .05]))
        self.chronic = rng.random(n) < 0.03
        self.bedridden = rng.random(n) < np.clip(0.015 + 0.01 * pov, 0.005, 0.06)
        self.welfare_card = rng.random(n) < np.clip(sigmoid(1.2 * pov + 0.5), 0.05, 0.95)
        self.first = np.where(self.sex == 1, rng.choice(self.names.female, n), rng.choice(self.names.male, n)).astype(np.int32)
        self.last = rng.choice(self.names.surname, n).astype(np.int32)
        n_t = len(self.geo.tambon_code)
        self.tambon = rng.integers(0, n_t, n).astype(np.int32)
        remote_home = self.geo.tambon_remote[self.tambon]
        # poorer in remote tambon
        self.income *= np.where(remote_home, 0.75, 1.1).astype(np.float32)
        self.income = np.maximum(np.round(self.income / 10) * 10, 200).astype(np.float32)
        pov = self.poverty()
        dim_base = np.array([-1.6, -1.8, -1.7, -1.0, -1.9, -3.8, -2.0, -3.2])
        self.dims = rng.random((n, 8)) < sigmoid(dim_base[None, :] + 0.9 * pov[:, None] + 0.6 * remote_home[:, None])
        self.dims[:, 0] |= self.bedridden
        care_p = np.stack([0.55 - 0.08 * np.clip(pov, 0, 2), np.full(n, 0.15), np.full(n, 0.04),
                           0.17 + 0.06 * np.clip(pov, 0, 2), np.full(n, 0.06), np.full(n, 0.03)], axis=1)
        care_p /= care_p.sum(axis=1, keepdims=True)
        self.caretaker = (rng.random(n)[:, None] > np.cumsum(care_p, axis=1)).sum(axis=1).astype(np.int8)
        self.hh_size = np.clip(rng.poisson(3.2 + 0.5 * np.clip(pov, 0, 2)), 1, 12).astype(np.int8) + 1
        self.ability = rng.normal(0, 1, n).astype(np.float32)
        self.e = (self.pc.engagement_poverty * pov + 0.3 * self.ability + np.sqrt(1 - 0.09) * rng.normal(0, 1, n)).astype(np.float32)
        self.travel_noise = rng.gamma(2.0, 0.5, n).astype(np.float32)
        # dynamic state
        self.status = np.zeros(n, dtype=np.int8)
        self.grade = self.entry_grade.copy()
        self.school = np.full(n, -1, dtype=np.int32)
        self.preg = np.zeros(n, dtype=bool)
        self.other_kind = np.full(n, -1, dtype=np.int8)
        self.other_school = np.full(n, -1, dtype=np.int32)
        self.other_level = np.full(n, -1, dtype=np.int16)
        self.other_since = np.full(n, NEVER, dtype=np.int32)
        self.drop_day = np.full(n, NEVER, dtype=np.int32)
        self.tzd_stage = np.full(n, -1, dtype=np.int8)
        self.tzd_case = np.full(n, -1, dtype=np.int32)
        self.return_day = np.full(n, NEVER, dtype=np.int32)
        self.return_to = np.zeros(n, dtype=np.int8)  # status to take at the return census
        self.entered_on = np.full(n, NEVER, dtype=np.int32)
        self.travel = np.zeros(n, dtype=np.int16)
        self.mode = np.zeros(n, dtype=np.int8)
        # last term's attendance rate (1 before any term: no CCT condition broken yet) and whether
        # the last final marks held a มส; set by the records of a term, read by the next hazard
        self.att_last = np.ones(n, dtype=np.float32)
        self.ms_fail = np.zeros(n, dtype=bool)
        # the household's usual income and carer, to which a shock's consequences return (`recover`)
        self.income_usual = self.income.copy()
        self.caretaker_usual = self.caretaker.copy()
        # the stream of the pre-census history and of recovery (its own: the world's draws do not move)
        self.history_rng = np.random.default_rng([self.cfg.world.seed, self.prov.index, 5])
        left = self.draw_history(self.history_rng, cd)
        self.keep_who_stayed(left, pool, [k for k in self.__dict__ if k not in before])
        self.calib.gcode_changes += int((self.id1_from < end).sum())

    def shock_consequences(self, idx: np.ndarray, arrived: np.ndarray, rng: np.random.Generator) -> None:
        """What the term's shocks leave behind (arrived: n x shocks): engagement falls, a migrating
        parent leaves the child with grandparents (or one parent), remittances raise income 10%, debt
        cuts it 35%, a pregnancy is remembered. Income and carer return to usual (`recover`)."""
        pc = self.pc
        self.e[idx[arrived.any(axis=1)]] -= pc.shock_engagement_drop
        mig = idx[arrived[:, 0] & (self.caretaker[idx] <= 2)]
        self.caretaker[mig] = np.where(rng.random(len(mig)) < 0.7, 3, 1).astype(np.int8)
        self.income[mig] *= 1.1
        debt = idx[arrived[:, 2]]
        self.income[debt] = np.maximum(200, np.round(self.income[debt] * 0.65 / 10) * 10)
        self.preg[idx[arrived[:, 3]]] = True

    def recover(self, idx: np.ndarray, rng: np.random.Generator) -> None:
        """A term closer to the household's usual state: the income gap (log scale) shrinks by
        income_recovery_per_term, a migrated parent comes home with caretaker_return_per_term.

        Without it a shock's mark never fades, so every term adds to poverty and non-parent carers
        and the hazard of the same grade rises year after year (issue 11: the unchanged world's
        term-2 rate doubled over four years); with it the marks reach a level the first census
        already holds (`draw_history`), and a world without a declared change is stationary.
        """
        pc = self.pc
        usual = self.income_usual[idx]
        gap = np.log(self.income[idx] / usual) * (1.0 - pc.income_recovery_per_term)
        self.income[idx] = np.maximum(200, np.round(usual * np.exp(gap) / 10) * 10).astype(np.float32)
        away = idx[(self.caretaker[idx] != self.caretaker_usual[idx]) & (rng.random(len(idx)) < pc.caretaker_return_per_term)]
        self.caretaker[away] = self.caretaker_usual[away]

    def draw_history(self, rng: np.random.Generator, entry_census: np.ndarray) -> np.ndarray:
        """The terms before a child's first census, so the first census holds what the process leaves.

        A child drawn fresh at the first census has no past shocks and no repetition, while the same
        grade a year later has both: without a history the dropout rate of every grade climbs year
        by year in a world nobody changed (issue 11). Here every candidate child (first-census pupil
        or later entrant) lives `history_terms` terms of engagement moves, shocks, their
        consequences and recovery before entering, and at each year end from P1 up to its entry
        grade may repeat with the process's odds. Returns who would have left school on the way
        (`keep_who_stayed` keeps the others). Its own random stream, so the run's draws do not move.
        """
        return self._live_history(np.arange(self.n), rng, entry_census)

    def keep_who_stayed(self, left: np.ndarray, pool: int, names: list[str]) -> None:
        """Keep, of each entry grade and year's candidates, as many as it has pupils, stayers first.

        The pupils of a census are the children who did not leave before it, so an upper grade holds
        fewer poor, over-age or once-pregnant children than its entrants did; drawing every grade from
        the same distribution put the first year's upper-secondary rate a fifth above the later years'.
        Candidates are in random order, so the first stayers of a group are a random sample of its
        stayers; a group with too few stayers is filled with its first leavers. `names`: the per-child
        arrays init_people made, all cut to the kept children.
        """
        group = (self.entry_year - self.cfg.world.first_year).astype(np.int64) * len(GRADES) + self.entry_grade
        order = np.lexsort((np.arange(self.n), left, group))
        sizes = np.bincount(group, minlength=int(group.max()) + 1)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rank = np.arange(self.n) - starts[group[order]]
        keep = np.sort(order[rank < sizes[group[order]] // pool])
        for name in names:
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.shape[:1] == (self.n,):
                setattr(self, name, value[keep])
        self.n = len(keep)
        self.pid = self.prov.index * 10_000_000 + np.arange(self.n, dtype=np.int64)

    def _live_history(self, ii: np.ndarray, rng: np.random.Generator, entry_census: np.ndarray) -> np.ndarray:
        """One draw of the history of children `ii` (see `draw_history`); True where the child left.

        The dropout odds of a history term are the additive part of the process's (process.base_logits):
        without what needs a school (travel, remote or small school, school climate) and without the
        interactions (so a world with them switched off keeps the same children:
        tests/data/test_simulated_interactions.py); enough to say which histories end outside school.
        The มส behind repetition is read from an approximate term-2 attendance (the records'
        attendance logit without travel and monthly noise; half the term after a shock), since no
        attendance is recorded before entry.
        """
        from simulator.process import shock_probs  # process.py imports this module: imported at call time

        pc = self.pc
        n = len(ii)
        rho = pc.engagement_rho
        term_days = 182
        g_entry = self.entry_grade[ii].astype(np.int64)
        alpha = {1: np.array([pc.grade_logit_t1[x] for x in GRADES]), 2: np.array([pc.grade_logit_t2[x] for x in GRADES])}
        hazard_shocks = np.array(pc.shock_hazard)
        subjects_ms = 1 - (1 - 0.004) ** 9  # a มส with full attendance (records: 0.4% a subject, 8-12 subjects)
        left = np.zeros(n, dtype=bool)
        for k in range(pc.history_terms, 0, -1):
            when = entry_census - k * term_days
            term = 2 if k % 2 == 1 else 1  # the entry census opens a term 1, so the term before is a term 2
            grade = g_entry - (k + 1) // 2  # promoted every year end (a repetition shows as over-age)
            in_school = grade >= 0
            gi = np.clip(grade, 0, len(GRADES) - 1)
            pov = np.clip(np.log(EXTREME_POOR / self.income[ii]), -2.5, 3.0)
            mean = pc.engagement_poverty * pov + 0.3 * self.ability[ii]
            self.e[ii] = (mean + rho * (self.e[ii] - mean) + np.sqrt(1 - rho**2) * rng.normal(0, 1, n)).astype(np.float32)
            e = self.e[ii]
            arrived = rng.random((n, len(pc.shock_prob))) < shock_probs(self, ii, when)
            overage = np.clip(self.age_years(ii, when) - TYPICAL_AGE[gi], 0, 6)
            drop = (alpha[term][gi] + pc.beta_poverty * pov + pc.beta_cct_dims * self.dims[ii].sum(axis=1)
                    + pc.beta_caretaker_not_parent * (self.caretaker[ii] >= 3) + self.prov.effect
                    + pc.beta_non_thai * self.non_thai[ii] + pc.beta_disability * (self.disab[ii] > 0)
                    + pc.beta_chronic_illness * self.chronic[ii] + pc.beta_overage_per_year * overage
                    + pc.beta_repeated * (self.repeated[ii] > 0) + pc.beta_engagement * e
                    + pc.beta_past_pregnancy * self.preg[ii] + arrived @ hazard_shocks)
            left |= in_school & (rng.random(n) < sigmoid(drop))
            if term == 2:  # the year end: repetition, from P1 on
                lg = 3.3 + 0.85 * e - 0.35 * (self.disab[ii] > 0) - 0.12 * pov + rng.normal(0, 0.25, n)
                f = np.where(arrived.any(axis=1), 0.5, 0.0)
                att = (1 - f) * sigmoid(lg) + f * sigmoid(lg + pc.shock_attendance_logit)
                ms = (att < 0.8) | (rng.random(n) < subjects_ms)
                rep = (grade >= G_P1) & (rng.random(n) < sigmoid(
                    pc.repeat_logit - 0.7 * e - 0.4 * self.ability[ii] + pc.repeat_ms_logit * ms))
                self.repeated[ii[rep]] += 1
                self.birth[ii[rep]] -= 365  # a repeated year: a year older for the grade
                if k == 1:  # the term before entry: its attendance is the CCT condition of the first term
                    self.att_last[ii] = att.astype(np.float32)
            self.recover(ii, rng)
            self.shock_consequences(ii, arrived, rng)
        return left

    def poverty(self) -> np.ndarray:
        """log(3000 / income): 0 at the extremely-poor line, positive below it."""
        return np.clip(np.log(EXTREME_POOR / self.income), -2.5, 3.0)

    def place(self, idx: np.ndarray) -> None:
        """Choose a school for each child from the grade and home tambon."""
        g = self.grade[idx]
        tam = self.tambon[idx]
        amp = self.geo.tambon_amphoe[tam]
        school = self.picker.pick("primary", tam)
        lower = (g >= G_M1) & (g <= G_M3)
        use_ext = lower & self.picker.has("extended", tam) & (self.rng.random(len(idx)) < 0.5)
        ext = self.picker.pick("extended", tam)
        sec = self.picker.pick("secondary", amp)
        school = np.where(g >= G_M1, sec, school)
        school = np.where(use_ext, ext, school)
        self.school[idx] = school
        self.set_travel(idx)

    def set_travel(self, idx: np.ndarray) -> None:
        sch = self.school[idx]
        dist = self.geo.school_distance[sch]
        same = self.geo.school_tambon[sch] == self.tambon[idx]
        km = np.where(same, 0.6 + self.travel_noise[idx] * 1.2, 2.0 + 0.35 * dist * self.travel_noise[idx])
        km = np.where(self.geo.school_remote[sch], km * 1.6, km)
        mode = np.select([km < 1.5, km < 4, km < 15], [0, 1, 2], 3)
        mode = np.where((mode == 3) & (self.rng.random(len(idx)) < 0.3), 4, mode)
        speed = np.array([4.5, 12, 25, 22, 20, 10, 15])[mode]
        mins = np.clip(np.round(5 + 60 * km / speed), 3, 240)
        self.travel[idx] = mins.astype(np.int16)
        self.mode[idx] = mode.astype(np.int8)

    def age_years(self, idx: np.ndarray, when: int) -> np.ndarray:
        return np.floor((when - self.birth[idx]) / 365.25).astype(np.int16)

    def pick_same_level(self, ii: np.ndarray) -> np.ndarray:
        g = self.grade[ii]
        tam = self.rng.integers(0, len(self.geo.tambon_code), len(ii))  # a family moving within the province
        amp = self.geo.tambon_amphoe[tam]
        school = np.where(g >= G_M1, self.picker.pick("secondary", amp), self.picker.pick("primary", tam))
        self.tambon[ii] = tam
        return school

    def move_other(self, ii: np.ndarray, kind: int, when: int, level: np.ndarray | None = None,
                   school: np.ndarray | None = None) -> None:
        if len(ii) == 0:
            return
        grp = {KIND_OVEC: "ovec", KIND_NFE: "nfe", KIND_LAO: "lao", KIND_OPEC: "opec", KIND_BPP: "bpp"}[kind]
        self.status[ii] = ST_OTHER
        self.other_kind[ii] = kind
        self.other_school[ii] = school if school is not None else self.picker.pick(grp, np.zeros(len(ii), dtype=np.int64))
        if level is None:
            g = self.grade[ii]
            if kind == KIND_OVEC:
                level = np.full(len(ii), LEVEL_INDEX["PVC1"])
            elif kind == KIND_NFE:
                level = np.where(g <= G_P6, LEVEL_INDEX["NFE_PRIMARY"],
                                 np.where(g <= G_M3, LEVEL_INDEX["NFE_LOWER_SEC"], LEVEL_INDEX["NFE_UPPER_SEC"]))
            else:
                level = g
        self.other_level[ii] = level
        self.other_since[ii] = when
