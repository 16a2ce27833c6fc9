"""The analyst notebook runs top to bottom against a small home, so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from features.home import EwsHome
from training.config import ModelConfig, TrainConfig
from simulator.synthetic import synthetic_frame, write_synthetic_trainset
from training.train import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analyst_retrain.ipynb"


def test_the_analyst_notebook_retrains_compares_and_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = EwsHome(root=tmp_path / "ews")
    write_synthetic_trainset(home, synthetic_frame(400, seed=8), name="ts-old")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(home, TrainConfig(model=ModelConfig(num_threads=1, n_estimators=40), shap_sample_rows=200), trainset="ts-old")
    write_synthetic_trainset(home, synthetic_frame(400, seed=9), name="ts-new")  # new rounds arrived

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"EWS_HOME": str(home.root), "EWS_TRAIN_THREADS": "1", "MPLBACKEND": "Agg"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "registered version 2 as challenger" in text
    assert "champion is now version" in text
    assert (home.root / "model_cards" / "dropout-risk-v2" / "model_card.html").exists()
