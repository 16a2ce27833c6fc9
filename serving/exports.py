"""A school's list as CSV or Excel, with Thai column headers, for staff who work in spreadsheets."""

from __future__ import annotations

import csv
import io
from typing import Any

# (key in a list row, Thai header). Name and room appear only when the list carries them.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("rank", "ลำดับ"),
    ("name", "ชื่อ-สกุล"),
    ("grade", "ชั้น"),
    ("room", "ห้อง"),
    ("risk_group_th", "กลุ่ม"),
    ("risk_score", "คะแนนความเสี่ยง (%)"),
    ("reasons_th", "เหตุผลหลัก"),
    ("student_key", "รหัสนักเรียน (นามแฝง)"),
)


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    has_names = bool(rows) and "name" in rows[0]
    return [(k, h) for k, h in COLUMNS if has_names or k not in ("name", "room")]


def _cell(key: str, row: dict[str, Any]) -> Any:
    v = row.get(key)
    if key == "risk_score" and v is not None:
        return round(100 * v, 1)
    if key == "risk_group_th" and v is None:
        return "ไม่มีคะแนน"
    return v


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    """UTF-8 with a byte-order mark, so Excel opens Thai text correctly."""
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([h for _, h in cols])
    for r in rows:
        w.writerow(["" if _cell(k, r) is None else _cell(k, r) for k, _ in cols])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(rows: list[dict[str, Any]], title: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    cols = _columns(rows)
    wb = Workbook(write_only=False)
    ws = wb.active
    ws.title = "รายชื่อ"
    ws.append([title])
    ws.append([h for _, h in cols])
    for c in ws[2]:
        c.font = Font(bold=True)
    for r in rows:
        ws.append([_cell(k, r) for k, _ in cols])
    widths = {"name": 28, "reasons_th": 90, "student_key": 24}
    for i, (k, _) in enumerate(cols):
        ws.column_dimensions[chr(ord("A") + i)].width = widths.get(k, 12)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
