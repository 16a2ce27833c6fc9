"""The settings of one installation of the service, typed: what `EwsHome` carries besides its paths.

Where a setting comes from (the first that gives it wins):
  1. the environment variable named below (read in ONE place: `EwsHome.from_env`);
  2. EWS_HOME/deployment.toml, if present (same fields as `DeploymentSettings`, e.g.
         schema_version = 1
         pseudonym_key_file = "/etc/ews/pseudonym.key"
         [duckdb]
         memory_limit = "12GB"
         threads = 4
         max_spill = "40GB"       # default: DuckDB's, 90% of the free disk
         [engine]
         kind = "spark"           # default "duckdb"
         [engine.spark]
         master = "local[2]"
     );
  3. the defaults here.

The settings are built once at an entry point (each `ews` command, the BentoML service's
`__init__`) and travel with the home object every stage function already receives; nothing below
the entry points reads the environment or default-constructs a calendar (a unit test checks).
The delivery schedule (when each source's records become known) is left for issue 11.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from features.calendar import SchoolCalendar

# Environment variable -> the setting it overrides (documented here, read in features.home).
ENV_HOME = "EWS_HOME"
ENV_DUCKDB_MEMORY = "EWS_DUCKDB_MEMORY"
ENV_DUCKDB_THREADS = "EWS_DUCKDB_THREADS"
ENV_TRACKING_URI = "EWS_MLFLOW_TRACKING_URI"
ENV_KEY_FILE = "EWS_PSEUDONYM_KEY_FILE"
ENV_SERVE_WORKERS = "EWS_SERVE_WORKERS"
ENV_SERVE_GUARD = "EWS_GUARD"
SETTINGS_FILE = "deployment.toml"


class DuckDBSettings(BaseModel):
    """Resources of every DuckDB session the service opens (see `features.db.session`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    memory_limit: str = Field("6GB", description=f"DuckDB memory limit per session; big work spills to disk ({ENV_DUCKDB_MEMORY}).")
    threads: int = Field(2, ge=1, description=f"DuckDB threads per session ({ENV_DUCKDB_THREADS}).")
    max_spill: str | None = Field(
        None, pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
        description="The most a session may spill to disk (DuckDB's max_temp_directory_size, e.g. \"40GB\"): "
                    "work that needs more stops with DuckDB's error instead of filling the disk the "
                    "warehouse lives on. Default: DuckDB's own, 90% of the free space.")


class RegistrySettings(BaseModel):
    """Where models are registered."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tracking_uri: str | None = Field(
        None, description=f"MLflow tracking URI of any MLflow server ({ENV_TRACKING_URI}); "
                          "default: the embedded sqlite store in EWS_HOME/mlflow.")


class ServeSettings(BaseModel):
    """How `ews serve` runs the service."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workers: int = Field(1, ge=1, description=f"Worker processes, each holding the model and rounds ({ENV_SERVE_WORKERS}; "
                                              "`ews serve --workers` wins).")
    guard: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Overrides of the request guard's limits (serving.guard.GuardConfig: body size, rows, rate "
                    f"buckets), validated by the service ({ENV_SERVE_GUARD}, a JSON object).")


class ActionSettings(BaseModel):
    """The action record (serving.actions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    notes: bool = Field(False, description="Allow free-text notes on actions; they are kept in the identity vault "
                                           "(vault/action_notes.sqlite), never in the action record.")


class SparkSettings(BaseModel):
    """Where the Spark engine runs (features/engine/spark.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    master: str = Field("local[2]", description="Spark master URL: local[N] on one machine, spark://host:7077 or "
                                                "yarn on a cluster (then run the stage with `spark-submit`).")
    conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings, e.g. "
                                 "{'spark.driver.memory' = '8g', 'spark.sql.shuffle.partitions' = '64'}.")
    exchange_dir: Path | None = Field(
        None, description="Where the warehouse's tables are exported as Parquet for Spark to read; on a cluster, "
                          "storage every executor reads. Default: a temporary folder removed after each run.")


class EngineSettings(BaseModel):
    """Which engine computes the point-in-time features and labels from the compiled SQL."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["duckdb", "spark"] = Field("duckdb", description="'duckdb' (embedded, default) or 'spark'.")
    spark: SparkSettings = Field(default_factory=SparkSettings, description="Spark settings (kind = 'spark').")


class DeploymentSettings(BaseModel):
    """Everything of an installation that is not a path under the home. Versioned: change the
    schema_version on edits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = Field(1, description="Version of this settings schema.")
    calendar: SchoolCalendar = Field(default_factory=SchoolCalendar, description="The school calendar the whole service follows.")
    duckdb: DuckDBSettings = Field(default_factory=DuckDBSettings, description="DuckDB session resources.")
    registry: RegistrySettings = Field(default_factory=RegistrySettings, description="Model registry settings.")
    serve: ServeSettings = Field(default_factory=ServeSettings, description="Service settings.")
    actions: ActionSettings = Field(default_factory=ActionSettings, description="Action record settings.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Feature engine: DuckDB or Spark.")
    pseudonym_key_file: Path | None = Field(
        None, description=f"The HMAC secret behind id tokens and student_key ({ENV_KEY_FILE}); "
                          "default: EWS_HOME/keys/pseudonym.key, created on first use.")
