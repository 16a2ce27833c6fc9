"""Fairness audit at the operating point, with student-level bootstrap intervals: a gate that tells
signal from noise.

For each audited attribute (sex, region, province, nationality status, CCT poverty, disability) and
each group: selection rate, precision, false-positive and false-negative rates of the flag
"at-risk or problem" (and of "problem" alone), observed/expected dropouts (calibration within the
group), each rate's ratio to the reference group (the group with most students), and a 95%
interval of every ratio and of O/E from one set of student-level bootstrap replicates
(training/bootstrap.py): a pupil's early and mid rows share one outcome, so rows are not the unit.

What counts as harm, and when it is evidence:
- harm is one-sided: a group is harmed when its dropouts are missed more often (FNR ratio above the
  band) or its pupils are falsely flagged more often (FPR ratio above the band) than the reference's.
  Fewer missed dropouts is no failure. Precision parity is reported, not gated: it conflicts with
  calibration whenever base rates differ (the true probabilities failed it in the demo).
- calibration within a group: O/E outside its band in either direction.
- a breach only when the interval lies wholly outside the band, and only for a judgeable group:
  sizes are counted in students (early + mid rows count a pupil once), and a group needs enough
  students and enough students who dropped out.

The per-group point rates are the ones fairlearn's MetricFrame gives (a test holds them equal),
computed with numpy: one matrix product per attribute for all groups and replicates.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from training.config import FairnessConfig, IntervalConfig

AUDIT_METRICS: tuple[str, ...] = ("selection_rate", "precision", "fpr", "fnr", "oe")
RATE_METRICS: tuple[str, ...] = ("selection_rate", "precision", "fpr", "fnr")
# Harm when the group's ratio to the reference lies above the band; what it means for a pupil.
HARM_METRICS: dict[str, str] = {"fnr": "more missed dropouts", "fpr": "more false alarms"}


def _indicator(sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names, code = np.unique(sf, return_inverse=True)
    onehot = np.zeros((len(sf), len(names)))
    onehot[np.arange(len(sf)), code] = 1.0
    return names, onehot


def _rates(count: np.ndarray, positives: np.ndarray, selected: np.ndarray, tp: np.ndarray,
           expected: np.ndarray) -> dict[str, np.ndarray]:
    """Rates from weighted counts (any shape); 0 where undefined, as fairlearn; O/E NaN without scores."""
    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)

    with np.errstate(divide="ignore", invalid="ignore"):
        oe = np.where(expected > 0, positives / np.where(expected > 0, expected, 1.0), np.nan)
    return {"selection_rate": ratio(selected, count), "precision": ratio(tp, selected),
            "fpr": ratio(selected - tp, count - positives), "fnr": ratio(positives - tp, positives), "oe": oe}


def _interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise percentile interval of replicates (n_boot, k), ignoring undefined replicates."""
    alpha = (1 - level) / 2
    v = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is an undefined interval
            lo, hi = np.nanquantile(v, alpha, axis=0), np.nanquantile(v, 1 - alpha, axis=0)
    return lo, hi


def audit_table(
    y: np.ndarray, flagged: np.ndarray, groups: pd.DataFrame, cfg: FairnessConfig, operating_point: str = "flagged",
    *, score: np.ndarray | None = None, student_key: np.ndarray | None = None, weights: np.ndarray | None = None,
    intervals: IntervalConfig | None = None, bootstrap: bool = True,
) -> pd.DataFrame:
    """One row per (attribute, group). `groups` holds one column per attribute (values as strings).

    `score` (calibrated probabilities) adds O/E per group; `student_key` counts sizes in students and
    draws the bootstrap by student (without it every row is its own student); `weights` are
    replicates already drawn for these rows (training.bootstrap.student_weights), so every attribute
    and operating point shares them. `bootstrap=False` skips the replicates (intervals and breaches
    are then NaN / False): the replicate matrix is n_boot x rows, too large for a national round, so
    monitoring computes its own analytic intervals from the counts."""
    iv = intervals or IntervalConfig()
    y = np.asarray(y, dtype=float)
    flagged = np.asarray(flagged, dtype=float)
    p = np.asarray(score, dtype=float) if score is not None else np.zeros_like(y)
    keys = np.asarray(student_key) if student_key is not None else np.arange(len(y))
    if weights is None and len(y) and bootstrap:
        from training.bootstrap import student_weights

        weights = student_weights(keys, iv.n_boot, iv.seed)
    _, student = np.unique(keys, return_inverse=True)
    lo_band, hi_band = cfg.band
    rows = []
    for attr in groups.columns:
        sf = groups[attr].astype("object").where(groups[attr].notna(), "unknown").astype(str).to_numpy()
        names, g = _indicator(sf)
        cols = np.column_stack([g, g * y[:, None], g * flagged[:, None], g * (y * flagged)[:, None], g * p[:, None]])
        k = len(names)
        point = _rates(*(cols.sum(axis=0).reshape(5, k)))
        rep = _rates(*np.moveaxis((weights @ cols).reshape(-1, 5, k), 1, 0)) if weights is not None else None
        # Sizes in students: a pupil in the group in any of these rows counts once, as does a dropout.
        code = g.argmax(axis=1)
        students = np.array([len(np.unique(student[code == j])) for j in range(k)])
        positive_students = np.array([len(np.unique(student[(code == j) & (y > 0)])) for j in range(k)])
        ref = int(np.argmax(students))
        for j, name in enumerate(names):
            too_small = bool(students[j] < cfg.min_group_students or positive_students[j] < cfg.min_group_positives)
            row: dict[str, object] = {
                "operating_point": operating_point, "attribute": attr, "group": str(name), "reference": str(names[ref]),
                "count": int(g[:, j].sum()), "students": int(students[j]), "positives": int(cols[:, k + j].sum()),
                "positive_students": int(positive_students[j]), "too_small": too_small,
            }
            for m in AUDIT_METRICS:
                value = float(point[m][j])
                row[m] = value if (m != "oe" or score is not None) else math.nan
                if m == "oe":
                    lo, hi = _interval(rep[m][:, [j]], iv.level) if rep is not None and score is not None else ([math.nan], [math.nan])
                    row["oe_lo"], row["oe_hi"] = float(lo[0]), float(hi[0])
                    row["oe_breach"] = bool(score is not None and (hi[0] < cfg.oe_band[0] or lo[0] > cfg.oe_band[1]))
                    continue
                ref_value = float(point[m][ref])
                row[f"{m}_ratio"] = value / ref_value if ref_value > 0 else math.nan
                if rep is not None:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        r = rep[m][:, j] / np.where(rep[m][:, ref] > 0, rep[m][:, ref], np.nan)
                    lo, hi = _interval(r[:, None], iv.level)
                    row[f"{m}_ratio_lo"], row[f"{m}_ratio_hi"] = float(lo[0]), float(hi[0])
                else:
                    row[f"{m}_ratio_lo"] = row[f"{m}_ratio_hi"] = math.nan
                ratio = row[f"{m}_ratio"]
                row[f"{m}_in_band"] = bool(lo_band <= ratio <= hi_band) if not math.isnan(ratio) else False
                # Harm is one-sided and needs evidence: the whole interval above the band's top.
                lo_r = row[f"{m}_ratio_lo"]
                row[f"{m}_breach"] = bool(m in HARM_METRICS and not math.isnan(lo_r) and lo_r > hi_band)
            rows.append(row)
    return pd.DataFrame(rows)


def gate_failures(table: pd.DataFrame, cfg: FairnessConfig, operating_point: str = "flagged") -> list[str]:
    """Reasons the audit fails the release gate: gated attributes, judgeable groups, gated metrics,
    and only where the interval lies wholly outside the band."""
    out = []
    t = table[(table["operating_point"] == operating_point) & table["attribute"].isin(cfg.gate_attributes)
              & ~table["too_small"]]
    for _, r in t.iterrows():
        for m in cfg.gate_metrics:
            if m == "oe":
                if r["oe_breach"]:
                    out.append(f"{r['attribute']}={r['group']}: O/E {r['oe']:.2f} (interval {r['oe_lo']:.2f}-"
                               f"{r['oe_hi']:.2f}) outside [{cfg.oe_band[0]}, {cfg.oe_band[1]}]: the score "
                               f"{'under' if r['oe_lo'] > cfg.oe_band[1] else 'over'}-states this group's risk")
            elif r[f"{m}_breach"]:
                out.append(f"{r['attribute']}={r['group']}: {m} ratio {r[f'{m}_ratio']:.3f} (interval "
                           f"{r[f'{m}_ratio_lo']:.2f}-{r[f'{m}_ratio_hi']:.2f}) above {cfg.band[1]}: "
                           f"{HARM_METRICS[m]} than in {r['reference']}")
    return out


def flatten(table: pd.DataFrame) -> dict[str, float]:
    """groups.<attribute>.<group>.<metric> (and _ratio, _ratio_lo, _ratio_hi, oe_lo, oe_hi, students)
    for the 'flagged' operating point; groups.problem.<attribute>.<group>.<metric> for the 'problem' one."""
    out: dict[str, float] = {}
    for _, r in table.iterrows():
        prefix = "groups" if r["operating_point"] == "flagged" else f"groups.{r['operating_point']}"
        base = f"{prefix}.{r['attribute']}.{r['group']}"
        for c in ("count", "positives", "students", "positive_students"):
            out[f"{base}.{c}"] = float(r[c])
        for m in RATE_METRICS:
            out[f"{base}.{m}"] = float(r[m])
            for suffix in ("_ratio", "_ratio_lo", "_ratio_hi"):
                out[f"{base}.{m}{suffix}"] = float(r[f"{m}{suffix}"])
        for c in ("oe", "oe_lo", "oe_hi"):
            out[f"{base}.{c}"] = float(r[c])
    return out
