"""The printable one-page pupil sheet (issue 15, part 4): print-ready HTML in Thai, for the
student-care meetings and referrals where a school decides what to do for a child.

Where it sits: serving, after the list. The service's sheet route (school tokens, the pupil's own
school only: the sheet carries the name and every value) calls `pupil_sheet` with the pupil's rows
in every published round it holds; nothing is fetched from the page and nothing is stored.
Contents: score and group with what the group means, the reasons in words, attendance and grade
history as small inline SVG plots (one point per published round), the care screening, and the
actions recorded so far.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from features.pointintime.spec import BY_NAME

if TYPE_CHECKING:
    from serving.store import LoadedRound

# What each group asks of the school (Thai first; the student-care system's words).
GROUP_MEANING: dict[str, tuple[str, str]] = {
    "problem": ("มีปัญหา", "ความเสี่ยงสูงสุดของรอบนี้: ควรช่วยเหลือทันทีและพิจารณาส่งต่อ (ระบบดูแลช่วยเหลือนักเรียน)"),
    "at_risk": ("เสี่ยง", "ความเสี่ยงสูงกว่าปกติ: ควรเฝ้าระวัง ติดตาม และป้องกัน"),
    "normal": ("ปกติ", "ความเสี่ยงไม่สูง: ส่งเสริมและพัฒนาตามปกติ"),
}
CARE_FEATURES: tuple[str, ...] = ("care_learning", "care_behaviour_emotion", "care_family", "care_economic",
                                  "care_substances", "care_sexual_behaviour")
CARE_LEVEL = {0: "ปกติ", 1: "เสี่ยง", 2: "มีปัญหา"}


@dataclass(frozen=True)
class HistoryPoint:
    """One published round of the pupil: the values the plots draw."""

    round_id: str
    risk_score: float | None
    attendance: float | None  # att_rate_term, else att_rate_12m (0-1)
    gpa: float | None  # gpa_last (0-4)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def history_point(round_id: str, risk_score: Any, values: dict[str, Any]) -> HistoryPoint:
    att = _num(values.get("att_rate_term"))
    return HistoryPoint(round_id, _num(risk_score), att if att is not None else _num(values.get("att_rate_12m")),
                        _num(values.get("gpa_last")))


def svg_plot(points: list[tuple[str, float | None]], lo: float, hi: float, label: str, fmt: str) -> str:
    """A small line plot (one point per round, labelled), or a sentence when nothing is known."""
    known = [(i, x, v) for i, (x, v) in enumerate(points) if v is not None]
    if not known:
        return f'<p class="none">{html.escape(label)}: ไม่มีข้อมูล</p>'
    w, h, pad = 220, 90, 22
    n = max(len(points) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (w - 2 * pad) * (i / n if len(points) > 1 else 0.5)
        y = h - pad - (h - 2 * pad) * ((min(max(v, lo), hi) - lo) / (hi - lo))
        return x, y

    coords = [xy(i, v) for i, _, v in known]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"/><text x="{x:.1f}" y="{y - 6:.1f}" '
                   f'text-anchor="middle">{html.escape(fmt.format(v))}</text>'
                   for (x, y), (_, _, v) in zip(coords, known, strict=True))
    ticks = "".join(f'<text x="{xy(i, lo)[0]:.1f}" y="{h - 4}" text-anchor="middle" class="tick">{html.escape(x)}</text>'
                    for i, (x, _) in enumerate(points) if len(points) <= 4 or i in (0, len(points) - 1))
    return (f'<figure><figcaption>{html.escape(label)}</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{html.escape(label)}"><line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" '
            f'class="axis"/><polyline points="{line}" fill="none"/>{dots}{ticks}</svg></figure>')


_STYLE = """
@page { size: A4; margin: 12mm; }
body { font-family: sans-serif; font-size: 11pt; color: #111; max-width: 190mm; margin: auto; }
h1 { font-size: 15pt; margin: 0 0 4px; } h2 { font-size: 12pt; margin: 10px 0 4px; border-bottom: 1px solid #999; }
.score { font-size: 14pt; } .problem { color: #a00; } .at_risk { color: #a60; }
table { border-collapse: collapse; width: 100%; font-size: 10pt; } td, th { border: 1px solid #bbb; padding: 2px 5px; text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; } figcaption { font-size: 9pt; }
svg polyline { stroke: #235; stroke-width: 1.5; } svg circle { fill: #235; } svg text { font-size: 8px; }
svg .axis { stroke: #999; } .none, .muted { color: #666; font-size: 9pt; }
@media print { .noprint { display: none; } }
"""


def pupil_sheet(*, name: str | None, student_key: str, school_name: str | None, school_code: str,
                grade: str | None, room: Any, round_id: str, snapshot_hash: str, row: dict[str, Any],
                values: dict[str, Any], history: list[HistoryPoint], actions: list[dict[str, Any]]) -> str:
    """The sheet's HTML (one A4 page). Every value is escaped."""
    e = html.escape
    group = row.get("risk_group")
    score = _num(row.get("risk_score"))
    if score is None or group not in GROUP_MEANING:
        score_html = f'<p class="score">ไม่มีคะแนน: {e(str(row.get("no_score_reason") or ""))}</p>'
    else:
        g_th, meaning = GROUP_MEANING[group]
        score_html = (f'<p class="score {e(group)}">คะแนนความเสี่ยง {100 * score:.1f}% · กลุ่ม <b>{e(g_th)}</b></p>'
                      f'<p>{e(meaning)}</p>')
    reasons = [r for r in str(row.get("reasons_th") or "").split(" | ") if r]
    reasons_html = "<ul>" + "".join(f"<li>{e(r)}</li>" for r in reasons) + "</ul>" if reasons else '<p class="none">-</p>'
    ticks = [p.round_id for p in history]
    plots = (svg_plot(list(zip(ticks, [None if p.attendance is None else 100 * p.attendance for p in history], strict=True)),
                      0, 100, "อัตราการมาเรียน (%)", "{:.0f}")
             + svg_plot(list(zip(ticks, [p.gpa for p in history], strict=True)), 0, 4, "เกรดเฉลี่ย (GPA)", "{:.2f}")
             + svg_plot(list(zip(ticks, [None if p.risk_score is None else 100 * p.risk_score for p in history], strict=True)),
                        0, 100, "คะแนนความเสี่ยง (%)", "{:.0f}"))
    care_rows = []
    for f in CARE_FEATURES:
        v = _num(values.get(f))
        care_rows.append(f"<tr><td>{e(BY_NAME[f].th)}</td><td>{e(CARE_LEVEL.get(int(v), str(v)) if v is not None else 'ไม่มีข้อมูล')}</td></tr>")
    screened = values.get("care_screened")
    care_html = (f'<p class="muted">คัดกรองในระบบดูแลช่วยเหลือใน 12 เดือน: {"ใช่" if screened else "ไม่พบข้อมูล"}</p>'
                 f'<table><tr><th>ด้าน</th><th>ผลคัดกรอง</th></tr>{"".join(care_rows)}</table>')
    if actions:
        act_rows = "".join(
            f"<tr><td>{e(str(a['at'])[:10])}</td><td>{e(a.get('action_th') or a['action'])}</td>"
            f"<td>{e(a.get('status_th') or a['status'])}</td><td>{e(a.get('outcome_th') or '')}</td>"
            f"<td>{e(a.get('follow_up_due') or '')}</td><td>{e(a['role'])}</td></tr>" for a in actions)
        actions_html = ("<table><tr><th>วันที่</th><th>การดำเนินการ</th><th>สถานะ</th><th>ผล</th><th>นัดติดตาม</th>"
                        f"<th>ผู้บันทึก</th></tr>{act_rows}</table>")
    else:
        actions_html = '<p class="none">ยังไม่มีการบันทึกการดำเนินการ</p>'
    att = {k: _num(values.get(k)) for k in ("att_rate_term", "att_rate_prev_term", "att_rate_12m")}
    att_line = " · ".join(f"{BY_NAME[k].th} {100 * v:.0f}%" for k, v in att.items() if v is not None)
    return f"""<!doctype html>
<html lang="th"><head><meta charset="utf-8"><title>ใบสรุปนักเรียน {e(name or student_key)}</title>
<style>{_STYLE}</style></head><body>
<h1>ใบสรุปข้อมูลนักเรียนเพื่อการดูแลช่วยเหลือ</h1>
<p><b>{e(name or "(ไม่มีชื่อในระบบ)")}</b> · ชั้น {e(str(grade or "-"))} ห้อง {e(str(room if room is not None else "-"))}
 · {e(school_name or school_code)} ({e(school_code)})</p>
<p class="muted">รอบ {e(round_id)} · รหัสนามแฝง {e(student_key)} · snapshot {e(snapshot_hash[:12])}</p>
<h2>ระดับความเสี่ยง</h2>{score_html}
<h2>เหตุผลหลัก</h2>{reasons_html}
<h2>ประวัติการมาเรียนและผลการเรียน</h2><p class="muted">{e(att_line)}</p><div class="plots">{plots}</div>
<h2>ผลการคัดกรอง</h2>{care_html}
<h2>การดำเนินการที่ผ่านมา</h2>{actions_html}
<p class="muted">เอกสารนี้มีข้อมูลส่วนบุคคล ใช้เฉพาะการดูแลช่วยเหลือนักเรียน · คะแนนเป็นการคาดการณ์ ไม่ใช่การตัดสิน</p>
<button class="noprint" onclick="window.print()">พิมพ์ (print)</button>
</body></html>"""


def sheet_for(rnd: LoadedRound, rounds: list[LoadedRound], student_key: str, name: str | None,
              actions: list[dict[str, Any]]) -> str:
    """The sheet of a pupil of `rnd` (the caller has checked the pupil is its school's), with one
    history point per published round up to this one that lists the pupil."""
    from serving.store import LIST_COLUMNS

    i = rnd.row_of(student_key)
    if i is None:
        raise KeyError(student_key)
    # one pupil's values as Python values (`LoadedRound.row`), not one-row DataFrames: the same values
    row = rnd.row(LIST_COLUMNS, i)
    values = rnd.values_row(i)
    history = []
    for other in sorted(rounds, key=lambda x: x.manifest.as_of):
        j = other.row_of(student_key)
        if j is None or other.manifest.as_of > rnd.manifest.as_of:
            continue
        vals = other.values_row(j, ("att_rate_term", "att_rate_12m", "gpa_last"))
        history.append(history_point(other.round_id, other.cell("risk_score", j), vals))
    return pupil_sheet(name=name, student_key=student_key, school_name=row.get("school_name"),
                       school_code=str(row["school_code"]), grade=row.get("grade"), room=row.get("room"),
                       round_id=rnd.round_id, snapshot_hash=rnd.ref.hash, row=row, values=values, history=history,
                       actions=actions)
