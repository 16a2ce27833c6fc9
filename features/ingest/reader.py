"""The structural pre-pass over one delivered CSV file: bytes in, line numbers and problems out.

Why a pre-pass at all: DuckDB's CSV reader gives no line number for the rows it accepts, and a
quoted field holding a line break makes "row number + 1" wrong. Data officers need the *physical*
line of every quarantined row (header = line 1) to find it in their file. This pass finds every
record boundary (a newline outside quotes; quote state by parity, which RFC 4180's escaped `""`
keeps), the line each record starts on, and the records DuckDB could not read strictly.

It is vectorised with numpy over blocks of the file (no Python loop over rows): memory stays
bounded whatever the file size, and work is proportional to the number of newlines, quotes and
commas found, not to a per-byte cumulative sum.

The k-th record DuckDB reads (its `rowid` in the staging table, 0-based) starts on line
`k + 2 + offset`, where `offset` changes only after a multi-line record, a blank line or a
record removed here. Those few change points are returned as `breakpoints` and joined back in SQL.

It also decides, for the whole file:
- encoding: UTF-8 (a BOM is allowed), else Thai TIS-620 / Windows-874 (converted), else refused;
- refusals: NUL bytes (binary content), empty file, header problems, lines > 64 KiB, a quote that
  is never closed;
- structural quarantine (per record, with its line): wrong number of fields, malformed quoting
  (a quote inside an unquoted field, text after a closing quote), a stray carriage return.
Blank lines carry no data and are not rows.

When the file is clean UTF-8 with one line-ending style, DuckDB reads the delivered file itself.
Otherwise a private copy is written (converted to UTF-8, rejected records and blank lines removed,
line endings made LF); it lives in the vault's scratch folder because it holds personal data.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAX_LINE_BYTES = 64 * 1024  # a physical line longer than this is refused
MAX_RECORD_BYTES = 4 * MAX_LINE_BYTES  # a (multi-line) record longer than this: unclosed quote
BLOCK_BYTES = 16 * 1024 * 1024  # bytes read per step; peak memory is a small multiple of this

NL, CR, QUOTE, COMMA = 10, 13, 34, 44

# Structural problem codes -> (rule, reason). {n} = fields found, {k} = fields in the header.
STRUCTURAL_RULES: dict[int, tuple[str, str]] = {
    1: ("field_count", "the line has {n} fields, the header has {k}"),
    2: ("quoting", "malformed quoting: a double quote inside an unquoted field, or text after a closing quote"),
    3: ("stray_cr", "a carriage return (CR) outside quotes that does not end the line"),
}


class FileRefused(Exception):
    """The file cannot be ingested at all; the message names the file (and line where known)."""


@dataclass
class ReadResult:
    """What the pre-pass learned about one file."""

    path: Path
    read_path: Path  # what DuckDB should read: the delivered file itself, or the clean copy
    new_line: str | None  # "\\n" when known to be LF only; None: let DuckDB see CRLF itself
    encoding: str  # "utf-8" or "cp874"
    sha256: str
    header: list[str]
    received: int = 0  # data records (non-blank, after the header; a multi-line record counts once)
    readable: int = 0  # records handed to DuckDB (received minus structural quarantine)
    # (rowid, offset) change points: line = rowid + 2 + offset of the last breakpoint <= rowid.
    bp_rowid: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    bp_offset: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # Structural quarantine, one entry per rejected record.
    bad_lines: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    bad_codes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))
    bad_fields: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    bad_text: list[str] | None = None  # raw record text (only for sources without personal data)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n:,} bytes"


class _NeedCopy(Exception):
    pass


class _NotUtf8(Exception):
    def __init__(self, offset: int):
        self.offset = offset


def _line_of_offset(path: Path, offset: int) -> int:
    """1-based physical line holding byte `offset` of the raw file."""
    line, done = 1, 0
    with open(path, "rb") as f:
        while done < offset:
            chunk = f.read(min(BLOCK_BYTES, offset - done))
            if not chunk:
                break
            line += chunk.count(b"\n")
            done += len(chunk)
    return line


def _first_nul(path: Path) -> int | None:
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK_BYTES):
            if b"\x00" in chunk:
                return done + chunk.index(b"\x00")
            done += len(chunk)
    return None


def _looks_thai_single_byte(path: Path) -> bool:
    """TIS-620 / Windows-874 heuristic: the high bytes are mostly Thai letters (0xA1-0xFB) and
    some are consonants (0xA1-0xCE). Latin-1, UTF-16 or Shift-JIS text fails it."""
    high = thai = consonants = 0
    with open(path, "rb") as f:
        while chunk := f.read(BLOCK_BYTES):
            a = np.frombuffer(chunk, dtype=np.uint8)
            high += int(np.count_nonzero(a >= 0x80))
            thai += int(np.count_nonzero((a >= 0xA1) & (a <= 0xFB)))
            consonants += int(np.count_nonzero((a >= 0xA1) & (a <= 0xCE)))
    return high > 0 and thai >= 0.9 * high and consonants > 0


def _parse_header(raw: bytes, name: str) -> list[str]:
    text = raw.decode("utf-8").removeprefix("\ufeff")  # a UTF-8 byte-order mark is harmless
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        rows = []
    if len(rows) != 1:
        raise FileRefused(f"{name}, line 1: the header row is not valid CSV")
    return [c.strip() for c in rows[0]]


def _check_header(name: str, header: list[str], expected: tuple[str, ...]) -> None:
    seen: set[str] = set()
    dup = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if dup:
        raise FileRefused(f"{name}, line 1: the header names a column twice: {', '.join(dup)}")
    unknown = [h for h in header if h not in expected]
    missing = [c for c in expected if c not in header]
    problems = []
    if missing:
        problems.append("missing columns: " + ", ".join(missing))
    if unknown:
        shown = [u if len(u) <= 40 else u[:40] + "…" for u in unknown[:10]]
        problems.append("unknown columns: " + ", ".join(repr(u) for u in shown))
    if problems:
        raise FileRefused(f"{name}, line 1: " + "; ".join(problems) + " (see `ews contract`)")


def read_file(
    path: Path,
    scratch: Path,
    *,
    expected: tuple[str, ...],
    keep_text: bool,
    max_line_bytes: int = MAX_LINE_BYTES,
    block_bytes: int = BLOCK_BYTES,
) -> ReadResult:
    """Check `path` structurally; write a clean copy into folder `scratch` only when needed.

    Every contract column must be in the header (optional columns may be empty, but the column is
    there); no other column may be. Raises FileRefused with a message naming the file and line.
    """
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileRefused(f"{path.name}, line 1: the file is UTF-16, not UTF-8; save it as UTF-8 CSV")
    try:
        return _run(path, scratch, "utf-8", expected, keep_text, max_line_bytes, block_bytes)
    except _NotUtf8 as exc:
        line = _line_of_offset(path, exc.offset)
        nul = _first_nul(path)
        if nul is not None:
            raise FileRefused(
                f"{path.name}, line {_line_of_offset(path, nul)}: binary content (a NUL byte); "
                "this is not a CSV text file"
            ) from None
        if not _looks_thai_single_byte(path):
            raise FileRefused(
                f"{path.name}, line {line}: the file is not UTF-8 and does not look like Thai "
                "TIS-620 / Windows-874 either; save it as UTF-8 CSV and deliver it again"
            ) from None
    return _run(path, scratch, "cp874", expected, keep_text, max_line_bytes, block_bytes)


def _run(path: Path, scratch: Path, encoding: str, expected: tuple[str, ...], keep_text: bool,
         max_line_bytes: int, block_bytes: int) -> ReadResult:
    try:
        return _Reader(path, scratch, encoding, expected, keep_text, max_line_bytes, block_bytes).run()
    except _NeedCopy:
        reader = _Reader(path, scratch, encoding, expected, keep_text, max_line_bytes, block_bytes)
        reader.force_copy = True
        return reader.run()


class _Reader:
    """One pass over one file in one assumed encoding (state carried between blocks)."""

    def __init__(
        self, path: Path, scratch: Path, encoding: str, expected: tuple[str, ...],
        keep_text: bool, max_line_bytes: int, block_bytes: int,
    ) -> None:
        self.path, self.name, self.encoding = path, path.name, encoding
        self.expected, self.keep_text = expected, keep_text
        self.max_line, self.block = max_line_bytes, block_bytes
        self.max_record = 4 * max_line_bytes
        self.copy_path = scratch / (path.stem + ".clean.csv")
        self.copy: BinaryIO | None = None
        self.force_copy = False
        self.consumed = 0  # bytes of (UTF-8) content fully processed and, in UTF-8 mode, raw bytes
        self.line_base = 1
        self.ordinal = 0  # records handed to DuckDB so far
        self.prev_offset = 0
        self.endings: set[str] = set()
        self.result: ReadResult | None = None
        self.bps: list[tuple[np.ndarray, np.ndarray]] = []
        self.bad: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.bad_text: list[str] | None = [] if keep_text else None

    def run(self) -> ReadResult:
        sha = hashlib.sha256()
        utf8 = codecs.getincrementaldecoder("utf-8")()
        raw_offset = 0
        carry = b""
        try:
            with open(self.path, "rb") as f:
                while True:
                    raw = f.read(self.block)
                    final = not raw
                    sha.update(raw)
                    if b"\x00" in raw:  # before any decoding: binary files often start as "text"
                        line = _line_of_offset(self.path, raw_offset + raw.index(b"\x00"))
                        raise FileRefused(
                            f"{self.name}, line {line}: binary content (a NUL byte); this is not a CSV text file"
                        )
                    if self.encoding == "utf-8":
                        # ASCII is UTF-8 (unless a character split across reads is still open):
                        # most big files are all ASCII, and the check is much cheaper than decoding.
                        if not raw.isascii() or utf8.getstate()[0]:
                            try:
                                # Validation only: a character split across two reads is handled
                                # by the incremental decoder.
                                utf8.decode(raw, final=final)
                            except UnicodeDecodeError as exc:
                                raise _NotUtf8(raw_offset + exc.start) from None
                        chunk = raw
                    else:
                        try:
                            chunk = raw.decode("cp874").encode("utf-8")
                        except UnicodeDecodeError as exc:
                            line = _line_of_offset(self.path, raw_offset + exc.start)
                            raise FileRefused(
                                f"{self.name}, line {line}: byte 0x{raw[exc.start]:02X} is not a "
                                "character of Thai Windows-874 (the file is neither UTF-8 nor "
                                "TIS-620); save it as UTF-8 CSV"
                            ) from None
                    raw_offset += len(raw)
                    buf_bytes = carry + chunk
                    if not buf_bytes:
                        break
                    cut = self._block(buf_bytes, final)
                    carry = buf_bytes[cut:]
                    if final:
                        break
        finally:
            if self.copy is not None:
                self.copy.close()
        if self.result is None:
            raise FileRefused(f"{self.name}: the file is empty (no header row on line 1)")
        r = self.result
        r.sha256 = sha.hexdigest()
        if self.copy is not None or self.encoding != "utf-8":
            r.read_path, r.new_line = self.copy_path, "\\n"
        elif self.endings <= {"lf"}:
            r.new_line = "\\n"
        if self.bps:
            r.bp_rowid = np.concatenate([b[0] for b in self.bps])
            r.bp_offset = np.concatenate([b[1] for b in self.bps])
        if self.bad:
            r.bad_lines = np.concatenate([b[0] for b in self.bad])
            r.bad_codes = np.concatenate([b[1] for b in self.bad])
            r.bad_fields = np.concatenate([b[2] for b in self.bad])
        r.bad_text = self.bad_text
        r.readable = self.ordinal
        return r

    def _refuse_long(self, buf: np.ndarray, nl: np.ndarray) -> None:
        starts = np.concatenate(([0], nl + 1))
        ends = np.concatenate((nl, [len(buf)]))
        too_long = np.flatnonzero(ends - starts > self.max_line)
        if len(too_long):
            raise FileRefused(
                f"{self.name}, line {self.line_base + int(too_long[0])}: the line is longer than "
                f"{_size(self.max_line)}; this is not a CSV file of the contract"
            )

    def _block(self, buf_bytes: bytes, final: bool) -> int:
        """Process the complete records of `buf_bytes`; return where the unprocessed rest starts."""
        buf = np.frombuffer(buf_bytes, dtype=np.uint8)
        n = len(buf)
        if b"\x00" in buf_bytes:
            line = self.line_base + buf_bytes.count(b"\n", 0, buf_bytes.index(b"\x00"))
            raise FileRefused(f"{self.name}, line {line}: binary content (a NUL byte); this is not a CSV text file")
        nl = np.flatnonzero(buf == NL)
        self._refuse_long(buf, nl)
        qpos = np.flatnonzero(buf == QUOTE)  # a block always starts outside quotes

        def inside(pos: np.ndarray) -> np.ndarray:
            """True where a position lies inside quotes (an odd number of quotes at or before it)."""
            if len(qpos) == 0:
                return np.zeros(len(pos), dtype=bool)
            return (np.searchsorted(qpos, pos, side="right") & 1).astype(bool)

        ends = nl[~inside(nl)]
        if final:
            if len(qpos) & 1:
                line = self.line_base + buf_bytes.count(b"\n", 0, int(qpos[-1]))
                raise FileRefused(
                    f"{self.name}, line {line}: a double quote opens a quoted field that is never "
                    "closed before the end of the file; fix the quoting at this line"
                )
            if buf[-1] != NL:
                ends = np.concatenate((ends, [n]))  # the last record has no newline
            cut = n
        else:
            if len(ends) == 0:
                if n > self.max_record:
                    raise FileRefused(
                        f"{self.name}, line {self.line_base}: a record runs over more than "
                        f"{_size(self.max_record)} (a double quote is probably not closed); "
                        "fix the quoting near this line"
                    )
                return 0  # read more before deciding anything
            cut = int(ends[-1]) + 1
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        ends = ends.astype(np.int64)  # exclusive of the newline
        if len(ends) and int(np.max(ends - starts)) > self.max_record:
            k = int(np.argmax(ends - starts > self.max_record))
            line = self.line_base + int(np.searchsorted(nl, starts[k]))
            raise FileRefused(
                f"{self.name}, line {line}: a record runs over more than {_size(self.max_record)} "
                "(a double quote opened here is probably not closed); fix the quoting at this line"
            )
        lines = self.line_base + np.searchsorted(nl, starts)  # newlines before each start
        has_cr = np.zeros(len(ends), dtype=bool)
        nonempty = ends > starts
        has_cr[nonempty] = buf[ends[nonempty] - 1] == CR
        content_ends = ends - has_cr
        blank = content_ends == starts
        terminated = ends < n
        if np.any(has_cr & terminated):
            self.endings.add("crlf")
        if np.any(~has_cr & terminated & ~blank):
            self.endings.add("lf")

        first = self.result is None
        if first:
            if blank[0]:
                raise FileRefused(f"{self.name}: the file is empty (no header row on line 1)")
            header = _parse_header(buf_bytes[starts[0]: content_ends[0]], self.name)
            _check_header(self.name, header, self.expected)
            self.result = ReadResult(
                path=self.path, read_path=self.path, new_line=None, encoding=self.encoding,
                sha256="", header=header,
            )
            self.n_fields = len(header)

        # Fields per record: commas outside quotes between start and content end.
        cpos = np.flatnonzero(buf == COMMA)
        if len(qpos):
            cpos = cpos[~inside(cpos)]
        fields = np.searchsorted(cpos, content_ends) - np.searchsorted(cpos, starts) + 1
        code = np.zeros(len(starts), dtype=np.int8)
        code[fields != self.n_fields] = 1
        if len(qpos):
            opening = (np.arange(len(qpos)) & 1) == 0  # block starts outside quotes
            prev = np.where(qpos > 0, buf[np.maximum(qpos - 1, 0)], NL)
            nxt = np.where(qpos + 1 < n, buf[np.minimum(qpos + 1, n - 1)], NL)
            # An opening quote begins a field (after a comma, at a record start, or right after a
            # closing quote: RFC 4180's escaped ""); a closing quote ends it.
            bad_open = opening & ~((prev == COMMA) | (prev == NL) | (prev == QUOTE))
            bad_close = ~opening & ~((nxt == COMMA) | (nxt == NL) | (nxt == CR) | (nxt == QUOTE))
            self._mark(code, ends, qpos[bad_open | bad_close], 2)
        crpos = np.flatnonzero(buf == CR)
        if len(crpos):
            crpos = crpos[~inside(crpos)]
            nxt = np.where(crpos + 1 < n, buf[np.minimum(crpos + 1, n - 1)], NL)
            self._mark(code, ends, crpos[nxt != NL], 3)

        is_data = ~blank
        if first:
            is_data[0] = False
        r = self.result
        assert r is not None
        r.received += int(np.count_nonzero(is_data))
        bad = is_data & (code != 0)
        keep = is_data & (code == 0)
        if np.any(bad):
            self.bad.append((lines[bad], code[bad], fields[bad]))
            if self.bad_text is not None:
                for s, e in zip(starts[bad], content_ends[bad]):  # rejected records only
                    self.bad_text.append(buf_bytes[s:e].decode("utf-8", "replace")[:500])
        mixed = "crlf" in self.endings and "lf" in self.endings
        if self.copy is None and (
            self.force_copy or self.encoding != "utf-8" or np.any(bad) or np.any(blank) or mixed
        ):
            self._start_copy()
        if self.copy is not None:
            self._write_kept(buf, starts, content_ends, keep | (np.arange(len(keep)) == 0) & first)
        # Breakpoints of the line offset over the records DuckDB will read.
        k_lines = lines[keep]
        if len(k_lines):
            ords = self.ordinal + np.arange(len(k_lines), dtype=np.int64)
            offs = k_lines - ords - 2
            prev_offs = np.concatenate(([self.prev_offset], offs[:-1]))
            change = offs != prev_offs
            if np.any(change):
                self.bps.append((ords[change], offs[change]))
            self.prev_offset = int(offs[-1])
            self.ordinal += len(k_lines)
        self.line_base += int(np.searchsorted(nl, cut))
        self.consumed += cut
        return cut

    @staticmethod
    def _mark(code: np.ndarray, ends: np.ndarray, positions: np.ndarray, value: int) -> None:
        if len(positions) == 0:
            return
        rec = np.searchsorted(ends, positions, side="left")
        rec = rec[rec < len(code)]  # positions past the last complete record wait for the next block
        code[rec] = np.where(code[rec] == 0, value, code[rec])

    def _start_copy(self) -> None:
        """From now on DuckDB reads a copy. Blocks already processed were passed through as they
        are, so a copy started mid-file restarts the pass in copy mode (only files with problems
        pay for the second pass)."""
        if self.consumed:
            raise _NeedCopy()
        self.copy_path.parent.mkdir(parents=True, exist_ok=True)
        self.copy = open(self.copy_path, "wb")

    def _write_kept(self, buf: np.ndarray, starts: np.ndarray, content_ends: np.ndarray, keep: np.ndarray) -> None:
        """Write kept records, LF-terminated, dropping the CR of CRLF endings (a byte mask)."""
        assert self.copy is not None
        if not np.any(keep):
            return
        # Per record, keep bytes [start, content_end) and then one newline.
        mask = np.zeros(len(buf) + 1, dtype=np.int8)
        np.add.at(mask, starts[keep], 1)
        np.add.at(mask, content_ends[keep], -1)
        keep_bytes = np.cumsum(mask[:-1], dtype=np.int8).astype(bool)
        pieces = np.empty(int(keep_bytes.sum()) + int(np.count_nonzero(keep)), dtype=np.uint8)
        # Destination: each kept record is followed by one LF.
        lens = (content_ends - starts)[keep] + 1
        dst_starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
        pieces[dst_starts + lens - 1] = NL
        body = np.ones(len(pieces), dtype=bool)
        body[dst_starts + lens - 1] = False
        pieces[body] = buf[keep_bytes]
        self.copy.write(pieces.tobytes())
