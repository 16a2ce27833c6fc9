"""The MLflow side of training: the store, logging a run, the registry, the release gate.

Tracking defaults to an embedded store in EWS_HOME/mlflow (sqlite + an explicit artefact folder),
created or upgraded once under a file lock before anything else touches it; $EWS_MLFLOW_TRACKING_URI
(or the config's `tracking_uri`) points everything at any other MLflow server instead.

Registered model "dropout-risk" carries two aliases: `champion` (what serving scores with) and
`challenger` (the latest trained version awaiting promotion). The registered model's tag
`champion_history` lists every champion in order, so `rollback` can restore the previous one.

Serving uses `load_model(home)` -> `LoadedModel` and `LoadedModel.score(frame)`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.home import EwsHome
from training.config import TrainConfig
from training.model import Calibrator, RiskModel, RiskThresholds

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"  # event log: every change of champion, with its reason
STACK_TAG = "champion_stack"  # versions that were champion, latest last: rollback pops it
SCORING_ARTIFACT = "scoring/scoring.json"


# ---------------------------------------------------------------------------------------------
# The store


def tracking_uri(home: EwsHome, configured: str | None = None) -> str:
    """$EWS_MLFLOW_TRACKING_URI (any MLflow server), else the configured URI, else sqlite in
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


def client_for(home: EwsHome, cfg: TrainConfig | None = None):  # -> mlflow.MlflowClient
    """An MlflowClient on the home's store (made ready first); also the process's default URI,
    set here at run time — never at import."""
    import mlflow

    uri = tracking_uri(home, cfg.tracking_uri if cfg else None)
    ensure_store(home, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


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


# ---------------------------------------------------------------------------------------------
# Logging and registering a run


@dataclass
class RegisteredVersion:
    version: int
    run_id: str
    alias: str
    model_uri: str
    card_dir: Path | None = None


def scoring_payload(model: RiskModel, trainset: str) -> dict[str, Any]:
    """Everything besides the booster that serving needs to rebuild calibrated scores and groups."""
    return {
        "features": list(model.features), "categories": model.categories,
        "calibrator": model.calibrator.to_dict(), "thresholds": model.thresholds.to_dict(),
        "trainset": trainset, "score": "calibrated probability of dropout by the next census",
    }


def log_training_run(home: EwsHome, result: Any, cfg: TrainConfig, variants: pd.DataFrame | None = None) -> RegisteredVersion:
    """Log a `TrainResult` as an MLflow run, register its model, set the alias, write the model card.

    The first version ever registered becomes champion; every later one becomes challenger."""
    import mlflow
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    from training.card import write_model_card
    from training.data import model_matrix
    from training.plots import write_plots

    client = client_for(home, cfg)
    exp_id = _experiment_id(client, home, cfg.experiment)
    manifest = result.trainset_manifest
    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{result.trainset_name}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        params = _flatten(cfg.model_dump(mode="json"))
        params.update({"split.train": ",".join(result.split.train), "split.calibration": ",".join(result.split.calibration),
                       "split.test": ",".join(result.split.test), "best_iteration": result.best_iteration,
                       **{f"rows.{k}": v for k, v in result.fold_rows.items()}})
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        commit = git_commit()
        mlflow.set_tags({
            "trainset": result.trainset_name, "trainset.delivery_fingerprint": str(manifest.get("delivery_fingerprint")),
            "trainset.sha256": str(manifest.get("sha256")), "git_commit": commit or "unknown",
            "config.schema_version": str(cfg.schema_version), "stage": "training",
        })
        mlflow.log_dict(cfg.model_dump(mode="json"), "config.json")
        mlflow.log_dict(manifest, "trainset_manifest.json")
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

        x_example = model_matrix(_example_rows(home, result), result.model.categories)
        signature = infer_signature(x_example, result.model.booster.predict(x_example))
        import lightgbm

        info = mlflow.lightgbm.log_model(
            result.model.booster, name="model", signature=signature, input_example=x_example,
            registered_model_name=cfg.registered_model_name,
            # Explicit requirements: inferring them imports the model in a subprocess (slow).
            pip_requirements=[f"lightgbm=={lightgbm.__version__}", f"pandas=={pd.__version__}",
                              f"numpy=={np.__version__}", f"mlflow=={mlflow.__version__}"],
            # The generic pyfunc path turns category columns into strings, which LightGBM rejects;
            # serving loads the native flavour and casts with the stored category lists instead.
            validate_serving_input=False,
        )
        version = int(info.registered_model_version)
        # Logged after the model: MLflow 3 copies every metric already in the run onto the logged
        # model one by one (~12 s for the ~600 group metrics); the run keeps them either way.
        finite = {mlflow_metric_name(k): float(v) for k, v in result.metrics.items()
                  if isinstance(v, (int, float)) and math.isfinite(v)}
        mlflow.log_metrics(finite)
        name = cfg.registered_model_name
        has_champion = _alias_version(client, name, CHAMPION) is not None
        alias = CHALLENGER if has_champion else CHAMPION
        client.set_registered_model_alias(name, alias, str(version))
        for k, v in {"run_id": run.info.run_id, "trainset": result.trainset_name,
                     "gate_metric": cfg.gate.metric, "gate_metric_value": str(result.metrics.get(cfg.gate.metric)),
                     "ece": str(result.metrics.get("ece")), "fairness_failures": str(len(result.fairness_failures)),
                     "test_rounds": ",".join(result.split.test)}.items():
            client.set_model_version_tag(name, str(version), k, v)
        if alias == CHAMPION:
            _append_history(client, name, version, "first registered version")
            client.set_model_version_tag(name, str(version), "promotion", "first version: champion without a gate")
        card_dir = home.model_cards_dir / f"{name}-v{version}"
        write_model_card(result, cfg, version=version, run_id=run.info.run_id, plots=plots, out_dir=card_dir,
                         variants=variants, git=commit)
        mlflow.log_artifacts(str(card_dir), "model_card")
    return RegisteredVersion(version=version, run_id=run.info.run_id, alias=alias,
                             model_uri=f"models:/{name}/{version}", card_dir=card_dir)


def _example_rows(home: EwsHome, result: Any) -> pd.DataFrame:
    """Five real rows of the training set's test fold as the model's input example."""
    from training.data import load_trainset

    ts = load_trainset(home, result.trainset_name)
    return ts.frame[ts.frame["round_id"].astype(str).isin(result.split.test)].head(5)


# ---------------------------------------------------------------------------------------------
# Aliases, history, loading


def _alias_version(client: Any, name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _history(client: Any, name: str) -> list[dict[str, Any]]:
    rm = client.get_registered_model(name)
    return json.loads(rm.tags.get(HISTORY_TAG, "[]"))


def _stack(client: Any, name: str) -> list[int]:
    return [int(v) for v in json.loads(client.get_registered_model(name).tags.get(STACK_TAG, "[]"))]


def _append_history(client: Any, name: str, version: int, reason: str, push: bool = True) -> None:
    hist = _history(client, name)
    hist.append({"version": version, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "reason": reason})
    # Tags are limited in length: keep the latest events (the runs themselves keep the rest).
    while len(json.dumps(hist)) > 4500:
        hist.pop(0)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist))
    if push:
        stack = _stack(client, name)
        stack.append(version)
        client.set_registered_model_tag(name, STACK_TAG, json.dumps(stack[-200:]))


@dataclass
class LoadedModel:
    """A registered version, ready to score: what serving holds in memory."""

    model: RiskModel
    version: int
    run_id: str
    trainset: str
    model_uri: str
    aliases: list[str] = field(default_factory=list)

    @property
    def booster(self):  # -> lightgbm.Booster
        return self.model.booster

    @property
    def features(self) -> tuple[str, ...]:
        return self.model.features

    @property
    def calibrator(self) -> Calibrator:
        return self.model.calibrator

    @property
    def categories(self) -> dict[str, list[str]]:
        return self.model.categories

    @property
    def thresholds(self) -> RiskThresholds:
        return self.model.thresholds

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The booster's input frame (for predict(pred_contrib=True) / SHAP on the same columns)."""
        from training.data import model_matrix

        return model_matrix(frame, self.model.categories)

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """risk_score (calibrated probability) and risk_group per row of a feature frame."""
        return score_frame(self.model, frame)


def score_frame(model: RiskModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Key columns (those present) + raw_score, risk_score, risk_group for every row of `frame`."""
    raw = model.raw_score(frame)
    score = model.calibrator.transform(raw)
    keys = [c for c in ("student_key", "round_id", "school_code") if c in frame.columns]
    out = frame[keys].reset_index(drop=True).copy()
    out["raw_score"] = raw
    out["risk_score"] = score
    out["risk_group"] = model.thresholds.assign(score)
    return out


def load_model(home: EwsHome, alias: str = CHAMPION, version: int | None = None,
               cfg: TrainConfig | None = None) -> LoadedModel:
    """The version behind `alias` (default champion), or an explicit version."""
    import mlflow.lightgbm

    client = client_for(home, cfg)
    name = (cfg or TrainConfig()).registered_model_name
    if version is None:
        v = _alias_version(client, name, alias)
        if v is None:
            raise RuntimeError(f"no version of {name!r} has the alias {alias!r}: run `ews train` first")
        version = v
    mv = client.get_model_version(name, str(version))
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
    payload = json.loads(Path(client.download_artifacts(mv.run_id, SCORING_ARTIFACT)).read_text(encoding="utf-8"))
    model = RiskModel(
        booster=booster, calibrator=Calibrator.from_dict(payload["calibrator"]),
        categories={k: list(v) for k, v in payload["categories"].items()},
        thresholds=RiskThresholds.from_dict(payload["thresholds"]), features=tuple(payload["features"]),
    )
    return LoadedModel(model=model, version=int(version), run_id=mv.run_id, trainset=payload["trainset"],
                       model_uri=f"models:/{name}/{version}", aliases=list(mv.aliases))


def load_champion(home: EwsHome, cfg: TrainConfig | None = None) -> LoadedModel:
    """The champion, as serving loads it."""
    return load_model(home, CHAMPION, cfg=cfg)


@dataclass
class VersionInfo:
    version: int
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
    name = (cfg or TrainConfig()).registered_model_name
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
            version=int(mv.version), aliases=sorted(by_version.get(str(mv.version), [])), run_id=mv.run_id, trainset=t.get("trainset", ""),
            created=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(timespec="seconds"),
            gate_metric=t.get("gate_metric", ""), gate_metric_value=num("gate_metric_value"), ece=num("ece"),
            fairness_failures=int(ff) if ff is not None else None, tags=t,
        ))
    return sorted(out, key=lambda v: v.version)


def champion_history(home: EwsHome, cfg: TrainConfig | None = None) -> list[dict[str, Any]]:
    client = client_for(home, cfg)
    return _history(client, (cfg or TrainConfig()).registered_model_name)


# ---------------------------------------------------------------------------------------------
# The release gate, promotion, rollback


@dataclass
class GateDecision:
    candidate: int
    champion: int | None
    passed: bool
    promoted: bool
    reasons: list[str]
    checks: dict[str, Any]
    override_reason: str | None = None


def _run_config(client: Any, run_id: str) -> TrainConfig:
    path = client.download_artifacts(run_id, "config.json")
    return TrainConfig.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


def _run_json(client: Any, run_id: str, artifact: str) -> Any:
    return json.loads(Path(client.download_artifacts(run_id, artifact)).read_text(encoding="utf-8"))


def evaluate_gate(home: EwsHome, candidate: int | None = None, cfg: TrainConfig | None = None) -> GateDecision:
    """Check the release gate for `candidate` (default: the challenger) without changing anything.

    1. better than the champion on the agreed metric, both scored on the candidate's test fold
       (the latest fold the candidate's training set labelled) — not on each one's own fold;
    2. calibrated: the candidate's ECE on that fold <= max_ece;
    3. fair: no judgeable group of a gated attribute outside the band on a gated metric."""
    from training.data import load_trainset
    from training.metrics import score_metrics
    from training.pipeline import split_trainset

    client = client_for(home, cfg)
    name = (cfg or TrainConfig()).registered_model_name
    if candidate is None:
        candidate = _alias_version(client, name, CHALLENGER)
        if candidate is None:
            raise RuntimeError("no challenger to promote: train one, or name a version with --version")
    champion = _alias_version(client, name, CHAMPION)
    cand = load_model(home, version=candidate, cfg=cfg)
    run_cfg = cfg or _run_config(client, cand.run_id)
    gate = run_cfg.gate
    metrics = _run_json(client, cand.run_id, "metrics.json")
    reasons: list[str] = []
    checks: dict[str, Any] = {"metric": gate.metric, "max_ece": gate.max_ece, "band": list(run_cfg.fairness.band)}
    if champion == candidate:
        reasons.append(f"version {candidate} is already the champion")
    if champion is not None and champion != candidate:
        champ = load_model(home, version=champion, cfg=cfg)
        try:
            ts = load_trainset(home, cand.trainset)
            _, folds = split_trainset(ts, run_cfg)
            test = folds["test"]
            y = test["label"].to_numpy(dtype=float)
            school = test["school_code"].astype(str).to_numpy()
            cm = score_metrics(y, cand.model.risk_score(test), school, run_cfg.capacities)
            hm = score_metrics(y, champ.model.risk_score(test), school, run_cfg.capacities)
            checks["compared_on"] = f"test fold of {cand.trainset}"
        except FileNotFoundError:
            # The training set is gone from this home: fall back to each run's logged figure.
            cm = metrics
            hm = _run_json(client, champ.run_id, "metrics.json")
            checks["compared_on"] = "each version's own logged test fold (training set not found)"
        checks["candidate"] = cm.get(gate.metric)
        checks["champion"] = hm.get(gate.metric)
        from training.metrics import greater_is_better

        better = (cm[gate.metric] - hm[gate.metric]) if greater_is_better(gate.metric) else (hm[gate.metric] - cm[gate.metric])
        checks["improvement"] = better
        if not better > gate.min_improvement:
            reasons.append(f"{gate.metric} {cm[gate.metric]:.4f} does not beat the champion's {hm[gate.metric]:.4f} "
                           f"(required margin {gate.min_improvement})")
    ece_value = float(metrics.get("ece", float("nan")))
    checks["ece"] = ece_value
    if not ece_value <= gate.max_ece:
        reasons.append(f"ECE {ece_value:.4f} above {gate.max_ece}")
    failures = _run_json(client, cand.run_id, "fairness/gate_failures.json")["failures"]
    checks["fairness_failures"] = failures
    reasons.extend(f"fairness: {f}" for f in failures)
    return GateDecision(candidate=candidate, champion=champion, passed=not reasons, promoted=False,
                        reasons=reasons, checks=checks)


def promote(home: EwsHome, version: int | None = None, override_reason: str | None = None,
            cfg: TrainConfig | None = None) -> GateDecision:
    """Make `version` (default: the challenger) champion if it passes the gate, or if an override
    reason is given (recorded on the version); otherwise change nothing and return the reasons."""
    if override_reason is not None and not override_reason.strip():
        raise ValueError("an override needs a written reason")
    decision = evaluate_gate(home, version, cfg)
    client = client_for(home, cfg)
    name = (cfg or TrainConfig()).registered_model_name
    v = str(decision.candidate)
    if decision.champion == decision.candidate:
        return decision
    if not decision.passed and override_reason is None:
        client.set_model_version_tag(name, v, "last_gate_refusal", json.dumps(decision.reasons, ensure_ascii=False)[:4900])
        return decision
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if not decision.passed:
        decision.override_reason = override_reason.strip()  # type: ignore[union-attr]
        client.set_model_version_tag(name, v, "promotion_override", decision.override_reason)
        client.set_model_version_tag(name, v, "promotion_override_failures",
                                     json.dumps(decision.reasons, ensure_ascii=False)[:4900])
    client.set_model_version_tag(name, v, "promoted_at", now)
    client.set_model_version_tag(name, v, "promotion_gate", json.dumps(decision.checks, default=str)[:4900])
    if _alias_version(client, name, CHALLENGER) == decision.candidate:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_registered_model_alias(name, CHAMPION, v)
    _append_history(client, name, decision.candidate,
                    "gate passed" if decision.passed else f"override: {decision.override_reason}")
    decision.promoted = True
    return decision


@dataclass
class RollbackResult:
    from_version: int
    to_version: int


def rollback(home: EwsHome, cfg: TrainConfig | None = None, reason: str = "rollback") -> RollbackResult:
    """Restore the previous champion (from the champion history) in one step."""
    client = client_for(home, cfg)
    name = (cfg or TrainConfig()).registered_model_name
    current = _alias_version(client, name, CHAMPION)
    stack = _stack(client, name)
    # The stack ends with the current champion; below it, the champion it replaced.
    while stack and stack[-1] == current:
        stack.pop()
    if current is None or not stack:
        raise RuntimeError("no previous champion to roll back to")
    previous = stack[-1]
    client.set_registered_model_alias(name, CHAMPION, str(previous))
    client.set_registered_model_tag(name, STACK_TAG, json.dumps(stack))
    client.set_model_version_tag(name, str(current), "rolled_back_at", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    _append_history(client, name, previous, f"{reason}: from version {current}", push=False)
    return RollbackResult(from_version=current, to_version=previous)
