"""The declared feature groups and their compiler: named steps, one catalogue, clear errors.

No warehouse: the SQL is compiled and read as text, or run on a few rows built in the test.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.calendar import SchoolCalendar, parse_round
from features.pointintime.build import OUTPUT_COLUMNS, features_sql, placement_sql, round_context, school_areas_sql
from features.pointintime.compile import (
    DUCKDB, VERSION_ORDER, Column, FeatureGroup, Read, compile_groups, latest_version_sql, read_steps, with_sql,
)
from features.pointintime.groups import ALL_GROUPS, ATTENDANCE, CCT_READ, FAIRNESS, MODEL_GROUPS
from features.pointintime.labels import population_sql
from features.pointintime.pipeline import rounds_with_census
from features.pointintime.spec import FEATURE_NAMES, GROUP_COLUMNS, GROUPS, KEY_COLUMNS
from features.pointintime.trainset import (
    TrainsetConfig, TrainsetManifest, TrainsetRound, latest_trainset_name, load_trainset, save_trainset_data, save_trainset_manifest,
)

CAL = SchoolCalendar()
ROUND = parse_round("2565-T1-mid")


def _cte_names(sql: str) -> list[str]:
    return re.findall(r"(?:WITH|,)\s*(\w+) AS \(", sql)


def _top_level_sql() -> str:
    """The round's query without the school's past dropout rate (which nests earlier rounds' labels)."""
    from features.pointintime.groups import SCHOOL

    past = next(s for s in SCHOOL.steps if s.name == "past")
    sql = features_sql(CAL, ROUND)
    nested = past.sql(round_context(CAL, ROUND))  # type: ignore[operator]
    assert nested in sql
    return sql.replace(nested, "")


def test_a_compiled_round_names_each_step_of_the_point_in_time_chain() -> None:
    names = _cte_names(_top_level_sql())
    assert names[:3] == ["pop_known", "pop_latest", "pop"]
    for read in ("att", "gr", "cct", "care", "hist", "school", "area"):
        i = names.index(f"{read}_known")
        assert names[i:i + 3] == [f"{read}_known", f"{read}_latest", read], read
    for aggregate in ("att_f", "att_prev", "gr_f", "interim", "welfare", "hist_f", "repeat", "past"):
        assert aggregate in names
    assert len(names) == len(set(names)), "a step shared by two groups is emitted once"


def test_the_latest_known_version_is_written_once_as_an_arg_max_per_record() -> None:
    sql = _top_level_sql()
    assert "row_number() OVER (PARTITION BY c." not in sql  # the old per-source window styles are gone
    assert sql.count("arg_max(") == sql.count("known_at, delivery_id, source_line)") == 8
    assert "arg_max({'school_days': school_days" in sql


def test_the_latest_version_is_the_last_known_then_the_last_delivered_then_the_last_line() -> None:
    con = duckdb.connect()
    con.execute("""CREATE TABLE t AS SELECT * FROM (VALUES
        (1, DATE '2024-01-01', 1, 9, 'first'), (1, DATE '2024-02-01', 1, 1, 'later known'),
        (2, DATE '2024-02-01', 3, 1, 'older delivery'), (2, DATE '2024-02-01', 4, 1, 'newer delivery'),
        (3, DATE '2024-02-01', 4, 1, 'line 1'), (3, DATE '2024-02-01', 4, 2, 'line 2'))
        v(sid, known_at, delivery_id, source_line, x)""")
    rows = con.sql(latest_version_sql(DUCKDB, "t", ("sid",), ("x",), ("known_at", "delivery_id", "source_line"))
                   + " ORDER BY sid").fetchall()
    assert rows == [(1, "later known"), (2, "newer delivery"), (3, "line 2")]


def test_the_catalogue_is_derived_from_the_declarations() -> None:
    assert tuple(GROUPS) == tuple(g.name for g in MODEL_GROUPS)
    assert FEATURE_NAMES == tuple(c.name for g in MODEL_GROUPS for c in g.columns)
    assert GROUP_COLUMNS == tuple(c.name for c in FAIRNESS.columns)
    assert OUTPUT_COLUMNS == (*KEY_COLUMNS, *FEATURE_NAMES, *GROUP_COLUMNS)


def test_thresholds_are_named_in_the_declarations_not_spliced_as_literals() -> None:
    sql = features_sql(CAL, ROUND)
    assert "att_rate_prev_term <= 0.9 END" in sql and "< 0.85 END" in sql and "<= 3000" in sql
    attendance = next(g for g in ALL_GROUPS if g.name == "attendance")
    assert attendance.thresholds["chronic_absence_rate"] == 0.9
    assert all("0.9" not in c.sql for c in attendance.columns if isinstance(c.sql, str))


def test_a_read_of_an_unknown_source_fails_with_a_message_naming_it() -> None:
    with pytest.raises(ValueError, match=r"unknown source 'linked_attendence'"):
        Read(name="att", source="linked_attendence", key=("sid", "year_month"), values=("school_days",))


def test_a_read_of_an_unknown_column_fails_with_a_message_naming_read_and_column() -> None:
    with pytest.raises(ValueError, match=r"read 'att' of linked_attendance: unknown column\(s\) \['school_dayz'\]"):
        Read(name="att", source="linked_attendance", key=("sid", "year_month"), values=("school_dayz",))


def test_an_identity_column_is_not_readable_by_a_feature() -> None:
    with pytest.raises(ValueError, match="first_name"):
        Read(name="cct", source="linked_cct_screening", values=("first_name",))


def test_a_group_declaring_a_column_twice_fails() -> None:
    col = Column("x", "int", "x", "x", "never missing", "1")
    with pytest.raises(ValueError, match="declares a column twice"):
        FeatureGroup(name="g", en="g", th="g", reads=(), steps=(), joins=(), columns=(col, col))


def test_a_staleness_limit_on_an_event_outside_the_record_key_is_refused() -> None:
    with pytest.raises(ValueError, match="staleness limit needs its event in the key"):
        Read(name="cct", source="linked_cct_screening", event="screened_on", fresh_after="m12",
             values=("income_per_person",))


def test_a_staleness_limit_on_a_read_without_a_record_key_is_refused() -> None:
    with pytest.raises(ValueError, match="staleness limit needs a record key"):
        Read(name="cct", source="linked_cct_screening", key=None, event="screened_on",
             latest_event_first=True, fresh_after="m12", values=("income_per_person",))


def test_two_groups_declaring_one_step_differently_fail_to_compile() -> None:
    a = Read(name="cct", source="linked_cct_screening", event="screened_on", latest_event_first=True,
             fresh_after="m12", values=("income_per_person",))
    b = Read(name="cct", source="linked_cct_screening", event="screened_on", latest_event_first=True,
             fresh_after="m12", values=("caretaker",))
    groups = tuple(FeatureGroup(name=n, en=n, th=n, reads=(r,), steps=(), joins=(), columns=()) for n, r in
                   (("one", a), ("two", b)))
    with pytest.raises(ValueError, match="group 'two' declares step 'cct_latest' differently"):
        compile_groups(groups, round_context(CAL, ROUND), ("pop.student_key",), [])


def test_a_staleness_limit_drops_records_whose_event_is_too_old() -> None:
    read = Read(name="cct", source="linked_cct_screening", event="screened_on", latest_event_first=True,
                fresh_after="m12", values=("income_per_person",))
    steps = dict(read_steps(read, round_context(CAL, ROUND)))
    assert set(steps) == {"cct_known", "cct_latest", "cct"}
    assert "screened_on > DATE '" in steps["cct_known"]
    assert "(screened_on, known_at, delivery_id, source_line)" in steps["cct_latest"]


def test_labels_serving_and_features_share_the_population_step() -> None:
    as_of = CAL.as_of(ROUND.round_id)
    census = CAL.census_date(ROUND.academic_year, ROUND.term)
    for sql in (population_sql(CAL, ROUND, as_of), placement_sql(census, as_of)):
        assert _cte_names(sql)[:3] == ["pop_known", "pop_latest", "pop"]
    assert _cte_names(school_areas_sql(as_of)) == ["school_known", "school_latest", "school",
                                                   "area_known", "area_latest", "area"]


def test_the_rounds_of_a_census_set_are_derived_with_the_buddhist_era_once() -> None:
    censuses = [CAL.census_date(2566, 1), CAL.census_date(2566, 2)]
    assert [r.round_id for r in rounds_with_census(CAL, censuses)] == [
        "2566-T1-early", "2566-T1-mid", "2566-T2-early", "2566-T2-mid"]
    assert rounds_with_census(CAL, []) == []


def test_a_training_set_is_saved_and_loaded_as_one_typed_artefact(tmp_path: Path) -> None:
    import pyarrow as pa

    columns = {c: pa.array([None, None], pa.float64()) for c in FEATURE_NAMES}
    columns |= {"label": pa.array([0, 1]), "round_id": pa.array(["2565-T1-mid"] * 2),
                "student_key": pa.array(["a", "b"]), "school_code": pa.array(["s", "s"])}
    path = save_trainset_data(tmp_path, "ts-x", pa.table(columns))
    manifest = TrainsetManifest(
        name="ts-x", config=TrainsetConfig(), cutoff=dt.date(2023, 1, 1),
        rounds=[TrainsetRound(round_id="2565-T1-mid", round_type="mid", as_of=dt.date(2022, 6, 10), rows=2,
                              unlabelled=0, label_rate=0.5, label_known_on=dt.date(2022, 11, 20))],
        rows=2, unlabelled_rows=0,
        label_rate=0.5, delivery_fingerprint="f", catalogue_version="c", feature_groups={}, categorical=[],
        file=str(path), sha256="h")
    save_trainset_manifest(tmp_path, manifest)
    assert latest_trainset_name(tmp_path) == "ts-x"
    ts = load_trainset(tmp_path)
    assert ts.manifest == manifest and len(ts.frame) == 2
    assert ts.label_known.cutoff == dt.date(2023, 1, 1)
    assert ts.label_known.by_round == {"2565-T1-mid": dt.date(2022, 11, 20)}
    with pytest.raises(FileNotFoundError, match="run `ews trainset` first"):
        latest_trainset_name(tmp_path / "empty")


# A manifest.json as the previous version wrote it (rounds as plain dicts, dates as text): sets
# already on disk must still load, and their rounds read as typed values.
OLD_MANIFEST = {
    "name": "ts-old", "config": {"schema_version": 1, "rounds": [], "horizon": "one_year", "cutoff": None},
    "cutoff": "2023-01-01",
    "rounds": [
        {"round_id": "2565-T1-mid", "round_type": "mid", "as_of": "2022-06-10", "rows": 2, "unlabelled": 1,
         "label_rate": 0.5, "label_known_on": "2022-11-20"},
        {"round_id": "2565-T2-mid", "round_type": "mid", "as_of": "2022-11-25", "rows": 0, "unlabelled": 3,
         "label_rate": None, "label_known_on": None},
    ],
    "rows": 2, "unlabelled_rows": 4, "label_rate": 0.5, "delivery_fingerprint": "f", "catalogue_version": "c",
    "feature_groups": {"attendance": ["att_rate_30d"]}, "categorical": [], "file": "data.parquet", "sha256": "h",
}
# The simulator's synthetic sets had no label_known_on at all.
OLD_SYNTHETIC_ROUND = {"round_id": "2566-T1-early", "round_type": "early", "as_of": "2023-05-31", "rows": 5,
                       "unlabelled": 0, "label_rate": 0.2}


def test_a_manifest_written_by_the_previous_version_still_loads(tmp_path: Path) -> None:
    import json

    import pyarrow as pa

    columns = {c: pa.array([None, None], pa.float64()) for c in FEATURE_NAMES}
    columns |= {"label": pa.array([0, 1]), "round_id": pa.array(["2565-T1-mid"] * 2),
                "student_key": pa.array(["a", "b"]), "school_code": pa.array(["s", "s"])}
    save_trainset_data(tmp_path, "ts-old", pa.table(columns))
    (tmp_path / "ts-old" / "manifest.json").write_text(json.dumps(OLD_MANIFEST, indent=2), encoding="utf-8")
    ts = load_trainset(tmp_path, "ts-old")
    m = ts.manifest
    assert m.config.horizon == "one_year" and m.delivery_fingerprint == "f" and m.cutoff == dt.date(2023, 1, 1)
    assert [r.round_id for r in m.rounds] == ["2565-T1-mid", "2565-T2-mid"]
    assert m.rounds[0].as_of == dt.date(2022, 6, 10) and m.rounds[0].label_rate == 0.5 and m.rounds[1].label_rate is None
    assert ts.label_known.by_round == {"2565-T1-mid": dt.date(2022, 11, 20), "2565-T2-mid": None}
    # Saved again, it is the same JSON (the typed rounds dump as the dicts they were read from), with
    # the engine and the linkage run unknown: those fields came later.
    assert json.loads(m.model_dump_json()) == {**OLD_MANIFEST, "engine": None, "link_run": None}
    assert TrainsetRound.model_validate(OLD_SYNTHETIC_ROUND).label_known_on is None


def test_age_and_over_age_come_from_the_birth_month_with_the_birthday_taken_as_its_15th() -> None:
    """The warehouse keeps the birth month only (the exact date is in the identity vault). Against
    the exact date, for every birthday of three years: over_age_years is exact in every month but
    June, where only the 1st-10th (birthday reached by 10 June) count a year lower; age is within
    half a month (16 days)."""
    from features.ids import GRADE_TYPICAL_AGE
    from features.pointintime.groups import MOBILITY, STUDENT

    ctx = round_context(CAL, ROUND)
    june10 = CAL.census_date(ROUND.academic_year, 1)
    over_sql = next(c.sql for c in MOBILITY.columns if c.name == "over_age_years")
    age_sql = next(c.sql for c in STUDENT.columns if c.name == "age")
    days = [dt.date(2008, 1, 1) + dt.timedelta(days=i) for i in range(3 * 366)]
    con = duckdb.connect()
    con.execute("CREATE TABLE pop (born DATE, birth_month DATE, grade VARCHAR)")
    con.executemany("INSERT INTO pop VALUES (?, ?, 'M1')", [(d, d.replace(day=1)) for d in days])
    con.execute("INSERT INTO pop VALUES (NULL, NULL, 'M1')")
    rows = con.execute(f"SELECT born, {over_sql(ctx)}, {age_sql(ctx)} FROM pop").fetchall()  # type: ignore[operator]
    june_lower = 0
    for born, over, age in rows:
        if born is None:
            assert over is None and age is None
            continue
        completed = june10.year - born.year - ((june10.month, june10.day) < (born.month, born.day))
        exact_over = max(0, completed - GRADE_TYPICAL_AGE["M1"])
        if born.month == 6 and born.day <= 10:
            assert over == max(0, exact_over - 1), born
            june_lower += over != exact_over
        else:
            assert over == exact_over, born
        assert abs(age - (ctx.as_of - born).days / 365.25) <= 16 / 365.25 + 1e-12, born
    assert june_lower >= 10  # the June rule was exercised (over-age above 0 for some 1-10 June birthdays)


@pytest.mark.parametrize("read", [CCT_READ, ATTENDANCE.reads[0]], ids=["latest_event_first", "event_in_key"])
@pytest.mark.parametrize("seed", [3, 17])
def test_stale_rows_are_dropped_as_they_are_read_and_every_record_keeps_the_version_it_had(read: Read, seed: int) -> None:
    """The staleness limit filters the known rows (so a round's copies of them hold 13 months, not
    a pupil's whole history), and the records that survive are those the limit applied after the
    latest version would leave: checked against that order on random histories."""
    ctx = round_context(CAL, ROUND)
    rng = np.random.default_rng(seed)
    n = 400
    cols = tuple(dict.fromkeys(("sid", *(read.key or ()), *read.values, read.event, *VERSION_ORDER)))
    rows = {c: rng.integers(0, 5, n) for c in cols}
    rows["sid"] = rng.integers(0, 60, n)
    # events from three years before the as-of date to a month after it, on month starts for the
    # month-keyed read (so several versions share a key), known before or after the as-of date
    months = rng.integers(-36, 2, n)
    rows[read.event] = [(dt.date(ctx.as_of.year, ctx.as_of.month, 1) + dt.timedelta(days=int(m) * 31)).replace(day=1)
                        for m in months]
    con = duckdb.connect()
    limit = con.execute(f"SELECT {ctx.params[read.fresh_after]}").fetchone()[0]
    rows[read.event][: n // 10] = [limit] * (n // 10)  # the limit itself is stale
    rows["known_at"] = [e + dt.timedelta(days=int(k)) for e, k in zip(rows[read.event], rng.integers(0, 120, n))]
    rows["delivery_id"] = rng.integers(0, 3, n).astype(str)
    if "school_days" in rows:
        rows["school_days"] = rng.integers(0, 3, n)  # the attendance read keeps months with school days
    con.execute("CREATE SCHEMA wh")
    con.register("rows_df", pd.DataFrame(rows))
    con.execute(f"CREATE TABLE wh.{read.source} AS SELECT * FROM rows_df")
    pop = [("pop", "SELECT DISTINCT sid FROM wh." + read.source)]
    key = ", ".join(read.key or ())
    pushed = con.execute(with_sql([*pop, *read_steps(read, ctx)], f"SELECT * FROM {read.name} ORDER BY {key}")).df()
    unlimited = replace(read, fresh_after=None)
    after = con.execute(with_sql([*pop, *read_steps(unlimited, ctx)],
                                 f"SELECT * FROM {read.name} WHERE {read.event} > {ctx.params[read.fresh_after]} ORDER BY {key}")).df()
    every = con.execute(with_sql([*pop, *read_steps(unlimited, ctx)], f"SELECT count(*) FROM {read.name}")).fetchone()[0]
    assert 0 < len(after) < every, "the random histories hold both stale and fresh records"
    pd.testing.assert_frame_equal(pushed, after)
    stale = con.execute(with_sql([*pop, *read_steps(read, ctx)],
                                 f"SELECT count(*) FROM {read.name}_known WHERE {read.event} <= {ctx.params[read.fresh_after]}")).fetchone()[0]
    assert stale == 0, "the known rows hold no stale row"
