"""What each endpoint answers, as pure functions of (caller, published round, request).

The service only parses HTTP, calls one of these and logs the read. Every function checks the
caller's scope *before* selecting rows, and a row is never returned unless the caller covers its
school: a school token sees its own school, an area token its areas, nobody sees names except the
student's own school.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from features.calendar import ScoringRound, parse_round
from features.home import EwsHome
from features.ids import GRADES
from features.pointintime.spec import BY_NAME, FEATURE_NAMES, GROUPS
from serving import exports
from serving.access import Principal, is_ascii_digits
from serving.disclosure import ALL, K_ANONYMITY, SmallCounts, plan_small_counts
from serving.model import RISK_GROUP_EN, RISK_GROUP_TH, RISK_GROUPS, published_logit, to_published_scale
from serving.reasons import GROUP_NAMES, group_sums, probability_scale, top_reasons
from serving.store import LIST_COLUMNS, ListCache, LoadedRound, list_revision
from training.version import ModelVersion

if TYPE_CHECKING:
    from training.model import RiskModel
    from training.registry import VersionedModel

MAX_LIST = 5000


class RequestError(Exception):
    """A request the caller can fix: status 400 (bad value), 403 (not yours), 404 (no such thing)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_school_code(code: str) -> str:
    if not (isinstance(code, str) and len(code) == 10 and is_ascii_digits(code)):
        raise RequestError(400, "school code must be 10 digits")
    return code


def check_area_code(code: str) -> str:
    if not (isinstance(code, str) and is_ascii_digits(code) and len(code) in (2, 4, 6)):
        raise RequestError(400, "area code must be a 2-digit province, 4-digit amphoe or 6-digit tambon code")
    return code


def check_filters(grade: str | None, room: int | None, group: str | None, limit: int | None) -> None:
    if grade is not None and grade not in GRADES:
        raise RequestError(400, f"grade must be one of {', '.join(GRADES)}")
    if room is not None and not (1 <= room <= 30):
        raise RequestError(400, "room must be a number from 1 to 30")
    if group is not None and group not in RISK_GROUPS:
        raise RequestError(400, f"group must be one of {', '.join(RISK_GROUPS)}")
    if limit is not None and not (1 <= limit <= MAX_LIST):
        raise RequestError(400, f"limit must be from 1 to {MAX_LIST}")


def _num(v: Any) -> Any:
    """A JSON-safe value. pandas' string columns hold NaN where a value is missing (a scored
    student's `no_score_reason`, an unscored student's `risk_group`): those become null too."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def _rows_out(rnd: LoadedRound, idx: np.ndarray, names: dict[str, str] | None,
              who: Principal | None = None) -> list[dict[str, Any]]:
    """List rows; for a caller who does not see everything (`Principal.sees_everything`), the
    fields `serving.disclosure` hides are null and reasons are said per group, without values."""
    out = _rows_full(rnd, idx, names)
    if who is None or who.sees_everything:
        return out
    from serving.disclosure import group_reasons

    plan = rnd.disclosure()
    # Snapshots with an explanation summary already say reasons per group, without values
    # (serving/reasons.py); older ones named the pupil's values, so they are re-said per group.
    greason = (group_sums(rnd.matrix("contribution", idx), for_reasons=True)
               if rnd.manifest.explanation is None else None)
    for j, (i, row) in enumerate(zip(idx, out, strict=True)):
        for f in ("school_code", "tambon_code", "grade"):
            row[f] = plan.shown(int(i), f, row[f])
        if greason is not None and row["risk_score"] is not None:
            row["reasons_th"], row["reasons_en"] = group_reasons(greason[j])
    return out


def _rows_full(rnd: LoadedRound, idx: np.ndarray, names: dict[str, str] | None) -> list[dict[str, Any]]:
    keys = rnd.values_at("student_key", idx)
    out = []
    # Every value through `_num`, so no column can put a NaN into the JSON.
    cols = {c: [_num(v) for v in rnd.values_at(c, idx)]
            for c in ("school_code", "grade", "tambon_code", "risk_score", "risk_group",
                      "reasons_th", "reasons_en", "no_score_reason")}
    if names is not None:  # rooms as whole numbers (a snapshot may store them as text)
        cols["room"] = [_num(v) for v in rnd.frame(("room",), idx)["room"].tolist()]
    for i, k in enumerate(keys):
        g = cols["risk_group"][i]
        row: dict[str, Any] = {
            "rank": i + 1, "student_key": k, "school_code": cols["school_code"][i], "grade": cols["grade"][i],
            "tambon_code": cols["tambon_code"][i],
            "risk_score": cols["risk_score"][i], "risk_group": g,
            "risk_group_th": RISK_GROUP_TH.get(g) if g else None,
            "reasons_th": cols["reasons_th"][i], "reasons_en": cols["reasons_en"][i],
            "no_score_reason": cols["no_score_reason"][i],
        }
        if names is not None:
            row["name"] = names.get(k)
            row["room"] = cols["room"][i]
        out.append(row)
    return out


def _filter(rnd: LoadedRound, idx: np.ndarray, grade: str | None, room: int | None, group: str | None) -> np.ndarray:
    if grade is not None:
        idx = idx[rnd.column("grade", idx) == grade]
    if room is not None:
        idx = idx[rnd.frame(("room",), idx)["room"].to_numpy(dtype=float, na_value=np.nan) == room]
    if group is not None:
        idx = idx[rnd.column("risk_group", idx) == group]
    return np.asarray(idx, dtype=np.int64)


def school_list(
    rnd: LoadedRound, who: Principal, school_code: str, names: dict[str, str],
    grade: str | None = None, room: int | None = None, group: str | None = None, limit: int | None = None,
) -> dict[str, Any]:
    """A school's ranked list. Names and rooms only for the school's own token."""
    idx = _school_rows(rnd, who, school_code, grade, room, limit, group)
    idx = _filter(rnd, idx, grade, room, group)
    if grade is not None and not who.sees_everything:  # a grade it would not show is not selected by either
        idx = idx[rnd.disclosure().level[idx] < _grade_hidden()]
    if limit is not None:
        idx = idx[:limit]
    own = who.sees_names and who.school_code == school_code
    return {
        "round_id": rnd.round_id, "school_code": school_code,
        "school_name": _num(rnd.cell("school_name", int(rnd.by_school[school_code][0]))),
        "model_version": rnd.model_version, "snapshot_hash": rnd.ref.hash,
        "population_caveat": _school_caveat(rnd, school_code),
        "students": _rows_out(rnd, idx, names if own else None, who),
    }


def _school_rows(rnd: LoadedRound, who: Principal, school_code: str, grade: str | None, room: int | None,
                 limit: int | None, group: str | None) -> np.ndarray:
    """The school's ranked rows, after every check of the caller and the request (in this order:
    values, role, scope, existence, rooms): what a cached list may be served after, too."""
    check_school_code(school_code)
    check_filters(grade, room, group, limit)
    if not who.may("list"):
        raise RequestError(403, f"role {who.role} may not read lists")
    idx = rnd.by_school.get(school_code)
    tambon = None if idx is None or len(idx) == 0 else rnd.cell("tambon_code", int(idx[0]))
    if not who.covers_school(school_code, tambon):
        raise RequestError(403, "this token does not cover that school")
    if idx is None:
        raise RequestError(404, f"no students of school {school_code} in round {rnd.round_id}")
    if room is not None and not who.sees_names:
        raise RequestError(403, "rooms are shown to the student's own school only")
    return idx


ListFormat = Literal["json", "csv", "xlsx"]
_MEDIA = {"json": "application/json", "csv": "text/csv; charset=utf-8",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@dataclass(frozen=True)
class RenderedList:
    """A school's list as sent: the body (`encoded`, gzip-compressed when `gzipped`), its media type,
    the download's file name (None for JSON) and how many students it names (for the access log)."""

    encoded: bytes
    media_type: str
    filename: str | None
    students: int
    gzipped: bool = False

    @property
    def body(self) -> bytes:
        """The list itself, for a client that does not take gzip."""
        return gzip.decompress(self.encoded) if self.gzipped else self.encoded


# JSON and CSV lists are mostly repeated reason sentences: gzip makes a 1,429-pupil school's 1.5 MB
# JSON list about a tenth of that, which is what a school on a slow rural line waits for. They are
# compressed once, when rendered, and cached compressed, so a request costs no compression. Excel
# files are zip archives already. mtime=0 keeps the bytes of one list the same on every render.
_GZIPPED = ("json", "csv")


def _gzip(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=6, mtime=0)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip: listed as `gzip` (or `*`) without `q=0`."""
    for part in (accept_encoding or "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() not in ("gzip", "*"):
            continue
        q = params.strip()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def render_json(content: Any) -> bytes:
    """JSON exactly as the service's JSONResponse writes it (starlette's settings)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def _filename(rnd: LoadedRound, school_code: str, fmt: str) -> str | None:
    return None if fmt == "json" else f"risk-{rnd.round_id}-{school_code}.{fmt}"


def _checked_list_key(
    rnd: LoadedRound, who: Principal, school_code: str, names: dict[str, str], fmt: str, cache: ListCache | None,
    grade: str | None, room: int | None, group: str | None, limit: int | None, not_contacted: bool, revision: str,
) -> tuple[tuple[Any, ...], RenderedList | None]:
    """Every check of the caller and the request, then the cache key of the list and the cached list
    if there is one: the part of `school_list_rendered` that never renders."""
    if fmt not in _MEDIA:
        raise RequestError(400, "format must be json, csv or xlsx")
    _school_rows(rnd, who, school_code, grade, room, limit, group)
    own = bool(who.sees_names and who.school_code == school_code)
    key = (rnd.round_id, list_revision(rnd, school_code), revision, school_code, who.role, own, who.sees_everything,
           grade, room, group, limit, not_contacted, fmt)
    if cache is None:
        return key, None
    cache.bind_names(names)
    hit = cache.get(key)
    if hit is None:
        return key, None
    return key, RenderedList(hit[0], _MEDIA[fmt], _filename(rnd, school_code, fmt), int(hit[1]), gzipped=fmt in _GZIPPED)


def school_list_cached(
    rnd: LoadedRound, who: Principal, school_code: str, names: dict[str, str], fmt: str, cache: ListCache,
    grade: str | None = None, room: int | None = None, group: str | None = None, limit: int | None = None,
    not_contacted: bool = False, revision: str = "",
) -> RenderedList | None:
    """The list `school_list_rendered` would return, if it is cached; None if it must be rendered.

    Runs the same checks first (a refused request raises the same `RequestError`), and never builds
    a list: the service answers a cached list without leaving its event loop (serving.service)."""
    return _checked_list_key(rnd, who, school_code, names, fmt, cache, grade, room, group, limit, not_contacted,
                             revision)[1]


def school_list_rendered(
    rnd: LoadedRound, who: Principal, school_code: str, names: dict[str, str], fmt: str,
    cache: ListCache | None = None, grade: str | None = None, room: int | None = None, group: str | None = None,
    limit: int | None = None, not_contacted: bool = False, revision: str = "",
    annotate: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> RenderedList:
    """`school_list` rendered as JSON, CSV or Excel, from `cache` when the same view of the same
    list at the same revision was rendered before. The caller's checks run first on every request;
    the key holds what decides the body: round, revision, school, the caller's role and view (own
    school with names, everything, or disclosure-controlled), filters and format. `annotate` adds
    state kept outside the snapshot (the action record) to the rows, and `revision` is that state's
    revision: a recorded action is a new key. `not_contacted` filters on what `annotate` added, so
    the limit applies after it."""
    key, hit = _checked_list_key(rnd, who, school_code, names, fmt, cache, grade, room, group, limit, not_contacted,
                                 revision)
    if hit is not None:
        return hit
    filename = _filename(rnd, school_code, fmt)
    out = school_list(rnd, who, school_code, names, grade=grade, room=room, group=group,
                      limit=None if not_contacted else limit)
    if annotate is not None:
        out["students"] = annotate(out["students"])[: limit if not_contacted and limit else None]
    if fmt == "json":
        body = render_json(out)
    elif fmt == "csv":
        body = exports.to_csv(out["students"], out["population_caveat"])
    else:
        title = f"รายชื่อนักเรียนกลุ่มเสี่ยง รอบ {rnd.round_id} โรงเรียน {out['school_name'] or school_code}"
        body = exports.to_xlsx(out["students"], title, out["population_caveat"])
    if fmt in _GZIPPED:
        body = _gzip(body)
    if cache is not None:
        cache.put(key, body, len(out["students"]))
    return RenderedList(body, _MEDIA[fmt], filename, len(out["students"]), gzipped=fmt in _GZIPPED)


def area_rows(rnd: LoadedRound, area_code: str) -> np.ndarray:
    """The area's rows, ranked by risk (highest first; students without a score last)."""
    return rnd.by_area.get(area_code, np.empty(0, dtype=np.int64))


def area_summary(rnd: LoadedRound, who: Principal, area_code: str) -> dict[str, Any]:
    """Counts by risk group and grade for an area, and each level below it (tambon -> amphoe -> province)."""
    check_area_code(area_code)
    if who.role == "school" or not who.may("summary") or not who.covers_area(area_code):
        raise RequestError(403, "this token does not cover that area")
    if area_code not in rnd.by_area:  # not cached: codes nobody lives in must not grow the cache
        return _area_summary(rnd, area_code)
    cached = rnd.summaries.get(area_code)
    if cached is None:
        with rnd.summary_lock:
            cached = rnd.summaries.get(area_code)
            if cached is None:
                cached = rnd.summaries[area_code] = _area_summary(rnd, area_code)
    return cached


AREA_LEVELS = {2: "province", 4: "amphoe", 6: "tambon"}  # code length -> level
_PARTS = {"province": ("amphoe_code", "amphoe_name"), "amphoe": ("tambon_code", "tambon_name"),
          "tambon": ("school_code", "school_name")}  # level -> the part one level below (code, name)
_SUMMARY_GROUPS = (*RISK_GROUPS, "no_score")
_SUMMARY_COLUMNS = ("amphoe_code", "amphoe_name", "tambon_code", "tambon_name", "school_code", "school_name", "grade",
                    "risk_group")


def _area_summary(rnd: LoadedRound, area_code: str) -> dict[str, Any]:
    level = AREA_LEVELS[len(area_code)]
    exact = summarise_area(rnd.frame(_SUMMARY_COLUMNS, area_rows(rnd, area_code)), level)
    # an area nobody lives in has only zeros to release: no plan, so unknown codes grow no cache
    counts = _small_counts(rnd, area_code[:2]) if area_code in rnd.by_area else SmallCounts({}, frozenset(), K_ANONYMITY)
    return {"round_id": rnd.round_id, "area_code": area_code, **disclose_summary(exact, area_code, counts)}


def _small_counts(rnd: LoadedRound, province: str) -> SmallCounts:
    """The province's withheld counts (serving.disclosure), planned once per round: every summary
    inside the province reads the same plan, so a count has one fate whichever area asked."""
    plan_ = rnd.small_counts.get(province)
    if plan_ is None:
        plan_ = rnd.small_counts[province] = plan_area_counts(rnd.frame(_SUMMARY_COLUMNS, area_rows(rnd, province)))
    return plan_


def plan_area_counts(df: pd.DataFrame) -> SmallCounts:
    """The withheld cells of the summaries of a province's rows (tambon_code, school_code, grade,
    risk_group): counts by grade x risk group per province, amphoe, tambon and school."""
    return plan_small_counts(df["tambon_code"].tolist(), df["school_code"].tolist(), [_num(g) for g in df["grade"]],
                             df["risk_group"].astype(object).fillna("no_score").tolist())


def disclose_summary(summary: dict[str, Any], area_code: str, counts: SmallCounts) -> dict[str, Any]:
    """An exact `summarise_area` result as released: every count of 1..k-1, and the complements that
    would give one away by subtraction, null (docs/ARCHITECTURE.md, disclosure)."""
    level = summary["level"]

    def node_of(code: Any) -> tuple[Any, ...]:
        return ("school", area_code, code) if level == "tambon" else ("area", code)

    def released(acc: dict[str, Any], node: tuple[Any, ...]) -> dict[str, Any]:
        return {**acc, "students": counts.shown((node, ALL, ALL), acc["students"]),
                "by_group": {g: counts.shown((node, ALL, g), n) for g, n in acc["by_group"].items()},
                "by_grade": {gr: {g: counts.shown((node, gr, g), n) for g, n in groups.items()}
                             for gr, groups in acc["by_grade"].items()}}

    return {**released(summary, ("area", area_code)), "suppressed_below": counts.k,
            "parts": [released(p, node_of(p["code"])) for p in summary["parts"]]}


def summarise_area(df: pd.DataFrame, level: str) -> dict[str, Any]:
    """Counts by risk group, and by grade and group, for an area's rows and for each part one level
    below (amphoe, tambon or school). One grouped count over the area, then plain sums: grouping
    each part separately cost about 1 s for the province of a 100k-student round (now 0.25 s)."""
    code_col, name_col = _PARTS[level]
    frame = pd.DataFrame({
        "code": df[code_col].astype(object), "name": df[name_col].astype(object),
        "grade": df["grade"].astype(object), "group": df["risk_group"].astype(object).fillna("no_score"),
    })
    counts = frame.groupby(["code", "name", "grade", "group"], dropna=False, sort=False).size()

    def empty() -> dict[str, Any]:
        return {"students": 0, "by_group": dict.fromkeys(_SUMMARY_GROUPS, 0), "by_grade": {}}

    total, parts = empty(), {}
    for (code, name, grade, group), n in counts.items():
        n = int(n)
        part = parts.setdefault((_num(code), _num(name)), empty())
        for acc in (total, part):
            acc["students"] += n
            acc["by_group"][group] += n
            if _num(grade) is not None:  # a row without a grade counts, but under no grade
                acc["by_grade"].setdefault(grade, dict.fromkeys(_SUMMARY_GROUPS, 0))[group] += n

    def tidy(acc: dict[str, Any]) -> dict[str, Any]:  # grades in order, only the groups present in each
        acc["by_grade"] = {gr: {g: c for g, c in acc["by_grade"][gr].items() if c}
                           for gr in sorted(acc["by_grade"])}
        return acc

    def order(key: tuple[Any, Any]) -> tuple[bool, str, str]:  # by code; rows without one last
        return (key[0] is None, str(key[0] or ""), str(key[1] or ""))

    return {"level": level, **tidy(total),
            "parts": [{"code": k[0], "name": k[1], **tidy(parts[k])} for k in sorted(parts, key=order)]}


def area_list(
    rnd: LoadedRound, who: Principal, area_code: str, grade: str | None = None, group: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """A pseudonymous ranked list of an area's students (no names, no rooms)."""
    check_area_code(area_code)
    check_filters(grade, None, group, limit)
    if who.role == "school" or not who.may("list") or not who.covers_area(area_code):
        raise RequestError(403, "this token does not cover that area")
    idx = _filter(rnd, area_rows(rnd, area_code), grade, None, group)
    if grade is not None:
        idx = idx[rnd.disclosure().level[idx] < _grade_hidden()]
    idx = idx[: limit or MAX_LIST]
    return {"round_id": rnd.round_id, "area_code": area_code, "population_caveat": _area_caveat(rnd, area_code),
            "students": _rows_out(rnd, idx, None, who)}


def _school_caveat(rnd: LoadedRound, school_code: str) -> dict[str, str] | None:
    """The round's caveat (census late), or this school's own (its census file was not received)."""
    pop = rnd.manifest.population
    return pop.school_caveat(school_code) if pop else None


def _area_caveat(rnd: LoadedRound, area_code: str) -> dict[str, str] | None:
    """The round's caveat, or one naming the area's schools whose census file was not received."""
    pop = rnd.manifest.population
    if pop is None or not (pop.census_late or pop.school_fallbacks):
        return None
    # a school's area is its tambon code's prefix (as `by_area`): one look-up per fallen-back school
    codes = {f.school_code for f in pop.school_fallbacks if f.school_code in rnd.by_school
             and str(rnd.cell("tambon_code", int(rnd.by_school[f.school_code][0]))).startswith(area_code)}
    return pop.caveat(within=codes)


def _grade_hidden() -> int:
    from serving.disclosure import NOTHING

    return NOTHING


def _row_for(rnd: LoadedRound, who: Principal, student_key: str) -> int:
    if not isinstance(student_key, str) or not (8 <= len(student_key) <= 128) or not student_key.isalnum():
        raise RequestError(400, "student key must be 8-128 letters and digits")
    i = rnd.row_of(student_key)
    # Same answer for "no such student" and "not yours": existence is not disclosed.
    if i is None or not who.covers_school(rnd.cell("school_code", i), rnd.cell("tambon_code", i)):
        raise RequestError(404, f"no student with that key visible to this token in round {rnd.round_id}")
    return i


def explanation(rnd: LoadedRound, who: Principal, student_key: str) -> dict[str, Any]:
    """Every contribution of one student, with values, base value and the groups' sums."""
    if not who.may("explain"):
        raise RequestError(403, f"role {who.role} may not read explanations")
    i = _row_for(rnd, who, student_key)
    r = rnd.row(LIST_COLUMNS, i)
    values = {f: _num(v) for f, v in rnd.values_row(i).items()}
    base = {"student_key": student_key, "round_id": rnd.round_id, "school_code": r["school_code"],
            "grade": _num(r["grade"]), "model_version": rnd.model_version, "snapshot_hash": rnd.ref.hash}
    if not who.sees_everything:
        return _explanation_disclosed(rnd, i, _explanation_full(rnd, i, r, values, base))
    return _explanation_full(rnd, i, r, values, base)


def _explanation_disclosed(rnd: LoadedRound, i: int, full: dict[str, Any]) -> dict[str, Any]:
    """The explanation as a non-school token sees it (`serving.disclosure`): sensitive features
    leave the list (their contributions summed per group as `withheld:<group>` lines),
    coarsened quasi-identifiers (age in whole years) or none, reasons per group without values."""
    from serving.disclosure import SENSITIVE, age_years

    plan = rnd.disclosure()
    out = {**full, "school_code": plan.shown(i, "school_code", full["school_code"]),
           "grade": plan.shown(i, "grade", full["grade"])}
    values = full["values"] if "values" in full else {x["feature"]: x["value"] for x in full["features"]}
    shown_values = {}
    for f, v in values.items():
        if f in SENSITIVE:
            continue
        shown_values[f] = None if plan.hides_value(i, f) else (age_years(v) if f == "age" else v)
    out["disclosure"] = {"k_anonymity": plan.k, "withheld": sorted(SENSITIVE & set(values)), "age": "whole years"}
    if not full.get("scored"):
        return {**out, "values": shown_values}
    feats = [{**x, "value": shown_values[x["feature"]]} for x in full["features"] if x["feature"] not in SENSITIVE]
    # One line per group for its withheld features, so the list still adds up to the margin; it
    # tells nothing the group's own sum (in `groups`) does not.
    withheld: dict[str, list[dict[str, Any]]] = {}
    for x in full["features"]:
        if x["feature"] in SENSITIVE:
            withheld.setdefault(x["group"], []).append(x)
    for g, xs in withheld.items():
        # The line keeps its features' role when they share one (a withheld reason is still a reason).
        roles = {x.get("role") for x in xs}
        feats.append({"feature": f"withheld:{g}", "group": g, "role": roles.pop() if len(roles) == 1 else "withheld",
                      "label_en": "withheld (sensitive)",
                      "label_th": "ไม่เปิดเผย (ข้อมูลอ่อนไหว)", "value": None,
                      "contribution": float(sum(x["contribution"] for x in xs)),
                      "probability_points": float(sum(x["probability_points"] for x in xs))})
    out["features"] = feats
    # The context and protected blocks carry values too: rebuilt from what this token may see.
    for role in ("context", "protected"):
        if role in full:
            out[role] = {**full[role], "features": {x["feature"]: x["value"] for x in feats if x.get("role") == role}}
    if rnd.manifest.explanation is None:  # an older snapshot: its reasons named values
        greason = group_sums(rnd.matrix("contribution", i), for_reasons=True)
        th, en = group_reasons(greason, top=len(rnd.manifest.feature_groups))
        out["reasons"] = [{"th": t, "en": e} for t, e in zip(th.split(" | "), en.split(" | "), strict=True) if t]
    # else: the full explanation's reasons are already per group, without values (serving/reasons.py)
    return out


def _explanation_full(rnd: LoadedRound, i: int, r: Mapping[str, Any], values: dict[str, Any],
                      base: dict[str, Any]) -> dict[str, Any]:
    if not bool(r["scored"]):
        return {**base, "scored": False, "no_score_reason": _num(r["no_score_reason"]),
                "reasons_th": _num(r["reasons_th"]), "reasons_en": _num(r["reasons_en"]), "values": values}
    contrib = rnd.matrix("contribution", i)
    group_contrib = rnd.matrix("group_contribution", i)
    margin, b = float(r["raw_margin"]), float(r["base_value"])
    # Snapshots with an explanation summary store contributions on the published logit's scale (they
    # add up to logit(risk_score)); older ones on the raw margin.
    on_published = rnd.manifest.explanation is not None
    target = float(published_logit(np.array([float(r["risk_score"])]))[0]) if on_published else margin
    scale = float(probability_scale(np.array([target]), np.array([b]))[0])
    feats = [{"feature": f, "group": BY_NAME[f].group, "role": BY_NAME[f].role, "label_en": BY_NAME[f].en,
              "label_th": BY_NAME[f].th, "value": values[f], "contribution": float(contrib[j]),
              "probability_points": float(contrib[j] * scale * 100)}
             for j, f in enumerate(rnd.manifest.features)]
    groups = [{"group": g, "label_en": GROUPS[g][0], "label_th": GROUPS[g][1], "contribution": float(group_contrib[k]),
               "odds_multiplier": math.exp(float(group_contrib[k])),
               "probability_points": float(group_contrib[k] * scale * 100)}
              for k, g in enumerate(rnd.manifest.feature_groups)]

    def role_part(role: str) -> dict[str, Any]:
        c = float(sum(x["contribution"] for x in feats if x["role"] == role))
        return {"features": {x["feature"]: x["value"] for x in feats if x["role"] == role}, "contribution": c,
                "odds_multiplier": math.exp(c), "probability_points": c * scale * 100}

    reasons = top_reasons(group_sums(contrib, for_reasons=True), k=len(GROUP_NAMES), raising_only=False)
    return {
        **base, "scored": True, "risk_score": float(r["risk_score"]), "risk_group": r["risk_group"],
        "risk_group_th": RISK_GROUP_TH[r["risk_group"]], "risk_group_en": RISK_GROUP_EN[r["risk_group"]],
        "scale": "published_logit" if on_published else "raw_margin",
        "raw_margin": margin, "published_logit": target, "base_value": b,
        "base_probability": 1.0 / (1.0 + math.exp(-b)), "sum_of_contributions": float(contrib.sum()),
        "features": feats, "groups": groups,
        # shown once: where the pupil is in the school calendar; and what is never a reason
        "context": role_part("context"), "protected": role_part("protected"),
        "reasons": [{**x, "probability_points": x["contribution"] * scale * 100} for x in reasons],
    }


def replay(rnd: LoadedRound, who: Principal, student_key: str, loaded: VersionedModel) -> dict[str, Any]:
    """Recompute a published score from the stored features with the stored model version."""
    if not who.may("replay"):
        raise RequestError(403, "audit replay is for auditor and admin tokens")
    i = _row_for(rnd, who, student_key)
    if loaded.lineage.version != ModelVersion.parse(rnd.model_version):
        raise RequestError(409, "the loaded model is not the version that scored this round")
    model = loaded.model
    r = rnd.frame(LIST_COLUMNS, np.array([i])).iloc[0]
    if not bool(r["scored"]):
        return {"student_key": student_key, "round_id": rnd.round_id, "scored": False, "matches": True,
                "no_score_reason": _num(r["no_score_reason"])}
    frame = rnd.values_frame(np.array([i]))
    x = model.encode(frame)
    margin = float(model.raw_margin(x)[0])
    score = float(model.risk_score_from_margin(np.array([margin]))[0])
    scored = pc.fill_null(rnd.table.column("scored"), False).to_numpy(zero_copy_only=False).astype(bool)
    published = rnd.table.column("risk_score").to_numpy().astype(float)[scored]
    group = str(model.thresholds_.assign(np.array([score]), round_scores=published)[0])  # cut within the round
    contrib = model.contributions(x)
    if rnd.manifest.explanation is not None:
        contrib = to_published_scale(model, contrib, np.array([score]))[0]
    contrib = contrib[0]
    stored = rnd.matrix("contribution", i)
    diff = {
        "raw_margin": abs(margin - float(r["raw_margin"])), "risk_score": abs(score - float(r["risk_score"])),
        "contributions_max": float(np.abs(contrib[:-1] - stored).max()),
        "base_value": abs(float(contrib[-1]) - float(r["base_value"])),
    }
    matches = all(v <= 1e-9 for v in diff.values()) and group == r["risk_group"]
    return {
        "student_key": student_key, "round_id": rnd.round_id, "model_version": str(loaded.lineage.version),
        "snapshot_hash": rnd.ref.hash, "published": {"risk_score": float(r["risk_score"]), "risk_group": r["risk_group"],
                                                     "raw_margin": float(r["raw_margin"])},
        "recomputed": {"risk_score": score, "risk_group": group, "raw_margin": margin},
        "differences": diff, "matches": matches,
    }


def score_rows(model: RiskModel, who: Principal, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ad-hoc scoring of posted feature rows (analysts): score, group, contributions per group."""
    if not who.may("score"):
        raise RequestError(403, "ad-hoc scoring is for analyst and admin tokens")
    if not rows:
        return []
    frame = pd.DataFrame(rows, columns=list(FEATURE_NAMES))
    x = model.encode(frame)
    margin = model.raw_margin(x)
    score = model.risk_score_from_margin(margin)
    group = model.thresholds_.assign(score)
    contrib, _ = to_published_scale(model, model.contributions(x), score)
    gsum = group_sums(contrib[:, :-1])
    greason = group_sums(contrib[:, :-1], for_reasons=True)
    out = []
    for k in range(len(rows)):
        rs = top_reasons(greason[k])
        out.append({"risk_score": float(score[k]), "risk_group": str(group[k]), "raw_margin": float(margin[k]),
                    "base_value": float(contrib[k, -1]),
                    "group_contributions": {g: float(gsum[k, j]) for j, g in enumerate(GROUP_NAMES)},
                    "reasons_th": [r["th"] for r in rs], "reasons_en": [r["en"] for r in rs]})
    return out


def parse_round_id(round_id: str) -> ScoringRound:
    """A round id from a request, parsed once at the edge (400 when it is not one)."""
    try:
        return parse_round(round_id)
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None


def monitoring_report_path(home: EwsHome, round_id: str, fmt: Literal["json", "html"]) -> Path:
    """The report file `ews monitor` wrote for a round (its path comes from the home); the round id
    is parsed first, so a request can never name a path outside the monitoring folder."""
    path = home.monitoring_report(parse_round_id(round_id), fmt)
    if not path.is_file():
        raise RequestError(404, f"no monitoring report for round {round_id}: run `ews monitor --round {round_id}`")
    return path
