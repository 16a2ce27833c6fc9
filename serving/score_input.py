"""What `POST /score` accepts: the body `{"rows": [feature row, ...]}` checked value by value.

The guard (`serving.guard`) calls `check_score_body` on the raw JSON before BentoML parses the
body into pydantic rows, so a bad request costs one pass over at most `max_body` bytes and is
refused with the first few problems named by row and field; the service calls `check_categories`
with the champion's category lists, which only the loaded model knows. Plausibility ranges below
are wide on purpose: they refuse values no real pupil can have (a rate of 7, a negative count,
1e308), not unusual ones.
"""

from __future__ import annotations

import math
import re
from typing import Any

from features.pointintime.spec import BY_NAME, FEATURE_NAMES

MAX_SCORE_ROWS = 10_000
MAX_STRING = 64  # the longest category level is a few characters; 64 leaves room and no more
MAX_PROBLEMS = 10  # problems named in one answer: enough to fix a file, never a megabyte of errors
# A number written as a string ("0", "1.5"), as a Decimal column exports it: accepted, as pydantic
# accepted it before; anything else in a string is not a number.
_NUMERIC_STRING = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,17})?")

# (low, high) inclusive; a feature not listed takes its dtype's default range.
_RANGES: dict[str, tuple[float, float]] = {
    "att_trend_3m": (-1.0, 1.0),
    "gpa_last": (0.0, 4.0), "gpa_interim": (0.0, 4.0), "gpa_trend": (-4.0, 4.0),
    "income_per_person": (0.0, 10_000_000.0),
    "household_size": (0.0, 100.0),
    "travel_minutes": (0.0, 1_440.0),
    "school_students": (0.0, 100_000.0),
    "school_distance_km": (0.0, 5_000.0),
    "age": (0.0, 40.0),
    "grade_level": (1.0, 15.0),
    "term": (1.0, 2.0),
    "hh_deprivations": (0.0, 8.0),
    "care_learning": (0.0, 2.0), "care_behaviour_emotion": (0.0, 2.0), "care_family": (0.0, 2.0),
    "care_economic": (0.0, 2.0), "care_substances": (0.0, 2.0), "care_sexual_behaviour": (0.0, 2.0),
    "over_age_years": (-5.0, 30.0),
}
_DEFAULT_INT = (0.0, 1_000.0)  # counts: months, marks, moves, censuses, screened dimensions
_DEFAULT_FLOAT = (-1e7, 1e7)


def _range(name: str) -> tuple[float, float]:
    if name in _RANGES:
        return _RANGES[name]
    if "rate" in name:
        return (0.0, 1.0)
    return _DEFAULT_INT if BY_NAME[name].dtype == "int" else _DEFAULT_FLOAT


class ScoreInputError(Exception):
    """A /score body the caller must fix; `status` is 413 (too many rows) or 422 (bad values)."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def _check_value(name: str, v: Any) -> str | None:
    """Why `v` is not a valid value of feature `name`, or None when it is (null is always valid)."""
    if v is None:
        return None
    dtype = BY_NAME[name].dtype
    if dtype == "category":
        if not isinstance(v, str):
            return "must be a string or null"
        if len(v) > MAX_STRING:
            return f"is longer than {MAX_STRING} characters"
        return None
    if dtype == "bool":
        # JSON true/false; 0/1 as a DataFrame export writes them is accepted too.
        return None if isinstance(v, bool) or (type(v) is int and v in (0, 1)) else "must be true, false or null"
    if isinstance(v, str) and _NUMERIC_STRING.fullmatch(v):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "must be a number or null"
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number (no NaN or Infinity)"
    if dtype == "int" and isinstance(v, float) and not v.is_integer():
        return "must be a whole number"
    lo, hi = _range(name)
    if not lo <= v <= hi:
        return f"must be from {lo:g} to {hi:g}"
    return None


def check_score_body(body: Any, max_rows: int = MAX_SCORE_ROWS) -> int:
    """The number of rows in a valid /score body; else ScoreInputError naming rows and fields."""
    if not isinstance(body, dict) or set(body) != {"rows"}:
        raise ScoreInputError(422, ['the body must be a JSON object {"rows": [...]}'])
    rows = body["rows"]
    if not isinstance(rows, list):
        raise ScoreInputError(422, ["rows: must be a list of feature rows"])
    if len(rows) > max_rows:
        raise ScoreInputError(413, [f"at most {max_rows} rows per request (got {len(rows)})"])
    problems: list[str] = []
    expected = set(FEATURE_NAMES)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append(f"row {i}: must be an object of feature values")
        else:
            unknown = [k for k in row if k not in expected]
            if unknown:
                problems.append(f"row {i}, field {str(unknown[0])[:MAX_STRING]!r}: not a feature of the catalogue")
            missing = [k for k in FEATURE_NAMES if k not in row]
            if missing:
                problems.append(f"row {i}, field {missing[0]!r}: missing (send null for an unknown value)")
            for k in FEATURE_NAMES:
                if k in row and (why := _check_value(k, row[k])) is not None:
                    problems.append(f"row {i}, field {k!r}: {why}")
                    break
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise ScoreInputError(422, problems[:MAX_PROBLEMS])
    return len(rows)


def check_categories(rows: list[dict[str, Any]], categories: dict[str, list[str]]) -> None:
    """Every category value is one the model was trained with (an unseen level would silently
    score as missing)."""
    problems: list[str] = []
    levels = {name: set(values) for name, values in categories.items()}
    for i, row in enumerate(rows):
        for name, allowed in levels.items():
            v = row.get(name)
            if v is not None and v not in allowed:
                problems.append(f"row {i}, field {name!r}: {str(v)[:MAX_STRING]!r} is not one of "
                                f"{', '.join(sorted(allowed))}")
                break
        if len(problems) >= MAX_PROBLEMS:
            break
    if problems:
        raise ScoreInputError(422, problems)
