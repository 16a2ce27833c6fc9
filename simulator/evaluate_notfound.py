"""The not-found list against the simulator's truth: precision and recall per census and group.

Evaluation only, like `simulator/evaluate.py` (which this reuses for reading the truth): the pipeline
never imports it; `ews notfound show --truth` (the entry point) does. A pupil enrolled at census P
is truly out of school at the next census C when the truth's outcome of P's early round is a
dropout (`rounds.parquet`: no learning path at C). The list is `features.pointintime.notfound`'s
SQL, run on the same warehouse as known by the as-of date; provisional cases count as listed.

Intervals: a bootstrap by student (persons resampled with replacement, every census row of a person
kept together), so a child listed at two censuses does not count as two independent draws.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
from pydantic import BaseModel, ConfigDict

from features.calendar import SchoolCalendar
from features.pointintime.labels import EVIDENCE, Evidence, evidence_status_sql, population_sql
from features.pointintime.notfound import notfound_sql, previous_round
from simulator.evaluate import attach_truth

# Groups the list is judged in (truth of the person): nationality, and the region of the person's
# tambon (the warehouse's area registry).
GROUPS = ("nationality", "region")
# A group's precision/recall is judged only with this many true out-of-school rows or listed rows:
# below it one case moves the figure by more than 0.05.
MIN_GROUP_CASES = 20


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float | None
    low: float | None
    high: float | None


class ListQuality(BaseModel):
    """Precision (listed pupils truly out of school) and recall (out-of-school pupils listed),
    both greater-is-better, with 95% bootstrap intervals by student."""

    model_config = ConfigDict(extra="forbid")
    rows: int  # (pupil, census) pairs: enrolled at the previous census
    listed: int
    truly_out: int
    true_positives: int
    base_rate: float  # truly out / rows: the precision a list of everyone would have
    precision: Interval
    recall: Interval
    judged: bool


class NotFoundQuality(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: dt.date
    censuses: list[dt.date]
    bootstrap: int
    overall: ListQuality
    per_census: dict[str, ListQuality]
    per_group: dict[str, dict[str, ListQuality]]
    # The cases listed with the caveat "finished P6 or M3 at the year end; school X ... may be enrolled
    # there" (`notfound.NotFoundManifest.may_have_moved_up`), and every other row: how often that
    # caveat is right is what a team weighing those cases needs. The caveat's recall is 1 by
    # construction (only a listed pupil carries it): read its precision.
    moved_up_caveat: ListQuality
    without_moved_up_caveat: ListQuality


def complete_censuses(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, as_of: dt.date) -> list[dt.date]:
    """Censuses after the first whose every evidence source had arrived (or was overdue) by as-of."""
    dates = [d for (d,) in con.execute(
        "SELECT DISTINCT census_date FROM wh.linked_dmc_census WHERE known_at <= ? ORDER BY 1", [as_of]).fetchall()]
    out = []
    for c in dates[1:]:
        r = previous_round(cal, c)
        if cal.census_date(r.academic_year, r.term) not in dates:
            continue
        if all(ok for (ok,) in con.execute(f"SELECT complete FROM ({evidence_status_sql(cal, c, as_of)})").fetchall()):
            out.append(c)
    return out


def _rows(con: duckdb.DuckDBPyConnection, truth_dir: Path, cal: SchoolCalendar, censuses: list[dt.date],
          as_of: dt.date, evidence: tuple[Evidence, ...]) -> tuple[np.ndarray, ...]:
    attach_truth(con, truth_dir)
    persons = truth_dir / "persons.parquet"
    parts = []
    for c in censuses:
        r = previous_round(cal, c)
        parts.append(f"""
            SELECT DATE '{c}' AS census, tr.person_id, nf.student_key IS NOT NULL AS listed,
                   x.dropout = 1 AS truly_out, pe.nationality, ar.region,
                   nf.may_be_at_school IS NOT NULL AS moved_up_caveat
            FROM ({population_sql(cal, r, as_of)}) p
            LEFT JOIN ({notfound_sql(cal, c, as_of, evidence=evidence)}) nf USING (student_key)
            JOIN truth_records tr USING (delivery_id, source_file, source_line)
            JOIN truth_rounds x ON x.person_id = tr.person_id AND x.round_id = '{r.round_id}'
            JOIN read_parquet('{persons}') pe ON pe.person_id = tr.person_id
            LEFT JOIN (SELECT tambon_code, any_value(region) AS region FROM wh.src_areas GROUP BY 1) ar
                   ON ar.tambon_code = pe.tambon_code
        """)
    df = con.sql(" UNION ALL ".join(parts)).df()
    return (df["census"].astype(str).to_numpy(), df["person_id"].to_numpy(), df["listed"].to_numpy(bool),
            df["truly_out"].fillna(False).to_numpy(bool), df["nationality"].astype(str).to_numpy(),
            df["region"].astype(str).to_numpy(), df["moved_up_caveat"].to_numpy(bool))


def _quality(person: np.ndarray, listed: np.ndarray, out: np.ndarray, draws: np.ndarray) -> ListQuality:
    """`draws`: (B, persons) multiplicities of each person in each bootstrap sample."""
    ids, inv = np.unique(person, return_inverse=True)
    tp_p = np.bincount(inv, weights=(listed & out).astype(float), minlength=len(ids))
    li_p = np.bincount(inv, weights=listed.astype(float), minlength=len(ids))
    out_p = np.bincount(inv, weights=out.astype(float), minlength=len(ids))
    tp, li, tr = int(tp_p.sum()), int(li_p.sum()), int(out_p.sum())

    def interval(num: np.ndarray, den: np.ndarray, point: float | None) -> Interval:
        if point is None:
            return Interval(value=None, low=None, high=None)
        w = draws[:, ids]  # (B, persons of this subset)
        n, d = w @ num, w @ den
        ok = d > 0
        vals = n[ok] / d[ok]
        lo, hi = (float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))) if len(vals) else (None, None)
        return Interval(value=point, low=lo, high=hi)

    return ListQuality(
        rows=len(person), listed=li, truly_out=tr, true_positives=tp, base_rate=tr / len(person) if len(person) else 0.0,
        precision=interval(tp_p, li_p, tp / li if li else None), recall=interval(tp_p, out_p, tp / tr if tr else None),
        judged=min(li, tr) >= MIN_GROUP_CASES,
    )


def evaluate_notfound(con: duckdb.DuckDBPyConnection, truth_dir: Path, as_of: dt.date | None = None,
                      cal: SchoolCalendar | None = None, censuses: list[dt.date] | None = None,
                      bootstrap: int = 1000, seed: int = 0, evidence: tuple[Evidence, ...] = EVIDENCE) -> NotFoundQuality:
    """The lists of `censuses` (default: every census with complete evidence by as-of) against the
    truth. `evidence` lets a test measure the list without one source."""
    from features.pointintime.pipeline import latest_delivery

    cal = cal or SchoolCalendar()
    as_of = as_of or latest_delivery(con)
    censuses = censuses if censuses is not None else complete_censuses(con, cal, as_of)
    if not censuses:
        raise RuntimeError(f"no census has complete evidence by {as_of}")
    census, person, listed, out, nationality, region, caveat = _rows(con, truth_dir, cal, censuses, as_of, evidence)
    n_persons = int(person.max()) + 1
    rng = np.random.default_rng(seed)
    # Each draw: every person's multiplicity in a resample of the persons present.
    present = np.unique(person)
    draws = np.zeros((bootstrap, n_persons))
    for b in range(bootstrap):
        np.add.at(draws[b], rng.choice(present, size=len(present), replace=True), 1.0)

    def q(mask: np.ndarray) -> ListQuality:
        return _quality(person[mask], listed[mask], out[mask], draws)

    every = np.ones(len(person), bool)
    groups = {"nationality": nationality, "region": region}
    return NotFoundQuality(
        as_of=as_of, censuses=censuses, bootstrap=bootstrap, overall=q(every),
        per_census={c: q(census == c) for c in sorted(set(census))},
        per_group={g: {v: q(vals == v) for v in sorted(set(vals))} for g, vals in groups.items()},
        moved_up_caveat=q(caveat), without_moved_up_caveat=q(~caveat),
    )
