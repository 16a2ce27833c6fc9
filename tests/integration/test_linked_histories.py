"""Linked histories on a simulated province: linkage quality, labels, privacy, review. Quality is
checked on three seeds (`seeded_world`); tests that write work on a copy of the session's world."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from features.home import EwsHome
from simulator.evaluate import evaluate_labels, evaluate_linkage
from features.pointintime.pipeline import TrainsetConfig, build_trainset, connect_warehouse, write_feature_set
from tests.conftest import SmallWorld, copy_world
from tests.support.pii import needles_from_deliveries, scan

pytestmark = pytest.mark.integration


def test_linkage_meets_the_pairwise_precision_and_recall_targets_on_identity_records(seeded_world: SmallWorld) -> None:
    con = connect_warehouse(EwsHome(root=seeded_world.home))
    try:
        q = evaluate_linkage(con, seeded_world.truth)
    finally:
        con.close()
    assert q.identity_rows.precision >= 0.995
    assert q.identity_rows.recall >= 0.995
    assert q.precision >= 0.995
    assert q.label_error_share <= 0.002
    # Relative to the base rate (about 1% of rows are dropouts): few of the dropouts' labels are wrong.
    assert q.label_error_share_among_dropouts <= 0.05


def test_labels_agree_with_the_simulators_true_outcome(seeded_world: SmallWorld) -> None:
    con = connect_warehouse(EwsHome(root=seeded_world.home))
    try:
        q = evaluate_labels(con, seeded_world.truth)
    finally:
        con.close()
    assert q.rows_compared > 1000
    assert q.agreement >= 0.995
    # Relative to the base rate: labelling nobody a dropout would agree on 1 - rate of the rows, so
    # the disagreement must be a small part of the rate (0.13-0.19 of it on the three seeds, all false alarms).
    base = q.true_dropout_rate
    assert base > 0
    assert 1 - q.agreement <= 0.25 * base
    assert abs(q.our_dropout_rate - base) <= 0.25 * base


def test_a_round_whose_next_census_is_not_yet_known_is_unlabelled_not_negative(small_world: SmallWorld, tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    shutil.copytree(small_world.home, home.root)
    # Cut labels off before the term-2 census of 2565 arrives (it is taken on 10 November 2022):
    # the 2565 term-1 round has students but no known outcome; the round before it does.
    m = build_trainset(home, TrainsetConfig(rounds=("2564-T2-mid", "2565-T1-early"), cutoff="2022-11-12"))
    by_round = {r.round_id: r for r in m.rounds}
    assert by_round["2565-T1-early"].rows == 0
    assert by_round["2565-T1-early"].unlabelled > 500
    assert by_round["2564-T2-mid"].rows > 500 and by_round["2564-T2-mid"].unlabelled == 0
    assert m.rows == by_round["2564-T2-mid"].rows


def test_no_citizen_id_g_code_or_name_of_the_input_is_written_outside_the_vault(trainset_world: SmallWorld, tmp_path: Path) -> None:
    home = EwsHome(root=copy_world(trainset_world, tmp_path).home)  # the default training set is built
    write_feature_set(home, "2564-T1-mid")
    needles = needles_from_deliveries(trainset_world.deliveries)
    assert len(needles.ids) > 1000 and len(needles.names) > 100
    assert scan(home.root, needles) == []
    # The same scan does find them in the vault, so it is able to fail.
    assert scan(home.vault_dir, needles, skip=()) != []


def test_every_linked_row_of_a_student_carries_only_the_pseudonymous_key(small_world: SmallWorld) -> None:
    con = duckdb.connect()
    con.execute(f"ATTACH '{EwsHome(root=small_world.home).warehouse}' AS wh (READ_ONLY)")
    cols = {c for (c,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = 'wh'").fetchall()}
    assert not cols & {"student_id", "first_name", "last_name", "prefix"}
    keys = con.execute("SELECT DISTINCT student_key FROM wh.token_keys").fetchall()
    assert all(k.startswith("S") and len(k) == 21 for (k,) in keys)


def test_the_linkage_session_spills_inside_the_vault_because_its_tables_hold_names(small_world: SmallWorld, tmp_path: Path) -> None:
    from features.linkage.link import open_session

    home = EwsHome(root=copy_world(small_world, tmp_path).home)  # opening a session prepares its spill folder
    con = open_session(home)
    try:
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
    finally:
        con.close()
    assert spill.resolve().is_relative_to(home.vault_dir.resolve())
