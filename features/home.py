"""EWS_HOME and the deployment: the one object every stage receives, built at the entry point.

`EwsHome` is the deployment of the service: the home folder with every path under it (no path
under the home is built anywhere else) plus the typed settings of `features.deployment` (school
calendar, DuckDB resources, registry, serving, pseudonym key file). An entry point (each `ews`
command through `features.clikit.load_home`, the BentoML service's `__init__`) builds it once with
`EwsHome.from_env`, the only place in the product that reads environment variables, and passes it
down; stage functions read `home.calendar`, `home.duckdb`, ... and open DuckDB through
`features.db.session(home, ...)`.

Layout (created on demand by the commands that write, never at import time):
  warehouse.duckdb       accepted rows of every delivery, quarantine, ingestion log (pseudonymous)
  vault/identity.duckdb  the identity vault: citizen IDs, G-codes, names and exact birth dates (owner-only)
  vault/tmp/             scratch and DuckDB spill of sessions that hold raw IDs or names
  keys/pseudonym.key     the HMAC secret behind id tokens and student_key (owner-only)
  quarantine/            human-readable quarantine reports per delivery
  mlflow/                the embedded MLflow store (sqlite + artefacts)
  model_cards/           one model card per registered version
  features/, trainsets/  feature sets per round; training sets (trainsets/LATEST names the newest)
  rounds/                published scoring rounds
  monitoring/<round>/    monitoring reports
  serving/access.sqlite  access tokens and the access log
  serving/actions.sqlite the action record (append-only, hash-chained; serving.actions)
  vault/action_notes.sqlite  free-text notes of actions, only where a deployment enables them
  bentoml/               BENTOML_HOME of `ews serve`
  simulation/            the simulated province of `ews demo`
  tmp/                   DuckDB spill of pseudonymous sessions
  deployment.toml        optional settings (see features.deployment)
"""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from features.deployment import (
    ENV_DUCKDB_MEMORY, ENV_DUCKDB_THREADS, ENV_HOME, ENV_KEY_FILE, ENV_SERVE_GUARD, ENV_SERVE_WORKERS,
    ENV_TRACKING_URI,
    SETTINGS_FILE, DeploymentSettings,
)

if TYPE_CHECKING:
    from features.calendar import ScoringRound

DEFAULT_HOME = "~/.ews"  # expanded when the deployment is built, not when this module is imported


class EwsHome(DeploymentSettings):
    """The deployment: the home folder's paths and the installation's settings (inherited)."""

    root: Path

    @classmethod
    def from_env(cls, override: Path | None = None, environ: Mapping[str, str] | None = None) -> EwsHome:
        """The deployment of this process: the home given on the command line, else $EWS_HOME,
        else ~/.ews; its settings from the environment, else EWS_HOME/deployment.toml, else the
        defaults. The only reader of environment variables in the product."""
        env = os.environ if environ is None else environ
        root = (override or Path(env.get(ENV_HOME) or DEFAULT_HOME)).expanduser().resolve()
        settings: dict[str, Any] = {}
        file = root / SETTINGS_FILE
        if file.is_file():
            with open(file, "rb") as f:
                settings = tomllib.load(f)
            DeploymentSettings.model_validate(settings)  # a bad file fails here, naming its fields
        overrides: tuple[tuple[str, str, str], ...] = (
            (ENV_DUCKDB_MEMORY, "duckdb", "memory_limit"), (ENV_DUCKDB_THREADS, "duckdb", "threads"),
            (ENV_TRACKING_URI, "registry", "tracking_uri"), (ENV_SERVE_WORKERS, "serve", "workers"),
        )
        for var, section, field in overrides:
            if env.get(var):
                settings[section] = {**settings.get(section, {}), field: env[var]}
        if env.get(ENV_SERVE_GUARD):
            try:
                guard = json.loads(env[ENV_SERVE_GUARD])
            except json.JSONDecodeError as exc:
                raise ValueError(f"{ENV_SERVE_GUARD} is not a JSON object: {exc}") from None
            settings["serve"] = {**settings.get("serve", {}), "guard": guard}
        if env.get(ENV_KEY_FILE):
            settings["pseudonym_key_file"] = env[ENV_KEY_FILE]
        return cls(root=root, **settings)

    def child_environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The environment of a process this one starts (`ews serve` -> `bentoml serve`): ours,
        with the deployment's home and the given variables."""
        return {**os.environ, ENV_HOME: str(self.root), **extra}

    # -- the layout ----------------------------------------------------------------------------

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def vault_dir(self) -> Path:
        return self.root / "vault"

    @property
    def vault(self) -> Path:
        return self.vault_dir / "identity.duckdb"

    @property
    def vault_tmp_dir(self) -> Path:
        """Scratch space of work on raw IDs and names: inside the vault, never beside pseudonymous data."""
        return self.vault_dir / "tmp"

    @property
    def ingest_spill_dir(self) -> Path:
        return self.vault_tmp_dir / "spill"

    @property
    def link_spill_dir(self) -> Path:
        return self.vault_tmp_dir / "link-spill"

    def ingest_scratch_dir(self, delivery_id: str) -> Path:
        """Where one delivery's files are decoded; the process id keeps concurrent runs apart."""
        return self.vault_tmp_dir / f"{delivery_id}.{os.getpid()}"

    @property
    def spill_dir(self) -> Path:
        """DuckDB spill of pseudonymous sessions: under EWS_HOME, never the caller's working directory."""
        return self.root / "tmp"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def key_file(self) -> Path:
        return self.keys_dir / "pseudonym.key"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def quarantine_report(self, delivery_id: str) -> Path:
        """The human-readable quarantine report of one delivery."""
        return self.quarantine_dir / f"{delivery_id}.csv"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        """The embedded store's sqlite database (used when no tracking URI is configured)."""
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def model_cards_dir(self) -> Path:
        return self.root / "model_cards"

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def trainsets_dir(self) -> Path:
        return self.root / "trainsets"

    @property
    def notfound_dir(self) -> Path:
        """The not-found lists of Thailand Zero Dropout, one per census (features.pointintime.notfound)."""
        return self.root / "notfound"

    def monitoring_dir(self, round_id: str) -> Path:
        return self.root / "monitoring" / round_id

    @property
    def access_db(self) -> Path:
        return self.root / "serving" / "access.sqlite"

    @property
    def actions_db(self) -> Path:
        return self.root / "serving" / "actions.sqlite"

    @property
    def action_notes_db(self) -> Path:
        """Notes of actions (deployments with `actions.notes`): in the vault, beside the names."""
        return self.vault_dir / "action_notes.sqlite"

    @property
    def simulation_dir(self) -> Path:
        """The simulated province of `ews demo` (its deliveries and truth)."""
        return self.root / "simulation"

    @property
    def bentoml_dir(self) -> Path:
        return self.root / "bentoml"

    @property
    def prometheus_dir(self) -> Path:
        """Where BentoML keeps its metrics files (under BENTOML_HOME, which `ews serve` sets)."""
        return self.bentoml_dir / "prometheus_multiproc_dir"

    @property
    def security_log(self) -> Path:
        """One line per refused request (status, route template, token id): never a raw token or key."""
        return self.root / "serving" / "security.log"

    def ensure(self) -> EwsHome:
        """Create the layout; secret-bearing folders are owner-only (0700)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.vault_dir, self.keys_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self.quarantine_dir.mkdir(exist_ok=True)
        return self

    def pseudonym_key(self) -> bytes:
        """The deployment's HMAC secret: the configured key file if set, else keys/pseudonym.key,
        created (32 random bytes, mode 0600) on first use so the demo works out of the box."""
        path = self.pseudonym_key_file or self.key_file
        if not path.exists():
            if self.pseudonym_key_file:
                raise FileNotFoundError(f"{ENV_KEY_FILE} points to {path}, which does not exist")
            self.ensure()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        key = path.read_bytes()
        if len(key) < 16:
            raise ValueError(f"the pseudonym key in {path} is shorter than 16 bytes")
        return key

    def monitoring_report(self, scoring_round: ScoringRound, fmt: Literal["json", "html"]) -> Path:
        """monitoring/<round_id>/report.<fmt>: the one place this path is built (`ews monitor`
        writes it, the service hands it out). A `ScoringRound`, so no request can name a path
        outside the monitoring folder."""
        return self.monitoring_dir(scoring_round.round_id) / f"report.{fmt}"

    def monitoring_uplift(self, scoring_round: ScoringRound) -> Path:
        """monitoring/<round_id>/uplift.json: the analysts' uplift view `ews monitor --actions` writes
        beside the report (monitoring/uplift.py), which the service hands out."""
        return self.monitoring_dir(scoring_round.round_id) / "uplift.json"


def quiet_mlflow_progress() -> None:
    """MLflow's artefact progress bars would drown a command's summary and break --json on stdout;
    MLflow reads this switch from the environment only, so the entry point sets it there."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
