"""The training set as a typed artefact: manifest, frame and label-known dates, one load, one save.

Where it sits: `pipeline.build_trainset` joins the features of many rounds to their labels and
saves a `Trainset` here; training loads it (training/data.py is a thin call to `load_trainset`).
On disk, under the home's trainsets folder:

    trainsets/<name>/data.parquet    the labelled rows (features, label, outcome, label_state, label_evidence)
    trainsets/<name>/manifest.json   `TrainsetManifest`
    trainsets/LATEST                 the name of the newest set (written and read only here)

A name is a hash of what produced the set, so a rebuild of the same inputs is idempotent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from features.parquet import write_parquet
from features.pointintime.labels import Horizon
from features.pointintime.spec import FEATURE_NAMES

if TYPE_CHECKING:  # pandas is imported by `load_trainset` only: `ews features` never pays for it
    import pandas as pd

LATEST = "LATEST"
REQUIRED_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, "label", "round_id", "student_key", "school_code")


class TrainsetConfig(BaseModel):
    """What a training set is built from. Loaded at the entry point; stored in the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = 1
    rounds: tuple[str, ...] = Field((), description="Round ids; empty = every round with a known census.")
    horizon: Horizon = Field("next_census", description="Label horizon: next census, or one year.")
    cutoff: dt.date | None = Field(None, description="Labels use rows known by this date; default: the latest delivery of any source.")


class TrainsetRound(BaseModel):
    """One round of a training set: its labelled rows, the rows left out unlabelled, the label rate."""

    model_config = ConfigDict(extra="forbid")
    round_id: str
    round_type: str
    as_of: dt.date
    rows: int
    unlabelled: int
    label_rate: float | None = Field(description="Share of labelled rows that dropped out; None without rows.")
    # Absent in the simulator's synthetic sets (no warehouse, so no census dates): None = unknown.
    label_known_on: dt.date | None = Field(
        None, description="Day its labels became final: its horizon census arrived and every other evidence source "
                          "had arrived or was overdue (labels.labels_known_on); None if not by the cutoff.")


class TrainsetManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    config: TrainsetConfig
    cutoff: dt.date
    rounds: list[TrainsetRound]
    rows: int
    unlabelled_rows: int
    label_rate: float
    delivery_fingerprint: str
    catalogue_version: str
    feature_groups: dict[str, list[str]]
    categorical: list[str]
    file: str
    sha256: str
    # Which engine computed features and labels (None: written before this field).
    engine: Literal["duckdb", "spark"] | None = None
    # The linkage run whose keys the rows carry (None: written before this field, or no run):
    # `ews train` says when later runs moved keys (features.linkage.link.keys_changed_since).
    link_run: str | None = None


@dataclass(frozen=True)
class LabelKnown:
    """When labels became known: the set's cutoff, and per round the day its labels became final
    (horizon census and every evidence source arrived or overdue; None if not by the cutoff).
    """

    cutoff: dt.date
    by_round: dict[str, dt.date | None]


@dataclass(frozen=True)
class Trainset:
    name: str
    manifest: TrainsetManifest
    frame: pd.DataFrame
    folder: Path

    @property
    def label_known(self) -> LabelKnown:
        by_round = {r.round_id: r.label_known_on for r in self.manifest.rounds}
        return LabelKnown(cutoff=self.manifest.cutoff, by_round=by_round)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write then rename, so a crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    write_parquet(table, tmp)  # equal tables, equal bytes: the file's sha256 identifies it
    os.replace(tmp, path)


def atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def trainset_folder(trainsets_dir: Path, name: str) -> Path:
    return trainsets_dir / name


def save_trainset_data(trainsets_dir: Path, name: str, data: pa.Table) -> Path:
    """Write the rows of a set (first half of a save: the manifest needs the file's hash)."""
    path = trainset_folder(trainsets_dir, name) / "data.parquet"
    atomic_write_parquet(data, path)
    return path


def save_trainset_manifest(trainsets_dir: Path, manifest: TrainsetManifest) -> None:
    """Write the manifest and make the set the newest (LATEST)."""
    atomic_write_text(manifest.model_dump_json(indent=2), trainset_folder(trainsets_dir, manifest.name) / "manifest.json")
    set_latest(trainsets_dir, manifest.name)


def set_latest(trainsets_dir: Path, name: str) -> None:
    trainsets_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(name + "\n", trainsets_dir / LATEST)


def latest_trainset_name(trainsets_dir: Path) -> str:
    latest = trainsets_dir / LATEST
    if not latest.exists():
        raise FileNotFoundError(f"no training set in {trainsets_dir}: run `ews trainset` first")
    return latest.read_text(encoding="utf-8").strip()


def load_trainset(trainsets_dir: Path, name: str | None = None) -> Trainset:
    """The named training set (default: the newest), checked against the catalogue."""
    name = name or latest_trainset_name(trainsets_dir)
    folder = trainset_folder(trainsets_dir, name)
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"training set {name!r} not found in {trainsets_dir}")
    import pandas as pd

    manifest = TrainsetManifest.model_validate_json((folder / "manifest.json").read_text(encoding="utf-8"))
    frame = pd.read_parquet(folder / "data.parquet")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"training set {name} lacks columns {missing[:5]} (catalogue changed? rebuild it)")
    return Trainset(name=name, manifest=manifest, frame=frame, folder=folder)
