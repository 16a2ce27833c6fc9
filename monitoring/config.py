"""Typed configuration of monitoring: which statistics, which thresholds, what makes a breach.

Loaded once at the entry point (`ews monitor --config FILE`, JSON) and written into every report,
so a report says by which rules it judged. Every threshold is documented where it is defined; the
drift statistics themselves are in `monitoring.stats`, chosen here by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.contract import delivery_due
from monitoring.uplift import UpliftConfig
from training.config import FairnessConfig

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Model):
    """A statistic's two lines: `watch` is reported, `drift` is a breach."""

    watch: float = Field(description="From this value the statistic is reported as 'watch'.")
    drift: float = Field(description="From this value the statistic has drifted: a breach.")


class QualityConfig(_Model):
    """Data quality of the deliveries known by a round's as-of date."""

    lookback_days: int = Field(120, ge=1, description="Deliveries received this many days before the as-of date are checked.")
    volume_change: Thresholds = Field(
        Thresholds(watch=0.2, drift=0.5),
        description="|rows / rows of the previous delivery of the same source - 1|, per file (and per province).")
    quarantine_rate: Thresholds = Field(
        Thresholds(watch=0.02, drift=0.10), description="Share of a file's received rows put in quarantine.")
    missing_rate_change: Thresholds = Field(
        Thresholds(watch=0.05, drift=0.20),
        description="Absolute change of a column's missing share against the previous delivery of the same source.")
    late_days: Thresholds = Field(
        Thresholds(watch=14, drift=45),
        description="Days a delivery came after it was expected (the calendar's schedule); "
                    "an expected delivery absent by the as-of date counts as late by the days since it was due.")
    min_rows: int = Field(50, ge=1, description="Files (or provinces) with fewer rows are reported but not judged.")
    expected_lag_days: dict[str, int] = Field(
        default_factory=lambda: {s: delivery_due(s).overdue_days  # the contract's delivery schedule
                                 for s in ("dmc_census", "attendance", "cct_screening", "care_screening")},
        description="Days after the period a source's delivery is overdue (default: the contract's delivery schedule): after the census (dmc_census, "
                    "cct_screening, care_screening) or after the month's end (attendance). Sources not listed "
                    "are not checked for lateness.")


class DriftConfig(_Model):
    """Feature, score and attribution drift between the training reference and a round."""

    numeric_statistic: str = Field("psi", description="Statistic (monitoring.stats name) for numeric, bool and int features.")
    categorical_statistic: str = Field("psi_categorical", description="Statistic for category features.")
    feature_thresholds: Thresholds = Field(
        Thresholds(watch=0.1, drift=0.25), description="PSI: < 0.1 stable, 0.1-0.25 watch, >= 0.25 drift.")
    bins: int = Field(10, ge=2, le=50, description="Quantile bins of the reference for numeric PSI.")
    missing_statistic: str = Field("missing_rate_change", description="Statistic for each feature's missing share.")
    missing_thresholds: Thresholds = Field(Thresholds(watch=0.05, drift=0.20), description="Absolute change of the missing share.")
    score_statistic: str = Field("psi", description="Statistic for the risk score distribution.")
    score_thresholds: Thresholds = Field(Thresholds(watch=0.1, drift=0.25), description="PSI of the risk score.")
    group_statistic: str = Field("share_change", description="Statistic for the risk-group shares.")
    group_thresholds: Thresholds = Field(
        Thresholds(watch=0.05, drift=0.10), description="Largest absolute change of a risk group's share.")
    attribution_thresholds: Thresholds = Field(
        Thresholds(watch=0.05, drift=0.10),
        description="Absolute change of a feature group's share of the total mean |SHAP| (attribution drift).")
    reference: Literal["latest_same_kind", "all_same_kind", "all"] = Field(
        "latest_same_kind",
        description="Reference rows from the rounds the scoring version was fitted on (training and calibration "
                    "folds), strictly before the monitored round: the latest of the same term and round type "
                    "(default: the closest comparable round), every one of that kind, or all of them.")
    min_rows: int = Field(200, ge=10, description="Fewer rows on either side: drift is reported as not judged.")
    features: tuple[str, ...] = Field((), description="Features to check; empty = every model feature.")
    report_only: tuple[str, ...] = Field(
        ("censuses_known", "school_past_dropout_rate"),
        description="Features whose drift is reported but is not a breach: history-length features grow while the "
                    "warehouse's history is younger than a school career (a fresh deployment, a simulated world), so "
                    "their drift says 'more history', not 'the world changed'. A missing census is caught by data quality.")


class OutcomeConfig(_Model):
    """Realised performance of a past round once its labels have matured."""

    capacities: tuple[float, ...] = Field((0.05, 0.10, 0.20), description="Top-k shares for precision@k.")
    roc_auc_drop: Thresholds = Field(
        Thresholds(watch=0.03, drift=0.07), description="Model card ROC-AUC minus realised ROC-AUC.")
    precision_drop: Thresholds = Field(
        Thresholds(watch=0.05, drift=0.10), description="Model card precision@10% minus realised precision@10%.")
    ece: Thresholds = Field(Thresholds(watch=0.02, drift=0.04), description="Realised expected calibration error.")
    observed_to_expected: tuple[float, float] = Field(
        (0.67, 1.5), description="Realised dropouts / sum of risk scores must lie in this band (calibration in the large).")
    observed_to_expected_confidence: float = Field(
        0.95, gt=0, lt=1,
        description="Confidence of every realised-outcome interval: O/E (exact Poisson on the realised count; a breach "
                    "only when the whole interval lies outside the band), the ROC-AUC drop (Hanley-McNeil) and the "
                    "precision@10% drop (binomial; judged on the drop less its margin), so a small school year's "
                    "noise is not a breach.")
    min_positives: int = Field(20, ge=1, description="Fewer realised dropouts: outcomes are reported but not judged.")
    fairness_band: tuple[float, float] = Field(
        default_factory=lambda: FairnessConfig().band,
        description="A group's metric / the reference group's; by default the release gate's band.")
    fairness_attributes: tuple[str, ...] = Field(
        ("sex", "region", "nationality", "disability", "cct_poverty"), description="Attributes audited on realised outcomes.")
    fairness_judged_attributes: tuple[str, ...] = Field(
        default_factory=lambda: FairnessConfig().gate_attributes,
        description="Audited attributes whose band is a breach (the others are reported only); by default the "
                    "release gate's own, so monitoring never recommends a retraining on a group the gate would "
                    "not check when the retrained model is promoted (CCT poverty: a cause the model is meant to see).")
    fairness_metrics: tuple[Literal["fnr", "fpr", "oe"], ...] = Field(
        default_factory=lambda: FairnessConfig().gate_metrics,
        description="What is judged per group, by the release gate's rules; by default the gate's own. fnr / fpr: "
                    "harm is one-sided, a breach is a ratio to the reference group whose whole interval lies above "
                    "the band (Katz interval from the counts); oe: the group's observed/expected interval wholly "
                    "outside the gate's O/E band. Precision parity is reported only: it conflicts with calibration "
                    "whenever base rates differ.")
    fairness_min_rows: int = Field(200, ge=1, description="Smaller groups are reported, not judged.")
    fairness_min_positives: int = Field(
        50, ge=1, description="Groups with fewer dropouts are reported, not judged: one round's realised FNR ratio on "
                              "fewer dropouts moves by more than the band from noise alone.")


class VerdictConfig(_Model):
    """When monitoring recommends retraining."""

    retrain_on: tuple[Literal["feature_drift", "score_drift", "attribution_drift", "outcomes", "fairness", "quality"], ...] = Field(
        ("feature_drift", "score_drift", "attribution_drift", "outcomes", "fairness"),
        description="Breaches that make retraining recommended. A data-quality breach alerts but asks first for the "
                    "source to be fixed: retraining on broken data would learn the break.")
    min_drifted_features: int = Field(1, ge=1, description="Drifted features needed for a feature-drift breach.")


class MonitorConfig(_Model):
    """Everything `ews monitor` judges by."""

    schema_version: int = SCHEMA_VERSION
    quality: QualityConfig = QualityConfig()
    drift: DriftConfig = DriftConfig()
    outcomes: OutcomeConfig = OutcomeConfig()
    verdict: VerdictConfig = VerdictConfig()
    uplift: UpliftConfig = UpliftConfig()
    alert_exit_code: int = Field(3, ge=1, le=125, description="Exit code of `ews monitor` when a threshold is breached.")

    @field_validator("drift")
    @classmethod
    def _known_statistics(cls, v: DriftConfig) -> DriftConfig:
        from monitoring.stats import get_statistic

        for name in (v.numeric_statistic, v.categorical_statistic, v.missing_statistic, v.score_statistic, v.group_statistic):
            get_statistic(name)
        return v


def load_config(path: Path | None) -> MonitorConfig:
    """The config at `path` (JSON), or the defaults."""
    if path is None:
        return MonitorConfig()
    return MonitorConfig.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
