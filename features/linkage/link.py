"""Identity resolution: one `student_key` per real child across every source and year.

Where it sits: after ingestion (warehouse `src_*` tables + identity vault), before labels and
features. It is the only stage, besides ingestion, that opens the identity vault: it reads the
names and the exact birth dates there (the warehouse keeps only the birth month).

The steps, each a set-based query over tables:
1. records   - the warehouse rows of every person-bearing source, aggregated per id token and
               distinct values (names counted from the vault per token and spelling), with their
               row counts; rows without a token stay one record each. Rows of sources without
               names (attendance, grades, ...) only carry an id token, school and student number.
               The token records are built and turned into nodes in passes over a hash of the
               token (`partition_tokens` per pass), so memory is set by the pass, not the country;
               the result is the same for any number of passes.
2. nodes     - deterministic matching first: all records sharing one id token are one node
               (a valid citizen ID / G-code is trusted; an invalid ID is still a consistent
               token, the same typo recurring month after month). A record with no ID joins the
               node holding its (school, student number); failing that, a record with names is a
               node of its own. Tokens used under one (school, student number) are linked. Each
               node gets representative attributes by row-weighted vote (the most frequent
               spelling, birth date, sex; its latest school and tambon).
3. pairs     - probabilistic matching with Splink (Fellegi-Sunter): m and u estimated
               from the data (u by random sampling, m by expectation maximisation), never hand-set.
               On DuckDB (default) or, with `[engine] kind = "spark"`, on Splink's Spark backend
               (features/linkage/splink_spark.py: the nodes go to Spark once, the pairs come back;
               every other step stays on DuckDB).
               Comparisons: the raw IDs (edit distance for typos; G-code vs a non-Thai 13-digit
               ID for a child who received an ID), normalised Thai names, birth date, sex, area,
               school. Blocking keeps the pair count near-linear in the number of children.
               EM's training passes are not: their blocks grow with the country (286M pairs in
               the first pass at 8.9M children), so past `em_max_pairs` each pass trains on a
               uniform sample of its pairs (Splink's own `max_pairs`); prediction compares every
               candidate pair.
4. clusters  - connected components over pairs at the match threshold.
5. review    - a cluster holding two different valid 13-digit IDs, two G-codes, or far too many
               nodes is not merged: its nodes stay apart and the cluster goes to `link_review`.
               A token whose records disagree on birth date is flagged for review too.
6. keys      - student_key = HMAC(secret, anchor), the anchor being the identity of the
               cluster's earliest-known record (by known_at; same-day ties: valid ID, invalid ID,
               no ID, then the text), never a "better" ID that arrives later: a key published for
               a round stays when a later delivery adds an ID to the same child. Keys that still
               change (clusters merged or split) are counted and mapped in key_changes.
A warehouse too young to fit the matching model (the first census alone) is linked
deterministically only, with a log line saying so (`probabilistic_skipped` in the run log).

Outputs (warehouse, replaced in one transaction): token_keys, record_keys, link_review,
link_runs and key_changes (both appended), and one view `linked_<source>` per person-bearing
source with `student_key` (and `sid`, the run's integer for the key, which feature queries join on).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from features.db import scalar, session
from features.contract import SOURCES
from features.home import EwsHome
from features.ingest.warehouse import check_no_exact_birth_date
from features.linkage.normalise import sql_normalise_name
from features.linkage.views import linked_select
from features.pseudonym import student_keys

log = logging.getLogger(__name__)

# Sources whose rows identify a person, with the columns each has for linkage.
# (source, has names, has birth_date+sex, school column, tambon column)
PERSON_SOURCES: dict[str, tuple[bool, bool, str | None, str | None]] = {
    "dmc_census": (True, True, "school_code", "tambon_code"),
    "other_enrolment": (True, True, "school_code", None),
    "ewe_training": (True, True, None, None),
    "cct_screening": (True, False, "school_code", None),
    "exits": (True, False, "school_code", None),
    "tzd_cases": (True, True, None, "tambon_code"),
    "attendance": (False, False, "school_code", None),
    "grades": (False, False, "school_code", None),
    "care_screening": (False, False, "school_code", None),
    "welfare_links": (False, False, None, None),
}
_VALID_KINDS = ("thai", "non_thai", "gcode")
_HMAC_BATCH = 1_000_000  # anchors keyed per batch (memory, not speed)
# EM's two training passes, each blocked on these keys, leaving the other fields free to be trained.
# Blocked on birth date alone, EM would see ~145M pairs at 1M students (it filled the disk with spill
# at that size); sex and the surname's first letter cut that ~80-fold, and both are still trained by
# the name-blocked pass.
_EM_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("birth_date", "sex", "substr(last_name_norm, 1, 1)"),
    ("first_name_norm", "last_name_norm"),
)


class LinkConfig(BaseModel):
    """Settings of identity resolution. Loaded at the entry point; recorded with every run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = 1
    match_probability: float = Field(
        0.99, gt=0.5, lt=1.0,
        description="Pairs at or above this Splink match probability are linked.",
    )
    max_nodes_per_cluster: int = Field(
        6, ge=2,
        description="A cluster with more nodes than this is suspicious: sent to review, not merged.",
    )
    u_max_pairs: float = Field(1e6, description="Random pairs sampled to estimate u probabilities.")
    seed: int = Field(20251, description="Seed for Splink's random sampling (reproducible m/u).")
    u_min_count_per_level: int | None = Field(
        100, ge=1,
        description="Splink counts u's sampled pairs in chunks and stops once every level has this many "
        "(Splink's default); None counts every sampled pair. Which chunk a pair falls in is a hash that "
        "differs between DuckDB and Spark, so only None gives both engines the same u on the same sample.",
    )
    u_chunks: int = Field(10, ge=1, description="Chunks u's sampled pairs are counted in (Splink's default).")
    em_max_pairs: float | None = Field(
        1e7, gt=0,
        description="Most pairs one EM pass compares (Splink's `max_pairs`): a pass whose blocking gives more "
        "keeps each node by a hash of its id with the probability that leaves about this many, a uniform sample "
        "of the pairs. Blocking grows with the square of a block: EM's first pass gives ~2M pairs at 1M "
        "children and ~100M at 8M. None compares every pair.",
    )
    partition_tokens: int = Field(
        1_000_000, ge=1,
        description="ID tokens per pass when records are turned into nodes: the step's memory is set by "
        "the pass, not by the country (one pass up to this many; the result does not depend on it).",
    )
    keep_published_keys: bool = Field(
        True,
        description="Keep every key the previous run published (decisions monotone in time: later "
        "deliveries add rows to a child, never move old ones). False re-decides every link "
        "(`ews link --relink`); the keys it changes are mapped in key_changes.",
    )


class LinkSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_id: str
    records: int
    records_with_names: int
    nodes: int
    candidate_pairs: int
    linked_pairs: int
    students: int
    review_clusters: int
    review_tokens_birth_date: int
    unlinkable_rows: int
    keys_changed: int = Field(
        0, description="Keys of the previous run that this run replaced (clusters merged or split): "
        "rounds published under them name a child by a key that no longer exists; wh.key_changes maps them.",
    )
    probabilistic_skipped: str | None = Field(
        None, description="Why no probabilistic links were made this run (a warehouse too young to "
        "estimate the matching model on), or None when the model was fitted.",
    )
    seconds: float
    step_seconds: dict[str, float] = Field(default_factory=dict)
    parameters: dict[str, object]


def _source_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(scalar(
        con,
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'wh' AND table_name = ?", [table]
    ))


def _person_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [s for s in PERSON_SOURCES if _source_exists(con, f"src_{s}")]


def _source_columns(source: str) -> tuple[str, str, str, str]:
    """(school, tambon, student number, sex) expressions of a source's rows `s` (NULL where absent)."""
    names, person, school, tambon = PERSON_SOURCES[source]
    return (f"s.{school}" if school else "NULL", f"s.{tambon}" if tambon else "NULL",
            "s.student_no" if "student_no" in SOURCES[source].column_names else "NULL",
            "s.sex" if person else "NULL")


def _loose_records_sql(sources: list[str]) -> str:
    """The rows without an id token, one record each (`n` = `rows` = 1): each needs its own key,
    so nothing can be aggregated. A few per thousand rows."""
    parts = []
    for source in sources:
        names, person, _, _ = PERSON_SOURCES[source]
        school_x, tambon_x, student_no_x, sex_x = _source_columns(source)
        describes = SOURCES[source].describes
        first_x, last_x = ("v.first_name", "v.last_name") if names else ("NULL", "NULL")
        birth_x = "b.birth_date" if person else "CAST(NULL AS DATE)"
        key = "USING (delivery_id, source_file, source_line)"
        vault_join = (f"LEFT JOIN vault.name_records v {key}" if names else "") + (
            f" LEFT JOIN vault.birth_records b {key}" if person else "")
        parts.append(f"""
            SELECT s.delivery_id, s.source_file, s.source_line, s.known_at,
                   CAST(s.{describes} AS DATE) AS described_on, s.id_token, s.id_kind,
                   {first_x} AS first_name, {last_x} AS last_name, {birth_x} AS birth_date, {sex_x} AS sex,
                   {school_x} AS school_code, {tambon_x} AS tambon_code, {student_no_x} AS student_no,
                   1 AS n, 1 AS rows
            FROM wh.src_{source} s {vault_join}
            WHERE s.id_token IS NULL
        """)
    return " UNION ALL ".join(parts)


def _token_records_sql(sources: list[str], token_filter: str) -> str:
    """The rows carrying an id token, aggregated: per source, one record per distinct (token, sex,
    school, tambon, student number) - a child's census rows repeat the same values term after
    term, and the name-less sources (attendance, grades, care screening, welfare: ~80% of all
    rows) only vary in school and student number - and, from the vault, one name record per
    distinct (token, first name, last name) and one birth record per distinct (token, birth date),
    each with `rows` = 0 (their rows are counted by the first kind). Votes are taken per
    attribute, so nothing joint is lost, and no row-by-row join of the warehouse with the vault is
    needed. `n` is a record's weight in the votes on a node's attributes, `rows` the warehouse
    rows it stands for. `token_filter` is a predicate on `{t}` (the token column) that keeps one
    pass's tokens ("TRUE": all)."""
    parts = []
    for source in sources:
        school_x, tambon_x, student_no_x, sex_x = _source_columns(source)
        describes = SOURCES[source].describes
        parts.append(f"""
            SELECT NULL AS delivery_id, NULL AS source_file, NULL AS source_line, min(s.known_at) AS known_at,
                   max(CAST(s.{describes} AS DATE)) AS described_on, s.id_token, any_value(s.id_kind) AS id_kind,
                   NULL AS first_name, NULL AS last_name, CAST(NULL AS DATE) AS birth_date, {sex_x} AS sex,
                   {school_x} AS school_code, {tambon_x} AS tambon_code, {student_no_x} AS student_no,
                   count(*) AS n, count(*) AS rows
            FROM wh.src_{source} s
            WHERE s.id_token IS NOT NULL AND {token_filter.format(t='s.id_token')}
            GROUP BY s.id_token, {sex_x}, {school_x}, {tambon_x}, {student_no_x}
        """)
    born = ", ".join(f"'{x}'" for x in sources if PERSON_SOURCES[x][1])
    if born:
        # The exact birth dates, from the vault (the warehouse keeps the month only), counted per
        # (token, date) like the names below: the votes on a node's birth date are the same row
        # counts the warehouse rows would give, without a row-by-row join.
        parts.append(f"""
            SELECT NULL, NULL, NULL, NULL, NULL, b.id_token, NULL, NULL, NULL,
                   b.birth_date, NULL, NULL, NULL, NULL, count(*), 0
            FROM vault.birth_records b SEMI JOIN wh.deliveries d USING (delivery_id)
            WHERE b.id_token IS NOT NULL AND b.source IN ({born}) AND {token_filter.format(t='b.id_token')}
            GROUP BY b.id_token, b.birth_date
        """)
    named = ", ".join(f"'{x}'" for x in sources if PERSON_SOURCES[x][0])
    if named:
        # Only deliveries the warehouse holds: a delivery whose warehouse commit never happened
        # (a crash between the vault and the warehouse) must not vote.
        parts.append(f"""
            SELECT NULL, NULL, NULL, NULL, NULL, v.id_token, NULL, v.first_name, v.last_name,
                   NULL, NULL, NULL, NULL, NULL, count(*), 0
            FROM vault.name_records v SEMI JOIN wh.deliveries d USING (delivery_id)
            WHERE v.id_token IS NOT NULL AND v.source IN ({named}) AND {token_filter.format(t='v.id_token')}
              AND (v.first_name IS NOT NULL OR v.last_name IS NOT NULL)
            GROUP BY v.id_token, v.first_name, v.last_name
        """)
    return " UNION ALL ".join(parts)


def _student_number_sql(sources: list[str]) -> str:
    """Per (school, student number, token): the rows carrying them (the same counts the token
    records give, without building those)."""
    parts = []
    for source in sources:
        school_x, _, student_no_x, _ = _source_columns(source)
        if school_x == "NULL" or student_no_x == "NULL":
            continue
        parts.append(f"""
            SELECT {school_x} AS school_code, {student_no_x} AS student_no, s.id_token, count(*) AS n
            FROM wh.src_{source} s
            WHERE s.id_token IS NOT NULL AND {student_no_x} IS NOT NULL AND {school_x} IS NOT NULL
            GROUP BY ALL
        """)
    if not parts:
        return ("SELECT CAST(NULL AS VARCHAR) AS school_code, CAST(NULL AS VARCHAR) AS student_no, "
                "CAST(NULL AS VARCHAR) AS id_token, CAST(0 AS BIGINT) AS n WHERE false")
    return f"SELECT school_code, student_no, id_token, sum(n) AS n FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL"


# Per node: its representative attributes - the modal spelling / birth date / sex (frequency first,
# then value, for determinism); the latest school and tambon by the date the row describes (ties:
# the larger code, so the choice never depends on the order rows are read in).
_NODES_SQL = """
    WITH node_votes AS (
        WITH f AS (SELECT node_id, first_name_norm v, sum(n) n FROM {records}
                   WHERE node_id IS NOT NULL AND first_name_norm IS NOT NULL GROUP BY ALL),
             l AS (SELECT node_id, last_name_norm v, sum(n) n FROM {records}
                   WHERE node_id IS NOT NULL AND last_name_norm IS NOT NULL GROUP BY ALL),
             b AS (SELECT node_id, birth_date v, sum(n) n FROM {records}
                   WHERE node_id IS NOT NULL AND birth_date IS NOT NULL GROUP BY ALL),
             x AS (SELECT node_id, sex v, sum(n) n FROM {records}
                   WHERE node_id IS NOT NULL AND sex IS NOT NULL GROUP BY ALL)
        SELECT 'first' AS attr, node_id, CAST(v AS VARCHAR) v, n FROM f
        UNION ALL SELECT 'last', node_id, CAST(v AS VARCHAR), n FROM l
        UNION ALL SELECT 'birth', node_id, CAST(v AS VARCHAR), n FROM b
        UNION ALL SELECT 'sex', node_id, CAST(v AS VARCHAR), n FROM x
    ),
    best AS (
        SELECT node_id, attr, arg_max(v, n * 1e9 - hash(v) % 1000000) AS v,
               count(*) AS n_values,
               count(*) FILTER (WHERE n >= 2) AS n_supported
        FROM node_votes GROUP BY node_id, attr
    ),
    piv AS (
        SELECT node_id,
               max(v) FILTER (WHERE attr = 'first') AS first_name_norm,
               max(v) FILTER (WHERE attr = 'last') AS last_name_norm,
               CAST(max(v) FILTER (WHERE attr = 'birth') AS DATE) AS birth_date,
               max(v) FILTER (WHERE attr = 'sex') AS sex,
               max(n_supported) FILTER (WHERE attr = 'birth') AS birth_dates_supported
        FROM best GROUP BY node_id
    ),
    agg AS (
        SELECT node_id,
               -- rows without an ID may have joined a token's node (by student number): the
               -- node's token and kind come from the rows that carry the token
               max(id_token) AS id_token,
               max(id_kind) FILTER (WHERE id_token IS NOT NULL) AS id_kind,
               sum(rows) AS n_records, min(known_at) AS first_known,
               arg_max(school_code, (described_on, school_code)) FILTER (WHERE school_code IS NOT NULL AND described_on IS NOT NULL) AS school_code,
               arg_max(tambon_code, (described_on, tambon_code)) FILTER (WHERE tambon_code IS NOT NULL AND described_on IS NOT NULL) AS tambon_code
        FROM {records} WHERE node_id IS NOT NULL GROUP BY node_id
    )
    SELECT agg.*, piv.first_name_norm, piv.last_name_norm, piv.birth_date, piv.sex,
           coalesce(piv.birth_dates_supported, 0) AS birth_dates_supported,
           t.student_id AS raw_id
    FROM agg LEFT JOIN piv USING (node_id)
    LEFT JOIN vault.id_tokens t ON t.id_token = agg.id_token
"""


def node_order_sql(records: str) -> str:
    """Per node of the records table `records`: its earliest record as (known_at, rank, anchor),
    the order the key anchor is chosen by (see _assign_keys)."""
    return f"""
        WITH rec AS (
            -- (a name from the vault alone has no date: it sorts last, never before a dated row)
            SELECT node_id, coalesce(known_at, DATE '9999-12-31') AS known_at,
                   CASE WHEN id_kind IN {_VALID_KINDS} THEN 0 WHEN id_token IS NOT NULL THEN 1 ELSE 2 END AS rank,
                   CASE WHEN id_kind IN {_VALID_KINDS} THEN id_token
                        WHEN id_token IS NOT NULL THEN 'node:T:' || id_token
                        ELSE 'node:R:' || delivery_id || '/' || source_file || '#' || source_line
                   END AS anchor
            FROM {records}
            WHERE node_id IS NOT NULL
        )
        SELECT node_id, min(struct_pack(known_at := known_at, rank := rank, anchor := anchor)) AS ord
        FROM rec GROUP BY node_id
    """


def build_records_and_nodes(con: duckdb.DuckDBPyConnection, partition_tokens: int = 1_000_000) -> dict[str, int]:
    """Steps 1-2: temp tables `nodes` (one row per node), `node_order` (each node's earliest
    record), `loose` (the rows without an id token, with the node each joined), `sn_tokens` (the
    tokens used under each school's student numbers); returns the record counts of the run log.

    The token records are never held all at once: the tokens are split into passes of about
    `partition_tokens` by a hash of the token, and each pass builds its nodes from its own
    records. A node's records are its token's records plus the rows without a token that joined
    it, so every node is built whole in exactly one pass and the result does not depend on the
    number of passes (a test holds it to that). Memory is set by the pass, not by the country:
    at 8.9M children one pass over every record was several times DuckDB's memory limit, and
    each later statement ran out of core until the spill filled the disk."""
    sources = _person_sources(con)
    if not sources:
        raise RuntimeError("the warehouse has no person-bearing source yet: run `ews ingest` first")
    named = ", ".join(f"'{x}'" for x in sources if PERSON_SOURCES[x][0]) or "NULL"
    # Names are normalised once per distinct spelling (a few thousand first names), not per row.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE name_forms AS
        SELECT raw, {sql_normalise_name('raw')} AS norm
        FROM (SELECT first_name AS raw FROM vault.name_records WHERE source IN ({named})
              UNION SELECT last_name FROM vault.name_records WHERE source IN ({named}))
        WHERE raw IS NOT NULL
    """)
    norms = ("LEFT JOIN name_forms f ON f.raw = r.first_name "
             "LEFT JOIN name_forms l ON l.raw = r.last_name")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE loose AS
        SELECT r.*, CASE WHEN r.first_name IS NOT NULL OR r.last_name IS NOT NULL
                         THEN 'R:' || r.delivery_id || '/' || r.source_file || '#' || r.source_line END AS node_id,
               f.norm AS first_name_norm, l.norm AS last_name_norm
        FROM ({_loose_records_sql(sources)}) r {norms}
    """)
    # The school's own student number ties a row without a citizen ID to the child who holds that
    # number at that school (the number is unique within a school and meaningless outside it).
    # Which of several tokens under one number the row joins does not move the key: the anchor is
    # the cluster's earliest record (see _assign_keys), and all tokens under one number are one
    # cluster (student_no_edges). The busiest token is kept (ties: the smaller token): joining the
    # first-known one instead split three true clusters of the 1,500-student test world (recall
    # 0.99982 -> 0.99973).
    con.execute(f"CREATE OR REPLACE TEMP TABLE sn_tokens AS {_student_number_sql(sources)}")
    con.execute("""
        UPDATE loose SET node_id = m.node_id
        FROM (SELECT school_code, student_no, 'T:' || arg_min(id_token, (-n, id_token)) AS node_id
              FROM sn_tokens GROUP BY school_code, student_no) m
        WHERE loose.school_code = m.school_code AND loose.student_no = m.student_no
    """)
    n_tokens = scalar(con, "SELECT count(*) FROM vault.id_tokens")
    passes = max(1, -(-n_tokens // partition_tokens))
    # A loose row's pass is its node's: the token's pass for a token node, else any (its own node).
    node_pass = (f"hash(CASE WHEN node_id LIKE 'T:%' THEN substr(node_id, 3) ELSE node_id END) % {passes}")
    first, token_rows, token_named = True, 0, 0
    for p in range(passes):
        token_filter = "TRUE" if passes == 1 else f"hash({{t}}) % {passes} = {p}"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE part AS
            SELECT r.*, 'T:' || r.id_token AS node_id, f.norm AS first_name_norm, l.norm AS last_name_norm
            FROM ({_token_records_sql(sources, token_filter)}) r {norms}
            UNION ALL BY NAME
            SELECT * FROM loose WHERE node_id IS NOT NULL AND {node_pass} = {p}
        """)
        verb = "CREATE OR REPLACE TEMP TABLE {t} AS" if first else "INSERT INTO {t}"
        con.execute(f"{verb.format(t='nodes')} {_NODES_SQL.format(records='part')}")
        con.execute(f"{verb.format(t='node_order')} {node_order_sql('part')}")
        rows, named_n = con.execute("""
            SELECT coalesce(sum(rows), 0), coalesce(sum(n) FILTER (WHERE first_name IS NOT NULL), 0)
            FROM part WHERE id_token IS NOT NULL
        """).fetchall()[0]
        token_rows, token_named = token_rows + rows, token_named + named_n
        first = False
    con.execute("DROP TABLE part")
    loose_rows, loose_named, unlinkable = con.execute("""
        SELECT coalesce(sum(rows), 0), coalesce(sum(n) FILTER (WHERE first_name IS NOT NULL), 0),
               coalesce(sum(rows) FILTER (WHERE node_id IS NULL), 0)
        FROM loose
    """).fetchall()[0]
    return {"passes": passes, "records": token_rows + loose_rows, "records_with_names": token_named + loose_named,
            "unlinkable_rows": unlinkable}


def _splink_settings(cfg: LinkConfig, engine: str = "duckdb"):  # -> SettingsCreator (lazy: splink is heavy)
    """The matching model's settings; on Spark the names' Jaro-Winkler levels compute DuckDB's
    byte-wise similarity (features/linkage/splink_spark.py), everything else is the same text."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    def names(column: str) -> object:
        if engine == "spark":
            from features.linkage.splink_spark import spark_name_comparison

            return spark_name_comparison(column, [0.95, 0.85])
        return cl.JaroWinklerAtThresholds(column, [0.95, 0.85])

    id_comparison = cl.CustomComparison(
        output_column_name="raw_id",
        comparison_description="Delivered IDs: typo distance, G-code to non-Thai ID, different",
        comparison_levels=[
            cll.NullLevel("raw_id"),
            cll.CustomLevel(
                "damerau_levenshtein(raw_id_l, raw_id_r) <= 2", "IDs differ by a typo (≤ 2 edits)"
            ),
            cll.CustomLevel(
                "(substr(raw_id_l, 1, 1) = 'G' AND substr(raw_id_r, 1, 1) IN ('0', '6', '7')) OR "
                "(substr(raw_id_r, 1, 1) = 'G' AND substr(raw_id_l, 1, 1) IN ('0', '6', '7'))",
                "G-code and a non-Thai 13-digit ID (a child who received an ID)",
            ),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="node_id",
        probability_two_random_records_match=1e-6,
        comparisons=[
            id_comparison,
            names("first_name_norm"),
            names("last_name_norm"),
            cl.DateOfBirthComparison(
                "birth_date", input_is_string=False,
                datetime_metrics=["month", "year"], datetime_thresholds=[1, 1],
            ),
            cl.ExactMatch("sex"),
            cl.CustomComparison(
                output_column_name="tambon_code",
                comparison_levels=[
                    cll.NullLevel("tambon_code"),
                    cll.ExactMatchLevel("tambon_code"),
                    cll.CustomLevel("substr(tambon_code_l, 1, 4) = substr(tambon_code_r, 1, 4)", "same amphoe"),
                    cll.CustomLevel("substr(tambon_code_l, 1, 2) = substr(tambon_code_r, 1, 2)", "same province"),
                    cll.ElseLevel(),
                ],
            ),
            cl.ExactMatch("school_code"),
        ],
        blocking_rules_to_generate_predictions=[
            # Each rule is an equality join, so candidate pairs grow with the number of children
            # sharing a birth date and a name - near-linear at national scale.
            block_on("birth_date", "first_name_norm"),
            block_on("birth_date", "last_name_norm"),
            block_on("first_name_norm", "last_name_norm"),
            block_on("substr(raw_id, 1, 8)", "birth_date"),
        ],
        retain_intermediate_calculation_columns=False,
        additional_columns_to_retain=["id_kind", "raw_id"],
    )


@contextmanager
def _em_floor() -> Iterator[None]:
    """Work around Splink 5.0.0's EM: when every pair at a level has a match probability that
    underflows to 0, EM assigns m = 0.0 and Splink's own validator then rejects it (it requires
    >= 1e-300). Splink already clamps m and u to that floor when it turns them into weights
    (comparison_level.py), so this applies the same floor one step earlier, only during our EM
    passes. Other Splink versions run unpatched."""
    import splink
    from splink.internals import expectation_maximisation as em
    from splink.internals.comparison_level import M_U_CLAMP_MIN

    if splink.__version__ != "5.0.0":
        yield
        return
    original = em.populate_m_u_from_lookup

    def clamped(fixed, level, column, lookup):  # type: ignore[no-untyped-def]
        for rec in lookup.get(column, {}).values():
            for k in ("m_probability", "u_probability"):
                v = rec.get(k)
                if isinstance(v, (int, float)) and v < M_U_CLAMP_MIN:
                    rec[k] = M_U_CLAMP_MIN
        return original(fixed, level, column, lookup)

    em.populate_m_u_from_lookup = clamped
    try:
        yield
    finally:
        em.populate_m_u_from_lookup = original


def _no_pairs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE pairs (node_id_l VARCHAR, node_id_r VARCHAR, match_probability DOUBLE)")


@contextmanager
def _splink_input(con: duckdb.DuckDBPyConnection, home: EwsHome | None) -> Iterator[tuple[object, object]]:
    """(Splink database API, the registered nodes) on the deployment's engine: DuckDB's own
    session, or Spark (`[engine] kind = "spark"`, features/linkage/splink_spark.py)."""
    if home is not None and home.engine.kind == "spark":
        from features.linkage.splink_spark import spark_splink

        with spark_splink(home, con, "splink_nodes") as pair:
            yield pair
        return
    from splink import DuckDBAPI

    db_api = DuckDBAPI(con)
    yield db_api, db_api.register("splink_nodes", dataset_display_name="nodes")


def _run_splink(con: duckdb.DuckDBPyConnection, cfg: LinkConfig,
                home: EwsHome | None = None) -> tuple[int, dict[str, object]]:
    """Step 3: fit Fellegi-Sunter on the nodes and write temp table `pairs`.

    The model is fitted and applied on the deployment's engine (`home.engine.kind`; DuckDB
    without a home): the same calls and settings on both, only the pairs come back from Spark.

    A warehouse too young to train the model on (the first census alone: every child appears
    once, so no two records agree on name and birth date) gets no probabilistic links this run,
    only the deterministic ones (ID, student number, one-edit ID typo), and says so in the log
    and in the returned model digest (`skipped`). Splink cannot fit it: the prior match
    probability is estimated as 0 and its EM takes log(0) ("math domain error")."""
    from splink import Linker, block_on

    con.execute("""
        CREATE OR REPLACE TEMP TABLE splink_nodes AS
        SELECT node_id, raw_id, id_kind, first_name_norm, last_name_norm, birth_date, sex,
               tambon_code, school_code
        FROM nodes
        WHERE first_name_norm IS NOT NULL OR last_name_norm IS NOT NULL
        -- Splink samples u from the table's rows in their stored order: a fixed order makes the
        -- sample the same however the nodes were built (one pass or many, any thread count)
        ORDER BY node_id
    """)
    n_nodes = scalar(con, "SELECT count(*) FROM splink_nodes")
    if n_nodes < 2:
        _no_pairs(con)
        return 0, {"skipped": f"{n_nodes} named record(s): nothing to compare"}
    # The pairs the prior is estimated from (the deterministic rule below): without one, the
    # prior is 0 and nothing can be learnt from this warehouse yet.
    agreeing = scalar(con, """
        SELECT count(*) FROM splink_nodes a JOIN splink_nodes b
          ON a.first_name_norm = b.first_name_norm AND a.last_name_norm = b.last_name_norm
         AND a.birth_date = b.birth_date AND a.node_id < b.node_id
    """)
    if agreeing == 0:
        return _skip_probabilistic(con, f"no two of {n_nodes:,} named records agree on name and birth date")
    engine = home.engine.kind if home is not None else "duckdb"
    # The pairs each EM pass's blocking gives before any sampling (`em_max_pairs`), for the run log:
    # the blocks of an equality join on the keys (a NULL key joins nothing).
    em_pairs = [scalar(con, f"""
        SELECT coalesce(sum(c * (c - 1) // 2), 0) FROM (
            SELECT count(*) AS c FROM splink_nodes WHERE {' AND '.join(f'{k} IS NOT NULL' for k in keys)}
            GROUP BY {', '.join(keys)})
    """) for keys in _EM_BLOCKS]
    with _splink_input(con, home) as (db_api, sdf):
        linker = Linker(sdf, _splink_settings(cfg, engine), log_level=logging.ERROR)
        try:
            # lambda (prior match probability) from deterministic rules with an assumed recall;
            # u from random pairs; m by EM on two blocking passes that leave the other fields free.
            linker.training.estimate_probability_two_random_records_match(
                [block_on("first_name_norm", "last_name_norm", "birth_date")], recall=0.8,
            )
            linker.training.estimate_u_using_random_sampling(
                max_pairs=cfg.u_max_pairs, seed=cfg.seed, min_count_per_level=cfg.u_min_count_per_level,
                num_chunks=cfg.u_chunks,
            )
            with _em_floor():
                # Past `em_max_pairs` (a national run) each pass samples its pairs uniformly.
                for keys in _EM_BLOCKS:
                    linker.training.estimate_parameters_using_expectation_maximisation(
                        block_on(*keys), estimate_without_term_frequencies=True, max_pairs=cfg.em_max_pairs,
                    )
        except ValueError as exc:
            # Splink's EM on a blocking pass with no likely match drives the prior to 0 and fails
            # in log(0) ("math domain error"); a young warehouse is the only place this is seen.
            # Any other error is a real fault and must not quietly drop the probabilistic links.
            if "math domain error" not in str(exc):
                raise
            return _skip_probabilistic(con, f"the matching model cannot be estimated on {n_nodes:,} named records ({exc})")
        pred = linker.inference.predict(threshold_match_probability=0.5)
        if engine == "spark":
            from features.linkage.splink_spark import pairs_from_spark

            pairs_from_spark(con, pred)
        else:
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE pairs AS
                SELECT node_id_l, node_id_r, match_probability FROM {pred.physical_name}
            """)
        n_pairs = scalar(con, "SELECT count(*) FROM pairs")
        model = json.loads(json.dumps(linker.misc.save_model_to_json(), default=str))
        model["em_blocked_pairs"] = [int(x) for x in em_pairs]
        return n_pairs, model


def _skip_probabilistic(con: duckdb.DuckDBPyConnection, reason: str) -> tuple[int, dict[str, object]]:
    log.warning("linkage: %s - too little data to estimate the matching model, so this run links "
                "deterministically only (ID, student number, one-edit ID typo)", reason)
    _no_pairs(con)
    return 0, {"skipped": reason}


def _connected_components(con: duckdb.DuckDBPyConnection, edges: str, out: str) -> None:
    """Label propagation to the minimum node id, in SQL (set-based; converges in ~log(diameter)).
    Only nodes with an edge take part (a few percent of all nodes); every other node is a cluster
    of its own, so each round of propagation costs the edges, not the whole population."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE cc_edges AS
        SELECT a AS src, b AS dst FROM {edges} UNION ALL SELECT b, a FROM {edges}
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE cc AS SELECT DISTINCT src AS node_id, src AS cluster_id FROM cc_edges
    """)
    while True:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE cc_next AS
            SELECT c.node_id, least(c.cluster_id, min(n.cluster_id)) AS cluster_id
            FROM cc c
            JOIN cc_edges e ON e.src = c.node_id
            JOIN cc n ON n.node_id = e.dst
            GROUP BY c.node_id, c.cluster_id
        """)
        changed = scalar(con, """
            SELECT count(*) FROM cc_next x JOIN cc c USING (node_id) WHERE x.cluster_id <> c.cluster_id
        """)
        con.execute("CREATE OR REPLACE TEMP TABLE cc AS SELECT * FROM cc_next")
        if changed == 0:
            break
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {out} AS
        SELECT n.node_id, coalesce(cc.cluster_id, n.node_id) AS cluster_id
        FROM nodes n LEFT JOIN cc USING (node_id)
    """)


def _nameless_typo_edges(con: duckdb.DuckDBPyConnection) -> None:
    """Rows that carry only an ID (attendance, grades, screening, welfare) and whose ID is a one-off
    typo form a tiny node with no names for Splink to use. Such a node joins the one named node
    whose raw ID is a single edit away (a changed, dropped, added or two swapped digits), within
    the same school when the rows have one. Ambiguous candidates: no link.

    Candidates come from one equality join on deletion keys (an ID and each form of it with one
    character deleted): two strings one edit apart always share such a key, so the join finds
    every candidate without comparing all IDs of a school with each other (that was quadratic in
    school size: 3 minutes at 100k children). Damerau-Levenshtein then confirms the single edit."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE orphans AS
        SELECT node_id, raw_id, school_code FROM nodes
        WHERE first_name_norm IS NULL AND last_name_norm IS NULL AND birth_date IS NULL
          AND raw_id IS NOT NULL AND n_records <= 3
    """)
    deletion_keys = """
        SELECT node_id, raw_id, school_code, raw_id AS k FROM {t}
        UNION ALL
        SELECT node_id, raw_id, school_code, substr(raw_id, 1, i - 1) || substr(raw_id, i + 1) AS k
        FROM {t} CROSS JOIN range(1, 21) AS p(i) WHERE i <= length(raw_id)
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE orphan_keys AS {deletion_keys.format(t='orphans')}
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE typo_edges AS
        WITH named AS (
            SELECT node_id, raw_id, school_code FROM nodes
            WHERE (first_name_norm IS NOT NULL OR last_name_norm IS NOT NULL) AND raw_id IS NOT NULL
        ),
        named_keys AS ({deletion_keys.format(t='named')}),
        cand AS (
            SELECT DISTINCT o.node_id AS a, n.node_id AS b, o.raw_id AS x, n.raw_id AS y
            FROM orphan_keys o JOIN named_keys n ON n.k = o.k
            WHERE o.school_code IS NULL OR n.school_code = o.school_code
        )
        SELECT a, b FROM cand
        WHERE a <> b AND damerau_levenshtein(x, y) = 1
        QUALIFY count(*) OVER (PARTITION BY a) = 1
    """)


def _cluster_and_review(con: duckdb.DuckDBPyConnection, cfg: LinkConfig) -> None:
    """Steps 4-5: clusters at the threshold; suspicious clusters are split back to their nodes."""
    _nameless_typo_edges(con)
    # Two ID tokens used under one student number at one school are one child (a typo, or a
    # G-code replaced by a 13-digit ID); a real conflict still surfaces in the review below.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE student_no_edges AS
        SELECT DISTINCT a, b FROM (
            SELECT 'T:' || id_token AS a, 'T:' || min(id_token) OVER (PARTITION BY school_code, student_no) AS b
            FROM sn_tokens
        ) WHERE a <> b
    """)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE link_edges AS
        SELECT node_id_l AS a, node_id_r AS b FROM pairs WHERE match_probability >= {cfg.match_probability}
        UNION ALL SELECT a, b FROM typo_edges
        UNION ALL SELECT a, b FROM student_no_edges
    """)
    _connected_components(con, "link_edges", "clusters0")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE review AS
        WITH c AS (
            -- a cluster of one node has no reason below: only the few of two or more are judged
            SELECT c.cluster_id, n.*
            FROM clusters0 c JOIN nodes n USING (node_id)
            WHERE c.cluster_id IN (SELECT cluster_id FROM clusters0 GROUP BY cluster_id HAVING count(*) > 1)
        )
        SELECT cluster_id,
               count(*) AS n_nodes,
               sum(n_records) AS n_records,
               count(DISTINCT id_token) FILTER (WHERE id_kind IN ('thai', 'non_thai') AND n_records >= 2) AS n_13digit,
               count(DISTINCT id_token) FILTER (WHERE id_kind = 'gcode' AND n_records >= 2) AS n_gcode,
               -- A valid-looking ID seen once is most likely a typo (G-codes have no check digit,
               -- and the citizen-ID check digit misses some typos); two recurring ones are two
               -- children, or a real data error: either way a person must decide.
               CASE
                 WHEN n_13digit > 1 THEN 'two or more different valid 13-digit IDs, each recurring'
                 WHEN n_gcode > 1 THEN 'two or more different G-codes, each recurring'
                 WHEN count(*) > {cfg.max_nodes_per_cluster}
                   THEN 'far too many identities in one cluster'
               END AS reason
        FROM c GROUP BY cluster_id
        HAVING reason IS NOT NULL
    """)
    # Suspicious clusters are not merged: each of their nodes stays its own student.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE clusters AS
        SELECT c.node_id,
               CASE WHEN r.cluster_id IS NULL THEN c.cluster_id ELSE c.node_id END AS cluster_id,
               r.cluster_id IS NOT NULL AS in_review
        FROM clusters0 c LEFT JOIN review r USING (cluster_id)
    """)


def _assign_keys(con: duckdb.DuckDBPyConnection, key: bytes, keep_published: bool = True) -> None:
    """Step 6: student_key from each cluster's stable anchor (HMAC over distinct anchors only),
    and, unless a relink is asked for, every key the previous run published kept as it was.

    The anchor is the identity of the cluster's earliest-known record: its id token (a valid
    one as itself, an invalid one as `node:T:<token>`), or for a row without any ID
    `node:R:<delivery/file#line>`. Records only ever arrive with later `known_at` dates, so a
    later delivery - a 13-digit ID given to a G-code child, a typo corrected - joins the cluster
    without changing its anchor: every round published before keeps its key. Never anchor on a
    "better" identity that may arrive later. Same-day ties: a valid ID, then an invalid one, then
    a row without an ID, then the anchor text (all fixed facts of the records, so the choice is
    the same in every run that holds them).

    Published decisions are kept (`keep_published`): the matching model is re-estimated on the
    whole warehouse at every run, so a pair near the threshold can fall on the other side once
    later deliveries move m and u - and a round's features would change after it was published.
    So an identity (id token, or row without one) keyed by the previous run keeps that key; a new
    identity takes the key of the earliest already-keyed identity in its cluster, and only a
    cluster of new identities gets a new key. Decisions are then monotone in time: a later
    delivery can add rows to a child, never move old rows to another child. What a later run
    would have decided differently is not lost: a cluster that joins identities already published
    under different keys stays apart and goes to review (`kept_apart`); `ews link --relink`
    re-decides everything, and the keys it changes are mapped in key_changes."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE anchors AS
        SELECT c.cluster_id, min(o.ord).anchor AS anchor
        FROM clusters c JOIN node_order o USING (node_id)
        GROUP BY c.cluster_id
    """)
    # HMAC in batches: a national run has ~9M anchors, and a Python string per anchor and key at
    # once would be gigabytes beside DuckDB's own memory.
    anchors = con.sql("SELECT DISTINCT anchor FROM anchors").to_arrow_table().column(0)
    con.execute("CREATE OR REPLACE TEMP TABLE anchor_keys (anchor VARCHAR, student_key VARCHAR)")
    for start in range(0, len(anchors), _HMAC_BATCH):
        batch = anchors.slice(start, _HMAC_BATCH).to_pylist()
        con.register("anchor_keys_arrow", pa.table({"anchor": batch, "student_key": student_keys(key, batch)}))
        con.execute("INSERT INTO anchor_keys SELECT * FROM anchor_keys_arrow")
        con.unregister("anchor_keys_arrow")
    # The previous run's key of each identity: the token's, or (for a node of rows without an
    # ID) its rows'. A node joining a token and ID-less rows keyed apart before keeps the token's.
    published = keep_published and _source_exists(con, "token_keys") and _source_exists(con, "record_keys")
    con.execute("CREATE OR REPLACE TEMP TABLE old_node_keys (node_id VARCHAR, old_key VARCHAR)")
    if published:
        con.execute("""
            INSERT INTO old_node_keys
            SELECT n.node_id, coalesce(any_value(t.student_key), min(rk.student_key))
            FROM nodes n
            LEFT JOIN wh.token_keys t ON t.id_token = n.id_token
            LEFT JOIN (SELECT r.node_id, o.student_key FROM loose r
                       JOIN wh.record_keys o USING (delivery_id, source_file, source_line)
                       WHERE r.node_id IS NOT NULL) rk USING (node_id)
            GROUP BY n.node_id
            HAVING coalesce(any_value(t.student_key), min(rk.student_key)) IS NOT NULL
        """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE cluster_old_keys AS
        SELECT c.cluster_id, arg_min(k.old_key, o.ord) AS old_key,
               count(DISTINCT k.old_key) AS n_old_keys
        FROM clusters c JOIN old_node_keys k USING (node_id) JOIN node_order o USING (node_id)
        GROUP BY c.cluster_id
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE kept_apart AS
        SELECT cluster_id, n_old_keys FROM cluster_old_keys WHERE n_old_keys > 1
    """)
    # `sid` numbers the students of this run densely. Feature queries join and group on it instead
    # of the 21-character key (about a quarter of the feature build's CPU time at 1M students).
    # It is not stable across runs and is never written out: only student_key leaves the warehouse.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE node_keys AS
        WITH k AS (
            SELECT c.node_id, c.cluster_id, c.in_review,
                   coalesce(o.old_key, co.old_key, ak.student_key) AS student_key
            FROM clusters c
            JOIN anchors a USING (cluster_id) JOIN anchor_keys ak USING (anchor)
            LEFT JOIN old_node_keys o USING (node_id)
            LEFT JOIN cluster_old_keys co USING (cluster_id)
        )
        SELECT k.node_id, n.id_token, k.student_key,
               CAST(dense_rank() OVER (ORDER BY k.student_key) - 1 AS BIGINT) AS sid, k.in_review,
               CASE WHEN k.node_id LIKE 'R:%' THEN 'probabilistic (no ID)'
                    WHEN count(*) OVER (PARTITION BY k.cluster_id) > 1 THEN 'deterministic + probabilistic'
                    ELSE 'deterministic' END AS method
        FROM k JOIN nodes n USING (node_id)
    """)


def _key_changes(con: duckdb.DuckDBPyConnection) -> int:
    """Compare this run's keys with the ones the warehouse published last: temp table
    `key_changes` (old key -> new key, with the identities that moved) and the number of old keys
    replaced. The anchor rule keeps keys stable as records arrive; what remains is a merge (two
    clusters found to be one child: the younger key goes) or a split by review. Both are rare and
    must be visible: the run log counts them and `wh.key_changes` keeps the mapping, because a
    round published under an old key still names the child by it."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE key_changes (
            old_student_key VARCHAR, new_student_key VARCHAR, tokens BIGINT, records BIGINT)
    """)
    if not (_source_exists(con, "token_keys") and _source_exists(con, "record_keys")):
        return 0
    con.execute("""
        INSERT INTO key_changes
        WITH moved AS (
            SELECT o.student_key AS old_key, k.student_key AS new_key, 1 AS tokens, 0 AS records
            FROM wh.token_keys o JOIN node_keys k USING (id_token)
            WHERE k.student_key <> o.student_key
            UNION ALL
            SELECT o.student_key, k.student_key, 0, 1
            FROM wh.record_keys o
            JOIN loose r USING (delivery_id, source_file, source_line)
            JOIN node_keys k ON k.node_id = r.node_id
            WHERE k.student_key <> o.student_key
        )
        SELECT old_key, new_key, sum(tokens), sum(records) FROM moved GROUP BY ALL
    """)
    n = scalar(con, "SELECT count(DISTINCT old_student_key) FROM key_changes")
    if n:
        log.warning("linkage: %d key(s) published by the previous run changed (clusters merged or split "
                    "by review); wh.key_changes maps old to new", n)
    return n


def _publish(
    con: duckdb.DuckDBPyConnection, run: dict[str, object]
) -> None:
    """Replace the linkage tables in the warehouse in one transaction and (re)create the views."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("""
            CREATE OR REPLACE TABLE wh.token_keys AS
            SELECT id_token, student_key, sid, method, in_review FROM node_keys WHERE id_token IS NOT NULL
        """)
        con.execute("""
            CREATE OR REPLACE TABLE wh.record_keys AS
            SELECT r.delivery_id, r.source_file, r.source_line, k.student_key, k.sid, k.method
            FROM loose r JOIN node_keys k ON k.node_id = r.node_id
        """)
        con.execute("""
            CREATE OR REPLACE TABLE wh.link_review AS
            SELECT r.cluster_id AS review_id, r.reason, r.n_nodes, r.n_records, r.n_13digit, r.n_gcode,
                   list(k.student_key ORDER BY k.student_key) AS student_keys
            FROM review r JOIN clusters0 c USING (cluster_id) JOIN node_keys k USING (node_id)
            GROUP BY ALL
            UNION ALL
            -- Identities published under different keys that this run finds to be one child: kept
            -- apart (a published key never moves by itself); `ews link --relink` would merge them.
            SELECT 'kept:' || ka.cluster_id, 'found to be one child after their keys were published: kept apart',
                   count(*), sum(n.n_records), NULL, NULL,
                   list(DISTINCT k.student_key ORDER BY k.student_key)
            FROM kept_apart ka JOIN clusters c USING (cluster_id) JOIN nodes n USING (node_id)
            JOIN node_keys k USING (node_id)
            GROUP BY ka.cluster_id
            UNION ALL
            SELECT n.node_id, 'one ID with two or more birth dates, each seen more than once',
                   1, n.n_records, NULL, NULL, [k.student_key]
            FROM nodes n JOIN node_keys k USING (node_id)
            WHERE n.birth_dates_supported > 1
        """)
        # Appended, never replaced: a published round may name a child by any key in the chain.
        con.execute("""
            CREATE TABLE IF NOT EXISTS wh.key_changes (
                run_id VARCHAR, old_student_key VARCHAR, new_student_key VARCHAR, tokens BIGINT, records BIGINT)
        """)
        con.execute("INSERT INTO wh.key_changes SELECT ?, * FROM key_changes", [run["run_id"]])
        # Review ids are derived from node ids, which hold id tokens (pseudonymous) - never raw IDs.
        con.execute("""
            CREATE TABLE IF NOT EXISTS wh.link_runs (
                run_id VARCHAR, finished_at TIMESTAMP, summary JSON)
        """)
        con.execute(
            "INSERT INTO wh.link_runs VALUES (?, ?, ?)",
            [run["run_id"], dt.datetime.now(dt.UTC).replace(tzinfo=None), json.dumps(run, default=str)],
        )
        create_linked_views(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _has_table(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                            [schema, name]).fetchall()[0][0])


def latest_link_run(con: duckdb.DuckDBPyConnection, schema: str = "wh") -> str | None:
    """The newest linkage run of the warehouse attached as `schema` (None before the first). Run ids
    are UTC timestamps, so the newest is the largest."""
    if not _has_table(con, schema, "link_runs"):
        return None
    return con.execute(f"SELECT max(run_id) FROM {schema}.link_runs").fetchall()[0][0]


def keys_changed_since(con: duckdb.DuckDBPyConnection, run_id: str) -> int:
    """How many student keys later linkage runs moved (`key_changes` rows of runs after `run_id`):
    anything keyed before then (a training set, an assignment) names some children by old keys."""
    if not _has_table(con, "wh", "key_changes"):
        return 0
    return int(con.execute("SELECT count(*) FROM wh.key_changes WHERE run_id > ?", [run_id]).fetchall()[0][0])


def create_linked_views(con: duckdb.DuckDBPyConnection) -> None:
    """One view `wh.linked_<source>` per person-bearing source: every row with its student_key
    and the run's integer `sid` for it (`views.linked_select`: the rule is written there once)."""
    for source in PERSON_SOURCES:
        if not _source_exists(con, f"src_{source}"):
            continue
        con.execute(f"CREATE OR REPLACE VIEW wh.linked_{source} AS\n            {linked_select(source)}")


def open_session(home: EwsHome) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB session with the warehouse (read-write) and the vault (read-only)."""
    if not home.warehouse.exists():
        raise FileNotFoundError(f"no warehouse at {home.warehouse}: run `ews ingest` first")
    if not home.vault.exists():
        raise FileNotFoundError(f"no identity vault at {home.vault}: run `ews ingest` first")
    # The session's tables hold names from the vault: whatever DuckDB spills to disk stays in the
    # vault's folder too, never beside the pseudonymous data (even after a crash).
    con = session(home, attach={"wh": (home.warehouse, False), "vault": (home.vault, True)},
                  spill=home.link_spill_dir)
    try:
        # The exact birth date is read from the vault; an older warehouse still holds it instead.
        check_no_exact_birth_date(con, "wh", home.warehouse)
    except ValueError:
        con.close()
        raise
    return con


def link(home: EwsHome, cfg: LinkConfig | None = None) -> LinkSummary:
    """Run identity resolution over everything ingested so far and publish the keys."""
    cfg = cfg or LinkConfig()
    started = time.perf_counter()
    con = open_session(home)
    steps: dict[str, float] = {}

    @contextmanager
    def step(name: str) -> Iterator[None]:
        # Per-step wall time goes into the run log: where the minutes go at national scale.
        t0 = time.perf_counter()
        yield
        steps[name] = round(time.perf_counter() - t0, 2)
        log.info("link step %s: %.1f s", name, steps[name])

    try:
        with step("records_and_nodes"):
            counts = build_records_and_nodes(con, cfg.partition_tokens)
        with step("splink"):
            n_pairs, model = _run_splink(con, cfg, home)
        with step("cluster_and_review"):
            _cluster_and_review(con, cfg)
        with step("keys"):
            _assign_keys(con, home.pseudonym_key(), cfg.keep_published_keys)
        q = lambda sql: scalar(con, sql)  # noqa: E731
        run_id = dt.datetime.now(dt.UTC).strftime("link-%Y%m%dT%H%M%S%fZ")
        summary = LinkSummary(
            run_id=run_id,
            records=counts["records"],
            records_with_names=counts["records_with_names"],
            nodes=q("SELECT count(*) FROM nodes"),
            candidate_pairs=n_pairs,
            linked_pairs=q("SELECT count(*) FROM link_edges"),
            students=q("SELECT count(DISTINCT student_key) FROM node_keys"),
            review_clusters=q("SELECT count(*) FROM review") + q("SELECT count(*) FROM kept_apart"),
            review_tokens_birth_date=q("SELECT count(*) FROM nodes WHERE birth_dates_supported > 1"),
            unlinkable_rows=counts["unlinkable_rows"],
            keys_changed=_key_changes(con),
            probabilistic_skipped=model.get("skipped"),
            seconds=0.0,
            parameters={"config": cfg.model_dump(), "engine": home.engine.kind, "passes": counts["passes"],
                        "splink_model": _model_digest(model)},
        )
        summary.seconds = round(time.perf_counter() - started, 2)
        summary.step_seconds = dict(steps)  # the run log gets every step before publishing
        with step("publish"):
            _publish(con, summary.model_dump())
        summary.step_seconds["publish"] = steps["publish"]  # the caller sees publishing too
        return summary
    finally:
        con.close()


def _model_digest(model: dict[str, object]) -> dict[str, object]:
    """The fitted m/u per comparison level (no data values), for the run log and the report."""
    out: dict[str, object] = {"probability_two_random_records_match": model.get("probability_two_random_records_match"),
                              "em_blocked_pairs": model.get("em_blocked_pairs")}
    for comp in model.get("comparisons", []):  # type: ignore[union-attr]
        levels = []
        for lvl in comp.get("comparison_levels", []):
            if lvl.get("is_null_level"):
                continue
            levels.append({
                "level": lvl.get("label_for_charts"),
                "m": lvl.get("m_probability"),
                "u": lvl.get("u_probability"),
            })
        out[comp.get("output_column_name", "?")] = levels
    return out
