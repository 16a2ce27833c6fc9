"""Tokens are stored hashed, carry one scope, and can be revoked; scopes decide what is visible."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from features.home import EwsHome
from serving.access import TokenStore, create_token, db_path, list_tokens, read_access_log, revoke_token


@pytest.fixture()
def home(tmp_path: Path) -> EwsHome:
    return EwsHome(root=tmp_path)


def test_a_token_is_stored_only_as_its_hash(home: EwsHome) -> None:
    token, info = create_token(home, "school", school="1234567890")
    dump = "\n".join(sqlite3.connect(db_path(home)).iterdump())
    assert token not in dump and token.split("_", 2)[2] not in dump
    assert info.token_id in dump


def test_a_school_token_covers_its_own_school_only(home: EwsHome) -> None:
    token, _ = create_token(home, "school", school="1234567890")
    who = TokenStore(home).authenticate(token)
    assert who is not None and who.sees_names
    assert who.covers_school("1234567890", "580101")
    assert not who.covers_school("1234567891", "580101")
    assert not who.covers_area("58")


def test_an_area_token_covers_schools_whose_tambon_lies_in_its_areas(home: EwsHome) -> None:
    token, _ = create_token(home, "area", areas=["5801"])
    who = TokenStore(home).authenticate(token)
    assert who is not None and not who.sees_names
    assert who.covers_school("1", "580101") and not who.covers_school("1", "580201")
    assert who.covers_area("580101") and not who.covers_area("58")


def test_a_revoked_or_altered_token_is_refused(home: EwsHome) -> None:
    token, info = create_token(home, "auditor")
    store = TokenStore(home)
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authenticate("not a token") is None
    assert revoke_token(home, info.token_id)
    assert store.authenticate(token) is None
    assert list_tokens(home)[0].revoked_at is not None


@pytest.mark.parametrize("role,school,areas", [
    ("school", None, []), ("school", "12345", []), ("area", None, []), ("area", None, ["123"]),
    ("auditor", "1234567890", []), ("boss", None, []),
])
def test_a_token_with_a_wrong_scope_is_not_created(home: EwsHome, role: str, school: str | None, areas: list[str]) -> None:
    with pytest.raises(ValueError):
        create_token(home, role, school=school, areas=areas)


def test_the_access_log_records_the_token_id_and_never_the_token(home: EwsHome) -> None:
    token, info = create_token(home, "auditor")
    store = TokenStore(home)
    who = store.authenticate(token)
    assert who is not None
    store.log(who, "explanation", "2568-T1-early", "Sabc", 1)
    entry = read_access_log(home)[0]
    assert entry["token_id"] == info.token_id and entry["action"] == "explanation"
    assert token not in str(entry)
