"""The source contract as set-based SQL (DuckDB) over an all-VARCHAR staging relation.

Every relation handed in has `__line` (the physical line, header = 1) and the delivered columns
as VARCHAR. Each function returns SQL text; nothing here touches a database. The rules:

- per column, the first failing check gives one problem: missing (required) → form (type) →
  range / allowed values → registry reference;
- student IDs: a present ID of *absurd form* (letters other than a leading G, or longer than 20
  characters) is quarantined; any other ID is accepted and classified later (features.ids);
- row rules (RowRule.sql) over the typed values, when the columns they use are all valid;
- exact duplicate lines within a file.

Repairs are never silent: a Buddhist-Era year (2400-2700) in a CE date or month column is
converted (-543), a CE year (1900-2099) in a Buddhist-Era year column is converted (+543), and
each conversion is returned by `repairs_sql` for the `repairs` table. Whether a problem found here
quarantines its row or only sets the value to NULL (a detail; see `Column.on_invalid` in the
contract) is decided afterwards, by the pipeline, from the problems these queries return.

Identity columns (personal data) never reach a reason or a value: their problems say
"value withheld: personal data; see the file at this line" and carry NULL.
"""

from __future__ import annotations

import re

from features.contract import Column, RowRule, Source
from features.ids import BE_OFFSET, GRADES, sql_normalise_id

WITHHELD = "value withheld: personal data; see the file at this line"
BE_MIN, BE_MAX = 2400, 2700  # features.ids.looks_like_be
CE_MIN, CE_MAX = 1900, 2099  # a 19xx/20xx year delivered where a BE year was expected
_DATE_RE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_MONTH_RE = "[0-9]{4}-[0-9]{2}"
_INT_RE = "[+-]?[0-9]{1,9}"
_FLOAT_RE = r"[+-]?([0-9]{1,15}(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?"
_TAMBON_RE = "[1-9][0-9](0[1-9]|[1-9][0-9])(0[1-9]|[1-9][0-9])"  # features.ids.is_valid_tambon_code
_SCHOOL_RE = "[0-9]{10}"  # features.ids.is_valid_school_code
# A citizen ID or G-code as delivered, once normalised (ingest of the assignment uses it too).
ID_FORM_RE = "G?[0-9]{1,20}"


def q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _v(col: str, inner: bool = False) -> str:
    """The trimmed value, NULL when empty (spaces and tabs around a value are not data).

    `inner`: the same value, computed once per row by the typed pass as column `__v_<col>`.
    (The tab is written into the literals: DuckDB plans `' ' || chr(9)` anew in every use.)"""
    if inner:
        return q("__v_" + col)
    x = q(col)
    # trim(x, chars) is slow in DuckDB; the byte tests pick the (rare) values that need it and
    # give the very same result for every other value.
    return (f"(CASE WHEN starts_with({x}, ' ') OR starts_with({x}, '\t') OR ends_with({x}, ' ') "
            f"OR ends_with({x}, '\t') THEN NULLIF(trim({x}, ' \t'), '') ELSE NULLIF({x}, '') END)")


def _shown(v: str) -> str:
    """A value quoted for a reason, cut at 80 characters."""
    return f"('''' || left({v}, 80) || (CASE WHEN length({v}) > 80 THEN '…' ELSE '' END) || '''')"


def _num(x: float) -> str:
    return f"{x:g}"


def _year_fixed(v: str) -> tuple[str, str]:
    """(repaired text, was-BE condition) for a YYYY-... value: a BE year becomes CE."""
    y = f"TRY_CAST(substr({v}, 1, 4) AS INTEGER)"
    was_be = f"({y} BETWEEN {BE_MIN} AND {BE_MAX})"
    fixed = f"(CASE WHEN {was_be} THEN lpad(CAST({y} - {BE_OFFSET} AS VARCHAR), 4, '0') || substr({v}, 5) ELSE {v} END)"
    return fixed, was_be


def typed_expr(c: Column, inner: bool = False) -> str:
    """The column's typed value (repairs applied); meaningful only where its checks pass."""
    v = _v(c.name, inner)
    if c.kind == "int":
        return f"CASE WHEN regexp_full_match({v}, '{_INT_RE}') THEN TRY_CAST({v} AS INTEGER) END"
    if c.kind == "float":
        return f"CASE WHEN regexp_full_match({v}, '{_FLOAT_RE}') THEN TRY_CAST({v} AS DOUBLE) END"
    if c.kind == "flag":
        return f"CASE {v} WHEN '1' THEN true WHEN '0' THEN false END"
    if c.kind == "date":
        fixed, _ = _year_fixed(v)
        return f"CASE WHEN regexp_full_match({v}, '{_DATE_RE}') THEN TRY_CAST({fixed} AS DATE) END"
    if c.kind == "year_month":
        fixed, _ = _year_fixed(v)
        return f"CASE WHEN regexp_full_match({v}, '{_MONTH_RE}') THEN TRY_CAST({fixed} || '-01' AS DATE) END"
    if c.kind == "be_year":
        y = f"TRY_CAST({v} AS INTEGER)"
        return (
            f"CASE WHEN regexp_full_match({v}, '[0-9]{{4}}') THEN "
            f"(CASE WHEN {y} BETWEEN {CE_MIN} AND {CE_MAX} THEN {y} + {BE_OFFSET} ELSE {y} END) END"
        )
    if c.kind == "text":
        # Free text is kept exactly as delivered (only an all-blank value counts as missing).
        return f"CASE WHEN {v} IS NOT NULL THEN {q(c.name)} END"
    return v  # enum, grade, school_code, tambon_code: the trimmed code


def _checks(c: Column, registries: dict[str, str], inner: bool = False) -> list[tuple[str, str, str]]:
    """(rule, failing condition, reason SQL) in order; conditions may assume earlier ones passed.

    `inner`: conditions over the typed pass's per-row `__v_<col>` and `__t_<col>` columns (the
    very same values as `_v` and `typed_expr`, computed once); only the conditions are used then."""
    name = c.name
    v = _v(name, inner)
    typed = q("__t_" + name) if inner else typed_expr(c)
    shown = _shown(v)
    pre = lit(f"{name}: ")
    out: list[tuple[str, str, str]] = []
    if c.required:
        out.append(("missing", f"{v} IS NULL", lit(f"{name}: missing (required)")))
    present = f"{v} IS NOT NULL"

    def rng(expr: str) -> None:
        if c.min is not None:
            out.append(("range", f"{present} AND {expr} < {c.min!r}",
                        f"{pre} || CAST({expr} AS VARCHAR) || {lit(f' is below the minimum {_num(c.min)}')}"))
        if c.max is not None:
            out.append(("range", f"{present} AND {expr} > {c.max!r}",
                        f"{pre} || CAST({expr} AS VARCHAR) || {lit(f' is above the maximum {_num(c.max)}')}"))

    # In `inner` mode the range conditions read the typed value: it equals the TRY_CAST wherever
    # the form check passes, and where it fails that check already flags the row.
    if c.kind == "int":
        out.append(("type", f"{present} AND NOT regexp_full_match({v}, '{_INT_RE}')",
                    f"{pre} || {shown} || ' is not a whole number'"))
        rng(typed if inner else f"TRY_CAST({v} AS INTEGER)")
    elif c.kind == "float":
        out.append(("type", f"{present} AND NOT regexp_full_match({v}, '{_FLOAT_RE}')",
                    f"{pre} || {shown} || ' is not a number (use a dot for decimals)'"))
        rng(typed if inner else f"TRY_CAST({v} AS DOUBLE)")
    elif c.kind == "flag":
        out.append(("type", f"{present} AND {v} NOT IN ('0', '1')", f"{pre} || {shown} || ' is not 0 or 1'"))
    elif c.kind in ("date", "year_month"):
        fmt = "a date (YYYY-MM-DD)" if c.kind == "date" else "a month (YYYY-MM)"
        out.append(("type", f"{present} AND ({typed}) IS NULL", f"{pre} || {shown} || {lit(' is not ' + fmt)}"))
    elif c.kind == "be_year":
        out.append(("type", f"{present} AND NOT regexp_full_match({v}, '[0-9]{{4}}')",
                    f"{pre} || {shown} || ' is not a year (Buddhist Era, e.g. 2568)'"))
        rng(f"({typed})")
    elif c.kind in ("enum", "grade"):
        allowed = [a for a in (c.allowed if c.kind == "enum" else GRADES) if a != ""]
        listed = ", ".join(allowed) if len(allowed) <= 16 else "see `ews contract`"
        out.append(("allowed", f"{present} AND {v} NOT IN ({', '.join(lit(a) for a in allowed)})",
                    f"{pre} || {shown} || {lit(' is not one of: ' + listed)}"))
    elif c.kind in ("school_code", "tambon_code"):
        regex, what, reg = (
            (_SCHOOL_RE, "a 10-digit school code", "school registry") if c.kind == "school_code"
            else (_TAMBON_RE, "a 6-digit tambon code", "area registry")
        )
        out.append(("type", f"{present} AND NOT regexp_full_match({v}, '{regex}')",
                    f"{pre} || {shown} || {lit(' is not ' + what)}"))
        if c.references_registry:
            out.append(("registry", f"{present} AND {v} NOT IN (SELECT code FROM {registries[c.kind]})",
                        f"{lit(name + ' ')} || {v} || {lit(' is not in the ' + reg)}"))
    elif c.kind == "student_id":
        norm = sql_normalise_id(q(name))
        out.append(("id_form", f"{norm} IS NOT NULL AND NOT regexp_full_match({norm}, '{ID_FORM_RE}')",
                    lit(f"{name}: not a student ID (13 digits, or G and 12 digits; letters or more "
                        f"than 20 characters cannot be repaired); {WITHHELD}")))
    if c.personal:
        # Reasons of personal-data columns (identity, the birth date) never show the value.
        out = [(rule, cond, lit(f"{name}: missing (required)") if rule == "missing"
                else (reason if rule == "id_form" else lit(f"{name}: invalid ({rule}); {WITHHELD}")))
               for rule, cond, reason in out]
    return out


def column_problems_sql(source: Source, rel: str, registries: dict[str, str]) -> list[str]:
    """One SELECT per column giving (__line, column_name, rule, reason, value) of failing rows.

    `registries` maps 'school_code' / 'tambon_code' to a relation with a `code` column."""
    out = []
    for c in source.columns:
        checks = _checks(c, registries)
        if not checks:
            continue
        rule = "CASE " + " ".join(f"WHEN {cond} THEN {lit(r)}" for r, cond, _ in checks) + " END"
        reason = "CASE " + " ".join(f"WHEN {cond} THEN {why}" for _, cond, why in checks) + " END"
        value = "NULL" if c.personal else f"left({q(c.name)}, 500)"
        any_fail = " OR ".join(f"({cond})" for _, cond, _ in checks)
        out.append(
            f"SELECT __line, {lit(c.name)} AS column_name, {rule} AS rule, {reason} AS reason, "
            f"{value} AS value FROM {rel} WHERE {any_fail}"
        )
    return out


_NEGATE = {"=": "≠", "<=": ">", ">=": "<", "<": "≥", ">": "≤", "<>": "=", "!=": "="}
_ARITH = re.compile(r"^[\w\s+\-*]+?(<=|>=|<>|!=|=|<|>)[\w\s+\-*]+$")


def rule_columns(source: Source, rule: RowRule) -> list[str]:
    names = set(source.column_names)
    seen: list[str] = []
    for tok in re.findall(r"[A-Za-z_][A-Za-z_0-9]*", rule.sql):
        if tok in names and tok not in seen:
            seen.append(tok)
    return seen


def _rule_detail(source: Source, rule: RowRule) -> str:
    """SQL text showing the values that broke the rule, e.g. '12 + 0 + 3 ≠ 20'."""
    cols = rule_columns(source, rule)
    m = _ARITH.match(rule.sql.strip())
    if m and not any(source.column(c).personal for c in cols):
        parts: list[str] = []
        for tok in re.findall(r"[A-Za-z_][A-Za-z_0-9]*|<=|>=|<>|!=|[=<>]|[^A-Za-z_<>=!]+", rule.sql.strip()):
            if tok in cols:
                parts.append(f"CAST({q(tok)} AS VARCHAR)")
            elif tok in _NEGATE:
                parts.append(lit(_NEGATE[tok]))
            else:
                parts.append(lit(tok))
        return " || ".join(parts)
    shown = []
    for c in cols:
        val = lit("withheld") if source.column(c).personal else f"coalesce(CAST({q(c)} AS VARCHAR), '')"
        shown.append(f"{lit(c + ' ')} || {val}")
    return " || ', ' || ".join(shown) if shown else "''"


def row_rule_sql(source: Source, typed_rel: str) -> list[str]:
    """SELECTs of (__line, column_name, rule, reason, value) for rows breaking a RowRule."""
    out = []
    for rule in source.row_rules:
        cols = rule_columns(source, rule)
        valid = " AND ".join(f"{q(c)} IS NOT NULL" for c in cols) or "true"
        detail = _rule_detail(source, rule)
        out.append(
            f"SELECT __line, {lit(', '.join(rule.columns))} AS column_name, {lit(rule.name)} AS rule, "
            f"{lit(rule.message + ' (')} || {detail} || ')' AS reason, {detail} AS value "
            f"FROM {typed_rel} WHERE {valid} AND NOT coalesce(({rule.sql}), false)"
        )
    return out


def duplicates_sql(rel: str, columns: list[str]) -> str:
    """Exact duplicate lines within the file: every line after the first of a group.

    A 64-bit hash finds candidate groups cheaply; the exact comparison runs only on those."""
    cols = ", ".join(q(c) for c in columns)
    return f"""
        WITH h AS (SELECT __line, hash({cols}) AS h FROM {rel}),
        cand AS (SELECT h FROM h GROUP BY h HAVING count(*) > 1),
        sub AS (SELECT r.* FROM {rel} r SEMI JOIN (SELECT __line FROM h SEMI JOIN cand USING (h)) s
                ON r.__line = s.__line),
        grp AS (SELECT __line, min(__line) OVER (PARTITION BY {cols}) AS first_line FROM sub)
        SELECT __line, NULL AS column_name, 'duplicate' AS rule,
               'exact duplicate of line ' || first_line AS reason, NULL AS value
        FROM grp WHERE __line <> first_line"""


def typed_select_sql(source: Source, rel: str) -> str:
    """__line, every contract column typed (identity columns as delivered), and __norm (the
    normalised student ID) when the source has one."""
    parts = ["__line"]
    for c in source.columns:
        if c.kind == "student_id":
            parts.append(f"{sql_normalise_id(q(c.name))} AS __norm")
        elif c.identity:
            parts.append(f"{typed_expr(c)} AS {q(c.name)}")
        else:
            parts.append(f"{typed_expr(c)} AS {q(c.name)}")
    return f"SELECT {', '.join(parts)} FROM {rel}"


def _repair_cond(c: Column, inner: bool = False) -> str | None:
    """The condition under which column `c` of a row is repaired (None: never)."""
    v = _v(c.name, inner)
    if c.kind in ("date", "year_month"):
        _, was_be = _year_fixed(v)
        typed = q("__t_" + c.name) if inner else typed_expr(c)
        return f"{was_be} AND ({typed}) IS NOT NULL"
    if c.kind == "be_year":
        y = f"TRY_CAST({v} AS INTEGER)"
        return f"regexp_full_match({v}, '[0-9]{{4}}') AND {y} BETWEEN {CE_MIN} AND {CE_MAX}"
    return None


def repairs_sql(source: Source, rel: str) -> list[str]:
    """SELECTs of (__line, column_name, raw_value, repaired_value, rule) for every BE/CE repair."""
    out = []
    for c in source.columns:
        v = _v(c.name)
        typed = typed_expr(c)
        cond = _repair_cond(c)
        if c.kind in ("date", "year_month"):
            shown = (f"CAST({typed} AS VARCHAR)" if c.kind == "date" and not c.month_only_as
                     else f"strftime({typed}, '%Y-%m')")
            # A birth date is logged as the month the warehouse keeps, never as delivered.
            raw = "CAST(NULL AS VARCHAR)" if c.personal else q(c.name)
            out.append(
                f"SELECT __line, {lit(c.name)} AS column_name, {raw} AS raw_value, {shown} AS repaired_value, "
                f"'be_year_to_ce' AS rule FROM {rel} WHERE {cond}"
            )
        elif c.kind == "be_year":
            y = f"TRY_CAST({v} AS INTEGER)"
            out.append(
                f"SELECT __line, {lit(c.name)} AS column_name, {q(c.name)} AS raw_value, "
                f"CAST({y} + {BE_OFFSET} AS VARCHAR) AS repaired_value, 'ce_year_to_be' AS rule FROM {rel} "
                f"WHERE {cond}"
            )
    return out


# ---------------------------------------------------------------------------------------------
# One pass per file. The functions above give the exact problems, reasons and repairs; running
# them over every row costs one scan per column (and a regexp_replace per row for IDs). Instead
# ingestion makes ONE pass that types every column and flags the rows where ANY check fails or
# ANY repair applies (the OR of exactly the conditions above), then runs the exact queries above
# only on those few flagged rows. Student IDs are normalised and form-checked once per DISTINCT
# raw ID (`id_map_sql`) and joined back.


def id_map_sql(rel: str, column: str = "student_id") -> str:
    """Distinct raw IDs of `rel` with their normalised form and whether that form is absurd
    (the `id_form` check of `_checks`): (__raw, __norm, __bad_form)."""
    norm = sql_normalise_id("__raw")
    return (
        f"SELECT __raw, __norm, (__norm IS NOT NULL AND NOT regexp_full_match(__norm, '{ID_FORM_RE}')) AS __bad_form "
        f"FROM (SELECT __raw, {norm} AS __norm FROM (SELECT DISTINCT {q(column)} AS __raw FROM {rel} "
        f"WHERE {q(column)} IS NOT NULL))"
    )


def column_flag_sql(c: Column, registries: dict[str, str], bad_form: str | None) -> str | None:
    """TRUE when a check of column `c` fails: the OR of exactly the conditions of
    `column_problems_sql` (the WHERE of its query for `c`), over the typed pass's inner columns.
    The `id_form` check is replaced by `bad_form` (the precomputed flag of the row's raw ID, the
    same condition evaluated once per distinct ID). None: the column has no checks."""
    conds = []
    for rule, cond, _ in _checks(c, registries, inner=True):
        if rule == "id_form":
            assert bad_form is not None
            cond = f"coalesce({bad_form}, false)"
        conds.append(f"({cond})")
    return " OR ".join(conds) if conds else None


def rule_flag_sql(source: Source, rule: RowRule) -> str:
    """TRUE when `row_rule_sql` reports the row for `rule` (over the typed columns)."""
    valid = " AND ".join(f"{q(c)} IS NOT NULL" for c in rule_columns(source, rule)) or "true"
    return f"({valid} AND NOT coalesce(({rule.sql}), false))"


def typed_pass_sql(source: Source, rel: str, registries: dict[str, str], header: list[str],
                   id_map: str | None) -> tuple[str, list[tuple[str, str, str]]]:
    """The single pass over a staged file, and its flag columns as (flag, kind, name) with kind
    'column' (a check of that column fails), 'repair' (that column is repaired) or 'rule'.

    The pass gives __line, every contract column typed (student_id as __norm, __tok and __kind
    from `id_map`), the flags, and __h (a 64-bit hash of the delivered values, for duplicate
    candidates). Trimmed values (`__v_*`) and typed values (`__t_*`) are computed once per row
    in inner projections and shared by the typed columns and every check."""
    cols = [c for c in source.columns if c.kind != "student_id"]
    inner1 = ["r.*"] + [f"{_v(c.name)} AS {q('__v_' + c.name)}" for c in cols]
    inner1.append(f"hash({', '.join('r.' + q(h) for h in header)}) AS __h")
    from1 = f"(SELECT {', '.join(inner1)} FROM {rel} r)"
    inner2 = ["r1.*"] + [f"{typed_expr(c, inner=True)} AS {q('__t_' + c.name)}" for c in cols]
    if id_map:
        inner2 += ["m.__norm", "m.__tok", "m.__kind", "m.__bad_form"]
        from2 = f"(SELECT {', '.join(inner2)} FROM {from1} r1 LEFT JOIN {id_map} m ON r1.student_id = m.__raw)"
    else:
        from2 = f"(SELECT {', '.join(inner2)} FROM {from1} r1)"
    flags: list[tuple[str, str, str]] = []
    out = ["__line"]
    flag_sql = []
    for k, c in enumerate(source.columns):
        if c.kind == "student_id":
            out += ["__norm", "__tok", "__kind"]
        else:
            out.append(f"{q('__t_' + c.name)} AS {q(c.name)}")
        cond = column_flag_sql(c, registries, "__bad_form" if id_map else None)
        if cond is not None:
            flags.append((f"__f{k}", "column", c.name))
            flag_sql.append(f"({cond}) AS __f{k}")
        rcond = _repair_cond(c, inner=True)
        if rcond is not None:
            flags.append((f"__r{k}", "repair", c.name))
            flag_sql.append(f"({rcond}) AS __r{k}")
    out += flag_sql + ["__h"]
    sql = f"SELECT {', '.join(out)} FROM {from2}"
    if source.row_rules:
        # Row rules read the typed columns: one more projection over the one above.
        rr = []
        for k, rule in enumerate(source.row_rules):
            flags.append((f"__rr{k}", "rule", rule.name))
            rr.append(f"{rule_flag_sql(source, rule)} AS __rr{k}")
        sql = f"SELECT *, {', '.join(rr)} FROM ({sql})"
    return sql, flags


def duplicates_from_hash_sql(rel: str, typed: str, columns: list[str]) -> str:
    """`duplicates_sql`, reusing the hash `__h` computed by the typed pass: the same groups."""
    cols = ", ".join(q(c) for c in columns)
    return f"""
        WITH cand AS (SELECT __h FROM {typed} GROUP BY __h HAVING count(*) > 1),
        sub AS (SELECT r.* FROM {rel} r SEMI JOIN (SELECT __line FROM {typed} SEMI JOIN cand USING (__h)) s
                ON r.__line = s.__line),
        grp AS (SELECT __line, min(__line) OVER (PARTITION BY {cols}) AS first_line FROM sub)
        SELECT __line, NULL AS column_name, 'duplicate' AS rule,
               'exact duplicate of line ' || first_line AS reason, NULL AS value
        FROM grp WHERE __line <> first_line"""
