"""Data quality of the deliveries behind a round: quarantine, volumes, missing values, lateness.

Reads only the warehouse's own bookkeeping (`ingested_files`, `deliveries`) and accepted rows
(`src_<source>`), all pseudonymous. Volumes and missing rates are compared per *period described*
(a census date, a month of attendance, a term's screening) rather than per delivery, because one
period may arrive in several deliveries (a late part, a malformed school file sent separately);
comparing deliveries would raise an alarm at every such split. Lateness is judged against the
calendar: a census is expected `expected_lag_days` after the census date, a month of attendance
that many days after the month ends. A round scored on a stale population (its census had not
arrived by its as-of date) is flagged from the snapshot's manifest (`population_checks`).

Every figure is a `Check` with its value, thresholds and level, per source and per province.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar
from features.contract import SOURCES
from features.ids import BE_OFFSET
from features.ingest.warehouse import META_COLUMNS, warehouse_columns
from features.pointintime.build import PopulationSource
from monitoring.config import QualityConfig, Thresholds
from monitoring.stats import level_of

# The column that names the period a row describes, per source checked for volume and missing values.
PERIOD_COLUMN: dict[str, str] = {
    "dmc_census": "census_date", "attendance": "year_month", "cct_screening": "academic_year * 10 + term",
    "care_screening": "academic_year * 10 + term", "grades": "academic_year * 100 + term * 10 + (assessment = 'final')::INT",
}
# Columns never judged for missing values: bookkeeping, and the pseudonymous id (its missing share
# is the ID fault rate, watched by linkage).
_SKIP = {name for name, _ in META_COLUMNS} | {"id_token", "id_kind", "student_no"}


class Check(BaseModel):
    """One quality figure: what, where, its value and the level it reaches."""

    model_config = ConfigDict(extra="forbid")
    check: str
    source: str
    scope: str  # a delivery id, a period, "province <code>"
    column: str | None = None
    value: float
    reference: float | None = None
    watch: float
    drift: float
    level: str
    judged: bool = True
    note: str = ""


def _check(check: str, source: str, scope: str, value: float, th: Thresholds, judged: bool = True,
           column: str | None = None, reference: float | None = None, note: str = "") -> Check:
    lvl = level_of(value, th.watch, th.drift) if judged else "ok"
    return Check(check=check, source=source, scope=scope, column=column, value=round(float(value), 6),
                 reference=None if reference is None else round(float(reference), 6), watch=th.watch, drift=th.drift,
                 level=lvl, judged=judged, note=note)


def quarantine_checks(con: duckdb.DuckDBPyConnection, start: dt.date, as_of: dt.date, cfg: QualityConfig) -> list[Check]:
    """Share of each file's rows put in quarantine, for files delivered in (start, as_of]."""
    rows = con.execute("""
        SELECT f.delivery_id, f.source, f.received, f.quarantined
        FROM wh.ingested_files f JOIN wh.deliveries d USING (delivery_id)
        WHERE d.delivered_on > ? AND d.delivered_on <= ? ORDER BY d.delivered_on, f.delivery_id, f.source
    """, [start, as_of]).fetchall()
    return [_check("quarantine_rate", src, did, q / rec if rec else 0.0, cfg.quarantine_rate, judged=rec >= cfg.min_rows,
                   note=f"{q:,} of {rec:,} rows quarantined") for did, src, rec, q in rows]


def _periods(con: duckdb.DuckDBPyConnection, source: str, as_of: dt.date) -> list[tuple[Any, dt.date]]:
    """(period, first known date) of every period of `source` known by as_of, in order."""
    p = PERIOD_COLUMN[source]
    return con.execute(f"""
        SELECT {p} AS period, min(known_at) FROM wh.src_{source} WHERE known_at <= ? GROUP BY 1 ORDER BY 1
    """, [as_of]).fetchall()


def _province_sql(source: str) -> str:
    """Rows of src_<source> known by the as-of date, with the province of their school."""
    return f"""
        SELECT s.*, coalesce(a.province_code, 'unknown') AS _province FROM wh.src_{source} s
        LEFT JOIN (SELECT school_code, arg_max(tambon_code, known_at) AS tambon_code FROM wh.src_schools GROUP BY 1) sc
          USING (school_code)
        LEFT JOIN (SELECT tambon_code, arg_max(province_code, known_at) AS province_code FROM wh.src_areas GROUP BY 1) a
          ON a.tambon_code = sc.tambon_code
        WHERE s.known_at <= $as_of
    """


def volume_and_missing_checks(con: duckdb.DuckDBPyConnection, start: dt.date, as_of: dt.date,
                              cfg: QualityConfig) -> list[Check]:
    """Per source and period first known in (start, as_of]: rows against the previous period
    (overall and per province), and each column's missing share against the previous period."""
    out: list[Check] = []
    for source in PERIOD_COLUMN:
        periods = _periods(con, source, as_of)
        cols = [n for n, _ in warehouse_columns(SOURCES[source]) if n not in _SKIP]
        p = PERIOD_COLUMN[source]
        for i, (period, first_known) in enumerate(periods):
            if i == 0 or not (start < first_known <= as_of):
                continue
            prev = periods[i - 1][0]
            counts = con.execute(f"""
                SELECT {p} AS period, _province, count(*) AS n,
                       {", ".join(f'count("{c}") AS "nn_{c}"' for c in cols)}
                FROM ({_province_sql(source)}) WHERE {p} IN ($cur, $prev) GROUP BY ALL
            """, {"as_of": as_of, "cur": period, "prev": prev}).fetch_df()
            label = str(period)[:10]
            cur, old = counts[counts["period"] == period], counts[counts["period"] == prev]
            n_cur, n_old = float(cur["n"].sum()), float(old["n"].sum())
            out.append(_check("volume_change", source, f"period {label}", abs(n_cur / n_old - 1) if n_old else 0.0,
                              cfg.volume_change, judged=n_old >= cfg.min_rows, reference=n_old,
                              note=f"{int(n_cur):,} rows against {int(n_old):,} in the previous period"))
            for prov in sorted(set(cur["_province"]) | set(old["_province"])):
                a = float(cur.loc[cur["_province"] == prov, "n"].sum())
                b = float(old.loc[old["_province"] == prov, "n"].sum())
                if len(set(counts["_province"])) > 1:
                    out.append(_check("volume_change", source, f"period {label} province {prov}",
                                      abs(a / b - 1) if b else (1.0 if a else 0.0), cfg.volume_change,
                                      judged=b >= cfg.min_rows, reference=b, note=f"{int(a):,} rows against {int(b):,}"))
            for c in cols:
                m_cur = 1 - float(cur[f"nn_{c}"].sum()) / n_cur if n_cur else 0.0
                m_old = 1 - float(old[f"nn_{c}"].sum()) / n_old if n_old else 0.0
                out.append(_check("missing_rate_change", source, f"period {label}", abs(m_cur - m_old),
                                  cfg.missing_rate_change, judged=min(n_cur, n_old) >= cfg.min_rows, column=c,
                                  reference=m_old, note=f"missing {m_cur:.1%} (previous period {m_old:.1%})"))
    return out


def expected_deliveries(cal: SchoolCalendar, start: dt.date, as_of: dt.date, cfg: QualityConfig) -> list[tuple[str, Any, dt.date]]:
    """(source, period, due date) of every delivery the calendar expects to be due in (start, as_of]."""
    out: list[tuple[str, Any, dt.date]] = []
    lag = cfg.expected_lag_days
    # Academic years are named in the Buddhist Era; a term-2 census falls in the next CE year.
    for year in range(start.year + BE_OFFSET - 1, as_of.year + BE_OFFSET + 1):
        for term in (1, 2):
            census = cal.census_date(year, term)
            for source in ("dmc_census", "cct_screening", "care_screening"):
                if source in lag:
                    period: Any = census if source == "dmc_census" else year * 10 + term
                    out.append((source, period, census + dt.timedelta(days=lag[source])))
            if "attendance" in lag:
                tc = cal.term(term)
                m = tc.starts.in_year(year).replace(day=1)
                end = tc.ends.in_year(year)
                while m <= end:
                    nxt = dt.date(m.year + (m.month == 12), m.month % 12 + 1, 1)
                    out.append(("attendance", m, nxt - dt.timedelta(days=1) + dt.timedelta(days=lag["attendance"])))
                    m = nxt
    return sorted((s, p, d) for s, p, d in out if start < d <= as_of)


def lateness_checks(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, start: dt.date, as_of: dt.date,
                    cfg: QualityConfig) -> list[Check]:
    """Days each expected delivery came after it was due; absent ones count up to the as-of date."""
    out = []
    known: dict[str, dict[Any, dt.date]] = {}
    for source, period, due in expected_deliveries(cal, start, as_of, cfg):
        if source not in known:
            known[source] = {p: k for p, k in _periods(con, source, as_of)}
        arrived = known[source].get(period)
        if hasattr(period, "isoformat"):
            label = period.isoformat()[:7] if source == "attendance" else period.isoformat()
        else:
            label = f"{period // 10}-T{period % 10}"
        if arrived is None:
            out.append(_check("late_delivery", source, f"period {label}", (as_of - due).days, cfg.late_days,
                              note=f"expected by {due}, absent on {as_of}"))
        else:
            out.append(_check("late_delivery", source, f"period {label}", max(0, (arrived - due).days), cfg.late_days,
                              note=f"expected by {due}, first known {arrived}"))
    return out


# Any day between the census a round is defined by and the census its population rests on is a
# breach: the list then holds last census's pupils (less exits, plus those seen in attendance), and
# schools and monitoring must know it is not the census they expect.
STALE_POPULATION = Thresholds(watch=1, drift=1)


def population_checks(round_id: str, population: PopulationSource | None) -> list[Check]:
    """A round whose census had not arrived by its as-of date was scored on a stale population:
    the days its population lags the expected census, flagged with the caveat the list carries.
    A census that arrived without some schools' files flags each of those schools by its code."""
    if population is None:
        return []
    if population.census_late:
        # No census at all cannot be published (`require_population`); should one appear, lag from as-of.
        base = population.population_as_of or population.as_of
        lag = max(1, (population.census_date_expected - base).days)
        return [_check("stale_population", "dmc_census", f"round {round_id}", lag, STALE_POPULATION,
                       note=f"population not from the round's census: {population.caveat()['en']}")]  # type: ignore[index]
    return [
        _check("stale_population", "dmc_census", f"round {round_id} school {f.school_code}",
               max(1, (population.census_date_expected - f.population_as_of).days), STALE_POPULATION,
               note=f"school {f.school_code}: {f.students} pupils listed from the latest evidence "
                    f"({f.census_students} in its census of {f.population_as_of}): "
                    f"{population.school_caveat(f.school_code)['en']}")  # type: ignore[index]
        for f in population.school_fallbacks
    ]


def quality_checks(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, as_of: dt.date, cfg: QualityConfig) -> list[Check]:
    """Every data-quality check for the deliveries behind a round with this as-of date."""
    start = as_of - dt.timedelta(days=cfg.lookback_days)
    return (quarantine_checks(con, start, as_of, cfg) + volume_and_missing_checks(con, start, as_of, cfg)
            + lateness_checks(con, cal, start, as_of, cfg))
