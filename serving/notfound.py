"""What the service answers about the not-found lists (Thailand Zero Dropout), as pure functions.

The lists are built by `ews notfound build` (`features.pointintime.notfound`: one Parquet + manifest
per census under the home); `NotFoundLists` loads them once per file version, and the functions below
check the caller's scope before selecting a row, as `serving.views` does for risk lists:

- a school token sees its own school's cases, with names (the vault's name path, `serving.names`);
- area tokens see their area's counts (tambon -> amphoe -> province) and pseudonymous cases;
- analyst, auditor and admin tokens see everything pseudonymously.
Pseudonymous cases go through `serving.disclosure`'s plan (computed over the whole census's list, so
what is hidden does not depend on the query): a case in a (school, grade) cell with fewer than
`K_ANONYMITY` cases loses its school, then tambon, amphoe, province and grade as the plan says. Counts
between 1 and K-1 are given as null ("fewer than K"), never exactly, with the complementary counts
that would give them away by subtraction (`serving.disclosure.plan_small_counts`).

A case's key for the TZD case path (identify -> care plan -> follow-up -> closed, recorded with the
action record) is (student_key, census_date).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.home import EwsHome
from features.pointintime.notfound import NotFoundManifest, built_censuses, load_notfound, notfound_paths
from serving.access import Principal
from serving.actions import Pupil
from serving.disclosure import ALL, K_ANONYMITY, DisclosurePlan, SmallCounts, plan, plan_small_counts
from serving.views import AREA_LEVELS, RequestError, check_area_code, check_school_code

# Fields of a case, in the order they are returned.
CASE_FIELDS: tuple[str, ...] = (
    "student_key", "census_date", "state", "evidence_complete", "school_code", "school_name", "tambon_code",
    "tambon_name", "amphoe_code", "amphoe_name", "province_code", "province_name", "grade", "last_census",
    "last_attendance_month", "returned_source", "returned_on", "caveat", "awaited",
)
# What the disclosure plan may hide, by field (its `shown` knows the codes and names).
_PLANNED = ("school_code", "school_name", "tambon_code", "tambon_name", "amphoe_code", "amphoe_name",
            "province_code", "province_name", "grade")
_PARTS = {"province": "amphoe", "amphoe": "tambon", "tambon": "school"}  # level -> the part one level below


@dataclass
class LoadedList:
    manifest: NotFoundManifest
    rows: pd.DataFrame
    mtime: float
    _plan: DisclosurePlan | None = field(default=None, repr=False)
    _small: dict[tuple[str, int], SmallCounts] = field(default_factory=dict, repr=False)
    _small_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def disclosure(self) -> DisclosurePlan:
        """The plan over the whole list: cases have no model values, so only school, area and grade
        are quasi-identifiers here."""
        if self._plan is None:
            self._plan = plan(self.rows[["school_code", "grade", "tambon_code"]], pd.DataFrame(index=self.rows.index))
        return self._plan

    def small_counts(self, province: str, k: int = K_ANONYMITY) -> SmallCounts:
        """The province's withheld counts (cases by state x provisional/complete, per area and school)."""
        with self._small_lock:
            got = self._small.get((province, k))
            if got is None:
                d = self.rows.iloc[_area_idx(self, province)]
                got = self._small[(province, k)] = plan_small_counts(
                    d["tambon_code"].tolist(), d["school_code"].tolist(), d["state"].tolist(), _evidence(d), k)
        return got


class NotFoundLists:
    """The stored lists of a home, reloaded when `ews notfound build` rewrites one."""

    def __init__(self, home: EwsHome) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._lists: dict[dt.date, LoadedList] = {}

    def censuses(self) -> list[dt.date]:
        return built_censuses(self.home)

    def get(self, census: str) -> LoadedList:
        try:
            day = dt.date.fromisoformat(census)
        except (TypeError, ValueError):
            raise RequestError(400, "census must be a date (YYYY-MM-DD)") from None
        _, manifest_path = notfound_paths(self.home, day)
        if not manifest_path.exists():
            raise RequestError(404, f"no not-found list for the census of {day}")
        mtime = manifest_path.stat().st_mtime
        with self._lock:
            cur = self._lists.get(day)
            if cur is None or cur.mtime != mtime:
                try:
                    m, table = load_notfound(self.home, day)
                except (FileNotFoundError, RuntimeError) as exc:  # mid-rewrite or damaged: say so, never half a list
                    raise RequestError(409, str(exc).split(":")[0]) from None
                cur = self._lists[day] = LoadedList(manifest=m, rows=table.to_pandas(), mtime=mtime)
        return cur


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT:
        return None
    if isinstance(v, (dt.date, pd.Timestamp)):
        return v.isoformat()[:10]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _cases(lst: LoadedList, idx: np.ndarray, who: Principal, names: dict[str, str] | None) -> list[dict[str, Any]]:
    df = lst.rows
    out = []
    p = None if who.sees_everything else lst.disclosure()
    for i in idx:
        r = df.iloc[int(i)]
        row = {f: _plain(r[f]) for f in CASE_FIELDS}
        if p is not None:
            for f in _PLANNED:
                row[f] = p.shown(int(i), f, row[f])
        if names is not None:
            row["name"] = names.get(row["student_key"])
        out.append(row)
    return out


def case_pupil(lst: LoadedList, student_key: str) -> Pupil | None:
    """A case as the action record keys it: (student_key, census), at its last known school and
    tambon (who may record for it), with the list's hash in place of a snapshot's. None when the
    census's list has no such case."""
    hit = np.flatnonzero(lst.rows["student_key"].to_numpy() == student_key)
    if not len(hit):
        return None
    r = lst.rows.iloc[int(hit[0])]
    return Pupil(student_key=student_key, school_code=_plain(r["school_code"]), tambon_code=_plain(r["tambon_code"]),
                 round_id=lst.manifest.census_date.isoformat(), snapshot_hash=lst.manifest.sha256,
                 risk_score=None, risk_group=None)


def _manifest_out(m: NotFoundManifest) -> dict[str, Any]:
    return {"census_date": m.census_date.isoformat(), "previous_census": m.previous_census.isoformat(),
            "as_of": m.as_of.isoformat(), "awaited": m.awaited,
            "schools_without_census": m.schools_without_census}


def censuses(lists: NotFoundLists, who: Principal) -> dict[str, Any]:
    """The censuses with a stored list (dates only: counts are per area or school, in scope)."""
    if not who.may("list"):
        raise RequestError(403, f"role {who.role} may not read not-found lists")
    return {"censuses": [c.isoformat() for c in lists.censuses()]}


def school_cases(lst: LoadedList, who: Principal, school_code: str, names: dict[str, str] | None) -> dict[str, Any]:
    """A school's not-found cases. Names only for the school's own token (`names` as loaded for it)."""
    check_school_code(school_code)
    if not who.may("list"):
        raise RequestError(403, f"role {who.role} may not read not-found lists")
    df = lst.rows
    idx = np.flatnonzero(df["school_code"].to_numpy() == school_code)
    tambon = None if len(idx) == 0 else df["tambon_code"].iat[int(idx[0])]
    if who.role == "area" and tambon is None:
        raise RequestError(403, "this token does not cover that school")  # no case to place: not disclosed
    if not who.covers_school(school_code, tambon):
        raise RequestError(403, "this token does not cover that school")
    own = who.sees_names and who.school_code == school_code
    return {**_manifest_out(lst.manifest), "school_code": school_code,
            "cases": _cases(lst, idx, who, names if own else None)}


def _area_idx(lst: LoadedList, area_code: str) -> np.ndarray:
    tambon = lst.rows["tambon_code"].astype(object).fillna("").astype(str)
    return np.flatnonzero(tambon.str.startswith(area_code).to_numpy())


def _check_area(who: Principal, area_code: str) -> None:
    check_area_code(area_code)
    if who.role == "school" or not who.may("summary") or not who.covers_area(area_code):
        raise RequestError(403, "this token does not cover that area")


def _evidence(d: pd.DataFrame) -> list[str]:
    return ["complete" if bool(e) else "provisional" for e in d["evidence_complete"]]


def area_summary(lst: LoadedList, who: Principal, area_code: str, k: int = K_ANONYMITY) -> dict[str, Any]:
    """Cases of an area by state, and per part one level below (amphoe, tambon or school). A count
    of 1..k-1, and any count that would give one away by subtraction, is null (`serving.disclosure`,
    planned over the area's province so every summary withholds alike); an exact 0 is given."""
    _check_area(who, area_code)
    df = lst.rows.iloc[_area_idx(lst, area_code)]
    level = AREA_LEVELS[len(area_code)]
    part = _PARTS[level]
    plan_ = lst.small_counts(area_code[:2], k) if len(df) else SmallCounts({}, frozenset(), k)

    def counts(d: pd.DataFrame, node: tuple[Any, ...]) -> dict[str, int | None]:
        return {"cases": plan_.shown((node, ALL, ALL), len(d)),
                "not_found": plan_.shown((node, "not_found", ALL), int((d["state"] == "not_found").sum())),
                "returned": plan_.shown((node, "returned", ALL), int((d["state"] == "returned").sum())),
                "provisional": plan_.shown((node, ALL, "provisional"), _evidence(d).count("provisional"))}

    parts = []
    for (code, name), d in df.groupby([f"{part}_code", f"{part}_name"], dropna=False, sort=True):
        code = _plain(code)
        node = ("school", area_code, code) if level == "tambon" else ("area", code)
        parts.append({"code": code, "name": _plain(name), **counts(d, node)})
    return {**_manifest_out(lst.manifest), "area_code": area_code, "level": level, "suppressed_below": k,
            **counts(df, ("area", area_code)), "parts": parts}


def area_cases(lst: LoadedList, who: Principal, area_code: str) -> dict[str, Any]:
    """The pseudonymous cases of an area (no names; school and grade as the disclosure plan allows)."""
    _check_area(who, area_code)
    if not who.may("list"):
        raise RequestError(403, f"role {who.role} may not read not-found lists")
    return {**_manifest_out(lst.manifest), "area_code": area_code,
            "cases": _cases(lst, _area_idx(lst, area_code), who, None)}
