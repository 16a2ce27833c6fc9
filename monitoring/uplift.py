"""Who is expected to benefit, beside who is at risk (issue 15, part 6c: the analysts' uplift view).

Where it sits: beside monitoring/effects.py, for analysts after a round's labels have matured and
a randomised holdout ran. The highest risk is not the largest benefit (Athey et al.): a CCT grant
helps a poor child, counselling a disengaged one, and a child at risk from a shock gains from
neither. Two pure pieces:

* `cell_uplift`: the estimated benefit of serving per cell of what the school sees (for instance
  the action its rule picks x poverty x term): the held-out dropout rate minus the served one in
  that cell, from the eligible rows only (a difference of randomised arms, so unbiased per cell).
* `net_benefit_at_capacity`: the dropouts averted when each school serves the top ceil(share x n)
  of its pupils by a ranking, summed over schools, given each pupil's benefit — to compare serving
  by risk with serving by expected benefit at the schools' capacity (the simulator's truth gives
  the benefit: benchmarks/bench_loop.py).

And the view itself, `uplift_view` -> `UpliftView`, the typed artefact `ews monitor --actions`
writes beside the round's report (monitoring/report.py `write_report`: uplift.json; serving hands
the file to analysts and auditors, GET /ews/api/rounds/{round}/uplift, without importing this
package). It holds aggregates only: per cell, pupils per arm, dropout rates and the uplift with a
bootstrap interval, cells with fewer than `min_cell_students` pupils in an arm suppressed; and the
dropouts averted when each school serves its top `capacity_share` of the eligible list by risk or
by the estimated benefit, each estimated from the randomised arms among the pupils that ranking
picks (unbiased because the arm was drawn at random), with the benefit ranking cross-fitted (the
cell uplift that ranks a pupil comes from the other half of the students, so its own outcome never
chooses it).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


def cell_uplift(rows: pd.DataFrame, cells: list[str], min_rows: int = 30) -> pd.Series:
    """Held-out minus served dropout rate per cell (positive = serving helps), NaN where either arm
    has fewer than `min_rows` rows. `rows`: eligible rows with `arm` ('served' / 'holdout'), `dropout`."""
    g = rows.groupby([*cells, "arm"])["dropout"].agg(["mean", "size"]).unstack("arm")
    ok = (g[("size", "served")] >= min_rows) & (g[("size", "holdout")] >= min_rows)
    return (g[("mean", "holdout")] - g[("mean", "served")]).where(ok).rename("uplift")


def top_share_per_school(school: np.ndarray, score: np.ndarray, share: float,
                         tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Mask of the ceil(share x n_s) highest `score` rows of each school s (ties: higher `tiebreak`
    first, then first row first)."""
    second = np.zeros(len(score)) if tiebreak is None else -np.asarray(tiebreak, dtype=float)
    order = np.lexsort((np.arange(len(score)), second, -np.asarray(score, dtype=float), np.asarray(school)))
    s = np.asarray(school)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.array([], dtype=int)
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    out = np.zeros(len(order), dtype=bool)
    out[order] = rank < np.repeat(np.ceil(share * sizes).astype(np.int64), sizes)
    return out


def net_benefit_at_capacity(school: np.ndarray, ranking: np.ndarray, benefit: np.ndarray, share: float) -> float:
    """Expected dropouts averted when every school serves its top `share` by `ranking`; `benefit` is
    each row's reduction of dropout probability if served (>= 0 where serving helps)."""
    chosen = top_share_per_school(school, ranking, share)
    return float(np.asarray(benefit, dtype=float)[chosen].sum())


# ------------------------------------------------------------------------------------------------
# the analysts' view: a typed artefact written beside the monitoring report

SCHEMA_VERSION = 1
CellName = Literal["rule_action", "poverty", "risk_group", "attendance"]


class UpliftConfig(BaseModel):
    """How the uplift view is cut and judged (part of MonitorConfig, so a report says its rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cells: tuple[CellName, ...] = Field(
        ("rule_action", "poverty", "risk_group"),
        description="What a cell is made of, from what the school saw: the action the usual rule picks "
                    "(CCT application for an extremely poor pupil, a home visit below the CCT attendance "
                    "condition, counselling otherwise), the CCT poverty screening, the published risk group, "
                    "attendance against the CCT condition.")
    min_cell_students: int = Field(20, ge=5, description="A cell with fewer pupils than this in either arm is suppressed (no counts, no rates).")
    capacity_share: float = Field(0.5, gt=0, lt=1, description="Each school serves this share (rounded up) of its eligible pupils in the comparison of rankings.")
    reps: int = Field(1000, ge=100, description="Bootstrap replicates for the intervals.")
    seed: int = Field(0, description="Seed of the bootstrap and of the cross-fitting folds.")


class UpliftCell(BaseModel):
    """One cell: the held-out minus the served dropout rate (positive = serving helps), fractions."""

    model_config = ConfigDict(extra="forbid")
    cell: dict[str, str]
    suppressed: bool = Field(description="Fewer than min_cell_students pupils in an arm: nothing else is given.")
    served: int | None = None
    holdout: int | None = None
    dropout_rate_served: float | None = None
    dropout_rate_holdout: float | None = None
    uplift: float | None = None
    low: float | None = None
    high: float | None = None


class RankingValue(BaseModel):
    """Dropouts averted when each school serves its top share by one ranking (higher is better)."""

    model_config = ConfigDict(extra="forbid")
    ranking: Literal["risk", "estimated_benefit"]
    pupils_served: int
    averted: float = Field(description="Expected dropouts averted: pupils served x (held-out - served rate among those the ranking picks).")
    low: float
    high: float


class CapacityComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capacity_share: float
    by_risk: RankingValue
    by_benefit: RankingValue
    benefit_minus_risk: float = Field(description="Dropouts averted by the benefit ranking beyond the risk ranking.")
    low: float
    high: float
    same_pupils: float = Field(description="Share of the pupils served that both rankings pick.")


class UpliftView(BaseModel):
    """Who is expected to benefit, beside who is at risk: one round, for analysts and auditors."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    round_id: str
    design: str
    source: str
    eligible: int = Field(description="Eligible pupils with a matured outcome (served or held out).")
    confidence: float
    resampled: Literal["student", "school"]
    config: UpliftConfig
    cells: list[UpliftCell]
    capacity: CapacityComparison | None = None
    note: str = ""
    generated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


POVERTY = {True: "extremely_poor", False: "not_extreme"}


def cell_columns(rows: pd.DataFrame, cells: tuple[str, ...]) -> pd.DataFrame:
    """The cell labels of each row, from what the school saw: `extremely_poor`, `att_below_cct_85`
    (model inputs, None where unknown) and `risk_group`."""
    poor = rows["extremely_poor"].map(lambda v: POVERTY.get(bool(v)) if pd.notna(v) else "not_screened")
    low_att = rows["att_below_cct_85"].map(lambda v: bool(v) if pd.notna(v) else False)
    label = {
        "poverty": poor,
        "attendance": rows["att_below_cct_85"].map(lambda v: ("below_85" if v else "at_least_85") if pd.notna(v) else "unknown"),
        # the usual rule (EEF practice): a grant application for the extremely poor, a home visit for a
        # pupil missing school, counselling otherwise
        "rule_action": pd.Series(np.where(poor.eq("extremely_poor"), "cct_application",
                                          np.where(low_att, "home_visit", "counselling")), index=rows.index),
        "risk_group": rows["risk_group"].fillna("not_scored").astype(str),
    }
    return pd.DataFrame({c: label[c].astype(str) for c in cells}, index=rows.index)


def _weights(clusters: np.ndarray, reps: int, rng: np.random.Generator, block: int = 50):  # noqa: ANN202 - a generator
    """Bootstrap row weights, `block` replicates at a time: clusters drawn with replacement."""
    _, inv = np.unique(clusters, return_inverse=True)
    k = int(inv.max()) + 1 if len(inv) else 0
    for s in range(0, reps, block):
        b = min(block, reps - s)
        counts = rng.multinomial(k, np.full(k, 1.0 / k), size=b) if k else np.zeros((b, 0))
        yield counts[:, inv].astype(float)


def _averted(y: np.ndarray, served: np.ndarray, chosen: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per weight row: pupils chosen x (held-out - served dropout rate among the chosen)."""
    cs, ch = chosen & served, chosen & ~served
    ws, wh = (w * cs).sum(axis=1), (w * ch).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a replicate without one arm: NaN, left out
        rate_s = (w * (cs * y)).sum(axis=1) / ws
        rate_h = (w * (ch * y)).sum(axis=1) / wh
    return chosen.sum() * (rate_h - rate_s)


def cross_fitted_benefit(rows: pd.DataFrame, cells: list[str], folds: np.ndarray, min_rows: int) -> np.ndarray:
    """Each row's cell uplift estimated on the other fold's rows only (0 where that cell is too small
    there: no evidence of benefit)."""
    out = np.zeros(len(rows))
    for f in (0, 1):
        est = cell_uplift(rows[folds != f], cells, min_rows=min_rows)
        mine = folds == f
        joined = rows.loc[mine, cells].join(est, on=cells)["uplift"].fillna(0.0).to_numpy()
        out[mine] = joined
    return out


def uplift_view(rows: pd.DataFrame, cfg: UpliftConfig, round_id: str, confidence: float = 0.95,
                design: str = "holdout by pupil", source: str = "") -> UpliftView:
    """The round's `UpliftView` from matured rows joined with the assignment: student_key,
    school_code, dropout, risk_score, risk_group, extremely_poor, att_below_cct_85, arm (pure)."""
    from monitoring.effects import HOLDOUT, SERVED, holdout_effect

    by_school = design.endswith("school")
    resampled: Literal["student", "school"] = "school" if by_school else "student"
    e = rows[rows["arm"].isin([SERVED, HOLDOUT])].reset_index(drop=True)
    base = dict(round_id=round_id, design=design, source=source, eligible=len(e), confidence=confidence,
                resampled=resampled, config=cfg)
    served_all = e["arm"].eq(SERVED).to_numpy()
    if not served_all.any() or served_all.all():
        return UpliftView(**base, cells=[], note="no randomised holdout among the matured pupils: no uplift to estimate")
    cells = list(cfg.cells)
    e = pd.concat([e, cell_columns(e, cfg.cells).add_prefix("cell_")], axis=1)
    cell_cols = [f"cell_{c}" for c in cells]
    y = e["dropout"].to_numpy(dtype=float)
    cluster = e["school_code" if by_school else "student_key"].astype(str).to_numpy()
    out_cells: list[UpliftCell] = []
    for i, (values, g) in enumerate(e.groupby(cell_cols, sort=True)):
        values = values if isinstance(values, tuple) else (values,)
        label = dict(zip(cells, (str(v) for v in values), strict=True))
        s = g["arm"].eq(SERVED).to_numpy()
        n1, n0 = int(s.sum()), int((~s).sum())
        if min(n1, n0) < cfg.min_cell_students:
            out_cells.append(UpliftCell(cell=label, suppressed=True))
            continue
        gy = g["dropout"].to_numpy(dtype=float)
        itt, _ = holdout_effect(gy, s, cluster[g.index.to_numpy()], confidence=confidence, reps=cfg.reps,
                                seed=cfg.seed + i, resampled=resampled)
        out_cells.append(UpliftCell(cell=label, suppressed=False, served=n1, holdout=n0,
                                    dropout_rate_served=round(float(gy[s].mean()), 6),
                                    dropout_rate_holdout=round(float(gy[~s].mean()), 6),
                                    uplift=-itt.estimate, low=-itt.high, high=-itt.low))
    return UpliftView(**base, cells=out_cells, capacity=_compare_rankings(e, y, served_all, cluster, cell_cols, cfg, confidence))


def capacity_choices(e: pd.DataFrame, cluster: np.ndarray, cell_cols: list[str], cfg: UpliftConfig,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(chosen by risk, chosen by cross-fitted estimated benefit): each school's top
    `capacity_share` of its eligible rows `e` (columns school_code, risk_score, arm, dropout, cells)."""
    # folds by the resampled unit, so a student (or school) is never on both sides
    units, inv = np.unique(cluster, return_inverse=True)
    folds = rng.integers(0, 2, len(units))[inv]
    benefit = cross_fitted_benefit(e, cell_cols, folds, cfg.min_cell_students)
    school = e["school_code"].astype(str).to_numpy()
    risk = e["risk_score"].fillna(-1.0).to_numpy(dtype=float)
    by_risk = top_share_per_school(school, risk, cfg.capacity_share)
    # equal estimated benefit (the same cell, or no evidence): the riskier pupil first
    by_benefit = top_share_per_school(school, benefit, cfg.capacity_share, tiebreak=risk)
    return by_risk, by_benefit


def _compare_rankings(e: pd.DataFrame, y: np.ndarray, served: np.ndarray, cluster: np.ndarray, cell_cols: list[str],
                      cfg: UpliftConfig, confidence: float) -> CapacityComparison:
    rng = np.random.default_rng(cfg.seed)
    by_risk, by_benefit = capacity_choices(e, cluster, cell_cols, cfg, rng)
    one = np.ones((1, len(y)))
    point = (_averted(y, served, by_risk, one)[0], _averted(y, served, by_benefit, one)[0])
    boots = [(_averted(y, served, by_risk, w), _averted(y, served, by_benefit, w)) for w in _weights(cluster, cfg.reps, rng)]
    r = np.concatenate([b[0] for b in boots])
    b = np.concatenate([b[1] for b in boots])
    a = (1 - confidence) / 2

    def ci(x: np.ndarray) -> tuple[float, float]:
        lo, hi = np.nanquantile(x, [a, 1 - a])
        return round(float(lo), 3), round(float(hi), 3)

    n = int(by_risk.sum())
    return CapacityComparison(
        capacity_share=cfg.capacity_share,
        by_risk=RankingValue(ranking="risk", pupils_served=n, averted=round(float(point[0]), 3), low=ci(r)[0], high=ci(r)[1]),
        by_benefit=RankingValue(ranking="estimated_benefit", pupils_served=int(by_benefit.sum()),
                                averted=round(float(point[1]), 3), low=ci(b)[0], high=ci(b)[1]),
        benefit_minus_risk=round(float(point[1] - point[0]), 3), low=ci(b - r)[0], high=ci(b - r)[1],
        same_pupils=round(float((by_risk & by_benefit).sum() / max(n, 1)), 4))
