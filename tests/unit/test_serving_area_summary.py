"""An area office's summary counts every student once, by group and grade, for the area and each part below it."""

from __future__ import annotations

import numpy as np
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
