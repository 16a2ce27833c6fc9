"""The structural pre-pass: encodings, refusals and exact line numbers, whatever the block size."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from features.ingest.reader import FileRefused, read_file

COLS = ("a", "b")


def _read(tmp_path: Path, content: bytes, block: int = 1 << 20, max_line: int = 64 * 1024):
    p = tmp_path / "x.csv"
    p.write_bytes(content)
    return read_file(p, tmp_path / "scratch", expected=COLS, keep_text=True, block_bytes=block, max_line_bytes=max_line)


def _rows_with_lines(r) -> list[tuple]:
    """What ingestion stages: DuckDB's strict read plus the line numbers from the breakpoints."""
    con = duckdb.connect()
    nl = f", new_line = '{r.new_line}'" if r.new_line else ""
    con.execute(
        f"CREATE TABLE raw AS SELECT * FROM read_csv('{r.read_path}', columns = {{'a': 'VARCHAR', 'b': 'VARCHAR'}}, "
        f"header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, strict_mode = true{nl})"
    )
    con.execute("CREATE TABLE bp (k BIGINT, off BIGINT)")
    for k, off in zip(r.bp_rowid.tolist(), r.bp_offset.tolist()):
        con.execute("INSERT INTO bp VALUES (?, ?)", [k, off])
    return con.execute(
        "SELECT r.rowid + 2 + coalesce(b.off, 0), r.a, r.b FROM raw r ASOF LEFT JOIN bp b ON r.rowid >= b.k ORDER BY 1"
    ).fetchall()


MESSY = 'a,b\r\nx,"y\nz"\r\n\n"",\np\rq,r\n"a"b,c\n1,2,3\nq,"r"""\nlast,one'


@pytest.mark.parametrize("block", [3, 7, 64, 1 << 20])
def test_line_numbers_are_physical_lines_whatever_the_block_size(tmp_path: Path, block: int) -> None:
    r = _read(tmp_path, MESSY.encode(), block=block)
    assert r.received == 7  # the blank line 4 is not a row
    assert list(r.bad_lines) == [6, 7, 8]  # stray CR, bad quoting, three fields
    assert [int(c) for c in r.bad_codes] == [3, 2, 1]
    assert _rows_with_lines(r) == [(2, "x", "y\nz"), (5, None, None), (9, "q", 'r"'), (10, "last", "one")]


def test_a_clean_utf8_file_is_read_in_place_without_a_copy(tmp_path: Path) -> None:
    r = _read(tmp_path, "\ufeffa,b\r\n1,ก\r\n2,\"ข\r\nค\"\r\n3,4\r\n".encode())
    assert r.read_path.name == "x.csv" and r.encoding == "utf-8"
    assert _rows_with_lines(r) == [(2, "1", "ก"), (3, "2", "ข\r\nค"), (5, "3", "4")]


def test_tis620_thai_text_is_detected_and_converted(tmp_path: Path) -> None:
    r = _read(tmp_path, "a,b\nสมชาย,ใจดี\nโรงเรียน,บ้านนา\n".encode("cp874"), block=5)
    assert r.encoding == "cp874"
    assert _rows_with_lines(r) == [(2, "สมชาย", "ใจดี"), (3, "โรงเรียน", "บ้านนา")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"a,b,c\n1,2,3\n", "unknown columns: 'c'"),
        (b"a\n1\n", "missing columns: b"),
        (b"a,a\n1,2\n", "names a column twice"),
        (b"a,b\n1,2\n3,\x004\n", "line 3: binary content"),
        ("a,b\né,ü\n".encode("latin-1"), "line 2: the file is not UTF-8"),
        (b"a,b\n1,2\n\"3,4\n5,6\n", "line 3: a double quote opens a quoted field that is never closed"),
        (b"a,b\n1,2\n" + b"x" * 300 + b",1\n", "line 3: the line is longer than 256 bytes"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
    ],
)
def test_files_that_are_not_contract_csv_are_refused_naming_file_and_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    with pytest.raises(FileRefused) as exc:
        _read(tmp_path, content, block=4, max_line=256)
    assert "x.csv" in str(exc.value) and expected in str(exc.value)


def test_rejected_lines_of_personal_data_sources_keep_no_text(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_bytes(b"a,b\n1103702071811,2,3\n")
    r = read_file(p, tmp_path / "s", expected=COLS, keep_text=False)
    assert r.bad_text is None and list(r.bad_lines) == [2]
