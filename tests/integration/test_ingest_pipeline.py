"""Ingestion end to end on tiny deliveries: accounting, reasons, repairs, refusals, atomicity,
idempotence and privacy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from features.contract import SOURCES
from features.home import EwsHome
from features.ingest.pipeline import ingest_path
from simulator.samples import csv_text, registry_rows, valid_row, write_delivery
from features.ingest.warehouse import connect, file_accounting

pytestmark = pytest.mark.integration


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EwsHome:
    monkeypatch.delenv("EWS_PSEUDONYM_KEY_FILE", raising=False)
    return EwsHome(root=tmp_path / "home")


@pytest.fixture()
def registry(tmp_path: Path, home: EwsHome) -> None:
    rep = ingest_path(write_delivery(tmp_path / "in" / "reg", "reg-1", registry_rows(), delivered_on="2025-01-01"), home)
    assert rep.ok


def _rows(home: EwsHome, sql: str) -> list[tuple]:
    con = connect(home)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _snapshot(home: EwsHome) -> str | None:
    return hashlib.sha256(home.warehouse.read_bytes()).hexdigest() if home.warehouse.exists() else None


def test_every_file_accounts_for_every_row_and_quarantine_names_exact_lines(
    tmp_path: Path, home: EwsHome, registry: None
) -> None:
    good = [valid_row("attendance", i) for i in range(3)]
    text = csv_text("attendance", good)
    text += '2025-06,1050100001,1103702071811,00017,20,12,0,3\n'  # line 5: days do not add up
    text += '2025-06,1234567890,,,20,20,0,0\n'  # line 6: unknown school
    text += '"2025-\n06",1050100001,,,20,20,0,0\n'  # lines 7-8: a line break inside quotes
    text += '2025-06,1050100001,,,20,20,0,0,extra\n'  # line 9: too many fields
    text += csv_text("attendance", good[:1]).split("\n", 1)[1]  # line 10: duplicate of line 2
    # No student ID: the birth date is needed to say who, so an impossible one quarantines the row.
    census = [valid_row("dmc_census", 1), {**valid_row("dmc_census", 2), "birth_date": "2010-02-30", "student_id": ""}]
    rep = ingest_path(write_delivery(tmp_path / "in" / "d", "d-1", {"attendance": text, "dmc_census": census}), home)
    files = {f.source_file: f for f in rep.deliveries[0].files}
    assert (files["attendance.csv"].received, files["attendance.csv"].accepted, files["attendance.csv"].quarantined) == (8, 3, 5)
    q = _rows(home, "SELECT source_file, source_line, reason FROM quarantine ORDER BY source_file, source_line")
    assert q == [
        ("attendance.csv", 5, "days_present + days_leave + days_absent must equal school_days (12 + 0 + 3 ≠ 20)"),
        ("attendance.csv", 6, "school_code 1234567890 is not in the school registry"),
        ("attendance.csv", 7, "year_month: '2025-\n06' is not a month (YYYY-MM)"),
        ("attendance.csv", 9, "the line has 9 fields, the header has 8; value withheld: personal data; see the file at this line"),
        ("attendance.csv", 10, "exact duplicate of line 2"),
        # The birth date is personal data: the reason never shows it.
        ("dmc_census.csv", 3, "birth_date: invalid (type); value withheld: personal data; see the file at this line"),
    ]
    for a in file_accounting(home):
        assert a.received == a.accepted + a.quarantined
        table = f"src_{a.source}"
        assert _rows(home, f"SELECT count(*) FROM {table} WHERE delivery_id = '{a.delivery_id}'")[0][0] == a.accepted


def test_be_and_ce_years_are_repaired_and_every_repair_is_logged(tmp_path: Path, home: EwsHome, registry: None) -> None:
    row = {**valid_row("grades", 1), "academic_year": "2025", "assessed_on": "2568-09-30"}
    rep = ingest_path(write_delivery(tmp_path / "in" / "g", "g-1", {"grades": [row]}), home)
    assert rep.deliveries[0].files[0].repaired == 1
    assert _rows(home, "SELECT academic_year, assessed_on::VARCHAR FROM src_grades") == [(2568, "2025-09-30")]
    assert sorted(_rows(home, "SELECT column_name, raw_value, repaired_value, rule FROM repairs")) == [
        ("academic_year", "2025", "2568", "ce_year_to_be"),
        ("assessed_on", "2568-09-30", "2025-09-30", "be_year_to_ce"),
    ]


def test_a_delivery_mixing_every_case_adds_up_and_each_line_is_stored_or_quarantined(
    tmp_path: Path, home: EwsHome, registry: None
) -> None:
    rows = [valid_row("dmc_census", i) for i in range(10)]
    rows[1]["room"] = "0"  # line 3: one detail -> NULL
    rows[2].update(disability="?", nationality="XX", birth_date="2555-03-04")  # line 4: two NULLs + a BE repair
    rows[3]["birth_date"] = "2025-06-10"  # line 5: age 0, valid ID -> birth date NULL
    rows[4].update(birth_date="2025-06-10", student_id="")  # line 6: age 0, no ID -> quarantined
    rows[5].update(school_code="9999999999", room="99")  # line 7: unknown school -> quarantined
    rows[6]["census_date"] = "10/06/2025"  # line 8: the date it describes is unreadable -> quarantined
    rows[7]["academic_year"] = "2025"  # line 9: CE year repaired
    text = csv_text("dmc_census", rows)
    text += text.splitlines()[2] + "\n"  # line 12: duplicate of line 3 (its room is 0 too)
    text += "2025-06-10,2568\n"  # line 13: too few fields
    f = ingest_path(write_delivery(tmp_path / "in" / "m", "m-1", {"dmc_census": text}), home).deliveries[0].files[0]
    assert (f.received, f.accepted, f.quarantined, f.repaired) == (12, 7, 5, 4)
    assert f.received == f.accepted + f.quarantined
    stored = [r[0] for r in _rows(home, "SELECT source_line FROM src_dmc_census ORDER BY 1")]
    quarantined = [r[0] for r in _rows(home, "SELECT DISTINCT source_line FROM quarantine ORDER BY 1")]
    assert stored == [2, 3, 4, 5, 9, 10, 11] and quarantined == [6, 7, 8, 12, 13]
    repairs = _rows(home, "SELECT source_line, column_name, rule FROM repairs ORDER BY 1, 2")
    assert repairs == [
        (3, "room", "null_range"),
        (4, "birth_date", "be_year_to_ce"), (4, "disability", "null_allowed"), (4, "nationality", "null_allowed"),
        (5, "birth_date", "null_age_plausible"),
        (9, "academic_year", "ce_year_to_be"),
    ]
    assert len({line for line, _, _ in repairs}) == f.repaired  # rows, not values
    # The warehouse keeps the birth month; the exact (repaired) date is in the vault.
    assert _rows(home, "SELECT room, disability, nationality, birth_month::VARCHAR FROM src_dmc_census "
                       "WHERE source_line IN (3, 4, 5) ORDER BY source_line") == [
        (None, "none", "TH", "2012-03-01"), (1, None, None, "2012-03-01"), (2, "none", "TH", None)]
    v = duckdb.connect(str(home.vault), read_only=True)
    try:
        assert v.execute("SELECT source_line, birth_date::VARCHAR FROM birth_records WHERE source_line IN (3, 4, 5) "
                         "ORDER BY 1").fetchall() == [(3, "2012-03-04"), (4, "2012-03-04")]
    finally:
        v.close()
    # The BE repair is logged as the month the warehouse keeps, never as delivered.
    assert _rows(home, "SELECT raw_value, repaired_value FROM repairs WHERE column_name = 'birth_date' "
                       "AND rule = 'be_year_to_ce'") == [(None, "2012-03")]
    acct = _rows(home, "SELECT received, accepted, quarantined, repaired FROM ingested_files WHERE delivery_id = 'm-1'")
    assert acct == [(12, 7, 5, 4)]


def test_ids_become_tokens_with_kinds_and_invalid_ids_are_kept_for_linkage(
    tmp_path: Path, home: EwsHome, registry: None
) -> None:
    rows = [{**valid_row("welfare_links", i), "student_id": sid}
            for i, sid in enumerate(["1-1037-02071-81-1", "1103702071811", "1103702071812", "G123456789012", "", "12X4"])]
    ingest_path(write_delivery(tmp_path / "in" / "w", "w-1", {"welfare_links": rows}), home)
    got = _rows(home, "SELECT source_line, id_kind, id_token IS NULL FROM src_welfare_links ORDER BY 1")
    assert got == [(2, "thai", False), (3, "thai", False), (4, "invalid", False), (5, "gcode", False), (6, "missing", True)]
    t = _rows(home, "SELECT id_token FROM src_welfare_links WHERE source_line IN (2, 3)")
    assert t[0] == t[1]  # dashes do not change the token
    assert _rows(home, "SELECT source_line, value FROM quarantine") == [(7, None)]  # absurd ID, value withheld


def test_the_same_delivery_twice_changes_nothing_and_changed_content_is_refused(
    tmp_path: Path, home: EwsHome, registry: None
) -> None:
    folder = write_delivery(tmp_path / "in" / "a", "a-1", {"attendance": [valid_row("attendance", 1)]})
    assert ingest_path(folder, home).deliveries[0].status == "ingested"
    before = _snapshot(home)
    again = ingest_path(folder, home).deliveries[0]
    assert again.status == "already_ingested" and again.files[0].accepted == 1
    assert _snapshot(home) == before
    write_delivery(folder, "a-1", {"attendance": [valid_row("attendance", 2)]})
    changed = ingest_path(folder, home).deliveries[0]
    assert changed.status == "refused" and "different content" in (changed.message or "")
    assert _snapshot(home) == before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty"),
        ("year_month,school_code\n2025-06,1050100001\n".encode(), "missing columns: student_id"),
        (csv_text("attendance", []).replace("\n", ",colour\n").encode(), "unknown columns: 'colour'"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        (csv_text("attendance", []).encode() + b"2025-06," + b"9" * 70000 + b"\n", "line 2: the line is longer than 64 KiB"),
        ("year_month,ชื่อ\n".encode("utf-16"), "not UTF-8"),
    ],
)
def test_a_refused_file_leaves_the_warehouse_byte_for_byte_unchanged(
    tmp_path: Path, home: EwsHome, registry: None, content: bytes, words: str
) -> None:
    before = _snapshot(home)
    folder = write_delivery(tmp_path / "in" / "bad", "bad-1",
                            {"dmc_census": [valid_row("dmc_census", 1)], "attendance": content})
    d = ingest_path(folder, home).deliveries[0]
    assert d.status == "refused" and words in (d.message or "") and "attendance.csv" in (d.message or "")
    assert _snapshot(home) == before
    assert _rows(home, "SELECT count(*) FROM src_dmc_census")[0][0] == 0


def test_unknown_files_and_a_broken_manifest_refuse_the_delivery(tmp_path: Path, home: EwsHome) -> None:
    folder = write_delivery(tmp_path / "in" / "x", "x-1", {"attendance": [valid_row("attendance", 1)]})
    (folder / "notes.txt").write_text("hello")
    (tmp_path / "in" / "y").mkdir()
    (tmp_path / "in" / "y" / "delivery.json").write_text('{"delivery_id": "y"}')
    (tmp_path / "in" / "y" / "areas.csv").write_text("")
    rep = ingest_path(tmp_path / "in", home)
    msgs = {d.delivery_id: d.message or "" for d in rep.deliveries}
    assert not rep.ok and "unknown files notes.txt" in msgs["x"]
    assert "delivered_on" in msgs["y"] and "system" in msgs["y"]
    assert not home.warehouse.exists()


def test_tis620_files_are_converted_and_reported_as_cp874(tmp_path: Path, home: EwsHome) -> None:
    text = csv_text("areas", registry_rows()["areas"])
    rep = ingest_path(write_delivery(tmp_path / "in" / "r", "r-1", {"areas": text.encode("cp874")}), home)
    f = rep.deliveries[0].files[0]
    assert (f.encoding, f.accepted) == ("cp874", 2)
    assert _rows(home, "SELECT tambon_name FROM src_areas ORDER BY 1")[0][0] == "ตำบล500101"


@pytest.mark.parametrize("crash_at", ["after_vault", "mid_warehouse"])
def test_a_crash_mid_ingest_leaves_the_warehouse_as_it_was_and_a_rerun_succeeds(
    tmp_path: Path, home: EwsHome, registry: None, crash_at: str
) -> None:
    folder = write_delivery(tmp_path / "in" / "c", "c-1", {
        "dmc_census": [valid_row("dmc_census", i) for i in range(20)],
        "attendance": [valid_row("attendance", i) for i in range(20)],
    })
    counts = "SELECT (SELECT count(*) FROM src_dmc_census), (SELECT count(*) FROM deliveries), (SELECT count(*) FROM ingested_files)"
    before = _rows(home, counts)
    # The fault comes from the test's runner, not from the production path (tests/support/crash_ingest.py).
    proc = subprocess.run([sys.executable, "-m", "tests.support.crash_ingest", str(folder), str(home.root), crash_at],
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == -9  # killed, no cleanup ran
    assert _rows(home, counts) == before
    rep = ingest_path(folder, home)
    assert rep.deliveries[0].status == "ingested"
    assert _rows(home, counts)[0][0] == 20
    v = duckdb.connect(str(home.vault), read_only=True)
    assert v.execute("SELECT count(*) FROM name_records WHERE delivery_id = 'c-1'").fetchall()[0][0] == 20
    v.close()


def test_the_exact_birth_date_is_stored_only_in_the_vault_and_the_warehouse_keeps_its_month(
    tmp_path: Path, home: EwsHome, registry: None
) -> None:
    days = ["2012-01-01", "2012-03-04", "2011-06-10", "2011-06-30", "2010-12-31", "2013-02-28"]
    files = {s: [{**valid_row(s, i), "birth_date": days[i]} for i in range(len(days))]
             for s, src in SOURCES.items() if "birth_date" in src.column_names}
    assert len(files) == 4  # census, other systems, workforce training, TZD cases
    ingest_path(write_delivery(tmp_path / "in" / "b", "b-1", files), home)
    con = connect(home)
    try:
        for source in files:
            cols = {r[0] for r in con.execute(f"DESCRIBE src_{source}").fetchall()}
            assert "birth_date" not in cols and "birth_month" in cols
            got = con.execute(f"SELECT source_line, birth_month::VARCHAR FROM src_{source} ORDER BY 1").fetchall()
            assert got == [(i + 2, d[:8] + "01") for i, d in enumerate(days)]
        # No date column anywhere in the warehouse holds a birth date to the day.
        dates = con.execute("SELECT table_name, column_name FROM duckdb_columns() "
                            "WHERE database_name = 'warehouse' AND data_type = 'DATE'").fetchall()
        exact = {dt_ for dt_ in days if dt_[8:] != "01"}
        for table, col in dates:
            found = {r[0] for r in con.execute(f'SELECT DISTINCT "{col}"::VARCHAR FROM "{table}"').fetchall()}
            assert not (found & exact), f"{table}.{col} holds exact birth dates"
        assert len(dates) > 10  # the scan saw the warehouse's date columns (it can fail)
    finally:
        con.close()
    v = duckdb.connect(str(home.vault), read_only=True)
    try:
        stored = v.execute("SELECT source, source_line, birth_date::VARCHAR FROM birth_records ORDER BY 1, 2").fetchall()
    finally:
        v.close()
    assert stored == [(s, i + 2, d) for s in sorted(files) for i, d in enumerate(days)]


def test_a_warehouse_that_still_holds_birth_dates_is_refused_with_what_to_do(tmp_path: Path, home: EwsHome) -> None:
    from features.linkage.link import link

    home.ensure()
    home.vault_dir.mkdir(parents=True, exist_ok=True)
    duckdb.connect(str(home.vault)).close()
    old = duckdb.connect(str(home.warehouse))
    old.execute("CREATE TABLE src_dmc_census (delivery_id VARCHAR, source_line BIGINT, birth_date DATE)")
    old.close()
    before = home.warehouse.read_bytes()
    # Two deliveries in one run: the second must be refused too, not loaded into the old warehouse.
    write_delivery(tmp_path / "in" / "a", "a-1", {"areas": registry_rows()["areas"]}, delivered_on="2025-01-01")
    write_delivery(tmp_path / "in" / "b", "b-1", {"schools": registry_rows()["schools"]}, delivered_on="2025-02-01")
    rep = ingest_path(tmp_path / "in", home)
    assert [d.status for d in rep.deliveries] == ["refused", "refused"]
    for d in rep.deliveries:
        assert "src_dmc_census still hold birth_date" in (d.message or "")
        assert "ews ingest" in (d.message or "")
    assert home.warehouse.read_bytes() == before
    with pytest.raises(ValueError, match="built before the birth date moved to the identity vault"):
        link(home)


def test_no_raw_id_or_name_is_written_outside_the_vault(tmp_path: Path, home: EwsHome, registry: None) -> None:
    files = {s: [valid_row(s, i) for i in range(1, 6)] for s in SOURCES if s not in ("areas", "schools")}
    files["tzd_cases"].append({**valid_row("tzd_cases", 9), "birth_date": "bad"})  # ID valid: birth date nulled
    files["tzd_cases"].append({**valid_row("tzd_cases", 8), "birth_date": "bad", "student_id": ""})  # quarantined
    files["dmc_census"].append({**valid_row("dmc_census", 7), "room": "99", "sex": "X"})  # two values nulled
    files["dmc_census"].append({**valid_row("dmc_census", 8), "student_id": "77X7712345678"})  # ID nulled, row kept
    files["exits"] = csv_text("exits", files["exits"]) + "x,y\n"  # wrong field count
    ingest_path(write_delivery(tmp_path / "in" / "p", "p-1", files), home)
    secrets: set[str] = set()
    for rows in files.values():
        for r in rows if isinstance(rows, list) else []:
            secrets |= {r[k] for k in ("student_id", "first_name", "last_name") if r.get(k)}
    assert len(secrets) > 10
    for p in home.root.rglob("*"):
        if p.is_file() and home.vault_dir not in p.parents:
            data = p.read_bytes()
            for s in secrets:
                assert s.encode() not in data, f"{s!r} found in {p}"
    assert oct(home.vault_dir.stat().st_mode)[-3:] == "700"
    assert oct(home.vault.stat().st_mode)[-3:] == "600"
    assert not list((home.vault_dir / "tmp").glob("p-1*"))  # scratch removed


def test_the_command_prints_per_file_accounting_as_json(tmp_path: Path, home: EwsHome) -> None:
    folder = write_delivery(tmp_path / "in" / "r", "r-1", registry_rows())
    proc = subprocess.run([sys.executable, "-m", "ews", "ingest", str(folder), "--json", "--home", str(home.root)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    f = out["deliveries"][0]["files"][0]
    assert set(f) == {"source_file", "received", "accepted", "quarantined", "repaired", "encoding"}
    assert out["totals"]["received"] == out["totals"]["accepted"] + out["totals"]["quarantined"] == 4
