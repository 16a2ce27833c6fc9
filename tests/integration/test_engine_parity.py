"""Both engines, one meaning: Spark (local mode) computes the same features, labels and not-found
list as DuckDB, and scores a round into the same snapshot.

The ladder's linked world (`small_world`), two rounds: an early round and a mid round late enough
that the school's past dropout rate (labels of earlier rounds inside the feature query), the
staleness windows and the latest-version rule all have rows to act on. The feature sets must be
the same Parquet file byte for byte (keys, order, schema, every value), the labels equal (states and
evidence text), and the not-found list of the later round's census equal row by row, in order.

Floating point: no tolerance is needed today, and none is allowed. Every float column is either
carried from a source, a quotient of two integer sums (exact in both engines, then one IEEE
division), or a day count divided by 365.25 in DOUBLE (the Spark dialect casts the count, so Spark
does not divide in DECIMAL). A future feature that sums floats (an average of a float column) would
add them in a partition order Spark does not fix: that column alone may then be compared with a
relative tolerance of about 1e-12 (a few ulps per addition), named in FLOAT_ORDER_COLUMNS.

Scoring (`serving.spark_scoring`, in mapInPandas) is held to the same standard with no tolerance: scores,
SHAP contributions and reasons are computed per row by the same functions from the same numbers, so
the two snapshots must be the same students.parquet, byte for byte, and the same manifest.

A kept exchange folder (`[engine.spark] exchange_dir`) is read again, not exported again, until the
warehouse changes (a new delivery or linkage run). Linkage on Spark: test_link_engine_parity.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.calendar import parse_round
from features.deployment import EngineSettings, SparkSettings
from features.home import EwsHome
from features.parquet import write_parquet
from features.pointintime.build import PopulationSource, SchoolFallback, build_features, round_context
from features.pointintime.compile import DUCKDB, SPARK, latest_evidence_steps, with_sql
from features.pointintime.labels import labels_sql
from features.pointintime.notfound import notfound_sql
from features.pointintime.pipeline import connect_warehouse, latest_delivery
from tests.conftest import SmallWorld, TrainedWorld, copy_world

ROUNDS = ("2564-T2-early", "2565-T1-mid")
# Pupils per chunk when scoring: a few chunks of whole schools on the ladder's world, so the row order
# across chunks and the Spark output's files are compared too.
SCORE_CHUNK_ROWS = 500
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


def test_spark_labels_a_missing_schools_year_end_catchment_as_duckdb_does(engines: tuple) -> None:
    """2564-T2-early's horizon is the next school year's June census: the secondary school with the
    most M1 pupils is read as if its June file were missing (the census relation filtered in both
    engines' SQL), so the catchment rule (`labels_sql`'s `unseen`/`blind` steps) acts on both."""
    home, con, spark = engines
    r = parse_round(ROUNDS[0])
    cutoff = latest_delivery(con)
    horizon = home.calendar.next_census(r.academic_year, r.term)[2]
    school = con.execute("SELECT school_code FROM wh.src_dmc_census WHERE grade = 'M1' AND census_date = ? "
                         "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
                         [home.calendar.census_date(r.academic_year, r.term)]).fetchall()[0][0]
    missing = (f"(SELECT * FROM wh.src_dmc_census WHERE NOT (census_date = DATE '{horizon}' "
               f"AND school_code = '{school}'))")
    sql = {name: labels_sql(home.calendar, r, cutoff, dialect=dialect).replace("wh.src_dmc_census", missing)
           for name, dialect in (("duckdb", DUCKDB), ("spark", SPARK))}
    duck = con.sql(sql["duckdb"]).to_arrow_table().sort_by("student_key")
    evidence = [e for e in duck.column("label_evidence").to_pylist() if e and "moved up after" in e]
    assert len(evidence) >= 10, "the catchment rule must act for the comparison to hold anything"
    sparked = spark.run(sql["spark"], sql["duckdb"]).sort_by("student_key")
    assert _differences(duck, sparked) == {}


def test_spark_builds_the_same_not_found_list_as_duckdb(engines: tuple) -> None:
    home, con, spark = engines
    r = parse_round(ROUNDS[-1])
    census, cutoff = home.calendar.census_date(r.academic_year, r.term), latest_delivery(con)
    duck = con.sql(notfound_sql(home.calendar, census, cutoff)).to_arrow_table()
    sparked = spark.run(notfound_sql(home.calendar, census, cutoff, dialect=SPARK),
                        notfound_sql(home.calendar, census, cutoff, dialect=DUCKDB))
    assert duck.num_rows > 0, "some not-found cases must be compared"
    assert sparked.schema == duck.schema
    # the list's order is part of it (by area, school, grade): compared row by row, unsorted
    assert _differences(duck, sparked) == {}


def test_spark_places_a_missing_schools_pupils_as_duckdb_does(engines: tuple, tmp_path: Path) -> None:
    """A school whose file is missing from the round's census: its pupils come from the latest
    evidence, read through the keys of the pupils who could be placed there (`linked_select`
    with `students`, over `src_*` and the key tables rather than the views). Here the ladder's
    largest school of the later round is declared missing (its census rows stay, and win) and the
    fallback's own placement is compared as well as the feature set."""
    home, con, spark = engines
    r = parse_round(ROUNDS[-1])
    complete = build_features(con, home.calendar, r)
    school = str(complete.group_by("school_code").aggregate([("student_key", "count")])
                 .sort_by([("student_key_count", "descending")]).column("school_code")[0])
    base = home.calendar.census_date(r.academic_year - 1, 2)  # the census before this term-1 round's
    source = PopulationSource(population_source="census", census_date_expected=home.calendar.census_date(
        r.academic_year, r.term), population_as_of=home.calendar.census_date(r.academic_year, r.term),
        as_of=home.calendar.as_of(r), school_fallbacks=(SchoolFallback(
            school_code=school, population_as_of=base, students=1, census_students=1),))
    ev = source.evidence(r)
    placed = {}
    for name, dialect in (("duckdb", DUCKDB), ("spark", SPARK)):
        ctx = round_context(home.calendar, r, dialect=dialect)
        steps = latest_evidence_steps(ctx, replace(ev, schools=()), ("student_key", "sid", "school_code", "grade", "room"),
                                      name="fb", placed_at=ev.schools)
        placed[name] = with_sql(steps, f"SELECT * FROM fb WHERE school_code = '{school}' ORDER BY sid")
    duck = con.sql(placed["duckdb"]).to_arrow_table()
    assert duck.num_rows > 10, "the fallback must place the school's pupils for the comparison to hold anything"
    assert _differences(duck, spark.run(placed["spark"], placed["duckdb"])) == {}
    duck_features = build_features(con, home.calendar, r, population=source)
    # the census's pupils, plus any the evidence still places at the school without a census row
    assert set(complete.column("student_key").to_pylist()) <= set(duck_features.column("student_key").to_pylist())
    assert _sha(spark.features(home.calendar, r, population=source), tmp_path / "spark.parquet") == _sha(
        duck_features, tmp_path / "duckdb.parquet")


def test_spark_builds_the_same_training_set_as_duckdb(small_world: SmallWorld, tmp_path: Path) -> None:
    """`ews trainset` on Spark: each round's features and labels from the engine, joined as DuckDB
    joins its own (the same SQL over registered tables): the same file, byte for byte, and the same
    rounds in the manifest."""
    from features.engine.spark import SMALL_RUN_CONF
    from features.pointintime.pipeline import build_trainset
    from features.pointintime.trainset import TrainsetConfig

    cfg = TrainsetConfig(rounds=ROUNDS)
    duck_home = EwsHome(root=copy_world(small_world, tmp_path / "duckdb").home)
    spark_home = EwsHome(root=copy_world(small_world, tmp_path / "spark").home, engine=EngineSettings(
        kind="spark", spark=SparkSettings(master="local[2]", conf=SMALL_RUN_CONF)))
    duck = build_trainset(duck_home, cfg, chunk_rows=SCORE_CHUNK_ROWS)  # several chunks a round on DuckDB
    sparked = build_trainset(spark_home, cfg)
    assert (duck.engine, sparked.engine) == ("duckdb", "spark")
    assert [x.round_id for x in duck.rounds] == list(ROUNDS) and duck.rows > 1000
    assert sum(round(x.rows * (x.label_rate or 0)) for x in duck.rounds) > 0, "some dropouts must be compared"
    assert sparked.name == duck.name and sparked.rows == duck.rows
    assert [x.model_dump() for x in sparked.rounds] == [x.model_dump() for x in duck.rounds]
    assert sparked.sha256 == duck.sha256


def test_spark_scores_a_round_into_the_same_snapshot_as_duckdb(trained: TrainedWorld, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from features.engine.spark import SMALL_RUN_CONF
    from serving.scoring import SNAPSHOT_COLUMNS, ScoreConfig, score_round
    from serving.snapshot import MANIFEST, STUDENTS, SnapshotManifest
    from serving.spark_scoring import score_round_spark
    from training.registry import load_model

    # the world's last census round, as the ladder scores it: its newcomers have no record yet and get no score
    summary = trained.world.summary
    r = parse_round(f"{summary['first_year'] + summary['years']}-T1-early")
    cfg = ScoreConfig(chunk_rows=SCORE_CHUNK_ROWS)
    # two copies: equal snapshots would otherwise share one folder (the snapshot is stored under its hash)
    duck_home = EwsHome(root=copy_world(trained.world, tmp_path / "duckdb").home)
    spark_home = EwsHome(root=copy_world(trained.world, tmp_path / "spark").home, engine=EngineSettings(
        kind="spark", spark=SparkSettings(master="local[2]", conf=SMALL_RUN_CONF)))
    duck = score_round(duck_home, r, load_model(duck_home), cfg, do_publish=False)
    sparked = score_round_spark(spark_home, r, load_model(spark_home), cfg, do_publish=False)
    assert duck.chunks > 1, "the round must span several chunks for their order to be compared"
    assert duck.scored > 1000 and duck.no_score > 0, "scored rows and rows without a score must both be compared"
    assert sparked.chunks == duck.chunks

    a, b = pq.read_table(Path(duck.folder) / STUDENTS), pq.read_table(Path(sparked.folder) / STUDENTS)
    assert b.column("student_key").to_pylist() == a.column("student_key").to_pylist()
    # the parts a school reads first, named so that a failure says which one drifted
    compared = ["scored", "no_score_reason", "risk_score", "risk_group", "raw_margin", "base_value",
                *SNAPSHOT_COLUMNS.contributions.values(), *SNAPSHOT_COLUMNS.group_contributions.values(),
                "reasons_th", "reasons_en"]
    assert _differences(a.select(compared), b.select(compared)) == {}
    assert b.schema == a.schema and b.schema.metadata == a.schema.metadata
    assert _differences(a, b) == {}
    m_duck = SnapshotManifest.from_json((Path(duck.folder) / MANIFEST).read_text(encoding="utf-8"))
    m_spark = SnapshotManifest.from_json((Path(sparked.folder) / MANIFEST).read_text(encoding="utf-8"))
    # the additivity check as the manifest records it: every scored row within 1e-9 on the published logit
    assert m_spark.explanation.additivity_failures == 0
    assert m_spark.explanation.max_additivity_error <= m_spark.explanation.tolerance
    assert m_spark.students_sha256 == m_duck.students_sha256
    assert sparked.snapshot_hash == duck.snapshot_hash
    assert sparked.groups == duck.groups


def test_a_kept_exchange_folder_is_reused_until_the_warehouse_changes(small_world: SmallWorld, tmp_path: Path) -> None:
    """With `exchange_dir` set, a second run reads the Parquet the first one exported (same bytes on
    disk, same answer); a new linkage run makes every export stale, and they are exported again."""
    from features.engine.spark import SMALL_RUN_CONF, SparkEngine
    from features.linkage.link import LinkConfig, link

    exchange = tmp_path / "exchange"
    home = EwsHome(root=copy_world(small_world, tmp_path).home, engine=EngineSettings(
        kind="spark", spark=SparkSettings(master="local[2]", conf=SMALL_RUN_CONF, exchange_dir=exchange)))
    query = ("SELECT count(*) AS n, count(DISTINCT student_key) AS students FROM wh.linked_dmc_census "
             "JOIN wh.src_schools USING (school_code)")

    def run() -> tuple[list[tuple], set[str], dict[str, int]]:
        con = connect_warehouse(home)
        try:
            with SparkEngine.open(home, con) as engine:
                rows = [tuple(r) for r in engine.dataframe(query).collect()]
                reused = set(engine.reused)
        finally:
            con.close()
        return rows, reused, {p.name: p.stat().st_mtime_ns for p in exchange.glob("*.parquet")}

    first, reused, files = run()
    assert reused == set() and set(files) == {"linked_dmc_census.parquet", "src_schools.parquet"}
    assert first[0][0] > 1000, "the census must have rows for the comparison to mean something"
    again, reused, files_again = run()
    assert again == first
    assert reused == {"linked_dmc_census", "src_schools"} and files_again == files  # read, not rewritten
    # a new linkage run (on DuckDB: linkage on Spark is test_link_engine_parity's): keys may have
    # moved, so every export is stale
    link(EwsHome(root=home.root), LinkConfig())
    after, reused, files_after = run()
    assert after == first  # the same keys were kept, so the same answer
    assert reused == set() and all(files_after[f] != files[f] for f in files)
