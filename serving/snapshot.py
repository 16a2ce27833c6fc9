"""The round snapshot: serving's typed artefact, written once under its content hash, published by a
pointer swap. `write_snapshot` is its one save, `SnapshotRef.manifest` / `SnapshotRef.students` its
one load; every reader (the service's store and views, exports, monitoring) asks the manifest's
column schema for columns *by role* instead of parsing column-name prefixes.

Layout under EWS_HOME/rounds/:
  <round_id>/<hash>/manifest.json   `SnapshotManifest`: the round, model lineage, training-set and
                                    delivery fingerprints, thresholds, calendar, score config, the
                                    column schema, counts and file hash (no wall-clock time: the
                                    hash must repeat)
  <round_id>/<hash>/students.parquet one row per enrolled student: keys, placement, score, group,
                                    every SHAP contribution, group sums, model inputs, fairness
                                    attributes, reasons
  <round_id>/PUBLISHED              the hash being served (replaced with os.replace)
  <round_id>/history.jsonl          when each hash was published (outside the hash on purpose)

A crash before the pointer swap leaves the previous snapshot served; the snapshot folder itself
appears in one rename, so a half-written folder is never under a hash name.

Manifests of schema version 1 (plain dicts whose column roles were the prefixes `x__`, `phi__`,
`grp__`) are converted on load, so rounds a deployment published before still serve.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from features.calendar import SchoolCalendar, ScoringRound, parse_round
from features.home import EwsHome
from features.parquet import ROW_GROUP_ROWS, write_parquet
from features.pointintime.build import PopulationSource
from features.pointintime.pipeline import file_sha256

POINTER = "PUBLISHED"
MANIFEST = "manifest.json"
STUDENTS = "students.parquet"
SNAPSHOT_SCHEMA_VERSION = 2
SCORE_CONFIG_VERSION = 1


# A DuckDB memory limit as DuckDB reads it ("1500MB", "3GB").
MEMORY_LIMIT = r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"


class ScoreConfig(BaseModel):
    """How a round is scored. Loaded at the entry point; recorded in the snapshot manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = SCORE_CONFIG_VERSION
    batch_rows: int = Field(200_000, ge=1000, description="Rows explained per batch (bounds memory: ~0.6 KB per row).")
    # 200k by measurement: with each round prepared once, the chunk size barely moves the CPU (1M pupils on
    # the 2-core machine, load ~4.5 from other work: 200k chunks 153 s wall / 137 CPU s / 2.0 GB peak, 100k
    # 175 s / 139 CPU s / 1.9 GB; `.venv/bin/python -m benchmarks.bench_round --home H --round 2566-T1-early
    # --pupils 1000000 --chunk-rows 200000 --chunk-rows 100000`), and fewer chunks mean fewer scratch parts.
    chunk_rows: int = Field(
        200_000, ge=1, description="Pupils per chunk of whole schools scored at once, from the feature SQL to the "
                                   "snapshot file (bounds a round's memory; a school larger than this is a chunk alone).")
    # The scoring session's DuckDB resources: they bound memory, never change a value, so they stay
    # out of the manifest (the snapshot's hash repeats whatever machine scored the round).
    duckdb_memory_limit: str = Field(
        "1500MB", pattern=MEMORY_LIMIT, exclude=True,
        description="DuckDB's memory limit while scoring: a chunk's feature SQL spills to `spill_dir` beyond it. "
                    "With the default chunk the round's peak (this, plus the chunk's frame, SHAP and reasons) stays "
                    "under 4 GB.")
    # Preparing a round (its population, round-wide steps and known rows, once) joins whole-country
    # relations - every census row and every source row to the link's keys - where a chunk's work
    # joins only its own pupils: at 8M pupils prepare took 1881 s of 2342 at 1.5 GB, 1277 s of 1795 at
    # 3 GB (peak 3.85 GB; docs/ARCHITECTURE.md "Where a national round's preparation goes", `benchmarks.bench_round`).
    prepare_memory_limit: str | None = Field(
        "3GB", pattern=MEMORY_LIMIT, exclude=True,
        description="DuckDB's memory limit while the round is prepared, before its chunks (None: "
                    "`duckdb_memory_limit`); the chunks then run within `duckdb_memory_limit` again, DuckDB "
                    "moving the prepared tables to `spill_dir` as needed.")
    spill_dir: Path | None = Field(None, exclude=True,
                                   description="Where the scoring session spills (None: the home's tmp/).")
    top_reasons: int = Field(3, ge=1, le=9, description="Reasons kept per student for lists and downloads.")
    additivity_tolerance: float = Field(1e-6, gt=0, description="Max |sum of contributions + base - raw margin| accepted.")


class ModelLineage(BaseModel):
    """Which model scored the round and what it was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version that scored every row.")
    run_id: str = Field(description="MLflow run that trained the version.")
    trainset_name: str = Field("", description="Training set the version was fitted on.")
    trainset_fingerprint: str = Field("", description="Content hash of that training set.")
    trainset_delivery_fingerprint: str = Field("", description="Deliveries the training set was built from.")


class ExplanationSummary(BaseModel):
    """How a round's contributions read (written by `serving.scoring.explanation_summary`): on the
    published score's logit scale, base_value + the contributions = logit(risk_score) for every
    scored row, up to `tolerance`, except `additivity_failures` rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scale: Literal["published_logit"] = "published_logit"
    calibration: Literal["platt", "isotonic"] = Field(description="Calibrator of the model (Platt: affine, exact).")
    slope: float = Field(description="Platt slope: published logit = slope * raw margin + intercept (1 for isotonic).")
    intercept: float = Field(description="Platt intercept (0 for isotonic).")
    base_logit: float = Field(description="The round's base value on the published logit scale.")
    base_probability: float = Field(description="sigmoid(base_logit): the probability the points start from.")
    tolerance: float = Field(description="Largest |base + contributions - published logit| counted as adding up.")
    max_additivity_error: float = Field(description="Largest |base + contributions - published logit| in the round.")
    additivity_failures: int = Field(ge=0, description="Scored rows beyond the tolerance.")
    material_odds: float = Field(description="A reason needs an odds multiplier at least this (or its inverse).")
    context_features: list[str] = Field(description="Shown once as context, never a reason.")
    protected_features: list[str] = Field(description="Never part of a reason.")


ColumnRole = Literal["id", "time", "placement", "score", "reason", "model_input", "contribution",
                     "group_contribution", "group_attribute"]


class ColumnSchema(BaseModel):
    """The role of every column of students.parquet (evidently's ColumnMapping idea): readers ask
    for `model_inputs`, `contributions`, ... and never derive a column name themselves.

    The mappings go from the logical name (a feature, a feature group, a fairness attribute) to the
    stored column, in model order, so `list(schema.model_inputs.values())` lines up with the
    model's feature order and with `contributions`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: list[str] = Field(description="Row identity: the pseudonymous student key.")
    time: list[str] = Field(description="Round id and as-of date of the row.")
    placement: list[str] = Field(description="School, grade, room and area of the student at the round.")
    score: list[str] = Field(description="scored flag, risk score, risk group, raw margin, base value.")
    reason: list[str] = Field(description="Why a row has no score, and the short reasons in Thai and English.")
    model_inputs: dict[str, str] = Field(description="Feature name -> column holding the value the model read.")
    contributions: dict[str, str] = Field(description="Feature name -> column holding its SHAP contribution (log-odds; "
                                                      "the published logit's when the manifest has `explanation`).")
    group_contributions: dict[str, str] = Field(description="Feature group -> column holding the group's summed contribution.")
    group_attributes: dict[str, str] = Field(
        default_factory=dict, description="Fairness attribute -> column (not a model input; audited by monitoring).")

    @classmethod
    def build(cls, features: list[str], feature_groups: list[str], attributes: list[str],
              placement: list[str], score: list[str], reason: list[str]) -> ColumnSchema:
        """The schema of a snapshot written now. The stored names keep the prefixes of schema 1
        (`x__`, `phi__`, `grp__`) so the student data of a round is byte-for-byte the same; only
        this function knows them."""
        return cls(
            id=["student_key"], time=["round_id", "as_of"], placement=list(placement), score=list(score),
            reason=list(reason),
            model_inputs={f: f"x__{f}" for f in features}, contributions={f: f"phi__{f}" for f in features},
            group_contributions={g: f"grp__{g}" for g in feature_groups},
            group_attributes={a: f"group_{a}" for a in attributes},
        )

    def columns(self, role: ColumnRole) -> list[str]:
        """The stored columns of a role, in schema order."""
        value = {"model_input": self.model_inputs, "contribution": self.contributions,
                 "group_contribution": self.group_contributions, "group_attribute": self.group_attributes,
                 }.get(role)
        if value is not None:
            return list(value.values())
        return list(getattr(self, role))


class SnapshotManifest(BaseModel):
    """What a published round is: everything needed to read, audit and replay it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = SNAPSHOT_SCHEMA_VERSION
    round: ScoringRound
    as_of: dt.date
    model: ModelLineage
    thresholds: dict[str, Any] = Field(description="The model's risk thresholds as registered (cut-offs, shares, labels).")
    calendar: SchoolCalendar
    config: ScoreConfig
    delivery_fingerprint: str = Field(description="Deliveries known by the as-of date (the features' input).")
    features: list[str] = Field(description="Model inputs in the model's order.")
    feature_groups: list[str] = Field(description="Feature groups in the order of the group contributions.")
    no_score_reasons: dict[str, dict[str, str]] = Field(description="Code -> {en, th} for rows without a score.")
    columns: ColumnSchema
    explanation: ExplanationSummary | None = Field(
        None, description="Scale and additivity of the contributions; None: a snapshot from before, on the raw margin.")
    rows: int = Field(0, ge=0, description="Students in students.parquet.")
    scored_rows: int = Field(0, ge=0, description="Of which scored.")
    students_sha256: str = Field("", description="Content hash of students.parquet.")
    snapshot_hash: str = Field("", description="Hash of this manifest without this field: the folder name.")
    population: PopulationSource | None = Field(
        None, description="Where the population came from: the round's census, or the latest enrolment evidence "
                          "when the census was not received by the as-of date (None: written before this field).")

    @property
    def round_id(self) -> str:
        return self.round.round_id

    @property
    def model_version(self) -> str:
        return self.model.model_version

    @property
    def population_caveat(self) -> dict[str, str] | None:
        """"census of <date> not received; population as of <date>" in English and Thai, or None."""
        return self.population.caveat() if self.population else None

    def canonical(self) -> str:
        """The bytes the snapshot hash is taken over. Keys keep the fields' order and are not sorted:
        the order of the column mappings is the model's feature order, which readers rely on."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str, where: Path | str = "manifest") -> SnapshotManifest:
        """Read a manifest of any schema version (1 is converted), naming the file on error."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}: a snapshot manifest must be a JSON object")
        if int(data.get("schema_version", 1)) == 1:
            data = _from_v1(data, where)
        try:
            return cls.model_validate(data)
        except Exception as exc:  # pydantic's message names the field
            raise ValueError(f"{where}: not a valid snapshot manifest: {exc}") from None


# Columns of the snapshot that schema 1 wrote under these roles (schema 1 kept no column list).
_V1_PLACEMENT = ["school_code", "school_name", "grade", "room", "tambon_code", "tambon_name", "amphoe_code",
                 "amphoe_name", "province_code", "province_name"]
_V1_SCORE = ["scored", "risk_score", "risk_group", "raw_margin", "base_value"]
_V1_REASON = ["no_score_reason", "reasons_th", "reasons_en"]
_V1_LINEAGE = ("model_name", "model_version", "run_id", "trainset_name", "trainset_fingerprint",
               "trainset_delivery_fingerprint")


def _from_v1(d: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """A schema-1 manifest (a flat dict; column roles were name prefixes) as schema-2 fields."""
    missing = [k for k in ("round_id", "as_of", "model_version", "features", "feature_groups") if k not in d]
    if missing:
        raise ValueError(f"{where}: schema-1 snapshot manifest lacks {', '.join(missing)}")
    schema = ColumnSchema.build(list(d["features"]), list(d["feature_groups"]), [], _V1_PLACEMENT, _V1_SCORE, _V1_REASON)
    return {
        "schema_version": 1, "round": parse_round(str(d["round_id"])), "as_of": d["as_of"],
        "model": {k: str(d.get(k) or "") for k in _V1_LINEAGE} | {"model_name": str(d.get("model_name") or "dropout-risk")},
        "thresholds": d.get("thresholds") or {}, "calendar": d["calendar"],  # every schema-1 manifest recorded its calendar
        "config": d.get("config") or {}, "delivery_fingerprint": str(d.get("delivery_fingerprint", "")),
        "features": d["features"], "feature_groups": d["feature_groups"],
        "no_score_reasons": d.get("no_score_reasons") or {}, "columns": schema.model_dump(),
        "rows": int(d.get("rows", 0)), "scored_rows": int(d.get("scored_rows", 0)),
        "students_sha256": str(d.get("students_sha256", "")), "snapshot_hash": str(d.get("snapshot_hash", "")),
    }


def as_round(scoring_round: ScoringRound | str) -> ScoringRound:
    """Serving passes `ScoringRound`s; a string from a caller outside serving (test fixtures,
    benchmarks, notebooks) is parsed here, which also keeps a bad id from naming a path."""
    return scoring_round if isinstance(scoring_round, ScoringRound) else parse_round(scoring_round)


@dataclass(frozen=True)
class SnapshotRef:
    round: ScoringRound
    hash: str
    folder: Path
    _manifest: list[SnapshotManifest] = field(default_factory=list, repr=False, compare=False)

    @property
    def round_id(self) -> str:
        return self.round.round_id

    @property
    def manifest(self) -> SnapshotManifest:
        """The typed manifest (read once per reference: a snapshot never changes)."""
        if not self._manifest:
            path = self.folder / MANIFEST
            self._manifest.append(SnapshotManifest.from_json(path.read_text(encoding="utf-8"), path))
        return self._manifest[0]

    def students(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.folder / STUDENTS, columns=columns)

    def group_attributes(self, students: pd.DataFrame) -> pd.DataFrame:
        """The fairness attributes of each row (attribute -> value), as the features stage defined
        them (`group_*` columns of the feature set). Snapshots of schema 1 did not store them:
        their values are derived from the stored model inputs with the same rules."""
        cols = self.manifest.columns.group_attributes
        if cols:
            return pd.DataFrame({a: students[c].astype("object") for a, c in cols.items()}, index=students.index)
        return _v1_group_attributes(students, self.manifest.columns)


def _v1_group_attributes(students: pd.DataFrame, schema: ColumnSchema) -> pd.DataFrame:
    """Schema-1 snapshots only: the rules of `features.pointintime.build`'s group_* columns
    applied to the stored inputs (what monitoring did before the attributes were stored)."""
    x = schema.model_inputs

    def flag(feature: str) -> np.ndarray:
        return students[x[feature]].astype("boolean").fillna(False).to_numpy(dtype=bool)

    screened, poor = flag("cct_screened"), flag("extremely_poor")
    return pd.DataFrame({
        "sex": students[x["sex"]].astype("object"),
        "region": students[x["region"]].astype("object"),
        "province": students["province_name"].astype("object"),
        "nationality": np.where(flag("non_thai_id"), "gcode_or_non_thai", "thai"),
        "disability": np.where(flag("disability"), "disability", "none"),
        "cct_poverty": np.where(~screened, "not_screened", np.where(poor, "extremely_poor", "screened_not_extreme")),
    }, index=students.index)


_ROLES: tuple[ColumnRole, ...] = ("id", "time", "placement", "score", "reason", "model_input", "contribution",
                                  "group_contribution", "group_attribute")


class StudentsWriter:
    """Appends tables to students.parquet in the fixed row groups of `features.parquet.write_parquet`,
    so a round written chunk by chunk has the bytes of the same rows written at once (for one schema).
    Holds at most one row group of buffered rows beyond the table being appended."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.path, self.schema, self.row_group_rows = path, schema, row_group_rows
        self.rows = 0
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=True, write_statistics=True)

    def write(self, table: pa.Table) -> None:
        table = table.cast(self.schema) if table.schema != self.schema else table
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        if self._buffered >= self.row_group_rows:
            self._flush(whole_groups_only=True)

    def _flush(self, whole_groups_only: bool) -> None:
        pending = pa.concat_tables(self._buffer)
        offset = 0
        while pending.num_rows - offset >= self.row_group_rows or (not whole_groups_only and offset < pending.num_rows):
            part = pending.slice(offset, self.row_group_rows).combine_chunks()
            self._writer.write_table(part, row_group_size=self.row_group_rows)
            offset += part.num_rows
        rest = pending.slice(offset)
        self._buffer, self._buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self._buffered:
            self._flush(whole_groups_only=False)
        elif not self.rows:
            self._writer.write_table(self.schema.empty_table())  # as write_parquet writes an empty table
        self._writer.close()


class PendingSnapshot:
    """A snapshot folder being written: a hidden temporary folder beside the round's snapshots that
    `seal` renames to its hash in one step and any failure removes, so no half snapshot is ever under
    a hash name. Use as a context manager around the writing."""

    def __init__(self, home: EwsHome, scoring_round: ScoringRound) -> None:
        self.round = scoring_round
        self.round_dir = home.rounds_dir / scoring_round.round_id
        self.round_dir.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.round_dir))
        self.ref: SnapshotRef | None = None

    @property
    def students_path(self) -> Path:
        return self.folder / STUDENTS

    def scratch(self, name: str) -> Path:
        """A working folder inside the pending snapshot (removed before `seal` renames it)."""
        d = self.folder / ".scratch" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def __enter__(self) -> PendingSnapshot:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.ref is None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def seal(self, manifest: SnapshotManifest) -> SnapshotRef:
        """Check students.parquet against the manifest's column schema, fill in the counts, the file
        hash and the snapshot hash, and rename the folder to the hash (idempotent: an equal snapshot
        already there is kept)."""
        shutil.rmtree(self.folder / ".scratch", ignore_errors=True)
        names = set(pq.read_schema(self.students_path).names)
        missing = [c for role in _ROLES for c in manifest.columns.columns(role) if c not in names]
        if missing:
            raise ValueError(f"the students table lacks columns its schema declares: {', '.join(missing[:5])}")
        meta = pq.read_metadata(self.students_path)
        rows = meta.num_rows
        scored = int(pc.sum(pq.read_table(self.students_path, columns=["scored"]).column("scored")).as_py() or 0) \
            if rows else 0
        body = manifest.model_copy(update={"students_sha256": file_sha256(self.students_path), "rows": rows,
                                           "scored_rows": scored, "snapshot_hash": ""})
        digest = hashlib.sha256(body.canonical().encode("utf-8")).hexdigest()[:16]
        body = body.model_copy(update={"snapshot_hash": digest})
        (self.folder / MANIFEST).write_text(body.canonical(), encoding="utf-8")
        final = self.round_dir / digest
        if final.exists():
            shutil.rmtree(self.folder)
        else:
            os.rename(self.folder, final)
        self.ref = SnapshotRef(self.round, digest, final)
        return self.ref


def write_snapshot(home: EwsHome, manifest: SnapshotManifest, students: pa.Table) -> SnapshotRef:
    """Write the snapshot under its content hash (idempotent) without publishing it. The manifest's
    counts, file hash and snapshot hash are filled in here."""
    missing = [c for role in _ROLES for c in manifest.columns.columns(role) if c not in students.column_names]
    if missing:
        raise ValueError(f"the students table lacks columns its schema declares: {', '.join(missing[:5])}")
    with PendingSnapshot(home, manifest.round) as pending:
        # Written so that equal tables give equal bytes (whatever the chunking of the query
        # result), so the file hash is a content hash and rescoring reproduces the snapshot.
        write_parquet(students, pending.students_path)
        return pending.seal(manifest)


def publish(home: EwsHome, ref: SnapshotRef) -> None:
    """Point the round at this snapshot in one atomic rename."""
    round_dir = home.rounds_dir / ref.round_id
    tmp = round_dir / f".{POINTER}.tmp"
    tmp.write_text(ref.hash + "\n", encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, round_dir / POINTER)
    with open(round_dir / "history.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"hash": ref.hash, "published_at": dt.datetime.now(dt.UTC).isoformat()}) + "\n")


def published(home: EwsHome, scoring_round: ScoringRound | str) -> SnapshotRef | None:
    r = as_round(scoring_round)
    pointer = home.rounds_dir / r.round_id / POINTER
    if not pointer.exists():
        return None
    digest = pointer.read_text(encoding="utf-8").strip()
    folder = home.rounds_dir / r.round_id / digest
    if not (folder / MANIFEST).exists():
        return None
    return SnapshotRef(r, digest, folder)


def _round_folders(home: EwsHome) -> list[ScoringRound]:
    """Round folders under rounds/ whose name is a round id (anything else there is not a round)."""
    if not home.rounds_dir.exists():
        return []
    out = []
    for d in sorted(home.rounds_dir.iterdir()):
        try:
            out.append(parse_round(d.name))
        except ValueError:
            continue
    return out


def published_rounds(home: EwsHome) -> list[SnapshotRef]:
    """Every published round, oldest round id first."""
    refs = [published(home, r) for r in _round_folders(home)]
    return [r for r in refs if r is not None]


def snapshots_of(home: EwsHome, scoring_round: ScoringRound | str) -> list[SnapshotRef]:
    """Every snapshot written for a round, published or not."""
    r = as_round(scoring_round)
    d = home.rounds_dir / r.round_id
    if not d.exists():
        return []
    return [SnapshotRef(r, p.name, p) for p in sorted(d.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists()]
