"""Turning the simulated children into delivery rows (with faults) and truth rows.

`Records` extends `Population` (population.py) with the writers: every source's rows of a term
(attendance, grades, screenings, welfare links, exits, EWE and TZD case records), the registry,
and the persons truth table. Each batch goes through `emit`, which adds the school's student
number, injects the configured faults (faults.py), applies a scenario's data break and writes to
the delivery the schedule names. A few record events also change the child (a transfer's new
home tambon, a welfare card after a debt shock, a TZD case's return to school): they are drawn
here, in the order the rows are written, because the random stream's order is the world.
"""

from __future__ import annotations

import datetime as dt
import numpy as np
import pyarrow as pa

from features.contract import (
    SOURCES, CARE_DIMENSIONS, CARETAKERS, DISABILITY, EXIT_TYPES, NATIONALITY, THAI_MARK_STATUS, TRAVEL_MODES,
)
from features.ids import BE_OFFSET, GRADES
from simulator.config import SimulationConfig
from simulator.faults import FAULT_BITS, NameBook, inject
from simulator.observable import NOT_DELIVERED, ObservedHistory, SchoolHistory, TermObservations
from simulator.population import (
    EXTREME_POOR, G_M1, G_P1, NEVER, STATUS, ST_NONE, ST_OBEC, ST_OTHER, ST_OUT, ST_WORK,
    Population, as_dt64, day, sigmoid, to_date,
)
from simulator.process import C_ABROAD, C_DEATH, C_DONE, C_DROP, C_EWE, C_NFE, C_OTHER, C_TRANSFER, C_VOC, Calib
from simulator.scenarios import apply_breaks
from simulator.schedule import Schedule
from simulator.truth import TruthWriter
from simulator.world import KIND_AFFILIATION, KIND_BPP, KIND_LAO, KIND_OPEC, KIND_SECONDARY, Province, size_class
from simulator.writers import DeliveryWriter

# Share of moves abroad that TZD's follow-up traces and closes as `moved_abroad` (the rest are
# never found: to the pipeline they look like dropouts).
TZD_ABROAD_TRACED = 0.9
STUDENT_NO_MODULUS = 99_999_989  # a prime: the mapping below is a bijection of person ids per school


def student_numbers(pid: np.ndarray, school_codes: pa.Array | np.ndarray) -> np.ndarray:
    """The school's own student number (8 digits): unique within a school, unrelated across
    schools, so it identifies a child only together with the school code."""
    school = np.asarray(pa.array(school_codes).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    num = (pid.astype(np.int64) * 7_919 + (school % STUDENT_NO_MODULUS) * 104_729) % STUDENT_NO_MODULUS
    return np.char.zfill(num.astype("U8"), 8).astype(object)


def cat(values: tuple[str, ...] | list[str], codes: np.ndarray) -> pa.Array:
    """Strings from a small vocabulary by index (much faster than numpy unicode -> Arrow)."""
    return pa.array(list(values), type=pa.string()).take(pa.array(np.asarray(codes, dtype=np.int32)))


def const(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)



class Records(Population):
    """The children of a province and the rows the source systems deliver about them."""

    def __init__(self, config: SimulationConfig, prov: Province, schedule: Schedule, writer: DeliveryWriter,
                 truth: TruthWriter, names: NameBook, calib: Calib) -> None:
        super().__init__(config, prov, schedule, names, calib)
        self.writer = writer
        self.truth = truth
        self.frng = np.random.default_rng([config.world.seed, prov.index, 2])  # faults only
        self.school_codes = pa.array(self.geo.school_code, type=pa.string())
        self.tambon_codes = pa.array(self.geo.tambon_code, type=pa.string())
        self._shock_rows: list[pa.Table] = []
        # Scenario state (simulator/scenarios.py), set by the driver; neutral unless a scenario is active.
        self._att_shift = 0.0
        self._breaks: list = []
        # What the records of the current term reveal, and of earlier terms (simulator/observable.py);
        # set by the driver around each term. Filled without random draws, so the world is unchanged.
        self.term_obs: TermObservations | None = None
        self.observed: ObservedHistory | None = None
        self.school_past: SchoolHistory | None = None

    def delivered_day(self, key: tuple) -> int:
        """The day the delivery of a nominal key arrived (lateness included), or NOT_DELIVERED."""
        d = self.schedule.get(key)
        return NOT_DELIVERED if d is None else day(d.delivered_on)

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
        # A school whose census file DMC refused: none of its pupils is in this census delivery. Cut
        # after the rows are drawn, so the world's random stream does not depend on the fault.
        refused = self.frng.random(len(self.geo.school_code)) < self.cfg.faults.census_refused_school
        lost = refused[self.school[idx]]
        if lost.any():
            self._omissions(idx[lost], "dmc_census", np.full(int(lost.sum()), cday), "census_refused")
            keep = ~lost
            cols = {c: (v.filter(pa.array(keep)) if isinstance(v, pa.Array) else np.asarray(v)[keep]) for c, v in cols.items()}
            idx, mask = idx[keep], mask[keep]
        self.emit(("dmc_census", year, term), "dmc_census", cols, idx, mask)

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
                if self.term_obs is not None:
                    self.term_obs.add_attendance(self.delivered_day(("attendance", y_, mo)), present, days)
            m = m + 1
        att = present_total / np.maximum(days_total, 1)
        att_i = present_to_interim / np.maximum(days_to_interim, 1)
        # the next term's hazard reads the CCT attendance condition from this term's record
        self.att_last[idx] = np.where(days_total > 0, att, 1.0).astype(np.float32)
        self.ms_fail[idx] = False
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
            if kind == "final":
                self.ms_fail[idx[rows]] = ms[rows] > 0  # year end: มส -> repetition (province.year_end)
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
            if self.term_obs is not None:
                self.term_obs.add_marks(kind, self.delivered_day(("grades", year, term, kind)), rows, gpa_out)
        # screenings: whole schools sometimes never deliver them (recorded as omissions)
        self.screenings(year, term, idx, cday, arrived, sday, e, pov)
        self.welfare_events(idx, arrived, sday, E)
        self.exit_rows(year, term, idx, outcome, leave, E)
        abroad = outcome == C_ABROAD
        self.tzd_abroad_followups(year, term, idx[abroad], np.minimum(leave[abroad], E))
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
        # The reporting noise is drawn for every pupil before the fault cuts rows, so the world's
        # stream (and every outcome drawn after it) does not depend on which schools' screenings are lost.
        income_noise = rng.normal(0, 0.12, n)
        dim_flips = rng.random((n, 8)) < 0.03
        travel_noise = rng.normal(0, 0.15, n)
        missing_school = frng.random(n_sch) < self.cfg.faults.missing_screening
        lost = missing_school[self.school[idx]]
        self._omissions(idx[screened & lost], "cct_screening", when[screened & lost])
        rows = np.flatnonzero(screened & ~lost)
        ii = idx[rows]
        ids, mask = self.ids_at(ii, when[rows], 60)
        reported = np.maximum(0, np.round(inc[rows] * np.exp(income_noise[rows]) / 10) * 10).astype(np.int64)
        dims = self.dims[ii] ^ dim_flips[rows]
        travel = np.clip(np.round(self.travel[ii] * np.exp(travel_noise[rows])), 0, 300).astype(np.int64)
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
        if self.term_obs is not None:
            self.term_obs.add_care(self.delivered_day(("care_screening", year, term)), rows, status)

    def _omissions(self, idx: np.ndarray, source: str, when: np.ndarray, reason: str = "missing_screening") -> None:
        if len(idx) == 0:
            return
        self.truth.append("omissions", pa.table({
            "person_id": self.pid[idx], "source": pa.array(np.full(len(idx), source)),
            "school_code": self.school_codes.take(pa.array(self.school[idx])),
            "describes": pa.array(as_dt64(when)),
            "reason": pa.array(np.full(len(idx), reason)),
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
        if self.term_obs is not None:
            for k, rows, rd in ((3, preg, rec_p), (1, ill, rec_i), (2, debt, rec_d)):
                keys, inv = self.quarter_keys("welfare_links", rd)
                delivered = np.asarray([self.delivered_day(key) for key in keys], np.int64)[inv] if len(rd) else rd
                self.term_obs.add_welfare(k, rows, np.where(rd <= self.end_day, delivered, NOT_DELIVERED))
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
        # Every leaver but an unfiled dropout gets a destination here (the move itself needs it);
        # which of their exit rows the school never files is a fault, decided at the end.
        recorded = np.isin(outcome, [C_TRANSFER, C_OTHER, C_VOC, C_NFE, C_EWE, C_DONE, C_ABROAD, C_DEATH])
        recorded |= (outcome == C_DROP) & (rng.random(n) < pc.dropout_exit_recorded)
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
        other_kind = np.full(len(rows), -1)
        other_kind[ot] = kinds
        filed = ~self._exit_row_missing(oc, other_kind)
        self._omissions(ii[~filed], "exits", exit_day[~filed], "exit_row_missing")
        ii, oc, exit_day = ii[filed], oc[filed], exit_day[filed]
        exit_type, reason, dest = exit_type[filed], reason[filed], dest[filed]
        if len(ii) == 0:
            return
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

    def _exit_row_missing(self, outcome: np.ndarray, other_kind: np.ndarray) -> np.ndarray:
        """Which exit rows the school never files: the FaultConfig rate of each row's exit type."""
        f = self.cfg.faults
        rate = np.zeros(len(outcome))
        for cls, r in ((C_VOC, f.exit_missing_vocational), (C_NFE, f.exit_missing_non_formal),
                       (C_EWE, f.exit_missing_work_training), (C_ABROAD, f.exit_missing_abroad),
                       (C_DEATH, f.exit_missing_death), (C_TRANSFER, f.exit_missing_transfer_obec),
                       (C_DONE, f.exit_missing_completed)):
            rate[outcome == cls] = r
        for kind, r in ((KIND_LAO, f.exit_missing_transfer_lao), (KIND_OPEC, f.exit_missing_transfer_opec),
                        (KIND_BPP, f.exit_missing_transfer_bpp)):
            rate[(outcome == C_OTHER) & (other_kind == kind)] = r
        return self.frng.random(len(outcome)) < rate

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

    def tzd_abroad_followups(self, year: int, term: int, ii: np.ndarray, left: np.ndarray) -> None:
        """TZD's follow-up of children who left for abroad: a closed case, outcome `moved_abroad`.

        Why TZD records them: its case list is every registered child of school age found in no
        education database after a census, whatever the school filed (an exit row or none); the
        field visit that finds the family gone abroad closes the case with that outcome. A share
        is never traced (`TZD_ABROAD_TRACED`). Drawn from a stream of their own (and faults
        injected from one), so adding these rows changes no other row of the world.
        """
        if len(ii) == 0:
            return
        rng = np.random.default_rng([self.cfg.world.seed, self.prov.index, 3, year, term])
        traced = rng.random(len(ii)) < TZD_ABROAD_TRACED
        when = (left + rng.integers(14, 46, len(ii))).astype(np.int32)
        ii, when = ii[traced], when[traced]
        if len(ii) == 0:
            return
        ids, mask = self.ids_at(ii, when, 180)
        case_no = np.char.zfill(self.pid[ii].astype(str), 8)
        cols = {
            "case_id": np.char.add(f"TZD{self.prov.code}-A", case_no),
            "updated_on": as_dt64(when), "student_id": ids, "first_name": self.first[ii], "last_name": self.last[ii],
            "sex": np.where(self.sex[ii] == 1, "F", "M"), "birth_date": as_dt64(self.birth[ii]),
            "tambon_code": self.tambon_codes.take(pa.array(self.tambon[ii])),
            "status": np.full(len(ii), "closed"), "outcome": np.full(len(ii), "moved_abroad"),
        }
        frng = np.random.default_rng([self.cfg.world.seed, self.prov.index, 4, year, term])
        keys, inv = self.quarter_keys("tzd_cases", when)
        for ki in np.unique(inv):
            sel = inv == ki
            delivery = self.schedule.get(keys[int(ki)])
            if delivery is None:
                continue
            sub = {c: (v.filter(pa.array(sel)) if isinstance(v, pa.Array) else np.asarray(v)[sel]) for c, v in cols.items()}
            table, pid, m = inject("tzd_cases", sub, mask[sel], self.pid[ii[sel]], frng, self.cfg.faults, self.names)
            if self._breaks:
                table = apply_breaks(table, "tzd_cases", self._breaks)
            self.writer.write(delivery, "tzd_cases", table, pid, m)

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
