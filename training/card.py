"""The model card of a registered version, in Markdown and HTML, from one `TrainResult`.

Written to EWS_HOME/model_cards/<name>-v<N>/ (model_card.md, model_card.html, plots/) and logged
with the run. The HTML embeds its plots so the single file opens in any browser.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from features.pointintime.spec import GROUPS
from training.baselines import BASELINES
from training.config import TrainConfig
from training.metrics import calibration_breaches, greater_is_better

CARD_SECTIONS: tuple[str, ...] = (
    "Model details", "Intended use", "Out-of-scope uses", "Training data and period", "Metrics",
    "Calibration", "Risk groups and thresholds", "Fairness", "What drives the score", "Caveats",
)
INTENDED_USE: tuple[str, ...] = (
    "Rank the students of an OBEC school by their calibrated probability of dropping out by the next DMC "
    "census, twice a term (early and mid round), so the student-care team can decide whom to visit first.",
    "Sort students into the three groups schools already use (มีปัญหา problem / เสี่ยง at-risk / ปกติ normal) "
    "with cut-offs fixed at training and sized to school capacity.",
    "Give district and province teams counts of flagged students for their area.",
)
OUT_OF_SCOPE: tuple[str, ...] = (
    "Any decision against a student: exclusion, refusal of a transfer, grading, discipline. A flag is a reason to "
    "offer help, never a verdict.",
    "Allocating or withdrawing the CCT grant or any welfare benefit (the model sees poverty as a cause, "
    "it does not measure eligibility).",
    "Students outside OBEC schools, rounds outside the calendar the model was trained on, or a student with too little "
    "data (serving says \"no score, because …\" instead of guessing).",
    "Comparing or ranking schools or teachers by their students' scores.",
)
CAVEATS: tuple[str, ...] = (
    "Labels come from linked histories: a child who moved to another system and was not linked counts as a dropout; "
    "linkage errors put noise in the labels and the metrics.",
    "The model is evaluated on the latest labelled term; the world it is used in is one to two terms later. "
    "Monitor calibration and group error rates on each new term's outcomes.",
    "Fairness ratios of small groups (flagged 'too small to judge') are noise, not evidence either way; every ratio "
    "carries a student-level bootstrap interval, and the gate acts only when the whole interval is outside the band.",
    "Group disparities in selection rate, precision and false alarms partly reflect real differences in dropout risk "
    "(poverty, transition grades): a calibrated score flags a higher-risk group more often. The gate judges missed "
    "dropouts (one-sided) and O/E within each group; a lower-risk group's miss rate also sits above the reference's "
    "under the true probabilities, so on a very large world the band must allow for it.",
    "SHAP importances here are averages for the card; each student's reasons are computed from their own SHAP values.",
)
HEADLINE: tuple[str, ...] = (
    "roc_auc", "pr_auc", "within_grade_roc_auc", "within_grade_pr_auc", "precision_at_5pct", "precision_at_10pct", "precision_at_20pct", "recall_at_10pct",
    "school_precision_at_10pct", "school_recall_at_10pct", "brier", "ece",
)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _metric_rows(m: dict[str, float], prefix: str = "") -> list[dict[str, str]]:
    rows = []
    for k in HEADLINE:
        rows.append({
            "metric": k, "direction": "higher is better" if greater_is_better(k) else "lower is better",
            "model": _fmt(m.get(f"{prefix}{k}")),
            "ceiling": _fmt(m.get(f"ceiling_{k}")) if not prefix else "–",
            "gap": _fmt(m.get(f"gap_{k}")) if not prefix else "–",
            **{b: _fmt(m.get(f"baselines.{b}.{k}")) for b in BASELINES},
        })
    return rows


def _interval_rows(m: dict[str, float]) -> list[dict[str, str]]:
    """Every metric with a student-level 95% interval (training/pipeline.headline_intervals)."""
    names = sorted((k[len("ci95_low."):] for k in m if k.startswith("ci95_low.")),
                   key=lambda k: (k.count("."), k))
    return [{"metric": k, "value": _fmt(m.get(k)),
             "interval": f"[{_fmt(m.get(f'ci95_low.{k}'))}, {_fmt(m.get(f'ci95_high.{k}'))}]"} for k in names]


def _slice_rows(m: dict[str, float], slice_name: str) -> list[dict[str, str]]:
    values = sorted({k.split(".")[1] for k in m if k.startswith(f"{slice_name}.")})
    return [{"value": v, "rows": f"{int(m.get(f'{slice_name}.{v}.rows', 0)):,}",
             **{k: _fmt(m.get(f"{slice_name}.{v}.{k}")) for k in ("label_rate", "roc_auc", "pr_auc", "precision_at_10pct", "ece")}}
            for v in values]


def _interval(v: Any, lo: Any, hi: Any) -> str:
    return f"{_fmt(v)} ({_fmt(lo)}–{_fmt(hi)})"


def _fairness_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    t = table[table["operating_point"] == "flagged"]
    rows = []
    for _, r in t.iterrows():
        rows.append({
            "attribute": r["attribute"], "group": r["group"] + (" (ref)" if r["group"] == r["reference"] else ""),
            "students": str(r["students"]), "positives": str(r["positive_students"]),
            **{m: _fmt(r[m]) for m in ("selection_rate", "precision", "fpr", "fnr")},
            "precision_ratio": _fmt(r["precision_ratio"]),
            **{f"{m}_ratio": _interval(r[f"{m}_ratio"], r[f"{m}_ratio_lo"], r[f"{m}_ratio_hi"])
               + (" ⚠" if r[f"{m}_breach"] and not r["too_small"] else "") for m in ("fpr", "fnr")},
            "oe": _interval(r["oe"], r["oe_lo"], r["oe_hi"]) + (" ⚠" if r["oe_breach"] and not r["too_small"] else ""),
            "judgeable": "too small to judge" if r["too_small"] else "yes",
        })
    return rows


def _calibration_rows(m: dict[str, float]) -> list[dict[str, str]]:
    """O/E, slope, intercept (95% intervals) and equal-mass ECE: overall, then each slice's values."""
    pre = "calibration."
    bases = [("overall", pre)] + sorted(
        (k[len(pre):-len(".oe")].replace(".", " = ", 1), k[:-len("oe")]) for k in m
        if k.startswith(pre) and k.endswith(".oe") and k != f"{pre}oe")
    return [{"slice": name, "students": f"{int(m.get(b + 'students', 0)):,}", "observed": f"{int(m.get(b + 'observed', 0)):,}",
             "expected": _fmt(m.get(b + "expected")), "oe": _interval(m.get(b + "oe"), m.get(b + "oe_lo"), m.get(b + "oe_hi")),
             "slope": _interval(m.get(b + "slope"), m.get(b + "slope_lo"), m.get(b + "slope_hi")),
             "intercept": _interval(m.get(b + "intercept"), m.get(b + "intercept_lo"), m.get(b + "intercept_hi")),
             "ece": _fmt(m.get(b + "ece"))}
            for name, b in bases if name == "overall" or name.split(" = ")[0] in ("term", "round_type", "grade_band")
            or name.split(" = ")[0] in _CARD_GROUP_SLICES]


_CARD_GROUP_SLICES: set[str] = {"sex", "region", "nationality", "disability", "cct_poverty"}


def card_context(result: Any, cfg: TrainConfig, version: int, run_id: str, variants: pd.DataFrame | None,
                 git: str | None) -> dict[str, Any]:
    m = result.metrics
    manifest = result.trainset_manifest
    per_round = {r.round_id: r for r in manifest.rounds}
    folds = []
    for fold in ("train", "refit_only", "calibration", "test"):
        ids = getattr(result.split, fold)
        if fold == "refit_only" and not (ids and result.refit.get("refit_only_rows")):
            continue  # none, or unused (no cross-fitted refit)
        rounds = [per_round[i] for i in ids if i in per_round]
        rate = sum((r.label_rate or 0) * r.rows for r in rounds) / max(sum(r.rows for r in rounds), 1)
        folds.append({"fold": fold, "rounds": ", ".join(ids), "rows": result.fold_rows.get(fold, 0), "label_rate": _fmt(rate)})
    th = result.model.thresholds_
    return {
        "name": cfg.registered_model_name, "version": version, "run_id": run_id, "git": git or "unknown",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "trainset": result.trainset_name,
        "fingerprint": manifest.delivery_fingerprint, "cutoff": manifest.cutoff.isoformat(),
        "best_iteration": result.best_iteration, "calibration_method": cfg.calibration.method,
        "monotone": cfg.model.monotone, "folds": folds, "refit": result.refit or {"mode": cfg.model.refit}, "test_as_of": result.split.test_as_of,
        "has_ceiling": "ceiling_roc_auc" in m, "metrics": _metric_rows(m), "baselines": BASELINES,
        "intervals": _interval_rows(m),
        "round_type": _slice_rows(m, "round_type"), "grade_band": _slice_rows(m, "grade_band"),
        "ece": _fmt(m.get("ece")), "ece_raw": _fmt(m.get("uncalibrated.ece")), "max_ece": cfg.gate.max_ece,
        "calibration": _calibration_rows(m), "oe_band": cfg.gate.oe_band, "slope_band": cfg.gate.slope_band,
        "oe_slices": ", ".join(cfg.gate.oe_slices),
        "calibration_failures": calibration_breaches(m, cfg.gate.oe_band, cfg.gate.slope_band, cfg.gate.oe_slices),
        "thresholds": [
            {"group": "มีปัญหา problem", "rule": f"the round's top {th.problem_share:.0%} (test fold: risk_score ≥ {th.problem:.4f})",
             "target": f"top {th.problem_share:.0%}", **{k: _fmt(v) for k, v in th.observed.get("problem", {}).items()}},
            {"group": "เสี่ยง at-risk", "rule": f"the round's next {th.at_risk_share:.0%} (test fold: {th.at_risk:.4f} ≤ risk_score < {th.problem:.4f})",
             "target": f"next {th.at_risk_share:.0%}", **{k: _fmt(v) for k, v in th.observed.get("at_risk", {}).items()}},
            {"group": "ปกติ normal", "rule": "the rest of the round", "target": "the rest",
             **{k: _fmt(v) for k, v in th.observed.get("normal", {}).items()}},
        ],
        "by_stratum": [{"stratum": k, **{g: f"{_fmt(v.get(g, {}).get('share'))} / {_fmt(v.get(g, {}).get('dropout_rate'))}"
                                         for g in ("problem", "at_risk", "normal")}}
                       for k, v in th.by_stratum.items()],
        "fairness": _fairness_rows(result.fairness), "band": cfg.fairness.band, "fair_oe_band": cfg.fairness.oe_band,
        "fairness_failures": result.fairness_failures, "gate_attributes": ", ".join(cfg.fairness.gate_attributes),
        "gate_metrics": ", ".join(cfg.fairness.gate_metrics),
        "min_students": cfg.fairness.min_group_students, "min_pos": cfg.fairness.min_group_positives,
        "level": f"{cfg.intervals.level:.0%}", "n_boot": cfg.intervals.n_boot,
        "importance": [{"group": g, "label": GROUPS.get(g, (g, g))[0], "th": GROUPS.get(g, (g, g))[1], "value": _fmt(v)}
                       for g, v in result.feature_importance.items()],
        "variants": variants.to_dict("records") if variants is not None else [],
        "gate_metric": cfg.gate.metric, "intended": INTENDED_USE, "out_of_scope": OUT_OF_SCOPE, "caveats": CAVEATS,
    }


def write_model_card(result: Any, cfg: TrainConfig, version: int, run_id: str, plots: dict[str, Path],
                     out_dir: Path, variants: pd.DataFrame | None = None, git: str | None = None) -> dict[str, Path]:
    """model_card.md and model_card.html (+ plots/) in `out_dir`."""
    import jinja2

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    for p in plots.values():
        shutil.copy(p, out_dir / "plots" / p.name)
    ctx = card_context(result, cfg, version, run_id, variants, git)
    ctx["plots_md"] = {k: f"plots/{p.name}" for k, p in plots.items()}
    ctx["plots_html"] = {k: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for k, p in plots.items()}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), keep_trailing_newline=True)
    md = env.get_template("model_card.md").render(**ctx)
    html = env.get_template("model_card.html").render(**ctx)
    paths = {"md": out_dir / "model_card.md", "html": out_dir / "model_card.html"}
    paths["md"].write_text(md, encoding="utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    return paths
