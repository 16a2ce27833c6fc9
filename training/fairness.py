"""Fairness audit at the operating thresholds: fairlearn's MetricFrame metrics, computed with numpy.

For each audited attribute (sex, region, province, nationality status, CCT poverty, disability)
and each group: selection rate, precision, false-positive and false-negative rates of the flag
"at-risk or problem" (and of "problem" alone), the ratio of each to the reference group (the
largest group), and whether the ratio lies in the band. Groups with too few rows or dropouts are
reported but flagged `too_small`: their ratios are noise, not evidence.

The per-group rates are the ones fairlearn's MetricFrame gives (selection_rate, precision,
false_positive_rate, false_negative_rate; a test holds them equal), computed with one numpy
bincount pass per attribute: MetricFrame calls each metric once per group and took ~1 s per attribute
on a few thousand rows, far too slow for 77 provinces on millions of rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import FairnessConfig

AUDIT_METRICS: tuple[str, ...] = ("selection_rate", "precision", "fpr", "fnr")


def _by_group(y: np.ndarray, flagged: np.ndarray, sf: np.ndarray) -> pd.DataFrame:
    """count, positives, selection_rate, precision, fpr, fnr per group (0 where undefined, as fairlearn)."""
    names, code = np.unique(sf, return_inverse=True)
    k = len(names)
    count = np.bincount(code, minlength=k).astype(float)
    positives = np.bincount(code, weights=y, minlength=k)
    selected = np.bincount(code, weights=flagged, minlength=k)
    tp = np.bincount(code, weights=y * flagged, minlength=k)
    fp = selected - tp
    negatives = count - positives

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    return pd.DataFrame({
        "count": count, "positives": positives, "selection_rate": ratio(selected, count),
        "precision": ratio(tp, selected), "fpr": ratio(fp, negatives), "fnr": ratio(positives - tp, positives),
    }, index=pd.Index(names.astype(str), name="group"))


def audit_table(
    y: np.ndarray, flagged: np.ndarray, groups: pd.DataFrame, cfg: FairnessConfig, operating_point: str = "flagged",
) -> pd.DataFrame:
    """One row per (attribute, group). `groups` holds one column per attribute (values as strings)."""
    lo, hi = cfg.band
    rows = []
    y = np.asarray(y, dtype=int)
    flagged = np.asarray(flagged, dtype=int)
    for attr in groups.columns:
        sf = groups[attr].astype("object").where(groups[attr].notna(), "unknown").astype(str).to_numpy()
        table = _by_group(y, flagged, sf)
        reference = str(table["count"].idxmax())
        ref = table.loc[reference]
        for g, r in table.iterrows():
            too_small = bool(r["count"] < cfg.min_group_rows or r["positives"] < cfg.min_group_positives)
            row = {"operating_point": operating_point, "attribute": attr, "group": str(g), "reference": reference,
                   "count": int(r["count"]), "positives": int(r["positives"]), "too_small": too_small}
            for m in AUDIT_METRICS:
                row[m] = float(r[m])
                ratio = float(r[m] / ref[m]) if ref[m] > 0 else float("nan")
                row[f"{m}_ratio"] = ratio
                row[f"{m}_in_band"] = bool(lo <= ratio <= hi) if not np.isnan(ratio) else False
            rows.append(row)
    return pd.DataFrame(rows)


def gate_failures(table: pd.DataFrame, cfg: FairnessConfig, operating_point: str = "flagged") -> list[str]:
    """Reasons the audit fails the release gate: gated attributes, judgeable groups, gated metrics."""
    out = []
    t = table[(table["operating_point"] == operating_point) & table["attribute"].isin(cfg.gate_attributes)
              & ~table["too_small"]]
    for _, r in t.iterrows():
        for m in cfg.gate_metrics:
            if not r[f"{m}_in_band"]:
                out.append(f"{r['attribute']}={r['group']}: {m} ratio {r[f'{m}_ratio']:.3f} outside "
                           f"[{cfg.band[0]}, {cfg.band[1]}] (reference {r['reference']})")
    return out


def flatten(table: pd.DataFrame) -> dict[str, float]:
    """groups.<attribute>.<group>.<metric> (and _ratio) for the 'flagged' operating point;
    groups.problem.<attribute>.<group>.<metric> for the 'problem' one."""
    out: dict[str, float] = {}
    for _, r in table.iterrows():
        prefix = "groups" if r["operating_point"] == "flagged" else f"groups.{r['operating_point']}"
        base = f"{prefix}.{r['attribute']}.{r['group']}"
        out[f"{base}.count"] = float(r["count"])
        out[f"{base}.positives"] = float(r["positives"])
        for m in AUDIT_METRICS:
            out[f"{base}.{m}"] = float(r[m])
            out[f"{base}.{m}_ratio"] = float(r[f"{m}_ratio"])
    return out
