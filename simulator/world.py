"""The simulated world: provinces, amphoe, tambon, schools of every system, and the first cohort.

Everything here is drawn once per province from that province's own random stream, so a
province's world does not depend on how many other provinces are simulated. The registry rows
(areas.csv, schools.csv) come from these tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from features.ids import GRADES, citizen_id_check_digit  # noqa: F401  (check digit rule documented there)
from simulator.names import place_names

# code, Thai name, English name, region, median income per person per month (baht),
# share of non-Thai children, share of remote tambon, fixed province effect on the dropout logit,
# relative size (students).
PROVINCES: tuple[tuple[str, str, str, str, float, float, float, float, float], ...] = (
    ("58", "แม่ฮ่องสอน", "Mae Hong Son", "north", 3300, 0.14, 0.55, 0.10, 1.0),
    ("63", "ตาก", "Tak", "west", 3600, 0.22, 0.40, 0.20, 1.0),
    ("50", "เชียงใหม่", "Chiang Mai", "north", 5200, 0.08, 0.30, 0.05, 1.6),
    ("10", "กรุงเทพมหานคร", "Bangkok", "bangkok", 9500, 0.05, 0.00, 0.10, 2.5),
    ("74", "สมุทรสาคร", "Samut Sakhon", "central", 6800, 0.15, 0.05, 0.20, 0.8),
    ("30", "นครราชสีมา", "Nakhon Ratchasima", "northeast", 4300, 0.005, 0.20, 0.00, 2.0),
    ("34", "อุบลราชธานี", "Ubon Ratchathani", "northeast", 3800, 0.01, 0.25, 0.00, 1.8),
    ("95", "ยะลา", "Yala", "south", 4200, 0.01, 0.35, 0.15, 0.8),
    ("96", "นราธิวาส", "Narathiwat", "south", 3500, 0.01, 0.35, 0.20, 1.0),
    ("57", "เชียงราย", "Chiang Rai", "north", 4200, 0.10, 0.35, 0.05, 1.3),
    ("11", "สมุทรปราการ", "Samut Prakan", "central", 7800, 0.06, 0.00, 0.10, 1.2),
    ("40", "ขอนแก่น", "Khon Kaen", "northeast", 4800, 0.005, 0.15, -0.05, 1.7),
    ("31", "บุรีรัมย์", "Buri Ram", "northeast", 3700, 0.005, 0.25, 0.00, 1.6),
    ("32", "สุรินทร์", "Surin", "northeast", 3600, 0.01, 0.25, 0.00, 1.4),
    ("33", "ศรีสะเกษ", "Si Sa Ket", "northeast", 3500, 0.01, 0.30, 0.00, 1.5),
    ("41", "อุดรธานี", "Udon Thani", "northeast", 4400, 0.005, 0.20, 0.00, 1.6),
    ("80", "นครศรีธรรมราช", "Nakhon Si Thammarat", "south", 5000, 0.005, 0.20, 0.00, 1.6),
    ("90", "สงขลา", "Songkhla", "south", 5600, 0.02, 0.15, 0.05, 1.4),
    ("94", "ปัตตานี", "Pattani", "south", 3700, 0.01, 0.30, 0.15, 0.9),
    ("71", "กาญจนบุรี", "Kanchanaburi", "west", 4600, 0.08, 0.35, 0.05, 0.9),
    ("20", "ชลบุรี", "Chon Buri", "east", 8000, 0.04, 0.05, 0.00, 1.3),
    ("21", "ระยอง", "Rayong", "east", 7500, 0.04, 0.05, 0.00, 0.8),
    ("12", "นนทบุรี", "Nonthaburi", "central", 8800, 0.03, 0.00, -0.05, 1.0),
    ("13", "ปทุมธานี", "Pathum Thani", "central", 7600, 0.04, 0.00, 0.00, 1.0),
    ("14", "พระนครศรีอยุธยา", "Phra Nakhon Si Ayutthaya", "central", 6500, 0.03, 0.05, 0.00, 0.8),
    ("46", "กาฬสินธุ์", "Kalasin", "northeast", 3900, 0.005, 0.25, 0.00, 1.0),
    ("48", "นครพนม", "Nakhon Phanom", "northeast", 3700, 0.02, 0.30, 0.00, 0.8),
    ("65", "พิษณุโลก", "Phitsanulok", "north", 5000, 0.01, 0.20, 0.00, 0.9),
)
N_SHOCKS = 4

# school kinds: primary (K1-P6), extended opportunity (K1-M3), secondary (M1-M6); then other systems
KIND_PRIMARY, KIND_EXTENDED, KIND_SECONDARY = 0, 1, 2
KIND_OVEC, KIND_NFE, KIND_LAO, KIND_OPEC, KIND_BPP = 3, 4, 5, 6, 7
KIND_AFFILIATION = ("OBEC", "OBEC", "OBEC", "OVEC", "NFE", "LAO", "OPEC", "BPP")


@dataclass(frozen=True)
class Province:
    index: int  # position in the run's province list (chunk number)
    code: str
    name_th: str
    name_en: str
    region: str
    median_income: float
    non_thai_share: float
    remote_share: float
    effect: float  # fixed + random province effect on the dropout logit
    students: int  # OBEC students at the first census


def provinces_for(students: int, per_province: int, rng: np.random.Generator, effect_sd: float) -> list[Province]:
    """How N students map to provinces: N <= 1.5 x per_province -> Mae Hong Son alone; else
    round(N / per_province) real provinces (at most the list's length), sized by their weights."""
    k = 1 if students <= 1.5 * per_province else min(len(PROVINCES), round(students / per_province))
    rows = PROVINCES[:k]
    w = np.array([r[8] for r in rows], dtype=float)
    sizes = np.floor(students * w / w.sum()).astype(int)
    sizes[0] += students - sizes.sum()
    rand = rng.normal(0, effect_sd, size=len(PROVINCES))[:k]  # drawn for all so k does not change them
    return [Province(i, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] + float(rand[i]), int(sizes[i]))
            for i, r in enumerate(rows)]


@dataclass
class Geography:
    """Areas and schools of one province (plain numpy columns, one row per tambon / school)."""

    tambon_code: np.ndarray  # str
    tambon_name: np.ndarray
    amphoe_code: np.ndarray
    amphoe_name: np.ndarray
    tambon_remote: np.ndarray  # bool
    tambon_amphoe: np.ndarray  # int index of amphoe
    school_code: np.ndarray  # str, 10 digits
    school_name: np.ndarray
    school_kind: np.ndarray  # int8 KIND_*
    school_tambon: np.ndarray  # int index into tambon arrays
    school_remote: np.ndarray  # bool
    school_distance: np.ndarray  # km to district town
    school_small: np.ndarray  # bool: set after the first census assignment


def build_geography(prov: Province, rng: np.random.Generator, students_per_school: float) -> Geography:
    """Amphoe and tambon with 6-digit codes (province+amphoe+tambon), and the schools.

    Size: about 900 students per tambon; amphoe hold 5-14 tambon. OBEC primary and extended
    schools stand in tambon, secondary schools in amphoe; vocational colleges, NFE centres, local
    government, private and (in border provinces) BPP schools are added for the other systems.
    """
    n_tambon = max(3, int(round(prov.students / 900)))
    n_amphoe = max(1, min(99, int(round(n_tambon / 9))))
    # split tambon over amphoe (each amphoe at least one, at most 99 tambon)
    per = np.full(n_amphoe, n_tambon // n_amphoe)
    per[: n_tambon % n_amphoe] += 1
    if per.max() > 99:
        raise ValueError("province too large for 2-digit tambon codes; raise students_per_province")
    amphoe_names = place_names(rng, n_amphoe)
    amphoe_names[0] = "เมือง" + prov.name_th
    tambon_names = place_names(rng, n_tambon)
    t_code, t_name, a_code, a_name, t_amp = [], [], [], [], []
    k = 0
    for a in range(n_amphoe):
        for t in range(per[a]):
            t_code.append(f"{prov.code}{a + 1:02d}{t + 1:02d}")
            t_name.append(tambon_names[k])
            a_code.append(f"{prov.code}{a + 1:02d}")
            a_name.append(amphoe_names[a])
            t_amp.append(a)
            k += 1
    t_amp_arr = np.array(t_amp)
    # remote tambon: not in the first amphoe (the provincial seat) and drawn by the province's share
    remote = (t_amp_arr > 0) & (rng.random(n_tambon) < prov.remote_share * 1.2)

    codes: list[str] = []
    names: list[str] = []
    kinds: list[int] = []
    tambons: list[int] = []
    used_codes: set[str] = set()

    def new_code(kind: int) -> str:
        # OBEC-like 10-digit codes: 10 + province + 6 digits; other systems mapped into 2x/3x prefixes
        prefix = {KIND_OVEC: "20", KIND_NFE: "30", KIND_LAO: "40", KIND_OPEC: "50", KIND_BPP: "60"}.get(kind, "10")
        while True:
            c = f"{prefix}{prov.code}{rng.integers(0, 1_000_000):06d}"
            if c not in used_codes:
                used_codes.add(c)
                return c

    village = place_names(rng, 4 * n_tambon + 50, exclude=set(tambon_names))
    vi = 0
    n_primary_per_tambon = max(1, int(round(900 * 0.62 / students_per_school)))
    for ti in range(n_tambon):
        n_p = max(1, int(rng.poisson(n_primary_per_tambon)))
        for j in range(n_p):
            kind = KIND_EXTENDED if j == 0 and rng.random() < 0.45 else KIND_PRIMARY
            codes.append(new_code(kind))
            names.append("โรงเรียนบ้าน" + village[vi % len(village)] + (f" {vi // len(village) + 1}" if vi >= len(village) else ""))
            vi += 1
            kinds.append(kind)
            tambons.append(ti)
    first_tambon_of_amphoe = {a: int(np.flatnonzero(t_amp_arr == a)[0]) for a in range(n_amphoe)}
    for a in range(n_amphoe):
        seat = first_tambon_of_amphoe[a]
        n_sec = max(1, int(round(per[a] * 900 * 0.26 / 900)))
        for j in range(n_sec):
            codes.append(new_code(KIND_SECONDARY))
            base = amphoe_names[a]
            names.append(f"โรงเรียน{base}วิทยา" if j == 0 else f"โรงเรียน{base}วิทยาคม {j + 1}" if j > 1 else f"โรงเรียน{base}พิทยาคม")
            kinds.append(KIND_SECONDARY)
            tambons.append(seat if j == 0 else int(rng.choice(np.flatnonzero(t_amp_arr == a))))
        codes.append(new_code(KIND_NFE))
        names.append(f"ศูนย์ส่งเสริมการเรียนรู้อำเภอ{amphoe_names[a]}")
        kinds.append(KIND_NFE)
        tambons.append(seat)
        if a % 3 == 0:
            codes.append(new_code(KIND_OVEC))
            names.append(f"วิทยาลัยการอาชีพ{amphoe_names[a]}" if a else f"วิทยาลัยเทคนิค{prov.name_th}")
            kinds.append(KIND_OVEC)
            tambons.append(seat)
        codes.append(new_code(KIND_LAO))
        names.append(f"โรงเรียนเทศบาล{amphoe_names[a]}")
        kinds.append(KIND_LAO)
        tambons.append(seat)
        codes.append(new_code(KIND_OPEC))
        names.append(f"โรงเรียนเอกชน{amphoe_names[a]}ศึกษา")
        kinds.append(KIND_OPEC)
        tambons.append(seat)
        if prov.non_thai_share > 0.1 and a > 0:
            codes.append(new_code(KIND_BPP))
            names.append(f"โรงเรียนตำรวจตระเวนชายแดนบ้าน{village[vi % len(village)]}")
            vi += 1
            kinds.append(KIND_BPP)
            tambons.append(int(rng.choice(np.flatnonzero(t_amp_arr == a))))
    tam = np.array(tambons)
    kinds_arr = np.array(kinds, dtype=np.int8)
    dist = np.where(remote[tam], rng.gamma(4.0, 12.0, len(tam)), rng.gamma(2.0, 5.0, len(tam)))
    dist = np.where(t_amp_arr[tam] == 0, dist * 0.5, dist)
    return Geography(
        tambon_code=np.array(t_code), tambon_name=np.array(t_name), amphoe_code=np.array(a_code),
        amphoe_name=np.array(a_name), tambon_remote=remote, tambon_amphoe=t_amp_arr,
        school_code=np.array(codes), school_name=np.array(names), school_kind=kinds_arr,
        school_tambon=tam, school_remote=remote[tam], school_distance=np.round(np.minimum(dist, 450.0), 1),
        school_small=np.zeros(len(codes), dtype=bool),
    )


class SchoolPicker:
    """Vectorised choice of a school of the right kind near a home tambon."""

    def __init__(self, geo: Geography, rng: np.random.Generator) -> None:
        self.geo = geo
        self.rng = rng
        n_t = len(geo.tambon_code)
        n_a = int(geo.tambon_amphoe.max()) + 1
        amp_of_school = geo.tambon_amphoe[geo.school_tambon]
        self._groups: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # primary-level schools per tambon (primary + extended)
        self._add("primary", geo.school_tambon, np.isin(geo.school_kind, [KIND_PRIMARY, KIND_EXTENDED]), n_t)
        self._add("extended", geo.school_tambon, geo.school_kind == KIND_EXTENDED, n_t)
        self._add("secondary", amp_of_school, geo.school_kind == KIND_SECONDARY, n_a)
        for name, kind in (("ovec", KIND_OVEC), ("nfe", KIND_NFE), ("lao", KIND_LAO), ("opec", KIND_OPEC), ("bpp", KIND_BPP)):
            self._add(name, np.zeros_like(amp_of_school), geo.school_kind == kind, 1)
        self._add("obec_any", np.zeros_like(amp_of_school), geo.school_kind <= KIND_SECONDARY, 1)

    def _add(self, name: str, key: np.ndarray, mask: np.ndarray, n_keys: int) -> None:
        idx = np.flatnonzero(mask)
        order = np.argsort(key[idx], kind="stable")
        idx = idx[order]
        counts = np.bincount(key[idx], minlength=n_keys)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._groups[name] = (idx, counts, offsets)

    def pick(self, group: str, key: np.ndarray) -> np.ndarray:
        """A random school of `group` for each key (tambon or amphoe index); -1 where none."""
        idx, counts, offsets = self._groups[group]
        c = counts[key]
        u = self.rng.random(len(key))
        pos = offsets[key] + np.floor(u * np.maximum(c, 1)).astype(np.int64)
        out = np.where(c > 0, idx[np.minimum(pos, max(len(idx) - 1, 0))] if len(idx) else -1, -1)
        return out.astype(np.int32)

    def has(self, group: str, key: np.ndarray) -> np.ndarray:
        return self._groups[group][1][key] > 0


def size_class(students: np.ndarray) -> np.ndarray:
    """OBEC size classes: <=120 small, <=600 medium, <=1500 large, else extra large."""
    return np.select([students <= 120, students <= 600, students <= 1500], ["small", "medium", "large"], "extra_large")


def citizen_ids(rng: np.random.Generator, n: int, first_digit: np.ndarray | int, province_code: str,
                taken: set[bytes] | None = None) -> np.ndarray:
    """n distinct 13-digit IDs (bytes, S13) with valid check digits.

    Digits: first (1 for Thai children; 0/6/7 for non-Thai residents), province (2), 9 random,
    check digit. Distinct within the province; provinces differ in digits 2-3, so IDs never clash
    across provinces of a run.
    """
    out = np.empty((n, 13), dtype=np.uint8)
    fd = np.broadcast_to(np.asarray(first_digit, dtype=np.uint8), (n,))
    out[:, 0] = fd
    out[:, 1] = int(province_code[0])
    out[:, 2] = int(province_code[1])
    out[:, 3:12] = rng.integers(0, 10, size=(n, 9), dtype=np.uint8)
    weights = np.arange(13, 1, -1, dtype=np.int64)
    total = (out[:, :12].astype(np.int64) * weights).sum(axis=1)
    out[:, 12] = ((11 - total % 11) % 10).astype(np.uint8)
    ids = (out + 48).view("S13").ravel()
    # redraw the rare duplicates (within this batch and against IDs already given out)
    seen = taken if taken is not None else set()
    _, first_idx = np.unique(ids, return_index=True)
    dup = np.ones(n, dtype=bool)
    dup[first_idx] = False
    if seen:
        dup |= np.isin(ids, np.array(list(seen), dtype="S13"))
    if dup.any():
        ids[dup] = citizen_ids(rng, int(dup.sum()), fd[dup], province_code, set(ids[~dup].tolist()) | seen)
    return ids


def gcodes(rng: np.random.Generator, n: int, province_code: str) -> np.ndarray:
    """n distinct G-codes: 'G' + province (2) + 10 random digits."""
    body = rng.integers(0, 10, size=(n, 10), dtype=np.uint8) + 48
    out = np.empty((n, 13), dtype=np.uint8)
    out[:, 0] = ord("G")
    out[:, 1] = ord(province_code[0])
    out[:, 2] = ord(province_code[1])
    out[:, 3:] = body
    ids = out.view("S13").ravel()
    u, first_idx = np.unique(ids, return_index=True)
    if len(u) < n:
        dup = np.ones(n, dtype=bool)
        dup[first_idx] = False
        ids[dup] = gcodes(rng, int(dup.sum()), province_code)  # tiny chance of a second clash: ignored by design
    return ids


def expected_growth(years: int) -> float:
    """Capacity factor for persons: first census plus entrants each year (about 8% a year)."""
    return 1.0 + 0.09 * (years + 1) + 0.01 * math.sqrt(years)
