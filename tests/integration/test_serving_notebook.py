"""The auditor notebook runs end to end on a real home: replay matches, explanation adds up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.serving_fixtures import ServingHome

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "auditor_replay.ipynb"


def test_the_auditor_notebook_replays_a_published_score(serving_home: ServingHome, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("EWS_HOME", str(serving_home.root))
    monkeypatch.setenv("EWS_ROUND", serving_home.round_id)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
    # nbclient raises on any failing cell; the notebook's own asserts check replay and additivity.
    outputs = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "ความเสี่ยง" in outputs
