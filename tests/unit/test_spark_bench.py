"""The engines benchmark's own arguments: Spark settings given on the command line reach the run,
and a malformed one stops it before anything is measured."""

from __future__ import annotations

import os

import pytest

from benchmarks.bench_engines import _conf, _tree


def test_spark_settings_on_the_command_line_become_the_runs_conf() -> None:
    assert _conf(["spark.driver.memory=6g", "spark.sql.shuffle.partitions = 4"]) == {
        "spark.driver.memory": "6g", "spark.sql.shuffle.partitions": "4"}


@pytest.mark.parametrize("pair", ["spark.driver.memory", "=6g"])
def test_a_setting_without_a_key_and_a_value_is_refused(pair: str) -> None:
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _conf([pair])


def test_the_process_tree_reading_counts_this_process_memory_and_cpu() -> None:
    rss, cpu = _tree(os.getpid())
    assert rss > 1  # MB: a Python interpreter with pytest loaded
    assert os.getpid() in cpu and cpu[os.getpid()] > 0
