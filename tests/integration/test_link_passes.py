"""Linkage in passes: the records-and-nodes step builds its nodes in passes over a hash of the id
token (`LinkConfig.partition_tokens`), so a national run holds one pass's records at a time. The
number of passes is a memory setting and nothing else: two copies of the ladder's linked world,
re-linked from scratch (`--relink`) with the default (one pass) and with several, publish the same
keys for every token and every row without one, the same review list and the same run counts.

The test can fail: a node whose records fell into two passes would be two nodes (its attributes
voted apart, its key anchored twice), and a row without an ID that joined a token's node in
another pass would lose its key."""

from __future__ import annotations

import pytest

from features.home import EwsHome
from features.linkage.link import LinkConfig, LinkSummary, link
from features.pointintime.pipeline import warehouse_session
from tests.conftest import SmallWorld, copy_world

COUNTS = ("records", "records_with_names", "nodes", "candidate_pairs", "linked_pairs", "students",
          "review_clusters", "review_tokens_birth_date", "unlinkable_rows", "keys_changed")


@pytest.fixture(scope="module")
def relinked(small_world: SmallWorld, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[EwsHome, LinkSummary]]:
    folder = tmp_path_factory.mktemp("link-passes")
    out = {}
    for name, tokens in (("one", LinkConfig().partition_tokens), ("several", None)):
        home = EwsHome(root=copy_world(small_world, folder / name).home)
        if tokens is None:  # about five passes on this world, whatever its size
            with warehouse_session(home) as con:
                n = con.execute("SELECT count(DISTINCT id_token) FROM wh.token_keys").fetchall()[0][0]
            tokens = max(1, n // 5)
        out[name] = (home, link(home, LinkConfig(keep_published_keys=False, partition_tokens=tokens)))
    return out


def _published(home: EwsHome) -> dict[str, set[tuple]]:
    with warehouse_session(home) as con:
        return {
            "token_keys": set(con.execute("SELECT * FROM wh.token_keys").fetchall()),
            "record_keys": set(con.execute(
                "SELECT delivery_id, source_file, source_line, student_key, method FROM wh.record_keys").fetchall()),
            "link_review": {(r[0], r[1], r[2], r[3], tuple(r[4])) for r in con.execute(
                "SELECT review_id, reason, n_nodes, n_records, student_keys FROM wh.link_review").fetchall()},
        }


def test_the_number_of_passes_changes_no_key_no_review_and_no_count(relinked: dict) -> None:
    (one_home, one), (several_home, several) = relinked["one"], relinked["several"]
    assert one.parameters["passes"] == 1 and several.parameters["passes"] >= 4
    assert one.probabilistic_skipped is None and one.candidate_pairs > 100
    a, b = _published(one_home), _published(several_home)
    # the world exercises every kind of identity the passes must keep whole
    methods = {m for *_, m in a["record_keys"]} | {row[3] for row in a["token_keys"]}
    assert {"deterministic", "deterministic + probabilistic", "probabilistic (no ID)"} <= methods
    assert len(a["record_keys"]) > 0 and len(a["link_review"]) > 0
    for table in a:
        # sid is the run's dense number of a key: equal keys give equal sids
        assert a[table] == b[table], f"{table} differs between one pass and several"
    assert {k: getattr(one, k) for k in COUNTS} == {k: getattr(several, k) for k in COUNTS}
