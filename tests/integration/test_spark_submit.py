"""The documented way to run a stage on a Spark cluster, `spark-submit ... ews/__main__.py features`,
works: spark-submit starts the driver, the deployment's `[engine] kind = "spark"` sends the compiled
SQL to Spark, and the feature set is the same file DuckDB writes.

There is no cluster here, so the master is local mode; what this holds is the part a cluster shares
with it: the entry point runs under spark-submit's Python (not the `ews` console script), the
settings come from the home's deployment.toml, and the output is byte-identical
(docs/ARCHITECTURE.md, "Engines"). One Spark JVM start, about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SmallWorld, copy_world

ROUND = "2565-T1-mid"
REPO = Path(__file__).resolve().parents[2]
# The parity test's small-run settings (features/engine/spark.py SMALL_RUN_CONF), as a deployment
# would write them.
DEPLOYMENT = """
[engine]
kind = "spark"

[engine.spark]
master = "local[2]"
conf = { "spark.sql.shuffle.partitions" = "1", "spark.sql.adaptive.enabled" = "false" }
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(900)
def test_spark_submit_of_the_entry_point_writes_the_feature_set_duckdb_writes(
        small_world: SmallWorld, tmp_path: Path) -> None:
    submit = Path(sys.executable).parent / "spark-submit"  # installed with pyspark, beside this Python
    assert submit.exists(), f"{submit} missing: pyspark is a dependency of the project"
    duck = copy_world(small_world, tmp_path / "duckdb").home
    spark = copy_world(small_world, tmp_path / "spark").home
    (spark / "deployment.toml").write_text(DEPLOYMENT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "EWS_HOME"}

    plain = subprocess.run([sys.executable, "-m", "ews", "features", "--round", ROUND, "--home", str(duck)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    # The JIT capped at C1 here, unlike SMALL_RUN_CONF: one round's features in a fresh JVM is over
    # before C2 pays for its compiling (this test: 23 s with the cap, 30 s without, on 2 cores).
    submitted = subprocess.run(
        [str(submit), "--master", "local[2]", "--conf", "spark.driver.memory=1g",
         "--conf", "spark.driver.extraJavaOptions=-XX:+UseSerialGC -XX:TieredStopAtLevel=1",
         str(REPO / "ews" / "__main__.py"), "features", "--round", ROUND, "--home", str(spark)],
        cwd=REPO, env={**env, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable},
        capture_output=True, text=True, timeout=800)
    assert submitted.returncode == 0, submitted.stderr[-3000:]

    name = f"features/{ROUND}.parquet"
    assert (spark / name).exists()
    assert _sha(spark / name) == _sha(duck / name)
    # ... and it was Spark that computed it: the JVM's log lines are spark-submit's, and a DuckDB-only
    # run prints none of them.
    assert "SparkContext" in submitted.stderr and "SparkContext" not in plain.stderr
    # ... and the manifests say so, for an auditor replaying the set
    manifests = {home: json.loads((home / f"features/{ROUND}.json").read_text(encoding="utf-8")) for home in (duck, spark)}
    assert manifests[duck]["engine"] == "duckdb" and manifests[spark]["engine"] == "spark"
