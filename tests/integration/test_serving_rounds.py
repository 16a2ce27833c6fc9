"""Scoring rounds are immutable snapshots: same inputs, same hash; `--due` scores only what is due."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from features.home import EwsHome
from serving.snapshot import published, snapshots_of
from tests.integration.serving_fixtures import ROOT, ServingHome, serving_home  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _score(home: ServingHome, *args: str) -> dict:
    env = dict(os.environ, EWS_HOME=str(home.root), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    out = subprocess.run([sys.executable, "-m", "ews", "score", *args, "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_rescoring_the_same_round_gives_the_same_snapshot_hash(serving_home: ServingHome) -> None:
    home = EwsHome(root=serving_home.root)
    before = published(home, serving_home.round_id)
    again = _score(serving_home, "--round", serving_home.round_id)["rounds"][0]
    assert before is not None and again["snapshot_hash"] == before.hash
    assert len(snapshots_of(home, serving_home.round_id)) == 1


def test_due_scores_nothing_before_any_round_date_and_skips_rounds_already_scored(serving_home: ServingHome) -> None:
    assert _score(serving_home, "--due", "--today", "2000-01-01")["rounds"] == []
    first = _score(serving_home, "--due", "--today", "2100-01-01")["rounds"]
    done = {r["round_id"] for r in first}
    assert serving_home.round_id not in done  # already scored by this champion
    assert _score(serving_home, "--due", "--today", "2100-01-01")["rounds"] == []
