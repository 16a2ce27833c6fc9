"""A model version is one type from training to monitoring: parsed once from text, printed as text."""

from __future__ import annotations

import json

import pytest

from training.version import ModelLineage, ModelVersion


def test_a_version_parses_from_text_and_prints_as_text() -> None:
    v = ModelVersion.parse("3")
    assert v == 3 and isinstance(v, ModelVersion) and str(v) == "3" and repr(v) == "ModelVersion(3)"
    assert ModelVersion.parse(v) is v
    assert sorted([ModelVersion(10), ModelVersion.parse("2")]) == [2, 10]  # numeric, not text, order
    assert json.dumps({"version": ModelVersion(4)}) == '{"version": 4}'
    assert {ModelVersion(5): "x"}[ModelVersion.parse(" 5 ")] == "x"


@pytest.mark.parametrize("bad", ["", "v3", "2.5", "0", "-1", None, 2.0, True])
def test_anything_but_a_whole_positive_number_is_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        ModelVersion.parse(bad)  # type: ignore[arg-type]


def test_the_lineage_writes_the_manifest_fields_as_text() -> None:
    lineage = ModelLineage(name="dropout-risk", version=ModelVersion(7), run_id="abc", trainset_name="ts",
                           trainset_fingerprint="f1", trainset_delivery_fingerprint="f2")
    assert lineage.model_uri == "models:/dropout-risk/7"
    assert lineage.manifest_fields() == {
        "model_name": "dropout-risk", "model_version": "7", "run_id": "abc", "trainset_name": "ts",
        "trainset_fingerprint": "f1", "trainset_delivery_fingerprint": "f2"}
