"""The Spark engine: the declared feature groups and labels, compiled to Spark SQL, run on Spark.

Where it sits: `ews features` (pipeline.write_feature_set) and `ews trainset` use it when the
deployment says `[engine] kind = "spark"`; DuckDB stays the default. Ingest and linkage still write
the DuckDB warehouse (linkage fits and applies its Splink model on this module's session:
features/linkage/splink_spark.py). This module exports the relations a compiled query reads (`linked_<source>`
views, `src_<source>` tables) to Parquet once per run, registers them in Spark under the same schema
name (`wh`), runs the SAME compiled SQL (`features_sql`, `labels_sql`) with the SPARK dialect, and
returns Arrow tables with the schema DuckDB gives the same query. Written through the same writer
(features/parquet.py: bytes depend on the content only), a Spark feature set is the same file as
DuckDB's: tests/integration/test_engine_parity.py holds both engines to that. `features_frame` and
`dataframe` hand the same queries over as lazy Spark DataFrames, for work that continues on Spark
(serving's scoring in mapInPandas, `serving/spark_scoring.py`).

The round's population decision (its census, the latest evidence, per-school fallbacks) is a few
counts over the census and stays on the warehouse's DuckDB session.

On a cluster: `master` is the cluster's URL, `exchange_dir` is storage every executor reads, and the
stage runs under `spark-submit` (see docs/ARCHITECTURE.md, "Engines").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from features.calendar import SchoolCalendar, ScoringRound
from features.deployment import SparkSettings
from features.home import EwsHome
from features.linkage.link import latest_link_run
from features.pointintime.build import OUTPUT_COLUMNS, PopulationSource, features_sql, population_source
from features.pointintime.compile import DUCKDB, SPARK
from features.pointintime.labels import Horizon, labels_sql

if TYPE_CHECKING:  # pyspark is imported when an engine is opened, never at import time
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SMALL_RUN_CONF", "SparkEngine", "relations_read", "spark_session"]

# Settings every session gets unless the deployment overrides them, and why:
DEFAULT_CONF: dict[str, str] = {
    # DuckDB gives NULL for x / 0; Spark 4's ANSI mode raises instead. The compiled SQL means NULL.
    "spark.sql.ansi.enabled": "false",
    # Dates only, but a fixed zone keeps DATE <-> Parquet conversions from depending on the host.
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # The catalogue's own folder (`CREATE DATABASE wh`): out of the working directory.
    "spark.sql.warehouse.dir": str(Path(tempfile.gettempdir()) / "ews-spark-catalogue"),
}
# Local mode: Spark's 200 shuffle partitions cost more to schedule than one machine's data is worth;
# one partition per core (local[N]; local[*]: 8).
LOCAL_CORES = re.compile(r"local\[(\d+)")
# A short run on a small world (the parity tests): one shuffle partition, no re-planning between
# stages, the serial collector. The JIT is left whole: capping it at C1 (-XX:TieredStopAtLevel=1)
# starts a little sooner but runs the linkage's u estimation (every pair of the world) at half speed;
# on this 2-core machine the two parity modules took 358 s with the cap and 199 s without it, every
# test faster (pytest tests/integration/test_link_engine_parity.py tests/integration/test_engine_parity.py).
SMALL_RUN_CONF: dict[str, str] = {
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC",
    "spark.sql.shuffle.partitions": "1",
    "spark.sql.adaptive.enabled": "false",
}


def spark_session(settings: SparkSettings) -> SparkSession:
    """The process's Spark session on the deployment's master (created once; reused after)."""
    from pyspark.sql import SparkSession

    local = {}
    if settings.master.startswith("local"):
        cores = LOCAL_CORES.match(settings.master)
        local = {"spark.sql.shuffle.partitions": cores.group(1) if cores else "8"}
    conf = {**DEFAULT_CONF, **local, **settings.conf}
    # Linkage on Spark compares delivered IDs with Splink's `damerau_levenshtein`, which comes in a
    # jar that must be on the classpath when the JVM starts: every session gets it, since the
    # process has one session whichever stage opened it first (features/linkage/splink_spark.py).
    from splink.backends.spark import similarity_jar_location

    conf["spark.jars"] = ",".join(x for x in (similarity_jar_location(), conf.get("spark.jars")) if x)
    builder = SparkSession.builder.master(settings.master).appName("ews-features")
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if settings.master.startswith("local"):
        # Python work on Spark (serving's scoring in mapInPandas) runs in this interpreter, with the
        # project's packages: PySpark's default is whichever `python3` is first on the PATH. (Under
        # spark-submit on a cluster, `spark.pyspark.python` names the executors' interpreter.)
        spark.sparkContext.pythonExec = conf.get("spark.pyspark.python", sys.executable)
    return spark


def relations_read(sql: str, schema: str = "wh") -> list[str]:
    """The warehouse relations a compiled query reads (`<schema>.<name>`), in first-use order."""
    return list(dict.fromkeys(re.findall(rf"\b{re.escape(schema)}\.(\w+)", sql)))


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class SparkEngine:
    """One Spark run over one warehouse: relations exported (once) and registered as `wh.<name>`."""

    def __init__(self, spark: SparkSession, con: duckdb.DuckDBPyConnection, exchange: Path,
                 schema: str = "wh", keep_exports: bool = False) -> None:
        self.spark, self.con, self.exchange, self.schema = spark, con, exchange, schema
        self.keep_exports = keep_exports
        self._registered: set[str] = set()
        self.reused: set[str] = set()  # relations whose kept export was read instead of exported again
        self._warehouse_version: str | None = None
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {schema}")

    @classmethod
    @contextmanager
    def open(cls, home: EwsHome, con: duckdb.DuckDBPyConnection) -> Iterator[SparkEngine]:
        """An engine on the deployment's Spark settings reading the warehouse session `con`.

        The exported Parquet goes to `engine.spark.exchange_dir` (kept: a cluster reads it, and the
        next run reuses an export whose warehouse version is unchanged, see `_register`), else to a
        temporary folder removed when the block ends. The Spark session outlives the block (its JVM
        takes seconds to start); the relations are dropped from its catalogue.
        """
        settings = home.engine.spark
        temp = settings.exchange_dir is None
        exchange = Path(tempfile.mkdtemp(prefix="ews-spark-")) if temp else settings.exchange_dir
        exchange.mkdir(parents=True, exist_ok=True)
        engine = cls(spark_session(settings), con, exchange, keep_exports=not temp)
        try:
            yield engine
        finally:
            engine.close()
            if temp:
                shutil.rmtree(exchange, ignore_errors=True)

    def close(self) -> None:
        for name in sorted(self._registered):
            self.spark.sql(f"DROP TABLE IF EXISTS {self.schema}.{name}")
        self._registered.clear()

    def export_version(self, name: str) -> str:
        """What an export of relation `name` was made from: the relation's columns, every delivery
        the warehouse holds (id and manifest hash) and the latest linkage run. Ingest and linkage
        are the only writers of the relations the compiled SQL reads (`src_*` tables, `linked_*`
        views over the keys), each in one transaction that changes one of these; a change by any
        other means (a hand-edited table) is NOT seen, and a kept export would then be stale."""
        if self._warehouse_version is None:
            deliveries = self.con.execute(f"""
                SELECT coalesce(string_agg(delivery_id || ':' || coalesce(manifest_sha256, ''), ',' ORDER BY delivery_id), '')
                FROM {self.schema}.deliveries""").fetchall()[0][0]
            link_run = latest_link_run(self.con, self.schema)
            self._warehouse_version = hashlib.sha256(f"{deliveries}|{link_run}".encode()).hexdigest()
        columns = self.con.execute(f"DESCRIBE {self.schema}.{name}").fetchall()
        return hashlib.sha256(f"{name}|{columns}|{self._warehouse_version}".encode()).hexdigest()

    def _register(self, sql: str) -> None:
        """Export (DuckDB -> Parquet) and register every relation `sql` reads that is not yet known.

        A kept exchange folder (`exchange_dir`) keeps each export with a stamp of its
        `export_version`: the next run reads the export again instead of copying the relation
        while the warehouse holds the same deliveries and linkage run (at 1M students the exports
        took 27 minutes). The stamp is removed before an export is replaced and written after it,
        so a stamp never vouches for other data."""
        for name in relations_read(sql, self.schema):
            # another engine on the process's one session (serving's scoring) may have dropped it since
            if name in self._registered and self.spark.catalog.tableExists(f"{self.schema}.{name}"):
                continue
            path = self.exchange / f"{name}.parquet"
            stamp = path.with_suffix(".parquet.version")
            version = self.export_version(name) if self.keep_exports else None
            if version is not None and path.exists() and stamp.exists() and stamp.read_text() == version:
                self.reused.add(name)
            else:
                stamp.unlink(missing_ok=True)
                tmp = path.with_suffix(".parquet.tmp")
                self.con.execute(f"COPY (SELECT * FROM {self.schema}.{name}) TO {_quote(tmp)} (FORMAT parquet)")
                tmp.replace(path)  # nothing half-written under the name Spark reads
                if version is not None:
                    stamp_tmp = stamp.with_suffix(".version.tmp")
                    stamp_tmp.write_text(version)
                    stamp_tmp.replace(stamp)
            self.spark.sql(f"DROP TABLE IF EXISTS {self.schema}.{name}")
            self.spark.sql(f"CREATE TABLE {self.schema}.{name} USING parquet LOCATION {_quote(path)}")
            self._registered.add(name)

    def dataframe(self, spark_sql: str) -> DataFrame:
        """`spark_sql` as a (lazy) Spark DataFrame, every relation it reads exported and registered."""
        self._register(spark_sql)
        return self.spark.sql(spark_sql)

    def duckdb_schema(self, duckdb_sql: str) -> pa.Schema:
        """The Arrow schema DuckDB gives `duckdb_sql` (only bound, with no row read)."""
        return self.con.sql(duckdb_sql).limit(0).to_arrow_table().schema

    def run(self, spark_sql: str, duckdb_sql: str) -> pa.Table:
        """`spark_sql` on Spark, as an Arrow table with the schema DuckDB gives `duckdb_sql` (the same
        query in DuckDB's dialect), so both engines write equal files."""
        schema = self.duckdb_schema(duckdb_sql)
        table = self.dataframe(spark_sql).toArrow()
        if table.column_names != schema.names:
            raise AssertionError(f"Spark's columns {table.column_names} differ from DuckDB's {schema.names}")
        # Spark's integers are int32/int64 where DuckDB sums into DECIMAL(38,0) (HUGEINT), and its
        # strings come as large_string: a safe cast, so an out-of-range value raises.
        return table.cast(schema, safe=True)

    def features(self, cal: SchoolCalendar, r: ScoringRound, population: PopulationSource | None = None) -> pa.Table:
        """The round's feature table, as `build.build_features` returns it from DuckDB."""
        population = population or population_source(self.con, cal, r, self.schema)
        table = self.run(features_sql(cal, r, self.schema, SPARK, population),
                         features_sql(cal, r, self.schema, DUCKDB, population))
        if tuple(table.column_names) != OUTPUT_COLUMNS:
            raise AssertionError(f"feature SQL out of step with the catalogue: {table.column_names}")
        return table

    def features_frame(self, cal: SchoolCalendar, r: ScoringRound,
                       population: PopulationSource | None = None) -> tuple[DataFrame, pa.Schema]:
        """The round's features as a lazy Spark DataFrame (for work that continues on Spark: serving's
        scoring), with the Arrow schema DuckDB gives the same query: a batch cast to it is what
        `build.build_features` returns for its rows."""
        population = population or population_source(self.con, cal, r, self.schema)
        schema = self.duckdb_schema(features_sql(cal, r, self.schema, DUCKDB, population))
        if tuple(schema.names) != OUTPUT_COLUMNS:
            raise AssertionError(f"feature SQL out of step with the catalogue: {schema.names}")
        return self.dataframe(features_sql(cal, r, self.schema, SPARK, population)), schema

    def labels(self, cal: SchoolCalendar, r: ScoringRound, cutoff: dt.date, horizon: Horizon = "next_census") -> pa.Table:
        """(student_key, round_id, label_state, dropout, outcome, label_evidence) of the round, as
        `labels.labels_sql` gives them from DuckDB (the evidence text included)."""
        return self.run(labels_sql(cal, r, cutoff, horizon, self.schema, dialect=SPARK),
                        labels_sql(cal, r, cutoff, horizon, self.schema, dialect=DUCKDB))
