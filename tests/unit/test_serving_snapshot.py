"""A round snapshot is one typed artefact: saved once under its content hash, loaded into a typed
manifest whose column schema names every column's role; rounds published before (schema 1) load too."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from features.calendar import SchoolCalendar, parse_round
from features.home import EwsHome
from serving.snapshot import (
    ColumnSchema, ModelLineage, ScoreConfig, SnapshotManifest, publish, published, published_rounds, snapshots_of,
    write_snapshot,
)

ROUND = parse_round("2568-T1-early")
FEATURES = ["sex", "region", "non_thai_id", "disability", "cct_screened", "extremely_poor"]
GROUPS = ["student", "poverty"]


def _schema(attributes: list[str]) -> ColumnSchema:
    return ColumnSchema.build(FEATURES, GROUPS, attributes, placement=["school_code", "province_name"],
                              score=["scored", "risk_score", "risk_group"], reason=["no_score_reason"])


def _manifest(schema: ColumnSchema) -> SnapshotManifest:
    cal = SchoolCalendar()
    return SnapshotManifest(
        round=ROUND, as_of=cal.as_of(ROUND), model=ModelLineage(model_name="dropout-risk", model_version="3", run_id="r1"),
        thresholds={"problem": 0.5, "at_risk": 0.2}, calendar=cal, config=ScoreConfig(), delivery_fingerprint="abc",
        features=FEATURES, feature_groups=GROUPS, no_score_reasons={}, columns=schema,
    )


def _table(schema: ColumnSchema) -> pa.Table:
    n = 3
    cols: dict[str, list] = {
        "student_key": ["k1", "k2", "k3"], "round_id": [ROUND.round_id] * n, "as_of": [dt.date(2025, 7, 1)] * n,
        "school_code": ["1000000001"] * n, "province_name": ["Nan", "Nan", None],
        "scored": [True, True, False], "risk_score": [0.7, 0.1, None], "risk_group": ["problem", "normal", None],
        "no_score_reason": [None, None, "no_history"],
    }
    inputs = {"sex": ["F", "M", "F"], "region": ["north", "north", None], "non_thai_id": [False, True, None],
              "disability": [True, False, False], "cct_screened": [True, True, False],
              "extremely_poor": [True, False, None]}
    cols |= {schema.model_inputs[f]: v for f, v in inputs.items()}
    cols |= {c: [0.1, -0.2, None] for c in schema.columns("contribution")}
    cols |= {c: [0.3, 0.0, None] for c in schema.columns("group_contribution")}
    cols |= {c: ["a", "b", "c"] for c in schema.columns("group_attribute")}
    return pa.table(cols)


def test_a_written_snapshot_loads_as_the_same_typed_manifest_with_counts_and_hashes(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path)
    schema = _schema(["sex"])
    ref = write_snapshot(home, _manifest(schema), _table(schema))
    again = write_snapshot(home, _manifest(schema), _table(schema))
    assert again.hash == ref.hash and len(snapshots_of(home, ROUND)) == 1  # content-addressed: a rerun is a no-op
    assert published(home, ROUND) is None
    publish(home, ref)
    loaded = published(home, ROUND)
    assert loaded is not None and loaded.round == ROUND and [r.hash for r in published_rounds(home)] == [ref.hash]
    m = loaded.manifest
    assert isinstance(m, SnapshotManifest) and m.round == ROUND and m.model_version == "3"
    assert (m.rows, m.scored_rows, m.snapshot_hash) == (3, 2, ref.hash) and len(m.students_sha256) == 64
    assert m.columns == schema
    # the mappings keep the model's feature order through the JSON (contributions line up with it)
    assert list(m.columns.contributions) == FEATURES == list(m.columns.model_inputs) and FEATURES != sorted(FEATURES)


def test_readers_ask_the_schema_for_columns_by_role() -> None:
    schema = _schema(["sex", "province"])
    assert list(schema.model_inputs) == FEATURES == list(schema.contributions)
    assert schema.columns("model_input") == [schema.model_inputs[f] for f in FEATURES]
    assert schema.columns("group_attribute") == ["group_sex", "group_province"]
    assert schema.columns("id") == ["student_key"] and schema.columns("score") == ["scored", "risk_score", "risk_group"]
    # every role names distinct columns: no column has two roles
    every = [c for role in ("id", "time", "placement", "score", "reason", "model_input", "contribution",
                            "group_contribution", "group_attribute") for c in schema.columns(role)]  # type: ignore[arg-type]
    assert len(every) == len(set(every))


def test_a_table_missing_a_declared_column_is_refused_naming_it(tmp_path: Path) -> None:
    schema = _schema(["sex"])
    with pytest.raises(ValueError, match="group_sex"):
        write_snapshot(EwsHome(root=tmp_path), _manifest(schema), _table(schema).drop(["group_sex"]))


def _v1(tmp_path: Path) -> Path:
    """A round as schema 1 published it: a flat manifest and x__/phi__/grp__ columns, no attributes."""
    schema = _schema([])
    folder = tmp_path / "rounds" / ROUND.round_id / "0123456789abcdef"
    folder.mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(_table(schema), folder / "students.parquet")
    manifest = {
        "schema_version": 1, "round_id": ROUND.round_id, "as_of": "2025-07-01", "model_name": "dropout-risk",
        "model_version": "2", "run_id": "abc", "trainset_name": "ts-1", "trainset_fingerprint": "f",
        "trainset_delivery_fingerprint": "d", "delivery_fingerprint": "x",
        "config": ScoreConfig().model_dump(mode="json"), "calendar": SchoolCalendar().model_dump(mode="json"),
        "thresholds": {"problem": 0.5}, "features": FEATURES, "feature_groups": GROUPS,
        "no_score_reasons": {"no_history": {"en": "e", "th": "t"}}, "students_sha256": "s", "rows": 3,
        "snapshot_hash": "0123456789abcdef",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder.parent / "PUBLISHED").write_text("0123456789abcdef\n", encoding="utf-8")
    return folder


def test_a_round_published_with_schema_1_loads_with_its_roles_and_fairness_attributes(tmp_path: Path) -> None:
    _v1(tmp_path)
    ref = published(EwsHome(root=tmp_path), ROUND)
    assert ref is not None
    m = ref.manifest
    assert m.schema_version == 1 and m.round == ROUND and m.as_of == dt.date(2025, 7, 1)
    assert m.model == ModelLineage(model_name="dropout-risk", model_version="2", run_id="abc", trainset_name="ts-1",
                                   trainset_fingerprint="f", trainset_delivery_fingerprint="d")
    assert m.columns.columns("contribution") == [f"phi__{f}" for f in FEATURES]
    assert m.columns.columns("group_contribution") == [f"grp__{g}" for g in GROUPS]
    assert m.columns.group_attributes == {}
    students = ref.students().to_pandas()
    groups = ref.group_attributes(students)
    assert groups.astype(object).where(groups.notna(), None).to_dict("list") == {
        "sex": ["F", "M", "F"], "region": ["north", "north", None], "province": ["Nan", "Nan", None],
        "nationality": ["thai", "gcode_or_non_thai", "thai"], "disability": ["disability", "none", "none"],
        "cct_poverty": ["extremely_poor", "screened_not_extreme", "not_screened"],
    }


def test_a_schema_2_snapshot_gives_its_stored_fairness_attributes(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path)
    schema = _schema(["sex", "province"])
    ref = write_snapshot(home, _manifest(schema), _table(schema))
    groups = ref.group_attributes(ref.students().to_pandas())
    assert list(groups.columns) == ["sex", "province"] and groups["province"].tolist() == ["a", "b", "c"]


def test_a_broken_manifest_is_an_error_naming_the_file(tmp_path: Path) -> None:
    folder = _v1(tmp_path)
    (folder / "manifest.json").write_text('{"schema_version": 2, "round": "nope"}', encoding="utf-8")
    ref = published(EwsHome(root=tmp_path), ROUND)
    assert ref is not None
    with pytest.raises(ValueError, match="manifest.json"):
        _ = ref.manifest


def test_a_round_id_that_is_not_a_round_never_names_a_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not of the form"):
        published(EwsHome(root=tmp_path), "../../etc")
