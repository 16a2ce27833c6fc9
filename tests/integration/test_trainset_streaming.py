"""`ews trainset` on DuckDB writes its rounds one after the other, each built chunk by chunk of whole
schools: its memory is set by the chunk, not by the country times the rounds. That must change
nothing a reader of the set sees: the file is the rounds' one-query features joined to their labels
and concatenated in round order, byte for byte, whatever the chunk size; and a build that fails in
its last round leaves no file and keeps the previous set the newest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.calendar import parse_round
from features.home import EwsHome
from features.parquet import write_parquet
from features.pointintime.build import build_features
from features.pointintime.labels import labels_sql
from features.pointintime.pipeline import TrainsetConfig, build_trainset, connect_warehouse
from features.pointintime.trainset import TrainsetManifest, latest_trainset_name, trainset_folder
from tests.conftest import SmallWorld, copy_world

pytestmark = [pytest.mark.integration]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _latest(home: EwsHome) -> TrainsetManifest:
    name = latest_trainset_name(home.trainsets_dir)
    return TrainsetManifest.model_validate_json((trainset_folder(home.trainsets_dir, name) / "manifest.json").read_text())


def _whole_rounds_in_memory(home: EwsHome, m: TrainsetManifest) -> tuple[pa.Table, dict[str, tuple[int, int, int]]]:
    """The set as it was built before streaming: each round's features in one query, joined to its
    labels in memory, labelled rows kept, rounds concatenated; with (rows, unlabelled, dropouts) per round."""
    con = connect_warehouse(home)
    parts, counts = [], {}
    try:
        for tr in m.rounds:
            r = parse_round(tr.round_id)
            con.register("f_tmp", build_features(con, home.calendar, r))
            con.register("l_tmp", con.sql(labels_sql(home.calendar, r, m.cutoff, m.config.horizon)).to_arrow_table())
            joined = con.sql("SELECT f.*, l.dropout AS label, l.outcome, l.label_state, l.label_evidence "
                             "FROM f_tmp f JOIN l_tmp l USING (student_key) ORDER BY f.student_key").to_arrow_table()
            con.unregister("f_tmp")
            con.unregister("l_tmp")
            labelled = joined.filter(pc.is_valid(joined.column("label")))
            counts[tr.round_id] = (labelled.num_rows, joined.num_rows - labelled.num_rows,
                                   int(pc.sum(labelled.column("label")).as_py() or 0))
            if labelled.num_rows:
                parts.append(labelled)
    finally:
        con.close()
    return pa.concat_tables(parts), counts


def test_a_training_set_streamed_round_by_round_in_chunks_is_the_whole_rounds_joined_in_memory_byte_for_byte(
        small_world: SmallWorld, tmp_path: Path, prepared_chunks: list[int]) -> None:
    from typer.testing import CliRunner

    from ews.cli import _register, app

    chunks = prepared_chunks
    home = EwsHome(root=copy_world(small_world, tmp_path / "w").home)

    one = build_trainset(home, TrainsetConfig(), chunk_rows=10_000_000)
    assert len(one.rounds) >= 6 and chunks and set(chunks) == {1}, chunks
    whole, counts = _whole_rounds_in_memory(home, one)
    write_parquet(whole, tmp_path / "whole.parquet")
    assert one.rows == whole.num_rows > 1000
    assert _sha(Path(one.file)) == _sha(tmp_path / "whole.parquet") == one.sha256
    assert {tr.round_id: (tr.rows, tr.unlabelled, round(tr.label_rate * tr.rows) if tr.rows else 0)
            for tr in one.rounds} == counts
    assert one.unlabelled_rows == sum(c[1] for c in counts.values()) > 0
    assert one.label_rate == round(sum(c[2] for c in counts.values()) / whole.num_rows, 5)

    chunks.clear()
    largest = max(tr.rows + tr.unlabelled for tr in one.rounds)
    _register()  # the same set again, from the command line, in chunks of a sixth of a round
    res = CliRunner().invoke(app, ["trainset", "--home", str(home.root), "--chunk-rows", str(largest // 6), "--json"])
    assert res.exit_code == 0, res.output[-2000:]
    several = TrainsetManifest.model_validate(json.loads(res.stdout[res.stdout.index("{"):])["trainset"])
    assert min(chunks) >= 2 and max(chunks) >= 4, chunks
    assert several.model_dump() == one.model_dump()
    assert _sha(Path(several.file)) == one.sha256
    # nothing of the chunks is left behind: no scratch folder, no temporary file
    assert not list(home.spill_dir.glob(".round-*"))
    assert not list(Path(one.file).parent.glob("*.tmp"))


@pytest.mark.parametrize("where", ["labels of the last round", "writing the first round"])
def test_a_training_set_that_fails_part_way_leaves_no_file_and_the_previous_set_stays_the_newest(
        small_world: SmallWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import features.pointintime.pipeline as pipeline

    home = EwsHome(root=copy_world(small_world, tmp_path / "w").home)
    earlier = build_trainset(home, TrainsetConfig())
    rounds_seen: list[str] = []
    real_labels, real_write = pipeline.labels_sql, pipeline.write_parquet_batches

    def failing_labels(cal, r, *args, **kwargs):  # type: ignore[no-untyped-def]
        rounds_seen.append(r.round_id)
        if len(rounds_seen) == len(earlier.rounds):
            raise OSError("disk full")  # stands for anything that stops the last round
        return real_labels(cal, r, *args, **kwargs)

    def failing_write(schema, batches, path, *args, **kwargs):  # type: ignore[no-untyped-def]
        def some():  # type: ignore[no-untyped-def]
            yield next(iter(batches))
            raise OSError("disk full")  # the writer stops with the first round's rows half read
        return real_write(schema, some(), path, *args, **kwargs)

    if where == "labels of the last round":
        monkeypatch.setattr(pipeline, "labels_sql", failing_labels)
    else:
        monkeypatch.setattr(pipeline, "write_parquet_batches", failing_write)
    with pytest.raises(OSError, match="disk full"):  # the same rounds, another horizon: another set
        build_trainset(home, TrainsetConfig(horizon="one_year"))
    if where == "labels of the last round":
        assert rounds_seen == [tr.round_id for tr in earlier.rounds] and len(rounds_seen) >= 6
    assert _latest(home).name == earlier.name
    # nothing of the failed set: no folder, no temporary file, no scratch; the earlier set whole
    assert sorted(p.name for p in home.trainsets_dir.iterdir()) == ["LATEST", earlier.name]
    assert sorted(p.name for p in (home.trainsets_dir / earlier.name).iterdir()) == ["data.parquet", "manifest.json"]
    assert _sha(Path(earlier.file)) == earlier.sha256
    assert not list(home.spill_dir.glob(".round-*"))
