"""Registered versions: their aliases, listing them, and loading one as a `RiskModel` with its lineage.

Registered model "dropout-risk" carries two aliases: `champion` (what serving scores with) and
`challenger` (the latest trained version awaiting promotion). A version is stored as MLflow's
LightGBM flavour (the booster) plus the run artefact `scoring/scoring.json` (the model's fitted
state besides the booster: feature set, calibrator, thresholds). `load_model` is the one way
training, serving and monitoring get a version back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from features.home import EwsHome
from training.config import TrainConfig
from training.model import RiskModel
from training.registry.store import client_for, model_name, run_json
from training.version import ModelLineage, ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
SCORING_ARTIFACT = "scoring/scoring.json"


def alias_version(client: Any, name: str, alias: str) -> ModelVersion | None:
    """The version behind `alias`, or None when no version carries it."""
    from mlflow.exceptions import MlflowException

    try:
        return ModelVersion.parse(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_version(home: EwsHome, cfg: TrainConfig | None = None) -> ModelVersion | None:
    """The version the champion alias names now (one registry query; the service polls it)."""
    return alias_version(client_for(home, cfg), model_name(cfg), CHAMPION)


@dataclass(frozen=True)
class VersionedModel:
    """A registered version as loaded: the fitted model and where it came from."""

    model: RiskModel
    lineage: ModelLineage


def load_model(home: EwsHome, version: ModelVersion | int | str | None = None, alias: str = CHAMPION,
               cfg: TrainConfig | None = None) -> VersionedModel:
    """An explicit `version`, else the version behind `alias` (default: the champion)."""
    import mlflow.lightgbm

    client = client_for(home, cfg)
    name = model_name(cfg)
    if version is None:
        version = alias_version(client, name, alias)
        if version is None:
            raise RuntimeError(f"no version of {name!r} has the alias {alias!r}: run `ews train` first")
    version = ModelVersion.parse(version)
    mv = client.get_model_version(name, str(version))
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
    state = run_json(client, mv.run_id, SCORING_ARTIFACT)
    tags = dict(client.get_run(mv.run_id).data.tags)
    lineage = ModelLineage(
        name=name, version=version, run_id=mv.run_id, trainset_name=str(state["trainset"]),
        trainset_fingerprint=tags.get("trainset.sha256", ""),
        trainset_delivery_fingerprint=tags.get("trainset.delivery_fingerprint", ""),
        aliases=tuple(mv.aliases),
    )
    return VersionedModel(model=RiskModel.from_fitted_state(booster, state), lineage=lineage)


@dataclass
class VersionInfo:
    version: ModelVersion
    aliases: list[str]
    run_id: str
    trainset: str
    created: str
    gate_metric: str
    gate_metric_value: float | None
    ece: float | None
    fairness_failures: int | None
    tags: dict[str, str]


def list_versions(home: EwsHome, cfg: TrainConfig | None = None) -> list[VersionInfo]:
    client = client_for(home, cfg)
    name = model_name(cfg)
    out = []
    # search_model_versions does not fill in aliases: read them from the registered model.
    by_version: dict[str, list[str]] = {}
    for alias, v in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    for mv in client.search_model_versions(f"name='{name}'"):
        t = dict(mv.tags)

        def num(key: str) -> float | None:
            try:
                return float(t[key])
            except (KeyError, ValueError):
                return None

        ff = num("fairness_failures")
        out.append(VersionInfo(
            version=ModelVersion.parse(mv.version), aliases=sorted(by_version.get(str(mv.version), [])), run_id=mv.run_id,
            trainset=t.get("trainset", ""),
            created=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(timespec="seconds"),
            gate_metric=t.get("gate_metric", ""), gate_metric_value=num("gate_metric_value"), ece=num("ece"),
            fairness_failures=int(ff) if ff is not None else None, tags=t,
        ))
    return sorted(out, key=lambda v: v.version)
