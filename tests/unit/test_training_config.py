"""The training config is typed, strict and documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.config import TrainConfig, load_config


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TrainConfig.model_validate({"model": {"num_leaf": 7}})


def test_every_field_of_every_section_has_a_description() -> None:
    for section in ("split", "model", "calibration", "risk_groups", "fairness", "gate"):
        model = type(getattr(TrainConfig(), section))
        for name, f in model.model_fields.items():
            assert f.description, f"{section}.{name} has no description"


def test_a_config_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"model": {"num_threads": 1}, "gate": {"metric": "precision_at_10pct"}}))
    cfg = load_config(path)
    assert cfg.model.num_threads == 1 and cfg.gate.metric == "precision_at_10pct"
    assert cfg.model.num_leaves == TrainConfig().model.num_leaves
    assert cfg.schema_version == 2  # 2: gates judged on intervals, group sizes in students


def test_importing_the_training_package_does_no_work(tmp_path: Path) -> None:
    # No MLflow import (hence no tracking URI set), no folder created, nothing printed.
    code = (
        "import sys\n"
        "import training.config, training.splits, training.metrics, training.fairness, training.model, "
        "training.pipeline, training.registry, training.card, training.plots, training.train, training.cli\n"
        "print(sorted(m for m in ('mlflow', 'fairlearn', 'matplotlib', 'shap') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "EWS_HOME": str(tmp_path / "home")})
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []
