"""The Spark dialect: the declared features and labels compile to Spark SQL with no DuckDB spelling left.

No JVM here: the SQL is compiled and read as text. tests/integration/test_engine_parity.py runs it.
"""

from __future__ import annotations

import re

import pytest

from features.calendar import SchoolCalendar, parse_round
from features.deployment import DeploymentSettings
from features.engine.spark import relations_read
from features.pointintime.build import PopulationSource, features_sql
from features.pointintime.compile import DIALECTS, DUCKDB, SPARK
from features.pointintime.labels import labels_sql

CAL = SchoolCalendar()
# Spellings only DuckDB understands, each with what Spark says instead (compile.py's SPARK).
DUCKDB_ONLY = {
    r"\barg_max\(": "max_by(",
    r"\bdate_trunc\(": "trunc(e, 'MM')",
    r"\bINTERVAL\b": "add_months / date_sub / date_add",
    r"\bdate_sub\('": "floor(months_between(b, a) / 12)",
    r"\bdate_diff\(": "datediff(b, a)",
    r"\{'": "named_struct(",
    r"\bAS VARCHAR\b": "STRING",
}


def _sqls(round_id: str) -> dict[str, str]:
    r = parse_round(round_id)
    late = PopulationSource(population_source="latest_evidence", census_date_expected=CAL.census_date(r.academic_year, r.term),
                            population_as_of=CAL.census_date(r.academic_year - 1, r.term), as_of=CAL.as_of(r))
    return {
        "features": features_sql(CAL, r, dialect=SPARK),
        "features, census late": features_sql(CAL, r, dialect=SPARK, population=late),
        "labels": labels_sql(CAL, r, CAL.as_of(r), dialect=SPARK),
    }


@pytest.mark.parametrize("round_id", ["2563-T1-early", "2565-T1-mid", "2565-T2-early"])
def test_features_and_labels_compile_to_spark_sql_without_a_duckdb_spelling(round_id: str) -> None:
    for what, sql in _sqls(round_id).items():
        left = {pattern: spark for pattern, spark in DUCKDB_ONLY.items() if re.search(pattern, sql)}
        assert left == {}, f"{what} of {round_id} keeps DuckDB spellings (Spark's in the values): {left}"
        assert "max_by(named_struct(" in sql or what == "labels"


def test_the_duckdb_query_is_unchanged_by_the_second_dialect() -> None:
    r = parse_round("2565-T1-mid")
    assert features_sql(CAL, r) == features_sql(CAL, r, dialect=DUCKDB)
    assert re.search(r"\barg_max\(\{'", features_sql(CAL, r))


def test_the_spark_engine_exports_exactly_the_relations_the_query_reads() -> None:
    sql = features_sql(CAL, parse_round("2565-T1-mid"), dialect=SPARK)
    read = relations_read(sql)
    assert set(read) == set(re.findall(r"\bwh\.(\w+)", sql))
    assert {"linked_dmc_census", "linked_attendance", "src_schools", "src_dmc_census"} <= set(read)
    assert len(read) == len(set(read))


def test_the_engine_is_a_typed_setting_defaulting_to_duckdb() -> None:
    assert DeploymentSettings().engine.kind == "duckdb"
    spark = DeploymentSettings.model_validate({"engine": {"kind": "spark", "spark": {"master": "local[4]"}}})
    assert spark.engine.kind == "spark" and spark.engine.spark.master == "local[4]"
    with pytest.raises(ValueError, match="kind"):
        DeploymentSettings.model_validate({"engine": {"kind": "polars"}})
    with pytest.raises(ValueError, match="extra"):
        DeploymentSettings.model_validate({"engine": {"spark": {"masterr": "local[2]"}}})
    assert set(DIALECTS) == {"duckdb", "spark"}
