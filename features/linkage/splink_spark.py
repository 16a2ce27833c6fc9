"""Splink's probabilistic step on Spark: what `ews link` runs instead of DuckDB's Splink when the
deployment says `[engine] kind = "spark"`.

Where it sits: inside step 3 of features/linkage/link.py (`_run_splink`). Steps 1-2 (records,
nodes) build the temp table `splink_nodes` on the linkage's DuckDB session; this module exports it
once to Parquet, hands it to Splink's `SparkAPI` on the process's Spark session
(features/engine/spark.py `spark_session`, which loads Splink's similarity UDF jar), and brings the
predicted pairs back to the same DuckDB session as temp table `pairs`. The training calls (prior,
u by sampling, m by EM) and the prediction are the same calls on the same settings as DuckDB's;
steps 4-6 (components, review, keys) stay on DuckDB.

The nodes hold names and exact birth dates from the identity vault, so everything Spark writes for
the run (the exported nodes, Splink's Parquet checkpoints of comparison vectors and predictions) goes
to a private folder inside the vault (`home.link_spill_dir`), removed when the step ends. Spark's own
shuffle files go to `spark.local.dir` (default /tmp): a deployment that links on Spark sets it to the
vault's file system in `[engine.spark] conf`.

Two things differ between the engines:
- Jaro-Winkler. DuckDB's `jaro_winkler_similarity` compares UTF-8 bytes; the jar's `jaro_winkler`
  compares UTF-16 characters. On Thai names (three bytes per letter) the two give different
  similarities (สมชาย / สมชัย: 0.973 in DuckDB, 0.920 by characters), so the same pair would fall on
  different levels. Feeding the jar the bytes (one Latin-1 character each) is not enough either: its
  Jaro matches repeated symbols in another order than DuckDB's, and a Thai name's bytes repeat
  (every letter starts 0xE0 0xB8): 1,174 of 3,160 pairs of the test world's first names still
  differed. So on Spark the name levels call DuckDB's own function, in a pandas UDF (Arrow batches
  of pairs, JARO_WINKLER_UDF): the same numbers by construction. Equality and blocking use the
  names themselves; `damerau_levenshtein` on the delivered IDs (ASCII digits) is the jar's (its u
  counts equal DuckDB's in the parity test).
- u sampling. Splink samples nodes by a hash of the node id and the seed, and counts the sampled
  pairs chunk by chunk (chunks by another hash) until every level has `u_min_count_per_level`
  pairs: deterministic on each engine, but DuckDB's and Spark's hashes pick other nodes and chunks.
  With the defaults u then differs by sampling noise between engines (on the 20k and 100k
  benchmark worlds the keys still came out equal); `u_min_count_per_level = None`, `u_chunks = 1`
  and a `u_max_pairs` above the population's pairs count every pair on both engines
  (tests/integration/test_link_engine_parity.py): equal u, and m equal up to EM's float order.

On a cluster the UDF runs in the executors' Python: they need the project installed, as serving's
scoring does (`spark.pyspark.python`).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from features.home import EwsHome

__all__ = ["JARO_WINKLER_UDF", "pairs_from_spark", "register_similarity", "spark_name_comparison", "spark_splink"]


# The name of DuckDB's Jaro-Winkler as a Spark SQL function (registered by `register_similarity`).
JARO_WINKLER_UDF = "ews_duckdb_jaro_winkler"


def _duckdb_jaro_winkler(left: pd.Series, right: pd.Series) -> pd.Series:
    """DuckDB's `jaro_winkler_similarity` over two pandas Series of strings (a batch of pairs): the
    function DuckDB's linkage uses, run by DuckDB itself in Spark's Python workers. (pandas UDFs are
    typed by their annotations: pandas is imported with this module for them.)"""
    batch = pa.table({"l": pa.array(left, pa.string()), "r": pa.array(right, pa.string())})
    with duckdb.connect() as con:
        out = con.sql("SELECT jaro_winkler_similarity(l, r) AS s FROM batch").to_arrow_table()
    return pd.Series(out.column("s").to_numpy(zero_copy_only=False), index=left.index, dtype="float64")


def register_similarity(spark: Any) -> None:
    """Register JARO_WINKLER_UDF on the session: a pandas UDF (Arrow batches) around DuckDB."""
    from pyspark.sql.functions import pandas_udf

    spark.udf.register(JARO_WINKLER_UDF, pandas_udf(_duckdb_jaro_winkler, "double"))


def spark_name_comparison(column: str, thresholds: list[float]) -> dict[str, Any]:
    """Splink's `JaroWinklerAtThresholds(column, thresholds)` for Spark, computing DuckDB's
    similarity (JARO_WINKLER_UDF, see the module's note) instead of the jar's. The levels, their
    order and labels are Splink's own, so the fitted model reads the same."""
    import splink.comparison_library as cl

    spec = cl.JaroWinklerAtThresholds(column, thresholds).get_comparison("spark").as_dict()
    left, right = f"`{column}_l`", f"`{column}_r`"
    for level in spec["comparison_levels"]:
        sql = level["sql_condition"]
        if sql.startswith("jaro_winkler("):
            expected = f"jaro_winkler({left}, {right})"
            if expected not in sql:  # Splink spelt the level differently: fail, never compare otherwise
                raise RuntimeError(f"unexpected Splink Jaro-Winkler level for {column}: {sql}")
            level["sql_condition"] = sql.replace(expected, f"{JARO_WINKLER_UDF}({left}, {right})")
    return spec


@contextmanager
def spark_splink(home: EwsHome, con: duckdb.DuckDBPyConnection, nodes_table: str) -> Iterator[tuple[Any, Any]]:
    """(SparkAPI, the registered nodes) for one linkage run: `nodes_table` of the DuckDB session
    exported once to Parquet in a private folder of the vault, read by Spark, and Splink's
    checkpoints written beside it. The folder is removed when the block ends."""
    from splink import SparkAPI

    from features.engine.spark import spark_session

    work = home.link_spill_dir / f"spark-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o700)
    try:
        path = work / "nodes.parquet"
        con.execute(f"COPY {nodes_table} TO '{_sql_path(path)}' (FORMAT parquet)")
        spark = spark_session(home.engine.spark)
        # Splink's "parquet" lineage break writes each large intermediate (comparison vectors,
        # predictions) under the checkpoint directory: inside the vault, like the nodes.
        spark.sparkContext.setCheckpointDir(str(work / "checkpoints"))
        db_api = SparkAPI(spark_session=spark, break_lineage_method="parquet")
        register_similarity(spark)
        nodes = spark.read.parquet(str(path))
        yield db_api, db_api.register(nodes, dataset_display_name="nodes")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pairs_from_spark(con: duckdb.DuckDBPyConnection, predictions: Any, out: str = "pairs") -> None:
    """Splink's predictions on Spark as temp table `out` (node_id_l, node_id_r, match_probability)
    of the DuckDB session: only the pairs above Splink's prediction threshold come back."""
    frame = predictions.as_spark_dataframe().select("node_id_l", "node_id_r", "match_probability")
    table = frame.toArrow()
    table = table.cast(pa.schema([("node_id_l", pa.string()), ("node_id_r", pa.string()),
                                  ("match_probability", pa.float64())]))
    con.register("spark_pairs_arrow", table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT * FROM spark_pairs_arrow")
    finally:
        con.unregister("spark_pairs_arrow")


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
