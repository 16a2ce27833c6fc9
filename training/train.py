"""`ews train` as a Python function: training set in, registered model version out.

    load the training set (named, or EWS_HOME/trainsets/LATEST)
    -> (optionally) the simulator's true probabilities for the test rounds, for the ceiling
    -> training.pipeline.train_and_evaluate (split, fit, calibrate, baselines, metrics, fairness)
    -> training.registry.log_training_run (MLflow run, registry, alias, model card)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.home import EwsHome
from training.config import TrainConfig
from training.data import Trainset, load_trainset
from training.pipeline import TrainResult, measure_variants, split_trainset, train_and_evaluate
from training.registry import RegisteredVersion, log_training_run


@dataclass
class TrainOutcome:
    result: TrainResult
    registered: RegisteredVersion
    variants: pd.DataFrame | None
    warnings: list[str] = field(default_factory=list)  # said to the analyst, never fatal

    def summary(self) -> dict[str, Any]:
        """The `ews train --json` document: stable metric names at the top level."""
        m = {k: _finite(v) for k, v in self.result.metrics.items()}
        return {
            "version": self.registered.version, "alias": self.registered.alias, "run_id": self.registered.run_id,
            "model_uri": self.registered.model_uri, "trainset": self.result.trainset_name,
            "model_card": str(self.registered.card_dir / "model_card.html") if self.registered.card_dir else None,
            "split": self.result.split.model_dump(mode="json"), "rows": self.result.fold_rows,
            "best_iteration": self.result.best_iteration, "refit": self.result.refit,
            "thresholds": self.result.model.thresholds_.to_dict(),
            "fairness_failures": self.result.fairness_failures,
            "timings_s": {k: round(v, 3) for k, v in self.result.timings.items()},
            "variants": self.variants.to_dict("records") if self.variants is not None else None,
            "warnings": self.warnings,
            "metrics": m,
        }


def _finite(v: float) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. recall with no dropouts in a slice) is null."""
    return float(v) if v is not None and math.isfinite(v) else None


def truth_for_test(home: EwsHome, truth_dir: Path, ts: Trainset, cfg: TrainConfig) -> pd.DataFrame:
    """(student_key, round_id, p_true, p_observable) of the test rounds, from the simulator's truth folder."""
    split, _ = split_trainset(ts, cfg)
    return truth_for_rounds(home, truth_dir, list(split.test))


def truth_for_rounds(home: EwsHome, truth_dir: Path, round_ids: list[str]) -> pd.DataFrame:
    """(student_key, round_id, p_true, p_observable) of the given rounds, from the simulator's truth folder.

    The truth is read by the evaluator the entry point installed (features/evaluation.py): training
    never imports the simulator."""
    from features.evaluation import truth_evaluator
    from features.pointintime.pipeline import connect_warehouse

    con = connect_warehouse(home)
    try:
        table = truth_evaluator().ceiling_table(con, Path(truth_dir), list(round_ids))
    finally:
        con.close()
    frame = table.to_pandas()
    return frame[[c for c in ("student_key", "round_id", "p_true", "p_observable") if c in frame.columns]]


def train(home: EwsHome, cfg: TrainConfig, trainset: str | None = None, truth_dir: Path | None = None,
          truth: pd.DataFrame | None = None, variants: bool = False, actions: bool = False) -> TrainOutcome:
    """Train, evaluate, log and register one model version (champion if first, else challenger).
    `actions`: use the schools' assignment the warehouse holds (features/assignment.py; ingested by
    `ews ingest FOLDER`); then the outcomes an action changed are handled as `cfg.actions` says
    (training/actions.py)."""
    ts = load_trainset(home, trainset)
    warnings = stale_keys_warning(home, ts)
    if actions:
        from features.assignment import read_assignment
        from features.pointintime.pipeline import connect_warehouse
        from training.actions import without_acted

        con = connect_warehouse(home)
        try:
            assignment = read_assignment(con)
        finally:
            con.close()
        ts, _ = without_acted(ts, assignment, cfg.actions)
    if truth is None and truth_dir is not None:
        truth = truth_for_test(home, truth_dir, ts, cfg)
    result = train_and_evaluate(ts, cfg, truth)
    measured = measure_variants(ts, cfg) if variants else None
    registered = log_training_run(home, result, cfg, measured)
    return TrainOutcome(result=result, registered=registered, variants=measured, warnings=warnings)


def stale_keys_warning(home: EwsHome, ts: Trainset) -> list[str]:
    """A training set keeps the student keys of the linkage run it was built on. If a later run
    (`ews link --relink`, a review decision) moved keys, the set is still internally consistent, but
    whatever is joined to it by today's keys (the schools' assignment with --actions, the simulator's
    truth with --truth) misses or mismatches those children: say so, with the way out."""
    from features.linkage.link import keys_changed_since
    from features.pointintime.pipeline import connect_warehouse

    built_on = ts.manifest.link_run
    if built_on is None:
        return []
    con = connect_warehouse(home)
    try:
        moved = keys_changed_since(con, built_on)
    finally:
        con.close()
    if not moved:
        return []
    return [f"training set {ts.manifest.name} was built on linkage run {built_on}; later runs moved {moved} "
            "student keys, so anything joined to it by today's keys (--actions, --truth) misses those "
            "children: rebuild it with `ews trainset`"]
