"""Garbage in: ingestion either refuses the file clearly or accounts for every row it received."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contract import SOURCES
from features.home import EwsHome
from features.ingest.pipeline import ingest_path
from simulator.samples import csv_text, registry_rows, valid_row, write_delivery
from features.ingest.warehouse import connect, warehouse_columns

pytestmark = pytest.mark.integration

HEADER = csv_text("areas", []).encode()
FIELD = st.one_of(
    st.text(alphabet="0123456789-", max_size=8),
    st.sampled_from(["500101", "5001", "50", "north", "ศรีภูมิ", "", " ", "ตำบล\"x\"", "a,b", "2568"]),
    st.text(max_size=6),
)
LINE = st.one_of(
    st.lists(FIELD, min_size=5, max_size=9).map(
        lambda fs: ",".join('"' + f.replace('"', '""') + '"' if any(c in f for c in ',"\n\r') else f for f in fs)
    ),
    st.text(max_size=30),
)
CONTENT = st.one_of(
    st.lists(LINE, max_size=12).map(lambda ls: HEADER + "\n".join(ls).encode()),
    st.binary(max_size=200).map(lambda b: HEADER + b),
    st.lists(LINE, max_size=6).map(lambda ls: HEADER + "\r\n".join(ls).encode("cp874", "ignore")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=CONTENT)
def test_garbage_is_refused_clearly_or_every_received_row_is_accepted_or_quarantined(content: bytes) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        home = EwsHome(root=tmp / "home")
        folder = write_delivery(tmp / "d", "g-1", {"areas": content}, delivered_on="2025-01-01")
        d = ingest_path(folder, home).deliveries[0]
        if d.status == "refused":
            assert d.message and "areas.csv" in d.message
            assert not home.warehouse.exists()
            return
        f = d.files[0]
        assert f.received == f.accepted + f.quarantined
        con = connect(home)
        try:
            stored = con.execute("SELECT count(*) FROM src_areas").fetchall()[0][0]
            lines = con.execute(
                "SELECT count(DISTINCT source_line) FROM (SELECT source_line FROM src_areas UNION ALL "
                "SELECT source_line FROM quarantine)"
            ).fetchall()[0][0]
            acct = con.execute("SELECT received, accepted, quarantined FROM ingested_files").fetchall()[0]
        finally:
            con.close()
        assert stored == f.accepted
        assert lines == f.received  # every received row is either stored or quarantined, by line
        assert acct == (f.received, f.accepted, f.quarantined)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_valid_file_among_garbage_strategies_is_accepted_whole(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path / "home")
    rep = ingest_path(write_delivery(tmp_path / "d", "r-1", registry_rows()), home)
    assert [(f.received, f.accepted) for f in rep.deliveries[0].files] == [(2, 2), (2, 2)]
    assert valid_row("areas", 0)["region"] == "north"


DETAILS = ("room", "nationality", "disability", "tambon_code")  # the census's nullable details
CENSUS_COLUMNS = SOURCES["dmc_census"].column_names
GARBLE = st.lists(st.tuples(st.sampled_from(CENSUS_COLUMNS), FIELD), max_size=3)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbles=st.lists(GARBLE, min_size=1, max_size=6))
def test_garbled_census_fields_are_repaired_or_quarantined_and_every_row_is_accounted_for(
    garbles: list[list[tuple[str, str]]]
) -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        home = EwsHome(root=tmp / "home")
        assert ingest_path(write_delivery(tmp / "r", "r-1", registry_rows(), delivered_on="2025-01-01"), home).ok
        rows = [{**valid_row("dmc_census", i), **dict(g)} for i, g in enumerate(garbles)]
        d = ingest_path(write_delivery(tmp / "d", "c-1", {"dmc_census": rows}), home).deliveries[0]
        if d.status == "refused":
            assert d.message and "dmc_census.csv" in d.message
            return
        f = d.files[0]
        assert f.received == f.accepted + f.quarantined
        con = connect(home)
        try:
            stored = {r[0] for r in con.execute("SELECT source_line FROM src_dmc_census").fetchall()}
            quarantined = {r[0] for r in con.execute("SELECT source_line FROM quarantine").fetchall()}
            repairs = con.execute("SELECT source_line, column_name, rule FROM repairs").fetchall()
            acct = con.execute("SELECT received, accepted, quarantined, repaired FROM ingested_files "
                               "WHERE delivery_id = 'c-1'").fetchall()[0]
            stored_names = {n for n, _ in warehouse_columns(SOURCES["dmc_census"])}
            for line, column, rule in repairs:
                if not rule.startswith("null_"):
                    continue
                if column == "student_id":  # the warehouse keeps a token and its kind in its place
                    value = con.execute("SELECT id_token, id_kind FROM src_dmc_census WHERE source_line = ?", [line]).fetchall()
                    assert value == [(None, "missing")], (line, column, rule)
                elif column in stored_names:  # other identity columns live in the vault only
                    value = con.execute(f'SELECT "{column}" FROM src_dmc_census WHERE source_line = ?', [line]).fetchall()
                    assert value == [(None,)], (line, column, rule)
        finally:
            con.close()
        assert len(stored) == f.accepted and not stored & quarantined
        assert len(stored | quarantined) == f.received  # every received row is stored or quarantined, by line
        assert {line for line, _, _ in repairs} <= stored
        assert len({line for line, _, _ in repairs}) == f.repaired  # rows repaired, not values
        assert acct == (f.received, f.accepted, f.quarantined, f.repaired)
        breaks = any("\r" in v or "\n" in v for g in garbles for _, v in g)
        if f.received == len(rows) and not breaks:  # row i is on line i + 2 only when no field holds a line break
            for line, g in enumerate(garbles, start=2):
                if {c for c, _ in g} <= set(DETAILS):
                    assert line in stored, (line, g)  # a bad detail never loses the pupil
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
