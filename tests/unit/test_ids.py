"""Identifier rules: citizen-ID check digit, G-codes, ID kinds, BE/CE years."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from features.ids import (
    be_to_ce, ce_to_be, citizen_id_check_digit, id_kind, is_gcode, is_valid_citizen_id,
    is_valid_tambon_code, looks_like_be, normalise_id,
)


def _with_check(first12: str) -> str:
    return first12 + str(citizen_id_check_digit(first12))


def test_a_known_citizen_id_has_the_check_digit_the_dopa_rule_gives() -> None:
    # 1-1017-00203-45-?: sum d_i*(13-i) = 1*13+1*12+0+1*10+7*9+0+0+2*6+0+3*4+4*3+5*2 = 144;
    # (11 - 144 % 11) % 10 = (11 - 1) % 10 = 0
    assert citizen_id_check_digit("110170020345") == 0
    assert is_valid_citizen_id("1101700203450")
    assert not is_valid_citizen_id("1101700203451")


@given(st.text(alphabet="0123456789", min_size=12, max_size=12))
def test_every_id_built_with_its_check_digit_is_valid_and_any_other_last_digit_is_not(first12: str) -> None:
    good = _with_check(first12)
    assert is_valid_citizen_id(good)
    for d in "0123456789":
        if d != good[-1]:
            assert not is_valid_citizen_id(first12 + d)


@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 11), st.integers(1, 9))
def test_a_changed_digit_is_caught_except_where_the_scheme_is_blind(first12: str, pos: int, delta: int) -> None:
    # The DOPA scheme has two blind spots, which is why linkage also compares raw IDs by edit
    # distance: the third digit has weight 11 (= 0 mod 11), and sums whose residues are 0 and 10
    # both give check digit 1.
    good = _with_check(first12)
    changed = good[:pos] + str((int(good[pos]) + delta) % 10) + good[pos + 1:]
    residue = lambda x: sum(int(d) * (13 - i) for i, d in enumerate(x[:12])) % 11  # noqa: E731
    blind = pos == 2 or {residue(good), residue(changed)} == {0, 10}
    assert is_valid_citizen_id(changed) is blind


def test_id_kinds_tell_thai_non_thai_gcode_invalid_and_missing_apart() -> None:
    assert id_kind(_with_check("110170020345")) == "thai"
    assert id_kind(_with_check("010170020345")) == "non_thai"
    assert id_kind(_with_check("610170020345")) == "non_thai"
    assert id_kind("G123456789012") == "gcode"
    assert id_kind("G12345") == "invalid"
    assert id_kind("12345") == "invalid"
    assert id_kind("") == "missing"
    assert id_kind(None) == "missing"
    assert is_gcode("G000000000001") and not is_gcode("g000000000001")


def test_normalising_an_id_removes_the_display_dashes_and_spaces() -> None:
    assert normalise_id(" 1-1017-00203-45-0 ") == "1101700203450"
    assert normalise_id("g123456789012") == "G123456789012"
    assert normalise_id("  ") is None


def test_buddhist_era_years_convert_both_ways_and_are_recognised() -> None:
    assert be_to_ce(2568) == 2025 and ce_to_be(2025) == 2568
    assert looks_like_be(2555) and not looks_like_be(2012)


@pytest.mark.parametrize("code,ok", [("580101", True), ("580001", False), ("5801", False), ("050101", False)])
def test_tambon_codes_have_three_non_zero_two_digit_parts(code: str, ok: bool) -> None:
    assert is_valid_tambon_code(code) is ok
