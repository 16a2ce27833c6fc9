"""Linkage and label quality against the simulator's truth, and the ceiling of scored rows.

The truth folder is read here and only here, for evaluation; the pipeline never reads it and never
imports this module. It asks for a `features.evaluation.TruthEvaluator`, and the entry point
(`ews/cli.py`) installs `SimulatorTruth` below, so `ews link/trainset/train --truth` reach it.

Pairwise precision and recall are computed from the contingency table of (predicted student_key,
true person) over every person-bearing row, so no pair list is ever
materialised: TP = Σ C(n_kp, 2), predicted pairs = Σ_k C(n_k, 2), true pairs = Σ_p C(n_p, 2).
A row that linkage could not key counts as a cluster of its own.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from features.calendar import SchoolCalendar
from features.db import one, scalar
from features.evaluation import (
    MIN_GROUP_DROPOUT_STUDENTS, GroupLabelQuality, LabelQuality, LinkQuality, PairwiseQuality,
)
from features.linkage.link import PERSON_SOURCES
from features.pointintime.labels import EVIDENCE, Evidence, Horizon, labels_sql, population_sql


def attach_truth(con: duckdb.DuckDBPyConnection, truth_dir: Path) -> None:
    """Views over the truth files the evaluation reads."""
    for name in ("records", "rounds"):
        path = truth_dir / f"{name}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"truth file {path} not found (is {truth_dir} a simulator truth folder?)")
        con.execute(f"CREATE OR REPLACE TEMP VIEW truth_{name} AS SELECT * FROM read_parquet('{path}')")


def _existing_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    names = {r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = 'wh'").fetchall()}
    return [s for s in PERSON_SOURCES if f"linked_{s}" in names]


def _pairwise(con: duckdb.DuckDBPyConnection, where: str) -> PairwiseQuality:
    parts = " UNION ALL ".join(
        f"SELECT '{s}' AS source, delivery_id, source_file, source_line, student_key FROM wh.linked_{s}"
        for s in _existing_sources(con)
    )
    row = one(con, f"""
        WITH ours AS ({parts}),
        j AS (
            SELECT coalesce(o.student_key, 'row:' || o.delivery_id || o.source_file || o.source_line) AS k,
                   t.person_id AS p
            FROM ours o JOIN truth_records t USING (delivery_id, source_file, source_line)
            WHERE {where}
        ),
        kp AS (SELECT k, p, count(*) AS n FROM j GROUP BY k, p),
        kk AS (SELECT k, count(*) AS n FROM j GROUP BY k),
        pp AS (SELECT p, count(*) AS n FROM j GROUP BY p)
        SELECT (SELECT count(*) FROM j),
               (SELECT sum(n * (n - 1) / 2) FROM kp),
               (SELECT sum(n * (n - 1) / 2) FROM kk),
               (SELECT sum(n * (n - 1) / 2) FROM pp),
               (SELECT count(*) FROM kk), (SELECT count(*) FROM pp)
    """)
    rows, tp, pred, true, nk, np_ = (x or 0 for x in row)
    return PairwiseQuality(
        rows=int(rows), precision=float(tp / pred) if pred else 1.0, recall=float(tp / true) if true else 1.0,
        predicted_students=int(nk), true_persons=int(np_),
    )


def truth_linked_schema(con: duckdb.DuckDBPyConnection, schema: str = "tl") -> None:
    """Views shaped like the linked ones but keyed by the true person: labels with perfect linkage."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for s in _existing_sources(con):
        con.execute(f"""
            CREATE OR REPLACE VIEW {schema}.linked_{s} AS
            SELECT 'P' || CAST(t.person_id AS VARCHAR) AS student_key, CAST(t.person_id AS BIGINT) AS sid,
                   s.* EXCLUDE (student_key, sid)
            FROM wh.linked_{s} s JOIN truth_records t USING (delivery_id, source_file, source_line)
        """)
    for t in ("src_dmc_census", "deliveries", "ingested_files"):  # what labels read besides linked views
        con.execute(f"CREATE OR REPLACE VIEW {schema}.{t} AS SELECT * FROM wh.{t}")


def _labels_with_records(cal: SchoolCalendar, round_id: str, cutoff: dt.date, horizon: Horizon, schema: str) -> str:
    from features.calendar import parse_round

    r = parse_round(round_id)
    return f"""
        SELECT p.delivery_id, p.source_file, p.source_line, l.dropout
        FROM ({population_sql(cal, r, cutoff, schema)}) p
        JOIN ({labels_sql(cal, r, cutoff, horizon, schema)}) l USING (student_key)
    """


def labelled_rounds(con: duckdb.DuckDBPyConnection, cal: SchoolCalendar, cutoff: dt.date) -> list[str]:
    from features.pointintime.pipeline import available_rounds

    return [
        r.round_id for r in available_rounds(con, cal)
        if cal.next_census(r.academic_year, r.term)[2] <= cutoff and cal.as_of(r.round_id) <= cutoff
    ]


def evaluate_linkage(
    con: duckdb.DuckDBPyConnection, truth_dir: Path, cal: SchoolCalendar | None = None,
    horizon: Horizon = "next_census",
) -> LinkQuality:
    """Pairwise precision/recall, and the share of labels that linkage errors make wrong."""
    cal = cal or SchoolCalendar()
    attach_truth(con, truth_dir)
    all_rows = _pairwise(con, "true")
    identity_rows = _pairwise(con, f"o.source IN ({', '.join(repr(s) for s, v in PERSON_SOURCES.items() if v[0])})")
    truth_linked_schema(con)
    from features.pointintime.pipeline import latest_delivery

    cutoff = latest_delivery(con)
    rounds = labelled_rounds(con, cal, cutoff)
    compared = wrong = pos = wrong_pos = 0
    for rid in rounds:
        row = one(con, f"""
            SELECT count(*), count(*) FILTER (WHERE o.dropout <> t.dropout),
                   count(*) FILTER (WHERE t.dropout = 1),
                   count(*) FILTER (WHERE t.dropout = 1 AND o.dropout <> t.dropout)
                   + count(*) FILTER (WHERE o.dropout = 1 AND t.dropout = 0)
            FROM ({_labels_with_records(cal, rid, cutoff, horizon, 'wh')}) o
            JOIN ({_labels_with_records(cal, rid, cutoff, horizon, 'tl')}) t
              USING (delivery_id, source_file, source_line)
            WHERE o.dropout IS NOT NULL AND t.dropout IS NOT NULL
        """)
        compared += row[0]
        wrong += row[1]
        pos += row[2]
        wrong_pos += row[3]
    return LinkQuality(
        precision=all_rows.precision, recall=all_rows.recall,
        all_rows=all_rows, identity_rows=identity_rows,
        label_rows_compared=compared,
        label_error_share=wrong / compared if compared else 0.0,
        label_error_share_among_dropouts=wrong_pos / pos if pos else 0.0,
        rounds_compared=rounds,
    )


GROUPS: dict[str, str] = {
    # each a SQL expression over the truth (person `pe`, round row `x`)
    "nationality": "pe.nationality",
    "province": "pe.province_code",
    "grade_band": ("CASE WHEN x.grade LIKE 'K%' THEN 'K1-K3' WHEN x.grade IN ('P1', 'P2', 'P3') THEN 'P1-P3' "
                   "WHEN x.grade LIKE 'P%' THEN 'P4-P6' WHEN x.grade IN ('M1', 'M2', 'M3') THEN 'M1-M3' "
                   "ELSE 'M4-M6' END"),
    "poverty": "CASE WHEN x.extremely_poor THEN 'extremely_poor' ELSE 'not_extremely_poor' END",
}


def evaluate_labels(
    con: duckdb.DuckDBPyConnection, truth_dir: Path, cal: SchoolCalendar | None = None,
    horizon: Horizon = "next_census", cutoff: dt.date | None = None, evidence: tuple[Evidence, ...] = EVIDENCE,
) -> LabelQuality:
    """Our labels against the simulator's true outcome, joined through each round's census row:
    precision and recall of the dropout label overall and per group, and the unknown share.

    Rounds compared: those whose horizon census date is on or before the cutoff (default: the latest
    delivery, as `ews trainset` uses). `evidence` lets a test measure labels without one source.
    """
    from features.calendar import parse_round
    from features.pointintime.pipeline import latest_delivery

    cal = cal or SchoolCalendar()
    attach_truth(con, truth_dir)
    persons = truth_dir / "persons.parquet"
    cutoff = cutoff or latest_delivery(con)
    rounds = labelled_rounds(con, cal, cutoff)
    group_cols = ", ".join(f"{sql} AS g_{name}" for name, sql in GROUPS.items())
    parts = []
    for rid in rounds:
        r = parse_round(rid)
        parts.append(f"""
            SELECT '{rid}' AS round_id, tr.person_id, l.label_state, l.dropout, x.dropout AS true_dropout,
                   x.exit_type IN ('abroad', 'death') AND tr.person_id IN (SELECT person_id FROM untold_exits) AS untraceable,
                   {group_cols}
            FROM ({population_sql(cal, r, cutoff)}) p
            JOIN ({labels_sql(cal, r, cutoff, horizon, evidence=evidence)}) l USING (student_key)
            JOIN truth_records tr USING (delivery_id, source_file, source_line)
            JOIN truth_rounds x ON x.person_id = tr.person_id AND x.round_id = '{rid}'
            JOIN read_parquet('{persons}') pe ON pe.person_id = tr.person_id
        """)
    # a path abroad or to death leaves no record but the exits row; the simulator's omissions name
    # the exits rows that were never filed
    omissions = truth_dir / "omissions.parquet"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE untold_exits AS SELECT DISTINCT person_id
                    FROM read_parquet('{omissions}') WHERE source = 'exits'""" if omissions.exists() else
                "CREATE OR REPLACE TEMP TABLE untold_exits AS SELECT NULL::VARCHAR AS person_id WHERE false")
    con.execute("CREATE OR REPLACE TEMP TABLE label_eval AS " + (" UNION ALL ".join(parts) if parts else
                "SELECT NULL::VARCHAR AS round_id WHERE false"))

    def quality(where: str) -> tuple:
        return one(con, f"""
            SELECT count(*), count(*) FILTER (WHERE dropout IS NULL),
                   count(*) FILTER (WHERE dropout = 1),
                   count(DISTINCT person_id) FILTER (WHERE dropout = 1),
                   count(*) FILTER (WHERE dropout = 1 AND true_dropout = 1),
                   count(*) FILTER (WHERE dropout = 1 AND true_dropout = 0),
                   count(*) FILTER (WHERE dropout = 0 AND true_dropout = 1),
                   count(*) FILTER (WHERE dropout = 0 AND true_dropout = 0),
                   count(*) FILTER (WHERE dropout IS NULL AND true_dropout = 1),
                   count(*) FILTER (WHERE dropout = 1 AND true_dropout = 0 AND untraceable)
            FROM label_eval WHERE {where}
        """)

    def precision_interval(where: str, replicates: int = 1000) -> tuple[float | None, float | None]:
        # Resample the students labelled dropout (all their rows together: early and mid rounds
        # share one outcome), as every interval of the project is drawn.
        per = con.execute(f"""
            SELECT count(*), count(*) FILTER (WHERE true_dropout = 1) FROM label_eval
            WHERE dropout = 1 AND ({where}) GROUP BY person_id ORDER BY person_id""").fetchall()
        if not per:
            return None, None
        n, t = np.array(per, dtype=float).T
        draw = np.random.default_rng(0).integers(0, len(n), (replicates, len(n)))
        lo, hi = np.quantile(t[draw].sum(axis=1) / n[draw].sum(axis=1), [0.025, 0.975])
        return float(lo), float(hi)

    def group(row: tuple, where: str) -> GroupLabelQuality:
        n, unk, lab, lab_students, tp, fp, fn, _, _, untraceable = (int(v or 0) for v in row)
        lo, hi = precision_interval(where)
        return GroupLabelQuality(
            rows=n, unknown=unk, labelled_dropouts=lab, labelled_dropout_students=lab_students,
            true_dropouts=tp + fn, false_dropouts=fp, precision=tp / lab if lab else None,
            recall=tp / (tp + fn) if tp + fn else None, judged=lab_students >= MIN_GROUP_DROPOUT_STUDENTS,
            precision_lo=lo, precision_hi=hi, false_untraceable=untraceable,
            attainable_precision=tp / (tp + untraceable) if tp + untraceable else None,
        )

    n, unk, lab, _, tp, fp, fn, tn, unk_true, untraceable = (int(v or 0) for v in quality("true"))
    per_round: dict[str, float] = {}
    for rid, agree in con.execute("""
            SELECT round_id, avg(CASE WHEN dropout = true_dropout THEN 1 ELSE 0 END)
            FROM label_eval WHERE dropout IS NOT NULL GROUP BY round_id ORDER BY round_id""").fetchall():
        per_round[rid] = round(float(agree), 5)
    per_group: dict[str, dict[str, GroupLabelQuality]] = {}
    for name in GROUPS:
        values = [v for (v,) in con.execute(
            f"SELECT DISTINCT g_{name} FROM label_eval WHERE g_{name} IS NOT NULL ORDER BY 1").fetchall()]
        per_group[name] = {str(v): group(quality(f"g_{name} = '{v}'"), f"g_{name} = '{v}'") for v in values}
    states = dict(con.execute("SELECT label_state, count(*) FROM label_eval GROUP BY 1 ORDER BY 1").fetchall())
    compared = tp + fp + fn + tn
    overall_lo, overall_hi = precision_interval("true")
    return LabelQuality(
        rows_compared=compared,
        agreement=(tp + tn) / compared if compared else 0.0,
        our_dropout_rate=(tp + fp) / compared if compared else 0.0,
        true_dropout_rate=(tp + fn) / compared if compared else 0.0,
        confusion={"tp": tp, "fp": fp, "fn": fn, "tn": tn}, per_round=per_round,
        precision=tp / lab if lab else None, recall=tp / (tp + fn) if tp + fn else None,
        precision_lo=overall_lo, precision_hi=overall_hi, rows=n, unknown_rows=unk, unknown_share=unk / n if n else 0.0, true_dropouts_unknown=unk_true,
        states={str(k): int(v) for k, v in states.items()}, per_group=per_group,
        false_untraceable=untraceable, attainable_precision=tp / (tp + untraceable) if tp + untraceable else None,
    )


def ceiling_table(con: duckdb.DuckDBPyConnection, truth_dir: Path, round_ids: list[str],
                  cal: SchoolCalendar | None = None) -> pa.Table:
    """(student_key, round_id, p_true, p_observable, true_dropout) for the given rounds: the simulator's
    true probability of each scored row (the full ceiling) and the observable ceiling (PROCESS.md §3b),
    reached through the row's census record. Evaluation only."""
    from features.calendar import parse_round

    cal = cal or SchoolCalendar()
    attach_truth(con, truth_dir)
    # The truth's probabilities belong to a (person, round); the census record only maps a row to its
    # person. So the census is read as known by the warehouse's newest delivery, as a training set
    # reads a labelled round's: read by the round's as-of date, a round whose census came late (seed
    # 31's 100k world: 54 days, after both of the term's as-of dates) had no truth rows at all, and
    # callers joining on (student_key, round_id) lost the round without a word.
    cutoff = scalar(con, "SELECT max(known_at) FROM wh.src_dmc_census")
    parts = []
    for rid in round_ids:
        r = parse_round(rid)
        parts.append(f"""
            SELECT p.student_key, '{rid}' AS round_id, x.p_dropout AS p_true, x.p_observable, x.dropout AS true_dropout
            FROM ({population_sql(cal, r, cutoff)}) p
            JOIN truth_records tr USING (delivery_id, source_file, source_line)
            JOIN truth_rounds x ON x.person_id = tr.person_id AND x.round_id = '{rid}'
        """)
    return con.sql(" UNION ALL ".join(parts) + " ORDER BY round_id, student_key").to_arrow_table()


class SimulatorTruth:
    """The simulator's `TruthEvaluator` (features/evaluation.py): the functions above, on a truth folder."""

    def linkage_quality(self, con: duckdb.DuckDBPyConnection, truth_dir: Path) -> LinkQuality:
        return evaluate_linkage(con, truth_dir)

    def label_quality(self, con: duckdb.DuckDBPyConnection, truth_dir: Path, horizon: Horizon) -> LabelQuality:
        return evaluate_labels(con, truth_dir, horizon=horizon)

    def ceiling_table(self, con: duckdb.DuckDBPyConnection, truth_dir: Path, round_ids: list[str]) -> pa.Table:
        return ceiling_table(con, truth_dir, round_ids)
