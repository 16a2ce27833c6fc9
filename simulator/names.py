"""Thai names for simulated children, places and schools, and the spelling variants real data has.

Given names: a list of common Thai given names per sex, extended by joining common name
morphemes (สม+ชาย, ธน+กร ...) so there are several hundred per sex. Surnames are built the way
many Thai surnames are: two or three meaningful parts (ศรี+สุข+สวัสดิ์), which gives thousands of
distinct family names, so name + birth date is nearly unique, as in real registers.

Spelling variants mimic what differs between Thai systems: a dropped tone mark or thanthakhat
(์), ศ/ส/ษ, ณ/น, ธ/ท, ร/ล swaps and vowel-length variants (ิ/ี, ุ/ู, ไ/ใ).
"""

from __future__ import annotations

import numpy as np

_MALE_COMMON = """
สมชาย สมศักดิ์ สมพงษ์ สมบัติ สมหมาย สุรชัย สุริยา สุทธิพงษ์ ประเสริฐ ประยุทธ ประวิทย์ วิชัย วิทยา วีระ
วีระพงษ์ อนุชา อนุวัฒน์ อภิชาติ อภิสิทธิ์ ณัฐพล ณัฐวุฒิ ณัฐกิตติ์ ธนกร ธนพล ธนวัฒน์ ธีรพงษ์ ธีรภัทร
กิตติพงษ์ กิตติศักดิ์ กฤษดา กฤษณะ จักรพันธ์ จิรายุ ชยพล ชัยวัฒน์ ชาญวิทย์ ณรงค์ เดชา ทวีศักดิ์ ทศพล
นพดล นราธิป นิพนธ์ บุญมี บุญเลิศ ปกรณ์ ปิยะพงษ์ พงศกร พงษ์ศักดิ์ พีรพัฒน์ พิชิต ภาณุ ภูมิพัฒน์ มานพ
ยุทธนา รัฐพล รัชพล วรวุฒิ วรเชษฐ์ วัชระ ศักดิ์ชัย ศุภชัย ศุภกร สรวิชญ์ สิทธิชัย สุเมธ อดิศร อำนาจ
เอกชัย เอกพล ไพโรจน์ ภัทรพล ปฏิภาณ ชินวัตร ชนาธิป ภูริ กันตพงศ์ ธนภัทร ปุณณวิช ธีรเดช ศิวกร อิทธิพล
ภูวดล ณภัทร จิรวัฒน์ กฤตภาส พัชรพล คุณากร ปวริศ ธาวิน ภาคิน ธนดล วรากร รพีภัทร เตชินท์ นนทพัทธ์
"""
_FEMALE_COMMON = """
สมศรี สมใจ สมพร สุภาพร สุนิสา สุดารัตน์ สุกัญญา สุวรรณา ประภาพร ปราณี ปิยะนุช ปิยะพร พรทิพย์ พรรณี
พัชรินทร์ มณีรัตน์ มาลัย รัตนา รุ่งนภา วันเพ็ญ วิไลวรรณ ศิริพร ศิริรัตน์ อรุณี อัญชลี อารีรัตน์ กาญจนา
กนกพร กมลชนก กัลยา จันทร์เพ็ญ จิราพร ชุติมา ณัฐธิดา ณัฐชา ณัฐณิชา ดวงใจ ทิพวรรณ ธิดารัตน์ นงลักษณ์
นภัสสร นันทนา นิภาพร บุษบา เบญจวรรณ ปวีณา ปาริชาติ พิมพ์ชนก พิมพ์ลภัส เพ็ญศรี ภัทรา ภาวินี มยุรี
ยุพิน รัชนี ลำดวน วราภรณ์ วาสนา ศศิธร สายสุนีย์ สุพัตรา อรทัย อัมพร เยาวลักษณ์ ขวัญใจ ขนิษฐา จิดาภา
ชนิดา ธัญชนก ธัญญารัตน์ ปภาวรินทร์ พิชญาภา ภัทรวดี มนัสนันท์ วรรณิดา ศุภาพิชญ์ สิรินทรา อริสา อภิญญา
กชกร ณิชาภัทร ปุณยาพร เขมิกา ชญานิศ บุณยานุช ปรียานุช สุชาดา อุไรวรรณ ลลิตา ฐิติมา ธนพร นันทิชา
"""
_MALE_HEAD = "สม ธน ณัฐ กิตติ ชัย ธีร พง วร ศุภ อนุ ภัทร ปิย วีร สุร จิร ภู รัฐ เอก ปก นพ".split()
_MALE_TAIL = "ชาย พล กร วัฒน์ ศักดิ์ พงษ์ ภัทร เดช ชัย วุฒิ ภูมิ นันท์ วิทย์ ยศ กฤต".split()
_FEMALE_HEAD = "สุ ปิย พร ศิริ กนก ณัฐ ธิดา รัต จิรา ชุติ นภ พิม วรรณ ภัทร อร กัล ขวัญ".split()
_FEMALE_TAIL = "พร นุช รัตน์ ธิดา วรรณ ทิพย์ ภา ชนก มณี ลดา ศรี นิภา วดี ฤดี สุดา".split()

_SUR_A = """ศรี สุข แสง ทอง บุญ แก้ว จันทร์ ใจ ชัย ดี สาย คำ พรหม วงศ์ รักษ์ ทิพย์ เพชร นาค ศักดิ์ มั่น
ธรรม พิทักษ์ สวัสดิ์ เจริญ รุ่ง ประเสริฐ กิจ ยิ่ง สมบูรณ์ อินทร์ ขันธ์ เรือง ปัญญา วิเศษ ภักดี จิต""".split()
_SUR_B = """สุข สมบัติ วงศ์ ทอง ชัย ใจ ศรี กุล พันธ์ สกุล สวัสดิ์ รัตน์ เดช ทรัพย์ ธรรม คำ แสง บุญ เจริญ
ประเสริฐ ภักดี มงคล อนันต์ ไพศาล สถิตย์ วิไล เลิศ นิยม ยืนยง ศักดิ์ รักษา พิมพ์ ดำรง กิจ""".split()
_SUR_C = "สกุล วงศ์ กุล ชัย ศักดิ์ พันธ์ ไพบูลย์ ธร".split()

_PLACE_A = "แม่ ห้วย บ้าน นา หนอง ดอย โนน บ่อ วัง ท่า ทุ่ง ปาง เวียง สบ ผา โป่ง ดง หาด".split()
_PLACE_B = """สะเรียง คำ ทอง ใหญ่ น้อย แก้ว ยาว หลวง ขาม ยวม ลาน ปาย เงา ตึง จัน ริน ข่า สัก
หิน ผึ้ง ไร่ งาม หอม ทราย""".split()


def _split(text: str) -> list[str]:
    return [w for w in text.split() if w]


def _compose(heads: list[str], tails: list[str], exclude: set[str]) -> list[str]:
    out = []
    for h in heads:
        for t in tails:
            name = h + t
            if name not in exclude:
                out.append(name)
    return out


def given_names(sex: str, n: int = 320) -> list[str]:
    """Distinct given names for 'M' or 'F': the common list first, then composed ones."""
    common = _split(_MALE_COMMON if sex == "M" else _FEMALE_COMMON)
    heads, tails = (_MALE_HEAD, _MALE_TAIL) if sex == "M" else (_FEMALE_HEAD, _FEMALE_TAIL)
    seen = dict.fromkeys(common)
    for name in _compose(heads, tails, set(seen)):
        seen.setdefault(name)
    return list(seen)[:n]


def surnames() -> list[str]:
    """Several thousand distinct family names of two or three parts."""
    seen: dict[str, None] = {}
    for a in _SUR_A:
        for b in _SUR_B:
            if a != b:
                seen.setdefault(a + b)
    for a in _SUR_A[:20]:
        for b in _SUR_B[:20]:
            for c in _SUR_C:
                if a != b:
                    seen.setdefault(a + b + c)
    return list(seen)


def place_names(rng: np.random.Generator, n: int, exclude: set[str] | None = None) -> list[str]:
    """n distinct synthetic Thai place names (แม่สะเรียง, ห้วยคำ ...)."""
    pool = [a + b for a in _PLACE_A for b in _PLACE_B]
    pool += [a + b + c for a in _PLACE_A for b in _PLACE_B[:8] for c in ("เหนือ", "ใต้", "ใหม่")]
    if exclude:
        pool = [p for p in pool if p not in exclude]
    idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    out = [pool[i] for i in idx]
    i = 2
    while len(out) < n:  # only for enormous worlds: number the rest
        out.append(f"{pool[len(out) % len(pool)]} {i}")
        i += 1
    return out


# --- spelling variants ---------------------------------------------------------------------------
_TONE = "่้๊๋"
_SWAPS = (("ศ", "ส"), ("ษ", "ส"), ("ส", "ศ"), ("ณ", "น"), ("น", "ณ"), ("ธ", "ท"), ("ท", "ธ"),
          ("ร", "ล"), ("ล", "ร"), ("ิ", "ี"), ("ี", "ิ"), ("ุ", "ู"), ("ู", "ุ"), ("ใ", "ไ"), ("ไ", "ใ"),
          ("ั", "ะ"))


def spelling_variants(name: str, k: int = 3) -> list[str]:
    """Up to k distinct misspellings of a Thai name, most common kinds first.

    Order: tone mark dropped, thanthakhat dropped, then consonant and vowel swaps (first
    occurrence only, as a clerk would type it). A name with none of these gets a doubled last
    character, so every name has at least one variant.
    """
    out: list[str] = []

    def add(v: str) -> None:
        if v != name and v not in out:
            out.append(v)

    for t in _TONE:
        if t in name:
            add(name.replace(t, "", 1))
    if "์" in name:
        add(name.replace("์", "", 1))
    for a, b in _SWAPS:
        if a in name:
            add(name.replace(a, b, 1))
    if not out:
        add(name + name[-1])
    while len(out) < k:
        out.append(out[len(out) % max(1, len(out))])
    return out[:k]
