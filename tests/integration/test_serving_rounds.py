"""Scoring rounds are immutable snapshots: same inputs, same hash; `--due` scores only what is due.
These tests score, so each gets its own copy of the scored home (`scored_copy`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from features.home import EwsHome
from serving.snapshot import published, snapshots_of
from tests.integration.serving_fixtures import ROOT, ScoredWorld

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _score(home: ScoredWorld, *args: str) -> dict:
    env = dict(os.environ, EWS_HOME=str(home.root), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    out = subprocess.run([sys.executable, "-m", "ews", "score", *args, "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_rescoring_the_same_round_gives_the_same_snapshot_hash(scored_copy: ScoredWorld) -> None:
    home = EwsHome(root=scored_copy.root)
    before = published(home, scored_copy.round_id)
    again = _score(scored_copy, "--round", scored_copy.round_id)["rounds"][0]
    assert before is not None and again["snapshot_hash"] == before.hash
    assert len(snapshots_of(home, scored_copy.round_id)) == 1


def test_due_scores_nothing_before_any_round_date_and_skips_rounds_already_scored(scored_copy: ScoredWorld) -> None:
    assert _score(scored_copy, "--due", "--today", "2000-01-01")["rounds"] == []
    first = _score(scored_copy, "--due", "--today", "2100-01-01")["rounds"]
    done = {r["round_id"] for r in first}
    assert scored_copy.round_id not in done  # already scored by this champion
    assert _score(scored_copy, "--due", "--today", "2100-01-01")["rounds"] == []
