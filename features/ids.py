"""Identifier rules of Thai education data: citizen IDs, G-codes, school/area/grade codes, BE years.

This is the single home of these rules. Two forms are kept side by side on purpose:
plain Python functions (used by the simulator, the row-by-row reference checks and tests) and
SQL expressions (used by ingestion, which validates whole files set-based in DuckDB). A test
feeds both forms the same values and requires the same answers.
"""

from __future__ import annotations

import re
import unicodedata

BE_OFFSET = 543  # Buddhist Era year = Common Era year + 543

GRADES: tuple[str, ...] = (
    "K1", "K2", "K3",
    "P1", "P2", "P3", "P4", "P5", "P6",
    "M1", "M2", "M3", "M4", "M5", "M6",
)
GRADE_TH: dict[str, str] = {
    **{f"K{i}": f"อ.{i}" for i in range(1, 4)},
    **{f"P{i}": f"ป.{i}" for i in range(1, 7)},
    **{f"M{i}": f"ม.{i}" for i in range(1, 7)},
}
# Typical age on 10 June for a child in each grade, used for the over-age rule and the simulator.
GRADE_TYPICAL_AGE: dict[str, int] = {g: 3 + i for i, g in enumerate(GRADES)}  # K1 3, P1 6, M1 12, M6 17

_CITIZEN_RE = re.compile(r"^[0-9]{13}$")
_GCODE_RE = re.compile(r"^G[0-9]{12}$")


def citizen_id_check_digit(first12: str) -> int:
    """The check digit of a Thai citizen ID from its first 12 digits (the DOPA rule)."""
    if len(first12) != 12 or not first12.isdigit():
        raise ValueError("need exactly 12 digits")
    total = sum(int(d) * (13 - i) for i, d in enumerate(first12))
    return (11 - total % 11) % 10


def is_valid_citizen_id(value: str) -> bool:
    """13 digits whose last digit is the check digit of the first 12."""
    if not _CITIZEN_RE.match(value):
        return False
    return citizen_id_check_digit(value[:12]) == int(value[12])


def is_gcode(value: str) -> bool:
    """A G-code: 'G' and 12 digits, given to children without a Thai ID (since 2018)."""
    return bool(_GCODE_RE.match(value))


def id_kind(value: str | None) -> str:
    """Classify a delivered student identifier.

    'thai'      valid 13-digit ID of a Thai national (first digit 1-5 or 8)
    'non_thai'  valid 13-digit ID of a non-Thai resident (first digit 0, 6 or 7)
    'gcode'     a G-code
    'invalid'   present but neither (typo, wrong length, bad check digit)
    'missing'   empty
    """
    v = normalise_id(value)
    if v is None:
        return "missing"
    if is_gcode(v):
        return "gcode"
    if is_valid_citizen_id(v):
        return "non_thai" if v[0] in "067" else "thai"
    return "invalid"


# Characters stripped from a delivered ID: ASCII whitespace, the display dashes, every Unicode
# space separator (the no-break space spreadsheets produce), zero-width space and the BOM.
_ID_STRIP = set("\t\n\v\f\r -\u200b\ufeff")


def normalise_id(value: str | None) -> str | None:
    """Trim spaces and dashes (1-2345-67890-12-3 is a common display form); upper-case G."""
    if value is None:
        return None
    v = "".join(
        ch for ch in value if ch not in _ID_STRIP and unicodedata.category(ch) not in ("Zs", "Zl", "Zp")
    ).upper()
    return v or None


def be_to_ce(year: int) -> int:
    return year - BE_OFFSET


def ce_to_be(year: int) -> int:
    return year + BE_OFFSET


def looks_like_be(year: int) -> bool:
    """A year from 2400 to 2700 is a Buddhist-Era year (CE 1857-2157 never meets a pupil here)."""
    return 2400 <= year <= 2700


def is_valid_school_code(value: str) -> bool:
    """Schools carry a 10-digit code (OBEC's; other systems' codes are mapped to 10 digits)."""
    return bool(re.fullmatch(r"[0-9]{10}", value))


def is_valid_tambon_code(value: str) -> bool:
    """Tambon (sub-district) code: 6 digits = province(2) amphoe(2) tambon(2), no zero parts."""
    return bool(re.fullmatch(r"[1-9][0-9](0[1-9]|[1-9][0-9])(0[1-9]|[1-9][0-9])", value))


# ---------------------------------------------------------------------------------------------
# SQL forms (DuckDB). Each takes a SQL expression of type VARCHAR (already trimmed / normalised)
# and returns a BOOLEAN expression. They never raise on garbage: TRY_CAST and regexp only.


def sql_is_valid_citizen_id(x: str) -> str:
    digits = " + ".join(f"CAST(substr({x}, {i + 1}, 1) AS INTEGER) * {13 - i}" for i in range(12))
    return (
        f"(regexp_full_match({x}, '[0-9]{{13}}') AND "
        f"((11 - (({digits}) % 11)) % 10) = CAST(substr({x}, 13, 1) AS INTEGER))"
    )


def sql_id_kind(x: str) -> str:
    return (
        f"CASE WHEN {x} IS NULL OR {x} = '' THEN 'missing' "
        f"WHEN regexp_full_match({x}, 'G[0-9]{{12}}') THEN 'gcode' "
        f"WHEN {sql_is_valid_citizen_id(x)} THEN "
        f"(CASE WHEN substr({x}, 1, 1) IN ('0', '6', '7') THEN 'non_thai' ELSE 'thai' END) "
        f"ELSE 'invalid' END"
    )


def sql_normalise_id(x: str) -> str:
    return f"NULLIF(upper(regexp_replace({x}, '[\\t\\n\\x{{0B}}\\f\\r \\-\\p{{Z}}\\x{{200B}}\\x{{FEFF}}]', '', 'g')), '')"
