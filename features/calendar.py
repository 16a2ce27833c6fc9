"""The Thai school calendar as configuration: censuses, terms and scoring rounds.

Academic year 2568 (BE) starts in May 2025 (CE). Term 1 runs mid-May to early October, term 2
November to March. OBEC's DMC census is taken on 10 June (term 1) and 10 November (term 2).
Risk lists are served twice a term: an *early* round soon after the census (the census
delivery has arrived) and a *mid* round with the term's attendance and interim marks so far.

Worked example (default calendar): round "2568-T2-mid"
  academic year 2568 BE -> CE start year 2025; term 2 census = 2025-11-10;
  mid round as-of = (1, 15) counted in the CE year after the start year -> 2026-01-15;
  the label window runs from the as-of date to the next census, term 1 of 2569 = 2026-06-10.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from features.ids import BE_OFFSET

RoundType = Literal["early", "mid"]
ROUND_TYPES: tuple[RoundType, ...] = ("early", "mid")
_ROUND_RE = re.compile(r"^(?P<year>25[0-9]{2})-T(?P<term>[12])-(?P<kind>early|mid)$")


class MonthDay(BaseModel):
    """A month and day; `next_year` marks dates that fall in the CE year after the term starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    month: int = Field(ge=1, le=12)
    day: int = Field(ge=1, le=31)
    next_year: bool = False

    def in_year(self, academic_year_be: int) -> dt.date:
        ce = academic_year_be - BE_OFFSET + (1 if self.next_year else 0)
        return dt.date(ce, self.month, self.day)


class TermCalendar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    starts: MonthDay = Field(description="First school day of the term.")
    ends: MonthDay = Field(description="Last school day of the term.")
    census: MonthDay = Field(description="DMC census date of the term.")
    early_round: MonthDay = Field(description="As-of date of the early scoring round.")
    mid_round: MonthDay = Field(description="As-of date of the mid-term scoring round.")
    interim_marks: MonthDay = Field(description="When interim (mid-term) marks are recorded.")


class SchoolCalendar(BaseModel):
    """The calendar the whole service follows. Versioned: change the schema_version on edits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: int = 1
    term1: TermCalendar = TermCalendar(
        starts=MonthDay(month=5, day=16),
        ends=MonthDay(month=10, day=10),
        census=MonthDay(month=6, day=10),
        early_round=MonthDay(month=7, day=1),
        mid_round=MonthDay(month=8, day=20),
        interim_marks=MonthDay(month=8, day=5),
    )
    term2: TermCalendar = TermCalendar(
        starts=MonthDay(month=11, day=1),
        ends=MonthDay(month=3, day=20, next_year=True),
        census=MonthDay(month=11, day=10),
        early_round=MonthDay(month=12, day=1),
        mid_round=MonthDay(month=1, day=20, next_year=True),
        interim_marks=MonthDay(month=1, day=5, next_year=True),
    )

    def term(self, term: int) -> TermCalendar:
        if term == 1:
            return self.term1
        if term == 2:
            return self.term2
        raise ValueError(f"term must be 1 or 2, got {term}")

    def census_date(self, academic_year_be: int, term: int) -> dt.date:
        return self.term(term).census.in_year(academic_year_be)

    def next_census(self, academic_year_be: int, term: int) -> tuple[int, int, dt.date]:
        """(year, term, date) of the census after the given term's census."""
        y, t = (academic_year_be, 2) if term == 1 else (academic_year_be + 1, 1)
        return y, t, self.census_date(y, t)

    def as_of(self, round_id: str | ScoringRound) -> dt.date:
        r = round_id if isinstance(round_id, ScoringRound) else parse_round(round_id)
        tc = self.term(r.term)
        return (tc.early_round if r.round_type == "early" else tc.mid_round).in_year(r.academic_year)

    def rounds(self, first_year_be: int, last_year_be: int) -> list[ScoringRound]:
        out = []
        for y in range(first_year_be, last_year_be + 1):
            for t in (1, 2):
                for k in ROUND_TYPES:
                    out.append(ScoringRound(academic_year=y, term=t, round_type=k))
        return out


class ScoringRound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    academic_year: int
    term: int
    round_type: RoundType

    @property
    def round_id(self) -> str:
        return f"{self.academic_year}-T{self.term}-{self.round_type}"

    def __str__(self) -> str:
        return self.round_id


def parse_round(round_id: str) -> ScoringRound:
    """'2568-T1-early' -> ScoringRound(2568, 1, 'early'); a clear error otherwise."""
    m = _ROUND_RE.match(round_id)
    if not m:
        raise ValueError(
            f"round {round_id!r} is not of the form YYYY-T1-early / YYYY-T2-mid "
            "(academic year in the Buddhist Era, e.g. 2568-T1-early)"
        )
    return ScoringRound(
        academic_year=int(m["year"]), term=int(m["term"]), round_type=m["kind"]  # type: ignore[arg-type]
    )
