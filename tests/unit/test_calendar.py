"""The school calendar as configuration: rounds, as-of dates, censuses."""

from __future__ import annotations

import datetime as dt

import pytest

from features.calendar import SchoolCalendar, parse_round


def test_a_term_two_mid_round_falls_in_the_next_ce_year_and_is_labelled_by_the_next_june_census() -> None:
    cal = SchoolCalendar()
    # 2568 BE starts in 2025 CE; term 2 mid round is on 20 January of the following CE year.
    assert cal.as_of("2568-T2-mid") == dt.date(2026, 1, 20)
    assert cal.census_date(2568, 2) == dt.date(2025, 11, 10)
    assert cal.next_census(2568, 2) == (2569, 1, dt.date(2026, 6, 10))
    assert cal.next_census(2568, 1) == (2568, 2, dt.date(2025, 11, 10))


def test_every_round_comes_after_its_census_and_before_the_next_one() -> None:
    cal = SchoolCalendar()
    for r in cal.rounds(2565, 2570):
        census = cal.census_date(r.academic_year, r.term)
        nxt = cal.next_census(r.academic_year, r.term)[2]
        assert census < cal.as_of(r.round_id) < nxt


def test_there_are_two_rounds_a_term_in_date_order() -> None:
    cal = SchoolCalendar()
    rounds = cal.rounds(2567, 2568)
    assert [r.round_id for r in rounds[:4]] == ["2567-T1-early", "2567-T1-mid", "2567-T2-early", "2567-T2-mid"]
    dates = [cal.as_of(r.round_id) for r in rounds]
    assert dates == sorted(dates)


@pytest.mark.parametrize("bad", ["2568-T3-early", "2025-T1-early", "2568-T1-late", "2568T1early", ""])
def test_a_malformed_round_id_is_refused_with_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match="YYYY-T1-early"):
        parse_round(bad)


def test_the_calendar_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        SchoolCalendar.model_validate({"term3": {}})
