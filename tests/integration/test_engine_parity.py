"""Both engines, one meaning: Spark (local mode) computes the same features and labels as DuckDB.

The ladder's linked world (`small_world`), two rounds: an early round and a mid round late enough
that the school's past dropout rate (labels of earlier rounds inside the feature query), the
staleness windows and the latest-version rule all have rows to act on. The feature sets must be
the same Parquet file byte for byte (keys, order, schema, every value), and the labels equal.

Floating point: no tolerance is needed today, and none is allowed. Every float column is either
carried from a source, a quotient of two integer sums (exact in both engines, then one IEEE
division), or a day count divided by 365.25 in DOUBLE (the Spark dialect casts the count, so Spark
does not divide in DECIMAL). A future feature that sums floats (an average of a float column) would
add them in a partition order Spark does not fix: that column alone may then be compared with a
relative tolerance of about 1e-12 (a few ulps per addition), named in FLOAT_ORDER_COLUMNS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.calendar import parse_round
from features.deployment import EngineSettings, SparkSettings
from features.home import EwsHome
from features.parquet import write_parquet
from features.pointintime.build import build_features
from features.pointintime.labels import labels_sql
from features.pointintime.pipeline import connect_warehouse, latest_delivery
from tests.conftest import SmallWorld

ROUNDS = ("2564-T2-early", "2565-T1-mid")
FLOAT_ORDER_COLUMNS: dict[str, float] = {}  # column -> relative tolerance (see the module's note)


@pytest.fixture(scope="module")
def engines(small_world: SmallWorld) -> Iterator[tuple[EwsHome, object, object]]:
    from features.engine.spark import SMALL_RUN_CONF, SparkEngine

    home = EwsHome(root=small_world.home,
                   engine=EngineSettings(kind="spark", spark=SparkSettings(master="local[2]", conf=SMALL_RUN_CONF)))
    con = connect_warehouse(home)
    try:
        with SparkEngine.open(home, con) as spark:
            yield home, con, spark
    finally:
        con.close()


def _sha(table: pa.Table, path: Path) -> str:
    write_parquet(table, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _differences(duck: pa.Table, spark: pa.Table) -> dict[str, int]:
    """Columns whose values differ, with how many rows differ (NULL equals NULL)."""
    out = {}
    for name in duck.column_names:
        a, b = duck.column(name), spark.column(name)
        if name in FLOAT_ORDER_COLUMNS:
            tol = FLOAT_ORDER_COLUMNS[name]
            same = pc.or_kleene(pc.and_(pc.is_null(a), pc.is_null(b)),
                          pc.less_equal(pc.abs(pc.subtract(a, b)), pc.multiply(pc.abs(a), tol)))
        else:
            same = pc.or_kleene(pc.and_(pc.is_null(a), pc.is_null(b)), pc.equal(a, b))
        n = len(a) - pc.sum(pc.fill_null(same, False).cast(pa.int64())).as_py()
        if n:
            out[name] = n
    return out


@pytest.mark.parametrize("round_id", ROUNDS)
def test_spark_writes_the_same_feature_set_as_duckdb(engines: tuple, round_id: str, tmp_path: Path) -> None:
    home, con, spark = engines
    r = parse_round(round_id)
    duck = build_features(con, home.calendar, r)
    sparked = spark.features(home.calendar, r)
    assert duck.num_rows > 1000, "the comparison must rest on the ladder's population"
    # the parts most likely to drift between dialects have rows to act on
    for col in ("school_past_dropout_rate", "over_age_years", "age", "att_trend_3m", "income_per_person"):
        assert duck.column(col).null_count < duck.num_rows, f"{col} is empty in {round_id}: nothing compared"
    assert sparked.schema == duck.schema
    assert sparked.column("student_key").to_pylist() == duck.column("student_key").to_pylist()
    assert _differences(duck, sparked) == {}
    assert _sha(sparked, tmp_path / "spark.parquet") == _sha(duck, tmp_path / "duckdb.parquet")


@pytest.mark.parametrize("round_id", ROUNDS)
def test_spark_computes_the_same_labels_as_duckdb(engines: tuple, round_id: str) -> None:
    home, con, spark = engines
    r = parse_round(round_id)
    cutoff = latest_delivery(con)
    duck = con.sql(labels_sql(home.calendar, r, cutoff)).to_arrow_table().sort_by("student_key")
    sparked = spark.labels(home.calendar, r, cutoff).sort_by("student_key")
    assert pc.sum(duck.column("dropout")).as_py() > 0, "some dropouts must be compared"
    assert sparked.schema == duck.schema
    assert _differences(duck, sparked) == {}
