"""The shared, memory-mapped round (serving/store.py): its indexes select exactly what a scan of the
whole round would, and the cache of rendered lists never serves a list of an older revision."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.calendar import SchoolCalendar, parse_round
from features.home import EwsHome
from serving import views
from serving.access import Principal
from serving.snapshot import ColumnSchema, ModelLineage, ScoreConfig, SnapshotManifest, SnapshotRef, write_snapshot
from serving.store import MAPPED_DIR, ROWS_FILE, ListCache, LoadedRound, load_round

ROUND = parse_round("2568-T1-early")
FEATURES = ["sex", "age", "over_age_years"]
GROUPS = ["student"]


def _snapshot(home: EwsHome, n: int, seed: int) -> SnapshotRef:
    """A round of `n` students over 40 schools and 12 tambons, with ties, missing scores and
    students without a tambon: every case the ranking and the area prefixes must get right."""
    rng = np.random.default_rng(seed)
    schema = ColumnSchema.build(FEATURES, GROUPS, [], placement=["school_code", "grade", "room", "tambon_code"],
                                score=["scored", "risk_score", "risk_group"], reason=["no_score_reason"])
    cal = SchoolCalendar()
    manifest = SnapshotManifest(
        round=ROUND, as_of=cal.as_of(ROUND), model=ModelLineage(model_name="dropout-risk", model_version="3", run_id="r1"),
        thresholds={"problem": 0.5, "at_risk": 0.2}, calendar=cal, config=ScoreConfig(), delivery_fingerprint="abc",
        features=FEATURES, feature_groups=GROUPS, no_score_reasons={}, columns=schema,
    )
    school = rng.integers(0, 40, n)
    tambons = [f"{p:02d}{a:02d}{t:02d}" for p, a, t in zip([10, 10, 10, 11, 11, 12] * 2, [1, 1, 2, 1, 3, 1] * 2,
                                                          range(1, 13), strict=True)]
    tambon = np.array([tambons[s % 12] for s in school], dtype=object)
    tambon[rng.random(n) < 0.03] = None
    scored = rng.random(n) > 0.1
    score = np.where(scored, np.round(rng.random(n), 2), np.nan)  # rounded: many ties, broken by key
    group = np.where(score >= 0.5, "problem", np.where(score >= 0.2, "at_risk", "normal"))
    cols = {
        "student_key": [f"S{k:07d}{'x' * (k % 3)}" for k in rng.permutation(10 * n)[:n]],  # lengths differ
        "round_id": [ROUND.round_id] * n, "as_of": [dt.date(2025, 7, 1)] * n,
        "school_code": [f"10{s:08d}" for s in school], "school_name": [f"school {s}" for s in school],
        "grade": rng.choice(["P1", "P6", "M1", "M3"], n).tolist(), "room": rng.integers(1, 4, n).tolist(),
        "tambon_code": tambon.tolist(), "tambon_name": [None] * n, "amphoe_code": [t and t[:4] for t in tambon],
        "amphoe_name": [None] * n, "province_code": [t and t[:2] for t in tambon], "province_name": [None] * n,
        "scored": scored.tolist(), "no_score_reason": [None if s else "no_history" for s in scored],
        "risk_score": pa.array(score, from_pandas=True), "risk_group": [g if s else None for g, s in zip(group, scored, strict=True)],
        "raw_margin": rng.normal(size=n), "base_value": np.full(n, -2.0),
        "reasons_th": [f"เหตุผล {i}" for i in range(n)], "reasons_en": [f"reason {i}" for i in range(n)],
    }
    ages = pa.array(np.where(rng.random(n) < 0.05, np.nan, rng.integers(6, 19, n)), from_pandas=True)
    inputs = {"sex": rng.choice(["F", "M"], n).tolist(), "age": ages,
              "over_age_years": pa.array(rng.integers(0, 3, n).tolist(), pa.int64())}
    cols |= {schema.model_inputs[f]: v for f, v in inputs.items()}
    cols |= {c: rng.normal(size=n) for c in schema.columns("contribution")}
    cols |= {c: rng.normal(size=n) for c in schema.columns("group_contribution")}
    return write_snapshot(home, manifest, pa.table(cols))


def _scan(students: pd.DataFrame, mask: np.ndarray) -> list[int]:
    """The rows a full scan selects, ranked as lists are: score (highest first, unscored last), key."""
    df = students[mask].assign(s=students["risk_score"].fillna(-1.0)[mask])
    return df.sort_values(["s", "student_key"], ascending=[False, True]).index.tolist()


@pytest.mark.parametrize("seed", [3, 17])
def test_the_school_and_area_indexes_slice_exactly_the_rows_a_full_scan_selects_in_rank_order(
        tmp_path: Path, seed: int) -> None:
    ref = _snapshot(EwsHome(root=tmp_path), 2000, seed)
    rnd = load_round(ref)
    students = ref.students().to_pandas()
    schools = sorted(set(students["school_code"]))
    assert sorted(rnd.by_school) == schools
    for s in schools:
        assert rnd.by_school[s].tolist() == _scan(students, (students["school_code"] == s).to_numpy())
    tambon = students["tambon_code"].fillna("")
    areas = {t[:w] for t in tambon if t for w in (2, 4, 6)}
    assert sorted(rnd.by_area) == sorted(areas)
    for a in areas:
        assert rnd.by_area[a].tolist() == _scan(students, tambon.str.startswith(a).to_numpy())
    for i, k in enumerate(students["student_key"]):
        assert rnd.row_of(k) == i
    assert rnd.row_of("S9999999") is None and rnd.row_of("S" * 200) is None


def test_a_mapped_round_reads_as_the_snapshot_read_whole(tmp_path: Path) -> None:
    """Whatever rows are asked for, values come with the dtypes of the whole column (an integer
    column with a missing value somewhere reads as float everywhere, as pandas reads it whole)."""
    ref = _snapshot(EwsHome(root=tmp_path), 500, 5)
    rnd = load_round(ref)
    whole = ref.students().to_pandas()
    idx = np.array([3, 1, 400])
    inputs = ref.manifest.columns.model_inputs
    got = rnd.values_frame(idx)
    want = whole[list(inputs.values())].iloc[idx]
    for f, c in inputs.items():
        assert got[f].tolist() == pytest.approx(want[c].tolist(), nan_ok=True) and got[f].dtype == want[c].dtype
    cols = ref.manifest.columns.columns("contribution")
    assert np.array_equal(rnd.matrix("contribution", idx), whole[cols].to_numpy(dtype=np.float64)[idx])
    assert rnd.num_rows == len(whole) and rnd.student_keys() == whole["student_key"].tolist()


def test_one_students_row_reads_as_python_values_exactly_as_the_frame_reads_it(tmp_path: Path) -> None:
    """`row` (an explanation's read, without pandas) gives, for every student and column, the value
    and type the one-row frame gives through the service's JSON conversion: an integer column with a
    missing value elsewhere as float, room as an integer, missing as None, booleans with gaps as bool."""
    ref = _snapshot(EwsHome(root=tmp_path), 300, 11)
    rnd = load_round(ref)
    t, n = rnd.table, rnd.table.num_rows
    over_age = ref.manifest.columns.model_inputs["over_age_years"]
    gaps = {over_age: pa.array([None if k == 7 else k % 3 for k in range(n)], pa.int64()),
            "room": pa.array([None if k == 2 else 1 + k % 4 for k in range(n)], pa.int32())}
    for name, values in gaps.items():
        t = t.set_column(t.schema.get_field_index(name), name, values)
    rnd.table = t.append_column("flag", pa.array([None if k % 11 == 0 else k % 2 == 0 for k in range(n)], pa.bool_()))
    columns = [*views.LIST_COLUMNS, *ref.manifest.columns.model_inputs.values(), "flag"]

    def typed(values: dict) -> dict:
        return {k: (type(v).__name__, v) for k, v in ((k, views._num(v)) for k, v in values.items())}

    for i in range(n):
        want = typed(rnd.frame(columns, np.array([i])).iloc[0].to_dict())
        assert typed(rnd.row(columns, i)) == want, i
    assert typed(rnd.row([over_age], 3))[over_age] == ("float", 0.0)  # the gap at row 7 makes the column float
    assert rnd.row(["room"], 2)["room"] is None and typed(rnd.row(["room"], 3))["room"] == ("int", 4)
    features = list(ref.manifest.columns.model_inputs)
    assert rnd.values_row(5) == {f: rnd.row(columns, 5)[ref.manifest.columns.model_inputs[f]] for f in features}


NAMES: dict[str, str] = {}  # the service's names: one object until it reloads them


def _render(rnd: LoadedRound, cache: ListCache, fmt: str = "json") -> bytes:
    who = Principal("t", "school", "1000000001", ())
    return views.school_list_rendered(rnd, who, "1000000001", NAMES, fmt, cache).body


def test_a_cached_list_is_served_until_its_revision_changes_and_never_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _snapshot(EwsHome(root=tmp_path), 800, 9)
    rnd, cache = load_round(ref), ListCache()
    revision = {"n": 0}
    monkeypatch.setattr(views, "list_revision", lambda r, s: f"{r.ref.hash}:{revision['n']}")
    first = _render(rnd, cache)
    assert first == views.render_json(views.school_list(rnd, Principal("t", "school", "1000000001", ()),
                                                        "1000000001", NAMES))
    # What the list says changes (here: the reasons), as a recorded action would change it.
    t = rnd.table
    i = t.schema.get_field_index("reasons_en")
    rnd.table = t.set_column(i, "reasons_en", pa.array([f"changed {k}" for k in range(t.num_rows)]))
    assert _render(rnd, cache) == first and cache.hits == 1  # same revision: the cached body
    revision["n"] += 1
    fresh = _render(rnd, cache)
    assert fresh != first and b"changed" in fresh and b"changed" not in first
    assert _render(rnd, cache, "csv") != _render(rnd, cache, "json")  # each format its own entry


def test_json_and_csv_lists_are_cached_gzipped_and_decompress_to_the_rendered_list(tmp_path: Path) -> None:
    import gzip

    rnd, cache = load_round(_snapshot(EwsHome(root=tmp_path), 800, 9)), ListCache()
    who = Principal("t", "school", "1000000001", ())
    plain = views.render_json(views.school_list(rnd, who, "1000000001", NAMES))
    for attempt in ("miss", "hit"):
        out = views.school_list_rendered(rnd, who, "1000000001", NAMES, "json", cache)
        assert out.gzipped and out.body == plain and gzip.decompress(out.encoded) == plain, attempt
        assert len(out.encoded) < len(plain) / 4, (attempt, len(out.encoded), len(plain))
    assert cache.hits == 1 and cache.size_bytes == len(out.encoded)  # kept compressed
    assert views.school_list_rendered(rnd, who, "1000000001", NAMES, "csv", cache).gzipped
    xlsx = views.school_list_rendered(rnd, who, "1000000001", NAMES, "xlsx", cache)
    assert not xlsx.gzipped and xlsx.body[:2] == b"PK"  # an Excel file is a zip already


@pytest.mark.parametrize(("header", "takes"), [
    ("gzip, deflate, br", True), ("GZIP", True), ("br;q=1.0, gzip;q=0.5", True), ("*", True),
    (None, False), ("", False), ("identity", False), ("br, deflate", False), ("gzip;q=0", False),
    ("gzip;q=0.000", False), ("gzip;q=abc", False), ("gzipx", False),
])
def test_a_client_gets_gzip_only_when_its_accept_encoding_takes_it(header: str | None, takes: bool) -> None:
    assert views.accepts_gzip(header) is takes


def test_the_list_cache_is_bounded_by_bytes_dropping_the_least_recently_used() -> None:
    cache = ListCache(max_bytes=100)
    for k in "abc":
        cache.put(k, b"x" * 40)
    assert cache.get("a") is None and cache.size_bytes == 80  # a was oldest: dropped for c
    cache.get("b")  # b is now the most recent
    cache.put("d", b"x" * 40)
    assert cache.get("c") is None and cache.get("b") is not None and cache.get("d") is not None
    cache.put("huge", b"x" * 101)  # larger than the whole cache: not kept, nothing evicted for it
    assert cache.get("huge") is None and len(cache) == 2
    cache.bind_names({"k": "name"})  # names reloaded: bodies that may carry names go
    assert len(cache) == 0 and cache.size_bytes == 0


_CHILD = """
import sys
from pathlib import Path
from features.calendar import parse_round
from serving.snapshot import SnapshotRef
from serving.store import MAPPED_DIR, ROWS_FILE, load_round
folder, round_id, digest = sys.argv[1:4]
rnd = load_round(SnapshotRef(parse_round(round_id), digest, Path(folder)))
rnd.values_at("student_key", rnd.by_school[sorted(rnd.by_school)[0]])
mapped = str(Path(folder) / MAPPED_DIR / ROWS_FILE) in Path("/proc/self/maps").read_text()
print(rnd.num_rows, mapped)
"""


def test_workers_loading_a_round_at_once_convert_it_once_and_map_the_same_file(tmp_path: Path) -> None:
    ref = _snapshot(EwsHome(root=tmp_path), 3000, 11)
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(ref.folder), ref.round_id, ref.hash],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    got = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and got == [["3000", "True"], ["3000", "True"]]
    leftovers = [p.name for p in ref.folder.iterdir() if p.name.startswith(".mapped-tmp-")]
    assert leftovers == [] and (ref.folder / MAPPED_DIR / ROWS_FILE).is_file()


def test_a_cached_list_is_found_only_after_its_render_and_refused_as_the_render_refuses(tmp_path: Path) -> None:
    # The service answers from `school_list_cached` on its event loop and renders with
    # `school_list_rendered` in its threadpool: both must check alike and agree on the key.
    rnd, cache = load_round(_snapshot(EwsHome(root=tmp_path), 800, 9)), ListCache()
    own = Principal("t", "school", "1000000001", ())
    for fmt in ("json", "csv", "xlsx"):
        assert views.school_list_cached(rnd, own, "1000000001", NAMES, fmt, cache, grade="P6", revision="a:1") is None
        made = views.school_list_rendered(rnd, own, "1000000001", NAMES, fmt, cache, grade="P6", revision="a:1")
        found = views.school_list_cached(rnd, own, "1000000001", NAMES, fmt, cache, grade="P6", revision="a:1")
        assert found == made, fmt  # same bytes, media type, file name, count and encoding
        assert views.school_list_cached(rnd, own, "1000000001", NAMES, fmt, cache, grade="P6", revision="a:2") is None
        assert views.school_list_cached(rnd, own, "1000000001", NAMES, fmt, cache, grade="M1", revision="a:1") is None
    other = Principal("u", "school", "1000000002", ())
    area = Principal("v", "area", None, ("99",))
    for who, school, fmt, status in ((other, "1000000001", "json", 403), (area, "1000000001", "json", 403),
                                     (own, "10000000x1", "json", 400), (own, "1000000001", "pdf", 400),
                                     (own, "1099999999", "json", 403)):
        codes = []
        for call in (views.school_list_cached, views.school_list_rendered):
            with pytest.raises(views.RequestError) as err:
                call(rnd, who, school, NAMES, fmt, cache)
            codes.append(err.value.status)
        assert codes == [status, status], (who.role, school, fmt)


def test_a_cell_reads_the_rounds_value_in_whichever_chunk_it_lies(tmp_path: Path) -> None:
    ref = _snapshot(EwsHome(root=tmp_path), 800, 9)
    rnd = load_round(ref)
    whole = ref.students().to_pandas()
    # Many small chunks, as a tiled or chunk-scored national round has: row i lies in chunk i // 7.
    rnd.table = pa.Table.from_batches(rnd.table.to_batches(max_chunksize=7))
    assert rnd.table.column("tambon_code").num_chunks > 100
    for i in (0, 6, 7, 13, 400, 799, 7, 0):  # again after the column object is kept
        assert rnd.cell("tambon_code", i) == whole["tambon_code"].iloc[i]
        assert rnd.cell("school_code", np.int64(i)) == whole["school_code"].iloc[i]
    t = rnd.table  # a table replaced after a look-up is the one read
    rnd.table = t.set_column(t.schema.get_field_index("school_code"), "school_code",
                             pa.array([f"9{k:09d}" for k in range(t.num_rows)]))
    assert rnd.cell("school_code", 13) == "9000000013" and rnd.cell("tambon_code", 13) == whole["tambon_code"].iloc[13]
