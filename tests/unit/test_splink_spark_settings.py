"""Linkage's matching model on Spark reads as DuckDB's: the same comparisons and levels, with the
names' Jaro-Winkler computed by DuckDB's own function (a UDF), never by the jar's.
(The values themselves are compared on a Spark session in tests/integration/test_link_engine_parity.py.)"""

from __future__ import annotations

from features.linkage.link import LinkConfig, _splink_settings


def _comparisons(engine: str) -> list[dict]:
    return _splink_settings(LinkConfig(), engine).get_settings(engine).as_dict()["comparisons"]


def test_spark_settings_have_duckdbs_comparisons_levels_and_labels() -> None:
    duck, spark = _comparisons("duckdb"), _comparisons("spark")
    assert [c["output_column_name"] for c in spark] == [c["output_column_name"] for c in duck]
    for a, b in zip(duck, spark, strict=True):
        assert [lvl["label_for_charts"] for lvl in b["comparison_levels"]] == \
               [lvl["label_for_charts"] for lvl in a["comparison_levels"]]


def test_spark_compares_names_with_duckdbs_function_and_duckdb_as_before() -> None:
    for engine, expected in (("duckdb", 'jaro_winkler_similarity("first_name_norm_l", "first_name_norm_r") >= 0.95'),
                             ("spark", "ews_duckdb_jaro_winkler(`first_name_norm_l`, `first_name_norm_r`) >= 0.95")):
        names = next(c for c in _comparisons(engine) if c["output_column_name"] == "first_name_norm")
        conditions = [lvl["sql_condition"] for lvl in names["comparison_levels"]]
        assert expected in conditions, conditions
    # exact equality (and the blocking rules) keep the names themselves on Spark
    spark_names = next(c for c in _comparisons("spark") if c["output_column_name"] == "last_name_norm")
    assert "`last_name_norm_l` = `last_name_norm_r`" in [lvl["sql_condition"] for lvl in spark_names["comparison_levels"]]
