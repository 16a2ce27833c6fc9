"""The generating process: one province's children followed term by term, and its ceiling.

All work is vectorised over the children of a province (numpy arrays, no Python loop over
children). A term step is:

  census snapshot (DMC rows for OBEC pupils, other_enrolment rows for other systems, truth status)
  -> latent engagement moves (AR(1)) -> shocks arrive at random dates within the term
  -> the ceiling for the term's two scoring rounds (exact: enumerate the 2^K future-shock sets)
  -> term-end draw of the competing exits (multinomial: stay, dropout, transfer, ...)
  -> records of the term: attendance, interim/final grades, CCT and care screenings, welfare
     links, exits, EWE and TZD case records (each row into its delivery, faults injected)
  -> year end: progression, repetition, school change at P6->M1 and M3->M4, new entrants.

PROCESS.md documents the equations; config.ProcessConfig holds every coefficient.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from features.calendar import SchoolCalendar
from features.contract import (
    SOURCES, CARE_DIMENSIONS, CARETAKERS, DISABILITY, EXIT_TYPES, NATIONALITY, OTHER_LEVELS, THAI_MARK_STATUS,
    TRAVEL_MODES,
)
from features.ids import BE_OFFSET, GRADES, GRADE_TYPICAL_AGE

STUDENT_NO_MODULUS = 99_999_989  # a prime: the mapping below is a bijection of person ids per school


def student_numbers(pid: np.ndarray, school_codes: pa.Array | np.ndarray) -> np.ndarray:
    """The school's own student number (8 digits): unique within a school, unrelated across
    schools, so it identifies a child only together with the school code."""
    school = np.asarray(pa.array(school_codes).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    num = (pid.astype(np.int64) * 7_919 + (school % STUDENT_NO_MODULUS) * 104_729) % STUDENT_NO_MODULUS
    return np.char.zfill(num.astype("U8"), 8).astype(object)


# Typical completed age on 10 June per grade index (K1 3 ... P1 6 ... M6 17): one definition
# shared with the over-age feature, so the process and the data speak of the same over-age.
TYPICAL_AGE = np.array([GRADE_TYPICAL_AGE[g] for g in GRADES])
from simulator.config import SimulationConfig
from simulator.faults import FAULT_BITS, NameBook, inject
from simulator.scenarios import (
    DataBreak, EconomicShock, ProcessChange, apply_breaks, dropout_logit_by_grade, hits_province, income_after_shock,
)
from simulator.schedule import Schedule
from simulator.truth import TruthWriter
from simulator.world import (
    KIND_AFFILIATION, KIND_BPP, KIND_EXTENDED, KIND_LAO, KIND_NFE, KIND_OPEC, KIND_OVEC, KIND_SECONDARY,
    N_SHOCKS, Geography, Province, SchoolPicker, build_geography, citizen_ids, gcodes, size_class,
)
from simulator.writers import DeliveryWriter

EPOCH = dt.date(1970, 1, 1)
NEVER = np.int32(2**31 - 1)

# person status at a census
STATUS = ("not_entered", "obec", "other_system", "work_training", "out_of_school", "dead", "abroad", "completed")
ST_NONE, ST_OBEC, ST_OTHER, ST_WORK, ST_OUT, ST_DEAD, ST_ABROAD, ST_DONE = range(8)
# competing outcomes at a term end
CLASSES = ("stay", "dropout", "transfer", "other_school", "vocational", "non_formal", "work_training",
           "death", "abroad", "completed")
C_STAY, C_DROP, C_TRANSFER, C_OTHER, C_VOC, C_NFE, C_EWE, C_DEATH, C_ABROAD, C_DONE = range(10)
N_CLASSES = len(CLASSES)
G = {g: i for i, g in enumerate(GRADES)}
G_K3, G_P1, G_P6, G_M1, G_M3, G_M4, G_M6 = G["K3"], G["P1"], G["P6"], G["M1"], G["M3"], G["M4"], G["M6"]
CARE_STATUS = np.array(THAI_MARK_STATUS)
LEVEL_INDEX = {lv: i for i, lv in enumerate(OTHER_LEVELS)}
EXTREME_POOR = 3000.0
# system of a child at a census (truth): none, OBEC, then KIND_OVEC.. KIND_BPP, then EWE
TRUTH_SYSTEMS = ("", "OBEC", "", "", "OVEC", "NFE", "LAO", "OPEC", "BPP", "EWE")


def day(d: dt.date) -> int:
    return (d - EPOCH).days


def to_date(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


def as_dt64(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]")


def cat(values: tuple[str, ...] | list[str], codes: np.ndarray) -> pa.Array:
    """Strings from a small vocabulary by index (much faster than numpy unicode -> Arrow)."""
    return pa.array(list(values), type=pa.string()).take(pa.array(np.asarray(codes, dtype=np.int32)))


def const(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


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


class Province_Sim:  # noqa: N801 (a verb-ish name reads better in the driver)
    """Simulates one province for the whole run and streams its rows and truth."""

    def __init__(self, config: SimulationConfig, prov: Province, schedule: Schedule, writer: DeliveryWriter,
                 truth: TruthWriter, names: NameBook, calib: Calib) -> None:
        self.cfg = config
        self.pc = config.process
        self.cal: SchoolCalendar = config.calendar
        self.prov = prov
        self.schedule = schedule
        self.writer = writer
        self.truth = truth
        self.names = names
        self.calib = calib
        seed = config.world.seed
        self.rng = np.random.default_rng([seed, prov.index, 1])  # the world and its events
        self.frng = np.random.default_rng([seed, prov.index, 2])  # faults only
        self.geo: Geography = build_geography(prov, np.random.default_rng([seed, prov.index, 0]),
                                              config.world.students_per_school)
        self.picker = SchoolPicker(self.geo, self.rng)
        self.school_codes = pa.array(self.geo.school_code, type=pa.string())
        self.tambon_codes = pa.array(self.geo.tambon_code, type=pa.string())
        self.end_day = day(schedule.end_date)
        self._shock_rows: list[pa.Table] = []
        self._prev_june: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # Scenario state (simulator/scenarios.py); neutral unless a scenario is active.
        self._att_shift = 0.0
        self._drop_shift: np.ndarray | None = None
        self._breaks: list = []

    # ---------------------------------------------------------------------------------------------
    # people
    def init_people(self) -> None:
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
        self.entry_grade = np.concatenate(grades)
        self.entry_year = np.concatenate(eys)
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
        self.calib.gcode_changes += int((self.id1_from < end).sum())
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
        # first census: initial pupils enter
        first = self.entry_year == w.first_year
        self.enter(np.flatnonzero(first), day(self.cal.census_date(w.first_year, 1)))
        counts = np.bincount(self.school[first], minlength=len(self.geo.school_code))
        self.geo.school_small[:] = (counts <= 120) & (self.geo.school_kind <= KIND_SECONDARY)
        self.school_students = counts
        p = self.poverty()[first]
        self.calib.province_poor[self.prov.name_en] = (int(first.sum()), int((p >= 0).sum()))

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

    def enter(self, idx: np.ndarray, census_day: int) -> None:
        self.status[idx] = ST_OBEC
        self.entered_on[idx] = census_day
        self.place(idx)
        self.emit_static_links(idx, census_day)

    # ---------------------------------------------------------------------------------------------
    # helpers for rows
    def ids_at(self, idx: np.ndarray, when: np.ndarray | int, lag: int) -> tuple[np.ndarray, np.ndarray]:
        """IDs the source used at `when`: the new ID once it is `lag` days old; bit stale_id otherwise."""
        when = np.broadcast_to(np.asarray(when), idx.shape)
        frm = self.id1_from[idx]
        new = frm.astype(np.int64) + lag <= when
        ids = np.where(new, self.id1[idx], self.id0[idx])
        stale = (frm <= when) & ~new
        mask = np.where(stale, FAULT_BITS["stale_id"], 0).astype(np.int32)
        return ids, mask

    def emit(self, key: tuple | None, source: str, cols: dict, idx: np.ndarray, mask: np.ndarray | None = None) -> None:
        if key is None or len(idx) == 0:
            return
        delivery = self.schedule.get(key)
        if delivery is None:
            return
        if mask is None:
            mask = np.zeros(len(idx), dtype=np.int32)
        if "student_no" in SOURCES[source].column_names and "student_no" not in cols:
            cols = {**cols, "student_no": student_numbers(self.pid[idx], cols["school_code"])}
        table, pid, m = inject(source, cols, mask, self.pid[idx], self.frng, self.cfg.faults, self.names)
        if self._breaks:
            table = apply_breaks(table, source, self._breaks)
        self.writer.write(delivery, source, table, pid, m)

    def emit_by_key(self, source: str, keys: list[tuple], key_of_row: np.ndarray, cols: dict, idx: np.ndarray,
                    mask: np.ndarray | None = None) -> None:
        """Split a batch over several deliveries (e.g. quarterly sources)."""
        for ki in np.unique(key_of_row):
            sel = key_of_row == ki
            sub = {c: (v.filter(pa.array(sel)) if isinstance(v, pa.Array) else np.asarray(v)[sel]) for c, v in cols.items()}
            self.emit(keys[int(ki)], source, sub, idx[sel], None if mask is None else mask[sel])

    def quarter_keys(self, source: str, days: np.ndarray) -> tuple[list[tuple], np.ndarray]:
        d64 = as_dt64(days)
        years = d64.astype("datetime64[Y]").astype(int) + 1970
        months = d64.astype("datetime64[M]").astype(int) % 12 + 1
        q = (months - 1) // 3 + 1
        code = years * 10 + q
        uniq, inv = np.unique(code, return_inverse=True)
        return [(source, int(c // 10), int(c % 10)) for c in uniq], inv

    def age_years(self, idx: np.ndarray, when: int) -> np.ndarray:
        return np.floor((when - self.birth[idx]) / 365.25).astype(np.int16)

    # ---------------------------------------------------------------------------------------------
    # registry
    def write_registry(self) -> None:
        geo = self.geo
        reg = self.schedule.get(("registry",))
        region = self.prov.region
        areas = pa.table({
            "tambon_code": geo.tambon_code, "tambon_name": geo.tambon_name, "amphoe_code": geo.amphoe_code,
            "amphoe_name": geo.amphoe_name, "province_code": np.full(len(geo.tambon_code), self.prov.code),
            "province_name": np.full(len(geo.tambon_code), self.prov.name_th), "region": np.full(len(geo.tambon_code), region),
        })
        obec = geo.school_kind <= KIND_SECONDARY
        rng = np.random.default_rng([self.cfg.world.seed, self.prov.index, 3])
        students = np.where(obec, self.school_students, rng.integers(60, 1500, len(obec)))
        schools = pa.table({
            "school_code": geo.school_code, "school_name": geo.school_name,
            "affiliation": np.array(KIND_AFFILIATION)[geo.school_kind], "tambon_code": geo.tambon_code[geo.school_tambon],
            "students": students.astype(np.int64), "size_class": size_class(students),
            "remote": geo.school_remote.astype(np.int8), "distance_km": geo.school_distance,
        })
        self.writer.write(reg, "areas", areas, None, None)
        self.writer.write(reg, "schools", schools, None, None)

    # ---------------------------------------------------------------------------------------------
    # census
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

    def emit_census_rows(self, idx: np.ndarray, year: int, term: int, cday: int) -> None:
        n = len(idx)
        if n == 0:
            return
        ids, mask = self.ids_at(idx, cday, 0)
        age = self.age_years(idx, cday)
        female = self.sex[idx] == 1
        prefix = np.where(age < 15, np.where(female, "เด็กหญิง", "เด็กชาย"), np.where(female, "นางสาว", "นาย")).astype(object)
        prefix[self.rng.random(n) < 0.01] = None
        key = self.school[idx].astype(np.int64) * 16 + self.grade[idx]
        counts = np.bincount(key, minlength=int(key.max()) + 1)[key]
        rooms = np.maximum(1, np.ceil(counts / 38)).astype(np.int64)
        # a child's room is stable within a year: hash of person and year
        room = 1 + (self.pid[idx] * 2654435761 + year) % rooms
        cols = {
            "census_date": np.full(n, cday).astype("datetime64[D]"), "academic_year": np.full(n, year, np.int32),
            "term": np.full(n, term, np.int8), "school_code": self.school_codes.take(pa.array(self.school[idx])),
            "student_id": ids, "prefix": pa.array(prefix, type=pa.string()), "first_name": self.first[idx],
            "last_name": self.last[idx], "sex": cat(("M", "F"), female), "birth_date": as_dt64(self.birth[idx]),
            "grade": cat(GRADES, self.grade[idx]), "room": np.minimum(room, 30),
            "nationality": cat(NATIONALITY, self.nat[idx]), "disability": cat(DISABILITY, self.disab[idx]),
            "tambon_code": self.tambon_codes.take(pa.array(self.tambon[idx])),
        }
        self.emit(("dmc_census", year, term), "dmc_census", cols, idx, mask)

    # ---------------------------------------------------------------------------------------------
    # the hazard
    def shock_probs(self, idx: np.ndarray, cday: int) -> np.ndarray:
        pc = self.pc
        poor = self.income[idx] <= EXTREME_POOR
        base = np.array(pc.shock_prob)[None, :] * np.where(poor[:, None], np.array(pc.shock_poverty_mult)[None, :], 1.0)
        age = self.age_years(idx, cday)
        preg = np.where(age >= 15, pc.pregnancy_prob_15_up, np.where(age >= 13, pc.pregnancy_prob_13_14, 0.0))
        preg = np.where((self.sex[idx] == 1) & ~self.preg[idx], preg, 0.0)
        base[:, 3] = preg * np.where(poor, pc.shock_poverty_mult[3], 1.0)
        return np.clip(base, 0, 0.9)

    def base_logits(self, idx: np.ndarray, term: int, cday: int) -> np.ndarray:
        """Logits of every competing outcome before this term's shocks (n x classes; stay = 0)."""
        pc = self.pc
        n = len(idx)
        g = self.grade[idx]
        gl = np.array([(pc.grade_logit_t1 if term == 1 else pc.grade_logit_t2)[x] for x in GRADES])
        pov = self.poverty()[idx]
        age = self.age_years(idx, cday)
        overage = np.clip(age - TYPICAL_AGE[g], 0, 6)
        sch = self.school[idx]
        care_np = self.caretaker[idx] >= 3
        drop = (gl[g] + pc.beta_poverty * pov + pc.beta_cct_dims * self.dims[idx].sum(axis=1)
                + pc.beta_caretaker_not_parent * care_np + pc.beta_travel_per_10min * self.travel[idx] / 10.0
                + pc.beta_remote_school * self.geo.school_remote[sch] + pc.beta_small_school * self.geo.school_small[sch]
                + self.prov.effect + pc.beta_non_thai * self.non_thai[idx] + pc.beta_disability * (self.disab[idx] > 0)
                + pc.beta_chronic_illness * self.chronic[idx] + pc.beta_overage_per_year * overage
                + pc.beta_repeated * (self.repeated[idx] > 0) + pc.beta_engagement * self.e[idx]
                + pc.beta_past_pregnancy * self.preg[idx])
        L = np.full((n, N_CLASSES), -np.inf)
        L[:, C_STAY] = 0.0
        L[:, C_DROP] = drop
        L[:, C_TRANSFER] = pc.transfer_logit
        year_end = term == 2
        L[:, C_OTHER] = np.where(year_end & (g == G_K3), pc.other_school_logit_k3, pc.other_school_logit)
        L[:, C_VOC] = np.where(year_end & (g == G_M3), pc.vocational_logit_m3,
                               np.where((g == G_M4) | (g == G_M4 + 1), pc.vocational_logit_upper, -np.inf))
        L[:, C_NFE] = np.where(age >= 13, pc.nfe_logit + pc.nfe_overage_per_year * overage - 0.3 * self.e[idx], -np.inf)
        L[:, C_EWE] = np.where(age >= 15, pc.ewe_logit, -np.inf)
        L[:, C_DEATH] = pc.death_logit
        L[:, C_ABROAD] = np.where(self.non_thai[idx], pc.abroad_logit_non_thai, pc.abroad_logit_thai)
        if year_end:
            m6 = g == G_M6
            L[m6, C_DONE] = 0.0
            L[m6, C_STAY] = -pc.completed_logit_m6
        return L

    def shock_class_effects(self) -> np.ndarray:
        pc = self.pc
        S = np.zeros((N_SHOCKS, N_CLASSES))
        S[:, C_DROP] = pc.shock_hazard
        S[0, C_TRANSFER], S[2, C_TRANSFER] = 0.6, 0.4
        S[0, C_ABROAD] = pc.abroad_parent_migration
        S[3, C_NFE], S[2, C_NFE] = 1.0, 0.3
        S[2, C_EWE] = 0.5
        return S

    @staticmethod
    def softmax(L: np.ndarray) -> np.ndarray:
        m = L.max(axis=1, keepdims=True)
        e = np.exp(L - m)
        return e / e.sum(axis=1, keepdims=True)

    def ceiling(self, L: np.ndarray, known: np.ndarray, q_future: np.ndarray) -> np.ndarray:
        """P(dropout at term end | state, shocks known by the as-of date), exact over the 2^K futures.

        With exp(L) computed once, each future-shock set c only rescales the classes' weights:
        P(dropout | c) = exp(L_drop + s_c,drop) / sum_j exp(L_j + s_c,j), a matrix-vector product.
        """
        S = self.shock_class_effects()
        n = len(L)
        m = L.max(axis=1, keepdims=True)
        expL = np.exp(L - m)  # -inf classes give 0
        # W[:, c]: probability of future-shock set c (bit k of c = shock k), built shock by shock
        W = np.ones((n, 1))
        for k in range(N_SHOCKS):
            a1 = np.where(known[:, k], 1.0, q_future[:, k])
            W = np.concatenate([W * (1.0 - a1)[:, None], W * a1[:, None]], axis=1)
        # column order of W: bit of shock 0 is the most significant
        combos = np.array([[(c >> (N_SHOCKS - 1 - k)) & 1 for k in range(N_SHOCKS)] for c in range(2**N_SHOCKS)], float)
        scale = np.exp(combos @ S)  # (combos, classes)
        denom = expL @ scale.T  # (n, combos)
        return expL[:, C_DROP] * (W * scale[None, :, C_DROP] / denom).sum(axis=1)

    def apply_scenario(self, year: int, term: int) -> None:
        """Switch on the scenario's changes from its first term (no random draws: see scenarios.py)."""
        sc = self.cfg.scenario
        if sc is None or not sc.active(year, term):
            return
        shocks = [c for c in sc.of_kind(EconomicShock) if hits_province(c, self.prov.code)]
        if sc.starts(year, term):
            for c in shocks:
                self.income = income_after_shock(self.income, c.income_factor)
        self._att_shift = float(sum(c.attendance_logit for c in shocks))
        changes = sc.of_kind(ProcessChange)
        self._drop_shift = dropout_logit_by_grade(changes) if changes else None
        self._breaks = sc.of_kind(DataBreak)

    # ---------------------------------------------------------------------------------------------
    # one term
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
        sp = self.shock_probs(idx, cday)
        arrived = rng.random((n, N_SHOCKS)) < sp
        sday = (S + rng.random((n, N_SHOCKS)) * (E - S)).astype(np.int32)
        sday = np.where(arrived, sday, NEVER)
        L = self.base_logits(idx, term, cday)
        if self._drop_shift is not None:
            L[:, C_DROP] += self._drop_shift[self.grade[idx]]
        # the ceiling at both rounds of the term
        rounds = []
        for kind in ("early", "mid"):
            rid = f"{year}-T{term}-{kind}"
            a = day(cal.as_of(rid))
            f = (a - S) / (E - S)
            known = sday <= a
            q = sp * (1 - f) / np.maximum(1 - sp * f, 1e-9)
            rounds.append((rid, kind, a, self.ceiling(L, known, q)))
        # the term-end draw with the shocks that really arrived
        probs = self.softmax(L + arrived.astype(float) @ self.shock_class_effects())
        u = rng.random(n)
        outcome = (u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
        outcome = np.minimum(outcome, N_CLASSES - 1)
        self.calib.term_drop[term - 1, 0] += n
        self.calib.term_drop[term - 1, 1] += int((outcome == C_DROP).sum())
        np.add.at(self.calib.exits, outcome, 1)
        for rid, kind, a, p in rounds:
            y = (outcome == C_DROP).astype(np.int8)
            self.calib.add_round(rid, kind, p, y)
            self.truth.append("rounds", pa.table({
                "round_id": const(rid, n), "round_type": const(kind, n),
                "academic_year": np.full(n, year, np.int16), "term": np.full(n, term, np.int8),
                "as_of": pa.array(np.full(n, a).astype("datetime64[D]")), "person_id": self.pid[idx],
                "grade": cat(GRADES, self.grade[idx]), "school_code": self.school_codes.take(pa.array(self.school[idx])),
                "extremely_poor": self.income[idx] <= EXTREME_POOR,
                "p_dropout": p, "dropout": y, "exit_type": cat(CLASSES, outcome),
            }))
        # leave dates: about half of the in-term leavers go in the last month of the term
        leaver = outcome != C_STAY
        leave = np.full(n, E, dtype=np.int32)
        early = leaver & np.isin(outcome, [C_DROP, C_TRANSFER, C_NFE, C_EWE, C_ABROAD, C_DEATH]) & (rng.random(n) < 0.45)
        if term == 2:
            early &= ~np.isin(self.grade[idx], [G_K3, G_P6, G_M3, G_M6])
        leave[early] = E - rng.integers(1, 30, int(early.sum()))
        self.records_of_term(year, term, idx, S, E, cday, arrived, sday, outcome, leave)
        for k, name in enumerate(pc.shock_names):
            hit = np.flatnonzero(arrived[:, k])
            if len(hit):
                self._shock_rows.append(pa.table({
                    "person_id": self.pid[idx[hit]], "academic_year": np.full(len(hit), year, np.int16),
                    "term": np.full(len(hit), term, np.int8), "shock": pa.array(np.full(len(hit), name)),
                    "arrived_on": pa.array(sday[hit, k].astype("datetime64[D]"))}))
        # consequences of shocks that persist
        any_shock = arrived.any(axis=1)
        self.e[idx[any_shock]] -= pc.shock_engagement_drop
        mig = idx[arrived[:, 0] & (self.caretaker[idx] <= 2)]
        self.caretaker[mig] = np.where(rng.random(len(mig)) < 0.7, 3, 1).astype(np.int8)
        self.income[mig] *= 1.1
        debt = idx[arrived[:, 2]]
        self.income[debt] = np.maximum(200, np.round(self.income[debt] * 0.65 / 10) * 10)
        self.preg[idx[arrived[:, 3]]] = True
        self.apply_outcomes(year, term, idx, outcome, leave, E)
        self.tzd_quarters(S, day(cal.term(2 if term == 1 else 1).starts.in_year(year if term == 1 else year + 1)))
        if term == 2:
            self.year_end(year, idx, outcome)

    # ---------------------------------------------------------------------------------------------
    def records_of_term(self, year: int, term: int, idx: np.ndarray, S: int, E: int, cday: int,
                        arrived: np.ndarray, sday: np.ndarray, outcome: np.ndarray, leave: np.ndarray) -> None:
        rng = self.rng
        pc = self.pc
        n = len(idx)
        e = self.e[idx]
        pov = self.poverty()[idx]
        first_shock = sday.min(axis=1)
        dropper = outcome == C_DROP
        base = (3.3 + 0.85 * e - 0.04 * self.travel[idx] / 10.0 - 0.35 * (self.disab[idx] > 0) - 0.12 * pov
                + rng.normal(0, 0.25, n))
        if self._att_shift:
            base = base + self._att_shift
        # monthly attendance
        d64S, d64E = as_dt64(np.array([S]))[0], as_dt64(np.array([E]))[0]
        m = d64S.astype("datetime64[M]")
        present_total = np.zeros(n)
        days_total = np.zeros(n)
        interim_day = day(self.cal.term(term).interim_marks.in_year(year))
        present_to_interim = np.zeros(n)
        days_to_interim = np.zeros(n)
        while m <= d64E.astype("datetime64[M]"):
            ms = max(m.astype("datetime64[D]"), d64S)
            me = min((m + 1).astype("datetime64[D]") - 1, d64E)
            ms_i, me_i = int(ms.astype(int)), int(me.astype(int))
            alive = leave >= ms_i
            if alive.any():
                end_i = np.minimum(leave, me_i)
                days = np.busday_count(as_dt64(np.full(n, ms_i)), as_dt64(end_i + 1))
                days = np.where(alive, np.maximum(days - (days > 15), 0), 0)  # about one holiday in a full month
                # share of this month's days after the first shock arrived
                frac = np.clip((end_i - np.maximum(first_shock, ms_i) + 1) / np.maximum(end_i - ms_i + 1, 1), 0, 1)
                frac = np.where(first_shock <= end_i, frac, 0.0)
                last_month = dropper & (leave <= me_i)
                lg = base + rng.normal(0, 0.45, n) - 1.0 * last_month
                p = (1 - frac) * sigmoid(lg) + frac * sigmoid(lg + pc.shock_attendance_logit)
                present = rng.binomial(days, p)
                off = days - present
                leave_days = rng.binomial(off, sigmoid(0.2 + 0.6 * e))
                absent = off - leave_days
                present_total += present
                days_total += days
                if me_i < interim_day:
                    present_to_interim += present
                    days_to_interim += days
                rows = np.flatnonzero(alive & (days > 0))
                ii = idx[rows]
                ids, mask = self.ids_at(ii, me_i, 60)
                ym = str(m)
                cols = {
                    "year_month": pa.repeat(pa.scalar(ym), len(rows)),
                    "school_code": self.school_codes.take(pa.array(self.school[ii])), "student_id": ids,
                    "school_days": days[rows], "days_present": present[rows], "days_leave": leave_days[rows],
                    "days_absent": absent[rows],
                }
                y_, mo = int(ym[:4]), int(ym[5:7])
                self.emit(("attendance", y_, mo), "attendance", cols, ii, mask)
            m = m + 1
        att = present_total / np.maximum(days_total, 1)
        att_i = present_to_interim / np.maximum(days_to_interim, 1)
        # grades (P1 and above): interim and final
        graded = self.grade[idx] >= G_P1
        g = self.grade[idx]
        n_subj = np.where(g >= G_M1, 10 + rng.integers(0, 3, n), 8).astype(np.int64)
        for kind, when, a_rate, sel in (
            ("interim", interim_day, att_i, graded),
            ("final", E + 5, att, graded & (leave >= E)),
        ):
            shocks_before = (sday <= when).sum(axis=1)
            gpa = np.clip(2.55 + 0.5 * self.ability[idx] + 0.3 * e - 0.25 * shocks_before
                          + 1.5 * (a_rate - 0.93) + rng.normal(0, 0.22, n), 0, 4)
            ms = rng.binomial(n_subj, np.where(a_rate < 0.8, 0.5, 0.004))
            zero = np.minimum(rng.binomial(n_subj, sigmoid(-4.0 - 2.2 * (gpa - 2.0))), n_subj - ms)
            r = np.minimum(rng.binomial(n_subj, sigmoid(-4.5 - 0.8 * e)), n_subj - ms - zero)
            mp = rng.binomial(3, sigmoid(-4.2 - 0.8 * e))
            gpa_out = np.where(ms >= n_subj, np.nan, np.round(gpa, 2))
            rows = np.flatnonzero(sel)
            ii = idx[rows]
            ids, mask = self.ids_at(ii, when, 60)
            cols = {
                "academic_year": np.full(len(rows), year), "term": np.full(len(rows), term),
                "school_code": self.school_codes.take(pa.array(self.school[ii])), "student_id": ids,
                "assessment": pa.repeat(pa.scalar(kind), len(rows)),
                "assessed_on": np.full(len(rows), when).astype("datetime64[D]"), "gpa": gpa_out[rows],
                "n_subjects": n_subj[rows], "n_mark_0": zero[rows], "n_mark_r": r[rows], "n_mark_ms": ms[rows],
                "n_mark_mp": mp[rows],
            }
            self.emit(("grades", year, term, kind), "grades", cols, ii, mask)
        # screenings: whole schools sometimes never deliver them (recorded as omissions)
        self.screenings(year, term, idx, cday, arrived, sday, e, pov)
        self.welfare_events(idx, arrived, sday, E)
        self.exit_rows(year, term, idx, outcome, leave, E)
        # EWE record on 30 September falls inside term 1, before its end
        if term == 1:
            self.ewe_rows(day(dt.date(year - BE_OFFSET, 9, 30)))

    def screenings(self, year: int, term: int, idx: np.ndarray, cday: int, arrived: np.ndarray,
                   sday: np.ndarray, e: np.ndarray, pov: np.ndarray) -> None:
        rng, frng = self.rng, self.frng
        pc = self.pc
        n = len(idx)
        n_sch = len(self.geo.school_code)
        inc = self.income[idx]
        p_screen = np.where(inc <= EXTREME_POOR, pc.cct_screen_prob_poor,
                            np.where(inc <= 6000, pc.cct_screen_prob_near, pc.cct_screen_prob_other))
        screened = rng.random(n) < p_screen
        when = cday + rng.integers(0, 31, n)
        missing_school = frng.random(n_sch) < self.cfg.faults.missing_screening
        lost = missing_school[self.school[idx]]
        self._omissions(idx[screened & lost], "cct_screening", when[screened & lost])
        rows = np.flatnonzero(screened & ~lost)
        ii = idx[rows]
        ids, mask = self.ids_at(ii, when[rows], 60)
        reported = np.maximum(0, np.round(inc[rows] * np.exp(rng.normal(0, 0.12, len(rows))) / 10) * 10).astype(np.int64)
        dims = self.dims[ii] ^ (rng.random((len(rows), 8)) < 0.03)
        travel = np.clip(np.round(self.travel[ii] * np.exp(rng.normal(0, 0.15, len(rows)))), 0, 300).astype(np.int64)
        cols = {
            "academic_year": np.full(len(rows), year), "term": np.full(len(rows), term),
            "school_code": self.school_codes.take(pa.array(self.school[ii])), "student_id": ids,
            "first_name": self.first[ii], "last_name": self.last[ii], "screened_on": as_dt64(when[rows]),
            "household_size": self.hh_size[ii].astype(np.int64), "income_per_person": reported,
            **{c: dims[:, k].astype(np.int8) for k, c in enumerate(
                ("hh_dependants", "hh_no_own_house", "hh_poor_housing", "hh_no_farmland", "hh_no_clean_water",
                 "hh_no_electricity", "hh_no_vehicle", "hh_no_appliances"))},
            "caretaker": cat(CARETAKERS, self.caretaker[ii]), "travel_minutes": travel,
            "travel_mode": cat(TRAVEL_MODES, self.mode[ii]),
        }
        self.emit(("cct_screening", year, term), "cct_screening", cols, ii, mask)
        # care screening: every pupil, driven by the latent state and what has happened so far
        when = cday + 5 + rng.integers(0, 31, n)
        missing_school = frng.random(n_sch) < self.cfg.faults.missing_screening
        lost = missing_school[self.school[idx]]
        self._omissions(idx[lost], "care_screening", when[lost])
        happened = sday <= when[:, None]
        age = self.age_years(idx, cday)
        teen = (age >= 13).astype(float)
        z = np.stack([
            -0.8 * self.ability[idx] - 0.6 * e,  # learning
            -0.8 * e,  # behaviour / emotion
            1.2 * happened[:, 1] + 0.8 * (self.disab[idx] > 0) + 0.8 * self.chronic[idx],  # health
            0.7 * (self.caretaker[idx] >= 3) + 1.2 * happened[:, 0] + 0.5 * happened[:, 2],  # family
            0.3 * np.clip(pov, 0, None),  # safety
            -0.5 * e + 0.4 * teen,  # substances
            0.4 * teen + 2.5 * (happened[:, 3] | self.preg[idx]),  # sexual behaviour
            1.1 * pov + 0.8 * happened[:, 2],  # economic
        ], axis=1) + rng.normal(0, 0.8, (n, 8))
        status = np.where(z < 1.1, 0, np.where(z < 1.9, 1, 2))
        rows = np.flatnonzero(~lost)
        ii = idx[rows]
        ids, mask = self.ids_at(ii, when[rows], 60)
        cols = {
            "academic_year": np.full(len(rows), year), "term": np.full(len(rows), term),
            "school_code": self.school_codes.take(pa.array(self.school[ii])), "student_id": ids,
            "screened_on": as_dt64(when[rows]),
            **{c: cat(THAI_MARK_STATUS, status[rows, k]) for k, c in enumerate(CARE_DIMENSIONS)},
        }
        self.emit(("care_screening", year, term), "care_screening", cols, ii, mask)

    def _omissions(self, idx: np.ndarray, source: str, when: np.ndarray) -> None:
        if len(idx) == 0:
            return
        self.truth.append("omissions", pa.table({
            "person_id": self.pid[idx], "source": pa.array(np.full(len(idx), source)),
            "school_code": self.school_codes.take(pa.array(self.school[idx])),
            "describes": pa.array(as_dt64(when)), "reason": pa.array(np.full(len(idx), "missing_screening")),
        }))

    def emit_static_links(self, idx: np.ndarray, census_day: int) -> None:
        """Welfare links that exist when a child first appears (disability card, chronic illness, ...)."""
        if len(idx) == 0:
            return
        rng = self.rng
        first = census_day == day(self.schedule.start_date)
        rec = census_day - rng.integers(1, 60, len(idx)) if first else census_day + rng.integers(0, 90, len(idx))
        parts = []
        for name, agency, has in (
            ("disability_card", "MSDHS", (self.disab[idx] > 0) & (rng.random(len(idx)) < 0.8)),
            ("chronic_illness", "NHSO", self.chronic[idx]),
            ("bedridden_household_member", "MOPH", self.bedridden[idx]),
            ("state_welfare_card", "MOF", self.welfare_card[idx]),
        ):
            sel = np.flatnonzero(has)
            parts.append((sel, name, agency))
        self._welfare_rows(idx, rec, parts)

    def _welfare_rows(self, idx: np.ndarray, rec: np.ndarray, parts: list[tuple[np.ndarray, str, str]]) -> None:
        sel = np.concatenate([p[0] for p in parts])
        if len(sel) == 0:
            return
        ii = idx[sel]
        rd = rec[sel]
        keep = rd <= self.end_day
        ii, rd = ii[keep], rd[keep]
        link = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])[keep]
        agency = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])[keep]
        ids, mask = self.ids_at(ii, rd, 30)
        keys, inv = self.quarter_keys("welfare_links", rd)
        cols = {"record_date": as_dt64(rd), "student_id": ids, "agency": agency, "link_type": link}
        self.emit_by_key("welfare_links", keys, inv, cols, ii, mask)

    def welfare_events(self, idx: np.ndarray, arrived: np.ndarray, sday: np.ndarray, E: int) -> None:
        """Links that events of the term create, recorded weeks after the event (so often after a round)."""
        rng = self.rng
        n = len(idx)
        rec = np.zeros(n, dtype=np.int64)
        preg = np.flatnonzero(arrived[:, 3])
        ill = np.flatnonzero(arrived[:, 1] & ~self.chronic[idx] & (rng.random(n) < 0.3))
        debt = np.flatnonzero(arrived[:, 2] & ~self.welfare_card[idx] & (rng.random(n) < 0.25))
        rec_p = sday[preg, 3] + rng.integers(20, 90, len(preg))
        rec_i = sday[ill, 1] + rng.integers(14, 60, len(ill))
        rec_d = sday[debt, 2] + rng.integers(30, 120, len(debt))
        self.chronic[idx[ill]] = True
        self.welfare_card[idx[debt]] = True
        allsel = np.concatenate([preg, ill, debt])
        rec = np.concatenate([rec_p, rec_i, rec_d])
        offs = np.cumsum([0, len(preg), len(ill)])
        parts = [(np.arange(offs[0], offs[1]), "teen_pregnancy", "MOPH"),
                 (np.arange(offs[1], offs[2]), "chronic_illness", "NHSO"),
                 (np.arange(offs[2], len(allsel)), "state_welfare_card", "MOF")]
        self._welfare_rows(idx[allsel], rec, parts)

    def exit_rows(self, year: int, term: int, idx: np.ndarray, outcome: np.ndarray, leave: np.ndarray, E: int) -> None:
        rng = self.rng
        pc = self.pc
        n = len(idx)
        recorded = np.isin(outcome, [C_TRANSFER, C_OTHER, C_VOC, C_NFE, C_EWE, C_DONE])
        recorded |= (outcome == C_DROP) & (rng.random(n) < pc.dropout_exit_recorded)
        recorded |= (outcome == C_ABROAD) & (rng.random(n) < pc.abroad_exit_recorded)
        recorded |= (outcome == C_DEATH) & (rng.random(n) < 0.85)
        rows = np.flatnonzero(recorded)
        if len(rows) == 0:
            return
        ii = idx[rows]
        oc = outcome[rows]
        exit_type = np.array(["", "dropout", "transfer_out", "transfer_out", "to_vocational", "to_non_formal",
                              "to_work_training", "death", "moved_abroad", "completed"])[oc]
        assert set(np.unique(exit_type)) <= set(EXIT_TYPES)
        # the dominant reason of a dropout, as a teacher would file it
        pov = self.poverty()[ii]
        cand = np.stack([
            0.02 * self.travel[ii],  # 01 transport
            1.5 * self.chronic[ii],  # 02 health
            1.5 * (self.disab[ii] > 0),  # 03 disability
            0.8 * (self.caretaker[ii] >= 3),  # 04 family necessity
            0.8 * pov,  # 05 low income
            -0.6 * self.e[ii],  # 06 social adjustment
            -0.4 * self.e[ii],  # 07 conduct
            0.8 * np.clip(self.age_years(ii, E) - 4 - self.grade[ii], 0, None),  # 08 over-age
            2.5 * self.preg[ii],  # 12 marriage/pregnancy
        ], axis=1) + rng.gumbel(0, 0.6, (len(ii), 9))
        drop_reason = np.array(["01", "02", "03", "04", "05", "06", "07", "08", "12"])[cand.argmax(axis=1)]
        reason = np.select([oc == C_DROP, oc == C_DEATH, oc == C_ABROAD, np.isin(oc, [C_TRANSFER, C_OTHER]), oc == C_DONE],
                           [drop_reason, "10", "09", "20", "21"], "22")
        dest = np.full(len(rows), None, dtype=object)
        tr = np.flatnonzero(oc == C_TRANSFER)
        new_school = self.picker.pick("obec_any", np.zeros(len(tr), dtype=np.int64))
        # prefer the same level: keep the kind group by re-picking near home where possible
        near = self.pick_same_level(ii[tr])
        new_school = np.where(near >= 0, near, new_school)
        self._transfer_to = dict(zip(ii[tr].tolist(), new_school.tolist()))
        known = rng.random(len(tr)) < pc.transfer_destination_known
        dest[tr[known]] = self.geo.school_code[new_school[known]]
        ot = np.flatnonzero(oc == C_OTHER)
        kinds = rng.choice(np.array([KIND_LAO, KIND_OPEC, KIND_BPP]), len(ot), p=[0.55, 0.35, 0.10])
        has_bpp = self.picker.has("bpp", np.zeros(1, dtype=np.int64))[0]
        kinds = np.where((kinds == KIND_BPP) & ~has_bpp, KIND_LAO, kinds)
        other_school = np.full(len(ot), -1, dtype=np.int32)
        for kd, grp in ((KIND_LAO, "lao"), (KIND_OPEC, "opec"), (KIND_BPP, "bpp")):
            s = kinds == kd
            other_school[s] = self.picker.pick(grp, np.zeros(int(s.sum()), dtype=np.int64))
        self._other_to = dict(zip(ii[ot].tolist(), zip(kinds.tolist(), other_school.tolist())))
        known = rng.random(len(ot)) < pc.transfer_destination_known
        dest[ot[known]] = self.geo.school_code[other_school[known]]
        exit_day = np.where(leave[rows] < E, leave[rows], E + rng.integers(0, 10, len(rows)))
        ids, mask = self.ids_at(ii, exit_day, 60)
        cols = {
            "exit_date": as_dt64(exit_day), "school_code": self.school_codes.take(pa.array(self.school[ii])),
            "student_id": ids, "first_name": self.first[ii], "last_name": self.last[ii],
            "grade": cat(GRADES, self.grade[ii]), "exit_type": exit_type, "reason_code": reason,
            "destination_school_code": pa.array(dest, type=pa.string()),
        }
        keys = [("exits", year, term, "mid"), ("exits", year, term, "end")]
        which = np.array([0 if self.schedule.exits_key(year, term, to_date(d))[-1] == "mid" else 1 for d in exit_day])
        self.emit_by_key("exits", keys, which, cols, ii, mask)

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
        rep = (g >= G_P1) & (rng.random(len(stay)) < sigmoid(pc.repeat_logit - 0.7 * self.e[stay] - 0.4 * self.ability[stay]))
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

    # ---------------------------------------------------------------------------------------------
    def ewe_rows(self, when: int) -> None:
        if when > self.end_day or when < day(self.schedule.start_date):
            return
        ii = np.flatnonzero((self.status == ST_WORK) & (self.other_since < when))
        if len(ii) == 0:
            return
        months = (when - self.other_since[ii]) / 30.4
        status = np.where(months < 12, "in_training", np.where(months < 24, "qualified", "working_with_training"))
        prog = np.array(["TPQI-AGR-01", "TPQI-AUT-02", "TPQI-CON-03", "TPQI-HOS-04", "TPQI-ELE-05", "TPQI-BEA-06"])
        ids, mask = self.ids_at(ii, when, 180)
        d = to_date(when)
        cols = {
            "record_date": np.full(len(ii), when).astype("datetime64[D]"), "student_id": ids,
            "first_name": self.first[ii], "last_name": self.last[ii], "sex": np.where(self.sex[ii] == 1, "F", "M"),
            "birth_date": as_dt64(self.birth[ii]), "programme_code": prog[self.pid[ii] % len(prog)], "status": status,
        }
        self.emit(("ewe_training", d.year, 0 if d.month <= 6 else 1), "ewe_training", cols, ii, mask)

    def tzd_quarters(self, from_day: int, to_day: int) -> None:
        """TZD finds out-of-school children quarter by quarter and moves each case one stage on."""
        rng = self.rng
        pc = self.pc
        q = to_date(from_day)
        qs = dt.date(q.year, 3 * ((q.month - 1) // 3) + 1, 1)
        while True:
            qe_month = qs.month + 2
            qe = (dt.date(qs.year + (qe_month == 12), qe_month % 12 + 1, 1) - dt.timedelta(days=1))
            if day(qe) >= to_day:
                break
            if day(qe) >= from_day and day(qe) <= self.end_day:
                self._tzd_quarter(day(qs), day(qe))
            qs = qe + dt.timedelta(days=1)
        _ = (rng, pc)

    def _tzd_quarter(self, qs: int, qe: int) -> None:
        rng = self.rng
        pc = self.pc
        cand = np.flatnonzero((self.status == ST_OUT) & (self.drop_day < qe - 7))
        age_ok = self.age_years(cand, qe) <= 18
        active = cand[self.tzd_stage[cand] >= 0]
        active = active[self.tzd_stage[active] < 3]
        new = cand[(self.tzd_stage[cand] < 0) & age_ok & (rng.random(len(cand)) < pc.tzd_find_per_quarter)]
        self.tzd_stage[active] += 1
        self.tzd_stage[new] = 0
        self.tzd_case[new] = np.arange(len(new)) + self.calib.tzd_cases
        self.calib.tzd_cases += len(new)
        ii = np.concatenate([new, active])
        if len(ii) == 0:
            return
        lo = np.maximum(qs, self.drop_day[ii] + 7)
        when = (lo + rng.random(len(ii)) * np.maximum(qe - lo, 0)).astype(np.int32)
        stage = self.tzd_stage[ii]
        outcome = np.full(len(ii), None, dtype=object)
        closed = np.flatnonzero(stage == 3)
        names = list(pc.tzd_outcomes)
        pr = np.array([pc.tzd_outcomes[k] for k in names])
        oc = rng.choice(len(names), len(closed), p=pr / pr.sum())
        outcome[closed] = np.array(names)[oc]
        cl = ii[closed]
        back = {"returned_to_school": ST_OBEC, "non_formal": ST_OTHER, "work_training": ST_WORK}
        for k, st in back.items():
            sel = cl[np.array(names)[oc] == k]
            self.return_day[sel] = when[closed][np.array(names)[oc] == k]
            self.return_to[sel] = st
        ids, mask = self.ids_at(ii, when, 180)
        cols = {
            "case_id": np.char.add(f"TZD{self.prov.code}-", np.char.zfill(self.tzd_case[ii].astype(str), 6)),
            "updated_on": as_dt64(when), "student_id": ids, "first_name": self.first[ii], "last_name": self.last[ii],
            "sex": np.where(self.sex[ii] == 1, "F", "M"), "birth_date": as_dt64(self.birth[ii]),
            "tambon_code": self.tambon_codes.take(pa.array(self.tambon[ii])),
            "status": np.array(["identified", "care_plan", "follow_up", "closed"])[stage],
            "outcome": pa.array(outcome, type=pa.string()),
        }
        keys, inv = self.quarter_keys("tzd_cases", when)
        self.emit_by_key("tzd_cases", keys, inv, cols, ii, mask)

    # ---------------------------------------------------------------------------------------------
    def run(self, progress: callable | None = None) -> None:
        w = self.cfg.world
        self.init_people()
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

    def write_people(self) -> None:
        ii = np.flatnonzero(self.status != ST_NONE)
        ids = pa.array(self.id0[ii]).cast(pa.string())
        id1 = pa.array(self.id1[ii]).cast(pa.string())
        has1 = self.id1_from[ii] < NEVER
        entry = as_dt64(self.entered_on[ii])
        offsets = np.concatenate([[0], np.cumsum(1 + has1)])
        id_vals = np.empty(int(offsets[-1]), dtype=object)
        from_vals = np.empty(int(offsets[-1]), dtype="datetime64[D]")
        id_vals[offsets[:-1]] = ids.to_numpy(zero_copy_only=False)
        from_vals[offsets[:-1]] = (as_dt64(self.birth[ii]))
        second = offsets[:-1][has1] + 1
        id_vals[second] = id1.to_numpy(zero_copy_only=False)[has1]
        from_vals[second] = as_dt64(self.id1_from[ii][has1])
        struct = pa.StructArray.from_arrays([pa.array(id_vals, type=pa.string()), pa.array(from_vals)], names=["id", "from_date"])
        self.truth.append("persons", pa.table({
            "person_id": self.pid[ii], "sex": pa.array(np.where(self.sex[ii] == 1, "F", "M")),
            "birth_date": pa.array(as_dt64(self.birth[ii])), "nationality": pa.array(np.array(NATIONALITY)[self.nat[ii]]),
            "disability": pa.array(np.array(DISABILITY)[self.disab[ii]]),
            "first_name": self.names.text(self.first[ii]), "last_name": self.names.text(self.last[ii]),
            "ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), struct),
            "province_code": pa.array(np.full(len(ii), self.prov.code)),
            "tambon_code": self.tambon_codes.take(pa.array(self.tambon[ii])),
            "entered_on": pa.array(entry), "final_status": pa.array(np.array(STATUS)[self.status[ii]]),
        }))
        if self._shock_rows:
            self.truth.append("shocks", pa.concat_tables(self._shock_rows))
            self._shock_rows = []
