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
    # issue 15: each pupil's latest recorded action (serving.actions.annotate)
    ("action_th", "การดำเนินการล่าสุด"),
    ("action_status_th", "สถานะ"),
    ("follow_up_due", "วันนัดติดตาม"),
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


def caveat_line(caveat: dict[str, str] | None) -> str | None:
    """The round's population caveat (census late) as one line, Thai first; None when there is none."""
    return f"{caveat['th']} / {caveat['en']}" if caveat else None


def to_csv(rows: list[dict[str, Any]], caveat: dict[str, str] | None = None) -> bytes:
    """UTF-8 with a byte-order mark, so Excel opens Thai text correctly. A round whose census was
    late starts with one line saying so (`caveat`), above the header, where nobody can miss it."""
    cols = _columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    if caveat:
        w.writerow([caveat_line(caveat)])
    w.writerow([h for _, h in cols])
    for r in rows:
        w.writerow(["" if _cell(k, r) is None else _cell(k, r) for k, _ in cols])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(rows: list[dict[str, Any]], title: str, caveat: dict[str, str] | None = None) -> bytes:
    """The title, then (census late) the caveat in bold red, then the header and the rows."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    cols = _columns(rows)
    wb = Workbook(write_only=False)
    ws = wb.active
    ws.title = "รายชื่อ"
    ws.append([title])
    if caveat:
        ws.append([caveat_line(caveat)])
        ws.cell(row=ws.max_row, column=1).font = Font(bold=True, color="AA0000")
    ws.append([h for _, h in cols])
    for c in ws[ws.max_row]:
        c.font = Font(bold=True)
    for r in rows:
        ws.append([_cell(k, r) for k, _ in cols])
    widths = {"name": 28, "reasons_th": 90, "student_key": 24, "action_th": 28}
    for i, (k, _) in enumerate(cols):
        ws.column_dimensions[chr(ord("A") + i)].width = widths.get(k, 12)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
