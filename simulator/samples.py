"""Small, valid sample deliveries for tests, the benchmark and examples (not used in production).

`valid_row(source, i)` gives a row that passes every rule of the contract (against the registry
from `registry_rows`); tests then break single values on purpose. It lives in the simulator's room
(beside the simulated world) because only tests and benchmarks use it: the pipeline never imports it.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from features.contract import SOURCES
from features.ids import citizen_id_check_digit

SCHOOLS = ("1050100001", "1050100002")
TAMBONS = ("500101", "500102")


def citizen_id(n: int) -> str:
    """A valid Thai citizen ID (first digit 1) derived from n."""
    first12 = f"1{n % 10**11:011d}"
    return first12 + str(citizen_id_check_digit(first12))


def registry_rows() -> dict[str, list[dict[str, str]]]:
    areas = [
        {"tambon_code": t, "tambon_name": f"ตำบล{t}", "amphoe_code": t[:4], "amphoe_name": "เมืองเชียงใหม่",
         "province_code": t[:2], "province_name": "เชียงใหม่", "region": "north"}
        for t in TAMBONS
    ]
    schools = [
        {"school_code": s, "school_name": f"โรงเรียน{s[-1]}", "affiliation": "OBEC", "tambon_code": TAMBONS[k],
         "students": "300", "size_class": "medium", "remote": "0", "distance_km": "2.5"}
        for k, s in enumerate(SCHOOLS)
    ]
    return {"areas": areas, "schools": schools}


def valid_row(source: str, i: int) -> dict[str, str]:
    """A row of `source` that passes every rule; `i` varies the student and the values."""
    s = SOURCES[source]
    row: dict[str, str] = {}
    for c in s.columns:
        k = c.kind
        if k == "student_id":
            v = citizen_id(i)
        elif k == "school_code":
            v = SCHOOLS[i % 2]
        elif k == "tambon_code":
            v = TAMBONS[i % 2]
        elif k == "date":
            v = "2012-03-04" if c.name == "birth_date" else "2025-06-10"
        elif k == "year_month":
            v = "2025-06"
        elif k == "be_year":
            v = "2568"
        elif k == "flag":
            v = str(i % 2)
        elif k == "grade":
            v = "M3"
        elif k == "enum":
            v = next(a for a in c.allowed if a)
        elif k == "int":
            v = str(int(c.min if c.min is not None else 0) + (i % 2 if c.max is None or c.max > 1 else 0))
        elif k == "float":
            v = "1.5"
        else:
            v = {"first_name": f"สมชาย{i}", "last_name": f"ใจดี{i}", "prefix": "เด็กชาย"}.get(c.name, f"ข้อความ {i}")
        row[c.name] = v
    if source == "attendance":
        row.update(school_days="20", days_present="18", days_leave="1", days_absent="1")
    if source == "grades":
        row.update(n_subjects="8", n_mark_0="0", n_mark_r="0", n_mark_ms="0", n_mark_mp="0")
    return row


def csv_text(source: str, rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SOURCES[source].column_names), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_delivery(
    folder: Path, delivery_id: str, files: dict[str, list[dict[str, str]] | str | bytes],
    delivered_on: str = "2025-06-30", system: str = "test",
) -> Path:
    """Write a delivery folder; a file is given as rows, CSV text or raw bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "delivery.json").write_text(
        json.dumps({"delivery_id": delivery_id, "system": system, "delivered_on": delivered_on})
    )
    for source, content in files.items():
        path = folder / f"{source}.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(csv_text(source, content), encoding="utf-8")
    return folder
