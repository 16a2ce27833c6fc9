"""Lists that survive a late census: a round whose census arrives after its as-of date is published
with the pupils of the latest enrolment evidence, says so everywhere a reader meets the list, and
is flagged by monitoring; a round with nobody to list is an error, never an empty publication.

The late world is the ladder's trained world (or a seeded world) with the census of the third
year's term 2 re-dated to three days after that term's mid round, as the issue found it: the
census rows and their delivery become known then. That is what `ews ingest` writes for a delivery
whose manifest says it was delivered that day (every row's known_at is its delivery's date), done
on a copy of the warehouse instead of re-ingesting and re-linking the whole world.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from features.calendar import ScoringRound, parse_round
from features.home import EwsHome
from features.pointintime.build import build_features, population_source
from features.pointintime.labels import population_sql
from features.pointintime.pipeline import warehouse_session, write_feature_set
from serving import exports, views
from serving.access import Principal
from serving.snapshot import published
from serving.store import load_round
from tests.conftest import SmallWorld, TrainedWorld, copy_world
from tests.support import worlds

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _late_round(world: SmallWorld) -> ScoringRound:
    return parse_round(f"{world.summary['first_year'] + 2}-T2-mid")


def delay_census(home_root: Path, r: ScoringRound, days_after_as_of: int = 3) -> tuple[dt.date, dt.date]:
    """Make round r's census (and its deliveries) known `days_after_as_of` days after r's as-of date.
    Returns (census date, the day it now became known)."""
    home = EwsHome(root=home_root)
    census = home.calendar.census_date(r.academic_year, r.term)
    known = home.calendar.as_of(r) + dt.timedelta(days=days_after_as_of)
    con = duckdb.connect(str(home.warehouse))
    try:
        ids = [d for (d,) in con.execute("SELECT DISTINCT delivery_id FROM src_dmc_census WHERE census_date = ?",
                                         [census]).fetchall()]
        assert ids, f"the world has no census of {census}"
        con.execute("UPDATE src_dmc_census SET known_at = ? WHERE census_date = ?", [known, census])
        con.execute(f"UPDATE deliveries SET delivered_on = ? WHERE delivery_id IN ({', '.join('?' * len(ids))})",
                    [known, *ids])
    finally:
        con.close()
    return census, known


@pytest.fixture(scope="module")
def late_world(trained: TrainedWorld, tmp_path_factory: pytest.TempPathFactory) -> SmallWorld:
    """The trained world with its third year's term-2 census late; that term's two rounds and the
    term-1 mid round before it (census on time) published with the champion."""
    world = copy_world(trained.world, tmp_path_factory.mktemp("late-census"))
    mid = _late_round(world)
    delay_census(world.home, mid)
    early = mid.model_copy(update={"round_type": "early"})
    on_time = ScoringRound(academic_year=mid.academic_year, term=1, round_type="mid")
    worlds.score_rounds(world.home, [early.round_id, mid.round_id, on_time.round_id])
    return world


def _census_keys(home: EwsHome, r: ScoringRound) -> set[str]:
    """The round's census population as known once the late census arrived (the truth to compare with)."""
    with warehouse_session(home) as con:
        return {k for (k,) in con.execute(f"SELECT student_key FROM ({population_sql(home.calendar, r, dt.date(2100, 1, 1))})")
                .fetchall()}


# --- the population -----------------------------------------------------------------------------

def test_the_latest_evidence_holds_the_late_census_pupils_on_every_seed(seeded_world: SmallWorld, tmp_path: Path) -> None:
    """Against the census that arrived three days later: nearly every listed pupil is in it and
    nearly every pupil of it is listed, at the school and grade the census gives; and the list is
    closer to it than the previous census alone (known exits removed, pupils seen since added)."""
    world = copy_world(seeded_world, tmp_path)
    home = EwsHome(root=world.home)
    r = _late_round(world)
    everything_known = dt.date(2100, 1, 1)
    census_keys = _census_keys(home, r)
    delay_census(world.home, r)
    june = ScoringRound(academic_year=r.academic_year, term=1, round_type="mid")
    with warehouse_session(home) as con:
        source = population_source(con, home.calendar, r)
        listed = build_features(con, home.calendar, r, population=source).to_pandas()
        census = con.execute(f"SELECT student_key, school_code, grade FROM ({population_sql(home.calendar, r, everything_known)})"
                             ).fetch_df()
        previous = {k for (k,) in con.execute(f"SELECT student_key FROM ({population_sql(home.calendar, june, everything_known)})"
                                              ).fetchall()}
    assert source.census_late and source.population_as_of == home.calendar.census_date(r.academic_year, 1)
    keys = set(listed["student_key"])
    both = keys & census_keys
    assert len(both) / len(keys) >= 0.97, f"{len(keys - census_keys)} of {len(keys)} listed pupils not in the census"
    assert len(both) / len(census_keys) >= 0.97, f"{len(census_keys - keys)} of {len(census_keys)} census pupils not listed"
    assert len(keys - census_keys) < len(previous - census_keys), "known exits did not make the list closer"
    assert len(census_keys - keys) <= len(census_keys - previous)
    same = listed.merge(census, on="student_key", suffixes=("", "_census"))
    assert (same["school_code"] == same["school_code_census"]).mean() >= 0.97
    assert (same["grade"].astype(str) == same["grade_census"].astype(str)).mean() >= 0.97


def test_a_school_whose_census_file_is_missing_keeps_its_pupils_and_the_other_schools_are_unchanged(
        seeded_world: SmallWorld, tmp_path: Path) -> None:
    """The round's census arrived, less the largest school's file (as the simulator's refused file):
    that school alone is listed from the latest evidence (nearly all of its census pupils, few
    others), every other school keeps exactly its census pupils, and the manifest names the school."""
    world = copy_world(seeded_world, tmp_path)
    home = EwsHome(root=world.home)
    r = _late_round(world)
    census = home.calendar.census_date(r.academic_year, r.term)
    with warehouse_session(home) as con:
        before = population_source(con, home.calendar, r)
        complete = build_features(con, home.calendar, r, population=before).to_pandas()
    school = str(complete["school_code"].value_counts().index[0])
    con = duckdb.connect(str(home.warehouse))
    try:
        con.execute("DELETE FROM src_dmc_census WHERE census_date = ? AND school_code = ?", [census, school])
    finally:
        con.close()
    m = write_feature_set(home, r.round_id)
    listed = pd.read_parquet(m.file)
    assert m.population is not None and not m.population.census_late
    codes = [f.school_code for f in m.population.school_fallbacks]
    assert sorted(codes) == sorted([*(f.school_code for f in before.school_fallbacks), school])
    fell = next(f for f in m.population.school_fallbacks if f.school_code == school)
    assert fell.population_as_of == home.calendar.census_date(r.academic_year, 1)
    caveat = m.population.school_caveat(school)
    assert caveat is not None and caveat["en"].startswith(f"census of {census} not received from this school")

    def keys(df: pd.DataFrame, inside: bool) -> set[str]:
        return set(df.loc[(df["school_code"].astype(str) == school) == inside, "student_key"])

    assert keys(listed, False) == keys(complete, False), "another school's list changed"
    truth, got = keys(complete, True), keys(listed, True)
    assert fell.students == len(got) > 0
    assert len(truth & got) / len(truth) >= 0.9, f"{len(truth - got)} of {len(truth)} census pupils not listed"
    assert len(truth & got) / len(got) >= 0.9, f"{len(got - truth)} of {len(got)} listed pupils not in the census"


# --- published, and saying so ----------------------------------------------------------------------

def test_no_round_of_a_late_census_is_published_empty(late_world: SmallWorld) -> None:
    home = EwsHome(root=late_world.home)
    mid = _late_round(late_world)
    census_keys = _census_keys(home, mid)
    for r in (mid.model_copy(update={"round_type": "early"}), mid):
        ref = published(home, r)
        assert ref is not None, f"{r.round_id} not published"
        m = ref.manifest
        assert m.rows > 0 and m.rows >= 0.9 * len(census_keys), f"{r.round_id}: {m.rows} rows"
        assert m.population is not None and m.population.census_late
        assert m.population.census_date_expected == home.calendar.census_date(mid.academic_year, 2)
        assert m.population.population_as_of == home.calendar.census_date(mid.academic_year, 1)


def test_the_feature_set_manifest_says_the_census_was_not_received(late_world: SmallWorld, tmp_path: Path) -> None:
    home = EwsHome(root=copy_world(late_world, tmp_path).home)
    r = _late_round(late_world)
    m = write_feature_set(home, r.round_id)
    assert m.rows > 0 and m.population is not None and m.population.census_late
    census = home.calendar.census_date(r.academic_year, r.term)
    saved = (home.features_dir / f"{r.round_id}.json").read_text(encoding="utf-8")
    assert '"population_source": "latest_evidence"' in saved and f'"census_date_expected": "{census}"' in saved


def _school_list(home: EwsHome, r: ScoringRound) -> dict:
    ref = published(home, r)
    assert ref is not None
    rnd = load_round(ref)
    school = str(rnd.rows["school_code"].value_counts().index[0])
    who = Principal(token_id="t", role="school", school_code=school, areas=())
    return views.school_list(rnd, who, school, names={})


def test_the_list_the_page_and_the_downloads_carry_the_caveat_in_thai_and_english(late_world: SmallWorld) -> None:
    home = EwsHome(root=late_world.home)
    r = _late_round(late_world)
    census = home.calendar.census_date(r.academic_year, r.term)
    base = home.calendar.census_date(r.academic_year, 1)
    out = _school_list(home, r)
    caveat = out["population_caveat"]
    assert caveat["en"].startswith(f"census of {census} not received; population as of {base}")
    assert "ยังไม่ได้รับข้อมูลนักเรียน" in caveat["th"] and str(census) in caveat["th"]
    assert out["students"], "the school's list is empty"

    csv_text = exports.to_csv(out["students"], caveat).decode("utf-8-sig")
    first, header = csv_text.splitlines()[:2]
    assert caveat["th"] in first and caveat["en"] in first and header.startswith("ลำดับ")

    from openpyxl import load_workbook

    ws = load_workbook(io.BytesIO(exports.to_xlsx(out["students"], "title", caveat))).active
    assert caveat["th"] in ws["A2"].value and caveat["en"] in ws["A2"].value
    assert ws["A3"].value == "ลำดับ" and ws.max_row == 3 + len(out["students"])

    page = (Path(views.__file__).parent / "templates" / "page.html").read_text(encoding="utf-8")
    assert 'id="caveat"' in page and "population_caveat" in page

    area = str(load_round(published(home, r)).rows["tambon_code"].dropna().iloc[0])[:2]  # type: ignore[arg-type]
    area_out = views.area_list(load_round(published(home, r)), Principal("t", "analyst", None, ()), area)  # type: ignore[arg-type]
    assert area_out["population_caveat"] == caveat


def test_a_round_whose_census_arrived_in_time_has_no_caveat(late_world: SmallWorld) -> None:
    home = EwsHome(root=late_world.home)
    r = _late_round(late_world)
    on_time = ScoringRound(academic_year=r.academic_year, term=1, round_type="mid")
    out = _school_list(home, on_time)
    assert out["population_caveat"] is None
    assert exports.to_csv(out["students"], None).decode("utf-8-sig").startswith("ลำดับ")
    ref = published(home, on_time)
    assert ref is not None and ref.manifest.population is not None and not ref.manifest.population.census_late


# --- nobody to list --------------------------------------------------------------------------------

def test_score_and_features_refuse_a_round_with_no_population_and_write_nothing(late_world: SmallWorld,
                                                                                tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app

    home = copy_world(late_world, tmp_path).home
    before = parse_round(f"{late_world.summary['first_year'] - 1}-T2-mid")  # before the world's first census
    _register()
    for command in ("features", "score"):
        res = CliRunner().invoke(app, [command, "--home", str(home), "--round", before.round_id])
        assert res.exit_code != 0, res.output
        assert f"round {before.round_id} has no students" in res.output and "no earlier census" in res.output
    assert not (EwsHome(root=home).features_dir / f"{before.round_id}.parquet").exists()
    assert not (EwsHome(root=home).rounds_dir / before.round_id).exists()


# --- monitoring ------------------------------------------------------------------------------------

def test_monitoring_flags_a_round_scored_on_a_stale_population(late_world: SmallWorld, tmp_path: Path) -> None:
    home = copy_world(late_world, tmp_path).home
    r = _late_round(late_world)
    report = worlds.monitor(home, r.round_id)
    stale = [q for q in report.quality if q.check == "stale_population"]  # type: ignore[attr-defined]
    assert len(stale) == 1 and stale[0].level == "drift"
    assert "not received; population as of" in stale[0].note
    assert any(b.statistic == "stale_population" for b in report.verdict.breaches)  # type: ignore[attr-defined]
    on_time = worlds.monitor(home, f"{r.academic_year}-T1-mid")
    assert not [q for q in on_time.quality if q.check == "stale_population"]  # type: ignore[attr-defined]
