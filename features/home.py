"""EWS_HOME: the one directory holding everything the service keeps.

Layout (created on demand by the commands that write, never at import time):
  warehouse.duckdb       accepted rows of every delivery, quarantine, ingestion log (pseudonymous)
  vault/identity.duckdb  the identity vault: citizen IDs, G-codes and names (owner-only)
  keys/pseudonym.key     the HMAC secret behind id tokens and student_key (owner-only)
  quarantine/            human-readable quarantine reports per delivery
  mlflow/                the embedded MLflow store (sqlite + artefacts)
  rounds/                published scoring rounds
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from features.calendar import ScoringRound

DEFAULT_HOME = Path.home() / ".ews"


class EwsHome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    root: Path

    @classmethod
    def from_env(cls, override: Path | None = None) -> EwsHome:
        """The home given on the command line, else $EWS_HOME, else ~/.ews."""
        root = override or Path(os.environ.get("EWS_HOME") or DEFAULT_HOME)
        return cls(root=root.expanduser().resolve())

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
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def key_file(self) -> Path:
        return self.keys_dir / "pseudonym.key"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def rounds_dir(self) -> Path:
        return self.root / "rounds"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def trainsets_dir(self) -> Path:
        return self.root / "trainsets"

    def ensure(self) -> EwsHome:
        """Create the layout; secret-bearing folders are owner-only (0700)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.vault_dir, self.keys_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self.quarantine_dir.mkdir(exist_ok=True)
        return self

    def pseudonym_key(self) -> bytes:
        """The deployment's HMAC secret: $EWS_PSEUDONYM_KEY_FILE if set, else keys/pseudonym.key,
        created (32 random bytes, mode 0600) on first use so the demo works out of the box."""
        env = os.environ.get("EWS_PSEUDONYM_KEY_FILE")
        path = Path(env) if env else self.key_file
        if not path.exists():
            if env:
                raise FileNotFoundError(f"EWS_PSEUDONYM_KEY_FILE points to {path}, which does not exist")
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
        return self.root / "monitoring" / scoring_round.round_id / f"report.{fmt}"
