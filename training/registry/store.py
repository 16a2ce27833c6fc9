"""Where MLflow keeps runs and versions: the tracking URI, the artefact root, the client.

Tracking defaults to an embedded store in EWS_HOME/mlflow (sqlite + an explicit artefact folder),
created or upgraded once under a file lock before anything else touches it; $EWS_MLFLOW_TRACKING_URI
(or the config's `tracking_uri`) points everything at any other MLflow server instead. Every other
module of `training.registry` reaches MLflow through `client_for`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from features.home import EwsHome
from training.config import TrainConfig


def tracking_uri(home: EwsHome, configured: str | None = None) -> str:
    """The deployment's registry URI (EWS_MLFLOW_TRACKING_URI or deployment.toml: any MLflow server), else the configured URI, else sqlite in
    EWS_HOME/mlflow. Not $MLFLOW_TRACKING_URI: `mlflow.set_tracking_uri` writes that variable
    into the process environment, so the first home a process touched would capture every later
    one (seen in the test suite, where one process works with several homes)."""
    return home.registry.tracking_uri or configured or f"sqlite:///{home.mlflow_db}"


def artifact_root(home: EwsHome) -> str:
    return home.mlflow_artifacts_dir.as_uri()


def ensure_store(home: EwsHome, uri: str) -> None:
    """Create or upgrade an embedded sqlite store exactly once, under an exclusive file lock:
    several processes racing to create a fresh sqlite store can corrupt it."""
    if not uri.startswith("sqlite:///"):
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    home.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
    with open(db.parent / ".store.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        try:
            SqlAlchemyStore(uri, artifact_root(home))
        except MlflowException as exc:
            if "out-of-date" not in str(exc):
                raise
            from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine_with_retry

            _upgrade_db(create_sqlalchemy_engine_with_retry(uri))


def raw_client(home: EwsHome, cfg: TrainConfig | None = None):  # -> mlflow.MlflowClient
    """An MlflowClient on the home's store (made ready first), without finishing a pending change
    of champion: only for `release`, which finishes it itself to tell the operator what it finished."""
    import mlflow

    uri = tracking_uri(home, cfg.tracking_uri if cfg else None)
    ensure_store(home, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def client_for(home: EwsHome, cfg: TrainConfig | None = None):  # -> mlflow.MlflowClient
    """An MlflowClient on the home's store (made ready first); also the process's default URI,
    set here at run time — never at import. A change of champion a crash interrupted is finished
    first (`journal.finish_pending`), so no command ever reads a half-made promotion or rollback."""
    from training.registry.journal import finish_pending

    client = raw_client(home, cfg)
    finish_pending(home, client)
    return client


def model_name(cfg: TrainConfig | None) -> str:
    """The registered model's name (the config's, else the default "dropout-risk")."""
    return (cfg or TrainConfig()).registered_model_name


def run_json(client: Any, run_id: str, artifact: str) -> Any:
    """A JSON artefact of a run, parsed."""
    return json.loads(Path(client.download_artifacts(run_id, artifact)).read_text(encoding="utf-8"))
