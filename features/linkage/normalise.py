"""Normalising Thai names for record linkage.

The same child is spelt differently across systems: tone marks dropped or added, the silent
letter mark ์ (thanthakhat) forgotten, and letters that sound alike swapped (ศ/ษ/ส, ณ/น, ธ/ท/ฑ,
ร/ล, ภ/พ, ฎ/ด, ฏ/ต, ข/ฃ, ค/ฅ). The normal form removes what is often dropped and folds what is
often swapped, so two spellings that a teacher would read as the same name compare equal.
Splink still compares the raw spellings too (Jaro-Winkler), so folding costs little precision.

The same rules are given as a DuckDB SQL expression (set-based over millions of names) and as a
Python function (tests and the row-by-row reference); a test requires they agree.
"""

from __future__ import annotations

# Tone marks, thanthakhat, maitaikhu, nikhahit-like marks often lost or added by typists.
_DROP = "่้๊๋์็ํ"
# Letters folded to one representative sound.
_FOLD = {
    "ษ": "ส", "ศ": "ส", "ซ": "ส",
    "ณ": "น",
    "ธ": "ท", "ฑ": "ท", "ฒ": "ท", "ฐ": "ท", "ฌ": "ช",
    "ล": "ร", "ฬ": "ร",
    "ภ": "พ",
    "ฎ": "ด",
    "ฏ": "ต",
    "ฃ": "ข",
    "ฅ": "ค", "ฆ": "ค",
    "ญ": "ย",
}
# Prefixes a delivery may put into the name field itself.
_PREFIXES = ("เด็กชาย", "เด็กหญิง", "ด.ช.", "ด.ญ.", "นางสาว", "น.ส.", "นาย", "นาง")


def normalise_name(name: str | None) -> str | None:
    """Fold a Thai name to its linkage form; None for empty."""
    if name is None:
        return None
    s = "".join(name.split())  # all whitespace out: 'สม ชาย' and 'สมชาย' are one name
    for p in _PREFIXES:
        if s.startswith(p) and len(s) > len(p):
            s = s[len(p):]
            break
    s = "".join(ch for ch in s if ch not in _DROP)
    s = "".join(_FOLD.get(ch, ch) for ch in s)
    s = s.lower()
    return s or None


def sql_normalise_name(x: str) -> str:
    """The DuckDB form of normalise_name for a VARCHAR expression `x`."""
    expr = f"regexp_replace(coalesce({x}, ''), '\\s+', '', 'g')"
    prefixes = "|".join(p.replace(".", "\\.") for p in _PREFIXES)
    # Strip a prefix only when something remains after it (a name that *is* 'นาย' stays).
    expr = f"regexp_replace({expr}, '^({prefixes})(.+)$', '\\2')"
    expr = f"regexp_replace({expr}, '[{_DROP}]', '', 'g')"
    src = "".join(_FOLD)
    dst = "".join(_FOLD.values())
    expr = f"translate({expr}, '{src}', '{dst}')"
    return f"NULLIF(lower({expr}), '')"
