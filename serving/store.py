"""What the service holds: published rounds, shared between workers and indexed for the questions
endpoints ask; rendered lists, cached; and the champion (`ChampionWatch`, which notices a promotion
or rollback without a restart).

A round is read from its Parquet snapshot once, by the first worker that needs it, into an Arrow
IPC file (Feather v2, uncompressed) and index arrays beside it (`ensure_mapped`, written to a
temporary folder and renamed). Every worker then memory-maps those files (`load_round`): the
operating system keeps one copy of the pages for all workers, a worker holds only what it reads,
and a national round (8M rows, ~17 GB) opens in about a second instead of being copied into each
worker. The indexes are row numbers sorted by (school, rank), by (area, rank) and by student_key,
with each code's start offset, so a school's list is a slice and a student is a binary search: no
scan per request. Columns are taken by their role in the snapshot's column schema, so a round keeps
loading with the roles it was written with.

`ListCache` keeps rendered lists (JSON, CSV, Excel bytes) per round, school, caller's view and
filter, bounded by bytes (least recently used first out), under the list's revision
(`list_revision`): a list whose revision changed is never served from the cache.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from features.calendar import ScoringRound
from serving.snapshot import STUDENTS, SnapshotManifest, SnapshotRef

log = logging.getLogger(__name__)

LIST_COLUMNS: tuple[str, ...] = (
    "student_key", "school_code", "school_name", "grade", "room", "tambon_code", "tambon_name", "amphoe_code",
    "amphoe_name", "province_code", "province_name", "scored", "no_score_reason", "risk_score", "risk_group",
    "raw_margin", "base_value", "reasons_th", "reasons_en",
)
_GROUP_RANK = {"problem": 0, "at_risk": 1, "normal": 2}

# The mapped copy of a snapshot lives in this folder inside the snapshot's own folder (a new layout
# gets a new name, so an old copy is never read with new code).
MAPPED_DIR = "mapped-v1"
ROWS_FILE = "students.arrow"
AREA_WIDTHS = (2, 4, 6)  # province, amphoe, tambon: prefixes of the tambon code
# Rows per record batch of the Arrow file: converting holds one batch (~2 KB a row), not the round.
_BATCH_ROWS = 131_072


def ensure_mapped(ref: SnapshotRef) -> Path:
    """The folder of the round's Arrow file and indexes, written once beside its Parquet snapshot.

    Workers starting together take a file lock: one converts, the others wait and then map what it
    wrote. The folder appears in one rename, so a half-written copy is never read."""
    final = ref.folder / MAPPED_DIR
    if final.is_dir():
        return final
    with open(ref.folder / ".mapped.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if final.is_dir():
                return final
            tmp = Path(tempfile.mkdtemp(prefix=".mapped-tmp-", dir=ref.folder))
            try:
                t0 = time.monotonic()
                _write_mapped(ref.folder / STUDENTS, tmp)
                os.rename(tmp, final)
                log.info("round %s: mapped copy written in %.1f s", ref.round_id, time.monotonic() - t0)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def rank_order(scores: np.ndarray, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Row numbers ranked for lists: scored students by score (highest first), then those without a
    score; ties by student_key. (Arrow's sort: numpy's lexsort on 8M Python strings takes minutes.)"""
    filled = np.where(np.isnan(scores), -1.0, scores)
    table = pa.table({"score": filled, "key": keys})
    return pc.sort_indices(table, sort_keys=[("score", "descending"), ("key", "ascending")]).to_numpy()


def group_rows(codes_ranked: pa.Array | pa.ChunkedArray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes sorted, start offsets with one extra end, row numbers) so that rows of codes[i] ranked
    are rows[starts[i]:starts[i+1]]. `codes_ranked` is each ranked row's code (null: no code, left out).
    Codes are numbered by Arrow's dictionary encoding: no Python string per row (8M of them
    took gigabytes while converting a national round)."""
    if isinstance(codes_ranked, pa.ChunkedArray):
        codes_ranked = codes_ranked.combine_chunks()
    enc = pc.dictionary_encode(codes_ranked)
    dictionary = enc.dictionary
    by_text = pc.sort_indices(dictionary).to_numpy()
    number = np.empty(len(dictionary), dtype=np.int64)
    number[by_text] = np.arange(len(dictionary))
    raw = pc.fill_null(enc.indices, -1).to_numpy().astype(np.int64)
    codes = np.where(raw < 0, -1, number[np.maximum(raw, 0)])
    uniques = dictionary.take(pa.array(by_text)).to_pylist()
    perm = np.argsort(codes, kind="stable")  # stable: the rank order holds inside each code
    by_code = codes[perm]
    first = int(np.searchsorted(by_code, 0))
    starts = np.searchsorted(by_code[first:], np.arange(len(uniques) + 1)).astype(np.int64)
    return np.asarray(uniques, dtype=str), starts, order[perm[first:]].astype(np.int64)


def fixed_width(text: pa.Array) -> np.ndarray:
    """UTF-8 strings (no nulls) as a numpy bytes array of the longest one's width, built from
    Arrow's buffers (no Python object per row); shorter strings are padded with NULs, which numpy
    ignores when comparing, so the order is the strings' byte order."""
    arr = text.cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    width = int(max(lengths.max(initial=0), 1))
    out = np.zeros((n, width), dtype=np.uint8)
    step = 1_000_000
    for lo in range(0, n, step):  # in steps: the index arrays are 8 bytes per character
        hi = min(lo + step, n)
        ln = lengths[lo:hi]
        rows = np.repeat(np.arange(hi - lo), ln)
        cols = np.arange(int(ln.sum())) - np.repeat(offsets[lo:hi] - offsets[lo], ln)
        out[lo:hi][rows, cols] = data[offsets[lo]:offsets[hi]]
    return out.view(f"S{width}").ravel()


def _write_mapped(parquet: Path, out: Path) -> None:
    pf = pq.ParquetFile(parquet)
    with pa.OSFile(str(out / ROWS_FILE), "wb") as sink, ipc.new_file(sink, pf.schema_arrow) as writer:
        # Row group by row group: `iter_batches` held far more (8.4 GB peak converting 8M rows,
        # against 0.9 GB for this loop's write phase).
        for i in range(pf.metadata.num_row_groups):
            for batch in pf.read_row_group(i).to_batches(max_chunksize=_BATCH_ROWS):
                writer.write_batch(batch)
    t = pq.read_table(parquet, columns=["student_key", "school_code", "tambon_code", "risk_score"])
    keys = t.column("student_key").combine_chunks()
    order = rank_order(t.column("risk_score").to_numpy().astype(np.float64), keys)
    parts: dict[str, np.ndarray] = {"order": order.astype(np.int64)}
    school = t.column("school_code").take(pa.array(order))
    parts["school_codes"], parts["school_starts"], parts["school_rows"] = group_rows(school, order)
    tambon = pc.fill_null(t.column("tambon_code").take(order).cast(pa.large_string()), "")
    for width in AREA_WIDTHS:
        prefix = pc.utf8_slice_codeunits(tambon, 0, width)
        prefix = pc.if_else(pc.equal(pc.utf8_length(prefix), width), prefix, pa.scalar(None, prefix.type))
        area = prefix
        parts[f"area{width}_codes"], parts[f"area{width}_starts"], parts[f"area{width}_rows"] = group_rows(area, order)
    # Keys as fixed-width bytes, sorted, beside the row each names: a look-up is one binary search
    # in the mapped file (a dict of 8M keys would be ~1 GB in every worker).
    by_key = pc.sort_indices(keys).to_numpy()
    parts["keys_sorted"] = fixed_width(keys.take(pa.array(by_key)))
    parts["key_rows"] = by_key.astype(np.int64)
    for name, arr in parts.items():
        np.save(out / f"{name}.npy", arr, allow_pickle=False)


def _mapped_array(folder: Path, name: str) -> np.ndarray:
    return np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)


@dataclass
class LoadedRound:
    """One published round, memory-mapped: `table` reads from the shared Arrow file, the indexes
    are views of mapped arrays. `rows` (the list columns of every student as a DataFrame) is built
    only when asked for: nothing the service answers per school needs it."""

    ref: SnapshotRef
    manifest: SnapshotManifest
    table: pa.Table
    by_school: dict[str, np.ndarray] = field(default_factory=dict)  # school -> its rows, ranked
    by_area: dict[str, np.ndarray] = field(default_factory=dict)  # province / amphoe / tambon code -> ranked rows
    keys_sorted: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bytes))
    key_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # Area summaries, computed on first request: a round never changes once published, and a
    # province summary groups every student of the province (~1 s for a 100k-student province).
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    # One computation per area: concurrent first requests wait for it instead of all computing it
    # (50 clients asking for one province at once kept both workers busy for 20 s).
    summary_lock: threading.Lock = field(default_factory=threading.Lock)
    # Withheld small counts per province (serving.disclosure.SmallCounts), planned with its first summary.
    small_counts: dict[str, Any] = field(default_factory=dict)
    # What non-school tokens may see of each row (serving.disclosure), planned on first request.
    _disclosure: Any = None
    _rows: pd.DataFrame | None = None
    _batches: tuple[list[pa.RecordBatch], np.ndarray] | None = None
    _nulls: dict[str, bool] = field(default_factory=dict)
    _columns: dict[str, tuple[pa.Table, pa.ChunkedArray]] = field(default_factory=dict)

    def take(self, columns: Sequence[str], idx: np.ndarray) -> pa.Table:
        """Rows `idx` (in that order) of some columns, reading only those rows' values.

        Arrow's `take` on a multi-chunk table first concatenates each whole column (for text, the
        reasons of 8M students: a full read of the mapped file, ~1 min), so rows are taken from
        each record batch they fall in, then put back in the asked order."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 1:  # one student (an explanation): a zero-copy slice
            return self.table.select(list(columns)).slice(int(idx[0]), 1)
        if self._batches is None:
            batches = self.table.to_batches()
            self._batches = (batches, np.cumsum([0] + [b.num_rows for b in batches]))
        batches, starts = self._batches
        if len(batches) <= 1:
            return self.table.select(list(columns)).take(pa.array(idx))
        which = np.searchsorted(starts, idx, side="right") - 1
        by_batch = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[by_batch], np.arange(len(batches) + 1))
        parts = [batches[b].select(list(columns)).take(pa.array(idx[by_batch[lo:hi]] - starts[b]))
                 for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)) if hi > lo]
        if not parts:
            return self.table.select(list(columns)).slice(0, 0)
        gathered = pa.Table.from_batches(parts).combine_chunks()
        return gathered.take(pa.array(np.argsort(by_batch, kind="stable")))

    def disclosure(self) -> Any:  # -> serving.disclosure.DisclosurePlan
        if self._disclosure is None:
            from serving.disclosure import plan

            with self.summary_lock:
                if self._disclosure is None:
                    values = self.values_frame(None, ("sex", "age", "over_age_years"))
                    self._disclosure = plan(self.frame(("tambon_code", "school_code", "grade")), values)
        return self._disclosure

    @property
    def round(self) -> ScoringRound:
        return self.ref.round

    @property
    def round_id(self) -> str:
        return self.ref.round_id

    @property
    def model_version(self) -> str:
        """The registered model version that scored every row of the round."""
        return self.manifest.model_version

    @property
    def num_rows(self) -> int:
        return int(self.table.num_rows)

    @property
    def rows(self) -> pd.DataFrame:
        """The list columns of every row as a DataFrame (built once, on first use: at national size
        this is gigabytes per worker, so the service's routes do not use it)."""
        if self._rows is None:
            self._rows = self.frame(LIST_COLUMNS)
        return self._rows

    # -- reading rows ------------------------------------------------------------------------------

    def frame(self, columns: Sequence[str], idx: np.ndarray | None = None) -> pd.DataFrame:
        """Columns of the rows `idx` (all rows when None) as pandas reads them from the snapshot
        (the dtypes of the whole column, whatever rows are taken), room as nullable integers."""
        t = self.table.select(list(columns)) if idx is None else self.take(columns, idx)
        df = self._like_whole(t.to_pandas(), t)
        if "room" in df:
            df["room"] = pd.to_numeric(df["room"], errors="coerce").astype("Int64")
        return df

    def row(self, columns: Sequence[str], i: int) -> dict[str, Any]:
        """One row's columns as Python values (None where missing), read as `frame(columns, [i])`
        reads them: an integer column with a missing value elsewhere in the round as float, `room`
        as an integer. For one student (an explanation) this skips building a one-row DataFrame from
        Arrow's pandas metadata, most of an explanation's time before (benchmarks/bench_explain.py)."""
        taken = self.take(columns, np.array([i], dtype=np.int64))
        out = taken.to_pylist()[0]
        for f in taken.schema:
            if (pa.types.is_integer(f.type) and f.name != "room" and out[f.name] is not None
                    and self._has_nulls(f.name)):
                out[f.name] = float(out[f.name])
        return out

    def _has_nulls(self, name: str) -> bool:
        if name not in self._nulls:  # counted once per column (62 chunks at 8M rows)
            self._nulls[name] = self.table.column(name).null_count > 0
        return self._nulls[name]

    def _like_whole(self, df: pd.DataFrame, taken: pa.Table) -> pd.DataFrame:
        # pandas picks a column's dtype from the rows it converts: an integer column with a missing
        # value somewhere in the round read as float (3.0) when the round was read whole. A slice
        # must read the same, so the answer does not depend on which rows were asked for.
        for f in taken.schema:
            if not (pa.types.is_integer(f.type) or pa.types.is_boolean(f.type)):
                continue
            if not self._has_nulls(f.name) or taken.column(f.name).null_count:
                continue
            if pa.types.is_integer(f.type):
                df[f.name] = df[f.name].astype(np.float64)
            elif pa.types.is_boolean(f.type):
                df[f.name] = df[f.name].astype(object)
        return df

    def values_frame(self, idx: np.ndarray | None, features: Sequence[str] | None = None) -> pd.DataFrame:
        """The model inputs as stored (categories as text), columns named by feature."""
        inputs = self.manifest.columns.model_inputs
        names = [f for f in (features if features is not None else inputs) if f in inputs]
        df = self.frame([inputs[f] for f in names], idx)
        df.columns = names
        return df

    def values_row(self, i: int, features: Sequence[str] | None = None) -> dict[str, Any]:
        """One row's model inputs as stored (categories as text), keyed by feature: `row` for them."""
        inputs = self.manifest.columns.model_inputs
        names = [f for f in (features if features is not None else inputs) if f in inputs]
        got = self.row([inputs[f] for f in names], i)
        return {f: got[inputs[f]] for f in names}

    def column(self, name: str, idx: np.ndarray) -> np.ndarray:
        """One column at rows `idx` as numpy (text as objects, None where missing)."""
        return self.take((name,), idx).column(0).to_numpy()

    def values_at(self, name: str, idx: np.ndarray) -> list[Any]:
        """One column at rows `idx` as Python values (None where missing)."""
        return self.take((name,), idx).column(0).to_pylist()

    def cell(self, name: str, i: int) -> Any:
        # The column object is kept: Arrow finds row i's chunk through an index it builds on each
        # new column object's first look-up, one entry per chunk (1,290 chunks at 2M tiled rows:
        # the tambon look-up of every school list was ~12% of a cached list's time in the worker).
        kept = self._columns.get(name)
        if kept is None or kept[0] is not self.table:  # (a table replaced in place: tests do)
            kept = self._columns[name] = (self.table, self.table.column(name))
        return kept[1][int(i)].as_py()

    def matrix(self, role: str, idx: np.ndarray | int) -> np.ndarray:
        """Rows of the contributions (`contribution`) or group sums (`group_contribution`), float64."""
        cols = self.manifest.columns.columns(role)  # type: ignore[arg-type]
        one = np.ndim(idx) == 0
        rows = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        t = self.take(cols, rows)
        out = np.column_stack([t.column(c).to_numpy().astype(np.float64) for c in cols]) if cols else np.empty((len(rows), 0))
        return out[0] if one else out

    def row_of(self, student_key: str) -> int | None:
        """The row of a student, or None (a binary search in the mapped sorted keys)."""
        kb = student_key.encode("utf-8")
        if not len(self.keys_sorted) or len(kb) > self.keys_sorted.dtype.itemsize:
            return None
        j = int(np.searchsorted(self.keys_sorted, kb))
        if j < len(self.keys_sorted) and self.keys_sorted[j] == kb:
            return int(self.key_rows[j])
        return None

    def student_keys(self) -> list[str]:
        return self.table.column("student_key").to_pylist()


def load_round(ref: SnapshotRef) -> LoadedRound:
    """Map the round (writing its mapped copy first if no worker has yet)."""
    folder = ensure_mapped(ref)
    table = ipc.open_file(pa.memory_map(str(folder / ROWS_FILE), "r")).read_all()

    def grouped(prefix: str) -> dict[str, np.ndarray]:
        codes, starts, rows = (_mapped_array(folder, f"{prefix}_{p}") for p in ("codes", "starts", "rows"))
        return {str(c): rows[starts[i]:starts[i + 1]] for i, c in enumerate(codes)}

    by_area: dict[str, np.ndarray] = {}
    for width in AREA_WIDTHS:
        by_area.update(grouped(f"area{width}"))
    return LoadedRound(ref=ref, manifest=ref.manifest, table=table, by_school=grouped("school"), by_area=by_area,
                       keys_sorted=_mapped_array(folder, "keys_sorted"), key_rows=_mapped_array(folder, "key_rows"))


def list_revision(rnd: LoadedRound, school_code: str) -> str:
    """The revision of a school's list in a round: a token that changes whenever what the list says
    may change. Today a published round never changes, so it is the snapshot's hash; state that
    changes a list later (recorded actions on a student) adds its own part here."""
    return rnd.ref.hash


class ListCache:
    """Rendered lists (bytes), least recently used out first, at most `max_bytes` in all.

    A key carries the list's revision (`list_revision`): a new revision is a new key, so a stale
    body is never found, and it ages out. `bind_names` empties the cache when the service reloads
    its names (lists of a school's own token carry them)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[bytes, Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._names: object = None
        self.hits = self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def bind_names(self, names: object) -> None:
        if names is not self._names:
            with self._lock:
                self._items.clear()
                self._bytes = 0
                self._names = names

    def get(self, key: Hashable) -> tuple[bytes, Any] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: Hashable, body: bytes, meta: Any = None) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0])
            self._items[key] = (body, meta)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, (dropped, _) = self._items.popitem(last=False)
                self._bytes -= len(dropped)


# A promotion made with `ews promote` in this home touches the release journal's done record: the
# service sees it on the next request (one stat). A promotion made elsewhere (a shared MLflow
# server) is noticed by asking the registry at most this often.
CHAMPION_POLL_SECONDS = 30.0


class ChampionWatch:
    """The champion a worker scores with, swapped when the registry names another one.

    `current()` is called per request: a stat of the release marker, and the registry's alias at
    most every `poll_seconds`; a new champion is loaded once (by the first request that notices it,
    the others keep the old one meanwhile) and kept, so a rollback swaps back without reloading."""

    def __init__(self, loaded: Any, version_now: Callable[[], Any], load: Callable[[Any], Any],
                 marker: Callable[[], float | None], poll_seconds: float = CHAMPION_POLL_SECONDS) -> None:
        self._loaded = loaded  # a training.registry.VersionedModel
        self._models: dict[Any, Any] = {loaded.lineage.version: loaded}
        self._version_now, self._load, self._marker = version_now, load, marker
        self._poll = poll_seconds
        self._seen_marker = marker()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> Any:
        marker = self._marker()
        if marker == self._seen_marker and time.monotonic() - self._checked < self._poll:
            return self._loaded
        if not self._lock.acquire(blocking=False):
            return self._loaded  # another request is already looking (or loading): answer with what we have
        try:
            self._seen_marker, self._checked = marker, time.monotonic()
            try:
                version = self._version_now()
            except Exception:  # noqa: BLE001 - registry unreachable: keep serving the champion we have
                log.warning("could not read the champion alias; keeping version %s", self._loaded.lineage.version)
                return self._loaded
            if version is not None and version != self._loaded.lineage.version:
                if version not in self._models:
                    self._models[version] = self._load(version)
                log.info("champion changed: version %s -> %s", self._loaded.lineage.version, version)
                self._loaded = self._models[version]
            return self._loaded
        finally:
            self._lock.release()

    def model_for(self, version: Any) -> Any:
        """A version loaded once and kept (replays of older rounds; champions past and present)."""
        if version not in self._models:
            self._models[version] = self._load(version)
        return self._models[version]
