"""Logging one training run to MLflow and registering its model as a new version.

`log_training_run` takes a `training.pipeline.TrainResult`: parameters, tags (training set,
fingerprints, git commit), the config, metrics, fairness tables, plots, the model's fitted state
(`scoring/scoring.json`) and the booster (MLflow's LightGBM flavour), then the version's alias —
champion if it is the first, else challenger — and the model card.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.home import EwsHome
from training.config import TrainConfig
from training.model import RiskModel
from training.registry.journal import Entry, Write
from training.registry.journal import commit as commit_change
from training.registry.release import history_writes
from training.registry.store import artifact_root, client_for
from training.registry.versions import CHALLENGER, CHAMPION, SCORING_ARTIFACT, alias_version
from training.version import ModelVersion


def _experiment_id(client: Any, home: EwsHome, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root(home) if client.tracking_uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


_METRIC_KEY = re.compile(r"[^0-9A-Za-z_\-./ ]")


def mlflow_metric_name(name: str) -> str:
    """MLflow allows letters, digits, _ - . / and space; anything else (e.g. Thai) becomes _."""
    return _METRIC_KEY.sub("_", name)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@dataclass
class RegisteredVersion:
    version: ModelVersion
    run_id: str
    alias: str
    model_uri: str
    card_dir: Path | None = None


def scoring_payload(model: RiskModel, trainset: str) -> dict[str, Any]:
    """Everything besides the booster that rebuilds the model (its fitted state), and its training set."""
    return {**model.fitted_state(), "trainset": trainset, "score": "calibrated probability of dropout by the next census"}


def log_training_run(home: EwsHome, result: Any, cfg: TrainConfig, variants: pd.DataFrame | None = None) -> RegisteredVersion:
    """Log a `TrainResult` as an MLflow run, register its model, set the alias, write the model card.

    The first version ever registered becomes champion; every later one becomes challenger."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    from training.card import write_model_card
    from training.plots import write_plots

    client = client_for(home, cfg)
    exp_id = _experiment_id(client, home, cfg.experiment)
    manifest = result.trainset_manifest
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{result.trainset_name}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        params = _flatten(cfg.model_dump(mode="json"))
        params.update({"split.train": ",".join(result.split.train), "split.calibration": ",".join(result.split.calibration),
                       "split.refit_only": ",".join(result.split.refit_only),
                       "split.test": ",".join(result.split.test), "best_iteration": result.best_iteration,
                       **{f"rows.{k}": v for k, v in result.fold_rows.items()}})
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        commit = git_commit()
        mlflow.set_tags({
            "trainset": result.trainset_name, "trainset.delivery_fingerprint": manifest.delivery_fingerprint,
            "trainset.sha256": manifest.sha256, "git_commit": commit or "unknown",
            "config.schema_version": str(cfg.schema_version), "stage": "training",
        })
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        mlflow.log_dict(manifest.model_dump(mode="json"), "trainset_manifest.json")
        mlflow.log_dict(result.metrics, "metrics.json")
        mlflow.log_dict({"failures": result.fairness_failures}, "fairness/gate_failures.json")
        result.fairness.to_csv(tmpdir / "fairness.csv", index=False)
        mlflow.log_artifact(str(tmpdir / "fairness.csv"), "fairness")
        if variants is not None:
            variants.to_csv(tmpdir / "variants.csv", index=False)
            mlflow.log_artifact(str(tmpdir / "variants.csv"), "measurements")
        plots = write_plots(result, tmpdir / "plots")
        mlflow.log_artifacts(str(tmpdir / "plots"), "plots")
        mlflow.log_dict(scoring_payload(result.model, result.trainset_name), SCORING_ARTIFACT)

        # The example is the model's own encoding (float codes), the only input its booster reads.
        model: RiskModel = result.model
        x_example = pd.DataFrame(model.encode(_example_rows(home, result)), columns=list(model.features_.names))
        signature = infer_signature(x_example, model.raw_probability(x_example.to_numpy()))
        import lightgbm

        info = mlflow.lightgbm.log_model(
            model.booster_, name="model", signature=signature, input_example=x_example,
            registered_model_name=cfg.registered_model_name,
            # Explicit requirements: inferring them imports the model in a subprocess (slow).
            pip_requirements=[f"lightgbm=={lightgbm.__version__}", f"pandas=={pd.__version__}",
                              f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
            # Serving loads the native flavour and encodes with the model's own feature set; checking
            # the generic pyfunc path here would only cost time.
            validate_serving_input=False,
        )
        version = ModelVersion.parse(info.registered_model_version)
        # Logged after the model: MLflow 3 copies every metric already in the run onto the logged
        # model one by one (~12 s for the ~600 group metrics); the run keeps them either way.
        finite = {mlflow_metric_name(k): float(v) for k, v in result.metrics.items()
                  if isinstance(v, (int, float)) and math.isfinite(v)}
        mlflow.log_metrics(finite)
        name = cfg.registered_model_name
        has_champion = alias_version(client, name, CHAMPION) is not None
        alias = CHALLENGER if has_champion else CHAMPION
        if alias == CHALLENGER:
            client.set_registered_model_alias(name, alias, str(version))
        else:
            # The first champion is a change of champion like any other: alias, history and stack
            # in one journalled transaction, so a crash cannot leave a champion without a history.
            commit_change(home, client, lambda c: Entry(op="register", model=name, summary={"version": int(version)}, writes=[
                Write("alias", (CHAMPION, str(version))),
                Write("version_tag", (str(version), "promotion", "first version: champion without a gate")),
                *history_writes(c, name, version, "first registered version")]))
        for k, v in {"run_id": run.info.run_id, "trainset": result.trainset_name,
                     "gate_metric": cfg.gate.metric, "gate_metric_value": str(result.metrics.get(cfg.gate.metric)),
                     "ece": str(result.metrics.get("ece")), "fairness_failures": str(len(result.fairness_failures)),
                     "test_rounds": ",".join(result.split.test)}.items():
            client.set_model_version_tag(name, str(version), k, v)
        card_dir = home.model_cards_dir / f"{name}-v{version}"
        write_model_card(result, cfg, version=version, run_id=run.info.run_id, plots=plots, out_dir=card_dir,
                         variants=variants, git=commit)
        mlflow.log_artifacts(str(card_dir), "model_card")
    return RegisteredVersion(version=version, run_id=run.info.run_id, alias=alias,
                             model_uri=f"models:/{name}/{version}", card_dir=card_dir)


def _example_rows(home: EwsHome, result: Any) -> pd.DataFrame:
    """Five real rows of the training set's test fold as the model's input example: the run's own
    (`TrainResult.example_rows`) when it kept them, else read back from the training set."""
    if getattr(result, "example_rows", None) is not None:
        return result.example_rows
    from training.data import load_trainset

    ts = load_trainset(home, result.trainset_name)
    return ts.frame[ts.frame["round_id"].astype(str).isin(result.split.test)].head(5)
