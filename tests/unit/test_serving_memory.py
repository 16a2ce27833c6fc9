"""Worker memory under load (issue 13): the serve environment that keeps the allocator's per-thread
pages from becoming the worker's resident size. Measured by benchmarks/bench_load.py (rss_timeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.home import EwsHome


def test_ews_serve_caps_glibc_malloc_arenas_for_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.cli import service_env

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    env = service_env(EwsHome.from_env(tmp_path, environ={}), 1)
    assert env["MALLOC_ARENA_MAX"] == "2"


def test_an_operators_own_malloc_arena_setting_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.cli import service_env

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    env = service_env(EwsHome.from_env(tmp_path, environ={}), 1)
    assert env["MALLOC_ARENA_MAX"] == "4"
