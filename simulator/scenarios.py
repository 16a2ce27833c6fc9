"""Scenarios: changes to the simulated world from a given term on, to prove monitoring sees them.

A scenario is configuration (`Scenario`, an optional field of `SimulationConfig`). With no scenario
the simulator is exactly what it was: no hook draws a random number, so every file before the
scenario's first term is byte-identical to the unchanged world's, and with `scenario=None` every
file is. Three kinds of change, each of which a real deployment has lived through:

* `EconomicShock`: household incomes in some provinces fall (poverty rises; the dropout hazard,
  shock probabilities and CCT screening follow through the generating process) and children miss
  more school days (a shift of the daily attendance logit).
* `DataBreak`: a source changes what it delivers while the world stays the same: a column arrives
  empty, or the CCT income is given per household instead of per person (multiplied by the
  household size).
* `ProcessChange`: the dropout process itself changes: a new effect on the dropout logit for some
  grades (for instance a new transition barrier), invisible in the features.

Changes start at the beginning of term `(from_year, from_term)`, right after that term's census,
and hold for every later term. An economic shock's income fall happens once, at that term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from features.ids import GRADES


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EconomicShock(_Model):
    """Poverty and absence rise in some provinces."""

    kind: Literal["economic_shock"] = "economic_shock"
    provinces: tuple[str, ...] = Field((), description="Province codes hit (2 digits); empty = every province.")
    income_factor: float = Field(0.5, gt=0, description="Household income per person is multiplied by this, once.")
    attendance_logit: float = Field(-0.9, description="Added to every hit child's daily attendance logit from then on.")


class DataBreak(_Model):
    """A source changes what it delivers; the world itself does not change."""

    kind: Literal["data_break"] = "data_break"
    source: str = Field("cct_screening", description="Source whose files change.")
    column: str = Field("income_per_person", description="Column that changes.")
    change: Literal["empty", "per_household"] = Field(
        "per_household",
        description="'empty': the column arrives empty in every row; 'per_household': the CCT income is "
                    "delivered per household (income per person x household_size) under the same name.")


class ProcessChange(_Model):
    """The dropout process changes: a new effect on the dropout logit of some grades."""

    kind: Literal["process_change"] = "process_change"
    grades: tuple[str, ...] = Field(("P5", "P6", "M1", "M2"), description="Grades the new effect applies to.")
    dropout_logit: float = Field(2.5, description="Added to the dropout logit at the term end of those grades.")


Change = Annotated[EconomicShock | DataBreak | ProcessChange, Field(discriminator="kind")]


class Scenario(_Model):
    """Named changes applied from the start of term (from_year, from_term) on."""

    name: str = Field(description="Short name, recorded in truth/process.json.")
    from_year: int = Field(ge=2500, le=2700, description="First academic year (BE) of the change.")
    from_term: int = Field(1, ge=1, le=2, description="First term of the change in that year.")
    changes: tuple[Change, ...] = Field(description="What changes.")

    def active(self, year: int, term: int) -> bool:
        return (year, term) >= (self.from_year, self.from_term)

    def starts(self, year: int, term: int) -> bool:
        return (year, term) == (self.from_year, self.from_term)

    def of_kind(self, kind: type[_Model]) -> list:
        return [c for c in self.changes if isinstance(c, kind)]


def economic_shock(from_year: int, from_term: int = 1, **kw: object) -> Scenario:
    return Scenario(name="economic_shock", from_year=from_year, from_term=from_term, changes=(EconomicShock(**kw),))


def data_break(from_year: int, from_term: int = 1, **kw: object) -> Scenario:
    return Scenario(name="data_break", from_year=from_year, from_term=from_term, changes=(DataBreak(**kw),))


def process_change(from_year: int, from_term: int = 1, **kw: object) -> Scenario:
    return Scenario(name="process_change", from_year=from_year, from_term=from_term, changes=(ProcessChange(**kw),))


# Named scenarios, as `ews simulate --scenario NAME` offers them: a one-line description and the
# change with its defaults. The CLI chooses when it starts (default: the last simulated year).
NAMED_SCENARIOS: dict[str, tuple[str, Callable[..., Scenario]]] = {
    "economic_shock": ("household incomes halve in every province and children miss more days", economic_shock),
    "data_break": ("the CCT income arrives per household, not per person; the world itself is unchanged", data_break),
    "process_change": ("a new transition barrier: +2.5 on the dropout logit of P5-M2, invisible in the features",
                       process_change),
}


def named_scenario(name: str, from_year: int, from_term: int = 1) -> Scenario:
    """The scenario called `name` (NAMED_SCENARIOS), starting at term (from_year, from_term)."""
    if name not in NAMED_SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of: {', '.join(NAMED_SCENARIOS)}")
    return NAMED_SCENARIOS[name][1](from_year, from_term)


# --- what the simulator calls (pure: no random numbers, so the unchanged parts stay identical) -----


def hits_province(change: EconomicShock, province_code: str) -> bool:
    return not change.provinces or province_code in change.provinces


def income_after_shock(income: np.ndarray, factor: float) -> np.ndarray:
    """Incomes after a fall, rounded to 10 baht and at least 200 (the simulator's own floor)."""
    return np.maximum(200, np.round(income * factor / 10) * 10).astype(income.dtype)


def dropout_logit_by_grade(changes: list[ProcessChange]) -> np.ndarray:
    """Logit added per grade index (GRADES order)."""
    out = np.zeros(len(GRADES))
    for c in changes:
        for g in c.grades:
            out[GRADES.index(g)] += c.dropout_logit
    return out


def apply_breaks(table: pa.Table, source: str, breaks: list[DataBreak]) -> pa.Table:
    """The delivered table after the data breaks that concern `source`."""
    for b in breaks:
        if b.source != source or b.column not in table.column_names:
            continue
        i = table.column_names.index(b.column)
        col = table.column(i)
        if b.change == "empty":
            new = pa.nulls(len(table), type=col.type)
        else:
            new = pc.multiply(col, table.column("household_size"))
        table = table.set_column(i, b.column, new)
    return table
