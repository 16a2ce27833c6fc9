"""Typed configuration of the training stage, loaded once at the entry point (`ews train`).

Everything a training run depends on besides its training set lives here, is logged verbatim to
MLflow with the run, and carries a schema version so an old run's config stays readable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 2  # 2: calibration and fairness gates judged on intervals; group sizes in students
REGISTERED_MODEL_NAME = "dropout-risk"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitConfig(_Model):
    """How the rounds of a training set are cut into train / calibration / test folds by time."""

    # The calibration fold spans a full school year (both terms, both round types): dropout rates
    # differ several-fold between term 1 and term 2 (the year-end transitions fall in term 2), so
    # a calibrator fitted on one term's rounds miscalibrates the other's (measured on a 3-year
    # world: observed/expected 1.8 on a term-2 round). The test fold stays one term so that short
    # histories keep enough training rounds.
    test_rounds: int = Field(2, ge=1, description="Rounds (latest by as-of date) in the test fold: 2 = one term, early + mid.")
    calibration_rounds: int = Field(
        4, ge=1, description="Rounds in the calibration fold: the latest rounds whose labels were known by the test fold's first as-of date (4 = one school year).")
    label_delay_days: int | None = Field(
        None, ge=0, description="None: a round's labels are known when the contract's delivery schedule says every evidence "
                                "source is delivered or overdue (features.contract.DELIVERY_SCHEDULE). A number of days after "
                                "the horizon census can only make that later, never earlier.")
    min_train_rounds: int = Field(1, ge=1, description="Refuse to train with fewer training rounds than this.")


class ModelConfig(_Model):
    """LightGBM settings. Deterministic: fixed seed, deterministic=True, force_col_wise."""

    num_leaves: int = Field(7, ge=2, description="Maximum leaves per tree (small trees measured best: training/DECISIONS.md).")
    learning_rate: float = Field(0.05, gt=0, description="Shrinkage per boosting round.")
    n_estimators: int = Field(1000, ge=1, description="Upper bound on boosting rounds (early stopping picks fewer).")
    early_stopping_rounds: int = Field(150, ge=1, description="Stop when the calibration-fold log-loss has not improved for this many rounds.")
    min_child_samples: int = Field(300, ge=1, description="Minimum rows per leaf: dropout is rare, small leaves overfit.")
    feature_fraction: float = Field(0.9, gt=0, le=1, description="Share of features sampled per tree.")
    lambda_l2: float = Field(1.0, ge=0, description="L2 regularisation of leaf values.")
    max_cat_to_onehot: int = Field(8, ge=1, description="Categoricals with at most this many levels are split one-vs-rest.")
    seed: int = Field(20251122, description="Seed for every random choice LightGBM makes.")
    num_threads: int = Field(2, ge=1, description="Threads; results are identical for any value (deterministic=True).")
    monotone: bool = Field(
        True, description="Apply monotone constraints where the direction is certain (see training.model.MONOTONE).")
    # "crossfit" by default: on two 20,000 x 4 worlds it ranked better on the calibration fold (out-of-fold)
    # and on the test fold, with calibration inside the bands (training/DECISIONS.md, issue 12,
    # session 7); with 3 groups the booster's fitting takes about 3.5-5x as long as stage A alone.
    refit: Literal["none", "crossfit"] = Field(
        "crossfit", description="'none': the published booster learns from the training fold only (early-stopped on the "
                            "calibration fold, Platt fitted on that fold). 'crossfit': after that first booster, the "
                            "published booster is refitted on the training AND calibration folds, and Platt is fitted on "
                            "out-of-fold margins of the calibration fold's students (`crossfit_folds` boosters, each "
                            "blind to one group of students): the calibration year's rows teach the booster and its "
                            "calibration stays honest (training/DECISIONS.md, issue 12).")
    crossfit_folds: int = Field(
        3, ge=2, le=10, description="With refit='crossfit': the calibration fold's students are split (seeded) into this "
                                    "many groups; one extra booster per group gives that group its out-of-fold margins.")
    bag_seeds: int = Field(
        1, ge=1, le=20, description="With refit='crossfit': each refitted booster (the published one and each out-of-fold "
                                    "one) is fitted this many times with row subsampling and different seeds, and the fits "
                                    "are merged into one booster whose margin is their mean (training/bagging.py). 1: one "
                                    "fit, no subsampling. Stage A is never bagged.")
    per_round_type: bool = Field(
        False, description="One model per round type (early/mid) instead of one model with round features. "
                           "Only used by the variant measurement; the registered model is one model.")


class CalibrationConfig(_Model):
    method: Literal["isotonic", "platt"] = Field(
        "platt", description="Platt scaling (logistic on the booster's log-odds; keeps the ranking) or isotonic "
                             "regression (a step map: its plateaus tie students and cost PR-AUC, measured in training/DECISIONS.md).")


class RiskGroupConfig(_Model):
    """The three groups schools already use, as shares of students nationally at training time."""

    problem_share: float = Field(0.05, gt=0, lt=1, description="มีปัญหา (problem): the top ~5% by calibrated score.")
    at_risk_share: float = Field(0.15, gt=0, lt=1, description="เสี่ยง (at-risk): the next ~15%; the rest are ปกติ (normal).")


class IntervalConfig(_Model):
    """The student-level bootstrap behind every interval of the calibration and fairness gates."""

    n_boot: int = Field(200, ge=20, description="Bootstrap replicates (students resampled with all their rows).")
    level: float = Field(0.95, gt=0, lt=1, description="Coverage of the percentile intervals.")
    seed: int = Field(0, description="Seed of the replicates: the same rows and seed give the same intervals.")


class FairnessConfig(_Model):
    """The fairness audit and the part of the release gate that judges it (training/fairness.py)."""

    band: tuple[float, float] = Field(
        (0.8, 1.25), description="Band of a group's error-rate ratio to the reference group. Harm is one-sided: a breach "
                                 "is a ratio whose whole interval lies above the top (more missed dropouts, more false alarms).")
    oe_band: tuple[float, float] = Field(
        (0.8, 1.25), description="Band of observed/expected dropouts within a group; a breach is an interval wholly outside it.")
    min_group_students: int = Field(100, ge=1, description="Groups with fewer students are reported but flagged too small to judge.")
    min_group_positives: int = Field(
        10, ge=1, description="Groups with fewer students who dropped out are reported but flagged too small to judge: "
                              "with fewer, a bootstrap interval of a miss rate is itself unreliable.")
    attributes: tuple[str, ...] = Field(
        ("sex", "region", "province", "nationality", "cct_poverty", "disability"),
        description="Attributes audited (column group_<name> of the training set).")
    gate_attributes: tuple[str, ...] = Field(
        ("sex", "region", "nationality", "disability"),
        description="Attributes whose band the release gate enforces. CCT poverty is audited but not gated: "
                    "poverty is a cause of dropout the model is meant to see.")
    gate_metrics: tuple[Literal["fnr", "fpr", "oe"], ...] = Field(
        ("fnr", "oe"),
        description="What the gate judges per group: fnr (dropouts missed more often than in the reference group), "
                    "fpr (more false alarms) and oe (calibration within the group). Precision parity is reported only: "
                    "it conflicts with calibration whenever base rates differ.")

    @model_validator(mode="before")
    @classmethod
    def _schema_1(cls, data: object) -> object:
        # Schema 1 counted groups in rows and gated two-sided ratios of precision and FNR: read its
        # configs (runs logged before) with today's meaning rather than refusing them.
        if isinstance(data, dict) and ("min_group_rows" in data or "precision" in data.get("gate_metrics", ())):
            data = dict(data)
            if "min_group_rows" in data:
                data.setdefault("min_group_students", max(1, int(data.pop("min_group_rows")) // 2))
            data["gate_metrics"] = tuple(m for m in data.get("gate_metrics", ()) if m != "precision") or ("fnr", "oe")
        return data


class GateConfig(_Model):
    """The release gate `ews promote` applies before a version becomes champion."""

    metric: str = Field("pr_auc", description="Agreed metric: the challenger must beat the champion on it, on the challenger's test fold.")
    min_improvement: float = Field(0.0, ge=0, description="Required margin over the champion on the agreed metric.")
    oe_band: tuple[float, float] = Field(
        (0.8, 1.25), description="Observed/expected dropouts on the test fold, overall and per slice in `oe_slices`: "
                                 "a breach is an interval wholly outside the band (a threefold under-prediction is O/E 3).")
    slope_band: tuple[float, float] = Field(
        (0.67, 1.5), description="Calibration slope (logistic regression of the label on the score's log-odds; 1 is "
                                 "calibrated, above 1 too timid, below 1 too extreme): a breach is an interval wholly outside.")
    oe_slices: tuple[str, ...] = Field(
        ("term",), description="Slices whose O/E the gate also judges (term: dropout rates differ several-fold between terms).")
    max_ece: float | None = Field(
        None, gt=0, description="Optional ceiling on the equal-mass ECE. Off by default: a perfect model's ECE is sampling "
                                "noise of about sqrt(rate / rows per bin), so a fixed ceiling judges the fold's size.")


class ActionAwareConfig(_Model):
    """What training does with outcomes an action changed (training/actions.py). Applies only when an
    assignment is given (`ews train --actions`, after `ews ingest FOLDER`); without one the training set is used as it is."""

    outcomes: Literal["drop", "keep"] = Field(
        "drop", description="'drop': leave out the rows of pupils served or acted on (their outcome is the action's "
                            "doing); 'keep': train on them as they are (naive, for comparison).")
    terms_after: int = Field(1, ge=0, le=6, description="Also leave out this many terms after the action: its effect fades, "
                                                        "it does not stop at the term's end.")


class TrainConfig(_Model):
    """Everything `ews train` needs besides the training set."""

    schema_version: int = SCHEMA_VERSION
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    risk_groups: RiskGroupConfig = RiskGroupConfig()
    fairness: FairnessConfig = FairnessConfig()
    gate: GateConfig = GateConfig()
    intervals: IntervalConfig = IntervalConfig()
    actions: ActionAwareConfig = ActionAwareConfig()
    capacities: tuple[float, ...] = Field((0.05, 0.10, 0.20), description="Top-k shares for precision@k / recall@k.")
    logistic_max_rows: int = Field(400_000, ge=1000, description="The logistic baseline trains on at most this many rows (sampled).")
    shap_sample_rows: int = Field(2000, ge=10, description="Rows explained for the SHAP importance in the model card.")
    registered_model_name: str = Field(REGISTERED_MODEL_NAME, description="Name in the MLflow model registry.")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default $EWS_MLFLOW_TRACKING_URI, else sqlite in EWS_HOME/mlflow.")
    experiment: str = Field("dropout-risk", description="MLflow experiment name.")

    @model_validator(mode="after")
    def _gate_metric_is_measured(self) -> TrainConfig:
        # Checked here, when the config is read, rather than as a KeyError at `ews promote`.
        from training.metrics import measured_names

        names = measured_names(self.capacities)
        if self.gate.metric not in names:
            raise ValueError(f"gate.metric {self.gate.metric!r} is not measured with capacities {list(self.capacities)}: "
                             f"one of {sorted(names)}")
        return self


def load_config(path: Path | None) -> TrainConfig:
    """The config at `path` (JSON), or the defaults."""
    if path is None:
        return TrainConfig()
    return TrainConfig.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
