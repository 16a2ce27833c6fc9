"""Figures for the MLflow run and the model card: reliability, ROC/PR, precision@k, SHAP by group.

matplotlib with the non-interactive Agg backend, chosen inside the function (not at import), so
importing this module changes nothing for a notebook that has its own backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import precision_at_k, reliability_table

_SCORES = (("risk_score", "model (calibrated)"), ("baseline_logistic", "logistic"),
           ("baseline_abc_rule", "ABC rule"), ("baseline_school_only", "school only"),
           ("baseline_cct_poverty", "CCT poverty"), ("p_true", "ceiling (true p)"))


def write_plots(result: Any, out_dir: Path) -> dict[str, Path]:
    """PNG files in `out_dir`; returns {name: path}."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    out_dir.mkdir(parents=True, exist_ok=True)
    test = result.test
    y = test["label"].to_numpy(dtype=float)
    paths: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for col, label in (("raw_score", "uncalibrated"), ("risk_score", "calibrated")):
        t = reliability_table(y, test[col].to_numpy())
        ax.plot(t["mean_score"], t["observed"], marker="o", label=label)
        top = max(top, float(t["mean_score"].max()), float(t["observed"].max()))
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1, label="perfect")
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed dropout rate")
    ax.set_title("Reliability on the test fold")
    ax.legend()
    fig.tight_layout()
    paths["reliability"] = out_dir / "reliability.png"
    fig.savefig(paths["reliability"], dpi=110)
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for col, label in _SCORES:
        if col not in test.columns or test[col].isna().all():
            continue
        m = test[col].notna().to_numpy()
        fpr, tpr, _ = roc_curve(y[m], test[col].to_numpy()[m])
        prec, rec, _ = precision_recall_curve(y[m], test[col].to_numpy()[m])
        a1.plot(fpr, tpr, label=label)
        # sklearn appends the point (recall 0, precision 1); drawn as a line it flatters a rule
        # with few distinct scores, so it is left out and the curve is drawn as steps.
        a2.plot(rec[:-1], prec[:-1], label=label, drawstyle="steps-post")
    a1.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    a1.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    a2.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    a1.legend(fontsize=8)
    fig.tight_layout()
    paths["roc_pr"] = out_dir / "roc_pr.png"
    fig.savefig(paths["roc_pr"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ks = (0.05, 0.10, 0.20)
    present = [(c, lab) for c, lab in _SCORES if c in test.columns and not test[c].isna().all()]
    width = 0.8 / max(len(present), 1)
    for i, (col, label) in enumerate(present):
        m = test[col].notna().to_numpy()
        vals = [precision_at_k(y[m], test[col].to_numpy()[m], k) for k in ks]
        ax.bar(np.arange(len(ks)) + i * width, vals, width, label=label)
    ax.set_xticks(np.arange(len(ks)) + width * (len(present) - 1) / 2, [f"top {round(k * 100)}%" for k in ks])
    ax.set_ylabel("precision (share of flagged who dropped out)")
    ax.set_title("Precision at school capacity (national top k%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["precision_at_k"] = out_dir / "precision_at_k.png"
    fig.savefig(paths["precision_at_k"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(result.feature_importance)[::-1]
    ax.barh(names, [result.feature_importance[n] for n in names])
    ax.set_xlabel("mean |SHAP| (log-odds), summed within each feature group")
    ax.set_title("What drives the score, by feature group")
    fig.tight_layout()
    paths["shap_groups"] = out_dir / "shap_groups.png"
    fig.savefig(paths["shap_groups"], dpi=110)
    plt.close(fig)
    return paths
