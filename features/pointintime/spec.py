"""The feature catalogue: every model input, its group, meaning, and what missing means.

Groups are named after what a school understands, because SHAP reasons are later summed per
group and shown to teachers ("attendance", "academic", ...). Serving and the model card read this
catalogue; the SQL in `build.py` must produce exactly these columns (a test holds it to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dtype = Literal["float", "int", "bool", "category"]

GROUPS: dict[str, tuple[str, str]] = {
    "attendance": ("Attendance", "การมาเรียน"),
    "academic": ("Academic results", "ผลการเรียน"),
    "poverty": ("Poverty and household", "ความยากจนและครัวเรือน"),
    "care": ("Student-care screening", "ผลคัดกรองระบบดูแลช่วยเหลือ"),
    "welfare": ("Welfare and health", "สวัสดิการและสุขภาพ"),
    "mobility": ("Mobility and progression", "การย้าย ซ้ำชั้น และอายุเกินเกณฑ์"),
    "transition": ("Grade and transition", "ชั้นเรียนและช่วงรอยต่อ"),
    "school": ("School and area", "โรงเรียนและพื้นที่"),
    "student": ("Student background", "ข้อมูลพื้นฐานนักเรียน"),
}


@dataclass(frozen=True)
class Feature:
    name: str
    group: str
    dtype: Dtype
    en: str
    th: str
    missing: str = "never missing"  # what an empty value means

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown feature group {self.group!r}")


_F = Feature
FEATURES: tuple[Feature, ...] = (
    # attendance (monthly attendance known by the as-of date)
    _F("att_rate_term", "attendance", "float", "Attendance rate this term so far", "อัตราการมาเรียนภาคเรียนนี้",
       "no month of this term reported yet (always so in an early round before July data)"),
    _F("att_rate_prev_term", "attendance", "float", "Attendance rate last term", "อัตราการมาเรียนภาคเรียนที่แล้ว",
       "no attendance reported for last term"),
    _F("att_rate_12m", "attendance", "float", "Attendance rate over the last 12 months", "อัตราการมาเรียน 12 เดือน",
       "no attendance reported in 12 months"),
    _F("att_rate_last_month", "attendance", "float", "Attendance rate in the latest reported month", "อัตราการมาเรียนเดือนล่าสุด",
       "no attendance reported in 12 months"),
    _F("att_trend_3m", "attendance", "float", "Change in attendance: last 3 months minus the 3 before", "แนวโน้มการมาเรียน 3 เดือน",
       "fewer than 4 months reported"),
    _F("att_unexcused_rate_12m", "attendance", "float", "Share of school days absent without leave, 12 months", "สัดส่วนวันขาดเรียนโดยไม่ลา",
       "no attendance reported in 12 months"),
    _F("att_chronic_absence", "attendance", "bool", "Chronically absent: missed ≥ 10% of days last term", "ขาดเรียนเรื้อรัง (≥10%)",
       "no attendance reported for last term"),
    _F("att_below_cct_85", "attendance", "bool", "Below the CCT 85% attendance condition (12 months)", "มาเรียนต่ำกว่าเงื่อนไขทุน 85%",
       "no attendance reported in 12 months"),
    _F("att_months_known", "attendance", "int", "Months of attendance reported in 12 months", "จำนวนเดือนที่มีข้อมูลการมาเรียน"),
    # academic
    _F("gpa_last", "academic", "float", "GPA of the last final term grades", "เกรดเฉลี่ยภาคเรียนล่าสุด", "no final grades reported"),
    _F("gpa_trend", "academic", "float", "GPA change between the last two terms", "แนวโน้มเกรดเฉลี่ย", "fewer than two terms of grades"),
    _F("gpa_interim", "academic", "float", "Interim GPA this term (mid-term round)", "เกรดเฉลี่ยกลางภาคนี้",
       "no interim marks this term (always so in an early round)"),
    _F("marks_0_last", "academic", "int", "Subjects with mark 0 last term", "จำนวนวิชาที่ได้ 0 ภาคล่าสุด", "no final grades reported"),
    _F("marks_r_last", "academic", "int", "Subjects with mark ร (incomplete) last term", "จำนวนวิชาที่ติด ร", "no final grades reported"),
    _F("marks_ms_last", "academic", "int", "Subjects with mark มส (barred: attendance) last term", "จำนวนวิชาที่ติด มส", "no final grades reported"),
    _F("marks_mp_last", "academic", "int", "Activities with mark มผ last term", "จำนวนกิจกรรมที่ มผ", "no final grades reported"),
    _F("failing_marks_12m", "academic", "int", "Failing marks (0, ร, มส) in the last 12 months", "ผลการเรียนไม่ผ่านใน 12 เดือน",
       "no final grades reported in 12 months"),
    _F("failing_marks_interim", "academic", "int", "Failing interim marks this term", "ผลกลางภาคที่ไม่ผ่านภาคนี้",
       "no interim marks this term"),
    # poverty and household (latest CCT screening known)
    _F("cct_screened", "poverty", "bool", "Screened for CCT in the last 12 months", "ได้รับการคัดกรองยากจนใน 12 เดือน"),
    _F("income_per_person", "poverty", "float", "Household income per person per month (baht)", "รายได้ต่อคนต่อเดือน (บาท)",
       "not screened in the last 12 months"),
    _F("extremely_poor", "poverty", "bool", "Income ≤ 3,000 baht per person per month", "ยากจนพิเศษ (≤3,000 บาท)",
       "not screened in the last 12 months"),
    _F("hh_deprivations", "poverty", "int", "Household-status deprivations (0-8)", "จำนวนสถานะครัวเรือนที่ขาดแคลน (0-8)",
       "not screened in the last 12 months"),
    _F("hh_dependants", "poverty", "bool", "Household carries dependants", "มีภาระพึ่งพิง", "not screened"),
    _F("hh_no_own_house", "poverty", "bool", "Household does not own its home", "ไม่มีบ้านเป็นของตนเอง", "not screened"),
    _F("hh_poor_housing", "poverty", "bool", "Home in poor condition", "สภาพบ้านชำรุด", "not screened"),
    _F("hh_no_farmland", "poverty", "bool", "No farm land", "ไม่มีที่ดินทำกิน", "not screened"),
    _F("hh_no_clean_water", "poverty", "bool", "No clean drinking water", "ไม่มีน้ำดื่มสะอาด", "not screened"),
    _F("hh_no_electricity", "poverty", "bool", "No mains electricity", "ไม่มีไฟฟ้า", "not screened"),
    _F("hh_no_vehicle", "poverty", "bool", "No working vehicle", "ไม่มียานพาหนะ", "not screened"),
    _F("hh_no_appliances", "poverty", "bool", "No working appliances", "ไม่มีเครื่องใช้ไฟฟ้า", "not screened"),
    _F("household_size", "poverty", "float", "Household members", "จำนวนสมาชิกครัวเรือน", "not screened"),
    _F("caretaker", "poverty", "category", "Who cares for the child", "ผู้ดูแลนักเรียน", "not screened"),
    _F("travel_minutes", "poverty", "float", "Travel time to school (minutes)", "เวลาเดินทางไปโรงเรียน (นาที)", "not screened"),
    _F("travel_mode", "poverty", "category", "Main way to school", "วิธีเดินทาง", "not screened"),
    # care screening (latest known)
    _F("care_screened", "care", "bool", "Care screening in the last 12 months", "ได้รับการคัดกรองระบบดูแลใน 12 เดือน"),
    _F("care_at_risk_count", "care", "int", "Dimensions screened at-risk (เสี่ยง)", "จำนวนด้านที่เสี่ยง", "not screened"),
    _F("care_problem_count", "care", "int", "Dimensions screened problem (มีปัญหา)", "จำนวนด้านที่มีปัญหา", "not screened"),
    _F("care_learning", "care", "int", "Learning: 0 normal, 1 at-risk, 2 problem", "ด้านการเรียน", "not screened"),
    _F("care_behaviour_emotion", "care", "int", "Behaviour and emotion: 0/1/2", "ด้านพฤติกรรมและอารมณ์", "not screened"),
    _F("care_family", "care", "int", "Family: 0/1/2", "ด้านครอบครัว", "not screened"),
    _F("care_economic", "care", "int", "Economic: 0/1/2", "ด้านเศรษฐกิจ", "not screened"),
    _F("care_substances", "care", "int", "Substances: 0/1/2", "ด้านสารเสพติด", "not screened"),
    _F("care_sexual_behaviour", "care", "int", "Sexual behaviour: 0/1/2", "ด้านพฤติกรรมทางเพศ", "not screened"),
    # welfare and health links known by the as-of date
    _F("welfare_disability_card", "welfare", "bool", "Holds a disability card", "มีบัตรคนพิการ"),
    _F("welfare_chronic_illness", "welfare", "bool", "Chronic illness on record", "มีโรคเรื้อรัง"),
    _F("welfare_bedridden_member", "welfare", "bool", "A bedridden household member", "มีผู้ป่วยติดเตียงในครัวเรือน"),
    _F("welfare_teen_pregnancy", "welfare", "bool", "Teen pregnancy on record", "ตั้งครรภ์ในวัยเรียน"),
    _F("welfare_state_card", "welfare", "bool", "Household holds a state-welfare card", "มีบัตรสวัสดิการแห่งรัฐ"),
    # mobility and progression
    _F("school_moves_2y", "mobility", "int", "School changes over the last 2 years", "จำนวนครั้งที่ย้ายโรงเรียนใน 2 ปี"),
    _F("repeated_grade", "mobility", "bool", "Repeated a grade (same grade in two academic years)", "เคยซ้ำชั้น"),
    _F("over_age_years", "mobility", "int", "Years older than typical for the grade", "อายุเกินเกณฑ์ (ปี)", "birth date unknown"),
    _F("censuses_known", "mobility", "int", "Earlier censuses in which the student appears", "จำนวนครั้งที่ปรากฏในการนับข้อมูลก่อนหน้า"),
    # grade and transition
    _F("grade", "transition", "category", "Grade now", "ชั้นเรียนปัจจุบัน"),
    _F("grade_level", "transition", "int", "Grade as a number (K1 = 1 ... M6 = 15)", "ระดับชั้น (ตัวเลข)"),
    _F("in_transition_grade", "transition", "bool", "In P6 or M3: the next step is a school transition", "อยู่ชั้นรอยต่อ ป.6 หรือ ม.3"),
    _F("term", "transition", "int", "Term of the round (1 or 2)", "ภาคเรียน"),
    _F("is_mid_round", "transition", "bool", "Mid-term round (more of this term known)", "รอบกลางภาค"),
    # school and area
    _F("school_size_class", "school", "category", "School size class", "ขนาดโรงเรียน", "school not in the registry"),
    _F("school_students", "school", "float", "Students in the school", "จำนวนนักเรียนในโรงเรียน", "school not in the registry"),
    _F("school_remote", "school", "bool", "Remote or hardship-area school", "โรงเรียนพื้นที่ห่างไกล", "school not in the registry"),
    _F("school_distance_km", "school", "float", "School distance to the district town (km)", "ระยะทางโรงเรียนถึงอำเภอ", "school not in the registry"),
    _F("school_past_dropout_rate", "school", "float", "The school's dropout rate in rounds whose outcome was known before this round",
       "อัตราการออกกลางคันในอดีตของโรงเรียน", "no earlier round of this school has a known outcome"),
    _F("region", "school", "category", "Region of the school", "ภาค", "school not in the registry"),
    # student background
    _F("sex", "student", "category", "Sex", "เพศ"),
    _F("age", "student", "float", "Age in years on the as-of date", "อายุ (ปี)", "birth date unknown"),
    _F("non_thai_id", "student", "bool", "Holds a G-code or a non-Thai ID (nationality status)", "ไม่มีสัญชาติไทย/รหัส G"),
    _F("disability", "student", "bool", "Disability recorded in the census", "มีความพิการ (DMC)"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.dtype == "category")
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

# Columns of a feature set that are not model inputs: identity of the row, groups for fairness.
KEY_COLUMNS: tuple[str, ...] = ("student_key", "round_id", "as_of", "school_code")
GROUP_COLUMNS: tuple[str, ...] = (
    "group_sex", "group_province", "group_region", "group_nationality", "group_cct_poverty", "group_disability",
)


def catalogue_markdown() -> str:
    lines = ["| feature | group | type | meaning | ความหมาย | when empty |", "|---|---|---|---|---|---|"]
    for f in FEATURES:
        lines.append(f"| `{f.name}` | {GROUPS[f.group][0]} | {f.dtype} | {f.en} | {f.th} | {f.missing} |")
    return "\n".join(lines)
