"""The MLflow side of training, split along its seams:

    store     where MLflow lives: tracking URI, artefact root, the store made ready, the client
    runs      logging one training run and registering its model as a new version
    versions  aliases, listing versions, and `load_model` — the one way to get a version back
              (a `RiskModel` plus its typed `ModelLineage`)
    release   the release gate, promotion, rollback and the champion history

The public names are re-exported here, so `from training.registry import promote` keeps working.
Importing the package does no work (MLflow itself is imported on first use).
"""

from training.registry.release import (
    HISTORY_TAG, STACK_TAG, GateDecision, RollbackResult, champion_history, evaluate_gate, promote, rollback,
)
from training.registry.journal import last_change_marker
from training.registry.runs import RegisteredVersion, git_commit, log_training_run, mlflow_metric_name, scoring_payload
from training.registry.store import artifact_root, client_for, ensure_store, tracking_uri
from training.registry.versions import (
    CHALLENGER, CHAMPION, SCORING_ARTIFACT, VersionedModel, VersionInfo, champion_version, list_versions, load_model,
)
from training.version import ModelLineage, ModelVersion

__all__ = [
    "CHALLENGER", "CHAMPION", "HISTORY_TAG", "SCORING_ARTIFACT", "STACK_TAG",
    "GateDecision", "ModelLineage", "ModelVersion", "RegisteredVersion", "RollbackResult", "VersionInfo",
    "VersionedModel", "artifact_root", "champion_history", "champion_version", "client_for", "ensure_store", "evaluate_gate",
    "git_commit", "last_change_marker", "list_versions", "load_model", "log_training_run", "mlflow_metric_name", "promote",
    "rollback", "scoring_payload", "tracking_uri",
]
