"""The delivery schedule: which delivery carries which rows, and when it was delivered.

Real systems deliver on their own rhythm, the typical lags of the contract's delivery schedule
(`features.contract.DELIVERY_SCHEDULE`, the one place they are written): the DMC census two to
three weeks after each census, other systems' enrolment later, attendance monthly about ten days
after the month ends, interim marks a few days after they are recorded and final marks after the
term, screenings once a term, welfare links and TZD cases quarterly, EWE twice a year. Some deliveries arrive weeks late (a fault recorded in the truth), and
now and then one school's rows arrive as a separate malformed file with its own delivery folder.

The schedule is drawn from its own random stream before any province is simulated, so every
province appends its rows to the same deliveries.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from features.calendar import SchoolCalendar
from features.contract import DELIVERY_SCHEDULE, SOURCES, delivery_due
from features.ids import BE_OFFSET
from simulator.config import SimulationConfig

MALFORMED_KINDS = ("cp874", "missing_column", "truncated_last_line", "semicolon_delimiter")


@dataclass
class Delivery:
    """One delivery folder. `key` is the simulator's nominal name for it (source, period...)."""

    key: tuple
    sources: tuple[str, ...]
    nominal_on: dt.date
    delivered_on: dt.date
    late_days: int = 0
    malformed: str | None = None  # only on the separate twin delivery holding a malformed file
    twin_of: str | None = None
    delivery_id: str = ""
    index: int = -1
    twin: Delivery | None = field(default=None, repr=False)

    @property
    def system(self) -> str:
        return SOURCES[self.sources[0]].system if self.sources[0] != "areas" else "DOPA / OBEC"


def _d(y: int, m: int, d: int) -> dt.date:
    return dt.date(y, m, d)


def _month_end(y: int, m: int) -> dt.date:
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


class Schedule:
    """Every delivery of a run, with ids assigned in date order."""

    def __init__(self, config: SimulationConfig) -> None:
        w = config.world
        cal: SchoolCalendar = config.calendar
        self.calendar = cal
        self.first_year = w.first_year
        self.last_year = w.first_year + w.years - 1
        # The run ends at the census after the last term (the label census of the last rounds).
        self.end_date = cal.census_date(self.last_year + 1, 1)
        self.start_date = cal.census_date(self.first_year, 1)
        rng = np.random.default_rng([w.seed, 1_000_003])
        items: list[Delivery] = []

        lag = delivery_due
        # the part of a term's exits sent before the term ends (the contract's earlier exits rhythm)
        exits_part = min((d for d in DELIVERY_SCHEDULE if d.source == "exits"), key=lambda d: d.lag_days)

        def add(key: tuple, source: str, nominal: dt.date) -> None:
            items.append(Delivery(key=key, sources=(source,), nominal_on=nominal, delivered_on=nominal))

        items.append(Delivery(key=("registry",), sources=("areas", "schools"),
                              nominal_on=self.start_date - dt.timedelta(days=40),
                              delivered_on=self.start_date - dt.timedelta(days=40)))
        for y in range(self.first_year, self.last_year + 2):
            for t in (1, 2):
                census = cal.census_date(y, t)
                if census > self.end_date:
                    continue
                add(("dmc_census", y, t), "dmc_census", lag("dmc_census").due_on(cal, census))
                add(("other_enrolment", y, t), "other_enrolment", lag("other_enrolment").due_on(cal, census))
                if y > self.last_year:
                    continue
                tc = cal.term(t)
                start, end = tc.starts.in_year(y), tc.ends.in_year(y)
                add(("grades", y, t, "interim"), "grades",
                    lag("grades", "interim_marks").due_on(cal, tc.interim_marks.in_year(y)))
                add(("grades", y, t, "final"), "grades", lag("grades", "term_end").due_on(cal, end))
                add(("cct_screening", y, t), "cct_screening", lag("cct_screening").due_on(cal, census))
                add(("care_screening", y, t), "care_screening", lag("care_screening").due_on(cal, census))
                add(("exits", y, t, "mid"), "exits", end + dt.timedelta(days=exits_part.lag_days))
                add(("exits", y, t, "end"), "exits", lag("exits", "term_end").due_on(cal, end))
                m = dt.date(start.year, start.month, 1)
                while m <= end:
                    add(("attendance", m.year, m.month), "attendance", lag("attendance").due_on(cal, m))
                    m = _month_end(m.year, m.month) + dt.timedelta(days=1)
        ce0 = self.first_year - BE_OFFSET
        for cy in range(ce0, self.end_date.year + 1):
            for q in range(1, 5):
                qend = _month_end(cy, 3 * q)
                qstart = dt.date(cy, 3 * q - 2, 1)
                if qend < self.start_date - dt.timedelta(days=70) or qstart > self.end_date:
                    continue
                add(("welfare_links", cy, q), "welfare_links", lag("welfare_links").due_on(cal, qend))
                add(("tzd_cases", cy, q), "tzd_cases", lag("tzd_cases").due_on(cal, qend))
            for half, (mm, dd) in enumerate(((3, 31), (9, 30))):
                rec = dt.date(cy, mm, dd)
                if self.start_date <= rec <= self.end_date:
                    add(("ewe_training", cy, half), "ewe_training", lag("ewe_training").due_on(cal, rec))

        f = config.faults
        items.sort(key=lambda d: (d.nominal_on, d.sources[0], repr(d.key)))
        late = rng.random(len(items)) < f.late_delivery
        late_days = rng.integers(14, 57, len(items))
        malformed = rng.random(len(items)) < f.malformed_delivery
        kinds = rng.integers(0, len(MALFORMED_KINDS), len(items))
        twins: list[Delivery] = []
        for i, d in enumerate(items):
            if d.key == ("registry",):
                continue
            if late[i]:
                d.late_days = int(late_days[i])
                d.delivered_on = d.nominal_on + dt.timedelta(days=d.late_days)
            if malformed[i]:
                tw = Delivery(key=(*d.key, "malformed"), sources=d.sources, nominal_on=d.nominal_on,
                              delivered_on=d.delivered_on, late_days=d.late_days,
                              malformed=MALFORMED_KINDS[int(kinds[i])])
                d.twin = tw
                twins.append(tw)
        everything = items + twins
        everything.sort(key=lambda d: (d.delivered_on, d.sources[0], d.malformed is not None, repr(d.key)))
        used: dict[str, int] = {}
        for i, d in enumerate(everything):
            stem = f"{d.delivered_on.isoformat()}_{'registry' if d.key == ('registry',) else d.sources[0]}"
            n = used.get(stem, 0) + 1
            used[stem] = n
            d.delivery_id = stem if n == 1 else f"{stem}_{n}"
            d.index = i
        for d in items:
            if d.twin is not None:
                d.twin.twin_of = d.delivery_id
        self.deliveries: list[Delivery] = everything
        self._by_key = {d.key: d for d in items}

    def get(self, key: tuple) -> Delivery | None:
        """The delivery for a nominal key, or None when it falls outside the run."""
        return self._by_key.get(key)

    def quarter_key(self, source: str, date: dt.date) -> tuple:
        return (source, date.year, (date.month - 1) // 3 + 1)

    def exits_key(self, year: int, term: int, exit_date: dt.date) -> tuple:
        """Exits dated up to 10 days before the mid-term exits delivery go in it; the rest after the term."""
        mid = self._by_key.get(("exits", year, term, "mid"))
        if mid is not None and exit_date <= mid.nominal_on - dt.timedelta(days=10):
            return ("exits", year, term, "mid")
        return ("exits", year, term, "end")
