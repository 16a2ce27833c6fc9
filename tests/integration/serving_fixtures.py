"""What the serving tests share besides the fixtures: the home they are given and the `ews` runner.

The serving home itself is a rung of the session's fixture ladder (tests/conftest.py: `scored_world`
-> `serving_home` -> `service_url`, one build and one `bentoml serve` per session); tests that score
or monitor take `scored_copy` instead. This module only re-exports the names the tests use.
"""

from __future__ import annotations

from tests.support.worlds import ROOT, ScoredWorld, ServingHome, free_port
from tests.support.worlds import ews as _ews

__all__ = ["ROOT", "ScoredWorld", "ServingHome", "_ews", "free_port"]  # names earlier tests imported from here
