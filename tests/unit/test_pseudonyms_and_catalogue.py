"""Keyed pseudonyms and the feature catalogue."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import duckdb
import pytest

from features.home import EwsHome
from features.pointintime.spec import FEATURES, GROUPS, catalogue_markdown
from features.pseudonym import hmac_pads, id_token, id_token_sql, student_key, student_keys


def test_a_token_depends_on_the_secret_so_nobody_without_it_can_recompute_it() -> None:
    assert id_token(b"k" * 32, "1101700203450") == id_token(b"k" * 32, "1101700203450")
    assert id_token(b"k" * 32, "1101700203450") != id_token(b"j" * 32, "1101700203450")
    assert "1101700203450" not in student_key(b"k" * 32, "1101700203450")


def test_a_student_key_is_the_keyed_hash_of_its_anchor_alone_or_in_bulk() -> None:
    anchors = ["1101700203450", "G123456789012", "node:R:d/f#7", "ก"]
    expected = ["S" + hmac.new(b"k" * 32, b"student:" + a.encode("utf-8"), hashlib.sha256).hexdigest()[:20]
                for a in anchors]
    assert student_keys(b"k" * 32, anchors) == expected
    assert [student_key(b"k" * 32, a) for a in anchors] == expected
    assert len(set(expected)) == len(anchors)


@pytest.mark.parametrize("key", [b"k" * 32, bytes(range(64)), bytes(range(100)), b""],
                         ids=["32 bytes", "one block", "longer than a block", "empty"])
def test_the_sql_token_is_the_python_token_for_any_key_length(key: bytes) -> None:
    # Ingest tokenises IDs in DuckDB; linkage and the service compute them in Python: they must agree.
    ids = ["1101700203450", "G123456789012", "ก", "", "0" * 40]
    inner, outer = hmac_pads(key)
    con = duckdb.connect()
    got = [t for (t,) in con.execute(
        f"SELECT {id_token_sql('x')} FROM unnest($ids) WITH ORDINALITY u(x, i) ORDER BY i",
        {"ids": ids, "inner": inner, "outer": outer}).fetchall()]
    assert got == [id_token(key, x) for x in ids]
    assert len(set(got)) == len(ids)


def test_the_demo_secret_is_created_once_and_readable_by_the_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EWS_PSEUDONYM_KEY_FILE", raising=False)
    home = EwsHome(root=tmp_path / "home")
    key = home.pseudonym_key()
    assert len(key) == 32 and home.pseudonym_key() == key
    assert stat.S_IMODE(os.stat(home.key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(home.keys_dir).st_mode) == 0o700


def test_a_deployment_key_file_that_does_not_exist_is_an_error_not_a_new_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EWS_PSEUDONYM_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(FileNotFoundError):
        EwsHome.from_env(tmp_path).pseudonym_key()  # the deployment reads the variable


def test_every_feature_has_a_known_group_a_thai_label_and_a_unique_name() -> None:
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    assert all(f.group in GROUPS and f.th and f.en for f in FEATURES)
    assert catalogue_markdown().count("\n") == len(FEATURES) + 1
