"""The observable ceiling: the best score given what the delivered records reveal by a round's as-of date.

The full ceiling (process.ceiling, `p_dropout` in truth/rounds.parquet) knows the latent engagement
and every shock that has arrived, recorded or not. No model of the deliveries can know those, so a
model's "gap to the ceiling" mixes its own shortfall with information nobody has. This module
computes, beside it, `p_observable` = E[p_dropout | Z], where Z is what records delivered by the
as-of date say about the child (PROCESS.md §3b defines Z exactly):

  * the child's structural state, as the census, CCT screening and welfare links state it: the
    dropout log-odds without the engagement term and without the school's random effect (grade x
    term, poverty, CCT dimensions, carers, travel, the school's kind and remoteness, province,
    nationality, disability, chronic illness, over-age, repetition, an earlier pregnancy), at their
    true values;
  * the school's climate only as far as its past shows it: no record states a school's random
    effect, but the censuses delivered by the as-of date show how many of its pupils left in the
    terms before, against how many a school of average climate would have lost (`SchoolHistory`);
  * proxies of the engagement and of this term's shocks from the records themselves: this term's
    attendance in the months delivered by the as-of date, the last term's attendance and marks,
    interim marks and care screening when delivered, welfare links of this term's shocks when
    delivered (their delivery dates from the schedule, lateness included).

Because the records' noise is independent of the term-end draw given the child's state,
E[p_dropout | Z] = E[dropout | Z]: the observable ceiling is calibrated whenever the full one is.
The conditional expectation is estimated by a logistic regression of p_dropout on Z (a fractional
response GLM, fitted by Newton's method per province, term and round, unpenalised intercept), so
Σ p_observable = Σ p_dropout in every fitted group exactly. A logistic function of Z is a lower bound
on the best function of Z: a model could in principle beat p_observable by a little.

Where it sits: province.ProvinceSim.term opens a `TermObservations` before the term's records are
drawn, records.Records fills it as rows are emitted (no random draws: the world does not change),
and after the records the driver asks `observable_ceiling` for each round and closes the term into
the child's `ObservedHistory`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_CARE = 8  # care-screening dimensions (features.contract.CARE_DIMENSIONS)
NOT_DELIVERED = np.iinfo(np.int64).max  # a record whose delivery falls outside the run


def _logit_rate(present: np.ndarray, days: np.ndarray) -> np.ndarray:
    # a half-count prior keeps full or empty attendance finite
    return np.log((present + 0.5) / (days - present + 0.5))


@dataclass
class ObservedHistory:
    """Per child of a province (index = position in the population's arrays): what the last term with
    records showed. NaN = nothing observed yet."""

    att_logit: np.ndarray
    gpa: np.ndarray
    care: np.ndarray  # (n, N_CARE) statuses 0 / 1 / 2

    @classmethod
    def empty(cls, n: int) -> ObservedHistory:
        return cls(att_logit=np.full(n, np.nan), gpa=np.full(n, np.nan), care=np.full((n, N_CARE), np.nan))

    def close_term(self, idx: np.ndarray, term: TermObservations) -> None:
        """Carry the term's records into the history (every record of a finished term counts as
        delivered by the next term's rounds: the last ones arrive weeks before its first as-of date)."""
        present, days = term.attendance_by(NOT_DELIVERED)
        seen = days > 0
        self.att_logit[idx[seen]] = _logit_rate(present[seen], days[seen])
        gpa = term.final_gpa if term.final_gpa is not None else np.full(term.n, np.nan)
        interim = term.marks_by(NOT_DELIVERED)
        gpa = np.where(np.isnan(gpa), interim, gpa)
        ok = ~np.isnan(gpa)
        self.gpa[idx[ok]] = gpa[ok]
        care = term.care_by(NOT_DELIVERED)
        ok = ~np.isnan(care[:, 0])
        self.care[idx[ok]] = care[ok]


@dataclass
class TermObservations:
    """The records of one term about its OBEC pupils (rows = the term's pupils, in order), each with
    the day its delivery arrived."""

    n: int
    attendance: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (delivered, present, days)
    interim: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (delivered, gpa; NaN = none)
    final_gpa: np.ndarray | None = None
    care: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (delivered, (n, 8) status; NaN = none)
    welfare: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (shock, rows, delivered)

    def add_attendance(self, delivered: int, present: np.ndarray, days: np.ndarray) -> None:
        self.attendance.append((delivered, np.asarray(present, float), np.asarray(days, float)))

    def add_marks(self, kind: str, delivered: int, rows: np.ndarray, gpa: np.ndarray) -> None:
        g = np.full(self.n, np.nan)
        g[rows] = gpa[rows]
        if kind == "final":
            self.final_gpa = g
        else:
            self.interim.append((delivered, g))

    def add_care(self, delivered: int, rows: np.ndarray, status: np.ndarray) -> None:
        s = np.full((self.n, N_CARE), np.nan)
        s[rows] = status[rows]
        self.care.append((delivered, s))

    def add_welfare(self, shock: int, rows: np.ndarray, delivered: np.ndarray) -> None:
        self.welfare.append((shock, np.asarray(rows, np.int64), np.asarray(delivered, np.int64)))

    def attendance_by(self, as_of: int) -> tuple[np.ndarray, np.ndarray]:
        present, days = np.zeros(self.n), np.zeros(self.n)
        for delivered, p, d in self.attendance:
            if delivered <= as_of:
                present += p
                days += d
        return present, days

    def marks_by(self, as_of: int) -> np.ndarray:
        out = np.full(self.n, np.nan)
        for delivered, g in self.interim:
            if delivered <= as_of:
                out = np.where(np.isnan(g), out, g)
        return out

    def care_by(self, as_of: int) -> np.ndarray:
        out = np.full((self.n, N_CARE), np.nan)
        for delivered, s in self.care:
            if delivered <= as_of:
                out = np.where(np.isnan(s), out, s)
        return out

    def welfare_by(self, as_of: int, shocks: int) -> np.ndarray:
        out = np.zeros((self.n, shocks))
        for k, rows, delivered in self.welfare:
            out[rows[delivered <= as_of], k] = 1.0
        return out


@dataclass
class SchoolHistory:
    """Per school of a province: its pupils' dropouts in past terms, and the dropouts a school of
    average climate would have had with the same pupils, each term revealed on the day its horizon
    census (the next one) was delivered.

    The school's random effect u (config.school_effect_sd) is drawn once and never recorded; what the
    deliveries reveal of it is its past: a term's dropouts are the pupils its next census no longer
    shows. With O observed and E expected dropouts (E = the term's ceilings with exp(-u) taken out,
    the rare-event approximation of removing u from the logit), the Gamma-Poisson posterior mean of
    exp(u) is (O + α) / (E + α), α = 1 / (exp(sd²) − 1) matching the prior's variance of exp(u):
    `log_ratio` is its log, 0 for a school with no revealed past. The observable ceiling's
    regression then weighs it like any column of Z."""

    terms: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)  # (delivered, observed, expected)

    def add_term(self, delivered: int, school: np.ndarray, dropout: np.ndarray, expected: np.ndarray,
                 schools: int) -> None:
        self.terms.append((delivered, np.bincount(school, weights=dropout.astype(float), minlength=schools),
                           np.bincount(school, weights=expected, minlength=schools)))

    def log_ratio(self, as_of: int, schools: int, effect_sd: float) -> np.ndarray:
        observed, expected = np.zeros(schools), np.zeros(schools)
        for delivered, o, e in self.terms:
            if delivered <= as_of:
                observed += o
                expected += e
        if effect_sd <= 0:
            return np.zeros(schools)  # no school effect: the past says nothing beyond chance
        alpha = 1.0 / np.expm1(effect_sd**2)
        return np.log((observed + alpha) / (expected + alpha))


def observable_features(term: TermObservations, history: ObservedHistory, idx: np.ndarray, as_of: int,
                        structural_logit: np.ndarray, shocks: int, school_signal: np.ndarray) -> np.ndarray:
    """Z of PROCESS.md §3b for the term's pupils `idx` at day `as_of` (one row per pupil);
    `structural_logit` without the school's random effect, `school_signal` what its past reveals of
    it (`SchoolHistory.log_ratio` of each pupil's school)."""
    cols: list[np.ndarray] = [structural_logit, school_signal]

    def with_flag(v: np.ndarray) -> None:
        has = ~np.isnan(v)
        cols.extend([np.where(has, v, 0.0), has.astype(float)])

    present, days = term.attendance_by(as_of)
    with_flag(np.where(days > 0, _logit_rate(present, days), np.nan))
    with_flag(history.att_logit[idx])
    with_flag(term.marks_by(as_of))
    with_flag(history.gpa[idx])
    care_now = term.care_by(as_of)
    care = np.where(np.isnan(care_now), history.care[idx], care_now)
    has_care = ~np.isnan(care[:, 0])
    cols.extend(np.where(has_care[:, None], care, 0.0).T)
    cols.extend([has_care.astype(float), (~np.isnan(care_now[:, 0])).astype(float)])
    cols.extend(term.welfare_by(as_of, shocks).T)
    return np.column_stack(cols)


def fit_fractional_logit(X: np.ndarray, p: np.ndarray, ridge: float = 1e-9, iters: int = 100) -> np.ndarray:
    """Fitted values of a logistic regression of the probabilities `p` on `X` (with an intercept).

    Minimises Σ −[p log μ + (1 − p) log(1 − μ)] by Newton's method on standardised columns; the
    intercept is not penalised, so its score equation Σ (μ − p) = 0 holds at the optimum: the fit
    keeps the sum of `p` exactly. A negligible ridge on the other coefficients and a least-squares
    Newton step keep collinear columns (e.g. two flags that coincide in a small province) harmless;
    constant columns are dropped. Deterministic (no random start)."""
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    n = len(p)
    if n == 0:
        return p
    sd = X.std(axis=0)
    keep = sd > 1e-12
    Z = np.column_stack([np.ones(n), (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]])
    pen = np.full(Z.shape[1], ridge * n)
    pen[0] = 0.0
    beta = np.zeros(Z.shape[1])
    beta[0] = np.log(p.mean() / (1 - p.mean()))

    def loss(b: np.ndarray) -> float:
        eta = Z @ b
        return float(np.sum(np.logaddexp(0, eta) - p * eta) + 0.5 * np.sum(pen * b * b))

    current = loss(beta)
    for _ in range(iters):
        mu = 1 / (1 + np.exp(-(Z @ beta)))
        grad = Z.T @ (mu - p) + pen * beta
        hess = (Z * (mu * (1 - mu))[:, None]).T @ Z + np.diag(pen + 1e-12)
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        new = current
        while t > 1e-8:  # backtracking keeps every step a descent
            cand = beta - t * step
            new = loss(cand)
            if new <= current:
                break
            t /= 2
        if new > current:
            break  # no descent left: at the optimum to machine precision
        beta, gain, current = cand, current - new, new
        if gain < 1e-12 * max(1.0, abs(current)):
            break
    return 1 / (1 + np.exp(-(Z @ beta)))


def observable_ceiling(p_full: np.ndarray, features: np.ndarray) -> np.ndarray:
    """p_observable for one province, term and round: E[p_dropout | Z] estimated as above."""
    return fit_fractional_logit(features, p_full)
