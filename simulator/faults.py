"""Faults real deliveries have, injected row by row at configurable rates and recorded.

Each row carries a bit mask of what was done to it (truth/records.parquet `fault_mask`):

  1 id_typo            a digit changed or two adjacent digits swapped (usually breaks the check digit)
  2 id_missing         the ID left empty
  4 name_variant       a first or last name spelt differently (tone mark, ์, ศ/ส/ษ, ณ/น, ธ/ท, ร/ล, vowels)
  8 be_birth_year      birth date written with a Buddhist-Era year (2555-03-04)
 16 ce_academic_year   academic year written in CE (2025 instead of 2568)
 32 duplicate_row      an exact copy of the line before it
 64 impossible_value   days present > school days, GPA 5.2, negative income, birth date = census date
128 late_delivery      the row's delivery came 2-8 weeks late (set by the writer)
256 malformed_file     the row is in a malformed file (set by the writer)
512 stale_id           not a fault: the row still uses the child's G-code after a 13-digit ID was issued

Rows that never arrive carry no bit (there is no row): they are listed in truth/omissions.parquet
with a reason — a school's screenings never sent (`missing_screening`), an exit row the school never
filed, at a rate per exit type (`exit_row_missing`, records.Records.exit_rows), a school's census
file refused by DMC (`census_refused`, records.Records.emit_census_rows).

Faults draw from their own random stream, so switching them off leaves the world and the
ceiling unchanged.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import SOURCES
from features.ids import BE_OFFSET
from simulator.config import FaultConfig
from simulator.names import given_names, spelling_variants, surnames

FAULT_BITS: dict[str, int] = {
    "id_typo": 1, "id_missing": 2, "name_variant": 4, "be_birth_year": 8, "ce_academic_year": 16,
    "duplicate_row": 32, "impossible_value": 64, "late_delivery": 128, "malformed_file": 256, "stale_id": 512,
}
# Faults that make a row break the contract as written (ingestion repairs BE/CE years and logs them).
CONTRACT_BREAKING = ("id_typo", "be_birth_year", "ce_academic_year", "impossible_value", "malformed_file")
OTHER_SYSTEM_SOURCES = ("other_enrolment", "ewe_training", "tzd_cases")
N_VARIANTS = 3


def decode_faults(mask: int) -> list[str]:
    """Names of the faults in a mask."""
    return [k for k, b in FAULT_BITS.items() if mask & b]


class NameBook:
    """All names as one vocabulary: canonical names first, then N_VARIANTS misspellings of each."""

    def __init__(self) -> None:
        male, female, sur = given_names("M"), given_names("F"), surnames()
        canon = male + female + sur
        self.male = np.arange(0, len(male), dtype=np.int32)
        self.female = np.arange(len(male), len(male) + len(female), dtype=np.int32)
        self.surname = np.arange(len(male) + len(female), len(canon), dtype=np.int32)
        self.n_canon = len(canon)
        variants = [v for name in canon for v in spelling_variants(name, N_VARIANTS)]
        self.vocab = pa.array(canon + variants, type=pa.string())

    def variant(self, idx: np.ndarray, k: np.ndarray) -> np.ndarray:
        return (self.n_canon + idx.astype(np.int64) * N_VARIANTS + k).astype(np.int32)

    def text(self, idx: np.ndarray) -> pa.Array:
        return self.vocab.take(pa.array(idx, type=pa.int32()))


def _typo(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Change one digit or swap two adjacent digits of 13-character IDs (bytes)."""
    b = ids.copy().view(np.uint8).reshape(-1, 13)
    n = len(b)
    start = np.where(b[:, 0] == ord("G"), 1, 0)
    pos = start + rng.integers(0, 12, n)
    pos = np.minimum(pos, 12)
    swap = rng.random(n) < 0.4
    rows = np.arange(n)
    # swap with the next digit (or the previous one at the end); equal digits fall back to a change
    other = np.where(pos < 12, pos + 1, pos - 1)
    other = np.maximum(other, start)
    a, c = b[rows, pos].copy(), b[rows, other].copy()
    do_swap = swap & (a != c)
    b[rows[do_swap], pos[do_swap]] = c[do_swap]
    b[rows[do_swap], other[do_swap]] = a[do_swap]
    ch = ~do_swap
    delta = rng.integers(1, 10, n).astype(np.uint8)
    b[rows[ch], pos[ch]] = ((b[rows[ch], pos[ch]] - 48 + delta[ch]) % 10 + 48).astype(np.uint8)
    return b.view("S13").ravel()


def _date_strings(dates: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(dates.astype("datetime64[D]"), unit="D")


def inject(source: str, cols: dict[str, object], mask: np.ndarray, person_id: np.ndarray,
           rng: np.random.Generator, f: FaultConfig, names: NameBook,
           describes_date: np.ndarray | None = None) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Apply the row faults to one batch of rows of `source` and return it as an Arrow table.

    `cols` holds logical columns: student_id as S13 bytes (b"" = none), first/last names as
    NameBook indices, dates as datetime64[D]; everything else as numpy or Arrow arrays. Returns
    the table in contract column order (duplicates inserted right after their originals), the
    person id and the fault mask of every output row.
    """
    spec = SOURCES[source]
    n = len(person_id)
    mask = mask.astype(np.int32, copy=True)
    mult = f.other_system_id_multiplier if source in OTHER_SYSTEM_SOURCES else 1.0
    out: dict[str, object] = dict(cols)

    if "student_id" in cols:
        ids = np.asarray(cols["student_id"], dtype="S13").copy()
        has = ids != b""
        typo = has & (rng.random(n) < f.id_typo * mult)
        if typo.any():
            ids[typo] = _typo(ids[typo], rng)
            mask[typo] |= FAULT_BITS["id_typo"]
        missing = has & ~typo & (rng.random(n) < f.id_missing * mult)
        ids[missing] = b""
        mask[missing] |= FAULT_BITS["id_missing"]
        mask[~has] |= FAULT_BITS["id_missing"]
        arr = pa.array(ids).cast(pa.string())
        empty = ids == b""
        out["student_id"] = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), arr) if empty.any() else arr

    if "first_name" in cols:
        first = np.asarray(cols["first_name"], dtype=np.int32).copy()
        last = np.asarray(cols["last_name"], dtype=np.int32).copy()
        var = rng.random(n) < f.name_variant
        if var.any():
            which = rng.random(n) < 0.5
            k = rng.integers(0, N_VARIANTS, n)
            sel_f, sel_l = var & which, var & ~which
            first[sel_f] = names.variant(first[sel_f], k[sel_f])
            last[sel_l] = names.variant(last[sel_l], k[sel_l])
            mask[var] |= FAULT_BITS["name_variant"]
        out["first_name"] = names.text(first)
        out["last_name"] = names.text(last)

    impossible = rng.random(n) < f.impossible_value
    if source not in ("attendance", "grades", "cct_screening", "dmc_census"):
        impossible[:] = False
    if "birth_date" in cols:
        bd = np.asarray(cols["birth_date"], dtype="datetime64[D]").copy()
        if source == "dmc_census" and impossible.any():
            bd[impossible] = np.asarray(cols["census_date"], dtype="datetime64[D]")[impossible]
        be = rng.random(n) < f.be_birth_year
        be &= ~impossible
        if be.any():
            s = _date_strings(bd).astype(object)
            years = bd[be].astype("datetime64[Y]").astype(int) + 1970 + BE_OFFSET
            s[be] = [f"{y}{rest[4:]}" for y, rest in zip(years, s[be])]
            out["birth_date"] = pa.array(s, type=pa.string())
            mask[be] |= FAULT_BITS["be_birth_year"]
        else:
            out["birth_date"] = pa.array(bd)
    if "academic_year" in cols:
        ay = np.asarray(cols["academic_year"], dtype=np.int32).copy()
        ce = rng.random(n) < f.ce_academic_year
        ay[ce] -= BE_OFFSET
        mask[ce] |= FAULT_BITS["ce_academic_year"]
        out["academic_year"] = ay
    if impossible.any():
        if source == "attendance":
            sd = np.asarray(cols["school_days"])
            dp = np.asarray(cols["days_present"]).copy()
            dp[impossible] = sd[impossible] + rng.integers(1, 4, int(impossible.sum()))
            out["days_present"] = dp
        elif source == "grades":
            g = np.asarray(cols["gpa"], dtype=float).copy()
            g[impossible] = rng.choice([5.2, 4.6, 6.0], int(impossible.sum()))
            out["gpa"] = g
        elif source == "cct_screening":
            inc = np.asarray(cols["income_per_person"]).copy()
            inc[impossible] = -np.maximum(inc[impossible], 100)
            out["income_per_person"] = inc
        mask[impossible] |= FAULT_BITS["impossible_value"]

    arrays = []
    for c in spec.column_names:
        v = out[c]
        if isinstance(v, pa.Array | pa.ChunkedArray):
            arrays.append(v)
        else:
            a = np.asarray(v)
            if a.dtype.kind == "f":
                arrays.append(pa.array(np.round(a, 2), from_pandas=True))
            elif a.dtype.kind == "M":
                arrays.append(pa.array(a.astype("datetime64[D]")))
            else:
                arrays.append(pa.array(a))
    table = pa.Table.from_arrays(arrays, names=list(spec.column_names))

    dup = rng.random(n) < f.duplicate_row
    if dup.any():
        order = np.repeat(np.arange(n), 1 + dup.astype(np.int64))
        is_copy = np.zeros(len(order), dtype=bool)
        is_copy[1:] = order[1:] == order[:-1]
        table = table.take(pa.array(order))
        person_id = person_id[order]
        mask = mask[order]
        mask[is_copy] |= FAULT_BITS["duplicate_row"]
    return table, person_id, mask
