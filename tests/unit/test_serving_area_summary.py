"""An area office's summary counts every student once, by group and grade, for the area and each part below it."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from serving.views import summarise_area


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tambon = rng.choice(["580101", "580102", "580201", None], size=n, p=[0.4, 0.3, 0.25, 0.05])
    names = {"580101": "จองคำ", "580102": "หาดทราย", "580201": "ขุนยวม", None: None}
    group = rng.choice(["problem", "at_risk", "normal", None], size=n, p=[0.05, 0.15, 0.7, 0.1])
    grade = rng.choice(["K1", "P1", "P6", "M1", "M3", None], size=n)
    return pd.DataFrame({
        "tambon_code": pd.Series(tambon, dtype="str"),
        "tambon_name": pd.Series([names[t] for t in tambon], dtype="str"),
        "grade": pd.Series(grade, dtype="string"),
        "risk_group": pd.Series(group, dtype="str"),
    })


def _reference(df: pd.DataFrame) -> dict:
    """Row by row, the obvious way."""
    def count(rows: list[dict]) -> dict:
        by_group = {g: 0 for g in ("problem", "at_risk", "normal", "no_score")}
        by_grade: dict = {}
        for r in rows:
            g = r["risk_group"] if isinstance(r["risk_group"], str) else "no_score"
            by_group[g] += 1
            if isinstance(r["grade"], str):
                by_grade.setdefault(r["grade"], {})
                by_grade[r["grade"]][g] = by_grade[r["grade"]].get(g, 0) + 1
        return {"students": len(rows), "by_group": by_group, "by_grade": by_grade}

    records = df.to_dict("records")
    parts: dict = {}
    for r in records:
        key = tuple(v if isinstance(v, str) else None for v in (r["tambon_code"], r["tambon_name"]))
        parts.setdefault(key, []).append(r)
    return {**count(records), "parts": {k: count(v) for k, v in parts.items()}}


def test_the_area_and_each_part_count_every_student_once_by_group_and_grade() -> None:
    df = _rows(3000, seed=3)
    got = summarise_area(df, "amphoe")
    want = _reference(df)
    assert got["level"] == "amphoe"
    assert got["students"] == 3000 == want["students"]
    assert got["by_group"] == want["by_group"] and sum(got["by_group"].values()) == 3000
    assert got["by_grade"] == want["by_grade"]
    assert {(p["code"], p["name"]): {k: p[k] for k in ("students", "by_group", "by_grade")} for p in got["parts"]} \
        == want["parts"]
    assert sum(p["students"] for p in got["parts"]) == 3000


def test_parts_and_grades_come_in_code_order_with_students_without_an_area_last() -> None:
    got = summarise_area(_rows(500, seed=4), "amphoe")
    codes = [p["code"] for p in got["parts"]]
    assert codes == ["580101", "580102", "580201", None]
    assert list(got["by_grade"]) == sorted(got["by_grade"])
    assert got["by_grade"] and all(got["by_grade"].values())  # something to check: grades, each with a group
    assert all(all(n > 0 for n in groups.values()) for groups in got["by_grade"].values())


def test_an_empty_area_has_zero_counts_and_no_parts() -> None:
    got = summarise_area(_rows(10, seed=5).iloc[:0], "amphoe")
    assert got["students"] == 0 and got["parts"] == [] and set(got["by_group"].values()) == {0}


# --- Small counts: what an area token can learn from every summary of a province ------------------

K = 5
GROUPS = ("problem", "at_risk", "normal", "no_score")


def _province(seed: int) -> pd.DataFrame:
    """A province of three amphoes, two or three tambons each, one to four schools per tambon of
    very different sizes (some with a handful of pupils), grades and risk groups drawn at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(1, 4):
        for t in range(1, int(rng.integers(2, 4)) + 1):
            tambon = f"58{a:02d}{t:02d}"
            for s in range(int(rng.integers(1, 5))):
                n = int(rng.choice([2, 4, 9, 30, 80]))
                for _ in range(n):
                    rows.append({"amphoe_code": tambon[:4], "amphoe_name": f"a{a}", "tambon_code": tambon,
                                 "tambon_name": f"t{tambon}", "school_code": f"10{tambon}{s:02d}",
                                 "school_name": f"s{tambon}{s}",
                                 "grade": rng.choice(["P1", "P6", "M1", "M3", None], p=[0.3, 0.3, 0.2, 0.15, 0.05]),
                                 "risk_group": rng.choice(["problem", "at_risk", "normal", None],
                                                          p=[0.06, 0.14, 0.75, 0.05])})
    df = pd.DataFrame(rows)
    df["grade"] = df["grade"].astype("string")
    return df


def _released(df: pd.DataFrame, primary_only: bool = False) -> dict[str, dict]:
    """Every summary of the province (province, each amphoe, each tambon) as released."""
    from serving.disclosure import SmallCounts
    from serving.views import disclose_summary, plan_area_counts

    plan = plan_area_counts(df)
    if primary_only:  # what withholding only the counts of 1..k-1 would release (the test can fail)
        plan = SmallCounts(plan.counts, frozenset(c for c, n in plan.counts.items() if 0 < n < K), K)
    codes = {"58"} | set(df["amphoe_code"]) | set(df["tambon_code"])
    level = {2: "province", 4: "amphoe", 6: "tambon"}
    return {c: disclose_summary(summarise_area(df[df["tambon_code"].str.startswith(c)], level[len(c)]), c, plan)
            for c in sorted(codes)}


def _attack(released: dict[str, dict], grades: list[str]) -> tuple[dict, dict, list]:
    """An area token's arithmetic: every released count, the sums they obey (a node's total = its
    groups; a group = its grades + the pupils without a grade; a node = its parts), then solve every
    sum with one unknown, again and again. Returns (released values, what it recovers of a withheld
    count or of a count of 1..k-1 never shown, sums)."""
    known: dict = {}
    nulls: set = set()

    def put(cell: tuple, v) -> None:
        if v is None:
            nulls.add(cell)
            return
        assert known.setdefault(cell, v) == v, f"{cell} released as {known[cell]} and as {v}"

    children: dict = {}
    for code, s in released.items():
        node = ("area", code)
        for acc, n in [(s, node)] + [(p, ("school", code, p["code"]) if s["level"] == "tambon" else ("area", p["code"]))
                                     for p in s["parts"]]:
            if n != node:
                children.setdefault(node, []).append(n)
            put((n, "*", "*"), acc["students"])
            for g in GROUPS:
                put((n, "*", g), acc["by_group"][g])
            for gr in grades:  # a grade absent from by_grade, or a group absent from a grade: zero
                for g in GROUPS:
                    put((n, gr, g), acc["by_grade"].get(gr, {}).get(g, 0))
    nodes = {c[0] for c in known}
    slots = [*grades, None]
    sums = []
    for n in nodes:
        for a in ["*", *slots]:
            sums.append(((n, a, "*"), [(n, a, g) for g in GROUPS]))
        for g in ["*", *GROUPS]:
            sums.append(((n, "*", g), [(n, a, g) for a in slots]))
            for a in ["*", *slots]:
                if n in children:
                    sums.append(((n, a, g), [(c, a, g) for c in children[n]]))
    values = dict(known)
    recovered: dict = {}
    changed = True
    while changed:
        changed = False
        for total, parts in sums:
            members = [total, *parts]
            unknown = [m for m in members if m not in values]
            if len(unknown) != 1:
                continue
            u = unknown[0]
            v = (values[total] - sum(values[p] for p in parts if p != u)) if u != total else sum(values[p] for p in parts)
            values[u] = recovered[u] = v
            changed = True
    assert not nulls & set(known), "a count released in one summary and withheld in another"
    return known, {c: v for c, v in recovered.items() if c in nulls or 0 < v < K}, [(t, ps, values) for t, ps in sums]


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_no_count_of_fewer_than_k_pupils_can_be_recovered_from_all_the_summaries_of_a_province(seed: int) -> None:
    df = _province(seed)
    grades = sorted(df["grade"].dropna().unique())
    released = _released(df)
    known, recovered, sums = _attack(released, grades)
    # something was withheld, and most of the province is still told
    withheld = sum(v is None for s in released.values() for v in s["by_group"].values())
    assert withheld > 0 and released["58"]["students"] == len(df)
    # every released count is 0 or at least k
    assert all(v == 0 or v >= K for v in known.values())
    # nothing withheld, and no unshown count of fewer than k pupils, is recovered by subtraction ...
    assert recovered == {}
    # ... and no released total leaves its unknown parts holding fewer than k pupils together
    for total, parts, values in sums:
        if total in values and any(p not in values for p in parts):
            rest = values[total] - sum(values[p] for p in parts if p in values)
            assert rest == 0 or rest >= K, (total, rest)

    # The same attack on a release that withholds only the small counts recovers some of them.
    known, recovered, _ = _attack(_released(df, primary_only=True), grades)
    assert recovered


def test_an_area_of_fewer_than_k_pupils_is_released_as_null() -> None:
    df = _province(11)
    tiny = df[df["school_code"] == df["school_code"].value_counts().index[-1]]
    out = _released(tiny)
    assert len(tiny) < K and out["58"]["students"] is None and out["58"]["suppressed_below"] == K
