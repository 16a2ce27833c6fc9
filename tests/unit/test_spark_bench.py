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


def test_stages_are_checked_before_anything_runs() -> None:
    from benchmarks.bench_engines import _stages

    assert _stages("link, features") == ("link", "features") and _stages("features") == ("features",)
    with pytest.raises(SystemExit, match="expected some of"):
        _stages("link,score")


def test_engines_are_checked_before_anything_runs() -> None:
    from benchmarks.bench_engines import _engines

    assert _engines("duckdb") == ("duckdb",) and _engines("duckdb, spark") == ("duckdb", "spark")
    for bad in ("", "duckdb,duckdb", "polars"):
        with pytest.raises(SystemExit, match="expected duckdb, spark or both"):
            _engines(bad)


def test_the_issue_figure_is_spark_link_plus_features_over_duckdbs_without_the_session_start() -> None:
    from benchmarks.bench_engines import compare

    duck = {"link_s": 10.0, "features_s": 30.0, "labels_s": 2.0, "tree_cpu_s": 50.0}
    spark = {"session_start_s": 20.0, "link_s": 40.0, "features_s": 80.0, "labels_s": 6.0, "tree_cpu_s": 200.0}
    out = compare(duck, spark)
    assert out["spark_over_duckdb_link_plus_features"] == 3.0  # (40 + 80) / (10 + 30)
    assert out["link_plus_features_s"] == {"duckdb": 40.0, "spark": 120.0, "spark_with_session_start": 140.0}
    assert (out["spark_over_duckdb_link"], out["spark_over_duckdb_features"], out["spark_over_duckdb"]) == (4.0, 2.67, 2.69)  # 86 / 32
    assert out["spark_over_duckdb_tree_cpu"] == 4.0
    # linkage alone measured: no link + features figure is made up
    only_link = compare({"link_s": 10.0, "tree_cpu_s": 1.0}, {"session_start_s": 1.0, "link_s": 20.0, "tree_cpu_s": 2.0})
    assert "spark_over_duckdb_link_plus_features" not in only_link and only_link["spark_over_duckdb_link"] == 2.0
